"""JSON documents of the service API: IoT Hub's device and twin shapes, DPS's enrollment shape, roost's own.

Field names follow IoT Hub's REST API (api-version 2021-04-12) and DPS's service API (2021-10-01), so
Microsoft's service SDK deserialises them. Times are ISO 8601 UTC; IoT Hub writes
``0001-01-01T00:00:00Z`` for "never", and so does the emulator.
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from emulator.hub.service_errors import ServiceError
from emulator.hub.state import (
    AUTH_CA,
    AUTH_SAS,
    AUTH_SELF_SIGNED,
    Attestation,
    C2DMessage,
    Device,
    Enrollment,
    Feedback,
    Registration,
    TelemetryRecord,
    Twin,
)

NEVER = "0001-01-01T00:00:00Z"
_AUTH_NAMES = {AUTH_SAS: "sas", AUTH_SELF_SIGNED: "selfSigned", AUTH_CA: "certificateAuthority"}
_AUTH_BY_NAME = {"sas": AUTH_SAS, "selfsigned": AUTH_SELF_SIGNED, "certificateauthority": AUTH_CA}


def iso(timestamp: float) -> str:
    if not timestamp:
        return NEVER
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


def device_json(device: Device) -> dict[str, Any]:
    return {
        "deviceId": device.device_id,
        "generationId": device.generation_id,
        "etag": device.etag,
        "connectionState": device.connection_state,
        "status": device.status,
        "statusReason": device.status_reason or None,
        "connectionStateUpdatedTime": iso(device.last_activity),
        "statusUpdatedTime": iso(device.updated),
        "lastActivityTime": iso(device.last_activity),
        "cloudToDeviceMessageCount": device.c2d_queued,
        "authentication": {
            "symmetricKey": {"primaryKey": device.primary_key, "secondaryKey": device.secondary_key},
            "x509Thumbprint": {"primaryThumbprint": device.primary_thumbprint,
                               "secondaryThumbprint": device.secondary_thumbprint},
            "type": _AUTH_NAMES.get(device.auth_type, device.auth_type),
        },
        "capabilities": {"iotEdge": device.iot_edge},
    }


def twin_json(twin: Twin, device: Device) -> dict[str, Any]:
    return {
        "deviceId": twin.device_id,
        "etag": twin.etag,
        "deviceEtag": device.etag,
        "status": device.status,
        "statusReason": device.status_reason or None,
        "statusUpdateTime": iso(device.updated),
        "connectionState": device.connection_state,
        "lastActivityTime": iso(device.last_activity),
        "cloudToDeviceMessageCount": device.c2d_queued,
        "authenticationType": _AUTH_NAMES.get(device.auth_type, device.auth_type),
        "x509Thumbprint": {"primaryThumbprint": device.primary_thumbprint,
                           "secondaryThumbprint": device.secondary_thumbprint},
        "version": twin.version,
        "tags": twin.tags,
        "properties": {
            "desired": {**twin.desired, "$version": twin.desired_version},
            "reported": {**twin.reported, "$version": twin.reported_version},
        },
        "capabilities": {"iotEdge": device.iot_edge},
    }


def device_changes(body: Any, device_id: str) -> dict[str, Any]:
    """Registry fields from a PUT /devices/{id} body, as keyword arguments of the state store."""
    if not isinstance(body, dict):
        raise ServiceError(400, "the device body must be a JSON object such as "
                                '{"deviceId": "dev1", "authentication": {"type": "sas"}}', "ArgumentInvalid")
    if body.get("deviceId") not in (None, device_id):
        raise ServiceError(400, f"the body's deviceId {body['deviceId']!r} differs from the URL's {device_id!r}",
                           "ArgumentInvalid")
    changes: dict[str, Any] = {}
    if body.get("status") is not None:
        changes["status"] = body["status"]
    if body.get("statusReason") is not None:
        changes["status_reason"] = str(body["statusReason"])
    capabilities = body.get("capabilities") or {}
    if not isinstance(capabilities, dict):
        raise ServiceError(400, "capabilities must be an object like {\"iotEdge\": false}", "ArgumentInvalid")
    if capabilities.get("iotEdge") is not None:
        changes["iot_edge"] = bool(capabilities["iotEdge"])
    auth = body.get("authentication")
    if auth is None:
        return changes       # an update without authentication keeps the device's credentials
    if not isinstance(auth, dict):
        raise ServiceError(400, "authentication must be an object like {\"type\": \"sas\"}", "ArgumentInvalid")
    kind = str(auth.get("type") or "sas")
    if kind.lower() not in _AUTH_BY_NAME:
        raise ServiceError(400, f"authentication type {kind!r} is not sas, selfSigned or certificateAuthority",
                           "ArgumentInvalid")
    changes["auth_type"] = _AUTH_BY_NAME[kind.lower()]
    keys = auth.get("symmetricKey") or {}
    thumbs = auth.get("x509Thumbprint") or {}
    if not isinstance(keys, dict) or not isinstance(thumbs, dict):
        raise ServiceError(400, "symmetricKey and x509Thumbprint must be objects", "ArgumentInvalid")
    for field_name, key in (("primary_key", "primaryKey"), ("secondary_key", "secondaryKey")):
        if keys.get(key):
            changes[field_name] = keys[key]
    for field_name, key in (("primary_thumbprint", "primaryThumbprint"),
                            ("secondary_thumbprint", "secondaryThumbprint")):
        if thumbs.get(key):
            changes[field_name] = thumbs[key]
    return changes


def body_text(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def telemetry_json(record: TelemetryRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "deviceId": record.device_id,
        "enqueuedTime": iso(record.enqueued),
        "body": body_text(record.payload),
        "bodyBase64": base64.b64encode(record.payload).decode(),
        "properties": record.properties,
        "systemProperties": record.system_properties,
        "size": record.size,
        "units": record.units,
    }


def c2d_json(message: C2DMessage) -> dict[str, Any]:
    return {
        "seq": message.seq,
        "deviceId": message.device_id,
        "messageId": message.message_id,
        "correlationId": message.correlation_id,
        "body": body_text(message.payload),
        "bodyBase64": base64.b64encode(message.payload).decode(),
        "properties": message.properties,
        "enqueuedTime": iso(message.enqueued),
        "expiryTime": iso(message.expiry),
        "ack": message.ack,
        "state": message.state,
        "deliveryCount": message.delivery_count,
    }


def feedback_json(record: Feedback) -> dict[str, Any]:
    return {"seq": record.seq, "originalMessageId": record.message_id, "deviceId": record.device_id,
            "statusCode": record.status, "description": record.description, "enqueuedTimeUtc": iso(record.enqueued)}


# --- DPS enrollments --------------------------------------------------------------------------------------

def enrollment_json(enrollment: Enrollment) -> dict[str, Any]:
    att = enrollment.attestation
    attestation: dict[str, Any] = {"type": att.type}
    if att.type == "symmetricKey":
        attestation["symmetricKey"] = {"primaryKey": att.primary_key, "secondaryKey": att.secondary_key}
    elif att.type == "x509":
        certs = {"primary": {"certificate": att.certificates[0]}} if att.certificates else {}
        if len(att.certificates) > 1:
            certs["secondary"] = {"certificate": att.certificates[1]}
        key = "signingCertificates" if enrollment.is_group else "clientCertificates"
        attestation["x509"] = {key: certs, "thumbprints": att.thumbprints}
    elif att.type == "tpm":
        attestation["tpm"] = {"endorsementKey": att.endorsement_key, "storageRootKey": att.storage_root_key}
    doc: dict[str, Any] = {
        "attestation": attestation,
        "iotHubs": enrollment.iot_hubs,
        "allocationPolicy": enrollment.allocation_policy,
        "initialTwin": enrollment.initial_twin or None,
        "provisioningStatus": enrollment.provisioning_status,
        "reprovisionPolicy": enrollment.reprovision,
        "capabilities": {"iotEdge": enrollment.iot_edge},
        "etag": enrollment.etag,
        "createdDateTimeUtc": iso(enrollment.created),
        "lastUpdatedDateTimeUtc": iso(enrollment.updated),
    }
    if enrollment.is_group:
        doc["enrollmentGroupId"] = enrollment.enrollment_id
    else:
        doc["registrationId"] = enrollment.enrollment_id
        doc["deviceId"] = enrollment.device_id
    return doc


def enrollment_from_json(body: Any, enrollment_id: str, group: bool) -> Enrollment:
    """An Enrollment from a DPS service API body (PUT /enrollments/{id} or /enrollmentGroups/{id})."""
    if not isinstance(body, dict):
        raise ServiceError(400, "the enrollment body must be a JSON object with an attestation, e.g. "
                                '{"attestation": {"type": "symmetricKey"}}', "ArgumentInvalid")
    id_field = "enrollmentGroupId" if group else "registrationId"
    if body.get(id_field) not in (None, enrollment_id):
        raise ServiceError(400, f"the body's {id_field} {body[id_field]!r} differs from the URL's {enrollment_id!r}",
                           "ArgumentInvalid")
    att = body.get("attestation")
    if not isinstance(att, dict) or not att.get("type"):
        raise ServiceError(400, "the enrollment needs an attestation with a type: symmetricKey, x509 or tpm",
                           "ArgumentInvalid")
    kind = att["type"]
    attestation = Attestation(type=kind)
    if kind == "symmetricKey":
        keys = att.get("symmetricKey") or {}
        attestation.primary_key = keys.get("primaryKey")
        attestation.secondary_key = keys.get("secondaryKey")
    elif kind == "x509":
        x509 = att.get("x509") or {}
        certs = x509.get("signingCertificates" if group else "clientCertificates") or {}
        attestation.certificates = [c["certificate"] for slot in ("primary", "secondary")
                                    if isinstance(c := certs.get(slot), dict) and c.get("certificate")]
        attestation.thumbprints = [str(t) for t in x509.get("thumbprints") or []]
    elif kind == "tpm":
        tpm = att.get("tpm") or {}
        attestation.endorsement_key = tpm.get("endorsementKey")
        attestation.storage_root_key = tpm.get("storageRootKey")
    initial_twin = body.get("initialTwin") or {}
    hubs = body.get("iotHubs") or ([body["iotHubHostName"]] if body.get("iotHubHostName") else [])
    if not isinstance(initial_twin, dict) or not isinstance(hubs, list):
        raise ServiceError(400, "initialTwin must be an object and iotHubs a list of hub host names",
                           "ArgumentInvalid")
    capabilities = body.get("capabilities") or {}
    return Enrollment(
        enrollment_id=enrollment_id, attestation=attestation, is_group=group,
        device_id=None if group else body.get("deviceId"), iot_hubs=[str(h) for h in hubs],
        allocation_policy=str(body.get("allocationPolicy") or "hashed"), initial_twin=initial_twin,
        provisioning_status=str(body.get("provisioningStatus") or "enabled"),
        reprovision=body.get("reprovisionPolicy") or {"updateHubAssignment": True, "migrateDeviceData": True},
        iot_edge=bool(isinstance(capabilities, dict) and capabilities.get("iotEdge")))


def registration_json(registration: Registration) -> dict[str, Any]:
    return {"registrationId": registration.registration_id, "deviceId": registration.device_id,
            "assignedHub": registration.assigned_hub, "status": registration.status,
            "substatus": registration.substatus, "enrollmentId": registration.enrollment_id,
            "isGroup": registration.is_group, "createdDateTimeUtc": iso(registration.created),
            "lastUpdatedDateTimeUtc": iso(registration.updated), "etag": registration.etag,
            "errorCode": registration.error_code, "errorMessage": registration.error_message}

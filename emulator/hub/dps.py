"""The Device Provisioning Service: attest, allocate to one of the hubs, create the device, answer.

Transport-neutral: the MQTT session below and dps_http.py both call :meth:`Dps.attest` and
:meth:`Dps.register`. With ``immediate_assignment`` (the default) a register request is answered
"assigned" at once, so the SDK does not wait its fixed 2 s polling interval; without it the first answer is
202 "assigning" with ``retry-after`` and the assignment shows on the next status poll, as in Azure.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from emulator.hub import attestation, codec, tls
from emulator.hub.attestation import AttestationError, AttestationRequest, Attested
from emulator.hub.connection import ConnectionClosed, MqttConnection
from emulator.hub.state import DpsState, Enrollment, Registration, StateError

if TYPE_CHECKING:
    from emulator.hub.iothub import Hub

log = logging.getLogger(__name__)

AllocationHook = Callable[[Enrollment, str, list[str]], str]
RETRY_AFTER_S = 3


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Dps:
    def __init__(self, state: DpsState, hubs: dict[str, Hub], id_scope: str, *,
                 clock: Callable[[], float] = time.time, immediate_assignment: bool = True) -> None:
        self.state = state
        self.hubs = hubs
        self.id_scope = id_scope
        self.clock = clock
        self.immediate_assignment = immediate_assignment
        self.allocation_hook: AllocationHook | None = None

    async def attest(self, request: AttestationRequest) -> Attested:
        if request.id_scope != self.id_scope:
            raise AttestationError(401, 401002, f"id scope {request.id_scope!r} is not this DPS ({self.id_scope!r})")
        return await attestation.handler_for(request).attest(self, request)

    # allocation

    def allocate(self, enrollment: Enrollment, registration_id: str, previous: Registration | None) -> str:
        candidates = [h for h in (enrollment.iot_hubs or list(self.hubs)) if h in self.hubs]
        if not candidates:
            raise AttestationError(400, 400209, f"enrollment {enrollment.enrollment_id!r} names hubs "
                                                f"{enrollment.iot_hubs} that this emulator does not serve "
                                                f"({', '.join(self.hubs)})")
        if previous and previous.assigned_hub in self.hubs and \
                not enrollment.reprovision.get("updateHubAssignment", True):
            return previous.assigned_hub
        if previous and previous.assigned_hub in candidates:
            return previous.assigned_hub
        if enrollment.allocation_policy == "static":
            return candidates[0]
        if enrollment.allocation_policy == "custom":
            if self.allocation_hook is None:
                raise AttestationError(400, 400210, "allocation policy 'custom' needs Dps.allocation_hook")
            chosen = self.allocation_hook(enrollment, registration_id, candidates)
            if chosen not in self.hubs:
                raise AttestationError(400, 400210, f"custom allocation chose unknown hub {chosen!r}")
            return chosen
        # hashed (and geoLatency: every emulated hub is equally near): stable spread over the candidates
        digest = hashlib.sha256(registration_id.encode()).digest()
        return candidates[int.from_bytes(digest[:4], "big") % len(candidates)]

    def register(self, attested: Attested, registration_id: str, payload: Any = None) -> Registration:
        """Assign the device to a hub, create or update its identity there, and record the registration."""
        enrollment = attested.enrollment
        previous = self.state.find_registration(registration_id)
        hub_name = self.allocate(enrollment, registration_id, previous)
        hub = self.hubs[hub_name]
        device_id = enrollment.device_id if (not enrollment.is_group and enrollment.device_id) else registration_id
        substatus = "initialAssignment"
        migrate_from: Hub | None = None
        if previous and previous.status == "assigned" and previous.assigned_hub != hub_name:
            if enrollment.reprovision.get("migrateDeviceData", True):
                substatus = "deviceDataMigrated"
                migrate_from = self.hubs.get(previous.assigned_hub)
            else:
                substatus = "deviceDataReset"
        self._provision_device(hub, device_id, attested, migrate_from, reset=substatus == "deviceDataReset")
        for i, pem in enumerate(attested.trusted_ca_pems):
            hub.state.add_ca(f"dps-{enrollment.enrollment_id}-{i}", pem)
        now = self.clock()
        registration = Registration(
            registration_id=registration_id, enrollment_id=enrollment.enrollment_id, is_group=enrollment.is_group,
            device_id=device_id, assigned_hub=hub_name, status="assigned", substatus=substatus,
            operation_id=f"4.{uuid.uuid4().hex[:16]}.{uuid.uuid4()}", created=previous.created if previous else now,
            updated=now, etag="", payload=payload, extra=dict(attested.registration_state))
        registration = self.state.save_registration(registration)
        log.info("registration %s assigned to %s as %s (%s)", registration_id, hub_name, device_id, substatus)
        return registration

    def _provision_device(self, hub: Hub, device_id: str, attested: Attested, migrate_from: Hub | None,
                          reset: bool) -> None:
        enrollment = attested.enrollment
        identity = {"auth_type": attested.auth_type, "primary_key": attested.primary_key,
                    "secondary_key": attested.secondary_key, "primary_thumbprint": attested.thumbprint,
                    "secondary_thumbprint": None}
        existing = hub.state.find_device(device_id)
        if existing is None:
            hub.state.create_device(device_id, iot_edge=enrollment.iot_edge, **identity)
            fresh = True
        else:
            hub.state.update_device(device_id, status="enabled", **identity)
            fresh = False
        if migrate_from is not None and migrate_from.state.find_device(device_id):
            old = migrate_from.state.get_twin(device_id)
            hub.state.update_twin(device_id, tags=old.tags, desired=old.desired, replace=True)
            if old.reported:
                hub.state.patch_reported(device_id, old.reported)
        elif fresh or reset:
            initial = enrollment.initial_twin or {}
            desired = (initial.get("properties") or {}).get("desired")
            hub.state.update_twin(device_id, tags=initial.get("tags") or {}, desired=desired or {}, replace=True)

    def status_document(self, registration: Registration) -> dict:
        state: dict[str, Any] = {
            "registrationId": registration.registration_id, "createdDateTimeUtc": iso(registration.created),
            "assignedHub": registration.assigned_hub, "deviceId": registration.device_id,
            "status": registration.status, "substatus": registration.substatus,
            "lastUpdatedDateTimeUtc": iso(registration.updated), "etag": registration.etag,
        }
        if registration.payload is not None:
            state["payload"] = registration.payload
        state.update(registration.extra)
        return state

    def operation_document(self, registration: Registration, *, assigning: bool = False) -> dict:
        if assigning:
            return {"operationId": registration.operation_id, "status": "assigning"}
        return {"operationId": registration.operation_id, "status": registration.status,
                "registrationState": self.status_document(registration)}

    def operation(self, registration_id: str, operation_id: str) -> Registration:
        registration = self.state.find_registration(registration_id)
        if registration is None or registration.operation_id != operation_id:
            raise AttestationError(404, 404201, f"operation {operation_id!r} of {registration_id!r} does not exist")
        return registration

    # MQTT

    async def serve_mqtt(self, conn: MqttConnection, connect: codec.Connect) -> None:
        """A DPS MQTT session: authenticate at CONNECT, then answer register and status-poll publishes."""
        parts = (connect.username or "").split("/")
        if len(parts) < 4 or parts[1] != "registrations":
            conn.send(codec.Connack(codec.ConnackCode.BAD_CREDENTIALS))
            conn.close("DPS user name is not '{idScope}/registrations/{registrationId}/api-version=...'")
            return
        id_scope, registration_id = parts[0], parts[2]
        token = connect.password.decode("utf-8", "replace") if connect.password else None
        request = AttestationRequest(registration_id, id_scope, "mqtt", sas_token=token,
                                     client_chain=tls.peer_chain(conn.ssl_object))
        try:
            if connect.client_id != registration_id:
                raise AttestationError(401, 401002, "MQTT client id must equal the registration id")
            attested = await self.attest(request)
        except AttestationError as exc:
            log.info("DPS refused %s (%s): %s", registration_id, conn.peer, exc.message)
            conn.send(codec.Connack(codec.ConnackCode.NOT_AUTHORIZED))
            await conn.drain()
            conn.close(f"CONNACK 5: {exc.message}")
            return
        conn.send(codec.Connack(codec.ConnackCode.ACCEPTED))
        try:
            while True:
                packet = await conn.read()
                if isinstance(packet, codec.Publish):
                    await self._on_publish(conn, attested, registration_id, packet)
                elif isinstance(packet, codec.Subscribe):
                    ok = [t == "$dps/registrations/res/#" for t, _ in packet.topics]
                    conn.send(codec.Suback(packet.packet_id, [1 if good else codec.SUBACK_FAILURE for good in ok]))
                elif isinstance(packet, codec.Unsubscribe):
                    conn.send(codec.Ack(codec.PacketType.UNSUBACK, packet.packet_id))
                elif isinstance(packet, codec.Control) and packet.kind is codec.PacketType.PINGREQ:
                    conn.send(codec.Control(codec.PacketType.PINGRESP))
                elif isinstance(packet, codec.Control) and packet.kind is codec.PacketType.DISCONNECT:
                    conn.close("client disconnected")
                    return
                elif isinstance(packet, codec.Ack):
                    continue
                else:
                    conn.close(f"unexpected {type(packet).__name__} packet")
                    return
        except codec.MalformedPacket as exc:
            conn.close(f"malformed packet: {exc}")
        except ConnectionClosed as exc:
            conn.close(str(exc))

    async def _on_publish(self, conn: MqttConnection, attested: Attested, registration_id: str,
                          packet: codec.Publish) -> None:
        path, _, query = packet.topic.partition("?")
        params = dict(urllib.parse.parse_qsl(query))
        rid = params.get("$rid", "")
        if packet.qos == 1 and packet.packet_id is not None:
            conn.send(codec.Ack(codec.PacketType.PUBACK, packet.packet_id))
        try:
            if path == "$dps/registrations/PUT/iotdps-register/":
                try:
                    body = json.loads(packet.payload or b"{}")
                except ValueError:
                    raise AttestationError(400, 400001, "register request body is not JSON") from None
                if not isinstance(body, dict):
                    raise AttestationError(400, 400001, "register request body must be a JSON object")
                registration = self.register(attested, registration_id, body.get("payload"))
                status, doc = (200, self.operation_document(registration)) if self.immediate_assignment else \
                    (202, self.operation_document(registration, assigning=True))
            elif path == "$dps/registrations/GET/iotdps-get-operationstatus/":
                registration = self.operation(registration_id, params.get("operationId", ""))
                status, doc = 200, self.operation_document(registration)
            else:
                conn.close(f"topic {packet.topic[:120]!r} is not a DPS topic")
                raise ConnectionClosed("unknown DPS topic")
        except (AttestationError, StateError) as exc:
            error = exc if isinstance(exc, AttestationError) else AttestationError(exc.status, exc.status * 1000,
                                                                                  str(exc))
            status, doc = error.status, error.to_json()
        topic = f"$dps/registrations/res/{status}/?$rid={urllib.parse.quote(rid, safe='')}"
        if status in (202, 429):
            topic += f"&retry-after={RETRY_AFTER_S}"
        await conn.publish(topic, json.dumps(doc).encode())


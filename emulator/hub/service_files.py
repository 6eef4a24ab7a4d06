"""Device file upload through the hub, as azure-iot-device's ``get_storage_info_for_blob`` and
``notify_blob_upload_status`` use it.

1. ``POST /devices/{id}/files`` ``{"blobName": "x.log"}`` (device SAS or client certificate) answers
   ``{"correlationId", "hostName", "containerName", "blobName": "{id}/x.log", "sasToken": "?sv=..."}``.
2. The device PUTs the file to ``https://{hostName}/{containerName}/{blobName}{sasToken}`` (the blob endpoint).
3. ``POST /devices/{id}/files/notifications`` ``{"correlationId", "isSuccess", "statusCode",
   "statusDescription"}`` completes the upload; the service lists it under ``GET /roost/files``.

As in IoT Hub, a device may have at most 10 uploads in progress and blobs are named ``{deviceId}/{blobName}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emulator.hub.blob import BlobError, BlobStore, check_blob_name
from emulator.hub.http import Request
from emulator.hub.iothub import Hub
from emulator.hub.sas import SasError, verify_sas
from emulator.hub.service_documents import iso
from emulator.hub.service_errors import ServiceError
from emulator.hub.state import AUTH_SAS

CONTAINER = "fileupload"
MAX_ACTIVE_UPLOADS = 10


class FileUploads:
    def __init__(self, store: BlobStore, blob_host: str, ttl_s: float, clock: Callable[[], float]) -> None:
        self.store = store
        self.blob_host = blob_host
        self.ttl_s = ttl_s
        self.clock = clock

    def authenticate_device(self, hub: Hub, device_id: str, request: Request) -> None:
        """The request must come from ``device_id`` itself: its SAS token or its X.509 certificate."""
        device = hub.state.find_device(device_id)
        if device is None or not device.enabled:
            raise ServiceError(401, f"device {device_id!r} is not registered or is disabled",
                               "IotHubUnauthorizedAccess")
        token = request.headers.get("authorization")
        if token:
            if device.auth_type != AUTH_SAS:
                raise ServiceError(401, f"device {device_id!r} authenticates with X.509, not a SAS token",
                                   "IotHubUnauthorizedAccess")
            try:
                verify_sas(token, f"{hub.hostname}/devices/{device_id}", [device.primary_key, device.secondary_key],
                           self.clock())
            except SasError as exc:
                raise ServiceError(401, f"device token refused: {exc}", "IotHubUnauthorizedAccess") from None
            return
        problem = hub.check_certificate(device.auth_type, device_id, request.client_chain,
                                        [device.primary_thumbprint, device.secondary_thumbprint])
        if problem:
            raise ServiceError(401, f"device {device_id!r}: {problem}", "IotHubUnauthorizedAccess")

    def start(self, hub: Hub, device_id: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or not isinstance(body.get("blobName"), str):
            raise ServiceError(400, 'the body must be {"blobName": "name of the file"}', "ArgumentInvalid")
        name = f"{device_id}/{body['blobName']}"
        try:
            check_blob_name(name)
        except BlobError as exc:
            raise ServiceError(400, exc.message, "ArgumentInvalid") from None
        if self.store.active_uploads(device_id) >= MAX_ACTIVE_UPLOADS:
            raise ServiceError(403, f"device {device_id!r} already has {MAX_ACTIVE_UPLOADS} file uploads in "
                                    "progress; notify the hub of their outcome first",
                               "DeviceMaximumActiveFileUploadLimitExceeded")
        expiry = self.clock() + self.ttl_s
        upload = self.store.start_upload(device_id, CONTAINER, name, expiry)
        hub.state.count("file_upload_requests")
        return {"correlationId": upload.correlation_id, "hostName": self.blob_host, "containerName": CONTAINER,
                "blobName": name, "sasToken": self.store.sas_token(CONTAINER, name, expiry)}

    def notify(self, hub: Hub, device_id: str, body: Any) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("correlationId"), str) \
                or not isinstance(body.get("isSuccess"), bool):
            raise ServiceError(400, 'the body must be {"correlationId": "...", "isSuccess": true, "statusCode": '
                                    '200, "statusDescription": "..."}', "ArgumentInvalid")
        upload = self.store.get_upload(body["correlationId"])
        if upload is None or upload.device_id != device_id:
            raise ServiceError(400, f"correlation id {body['correlationId'][:60]!r} names no file upload of "
                                    f"device {device_id!r}", "ArgumentInvalid")
        if upload.state != "requested":
            raise ServiceError(400, f"the upload {upload.name!r} was already reported as {upload.state}",
                               "ArgumentInvalid")
        code = body.get("statusCode")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise ServiceError(400, "statusCode must be an integer", "ArgumentInvalid")
        self.store.finish_upload(upload.correlation_id, body["isSuccess"], code,
                                 str(body.get("statusDescription") or "")[:1024])
        hub.state.count("file_uploads" if body["isSuccess"] else "file_upload_failures")

    def listing(self, device_id: str | None) -> dict[str, Any]:
        uploads = [{"correlationId": u.correlation_id, "deviceId": u.device_id, "blobName": u.name,
                    "containerName": u.container, "state": u.state, "isSuccess": u.success,
                    "statusCode": u.status_code, "statusDescription": u.status_description,
                    "requestedTime": iso(u.requested), "notifiedTime": iso(u.notified or 0)}
                   for u in self.store.uploads(device_id)]
        prefix = f"{device_id}/" if device_id else ""
        blobs = [{"containerName": b.container, "blobName": b.name, "size": b.size, "contentMD5": b.md5,
                  "contentType": b.content_type, "etag": b.etag, "createdTime": iso(b.created),
                  "path": str(self.store.blob_path(b))}
                 for b in self.store.list(CONTAINER, prefix)]
        return {"uploads": uploads, "blobs": blobs}

"""Errors of the service REST API, answered the way IoT Hub answers them.

IoT Hub's error body is ``{"Message": "ErrorCode:<Name>;<text>", "ExceptionMessage": "Tracking ID:..."}``
with the error name repeated in the ``iothub-errorcode`` header; clients (and `roost-sim hub`) show the text.
"""

from __future__ import annotations

import datetime
import uuid

from emulator.hub.http import Response

# IoT Hub error names by HTTP status, used when a caller does not name a more precise one.
_DEFAULT_NAMES = {
    400: "ArgumentInvalid", 401: "IotHubUnauthorizedAccess", 403: "IotHubQuotaExceeded", 404: "NotFound",
    405: "MethodNotAllowed", 409: "Conflict", 411: "LengthRequired", 412: "PreconditionFailed",
    413: "MessageTooLarge", 429: "ThrottlingException", 500: "ServerError", 502: "BadGateway",
    504: "GatewayTimeout",
}


class ServiceError(Exception):
    """A request the service refuses: ``status`` (HTTP), ``name`` (IoT Hub error name), ``message`` (for a person)."""

    def __init__(self, status: int, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.name = name or _DEFAULT_NAMES.get(status, "ServerError")

    def response(self) -> Response:
        return error_response(self.status, self.message, self.name)


def error_response(status: int, message: str, name: str | None = None) -> Response:
    name = name or _DEFAULT_NAMES.get(status, "ServerError")
    stamp = datetime.datetime.now(datetime.UTC).strftime("%m/%d/%Y %H:%M:%S")
    body = {"Message": f"ErrorCode:{name};{message}",
            "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}-G:0-TimeStamp:{stamp}"}
    return Response(status, body, {"iothub-errorcode": name})


def message_of(body: object) -> str:
    """The human part of an IoT Hub error body (``Message`` without its ``ErrorCode:...;`` prefix)."""
    if isinstance(body, dict):
        text = body.get("Message") or body.get("message") or ""
        if isinstance(text, str):
            prefix, sep, rest = text.partition(";")
            return rest if sep and prefix.startswith("ErrorCode:") else text
    return str(body)

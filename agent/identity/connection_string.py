"""IoT Hub device connection strings, for development set-ups without DPS.

``HostName=hub.azure-devices.net;DeviceId=pi-01;SharedAccessKey=<base64>`` with optional ``GatewayHostName``
(IoT Edge) and ``x509=true`` (certificate identity: the files come from the identity section instead).
"""

from __future__ import annotations

import base64
import binascii

from agent.identity.credentials import HubCredentials, X509Files, key_signer
from agent.identity.errors import ConfigurationError


class ConnectionStringError(ConfigurationError):
    """A connection string that cannot be used (the message never repeats secret parts)."""


_KNOWN = {"HostName", "DeviceId", "SharedAccessKey", "GatewayHostName", "ModuleId", "x509", "SharedAccessKeyName"}
_FIX = "copy the device connection string from the IoT Hub portal (Devices > your device > Primary connection string)"


def parse_connection_string(text: str) -> dict[str, str]:
    """Split ``Key=Value;...`` into a dict, checking the keys a device connection string needs."""
    fields: dict[str, str] = {}
    for number, part in enumerate(text.strip().split(";"), start=1):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name:
            # The segment itself is not echoed: a key pasted without its "SharedAccessKey=" would leak.
            raise ConnectionStringError(f"connection string segment {number} is not Name=value", _FIX)
        if name not in _KNOWN:
            # Field names are short words; anything else may be key material and is not repeated.
            shown = repr(name) if len(name) <= 24 and name.isalpha() else f"in segment {number}"
            raise ConnectionStringError(f"connection string has an unknown field {shown}",
                                        f"expected {', '.join(sorted(_KNOWN))}; {_FIX}")
        if name in fields:
            raise ConnectionStringError(f"connection string repeats the field {name!r}", _FIX)
        fields[name] = value
    if "SharedAccessKeyName" in fields:
        raise ConnectionStringError(
            "this is a hub (service policy) connection string, not a device connection string",
            "never put a policy key on a device; " + _FIX,
        )
    for required in ("HostName", "DeviceId"):
        if not fields.get(required):
            raise ConnectionStringError(f"connection string lacks {required}", _FIX)
    has_key = "SharedAccessKey" in fields
    is_x509 = fields.get("x509", "").lower() == "true"
    if has_key == is_x509:
        raise ConnectionStringError(
            "connection string needs exactly one of SharedAccessKey or x509=true", _FIX
        )
    if has_key:
        try:
            base64.b64decode(fields["SharedAccessKey"], validate=True)
        except (binascii.Error, ValueError):
            raise ConnectionStringError("connection string SharedAccessKey is not valid base64", _FIX) from None
    return fields


def credentials_from_connection_string(text: str, x509: X509Files | None = None) -> HubCredentials:
    """HubCredentials for a device connection string (``x509`` supplies the files for ``x509=true``)."""
    fields = parse_connection_string(text)
    sign = None
    if "SharedAccessKey" in fields:
        sign = key_signer(base64.b64decode(fields["SharedAccessKey"]))
    elif x509 is None:
        raise ConnectionStringError(
            "connection string says x509=true but no certificate is configured",
            "set identity.cert_file and identity.key_file",
        )
    return HubCredentials(
        hostname=fields["HostName"],
        device_id=fields["DeviceId"],
        sign=sign,
        x509=None if sign else x509,
        gateway_hostname=fields.get("GatewayHostName") or None,
        module_id=fields.get("ModuleId") or None,
        source="connection-string",
    )

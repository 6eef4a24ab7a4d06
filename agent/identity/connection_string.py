"""IoT Hub device connection strings, for development set-ups without DPS.

``HostName=hub.azure-devices.net;DeviceId=pi-01;SharedAccessKey=<base64>`` with optional ``GatewayHostName``
(IoT Edge) and ``x509=true`` (certificate identity: the files come from the identity section instead).
"""

from __future__ import annotations

import base64
import binascii

from agent.identity.credentials import HubCredentials, X509Files, key_signer
from agent.identity.errors import ConfigurationError

_KNOWN = {"HostName", "DeviceId", "SharedAccessKey", "GatewayHostName", "ModuleId", "x509", "SharedAccessKeyName"}
_FIX = "copy the device connection string from the IoT Hub portal (Devices > your device > Primary connection string)"


def parse_connection_string(text: str) -> dict[str, str]:
    """Split ``Key=Value;...`` into a dict, checking the keys a device connection string needs."""
    fields: dict[str, str] = {}
    for part in text.strip().split(";"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep or not name:
            raise ConfigurationError(f"connection string segment {name!r} has no '='", _FIX)
        if name not in _KNOWN:
            raise ConfigurationError(
                f"connection string has an unknown field {name!r}", f"expected {', '.join(sorted(_KNOWN))}; {_FIX}"
            )
        if name in fields:
            raise ConfigurationError(f"connection string repeats the field {name!r}", _FIX)
        fields[name] = value
    if "SharedAccessKeyName" in fields:
        raise ConfigurationError(
            "this is a hub (service policy) connection string, not a device connection string",
            "never put a policy key on a device; " + _FIX,
        )
    for required in ("HostName", "DeviceId"):
        if not fields.get(required):
            raise ConfigurationError(f"connection string lacks {required}", _FIX)
    has_key = "SharedAccessKey" in fields
    is_x509 = fields.get("x509", "").lower() == "true"
    if has_key == is_x509:
        raise ConfigurationError(
            "connection string needs exactly one of SharedAccessKey or x509=true", _FIX
        )
    if has_key:
        try:
            base64.b64decode(fields["SharedAccessKey"], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError("connection string SharedAccessKey is not valid base64", _FIX) from None
    return fields


def credentials_from_connection_string(text: str, x509: X509Files | None = None) -> HubCredentials:
    """HubCredentials for a device connection string (``x509`` supplies the files for ``x509=true``)."""
    fields = parse_connection_string(text)
    sign = None
    if "SharedAccessKey" in fields:
        sign = key_signer(base64.b64decode(fields["SharedAccessKey"]))
    elif x509 is None:
        raise ConfigurationError(
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

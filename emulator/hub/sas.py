"""SharedAccessSignature tokens as IoT Hub and DPS check them.

``SharedAccessSignature sr={url-encoded resource}&sig={base64 HMAC-SHA256(key, sr + "\\n" + se)}&se={expiry}[&skn=]``
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from dataclasses import dataclass, field


class SasError(ValueError):
    """The token is malformed, expired, for another resource, or signed with another key."""


@dataclass(frozen=True)
class SasToken:
    resource: str          # decoded ``sr``
    signature: bytes = field(repr=False)
    expiry: int
    key_name: str | None
    signed_text: bytes = field(repr=False)   # what the signature covers: encoded sr + "\n" + se


def parse_sas(token: str) -> SasToken:
    prefix = "SharedAccessSignature "
    if not token.startswith(prefix):
        raise SasError("token does not start with 'SharedAccessSignature '")
    fields: dict[str, str] = {}
    for part in token[len(prefix):].split("&"):
        key, sep, value = part.partition("=")
        if not sep:
            raise SasError(f"token field {key[:20]!r} has no '='")
        fields[key] = value
    missing = {"sr", "sig", "se"} - fields.keys()
    if missing:
        raise SasError(f"token lacks {', '.join(sorted(missing))}")
    try:
        expiry = int(fields["se"])
        signature = base64.b64decode(urllib.parse.unquote(fields["sig"]), validate=True)
    except ValueError as exc:
        raise SasError("token 'se' must be an integer and 'sig' base64") from exc
    return SasToken(resource=urllib.parse.unquote(fields["sr"]), signature=signature, expiry=expiry,
                    key_name=fields.get("skn"), signed_text=f"{fields['sr']}\n{fields['se']}".encode())


def sign(key_b64: str, text: bytes) -> bytes:
    return hmac.new(base64.b64decode(key_b64), text, hashlib.sha256).digest()


def verify_sas(token: str, resource: str, keys: list[str | None], now: float) -> SasToken:
    """Check a token for ``resource`` against any of ``keys`` (base64); raises SasError saying why not."""
    parsed = parse_sas(token)
    if parsed.resource.rstrip("/").lower() != resource.rstrip("/").lower():
        raise SasError(f"token is for resource {parsed.resource!r}, expected {resource!r}")
    if parsed.expiry <= now:
        raise SasError(f"token expired {int(now - parsed.expiry)} s ago (se={parsed.expiry})")
    for key in keys:
        if key and hmac.compare_digest(sign(key, parsed.signed_text), parsed.signature):
            return parsed
    raise SasError("token signature does not match the device's keys")


def make_sas(resource: str, key_b64: str, expiry: int, key_name: str | None = None) -> str:
    """A token for ``resource`` signed with ``key_b64`` (used by tests and the benchmark's own clients)."""
    encoded = urllib.parse.quote(resource, safe="")
    sig = base64.b64encode(sign(key_b64, f"{encoded}\n{expiry}".encode())).decode()
    token = f"SharedAccessSignature sr={encoded}&sig={urllib.parse.quote(sig, safe='')}&se={expiry}"
    return token + (f"&skn={key_name}" if key_name else "")


def derive_group_key(group_key_b64: str, registration_id: str) -> str:
    """A group enrollment member's device key (base64): HMAC-SHA256(group key, registration id)."""
    return base64.b64encode(sign(group_key_b64, registration_id.encode())).decode()

"""What the uplink needs to reach IoT Hub, whatever the identity method.

Every method (symmetric key, group-derived key, TPM, connection string, X.509) ends in a HubCredentials.
SAS-based methods hand over a *signer*, not a key: for the TPM the key never leaves the chip, so the uplink
only ever asks for signatures and renews its token itself (create_from_sastoken + update_sastoken).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

# sign(message) -> raw HMAC-SHA256 digest. Symmetric keys sign in software, the TPM signs in the chip.
Signer = Callable[[bytes], bytes]


def key_signer(key: bytes) -> Signer:
    """A signer for a device key held in memory (symmetric and group-derived identities)."""

    def sign(message: bytes) -> bytes:
        return hmac.new(key, message, hashlib.sha256).digest()

    return sign


def sas_token(resource_uri: str, sign: Signer, expiry: int, policy_name: str | None = None) -> str:
    """An IoT Hub / DPS SharedAccessSignature for ``resource_uri`` valid until ``expiry`` (unix seconds)."""
    encoded = urllib.parse.quote(resource_uri, safe="")
    signature = base64.b64encode(sign(f"{encoded}\n{expiry}".encode())).decode()
    token = f"SharedAccessSignature sr={encoded}&sig={urllib.parse.quote(signature, safe='')}&se={expiry}"
    if policy_name:
        token += f"&skn={policy_name}"
    return token


def derive_device_key(group_key_b64: str, registration_id: str) -> bytes:
    """The device key of a DPS group enrollment: HMAC-SHA256(group key, registration id)."""
    group_key = base64.b64decode(group_key_b64, validate=True)
    return hmac.new(group_key, registration_id.encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class X509Files:
    cert_file: str
    key_file: str
    pass_phrase: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class HubCredentials:
    """Where and as whom to connect. ``repr`` never shows secrets (they must not reach logs)."""

    hostname: str                      # the IoT Hub host name (from DPS or the connection string)
    device_id: str
    sign: Signer | None = field(default=None, repr=False)   # SAS identities
    x509: X509Files | None = None                           # certificate identities
    gateway_hostname: str | None = None                     # transparent gateway (IoT Edge) to connect through
    ca_pem: str | None = field(default=None, repr=False)    # trust anchor PEM text, e.g. the gateway's root CA
    module_id: str | None = None
    source: str = ""                                        # "dps-symmetric", "tpm", "connection-string", ...

    def sas_token(self, ttl_s: int, now: float | None = None) -> str:
        """A fresh device SAS token for this hub, valid ``ttl_s`` seconds from ``now``."""
        if self.sign is None:
            raise ValueError(f"identity {self.source or self.device_id!r} has no SAS signer (X.509 identity?)")
        expiry = int((time.time() if now is None else now) + ttl_s)
        return sas_token(f"{self.hostname}/devices/{self.device_id}", self.sign, expiry)

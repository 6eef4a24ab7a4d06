"""DPS TPM attestation, service side: the authenticationKey challenge, the SAS check, the hub key delivery.

What the real service does with an individual enrollment holding an EK public key (TPM2B_PUBLIC):

1. The device PUTs register with its EK and SRK public areas and no Authorization header.
2. The EK must equal the enrolled one (else 401, like an unknown registration). DPS answers 401 with an
   ``authenticationKey``: a fresh HMAC key, duplicated to the SRK with an inner AES-128-CFB wrap, whose inner
   key travels as a credential only the EK can activate (make_credential(EK, inner key, SRK name)).
3. The device imports the key into its TPM and PUTs register again with a SharedAccessSignature signed by it
   (``sr={idScope}/registrations/{regId}``, ``skn=registration``); DPS checks it against the key it wrapped.
4. The assignment carries ``registrationState.tpm.authenticationKey``: the IoT Hub device key, wrapped the same
   way, so the device can import it too and never see it in the clear.

``TpmAttestation`` keeps the per-registration challenge keys in memory (a challenge is valid for one
registration attempt, as with the real service) and is registered with the DPS emulator's handler registry
under the attestation type "tpm".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tpm2_pytss import (
    TPM2_ALG,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE,
    TPMA_OBJECT,
    TPMT_KEYEDHASH_SCHEME,
    TPMT_SYM_DEF_OBJECT,
    TPMU_SYM_KEY_BITS,
    TPMU_SYM_MODE,
)
from tpm2_pytss.utils import make_credential, wrap

from emulator.hub import attestation
from emulator.hub.attestation import AttestationError, AttestationRequest, Attested
from emulator.hub.sas import SasError, verify_sas
from emulator.hub.state import AUTH_SAS

CHALLENGE_TTL_S = 600.0
EK_ATTRIBUTES = TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM


class TpmAttestationError(ValueError):
    """A registration the service refuses; ``status`` is the HTTP status DPS would answer with."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


def registration_id(ek_public: bytes) -> str:
    """base32(sha256(TPM2B_PUBLIC of the EK)), lower case, unpadded: the id the device registers as."""
    return base64.b32encode(hashlib.sha256(ek_public).digest()).decode().lower().rstrip("=")


def _public(raw: bytes, what: str) -> TPM2B_PUBLIC:
    try:
        public, used = TPM2B_PUBLIC.unmarshal(raw)
    except Exception as exc:    # the binding raises several types for garbage
        raise TpmAttestationError(400, f"{what} is not a marshalled TPM2B_PUBLIC: {exc}") from None
    if used != len(raw):
        raise TpmAttestationError(400, f"{what} has {len(raw) - used} bytes after the TPM2B_PUBLIC")
    return public


def authentication_key(ek_public: bytes, srk_public: bytes, key: bytes) -> bytes:
    """The authenticationKey blob that delivers HMAC ``key`` to the TPM holding EK and SRK (see module doc)."""
    ek = _public(ek_public, "endorsement key")
    srk = _public(srk_public, "storage root key")
    if ek.publicArea.type != TPM2_ALG.RSA or (ek.publicArea.objectAttributes & EK_ATTRIBUTES) != EK_ATTRIBUTES:
        raise TpmAttestationError(400, "endorsement key is not a restricted RSA decryption key bound to a TPM")
    if not srk.publicArea.objectAttributes & TPMA_OBJECT.RESTRICTED:
        raise TpmAttestationError(400, "storage root key is not a restricted storage key")
    scheme = TPMT_KEYEDHASH_SCHEME(scheme=TPM2_ALG.HMAC)
    scheme.details.hmac.hashAlg = TPM2_ALG.SHA256
    # No fixedTPM/fixedParent (it is a duplicate); not noDA, so a TPM in lockout refuses to use it.
    sensitive, public = TPM2B_SENSITIVE.keyedhash_from_secret(
        key, objectAttributes=TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT, scheme=scheme)
    aes128cfb = TPMT_SYM_DEF_OBJECT(algorithm=TPM2_ALG.AES, keyBits=TPMU_SYM_KEY_BITS(aes=128),
                                    mode=TPMU_SYM_MODE(aes=TPM2_ALG.CFB))
    inner_key = secrets.token_bytes(16)
    _, duplicate, duplicate_seed = wrap(srk.publicArea, public, sensitive, symkey=inner_key, symdef=aes128cfb)
    credential, credential_secret = make_credential(ek, inner_key, srk.get_name())
    return (credential.marshal() + credential_secret.marshal() + duplicate.marshal() + duplicate_seed.marshal()
            + public.marshal() + struct.pack(">H", 0))


def check_sas(token: str, resource: str, key: bytes, *, now: float | None = None,
              policy: str | None = None) -> None:
    """Verify a SharedAccessSignature for ``resource`` signed with ``key``; raises TpmAttestationError(401)."""
    try:
        parsed = verify_sas(token, resource, [base64.b64encode(key).decode()], time.time() if now is None else now)
    except SasError as exc:
        raise TpmAttestationError(401, f"SharedAccessSignature {exc}") from None
    if policy is not None and parsed.key_name != policy:
        raise TpmAttestationError(401, f"SharedAccessSignature skn must be {policy!r}")


@dataclass
class _Challenge:
    key: bytes
    ek_public: bytes
    srk_public: bytes
    issued: float


class TpmAttestation:
    """Challenges in flight, one per registration: issue, check the SAS signed with them, wrap the hub key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._challenges: dict[str, _Challenge] = {}
        self._lock = threading.Lock()

    def challenge(self, id_scope: str, registration_id_: str, enrolled_ek: bytes, body_tpm: dict) -> bytes:
        """Answer to an unauthenticated register: a new authenticationKey (raises for a wrong EK)."""
        ek, srk = _decode_keys(body_tpm)
        if not hmac.compare_digest(ek, enrolled_ek):
            raise TpmAttestationError(401, "endorsement key does not match the enrollment")
        key = secrets.token_bytes(32)
        blob = authentication_key(ek, srk, key)
        with self._lock:
            self._challenges[f"{id_scope}/{registration_id_}".lower()] = _Challenge(key, ek, srk, self._clock())
        return blob

    def verify(self, id_scope: str, registration_id_: str, authorization: str, now: float | None = None) -> None:
        """Check the SAS of the second register (and of operation polls) against the challenge key."""
        resource = f"{id_scope}/registrations/{registration_id_}"
        with self._lock:
            pending = self._challenges.get(f"{id_scope}/{registration_id_}".lower())
        if pending is None or self._clock() - pending.issued > CHALLENGE_TTL_S:
            raise TpmAttestationError(401, "no authenticationKey challenge is pending for this registration; "
                                           "register without Authorization first")
        check_sas(authorization, resource, pending.key, now=now, policy="registration")

    def hub_key_blob(self, id_scope: str, registration_id_: str, device_key: bytes) -> bytes:
        """registrationState.tpm.authenticationKey: the hub device key wrapped for the EK and SRK challenged."""
        with self._lock:
            pending = self._challenges.get(f"{id_scope}/{registration_id_}".lower())
        if pending is None:
            raise TpmAttestationError(401, "no authenticationKey challenge is pending for this registration")
        return authentication_key(pending.ek_public, pending.srk_public, device_key)

    def pending(self, id_scope: str, registration_id_: str) -> bool:
        with self._lock:
            pending = self._challenges.get(f"{id_scope}/{registration_id_}".lower())
        return pending is not None and self._clock() - pending.issued <= CHALLENGE_TTL_S

    def forget(self, id_scope: str, registration_id_: str) -> None:
        with self._lock:
            self._challenges.pop(f"{id_scope}/{registration_id_}".lower(), None)


def _decode_keys(body_tpm: dict) -> tuple[bytes, bytes]:
    if not isinstance(body_tpm, dict):
        raise TpmAttestationError(400, "tpm must be an object with endorsementKey and storageRootKey")
    try:
        ek = base64.b64decode(body_tpm["endorsementKey"], validate=True)
        srk = base64.b64decode(body_tpm["storageRootKey"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise TpmAttestationError(400, "tpm.endorsementKey and tpm.storageRootKey must be base64") from None
    return ek, srk


class TpmHandler:
    """The DPS emulator's "tpm" attestation handler (see emulator/hub/attestation.py for the interface)."""

    type = "tpm"

    def __init__(self) -> None:
        self.attestation = TpmAttestation()

    def claims(self, request: AttestationRequest) -> bool:
        """True for requests of a registration in the middle of TPM attestation (its operation polls)."""
        return self.attestation.pending(request.id_scope, request.registration_id)

    async def attest(self, dps: Any, request: AttestationRequest) -> Attested:
        reg_id = request.registration_id
        enrollment = dps.state.find_enrollment(reg_id)
        if enrollment is None or enrollment.attestation.type != self.type:
            raise AttestationError(401, 401002, f"no TPM enrollment for registration {reg_id!r}")
        if enrollment.provisioning_status != "enabled":
            raise AttestationError(401, 401002, f"enrollment {enrollment.enrollment_id!r} is disabled")
        try:
            enrolled_ek = base64.b64decode(enrollment.attestation.endorsement_key or "", validate=True)
            if not request.sas_token:
                blob = self.attestation.challenge(request.id_scope, reg_id, enrolled_ek, request.body.get("tpm"))
                raise AttestationError(401, 401002, "TPM attestation: answer the authenticationKey challenge",
                                       body={"authenticationKey": base64.b64encode(blob).decode()})
            self.attestation.verify(request.id_scope, reg_id, request.sas_token, now=dps.clock())
            if "tpm" not in request.body:      # an operation poll: authenticated, nothing to issue
                return Attested(enrollment, AUTH_SAS)
            device_key = secrets.token_bytes(32)
            body_ek, _ = _decode_keys(request.body["tpm"])
            if not hmac.compare_digest(body_ek, enrolled_ek):
                raise TpmAttestationError(401, "endorsement key does not match the enrollment")
            blob = self.attestation.hub_key_blob(request.id_scope, reg_id, device_key)
        except TpmAttestationError as exc:
            raise AttestationError(exc.status, exc.status * 1000 + 2, f"TPM attestation: {exc}") from None
        key_b64 = base64.b64encode(device_key).decode()
        return Attested(enrollment, AUTH_SAS, primary_key=key_b64, secondary_key=None,
                        registration_state={"tpm": {"authenticationKey": base64.b64encode(blob).decode()}})


attestation.register(TpmHandler())

"""The DPS authenticationKey challenge: unpack it, prove the EK is ours, import the HMAC key under the SRK.

DPS hands the device a key it can only use if it holds the enrolled EK (the same blob layout carries the
IoT Hub key in the assignment):

    TPM2B_ID_OBJECT         credential blob, made for (EK, SRK name): holds the inner wrapping key
    TPM2B_ENCRYPTED_SECRET  seed for the credential, encrypted to the EK ("IDENTITY")
    TPM2B_PRIVATE           the HMAC key duplicated to the SRK, inner-wrapped with AES-128-CFB
    TPM2B_ENCRYPTED_SECRET  seed for the duplicate, encrypted to the SRK ("DUPLICATE")
    TPM2B_PUBLIC            the HMAC key's public area (keyedhash, HMAC-SHA256)
    UINT16                  encrypted data size (optional, unused)

ActivateCredential(SRK, EK) yields the inner key only inside a TPM that holds the EK's private part;
Import then unwraps the duplicate under the SRK. A blob for another TPM, or one altered in transit, fails the
TPM's integrity checks, and nothing is stored.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from agent.tpm.device import Tpm
from agent.tpm.errors import RC_FAILURE, RC_INTEGRITY, RC_SIZE, RC_VALUE, ChallengeRejected, response_code, translate

MAX_BLOB = 4096       # a real blob is ~600 bytes; anything far larger is not a challenge


@dataclass(frozen=True)
class AuthenticationKey:
    """The five parts of an authenticationKey blob, each still marshalled (with its 2-byte size)."""

    credential: bytes
    credential_secret: bytes
    duplicate: bytes
    duplicate_seed: bytes
    public: bytes

    @classmethod
    def parse(cls, blob: bytes) -> AuthenticationKey:
        """Split a blob; raises ChallengeRejected saying what is wrong with it."""
        if len(blob) > MAX_BLOB:
            raise _malformed(f"it is {len(blob)} bytes long, more than a challenge can be")
        parts: list[bytes] = []
        offset = 0
        names = ("credential blob", "credential secret", "duplicate", "duplicate seed", "public area")
        for name in names:
            if offset + 2 > len(blob):
                raise _malformed(f"it ends before the {name}")
            (size,) = struct.unpack_from(">H", blob, offset)
            if size == 0 or offset + 2 + size > len(blob):
                raise _malformed(f"the {name} claims {size} bytes but {len(blob) - offset - 2} remain")
            parts.append(blob[offset: offset + 2 + size])
            offset += 2 + size
        trailer = len(blob) - offset
        if trailer not in (0, 2):   # the optional UINT16 enc_data_size
            raise _malformed(f"{trailer} unexpected bytes follow the public area")
        return cls(*parts)

    def build(self) -> bytes:
        return self.credential + self.credential_secret + self.duplicate + self.duplicate_seed + self.public


def _malformed(why: str) -> ChallengeRejected:
    return ChallengeRejected(f"the authenticationKey from DPS is malformed: {why}",
                             "nothing was stored; check that the provisioning host is Azure DPS (or the "
                             "roost emulator) and not a proxy rewriting responses")


@contextmanager
def loaded_key(tpm: Tpm, blob: bytes) -> Iterator[Any]:
    """Activate + import ``blob`` and yield the loaded (transient) key; it is flushed when the block ends."""
    parts = AuthenticationKey.parse(blob)
    t = tpm.t
    try:
        credential, _ = t.TPM2B_ID_OBJECT.unmarshal(parts.credential)
        credential_secret, _ = t.TPM2B_ENCRYPTED_SECRET.unmarshal(parts.credential_secret)
        duplicate, _ = t.TPM2B_PRIVATE.unmarshal(parts.duplicate)
        duplicate_seed, _ = t.TPM2B_ENCRYPTED_SECRET.unmarshal(parts.duplicate_seed)
        public, _ = t.TPM2B_PUBLIC.unmarshal(parts.public)
    except (t.TSS2_Exception, ValueError, TypeError) as exc:
        raise _malformed(f"a part does not decode ({exc})") from None
    if public.publicArea.type != t.TPM2_ALG.KEYEDHASH:
        raise _malformed("the key it carries is not an HMAC key")

    ek = tpm.ek()
    try:
        srk = tpm.srk()
    except BaseException:
        tpm.ectx.tr_close(ek)
        raise
    try:
        session = tpm.endorsement_policy_session()
        with tpm.transient(session):
            inner_key = _tpm_step(tpm, "activating the credential", lambda: tpm.ectx.activate_credential(
                srk, ek, credential, credential_secret, session1=t.ESYS_TR.PASSWORD, session2=session))
        aes128cfb = t.TPMT_SYM_DEF_OBJECT(algorithm=t.TPM2_ALG.AES, keyBits=t.TPMU_SYM_KEY_BITS(aes=128),
                                          mode=t.TPMU_SYM_MODE(aes=t.TPM2_ALG.CFB))
        private = _tpm_step(tpm, "importing the key", lambda: tpm.ectx.import_(
            srk, t.TPM2B_DATA(bytes(inner_key)), public, duplicate, duplicate_seed, aes128cfb))
        handle = _tpm_step(tpm, "loading the key", lambda: tpm.ectx.load(srk, private, public))
    finally:
        tpm.ectx.tr_close(ek)
        tpm.ectx.tr_close(srk)
    with tpm.transient(handle):
        yield handle


def _tpm_step(tpm: Tpm, doing: str, call: Any) -> Any:
    """Run one TPM command of the activation; integrity failures mean the blob is not for this TPM."""
    with tpm.lock:
        try:
            return call()
        except tpm.t.TSS2_Exception as exc:
            if credential_rejected(tpm, exc):
                raise ChallengeRejected(
                    f"the TPM rejected the authenticationKey while {doing} ({exc}): it was made for another "
                    "TPM's endorsement key or storage root key, or altered on the way",
                    "nothing was stored; check that the enrollment holds this device's EK (`roost tpm ek`)") from None
            raise translate(exc, tpm.tcti, doing) from None


def credential_rejected(tpm: Tpm, exc: BaseException) -> bool:
    """Did ActivateCredential/Import fail because the blob is not for this TPM (rather than the TPM failing)?"""
    rc = response_code(exc)
    # TPM_RC_INTEGRITY, VALUE, SIZE, KEY (0x09A), BAD_AUTH (0x0A2), AUTH_FAIL (0x08E), POLICY_FAIL (0x09D)
    if rc in (RC_INTEGRITY, RC_VALUE, RC_SIZE, 0x09A, 0x0A2, 0x08E, 0x09D):
        return True
    # Older libtpms (swtpm in Debian 12; changed upstream in 2024) answers TPM_RC_FAILURE when a secret does not
    # decrypt with the EK, without being in failure mode: the self-test result tells the two apart.
    if rc != RC_FAILURE:
        return False
    try:
        _, result = tpm.ectx.get_test_result()
    except tpm.t.TSS2_Exception:
        return False
    return int(result) == 0


def import_persistent(tpm: Tpm, blob: bytes, handle: int) -> bytes:
    """Import the key in ``blob`` and keep it at persistent ``handle``; returns its marshalled public area."""
    with loaded_key(tpm, blob) as key:
        with tpm.guard("reading the imported key"):
            public, _, _ = tpm.ectx.read_public(key)
        tpm.persist(key, handle)
    return bytes(public.marshal())




"""HMAC-SHA256 inside the TPM: the SAS signer of a TPM identity (the key never leaves the chip).

``TpmSigner`` is what HubCredentials.sign holds. It opens the TPM for each signature rather than holding a
connection: a token is signed once an hour, swtpm serves one connection at a time, and a TPM reset between
two signatures costs nothing this way.
"""

from __future__ import annotations

from typing import Any

from agent.tpm.device import HUB_KEY_HANDLE, Tpm
from agent.tpm.errors import TpmError

MAX_BUFFER = 1024     # TPM2B_MAX_BUFFER: longer messages go through an HMAC sequence


def hmac(tpm: Tpm, key: Any, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` with a loaded or persistent key (ESYS_TR) of an open TPM."""
    t = tpm.t
    with tpm.guard("signing with the TPM-held key"):
        if len(message) <= MAX_BUFFER:
            return bytes(tpm.ectx.hmac(key, message, t.TPM2_ALG.SHA256))
        sequence = tpm.ectx.hmac_start(key, t.TPM2B_AUTH(), t.TPM2_ALG.SHA256)
        try:
            for start in range(0, len(message) - MAX_BUFFER, MAX_BUFFER):
                tpm.ectx.sequence_update(sequence, message[start: start + MAX_BUFFER])
            tail = message[(len(message) - 1) // MAX_BUFFER * MAX_BUFFER:]
            digest, _ = tpm.ectx.sequence_complete(sequence, tail, t.ESYS_TR.NULL)
        except BaseException:
            tpm.ectx.flush_context(sequence)   # a completed sequence is gone already; a failed one is not
            raise
        return bytes(digest)


class TpmSigner:
    """sign(message) -> HMAC-SHA256 by the persistent key at ``handle`` (the hub identity by default)."""

    def __init__(self, tcti: str, handle: int = HUB_KEY_HANDLE) -> None:
        self.tcti = tcti
        self.handle = handle

    def __call__(self, message: bytes) -> bytes:
        with Tpm(self.tcti) as tpm:
            try:
                key = tpm.open_persistent(self.handle, "IoT Hub identity key")
            except TpmError as exc:
                raise TpmError(exc.problem, "the TPM was cleared or the key removed: provision again (restart "
                                            "the agent, or call its `reprovision` method); DPS re-issues the "
                                            "key") from None
            try:
                return hmac(tpm, key, message)
            finally:
                tpm.ectx.tr_close(key)

    def __repr__(self) -> str:
        return f"TpmSigner({self.tcti!r}, 0x{self.handle:08x})"

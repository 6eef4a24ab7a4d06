"""TPM errors in the operator's words: what is wrong and what to do, never a bare TSS2 return code.

Every class is an IdentityError, so the daemon and `roost` report them like any other identity failure.
``translate`` turns a tpm2-pytss TSS2_Exception into one of them.
"""

from __future__ import annotations

from agent.identity.errors import IdentityError, ProvisioningError

# TPM 2.0 response codes (TCG Part 2, 6.6.3) and TSS layer codes this module recognises; spelled out
# here so that translating an error never needs tpm2_pytss (it may be the very thing that is missing).
RC_HANDLE = 0x08B
RC_INTEGRITY = 0x09F
RC_VALUE = 0x084
RC_SIZE = 0x095
RC_POLICY_FAIL = 0x09D
RC_AUTH_FAIL = 0x08E
RC_BAD_AUTH = 0x0A2
RC_LOCKOUT = 0x921
RC_OBJECT_MEMORY = 0x902
RC_SESSION_MEMORY = 0x903
RC_OBJECT_HANDLES = 0x906
RC_SESSION_HANDLES = 0x905
RC_NV_SPACE = 0x14B
RC_INITIALIZE = 0x100
RC_FAILURE = 0x101
RC_FMT1 = 0x080
TCTI_LAYER = 0x0A0000
TCTI_IO_ERROR = 0x0A000A
TCTI_NO_CONNECTION = 0x0A000C   # libtss2 3.x/4.x: "no connection"


class TpmError(IdentityError):
    """Something about the TPM itself; ``fix`` says what to do."""

    def __init__(self, problem: str, fix: str = "", *, kind: str = "tpm") -> None:
        super().__init__(problem, fix, kind=kind)


class TpmNotFound(TpmError):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix, kind="tpm-missing")


class TpmPermissionDenied(TpmError):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix, kind="tpm-permission")


class NoResourceManager(TpmError):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix, kind="tpm-no-resource-manager")


class EkNotProvisioned(TpmError):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix, kind="tpm-no-ek")


class TpmLockout(TpmError):
    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix, kind="tpm-lockout")


class ChallengeRejected(ProvisioningError):
    """The authenticationKey blob does not belong to this TPM (foreign EK) or was altered on the way."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix, kind="tpm-challenge")


class EnrollmentMissing(ProvisioningError):
    """DPS does not know this endorsement key (401/404): the operator has to create the enrollment."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem, fix, kind="enrollment")


LOCKOUT_FIX = ("wait for the lockout recovery time shown by `roost tpm info`, or clear it with "
               "`tpm2_dictionarylockout --clear-lockout` (needs the lockout authorization); then find "
               "what is trying wrong passwords")


def connect_fix(tcti: str) -> str:
    """What to check when nothing answers at ``tcti``, by transport."""
    name = tcti.partition(":")[0]
    if name == "tabrmd":
        return ("start the access broker (`apt install tpm2-abrmd`, `systemctl enable --now tpm2-abrmd`), or use "
                "the kernel resource manager: identity.tpm_tcti = \"device:/dev/tpmrm0\"")
    if name in ("swtpm", "mssim"):
        return ("start the simulator at that host and port (`swtpm socket --tpm2 --server type=tcp,port=PORT "
                "--ctrl type=tcp,port=PORT+1 --tpmstate dir=DIR --flags not-need-init,startup-clear`), or fix "
                "identity.tpm_tcti")
    return ("check identity.tpm_tcti; on a Raspberry Pi enable the TPM overlay (dtoverlay=tpm-slb9670 in "
            "/boot/firmware/config.txt) and reboot")


def response_code(exc: BaseException) -> int:
    """The TPM/TSS response code of a TSS2_Exception with handle/parameter/session numbers stripped."""
    rc = int(getattr(exc, "rc", 0) or 0)
    if rc & 0xFFFF0000 == 0 and rc & RC_FMT1:
        return RC_FMT1 + (rc & 0x3F)
    return rc


def translate(exc: BaseException, tcti: str, doing: str) -> TpmError:
    """A TpmError for a TSS2_Exception raised while ``doing`` something through ``tcti``."""
    rc = response_code(exc)
    if rc == RC_LOCKOUT:
        return TpmLockout(f"the TPM is in dictionary-attack lockout while {doing}", LOCKOUT_FIX)
    if rc in (RC_OBJECT_MEMORY, RC_SESSION_MEMORY, RC_OBJECT_HANDLES, RC_SESSION_HANDLES):
        return NoResourceManager(
            f"the TPM ran out of object or session slots while {doing} ({tcti}): something leaves objects "
            "loaded because no resource manager sits in front of the TPM",
            "use the kernel resource manager (identity.tpm_tcti = \"device:/dev/tpmrm0\") or tpm2-abrmd "
            "(\"tabrmd\"), not /dev/tpm0; with swtpm, restart it")
    if rc in (TCTI_IO_ERROR, TCTI_NO_CONNECTION) or rc & 0xFFFF0000 == TCTI_LAYER:
        return TpmNotFound(f"no TPM answers at {tcti!r} while {doing} ({exc})", connect_fix(tcti))
    if rc == RC_FAILURE:
        return TpmError(f"the TPM is in failure mode while {doing}: its self-test failed or it hit an internal "
                        "error", "power-cycle the device (swtpm: restart it); if it persists the TPM is broken")
    if rc == RC_NV_SPACE:
        return TpmError(f"the TPM has no room for another persistent object while {doing}",
                        "free a persistent handle with `tpm2_evictcontrol -c <handle>` (see `roost tpm info`)")
    return TpmError(f"the TPM refused while {doing}: {exc} (rc 0x{int(getattr(exc, 'rc', 0)):x})",
                    "run `roost tpm info` to check the TPM's state; see docs/tpm.md")

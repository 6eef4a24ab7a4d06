"""One open connection to the TPM, the persistent handles roost uses, and the reads everyone needs.

Persistent handles (TCG "Registry of Reserved TPM 2.0 Handles"; the first two are the Azure IoT SDKs' too):

    0x81010001  EK   endorsement key (RSA 2048, TCG default template), made by the manufacturer or
                     `roost tpm ek --create`; its public part is the DPS enrollment
    0x81000001  SRK  storage root key (RSA 2048, AES-128-CFB), parent of every key roost imports or creates
    0x81000100  hub  HMAC-SHA256 key of the IoT Hub identity, imported from the DPS assignment
    0x81000101  AK   attestation key (ECC P-256, restricted signing) for health attestation quotes

Everything else is transient and flushed before the call that made it returns: with /dev/tpmrm0 the kernel
would clean up after us, but swtpm and /dev/tpm0 have no resource manager and a leaked object stays loaded.
tpm2-pytss is imported here only, so `roost` without a TPM never pays its ~100 ms import.
The calls used are the subset common to tpm2-pytss 2.3 (Debian trixie) and 3.0 (PyPI): every optional
argument that 3.0 added a default for is passed explicitly.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agent.tpm.errors import (
    RC_HANDLE,
    EkNotProvisioned,
    NoResourceManager,
    TpmError,
    TpmNotFound,
    TpmPermissionDenied,
    response_code,
    translate,
)

EK_HANDLE = 0x81010001
SRK_HANDLE = 0x81000001
HUB_KEY_HANDLE = 0x81000100
AK_HANDLE = 0x81000101
EK_CERT_NV_INDEX = 0x01C00002
PERSISTENT_FIRST = 0x81000000

# TPM_PT property tags (TCG Part 2, 6.13), numeric because the Python names differ between tpm2-pytss versions.
PT_FIXED, PT_FAMILY_INDICATOR, PT_LEVEL, PT_REVISION = 0x100, 0x100, 0x101, 0x102
PT_MANUFACTURER, PT_VENDOR_STRINGS = 0x105, (0x106, 0x107, 0x108, 0x109)
PT_FIRMWARE_VERSION_1, PT_FIRMWARE_VERSION_2 = 0x10B, 0x10C
PT_VAR, PT_PERMANENT = 0x200, 0x200
PT_LOCKOUT_COUNTER, PT_MAX_AUTH_FAIL, PT_LOCKOUT_INTERVAL, PT_LOCKOUT_RECOVERY = 0x20E, 0x20F, 0x210, 0x211
PERMANENT_IN_LOCKOUT = 1 << 9   # TPMA_PERMANENT.inLockout

# libtss2 logs expected failures (probing an absent handle) to stderr; roost reports errors itself.
os.environ.setdefault("TSS2_LOG", "all+none")

_RM_DEVICE = re.compile(r"^/dev/tpmrm\d+$")
_RAW_DEVICE = re.compile(r"^/dev/tpm\d+$")


def _pytss() -> Any:
    try:
        import tpm2_pytss
    except ImportError as exc:
        raise TpmError(f"the TPM library tpm2-pytss cannot be loaded ({exc})",
                       "install it: `apt install python3-tpm2-pytss` (Debian 13) or `pip install tpm2-pytss` "
                       "with libtss2-dev installed") from None
    return tpm2_pytss


def check_tcti(tcti: str) -> None:
    """Refuse TCTIs that cannot work before the TSS prints its own cryptic error."""
    name, _, conf = tcti.partition(":")
    if name != "device":
        return
    path = conf or "/dev/tpm0"
    if _RAW_DEVICE.match(path):
        rm = re.sub(r"/dev/tpm(\d+)$", r"/dev/tpmrm\1", path)
        raise NoResourceManager(
            f"identity.tpm_tcti uses {path}, the TPM without a resource manager: one process at a time, and "
            "objects a crashed process loaded stay loaded",
            f"use the kernel resource manager: tpm_tcti = \"device:{rm}\" (or \"tabrmd\" with tpm2-abrmd)")
    denied = TpmPermissionDenied(
        f"this user may not open {path} (permission denied)",
        "add the agent's user to group tss (`sudo usermod -aG tss roost`, then log in again or restart "
        "the service); the udev rules of tpm2-tools/tpm-udev make /dev/tpmrm0 group tss")
    try:
        os.stat(path)
    except FileNotFoundError:
        raise TpmNotFound(
            f"no TPM device at {path}",
            "enable the TPM: on a Raspberry Pi add `dtoverlay=tpm-slb9670` to /boot/firmware/config.txt and "
            "reboot; `ls /dev/tpm*` must list it. For swtpm set identity.tpm_tcti = \"swtpm:host=...,port=...\"") \
            from None
    except PermissionError:
        raise denied from None
    if not os.access(path, os.R_OK | os.W_OK):
        raise denied
    if not _RM_DEVICE.match(path):
        raise NoResourceManager(f"{path} is not a TPM resource manager device",
                                "use device:/dev/tpmrm0 or tabrmd")


def registration_id(ek_public: bytes) -> str:
    """The DPS registration id of a TPM: base32(sha256(marshalled TPM2B_PUBLIC of the EK)), lower case, no '='.

    Same derivation as the Azure IoT C and Node SDKs, so an enrollment made with their tools matches.
    """
    return base64.b32encode(hashlib.sha256(ek_public).digest()).decode().lower().rstrip("=")


class Tpm:
    """An ESAPI connection. Not thread-safe by itself: every public method holds the instance lock."""

    def __init__(self, tcti: str) -> None:
        self.tcti = tcti
        check_tcti(tcti)
        self.t = _pytss()
        self.lock = threading.RLock()   # one ESAPI context serves one command at a time
        try:
            self.ectx = self.t.ESAPI(tcti)
        except self.t.TSS2_Exception as exc:
            raise translate(exc, tcti, "connecting") from None
        except RuntimeError as exc:      # a malformed TCTI string
            raise TpmNotFound(f"identity.tpm_tcti {tcti!r} is not usable: {exc}",
                              "write it as device:/dev/tpmrm0, tabrmd, or swtpm:host=HOST,port=PORT") from None

    def close(self) -> None:
        ectx, self.ectx = getattr(self, "ectx", None), None
        if ectx is not None:
            ectx.close()

    def __enter__(self) -> Tpm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- low-level helpers ------------------------------------------------------------------------------

    @contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """Hold the lock and turn TSS errors into TpmErrors that say what was being done."""
        with self.lock:
            try:
                yield
            except self.t.TSS2_Exception as exc:
                raise translate(exc, self.tcti, doing) from None

    @contextmanager
    def transient(self, handle: Any) -> Iterator[Any]:
        """Flush a transient object or session however the block ends."""
        try:
            yield handle
        finally:
            try:
                self.ectx.flush_context(handle)
            except self.t.TSS2_Exception:
                pass

    def persistent_handles(self) -> list[int]:
        with self.guard("listing persistent handles"):
            handles: list[int] = []
            more, start = True, PERSISTENT_FIRST
            while more:
                more, data = self.ectx.get_capability(self.t.TPM2_CAP.HANDLES, start, 64)
                found = [int(h) for h in data.data.handles]
                handles += found
                if not found:
                    break
                start = found[-1] + 1
            return handles

    def has(self, handle: int) -> bool:
        return handle in self.persistent_handles()

    def open_persistent(self, handle: int, what: str) -> Any:
        """The ESYS_TR of a persistent object (close it with tr_close; it is not flushed)."""
        with self.lock:
            try:
                return self.ectx.tr_from_tpmpublic(handle)
            except self.t.TSS2_Exception as exc:
                if response_code(exc) == RC_HANDLE:   # nothing at that handle
                    raise TpmError(f"no {what} at persistent handle 0x{handle:08x}",
                                   "`roost tpm info` lists the persistent objects; see docs/tpm.md") from None
                raise translate(exc, self.tcti, f"opening the {what}") from None

    def public(self, handle: int, what: str) -> Any:
        """The TPM2B_PUBLIC of a persistent object."""
        tr = self.open_persistent(handle, what)
        try:
            with self.guard(f"reading the {what}"):
                pub, _, _ = self.ectx.read_public(tr)
            return pub
        finally:
            self.ectx.tr_close(tr)

    def evict(self, handle: int) -> None:
        """Remove a persistent object (owner authorization, empty by default)."""
        if not self.has(handle):
            return
        tr = self.open_persistent(handle, "object")
        try:
            with self.guard(f"removing persistent handle 0x{handle:08x}"):
                self.ectx.evict_control(self.t.ESYS_TR.OWNER, tr, handle)
        finally:
            # ESYS keeps the metadata of an evicted object; a stale entry would shadow a new key at the handle.
            self.ectx.tr_close(tr)

    def persist(self, transient: Any, handle: int) -> None:
        """Make a loaded object persistent at ``handle``, replacing what was there."""
        self.evict(handle)
        with self.guard(f"storing a key at persistent handle 0x{handle:08x}"):
            tr = self.ectx.evict_control(self.t.ESYS_TR.OWNER, transient, handle)
            self.ectx.tr_close(tr)

    # -- the endorsement key and the storage root key ---------------------------------------------------

    def ek(self) -> Any:
        """ESYS_TR of the EK at 0x81010001 (close it with tr_close); EkNotProvisioned says how to make one."""
        if not self.has(EK_HANDLE):
            raise EkNotProvisioned(
                f"the TPM has no endorsement key at persistent handle 0x{EK_HANDLE:08x}",
                "create it with `roost tpm ek --create` (the TCG default RSA EK, the one the EK certificate "
                "certifies) or `tpm2_createek -c 0x81010001 -G rsa`")
        return self.open_persistent(EK_HANDLE, "endorsement key")

    def ek_public(self) -> bytes:
        """The marshalled TPM2B_PUBLIC of the EK at 0x81010001 (what DPS enrolls)."""
        tr = self.ek()
        try:
            with self.guard("reading the endorsement key"):
                pub, _, _ = self.ectx.read_public(tr)
            return bytes(pub.marshal())
        finally:
            self.ectx.tr_close(tr)

    def create_ek(self) -> bytes:
        """Create the TCG default RSA 2048 EK (template and nonce from NV if the maker left them) and persist it."""
        if self.has(EK_HANDLE):
            return self.ek_public()
        from tpm2_pytss import utils
        with self.guard("creating the endorsement key"):
            _, template = utils.create_ek_template("EK-RSA2048", utils.NVReadEK(self.ectx))
            handle, _pub, _, _, _ = self.ectx.create_primary(
                self.t.TPM2B_SENSITIVE_CREATE(), template, self.t.ESYS_TR.ENDORSEMENT)
        with self.transient(handle):
            self.persist(handle, EK_HANDLE)
        return self.ek_public()

    def ek_certificate(self) -> bytes | None:
        """The DER EK certificate the manufacturer stored in NV, if any."""
        with self.guard("reading the EK certificate"):
            try:
                nv = self.ectx.tr_from_tpmpublic(EK_CERT_NV_INDEX)
            except self.t.TSS2_Exception:
                return None
            try:
                nvpub, _ = self.ectx.nv_read_public(nv)
                size = nvpub.nvPublic.dataSize
                data = b""
                while len(data) < size:
                    chunk = min(size - len(data), 768)
                    data += bytes(self.ectx.nv_read(nv, chunk, len(data), auth_handle=nv))
                return data
            finally:
                self.ectx.tr_close(nv)

    def srk(self) -> Any:
        """ESYS_TR of the SRK at 0x81000001, created (TCG RSA 2048 storage template) and persisted if absent."""
        if not self.has(SRK_HANDLE):
            attrs = (self.t.TPMA_OBJECT.FIXEDTPM | self.t.TPMA_OBJECT.FIXEDPARENT
                     | self.t.TPMA_OBJECT.SENSITIVEDATAORIGIN | self.t.TPMA_OBJECT.USERWITHAUTH
                     | self.t.TPMA_OBJECT.NODA | self.t.TPMA_OBJECT.RESTRICTED | self.t.TPMA_OBJECT.DECRYPT)
            template = self.t.TPM2B_PUBLIC(publicArea=self.t.TPMT_PUBLIC.parse("rsa2048:aes128cfb", attrs))
            with self.guard("creating the storage root key"):
                handle, _, _, _, _ = self.ectx.create_primary(
                    self.t.TPM2B_SENSITIVE_CREATE(), template, self.t.ESYS_TR.OWNER)
            with self.transient(handle):
                self.persist(handle, SRK_HANDLE)
        return self.open_persistent(SRK_HANDLE, "storage root key")

    def srk_public(self) -> bytes:
        tr = self.srk()
        try:
            with self.guard("reading the storage root key"):
                pub, _, _ = self.ectx.read_public(tr)
            return bytes(pub.marshal())
        finally:
            self.ectx.tr_close(tr)

    def endorsement_policy_session(self) -> Any:
        """A policy session satisfying the EK's policy (PolicySecret(TPM_RH_ENDORSEMENT)); flush it after use."""
        t = self.t
        with self.guard("starting a policy session for the endorsement key"):
            session = self.ectx.start_auth_session(
                tpm_key=t.ESYS_TR.NONE, bind=t.ESYS_TR.NONE, session_type=t.TPM2_SE.POLICY,
                symmetric=t.TPMT_SYM_DEF(algorithm=t.TPM2_ALG.NULL), auth_hash=t.TPM2_ALG.SHA256)
        try:
            with self.guard("satisfying the endorsement key's policy"):
                self.ectx.policy_secret(t.ESYS_TR.ENDORSEMENT, session, t.TPM2B_NONCE(), t.TPM2B_DIGEST(),
                                        t.TPM2B_NONCE(), 0)
        except BaseException:
            self.ectx.flush_context(session)
            raise
        return session

    # -- status -----------------------------------------------------------------------------------------

    def properties(self, first: int, count: int = 64) -> dict[int, int]:
        with self.guard("reading TPM properties"):
            _, data = self.ectx.get_capability(self.t.TPM2_CAP.TPM_PROPERTIES, first, count)
        return {int(p.property): int(p.value) for p in data.data.tpmProperties}

    def pcr_banks(self) -> list[str]:
        """Hash algorithms with at least one PCR allocated, e.g. ["sha256"]."""
        with self.guard("reading the PCR banks"):
            _, data = self.ectx.get_capability(self.t.TPM2_CAP.PCRS, 0, 1)
        banks = []
        for sel in data.data.assignedPCR:
            if any(bytes(sel.pcrSelect)[: sel.sizeofSelect]):
                banks.append(str(self.t.TPM2_ALG(sel.hash)).lower())
        return banks

    def info(self) -> dict:
        """Manufacturer, firmware, spec, PCR banks, dictionary-attack state, roost's persistent handles."""
        fixed = self.properties(PT_FIXED, 128)
        var = self.properties(PT_VAR, 64)

        def text(*keys: int) -> str:
            raw = b"".join(fixed.get(k, 0).to_bytes(4, "big") for k in keys)
            return raw.replace(b"\0", b"").decode("ascii", "replace").strip()

        fw1, fw2 = fixed.get(PT_FIRMWARE_VERSION_1, 0), fixed.get(PT_FIRMWARE_VERSION_2, 0)
        permanent = var.get(PT_PERMANENT, 0)
        handles = self.persistent_handles()
        return {
            "tcti": self.tcti,
            "manufacturer": text(PT_MANUFACTURER),
            "vendor": text(*PT_VENDOR_STRINGS),
            "firmware": f"{fw1 >> 16}.{fw1 & 0xFFFF}.{fw2 >> 16}.{fw2 & 0xFFFF}",
            "spec": f"{text(PT_FAMILY_INDICATOR)} level {fixed.get(PT_LEVEL, 0)} "
                    f"revision {fixed.get(PT_REVISION, 0) / 100:.2f}",
            "pcr_banks": self.pcr_banks(),
            "lockout": {
                "in_lockout": bool(permanent & PERMANENT_IN_LOCKOUT),
                "failed_tries": var.get(PT_LOCKOUT_COUNTER, 0),
                "max_tries": var.get(PT_MAX_AUTH_FAIL, 0),
                "recovery_interval_s": var.get(PT_LOCKOUT_INTERVAL, 0),
                "lockout_recovery_s": var.get(PT_LOCKOUT_RECOVERY, 0),
            },
            "persistent_handles": [f"0x{h:08x}" for h in handles],
            "roost_handles": {name: (handle in handles) for name, handle in
                              (("ek", EK_HANDLE), ("srk", SRK_HANDLE), ("hub_key", HUB_KEY_HANDLE),
                               ("ak", AK_HANDLE))},
        }

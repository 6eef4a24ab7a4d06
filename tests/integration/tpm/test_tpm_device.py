"""The device side against swtpm: EK and SRK, the authenticationKey challenge, TPM HMAC, and every TPM error."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from tpm2_pytss import (
    ESAPI,
    ESYS_TR,
    TPM2_ALG,
    TPM2B_AUTH,
    TPM2B_PUBLIC,
    TPM2B_SENSITIVE_CREATE,
    TPMA_OBJECT,
    TPMS_SENSITIVE_CREATE,
    TPMT_PUBLIC,
    TSS2_Exception,
)

from agent.tpm.activation import AuthenticationKey, import_persistent, loaded_key
from agent.tpm.device import EK_HANDLE, HUB_KEY_HANDLE, SRK_HANDLE, Tpm, check_tcti, registration_id
from agent.tpm.errors import (
    ChallengeRejected,
    EkNotProvisioned,
    NoResourceManager,
    TpmError,
    TpmLockout,
    TpmNotFound,
    TpmPermissionDenied,
)
from agent.tpm.signer import TpmSigner
from agent.tpm.signer import hmac as tpm_hmac
from emulator.hub import dps_tpm

pytestmark = pytest.mark.tpm

HMAC_ATTRS = (TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT
              | TPMA_OBJECT.SENSITIVEDATAORIGIN)


def challenge_for(tpm: Tpm, key: bytes) -> bytes:
    return dps_tpm.authentication_key(tpm.ek_public(), tpm.srk_public(), key)


def test_info_reads_the_tpm(swtpm):
    with Tpm(swtpm.tcti) as tpm:
        info = tpm.info()
    assert info["manufacturer"] == "IBM"
    assert "sha256" in info["pcr_banks"]
    assert info["lockout"]["in_lockout"] is False
    assert info["lockout"]["max_tries"] > 0
    assert info["roost_handles"] == {"ek": True, "srk": True, "hub_key": False, "ak": False}
    assert f"0x{EK_HANDLE:08x}" in info["persistent_handles"]


def test_ek_is_the_certified_tcg_key_and_names_the_registration(swtpm):
    with Tpm(swtpm.tcti) as tpm:
        ek = tpm.ek_public()
        cert = x509.load_der_x509_certificate(tpm.ek_certificate())
    public, used = TPM2B_PUBLIC.unmarshal(ek)
    assert used == len(ek) == 316
    assert public.publicArea.objectAttributes & TPMA_OBJECT.RESTRICTED
    # The EK at 0x81010001 is the key the manufacturer's certificate certifies.
    assert cert.public_key().public_numbers().n == int.from_bytes(bytes(public.publicArea.unique.rsa), "big")
    reg_id = registration_id(ek)
    assert reg_id == dps_tpm.registration_id(ek)
    assert reg_id == reg_id.lower() and "=" not in reg_id and len(reg_id) == 52


def test_missing_ek_says_how_to_create_it_and_create_restores_the_same_key(swtpm, loaded_handles):
    with Tpm(swtpm.tcti) as tpm:
        before = tpm.ek_public()
        tpm.evict(EK_HANDLE)
        with pytest.raises(EkNotProvisioned) as raised:
            tpm.ek_public()
        assert "roost tpm ek --create" in raised.value.fix
        assert tpm.create_ek() == before       # same seed, same template: same EK, same registration id
    assert loaded_handles(swtpm.tcti) == []


def test_srk_is_created_when_absent(swtpm, loaded_handles):
    with Tpm(swtpm.tcti) as tpm:
        tpm.evict(SRK_HANDLE)
        assert not tpm.has(SRK_HANDLE)
        srk = tpm.srk_public()
        assert tpm.has(SRK_HANDLE)
        assert tpm.srk_public() == srk
    assert loaded_handles(swtpm.tcti) == []


@pytest.mark.parametrize("size", [5, 1024, 1025, 3000])
def test_challenge_key_signs_inside_the_tpm(swtpm, size, loaded_handles):
    key = secrets.token_bytes(32)
    message = bytes(range(256)) * (size // 256) + b"m" * (size % 256)
    with Tpm(swtpm.tcti) as tpm, loaded_key(tpm, challenge_for(tpm, key)) as handle:
        assert tpm_hmac(tpm, handle, message) == hmac.new(key, message, hashlib.sha256).digest()
    assert loaded_handles(swtpm.tcti) == []


@pytest.mark.parametrize("part", ["credential", "credential_secret", "duplicate", "duplicate_seed"])
def test_tampered_challenge_is_rejected_and_nothing_stored(swtpm, part, loaded_handles):
    with Tpm(swtpm.tcti) as tpm:
        parts = AuthenticationKey.parse(challenge_for(tpm, secrets.token_bytes(32)))
        raw = bytearray(getattr(parts, part))
        raw[len(raw) // 2] ^= 0x01
        blob = AuthenticationKey(**{**parts.__dict__, part: bytes(raw)}).build()
        handles_before = tpm.persistent_handles()
        with pytest.raises(ChallengeRejected) as raised:
            import_persistent(tpm, blob, HUB_KEY_HANDLE)
        assert "nothing was stored" in raised.value.fix
        assert tpm.persistent_handles() == handles_before
    assert loaded_handles(swtpm.tcti) == []


def test_challenge_for_another_tpm_is_rejected(swtpm, other_swtpm, loaded_handles):
    with Tpm(other_swtpm.tcti) as other:
        foreign = challenge_for(other, secrets.token_bytes(32))
    with Tpm(swtpm.tcti) as tpm:
        with pytest.raises(ChallengeRejected, match="another TPM"):
            import_persistent(tpm, foreign, HUB_KEY_HANDLE)
        assert not tpm.has(HUB_KEY_HANDLE)
    assert loaded_handles(swtpm.tcti) == []


@pytest.mark.parametrize("cut", [1, 10, 300])
def test_truncated_challenge_is_malformed(swtpm, cut):
    with Tpm(swtpm.tcti) as tpm:
        blob = challenge_for(tpm, secrets.token_bytes(32))
        with pytest.raises(ChallengeRejected, match="malformed"):
            import_persistent(tpm, blob[:-cut - 2], HUB_KEY_HANDLE)
        assert not tpm.has(HUB_KEY_HANDLE)


def test_imported_key_survives_a_reboot_and_signs_sas(swtpm, loaded_handles):
    key = secrets.token_bytes(32)
    with Tpm(swtpm.tcti) as tpm:
        import_persistent(tpm, challenge_for(tpm, key), HUB_KEY_HANDLE)
    swtpm.reboot()
    signer = TpmSigner(swtpm.tcti)
    assert signer(b"hub/devices/d1\n1700000000") == hmac.new(key, b"hub/devices/d1\n1700000000",
                                                              hashlib.sha256).digest()
    assert "TpmSigner" in repr(signer) and key.hex() not in repr(signer)
    assert loaded_handles(swtpm.tcti) == []


def test_signer_without_key_says_to_provision_again(swtpm):
    with pytest.raises(TpmError) as raised:
        TpmSigner(swtpm.tcti)(b"message")
    assert "provision again" in raised.value.fix


def lock_out(tcti: str) -> None:
    """Fail authorizations against a dictionary-attack-protected key until the TPM locks out."""
    with Tpm(tcti) as tpm:
        srk = tpm.srk()
        sensitive = TPM2B_SENSITIVE_CREATE(TPMS_SENSITIVE_CREATE(userAuth=TPM2B_AUTH(b"right")))
        private, public, *_ = tpm.ectx.create(srk, sensitive, TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse(
            "hmac", HMAC_ATTRS)))
        handle = tpm.ectx.load(srk, private, public)
        tpm.ectx.tr_set_auth(handle, b"wrong")
        for _ in range(tpm.info()["lockout"]["max_tries"]):
            with pytest.raises(TSS2_Exception):
                tpm.ectx.hmac(handle, b"x", TPM2_ALG.SHA256)
        tpm.ectx.flush_context(handle)


def test_lockout_is_reported_with_what_to_do(swtpm):
    key = secrets.token_bytes(32)
    with Tpm(swtpm.tcti) as tpm:
        import_persistent(tpm, challenge_for(tpm, key), HUB_KEY_HANDLE)
    lock_out(swtpm.tcti)
    with Tpm(swtpm.tcti) as tpm:
        assert tpm.info()["lockout"]["in_lockout"] is True
    with pytest.raises(TpmLockout) as raised:
        TpmSigner(swtpm.tcti)(b"message")
    assert "dictionary-attack lockout" in raised.value.problem
    assert "tpm2_dictionarylockout" in raised.value.fix


def test_full_object_slots_point_at_the_missing_resource_manager(swtpm):
    # What a crashed process leaves behind on a TPM without resource manager (swtpm, /dev/tpm0).
    with ESAPI(swtpm.tcti) as ectx:
        template = TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse("hmac", HMAC_ATTRS))
        with pytest.raises(TSS2_Exception):
            for _ in range(64):
                ectx.create_primary(TPM2B_SENSITIVE_CREATE(), template, ESYS_TR.OWNER)
    with Tpm(swtpm.tcti) as tpm, pytest.raises(NoResourceManager) as raised:
        import_persistent(tpm, dps_tpm.authentication_key(tpm.ek_public(), tpm.srk_public(), b"k" * 32),
                          HUB_KEY_HANDLE)
    assert "device:/dev/tpmrm0" in raised.value.fix


def test_nothing_listening_is_no_tpm(loopback_address):
    with pytest.raises(TpmNotFound) as raised:
        Tpm(f"swtpm:host={loopback_address},port=2399")
    assert "swtpm socket --tpm2" in raised.value.fix


def test_access_broker_not_running_is_explained():
    with pytest.raises(TpmNotFound) as raised:
        Tpm("tabrmd:bus_name=com.intel.tss2.Tabrmd.roost-missing")
    assert "tpm2-abrmd" in raised.value.fix


def test_malformed_tcti_is_explained():
    with pytest.raises(TpmError, match="tpm_tcti"):
        Tpm("no-such-tcti-library:x")


def test_raw_tpm_device_is_refused_for_the_resource_manager():
    with pytest.raises(NoResourceManager) as raised:
        check_tcti("device:/dev/tpm0")
    assert "device:/dev/tpmrm0" in raised.value.fix


def test_missing_device_is_explained(tmp_path):
    with pytest.raises(TpmNotFound) as raised:
        Tpm(f"device:{tmp_path}/tpmrm0")
    assert "dtoverlay" in raised.value.fix


def test_device_without_permission_names_group_tss():
    folder = Path(tempfile.mkdtemp(prefix="roost-tpm-perm-"))
    try:
        folder.chmod(0o755)
        device = folder / "tpmrm0"
        device.write_bytes(b"")
        device.chmod(0o600)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:   # child: become an unprivileged user, then try the device
            os.close(read_fd)
            message = b"no error"
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                check_tcti(f"device:{device}")
            except TpmPermissionDenied as exc:
                message = f"{exc.kind}|{exc.fix}".encode()
            except BaseException as exc:
                message = repr(exc).encode()
            os.write(write_fd, message)
            os._exit(0)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as pipe:
            answer = pipe.read().decode()
        os.waitpid(pid, 0)
    finally:
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()
    assert answer.startswith("tpm-permission|"), answer
    assert "group tss" in answer


def test_dps_service_check_of_the_tpm_signed_sas(swtpm):
    """The emulator's SAS check accepts what the TPM signed and refuses anything else."""
    from agent.identity.credentials import sas_token

    key = secrets.token_bytes(32)
    with Tpm(swtpm.tcti) as tpm, loaded_key(tpm, challenge_for(tpm, key)) as handle:
        token = sas_token("0ne0001/registrations/r1", lambda m: tpm_hmac(tpm, handle, m), 2_000_000_000,
                          "registration")
    dps_tpm.check_sas(token, "0ne0001/registrations/r1", key, now=1_900_000_000, policy="registration")
    with pytest.raises(dps_tpm.TpmAttestationError, match="signature does not match"):
        dps_tpm.check_sas(token, "0ne0001/registrations/r1", b"x" * 32, now=1_900_000_000)
    with pytest.raises(dps_tpm.TpmAttestationError, match="expired"):
        dps_tpm.check_sas(token, "0ne0001/registrations/r1", key, now=2_100_000_000)
    with pytest.raises(dps_tpm.TpmAttestationError, match="is for resource"):
        dps_tpm.check_sas(token, "0ne0001/registrations/other", key, now=1_900_000_000)


def test_importing_agent_tpm_does_not_load_the_tss():
    # tpm2-pytss (~100 ms, 36 MiB) is loaded only where the TPM is used, not by every `roost` command.
    code = "import sys, agent.tpm, agent.commands.tpm; print('tpm2_pytss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    assert out.stdout.strip() == "False"


def test_signer_serves_several_threads(swtpm):
    # The uplink signs from the SDK's threads while the agent may sign elsewhere; swtpm, like /dev/tpm0,
    # serves one connection at a time, so each signature takes its own short connection.
    from concurrent.futures import ThreadPoolExecutor

    key = secrets.token_bytes(32)
    with Tpm(swtpm.tcti) as tpm:
        import_persistent(tpm, challenge_for(tpm, key), HUB_KEY_HANDLE)
    signer = TpmSigner(swtpm.tcti)
    messages = [f"hub/devices/d{i}\n{1_900_000_000 + i}".encode() for i in range(40)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        signatures = list(pool.map(signer, messages))
    assert signatures == [hmac.new(key, m, hashlib.sha256).digest() for m in messages]

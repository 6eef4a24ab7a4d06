"""Device health attestation: a quote over the boot PCRs, judged by the emulator's attestation service, the
verdict written to the device twin; a tampered boot (a PCR extended in swtpm) turns it unhealthy."""

from __future__ import annotations

import base64
import json
import ssl

import pytest

from agent.cli import main as roost
from agent.identity.errors import IdentityError
from agent.tpm.device import AK_HANDLE, Tpm
from agent.tpm.errors import ChallengeRejected
from agent.tpm.health import activate, attest, attestation_key, quote
from emulator.hub import health_attestation
from emulator.hub.health_attestation import (
    AttestationRefused,
    HealthAttestationServer,
    HealthAttestationService,
    expected_pcrs,
)
from emulator.hub.server import EmulatorConfig, EmulatorThread
from emulator.hub.state import Attestation, Enrollment
from emulator.pki import Pki

pytestmark = pytest.mark.tpm


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path / "pki")


def tls_for(pki: Pki, host: str) -> ssl.SSLContext:
    issued = pki.server("attestation", [host])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.chain_path, issued.key_path)
    return context


@pytest.fixture
def service_for(swtpm):
    """A service that knows swtpm's EK as device "dev1"; verdicts land in ``written``."""
    with Tpm(swtpm.tcti) as tpm:
        ek = tpm.ek_public()
    written: dict[str, list[dict]] = {}

    def make(**options) -> HealthAttestationService:
        service = HealthAttestationService(lambda e: "dev1" if e == ek else None,
                                           lambda d, v: written.setdefault(d, []).append(v), **options)
        service.written = written
        return service
    return make


def test_healthy_boot_then_tampered_boot_then_clean_reboot(swtpm, pki, loopback_address, service_for,
                                                           loaded_handles):
    service = service_for()
    with HealthAttestationServer(service, loopback_address, tls_for(pki, loopback_address)) as server:
        first = attest(swtpm.tcti, server.url, ca_pem=pki.root().pem)
        assert first["verdict"] == "healthy", first
        assert first["reasons"] == []
        swtpm.extend_pcr(4, b"a boot loader nobody signed")
        tampered = attest(swtpm.tcti, server.url, ca_pem=pki.root().pem)
        assert tampered["verdict"] == "unhealthy"
        assert any("PCR 4 differs" in r for r in tampered["reasons"])
        swtpm.reboot()                              # PCRs start over: the next boot measured nothing odd
        assert attest(swtpm.tcti, server.url, ca_pem=pki.root().pem)["verdict"] == "healthy"
    assert [v["verdict"] for v in service.written["dev1"]] == ["healthy", "unhealthy", "healthy"]
    with Tpm(swtpm.tcti) as tpm:
        assert tpm.has(AK_HANDLE)                   # one AK, kept and reused
    assert loaded_handles(swtpm.tcti) == []


def test_reference_values_from_measurements(swtpm, pki, loopback_address, service_for):
    service = service_for()
    service.set_reference("dev1", expected_pcrs({0: [b"firmware v1"], 4: [b"kernel", b"initrd"]}))
    swtpm.extend_pcr(0, b"firmware v1")
    swtpm.extend_pcr(4, b"kernel")
    with HealthAttestationServer(service, loopback_address, tls_for(pki, loopback_address)) as server:
        partial = attest(swtpm.tcti, server.url, ca_pem=pki.root().pem)
        assert partial["verdict"] == "unhealthy"          # the initrd measurement is missing
        swtpm.extend_pcr(4, b"initrd")
        assert attest(swtpm.tcti, server.url, ca_pem=pki.root().pem)["verdict"] == "healthy"


def challenge_and_evidence(tcti: str, service: HealthAttestationService) -> tuple[dict, dict]:
    with Tpm(tcti) as tpm:
        ek, ak = tpm.ek_public(), attestation_key(tpm)
        challenge = service.challenge({"endorsementKey": base64.b64encode(ek).decode(),
                                       "attestationKey": base64.b64encode(ak).decode()})
        secret = activate(tpm, base64.b64decode(challenge["credentialBlob"]),
                          base64.b64decode(challenge["encryptedSecret"]))
        evidence = quote(tpm, base64.b64decode(challenge["nonce"]))
    evidence.update(session=challenge["session"], secret=base64.b64encode(secret).decode())
    return challenge, evidence


def test_replayed_quote_is_refused(swtpm, service_for):
    service = service_for()
    _, evidence = challenge_and_evidence(swtpm.tcti, service)
    assert service.verify(evidence)["verdict"] == "healthy"
    with pytest.raises(AttestationRefused, match="used or expired") as raised:
        service.verify(evidence)
    assert raised.value.status == 400


def test_quote_with_another_nonce_is_unhealthy(swtpm, service_for):
    service = service_for()
    _, evidence = challenge_and_evidence(swtpm.tcti, service)
    with Tpm(swtpm.tcti) as tpm:
        stale = quote(tpm, b"\x00" * 32)
    evidence.update(quoted=stale["quoted"], signature=stale["signature"])
    verdict = service.verify(evidence)
    assert verdict["verdict"] == "unhealthy"
    assert any("nonce" in r for r in verdict["reasons"])


def test_lying_about_pcr_values_is_unhealthy(swtpm, service_for):
    service = service_for()
    swtpm.extend_pcr(7, b"secure boot off")
    _, evidence = challenge_and_evidence(swtpm.tcti, service)
    evidence["pcrs"]["7"] = "00" * 32                     # claim the clean value; the quote says otherwise
    verdict = service.verify(evidence)
    assert verdict["verdict"] == "unhealthy"
    assert any("do not match the quoted digest" in r for r in verdict["reasons"])


def test_forged_signature_is_unhealthy(swtpm, service_for):
    service = service_for()
    _, evidence = challenge_and_evidence(swtpm.tcti, service)
    signature = bytearray(base64.b64decode(evidence["signature"]))
    signature[-5] ^= 0x01
    evidence["signature"] = base64.b64encode(bytes(signature)).decode()
    verdict = service.verify(evidence)
    assert verdict["verdict"] == "unhealthy"
    assert "signature does not verify" in verdict["reasons"][0]


def test_ak_of_another_tpm_cannot_pose_as_the_enrolled_one(swtpm, other_swtpm, service_for):
    service = service_for()
    with Tpm(swtpm.tcti) as tpm:
        ek = tpm.ek_public()
    with Tpm(other_swtpm.tcti) as other:   # claims swtpm's EK but holds its own AK
        ak = attestation_key(other)
        challenge = service.challenge({"endorsementKey": base64.b64encode(ek).decode(),
                                       "attestationKey": base64.b64encode(ak).decode()})
        with pytest.raises(ChallengeRejected):
            activate(other, base64.b64decode(challenge["credentialBlob"]),
                     base64.b64decode(challenge["encryptedSecret"]))
        evidence = quote(other, base64.b64decode(challenge["nonce"]))
    evidence.update(session=challenge["session"], secret=base64.b64encode(b"\x00" * 32).decode())
    with pytest.raises(AttestationRefused) as raised:
        service.verify(evidence)
    assert raised.value.status == 403
    assert "dev1" not in service.written                  # nobody's twin was touched


def test_unknown_device_and_bad_requests(swtpm, other_swtpm, pki, loopback_address, service_for, tmp_path):
    service = service_for()
    with HealthAttestationServer(service, loopback_address, tls_for(pki, loopback_address)) as server:
        with pytest.raises(IdentityError, match="no device is enrolled"):
            attest(other_swtpm.tcti, server.url, ca_pem=pki.root().pem)
        with pytest.raises(IdentityError, match="not trusted"):
            attest(swtpm.tcti, server.url, ca_pem=Pki(tmp_path / "other-pki").root().pem)
    for body, message in [({}, "endorsementKey is missing"),
                          ({"endorsementKey": "%%", "attestationKey": "AA=="}, "not base64"),
                          ({"endorsementKey": "AAAA", "attestationKey": "AAAA"}, "trailing bytes"),
                          ({"endorsementKey": base64.b64encode(b"\x01\x00xyz").decode(), "attestationKey": "AAAA"},
                           "not a marshalled")]:
        with pytest.raises(AttestationRefused, match=message):
            service.challenge(body)


def test_attest_command_and_verdict_in_the_twin(swtpm, tmp_path, loopback_address, capsys):
    emu = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "emu", address=loopback_address,
                                        dps_https_port=0)).start()
    try:
        assert roost(["tpm", "ek", "--json", "--tcti", swtpm.tcti]) == 0
        ek = json.loads(capsys.readouterr().out)
        dps = emu.emulator.dps
        dps.state.put_enrollment(Enrollment(ek["registration_id"],
                                            Attestation("tpm", endorsement_key=ek["endorsement_key"])))
        from agent.config import Config, DeviceConfig, IdentityConfig
        from agent.tpm import provision

        info = emu.emulator.connection_info()
        config = Config(device=DeviceConfig(state_dir=str(tmp_path / "state")), identity=IdentityConfig(
            method="tpm", provisioning_host=info["dps"]["https"].removeprefix("https://"),
            id_scope=info["dps"]["id_scope"], tpm_tcti=swtpm.tcti, provisioning_ca_file=info["root_ca"]))
        creds = provision(config, config.state_dir)
        with health_attestation.serve_for_emulator(emu.emulator, loopback_address) as server:
            code = roost(["tpm", "attest", "--tcti", swtpm.tcti, "--url", server.url, "--ca-file", info["root_ca"]])
            assert code == 0, capsys.readouterr()
            assert "healthy" in capsys.readouterr().out
            twin = emu.emulator.hubs[creds.hostname].state.get_twin(creds.device_id)
            assert twin.tags["healthAttestation"]["verdict"] == "healthy"
            swtpm.extend_pcr(2, b"option ROM")
            assert roost(["tpm", "attest", "--json", "--tcti", swtpm.tcti, "--url", server.url,
                          "--ca-file", info["root_ca"]]) == 1
            assert json.loads(capsys.readouterr().out)["verdict"] == "unhealthy"
            twin = emu.emulator.hubs[creds.hostname].state.get_twin(creds.device_id)
            assert twin.tags["healthAttestation"]["verdict"] == "unhealthy"
    finally:
        emu.stop()

"""End to end: `roost tpm ek` enrolls the device, DPS TPM attestation over HTTPS against the emulator, the
hub key imported into swtpm, the unmodified azure-iot-device client connected and renewed with TPM-signed
SAS tokens, and every way it can go wrong."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from azure.iot.device import IoTHubDeviceClient, Message
from roost_test_support import wait_for

import agent.identity
import agent.tpm
from agent.cli import main as roost
from agent.config import Config, DeviceConfig, HubConfig, IdentityConfig
from agent.identity.errors import ProvisioningError, TrustError
from agent.tpm.device import HUB_KEY_HANDLE, Tpm
from agent.tpm.errors import EnrollmentMissing
from emulator.hub.server import EmulatorConfig, EmulatorThread
from emulator.hub.state import Attestation, Enrollment

pytestmark = pytest.mark.tpm


@pytest.fixture
def emu(tmp_path, loopback_address):
    emulator = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "emu", address=loopback_address,
                                             dps_https_port=0)).start()
    yield emulator
    emulator.stop()


def root_ca_path(emu) -> str:
    return emu.emulator.connection_info()["root_ca"]


def make_config(emu, swtpm, tmp_path: Path, **identity) -> Config:
    info = emu.emulator.connection_info()
    host = info["dps"]["https"].removeprefix("https://")
    ident = IdentityConfig(method="tpm", provisioning_host=host, id_scope=info["dps"]["id_scope"],
                           tpm_tcti=swtpm.tcti, provisioning_ca_file=root_ca_path(emu), **identity)
    return Config(device=DeviceConfig(state_dir=str(tmp_path / "state")), identity=ident,
                  hub=HubConfig(ca_file=root_ca_path(emu)))


def enroll_from_cli(emu, tcti: str, capsys, **enrollment) -> dict:
    """What an operator does: `roost tpm ek --json`, then an individual TPM enrollment from its output."""
    assert roost(["tpm", "ek", "--json", "--tcti", tcti]) == 0
    ek = json.loads(capsys.readouterr().out)
    emu.emulator.dps.state.put_enrollment(Enrollment(
        ek["registration_id"], Attestation("tpm", endorsement_key=ek["endorsement_key"]), **enrollment))
    return ek




def connect(creds, ca_pem: str) -> IoTHubDeviceClient:
    client = IoTHubDeviceClient.create_from_sastoken(creds.sas_token(3600), server_verification_cert=ca_pem,
                                                     connection_retry=False, keep_alive=30)
    client.connect()
    return client


def test_ek_enrolls_and_device_provisions_connects_and_renews(emu, swtpm, tmp_path, capsys, loaded_handles):
    ek = enroll_from_cli(emu, swtpm.tcti, capsys)
    config = make_config(emu, swtpm, tmp_path)
    creds = agent.identity.resolve(config, config.state_dir)

    assert creds.source == "tpm"
    assert creds.hostname in emu.emulator.hubs
    assert creds.device_id == ek["registration_id"]
    registration = emu.emulator.dps.state.get_registration(ek["registration_id"])
    assert registration.status == "assigned"
    # The hub key lives in the TPM; the cache holds no key and is private.
    cache = config.state_dir / "identity" / "assignment.json"
    assert cache.stat().st_mode & 0o777 == 0o600
    device_key = emu.emulator.hubs[creds.hostname].state.get_device(creds.device_id).primary_key
    assert device_key not in cache.read_text()
    with Tpm(swtpm.tcti) as tpm:
        assert tpm.has(HUB_KEY_HANDLE)
    assert loaded_handles(swtpm.tcti) == []          # the DPS key and the policy session were flushed

    hub = emu.emulator.hubs[creds.hostname]
    ca_pem = Path(root_ca_path(emu)).read_text()
    client = connect(creds, ca_pem)
    try:
        for i in range(5):
            client.send_message(Message(json.dumps({"n": i})))
        # Renewal mid-stream: a new token signed in the TPM, handed over with update_sastoken.
        client.update_sastoken(creds.sas_token(7200))
        for i in range(5, 10):
            client.send_message(Message(json.dumps({"n": i})))
        wait_for(lambda: client.connected, what="reconnect after update_sastoken")
    finally:
        client.shutdown()
    received = [json.loads(r.payload) for r in hub.state.telemetry(device_id=creds.device_id)]
    assert [r["n"] for r in received] == list(range(10))


def test_cached_assignment_is_reused_without_asking_dps(emu, swtpm, tmp_path, capsys):
    ek = enroll_from_cli(emu, swtpm.tcti, capsys)
    config = make_config(emu, swtpm, tmp_path)
    first = agent.tpm.provision(config, config.state_dir)
    operation = emu.emulator.dps.state.get_registration(ek["registration_id"]).operation_id
    again = agent.tpm.provision(config, config.state_dir)
    assert (again.hostname, again.device_id) == (first.hostname, first.device_id)
    assert emu.emulator.dps.state.get_registration(ek["registration_id"]).operation_id == operation


def test_cleared_tpm_key_sends_the_device_back_to_dps(emu, swtpm, tmp_path, capsys):
    ek = enroll_from_cli(emu, swtpm.tcti, capsys)
    config = make_config(emu, swtpm, tmp_path)
    agent.tpm.provision(config, config.state_dir)
    operation = emu.emulator.dps.state.get_registration(ek["registration_id"]).operation_id
    with Tpm(swtpm.tcti) as tpm:
        tpm.evict(HUB_KEY_HANDLE)
    creds = agent.tpm.provision(config, config.state_dir)
    assert emu.emulator.dps.state.get_registration(ek["registration_id"]).operation_id != operation
    connect(creds, Path(root_ca_path(emu)).read_text()).shutdown()


def test_hub_rejection_then_reprovisioning_restores_the_identity(emu, swtpm, tmp_path, capsys):
    enroll_from_cli(emu, swtpm.tcti, capsys)
    config = make_config(emu, swtpm, tmp_path)
    ca_pem = Path(root_ca_path(emu)).read_text()
    creds = agent.identity.resolve(config, config.state_dir)
    hub = emu.emulator.hubs[creds.hostname]
    hub.state.delete_device(creds.device_id)          # an operator deleted the device in the hub
    with pytest.raises(Exception) as refused:
        connect(creds, ca_pem)
    assert agent.identity.is_auth_failure(refused.value)
    creds = agent.tpm.reprovision(config, config.state_dir, "hub refused the identity")
    assert hub.state.find_device(creds.device_id) is not None
    client = connect(creds, ca_pem)
    client.send_message(Message("back"))
    client.shutdown()


def test_operation_polling_when_dps_does_not_assign_at_once(emu, swtpm, tmp_path, capsys):
    emu.emulator.dps.immediate_assignment = False
    enroll_from_cli(emu, swtpm.tcti, capsys)
    config = make_config(emu, swtpm, tmp_path)
    slept = []
    creds = agent.tpm.provisioning.provision(config, config.state_dir, sleep=slept.append)
    assert slept and all(s > 0 for s in slept)          # it honoured Retry-After (through the injected sleep)
    assert creds.hostname in emu.emulator.hubs


def test_missing_enrollment_says_how_to_create_it(emu, swtpm, tmp_path):
    config = make_config(emu, swtpm, tmp_path)
    with pytest.raises(EnrollmentMissing) as raised:
        agent.tpm.provision(config, config.state_dir)
    assert "roost tpm ek" in raised.value.fix
    with Tpm(swtpm.tcti) as tpm:
        assert not tpm.has(HUB_KEY_HANDLE)


def test_enrollment_of_another_tpm_is_refused(emu, swtpm, other_swtpm, tmp_path, capsys):
    with Tpm(swtpm.tcti) as tpm:
        from agent.tpm.device import registration_id

        reg_id = registration_id(tpm.ek_public())
    with Tpm(other_swtpm.tcti) as other:
        foreign_ek = base64.b64encode(other.ek_public()).decode()
    emu.emulator.dps.state.put_enrollment(Enrollment(reg_id, Attestation("tpm", endorsement_key=foreign_ek)))
    config = make_config(emu, swtpm, tmp_path)
    with pytest.raises(EnrollmentMissing, match="does not match"):
        agent.tpm.provision(config, config.state_dir)


def test_disabled_enrollment_is_refused(emu, swtpm, tmp_path, capsys):
    enroll_from_cli(emu, swtpm.tcti, capsys, provisioning_status="disabled")
    config = make_config(emu, swtpm, tmp_path)
    with pytest.raises(EnrollmentMissing, match="disabled"):
        agent.tpm.provision(config, config.state_dir)


def test_failed_reprovisioning_keeps_the_working_identity(emu, swtpm, tmp_path, capsys):
    ek = enroll_from_cli(emu, swtpm.tcti, capsys)
    config = make_config(emu, swtpm, tmp_path)
    creds = agent.tpm.provision(config, config.state_dir)
    emu.emulator.dps.state.delete_enrollment(ek["registration_id"])
    with pytest.raises(EnrollmentMissing):
        agent.tpm.reprovision(config, config.state_dir)
    connect(creds, Path(root_ca_path(emu)).read_text()).shutdown()   # the old hub key still works


def test_untrusted_dps_certificate(emu, swtpm, tmp_path, capsys):
    enroll_from_cli(emu, swtpm.tcti, capsys)
    other_ca = tmp_path / "other-ca.pem"
    from emulator.pki import Pki

    other_ca.write_text(Pki(tmp_path / "other-pki").root().pem)
    config = make_config(emu, swtpm, tmp_path)
    config = Config(device=config.device, hub=config.hub,
                    identity=IdentityConfig(**{**config.identity.__dict__, "provisioning_ca_file": str(other_ca)}))
    with pytest.raises(TrustError, match="not trusted") as raised:
        agent.tpm.provision(config, config.state_dir)
    assert "provisioning_ca_file" in raised.value.fix


def test_unreachable_dps(swtpm, tmp_path, loopback_address):
    config = Config(device=DeviceConfig(state_dir=str(tmp_path / "state")),
                    identity=IdentityConfig(method="tpm", provisioning_host=f"{loopback_address}:9",
                                            id_scope="0ne00000001", tpm_tcti=swtpm.tcti))
    with pytest.raises(ProvisioningError) as raised:
        agent.tpm.provision(config, config.state_dir)
    assert raised.value.kind == "connection"
    assert "provisioning_host" in raised.value.fix


def test_dps_refuses_tokens_not_signed_by_the_challenge_key(emu, swtpm, tmp_path, capsys):
    """The service side: the second register and the operation polls must carry the challenge key's SAS."""
    from agent.identity.credentials import key_signer, sas_token
    from agent.tpm.dps import DpsHttpClient

    ek = enroll_from_cli(emu, swtpm.tcti, capsys)
    info = emu.emulator.connection_info()
    client = DpsHttpClient(info["dps"]["https"].removeprefix("https://"), info["dps"]["id_scope"],
                           ek["registration_id"], ca_pem=Path(root_ca_path(emu)).read_text())
    with Tpm(swtpm.tcti) as tpm:
        srk = base64.b64encode(tpm.srk_public()).decode()
    body = {"registrationId": ek["registration_id"], "tpm": {"endorsementKey": ek["endorsement_key"],
                                                             "storageRootKey": srk}}
    challenge = client.register(body)
    assert challenge.status == 401 and challenge.body["authenticationKey"]
    forged = sas_token(client.resource, key_signer(b"not the challenge key"), int(time.time()) + 600, "registration")
    refused = client.register(body, forged)
    assert refused.status == 401 and "authenticationKey" not in refused.body
    assert client.refused(refused, "register").kind == "auth"
    assert client.operation("4.0.0", forged).status == 401
    garbled = client.register({"registrationId": ek["registration_id"],
                               "tpm": {"endorsementKey": "%%%", "storageRootKey": srk}})
    assert garbled.status == 400 and "base64" in garbled.body["message"]
    assert emu.emulator.dps.state.find_registration(ek["registration_id"]) is None

"""Connecting through the emulator's transparent gateway: right CA, wrong CA, wrong host name."""

from __future__ import annotations

import pytest
from mgmtrig import config, enroll_symmetric, new_key, sdk_connect, start, write_secret

from agent.identity import TrustError, describe_connect_failure, resolve
from emulator.pki import Pki


@pytest.fixture
def gateway_emu(tmp_path, loopback_address, second_loopback, request):
    gateway = second_loopback
    names = getattr(request, "param", None)
    emulator = start(tmp_path / "emu", loopback_address, gateway_address=gateway, gateway_hostnames=names)
    yield emulator, gateway
    emulator.stop()


def provisioned(tmp_path, emu, gateway, check_gateway=True, **hub):
    key = new_key()
    enroll_symmetric(emu, "pi-downstream", key)
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-downstream",
                                 "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key))},
                 hub={"gateway_hostname": gateway, **hub})
    return resolve(cfg, cfg.state_dir, check_gateway=check_gateway)


def test_through_the_gateway_with_its_root_ca(gateway_emu, tmp_path):
    emu, gateway = gateway_emu
    creds = provisioned(tmp_path, emu, gateway)
    assert creds.gateway_hostname == gateway and creds.hostname == emu.emulator.hub.hostname
    client = sdk_connect(creds)
    try:
        client.patch_twin_reported_properties({"via": "gateway"})
    finally:
        client.shutdown()
    assert emu.emulator.hub.state.get_twin("pi-downstream").reported["via"] == "gateway"


def test_wrong_root_ca_is_named(gateway_emu, tmp_path):
    emu, gateway = gateway_emu
    other = Pki(tmp_path / "other").root()
    with pytest.raises(TrustError) as before:      # checked before the SDK is even asked to connect
        provisioned(tmp_path, emu, gateway, ca_file=str(other.cert_path))
    assert before.value.kind == "wrong-ca" and "hub.ca_file" in before.value.fix
    creds = provisioned(tmp_path, emu, gateway, check_gateway=False, ca_file=str(other.cert_path))
    with pytest.raises(Exception) as failure:
        sdk_connect(creds)
    error = describe_connect_failure(creds, failure.value)
    assert error.kind == "wrong-ca"
    assert "gateway device CA" in error.problem and "hub.ca_file" in error.fix


@pytest.mark.parametrize("gateway_emu", [["edge-gw.roost.test"]], indirect=True)
def test_hostname_not_in_the_gateway_certificate_is_named(gateway_emu, tmp_path):
    emu, gateway = gateway_emu
    with pytest.raises(TrustError) as before:
        provisioned(tmp_path, emu, gateway)
    assert before.value.kind == "hostname-mismatch" and "edge-gw.roost.test" in before.value.problem
    creds = provisioned(tmp_path, emu, gateway, check_gateway=False)
    with pytest.raises(Exception) as failure:
        sdk_connect(creds)
    error = describe_connect_failure(creds, failure.value)
    assert error.kind == "hostname-mismatch"
    assert "edge-gw.roost.test" in error.problem and repr(gateway) in error.problem
    assert "gateway_hostname" in error.fix


def test_the_running_agent_says_which_trust_problem_it_has(gateway_emu, tmp_path):
    from mgmtrig import RunningAgent, wait_for

    emu, gateway = gateway_emu
    key = new_key()
    enroll_symmetric(emu, "pi-agent-gw", key)
    other = Pki(tmp_path / "other").root()
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-agent-gw",
                                 "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key))},
                 hub={"gateway_hostname": gateway, "ca_file": str(other.cert_path)})
    agent = RunningAgent(cfg)
    try:
        error = wait_for(lambda: agent.daemon.uplink and agent.daemon.uplink.stats.last_error, what="a failure")
    finally:
        agent.stop()
    assert "does not lead to the configured root CA" in error
    assert not agent.connected

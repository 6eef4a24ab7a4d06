"""The TLS probe tells a wrong CA from a wrong host name, against a real TLS listener on loopback."""

from __future__ import annotations

import pytest
from tls_server import HandshakeServer

from agent.identity import describe_connect_failure
from agent.identity.credentials import HubCredentials
from agent.identity.tls_check import probe_tls
from emulator.pki import Pki


@pytest.fixture
def gateway(tmp_path, loopback_address):
    pki = Pki(tmp_path / "pki")
    cert = pki.gateway([loopback_address, "edge-gw.roost.test"])
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path) as server:
        yield server, pki


def test_right_ca_and_name(gateway):
    server, pki = gateway
    probe = probe_tls(server.address, 8883, pki.root().pem)
    assert probe.ok, probe.detail
    assert "edge-gw.roost.test" in probe.server_names and "gateway device CA" in probe.issuer


def test_name_checked_while_connecting_elsewhere(gateway):
    server, pki = gateway
    assert probe_tls("edge-gw.roost.test", 8883, pki.root().pem, address=server.address).ok
    probe = probe_tls("hub.roost.test", 8883, pki.root().pem, address=server.address)
    assert probe.kind == "hostname-mismatch"
    assert "'hub.roost.test'" in probe.detail and "edge-gw.roost.test" in probe.detail
    assert "gateway_hostname" in probe.fix


def test_wrong_ca(gateway, tmp_path):
    server, _ = gateway
    other = Pki(tmp_path / "other").root()
    probe = probe_tls(server.address, 8883, other.pem)
    assert probe.kind == "wrong-ca"
    assert "gateway device CA" in probe.detail and "hub.ca_file" in probe.fix


def test_system_store_does_not_trust_a_private_ca(gateway):
    server, _ = gateway
    probe = probe_tls(server.address, 8883, None)
    assert probe.kind == "wrong-ca" and "system CA store" in probe.detail


def test_unreachable(loopback_address):
    probe = probe_tls(loopback_address, 8883, None, timeout=1)
    assert probe.kind == "unreachable" and "port 8883" in probe.fix


def test_connect_failure_explained(gateway, tmp_path):
    from azure.iot.device.exceptions import ConnectionFailedError, CredentialError

    server, pki = gateway
    creds = HubCredentials("hub.roost.test", "pi-1", gateway_hostname="edge-gw.roost.test",
                           ca_pem=Pki(tmp_path / "x").root().pem)
    error = describe_connect_failure(creds, ConnectionFailedError("opaque"), address=server.address)
    assert error.kind == "wrong-ca"
    creds = HubCredentials("hub.roost.test", "pi-1", gateway_hostname="nothere.roost.test", ca_pem=pki.root().pem)
    assert describe_connect_failure(creds, ConnectionFailedError("x"), address=server.address).kind == \
        "hostname-mismatch"
    assert describe_connect_failure(creds, CredentialError("401")).kind == "auth"

"""The TLS probe tells a wrong CA from a wrong host name, against a real TLS listener on loopback."""

from __future__ import annotations

import pytest
from mgmt_tls_server import HandshakeServer

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


def test_the_anchor_in_use_is_not_withdrawn_unless_forced(make_mgmt, tmp_path, loopback_address):
    import asyncio
    import base64

    pki = Pki(tmp_path / "hub-pki")
    cert = pki.server("hub", [loopback_address])
    key = base64.b64encode(bytes(32)).decode()
    (tmp_path / "conn.txt").write_text(f"HostName={loopback_address};DeviceId=pi-1;SharedAccessKey={key}")
    mgmt, _ = make_mgmt(hub={"ca_file": str(pki.root().cert_path)})
    new = Pki(tmp_path / "next").root()
    assert asyncio.run(mgmt.on_method("addTrustedCertificate", {"pem": new.pem}))[0] == 200
    in_use = mgmt.trust.anchors()[0].fingerprint
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path):
        status, result = asyncio.run(mgmt.on_method("removeTrustedCertificate", {"fingerprint": in_use}))
        assert status == 409 and "force" in result["fix"]
        assert len(mgmt.trust.anchors()) == 2
        status, _ = asyncio.run(mgmt.on_method("removeTrustedCertificate", {"fingerprint": in_use, "force": True}))
        assert status == 200 and [a.fingerprint for a in mgmt.trust.anchors()] != [in_use]


def test_a_trusted_certificate_is_described_as_cryptography_reads_it(tmp_path, loopback_address):
    # The probe describes a trusted chain from ssl's decoding (no cryptography at start); it must say the same.
    from cryptography import x509

    from agent.identity.tls_check import _names

    pki = Pki(tmp_path / "pki")
    cert = pki.gateway([loopback_address, "edge-gw.roost.test", "::1"])
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path):
        probe = probe_tls(loopback_address, 8883, pki.root().pem)
    assert probe.ok, probe.detail
    parsed = x509.load_pem_x509_certificates(cert.chain_path.read_bytes())[0]
    assert probe.issuer == parsed.issuer.rfc4514_string()
    assert probe.server_names == _names(parsed) and "::1" in probe.server_names
    assert probe.not_after == parsed.not_valid_after_utc.isoformat()


def test_an_issuer_with_several_attributes_and_special_characters(tmp_path, loopback_address):
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Roost, Inc. <edge>"),
                      x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "#field+lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "gateway 1 ")])
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(start).not_valid_after(start + dt.timedelta(days=36500))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("gw.roost.test"),
                                                        x509.IPAddress(ipaddress.ip_address(loopback_address))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    (tmp_path / "gw.pem").write_text(pem)
    (tmp_path / "gw.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    with HandshakeServer(loopback_address, tmp_path / "gw.pem", tmp_path / "gw.key"):
        probe = probe_tls(loopback_address, 8883, pem)
    assert probe.ok, probe.detail
    assert probe.issuer == cert.issuer.rfc4514_string()
    assert probe.server_names == ["gw.roost.test", loopback_address]

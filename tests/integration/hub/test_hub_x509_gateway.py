"""X.509 device authentication and the transparent gateway, with the unmodified SDK."""

from __future__ import annotations

import datetime
import sys

import hubrig
import pytest
from azure.iot.device import X509, IoTHubDeviceClient
from azure.iot.device import exceptions as sdk_errors

from emulator.pki import Pki


def _connect_x509(hostname: str, cert, ca_pem: str, **kwargs) -> IoTHubDeviceClient:
    x509 = X509(str(cert.cert_path), str(cert.key_path))
    return IoTHubDeviceClient.create_from_x509_certificate(x509, hostname, cert.certificate.subject.rfc4514_string()
                                                           .removeprefix("CN="), server_verification_cert=ca_pem,
                                                           connection_retry=False, **kwargs)


def _assert_refused(client: IoTHubDeviceClient, error=sdk_errors.CredentialError) -> None:
    try:
        with pytest.raises(error):
            client.connect()
    finally:
        client.shutdown()


def test_self_signed_certificate_by_thumbprint(emu, ca_pem):
    hub = emu.emulator.hub
    cert = emu.emulator.pki.device("cam-1", self_signed=True)
    hub.state.create_device("cam-1", auth_type="selfSigned", primary_thumbprint=cert.thumbprint)
    client = _connect_x509(hub.hostname, cert, ca_pem)
    try:
        client.connect()
        client.send_message("frame")
    finally:
        client.shutdown()
    assert hub.state.telemetry(device_id="cam-1")[0].payload == b"frame"


def test_sha256_thumbprint_and_secondary_slot(emu, ca_pem):
    hub = emu.emulator.hub
    old = emu.emulator.pki.device("cam-2", self_signed=True)
    new = emu.emulator.pki.device("cam-2", self_signed=True)
    hub.state.create_device("cam-2", auth_type="selfSigned", primary_thumbprint=old.thumbprint,
                            secondary_thumbprint=new.thumbprint_sha256)
    client = _connect_x509(hub.hostname, new, ca_pem)
    try:
        client.connect()
        assert hub.connected_devices() == ["cam-2"]
    finally:
        client.shutdown()


def test_unregistered_thumbprint_is_refused(emu, ca_pem):
    hub = emu.emulator.hub
    registered = emu.emulator.pki.device("cam-3", self_signed=True)
    hub.state.create_device("cam-3", auth_type="selfSigned", primary_thumbprint=registered.thumbprint)
    impostor = Pki(emu.emulator.state_dir / "impostor").device("cam-3", self_signed=True)
    _assert_refused(_connect_x509(hub.hostname, impostor, ca_pem))


def test_ca_signed_certificate(emu, ca_pem):
    hub = emu.emulator.hub
    hub.state.create_device("plc-1", auth_type="certificateAuthority")
    cert = emu.emulator.pki.device("plc-1")
    client = _connect_x509(hub.hostname, cert, ca_pem)
    try:
        client.connect()
        client.send_message("ok")
    finally:
        client.shutdown()


def test_ca_signed_certificate_from_untrusted_ca_or_expired_is_refused(emu, ca_pem, tmp_path):
    hub = emu.emulator.hub
    hub.state.create_device("plc-2", auth_type="certificateAuthority")
    foreign = Pki(tmp_path / "foreign").device("plc-2")
    _assert_refused(_connect_x509(hub.hostname, foreign, ca_pem))
    long_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    expired = emu.emulator.pki.device("plc-2", days=2, not_before=long_ago)
    _assert_refused(_connect_x509(hub.hostname, expired, ca_pem))


def test_ca_registered_at_run_time_is_trusted(emu, ca_pem, tmp_path):
    hub = emu.emulator.hub
    vendor = Pki(tmp_path / "vendor")
    hub.state.create_device("plc-3", auth_type="certificateAuthority")
    hub.state.add_ca("vendor", vendor.root().pem)
    client = _connect_x509(hub.hostname, vendor.device("plc-3"), ca_pem)
    try:
        client.connect()
    finally:
        client.shutdown()


def test_certificate_for_another_device_is_refused(emu, ca_pem):
    hub = emu.emulator.hub
    hub.state.create_device("plc-4", auth_type="certificateAuthority")
    other = emu.emulator.pki.device("someone-else")
    x509 = X509(str(other.cert_path), str(other.key_path))
    client = IoTHubDeviceClient.create_from_x509_certificate(x509, hub.hostname, "plc-4",
                                                             server_verification_cert=ca_pem, connection_retry=False)
    _assert_refused(client)


# gateway


@pytest.fixture
def gateway_emu(tmp_path, loopback_address):
    gateway = hubrig.unique_loopback()
    emulator = hubrig.start(tmp_path, loopback_address, gateway_address=gateway)
    yield emulator, gateway
    emulator.stop()


def test_device_connects_through_gateway_with_root_ca(gateway_emu):
    emu, gateway = gateway_emu
    hub = emu.emulator.hub
    device = hub.state.create_device("leaf-1")
    root_pem = emu.emulator.pki.root().pem
    gateway_cert = emu.emulator.pki.load("gateway")
    assert gateway_cert.certificate.issuer != emu.emulator.pki.root().certificate.subject  # via the gateway CA
    client = IoTHubDeviceClient.create_from_symmetric_key(device.primary_key, hub.hostname, "leaf-1",
                                                          gateway_hostname=gateway, server_verification_cert=root_pem,
                                                          connection_retry=False)
    try:
        client.connect()
        client.send_message("through the gateway")
        assert hub.sessions["leaf-1"].via_gateway
        assert client.get_twin()["desired"] == {"$version": 1}
    finally:
        client.shutdown()
    assert hub.state.telemetry(device_id="leaf-1")[0].payload == b"through the gateway"


def test_gateway_with_wrong_ca_fails(gateway_emu, tmp_path):
    emu, gateway = gateway_emu
    device = emu.emulator.hub.state.create_device("leaf-2")
    wrong_root = Pki(tmp_path / "wrong").root().pem
    client = IoTHubDeviceClient.create_from_symmetric_key(device.primary_key, emu.emulator.hub.hostname, "leaf-2",
                                                          gateway_hostname=gateway, server_verification_cert=wrong_root,
                                                          connection_retry=False)
    _assert_refused(client, sdk_errors.ClientError)


def test_gateway_hostname_must_match_certificate(tmp_path, loopback_address):
    gateway, named = hubrig.unique_loopback(), hubrig.unique_loopback()
    # The certificate names another address than the one the gateway listens on: TLS must refuse it.
    Pki(tmp_path / "state" / "pki").gateway([named, "gateway.roost.test"])
    emu = hubrig.start(tmp_path, loopback_address, gateway_address=gateway)
    try:
        assert emu.emulator.connection_info()["gateway"]["hostnames"] == [named, "gateway.roost.test"]
        device = emu.emulator.hub.state.create_device("leaf-3")
        client = IoTHubDeviceClient.create_from_symmetric_key(
            device.primary_key, emu.emulator.hub.hostname, "leaf-3", gateway_hostname=gateway,
            server_verification_cert=emu.emulator.pki.root().pem, connection_retry=False)
        try:
            with pytest.raises(sdk_errors.ClientError) as failure:
                client.connect()
        finally:
            client.shutdown()
        assert "address mismatch" in str(failure.value.__cause__.__cause__)
    finally:
        emu.stop()


@pytest.mark.skipif(sys.version_info < (3, 13), reason="Python exposes the client's intermediates from 3.13 on")
def test_ca_signed_through_an_intermediate_the_device_sends(emu, ca_pem):
    hub = emu.emulator.hub
    factory = emu.emulator.pki.intermediate("factory-ca")
    cert = emu.emulator.pki.device("plc-5", issuer=factory)
    hub.state.create_device("plc-5", auth_type="certificateAuthority")
    x509 = X509(str(cert.chain_path), str(cert.key_path))  # leaf + intermediate, the root stays with the hub
    client = IoTHubDeviceClient.create_from_x509_certificate(x509, hub.hostname, "plc-5",
                                                             server_verification_cert=ca_pem, connection_retry=False)
    try:
        client.connect()
        client.send_message("via intermediate")
    finally:
        client.shutdown()

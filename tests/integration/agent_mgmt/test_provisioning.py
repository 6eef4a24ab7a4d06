"""Provisioning through the DPS emulator with the unmodified SDK, and connecting to the assigned hub."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from mgmtrig import config, enroll_symmetric, enroll_x509, new_key, sdk_connect, write_secret

from agent.identity import ProvisioningError, describe_connect_failure, is_auth_failure, resolve
from agent.identity import assignment as cache
from agent.identity.credentials import derive_device_key


def test_symmetric_individual_enrollment(emu, tmp_path):
    key = new_key()
    enroll_symmetric(emu, "pi-sym-1", key)
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-sym-1",
                                 "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key))})
    creds = resolve(cfg, cfg.state_dir)
    assert creds.device_id == "pi-sym-1" and creds.hostname == emu.emulator.hub.hostname
    assert creds.source == "dps-symmetric"
    path = cache.cache_path(cfg.state_dir)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600 and key not in path.read_text()
    client = sdk_connect(creds)
    try:
        client.patch_twin_reported_properties({"hello": 1})
    finally:
        client.shutdown()
    assert emu.emulator.hub.state.get_twin("pi-sym-1").reported["hello"] == 1


def test_group_enrollment_with_derived_key(emu, tmp_path):
    group_key = new_key()
    enroll_symmetric(emu, "roost-fleet", group_key, group=True)
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-grp-7",
                                 "group_key_file": str(write_secret(tmp_path / "group.key", group_key))})
    creds = resolve(cfg, cfg.state_dir)
    assert creds.device_id == "pi-grp-7" and creds.source == "dps-group"
    device = emu.emulator.hub.state.get_device("pi-grp-7")
    assert base64.b64decode(device.primary_key) == derive_device_key(group_key, "pi-grp-7")
    sdk_connect(creds).shutdown()


def test_x509_enrollment(emu, tmp_path):
    cert = emu.emulator.pki.device("pi-x509-1", self_signed=True)
    enroll_x509(emu, "pi-x509-1", cert.pem)
    cfg = config(tmp_path, emu, {"method": "x509", "cert_file": str(cert.cert_path),
                                 "key_file": str(cert.key_path)})
    creds = resolve(cfg, cfg.state_dir)   # registration id taken from the certificate's common name
    assert creds.device_id == "pi-x509-1" and creds.x509 is not None and creds.sign is None
    sdk_connect(creds).shutdown()


def test_cached_assignment_is_reused_and_asked_again_after_auth_failure(emu, tmp_path):
    from azure.iot.device.exceptions import CredentialError

    key = new_key()
    enroll_symmetric(emu, "pi-cache", key)
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-cache",
                                 "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key))})
    first = resolve(cfg, cfg.state_dir)
    registrations = len(emu.emulator.dps.state.list_registrations())
    # DPS is not asked again: even with the enrollment gone the cached answer is used.
    emu.emulator.dps.state.delete_enrollment("pi-cache")
    again = resolve(cfg, cfg.state_dir)
    assert (again.hostname, again.device_id) == (first.hostname, first.device_id)
    assert len(emu.emulator.dps.state.list_registrations()) == registrations
    with pytest.raises(ProvisioningError) as info:
        resolve(cfg, cfg.state_dir, force=True)
    assert info.value.kind == "auth" and "enrollment" in info.value.fix
    assert cache.load(cfg.state_dir) is not None    # a failed re-ask keeps the last good assignment usable
    # The hub forgets the device (deleted by an operator): the hub refuses, DPS is asked again and restores it.
    enroll_symmetric(emu, "pi-cache", key)
    emu.emulator.hub.state.delete_device("pi-cache")
    with pytest.raises(CredentialError) as refused:
        sdk_connect(resolve(cfg, cfg.state_dir))
    assert is_auth_failure(refused.value)
    assert describe_connect_failure(first, refused.value).kind == "auth"
    creds = resolve(cfg, cfg.state_dir, force=True)
    sdk_connect(creds).shutdown()
    assert emu.emulator.hub.state.find_device("pi-cache") is not None


def test_config_change_invalidates_the_cache(emu, tmp_path):
    key, other = new_key(), new_key()
    enroll_symmetric(emu, "pi-a", key)
    enroll_symmetric(emu, "pi-b", other)
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-a",
                                 "symmetric_key_file": str(write_secret(tmp_path / "a.key", key))})
    assert resolve(cfg, cfg.state_dir).device_id == "pi-a"
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-b",
                                 "symmetric_key_file": str(write_secret(tmp_path / "b.key", other))})
    assert resolve(cfg, cfg.state_dir).device_id == "pi-b"


def test_wrong_key_and_unknown_registration(emu, tmp_path):
    enroll_symmetric(emu, "pi-wrong", new_key())
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-wrong",
                                 "symmetric_key_file": str(write_secret(tmp_path / "dev.key", new_key()))})
    with pytest.raises(ProvisioningError) as info:
        resolve(cfg, cfg.state_dir)
    assert info.value.kind == "auth" and "pi-wrong" in str(info.value)
    assert cache.load(cfg.state_dir) is None


def test_dps_with_the_wrong_root_ca(emu, tmp_path):
    from emulator.pki import Pki

    key = new_key()
    enroll_symmetric(emu, "pi-ca", key)
    other = Pki(tmp_path / "other").root()
    cfg = config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-ca",
                                 "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key)),
                                 "provisioning_ca_file": str(other.cert_path)})
    with pytest.raises(ProvisioningError) as info:
        resolve(cfg, cfg.state_dir)
    assert info.value.kind == "wrong-ca" and "identity.provisioning_ca_file" in info.value.fix


def test_x509_group_enrollment_through_its_ca(emu, tmp_path):
    from emulator.hub.state import Attestation, Enrollment

    ca = emu.emulator.pki.intermediate("fleet-ca", "roost fleet CA")
    emu.emulator.dps.state.put_enrollment(Enrollment("fleet", Attestation("x509", certificates=[ca.pem]),
                                                     is_group=True))
    cert = emu.emulator.pki.device("pi-fleet-3", issuer=ca)
    cfg = config(tmp_path, emu, {"method": "x509", "cert_file": str(cert.chain_path), "key_file": str(cert.key_path)})
    creds = resolve(cfg, cfg.state_dir)
    assert creds.device_id == "pi-fleet-3" and creds.source == "dps-x509"
    sdk_connect(creds).shutdown()

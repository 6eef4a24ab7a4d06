"""Identity pieces that need no network: connection strings, keys, the assignment cache, trust anchors."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import stat

import pytest
from mgmt_fakes import make_config

from agent.identity import ConfigurationError, TrustError, resolve
from agent.identity import assignment as cache
from agent.identity.connection_string import parse_connection_string
from agent.identity.keys import device_key, install_rotated_key
from agent.identity.trust import TrustStore, parse_ca_pem
from emulator.pki import Pki

KEY = base64.b64encode(bytes(range(32))).decode()


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("text, message", [
    ("HostName=h;DeviceId=d", "exactly one of SharedAccessKey or x509=true"),
    (f"HostName=h;SharedAccessKey={KEY}", "lacks DeviceId"),
    (f"HostName=h;DeviceId=d;SharedAccessKey={KEY};Colour=red", "unknown field 'Colour'"),
    ("HostName=h;DeviceId=d;SharedAccessKey=not base64!", "not valid base64"),
    (f"HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY};DeviceId=d", "policy"),
    ("HostName=h;DeviceId=d;garbage", "segment 3 is not Name=value"),
    (f"HostName=h;HostName=g;DeviceId=d;SharedAccessKey={KEY}", "repeats"),
])
def test_bad_connection_strings_say_what_is_wrong(text, message):
    with pytest.raises(ConfigurationError, match=message) as info:
        parse_connection_string(text)
    assert "portal" in info.value.fix or "policy" in str(info.value)


@pytest.mark.parametrize("stray", [KEY, KEY.rstrip("="), "Shared" + KEY])
def test_a_key_without_its_name_is_not_repeated(stray):
    with pytest.raises(ConfigurationError) as info:
        parse_connection_string(f"HostName=h;DeviceId=d;{stray}")
    assert KEY.rstrip("=")[:12] not in str(info.value)


def test_connection_string_identity_with_gateway_and_trust(tmp_path):
    pki = Pki(tmp_path / "pki")
    root = pki.root()
    (tmp_path / "conn.txt").write_text(f"HostName=hub.example;DeviceId=pi-7;SharedAccessKey={KEY};"
                                       "GatewayHostName=edge.local\n")
    config = make_config(tmp_path, hub={"ca_file": str(root.cert_path)})
    creds = resolve(config, config.state_dir)
    assert (creds.hostname, creds.device_id, creds.gateway_hostname) == ("hub.example", "pi-7", "edge.local")
    assert creds.ca_pem == root.pem
    token = creds.sas_token(3600, now=1000)
    expected = base64.b64encode(hmac.new(bytes(range(32)), b"hub.example%2Fdevices%2Fpi-7\n4600",
                                         hashlib.sha256).digest()).decode()
    assert token.startswith("SharedAccessSignature sr=hub.example%2Fdevices%2Fpi-7&sig=")
    assert base64.b64decode(token.split("sig=")[1].split("&")[0].replace("%2B", "+").replace("%2F", "/")
                            .replace("%3D", "=")) == base64.b64decode(expected)
    assert KEY not in repr(creds)
    config = make_config(tmp_path, hub={"ca_file": str(root.cert_path), "gateway_hostname": "edge2.local"})
    assert resolve(config, config.state_dir).gateway_hostname == "edge2.local"   # the config wins


def test_missing_connection_string_file(tmp_path):
    config = make_config(tmp_path)
    with pytest.raises(ConfigurationError, match="does not exist"):
        resolve(config, config.state_dir)


def test_group_key_derivation_and_rotation_override(tmp_path):
    (tmp_path / "group.key").write_text(KEY + "\n")
    config = make_config(tmp_path, identity={"method": "symmetric", "group_key_file": "group.key",
                                             "id_scope": "0ne0001", "registration_id": "pi-9"})
    key, source = device_key(config, tmp_path / "state")
    assert source == "group"
    assert base64.b64decode(key) == hmac.new(bytes(range(32)), b"pi-9", hashlib.sha256).digest()
    new = base64.b64encode(b"n" * 32).decode()
    install_rotated_key(tmp_path / "state", new, key)
    assert device_key(config, tmp_path / "state") == (new, "rotated")
    override = tmp_path / "state" / "identity" / "device.key"
    assert mode(override) == 0o600 and mode(override.with_name("device.key.previous")) == 0o600


@pytest.mark.parametrize("content, message", [("c2hvcnQ=", "16 to 64 bytes"), ("%%%", "not valid base64")])
def test_bad_key_files(tmp_path, content, message):
    (tmp_path / "dev.key").write_text(content)
    config = make_config(tmp_path, identity={"method": "symmetric", "symmetric_key_file": "dev.key",
                                             "id_scope": "0ne0001"})
    with pytest.raises(ConfigurationError, match=message):
        device_key(config, tmp_path / "state")


def test_assignment_cache_is_private_and_survives_corruption(tmp_path):
    a = cache.Assignment("hub.example", "pi-1", "pi-1", "dps-symmetric", cache.fingerprint("x"), 1.0)
    cache.save(tmp_path, a)
    assert cache.load(tmp_path) == a
    assert mode(cache.cache_path(tmp_path)) == 0o600
    assert KEY not in cache.cache_path(tmp_path).read_text()
    cache.cache_path(tmp_path).write_text("{torn")
    assert cache.load(tmp_path) is None
    assert cache.forget(tmp_path) is True and cache.forget(tmp_path) is False


def test_fingerprint_separates_fields():
    assert cache.fingerprint("ab", "c") != cache.fingerprint("a", "bc")


# -- trust anchors ---------------------------------------------------------------------------------------
@pytest.fixture
def pkis(tmp_path):
    old, new = Pki(tmp_path / "old"), Pki(tmp_path / "new")
    return old, new


def test_rotation_add_new_then_remove_old(tmp_path, pkis):
    old, new = pkis
    store = TrustStore(tmp_path / "state", old.root().cert_path)
    old_fp = store.anchors()[0].fingerprint
    added = store.add(new.root().pem)
    assert [a.origin for a in store.anchors()] == ["config", "added"]
    assert mode(tmp_path / "state" / "trust" / "added" / f"{added[0].fingerprint}.pem") == 0o600
    removed = store.remove(old_fp.upper())
    assert removed.origin == "config"
    assert [a.fingerprint for a in store.anchors()] == [added[0].fingerprint]
    assert store.bundle() == new.root().pem
    with pytest.raises(TrustError, match="last trusted certificate") as info:
        store.remove(added[0].fingerprint)
    assert info.value.kind == "last"
    store.add(old.root().pem)   # adding a withdrawn anchor back brings it back
    assert len(store.anchors()) == 2


@pytest.mark.parametrize("make_pem, kind", [
    (lambda pki: "hello", "bad-pem"),
    (lambda pki: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "bad-pem"),
    (lambda pki: pki.server("srv", ["127.0.0.1"]).pem, "not-ca"),
    (lambda pki: 12, "bad-pem"),
])
def test_bad_anchors_are_refused_and_nothing_changes(tmp_path, pkis, make_pem, kind):
    old, _ = pkis
    store = TrustStore(tmp_path / "state", old.root().cert_path)
    before = store.anchors()
    with pytest.raises(TrustError) as info:
        store.add(make_pem(old))
    assert info.value.kind == kind and info.value.fix
    assert store.anchors() == before


def test_expired_and_future_anchors(pkis):
    old, _ = pkis
    pem = old.root().pem
    with pytest.raises(TrustError, match="expired"):
        parse_ca_pem(pem, now=dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
    with pytest.raises(TrustError, match="not valid before"):
        parse_ca_pem(pem, now=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))


def test_unknown_fingerprint(tmp_path, pkis):
    old, _ = pkis
    with pytest.raises(TrustError, match="no trusted certificate") as info:
        TrustStore(tmp_path, old.root().cert_path).remove("ab" * 32)
    assert info.value.kind == "unknown"


def test_unreadable_ca_file(tmp_path):
    with pytest.raises(TrustError, match="cannot be read"):
        TrustStore(tmp_path, tmp_path / "missing.pem").anchors()
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(TrustError, match="holds no PEM"):
        TrustStore(tmp_path, tmp_path / "junk.pem").anchors()
    assert TrustStore(tmp_path, None).bundle() is None


def test_trusted_certificate_methods(make_mgmt, tmp_path):
    import asyncio

    pki = Pki(tmp_path / "gw")
    mgmt, _ = make_mgmt(hub={"ca_file": str(pki.root().cert_path)})
    status, result = asyncio.run(mgmt.on_method("listTrustedCertificates", {}))
    assert status == 200 and len(result["certificates"]) == 1
    fp = result["certificates"][0]["fingerprint"]
    status, result = asyncio.run(mgmt.on_method("removeTrustedCertificate", {"fingerprint": fp}))
    assert status == 409 and "add the new CA first" in result["fix"]
    status, result = asyncio.run(mgmt.on_method("addTrustedCertificate", {"pem": "nope"}))
    assert status == 400 and "not a PEM" in result["error"]
    new = Pki(tmp_path / "gw2").root()
    status, result = asyncio.run(mgmt.on_method("addTrustedCertificate", {"pem": new.pem}))
    assert status == 200 and len(result["certificates"]) == 2
    status, _ = asyncio.run(mgmt.on_method("removeTrustedCertificate", {"fingerprint": "00" * 32}))
    assert status == 404
    status, result = asyncio.run(mgmt.on_method("removeTrustedCertificate", {"fingerprint": fp}))
    assert status == 200 and result["removed"]["fingerprint"] == fp

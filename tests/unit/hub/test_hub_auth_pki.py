"""SAS tokens, the PKI, client-certificate checks, topic helpers and the token bucket."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import os

import pytest

from emulator.hub import tls
from emulator.hub.faults import Faults, TokenBucket
from emulator.hub.iothub import TopicRouter, encode_properties, parse_properties, topic_matches
from emulator.hub.sas import SasError, derive_group_key, make_sas, parse_sas, verify_sas
from emulator.pki import Pki

KEY = base64.b64encode(b"k" * 32).decode()
OTHER = base64.b64encode(b"o" * 32).decode()


def test_sas_round_trip_matches_the_documented_formula():
    token = make_sas("hub.example/devices/d1", KEY, 2_000_000_000)
    parsed = verify_sas(token, "hub.example/devices/d1", [OTHER, KEY], now=1_900_000_000)
    expected = hmac.new(b"k" * 32, b"hub.example%2Fdevices%2Fd1\n2000000000", hashlib.sha256).digest()
    assert parsed.signature == expected and parsed.expiry == 2_000_000_000 and parsed.key_name is None
    assert parse_sas(make_sas("s/registrations/r", KEY, 5, "registration")).key_name == "registration"


@pytest.mark.parametrize(("token", "resource", "now", "message"), [
    (make_sas("hub/devices/d1", KEY, 100), "hub/devices/d1", 100, "expired"),
    (make_sas("hub/devices/d1", OTHER, 200), "hub/devices/d1", 100, "signature does not match"),
    (make_sas("hub/devices/d2", KEY, 200), "hub/devices/d1", 100, "is for resource"),
    ("Bearer abc", "hub/devices/d1", 100, "SharedAccessSignature"),
    ("SharedAccessSignature sr=a&sig=b", "a", 100, "lacks se"),
    ("SharedAccessSignature sr=a&sig=b&se=soon", "a", 100, "integer"),
    ("SharedAccessSignature sr=a&sig&se=1", "a", 100, "has no '='"),
])
def test_bad_tokens_say_why(token, resource, now, message):
    with pytest.raises(SasError, match=message):
        verify_sas(token, resource, [KEY], now)


def test_group_key_derivation_matches_dps():
    expected = base64.b64encode(hmac.new(b"k" * 32, b"node-1", hashlib.sha256).digest()).decode()
    assert derive_group_key(KEY, "node-1") == expected


def test_pki_chain_files_modes_and_reuse(tmp_path):
    pki = Pki(tmp_path / "pki")
    root = pki.root()
    assert pki.root().certificate == root.certificate  # reused, not reissued
    gateway = pki.gateway(["gw.roost.test", "127.0.0.9"])
    chain = gateway.chain_path.read_text()
    assert chain.count("BEGIN CERTIFICATE") == 2  # gateway + gateway CA, not the root
    ca = pki.load("gateway-ca")
    assert gateway.certificate.issuer == ca.certificate.subject and ca.certificate.issuer == root.certificate.subject
    assert pki.gateway(["gw.roost.test", "127.0.0.9"]).certificate == gateway.certificate
    assert pki.gateway(["other.name"]).certificate != gateway.certificate  # new names, new certificate
    for path in (tmp_path / "pki").glob("*.key.pem"):
        assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pki").stat().st_mode & 0o777 == 0o700
    with pytest.raises(ValueError, match="at least one host"):
        pki.server("s", [])


def test_client_chain_checks(tmp_path):
    pki, other = Pki(tmp_path / "a"), Pki(tmp_path / "b")
    now = datetime.datetime.now(datetime.UTC)
    device = pki.device("d1")
    assert tls.check_client_chain([device.certificate], [pki.root().certificate], now) is None
    assert "does not chain" in tls.check_client_chain([device.certificate], [other.root().certificate], now)
    intermediate = pki.intermediate("factory")
    leaf = pki.device("d2", issuer=intermediate)
    assert tls.check_client_chain([leaf.certificate, intermediate.certificate], [pki.root().certificate], now) is None
    assert "does not chain" in tls.check_client_chain([leaf.certificate], [pki.root().certificate], now)
    assert "expired" in tls.check_client_chain([device.certificate], [pki.root().certificate],
                                               now + datetime.timedelta(days=400))
    assert "no client certificate" in tls.check_client_chain([], [pki.root().certificate], now)
    self_signed = pki.device("d3", self_signed=True)
    assert "does not chain" in tls.check_client_chain([self_signed.certificate], [pki.root().certificate], now)


def test_topic_helpers():
    assert topic_matches("devices/d1/messages/devicebound/#", "devices/d1/messages/devicebound/%24.mid=1")
    assert topic_matches("$iothub/methods/POST/#", "$iothub/methods/POST/reboot/?$rid=1")
    assert topic_matches("a/+/c", "a/b/c") and not topic_matches("a/+/c", "a/b/d")
    assert not topic_matches("#", "$iothub/twin/res/200")  # MQTT-4.7.2-1
    assert not topic_matches("a/b", "a/b/c")
    props = {"$.mid": "m 1", "k&": "v=1/2"}
    assert parse_properties(encode_properties(props)) == props
    assert parse_properties("flag&&a=1") == {"flag": "", "a": "1"}
    router = TopicRouter()

    async def short(session, packet):
        return None

    async def long(session, packet):
        return None

    router.add("a/", short)
    router.add("a/b/", long)
    assert router.match("a/b/c") is long and router.match("a/x") is short and router.match("z") is None
    router.remove("a/b/")
    assert router.match("a/b/c") is short


def test_token_bucket_with_injected_clock():
    now = [0.0]
    bucket = TokenBucket(rate=10, burst=2, monotonic=lambda: now[0])
    assert bucket.try_take() and bucket.try_take() and not bucket.try_take()
    now[0] += 0.1
    assert bucket.try_take()
    assert bucket.wait_time() == pytest.approx(0.1)
    now[0] += 1.0
    assert bucket.wait_time() == 0.0


def test_fault_bookkeeping():
    faults = Faults()
    faults.withhold_puback("d", 2)
    assert faults.take_withheld("d") and faults.take_withheld("d") and not faults.take_withheld("d")
    with pytest.raises(ValueError):
        faults.withhold_puback("d", 0)
    faults.delay(None, 0.5)
    faults.delay("x", 0.1)
    assert (faults.delay_for("x"), faults.delay_for("y")) == (0.1, 0.5)
    faults.clear()
    assert faults.delay_for("x") == 0.0


def test_accept_any_client_certificate_finds_ssl_ctx(tmp_path):
    pki = Pki(tmp_path)
    server = pki.server("s", ["127.0.0.1"])
    context = tls.server_context(str(server.chain_path), str(server.key_path))
    assert context.verify_mode.name == "CERT_OPTIONAL"
    assert os.path.exists(server.chain_path)


def test_tier_quotas_follow_iot_hub_limits():
    from emulator.hub.faults import Quotas

    s1 = Quotas.tier("S1", units=10)
    assert (s1.d2c_per_second, s1.daily_message_units, s1.connections_per_second) == (120.0, 4_000_000, 120.0)
    assert Quotas.tier("s1").d2c_per_second == 100.0  # the floor of 100/s below 9 units
    assert Quotas.tier("S3", 2).d2c_per_second == 12_000.0
    with pytest.raises(ValueError, match="F1, S1, S2, S3"):
        Quotas.tier("B1")
    with pytest.raises(ValueError, match="exactly one"):
        Quotas.tier("F1", 2)


def test_serve_refuses_an_unknown_tier(capsys):
    from emulator.cli import main

    assert main(["hub", "serve", "--tier", "P9", "--state-dir", "/nonexistent/never-created"]) == 2
    assert "unknown IoT Hub tier 'P9'" in capsys.readouterr().err

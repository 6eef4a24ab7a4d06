"""roost doctor against a real TLS listener and web server on loopback: healthy, and broken in each way."""

from __future__ import annotations

import base64
import json
import time

import pytest
from mgmt_tls_server import HandshakeServer
from roost_test_support import head_server

from agent import doctor
from agent.cli import main
from emulator.pki import Pki

KEY = base64.b64encode(bytes(range(32))).decode()


@pytest.fixture
def web(loopback_address):
    with head_server(loopback_address) as url:
        yield url


def write_config(tmp_path, host, ca_file, extra=""):
    (tmp_path / "conn.txt").write_text(f"HostName={host};DeviceId=pi-1;SharedAccessKey={KEY}")
    (tmp_path / "conn.txt").chmod(0o600)
    path = tmp_path / "roost.toml"
    path.write_text(f'[device]\nstate_dir = "state"\nplatform = "emulated"\n'
                    f'[identity]\nmethod = "connection-string"\nconnection_string_file = "conn.txt"\n'
                    f'tpm_tcti = "swtpm:host=127.0.0.1,port=1"\n'
                    f'[hub]\nca_file = "{ca_file}"\n{extra}')
    return path


def by_name(checks):
    return {c.name: c for c in checks}


def run(config_path, web_url, **kw):
    from agent.config import load_config

    return doctor.run_checks(load_config(config_path), timeout=2, time_url=web_url, board=False, **kw)


def test_over_websockets_port_443_is_required_and_8883_only_reported(tmp_path, loopback_address, web):
    pki = Pki(tmp_path / "pki")
    cert = pki.server("hub", [loopback_address])
    path = write_config(tmp_path, loopback_address, pki.root().cert_path, 'transport = "mqtt-ws"\n')
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path, port=443):
        checks = by_name(run(path, web))
    assert checks["port 443"].status == doctor.PASS and "WebSockets" in checks["port 443"].detail
    assert checks["tls chain"].status == doctor.PASS and f"{loopback_address}:443" in checks["tls chain"].detail
    assert checks["port 8883"].status == doctor.WARN     # nothing listens there, and the agent does not need it
    assert doctor.passed(list(checks.values()))


def test_healthy_setup(tmp_path, loopback_address, web):
    pki = Pki(tmp_path / "pki")
    cert = pki.server("hub", [loopback_address])
    path = write_config(tmp_path, loopback_address, pki.root().cert_path)
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path):
        checks = by_name(run(path, web))
    for name in ("identity", "dns hub", "port 8883", "tls chain", "tls hostname", "clock skew", "token expiry",
                 "trust anchors"):
        assert checks[name].status == doctor.PASS, (name, checks[name])
    assert checks["port 5671"].status == doctor.WARN and "AMQP" in checks["port 5671"].fix
    assert checks["tpm"].status == doctor.SKIP
    assert doctor.passed(list(checks.values())) and not doctor.passed(list(checks.values()), strict=True)


def test_wrong_ca_and_wrong_name(tmp_path, loopback_address, web):
    pki = Pki(tmp_path / "pki")
    other = Pki(tmp_path / "other").root()
    cert = pki.server("hub", ["hub.roost.test"])
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path):
        checks = by_name(run(write_config(tmp_path, loopback_address, other.cert_path), web))
        assert checks["tls chain"].status == doctor.FAIL and "hub.ca_file" in checks["tls chain"].fix
        checks = by_name(run(write_config(tmp_path, loopback_address, pki.root().cert_path), web))
        assert checks["tls chain"].status == doctor.PASS
        assert checks["tls hostname"].status == doctor.FAIL
        assert "hub.roost.test" in checks["tls hostname"].detail
    assert not doctor.passed(list(checks.values()))


def test_unreachable_hub_unresolvable_gateway_and_clock_skew(tmp_path, loopback_address, web):
    pki = Pki(tmp_path / "pki")
    path = write_config(tmp_path, loopback_address, pki.root().cert_path)
    checks = by_name(run(path, web, now=time.time() + 3600))
    assert checks["port 8883"].status == doctor.FAIL and checks["tls chain"].status == doctor.SKIP
    assert checks["clock skew"].status == doctor.FAIL and "ahead" in checks["clock skew"].detail
    assert "timedatectl set-ntp" in checks["clock skew"].fix
    path = write_config(tmp_path, loopback_address, pki.root().cert_path,
                        'gateway_hostname = "edge.invalid"\n')
    checks = by_name(run(path, web))
    assert checks["dns gateway"].status == doctor.FAIL and "does not resolve" in checks["dns gateway"].detail


def test_no_time_reference_falls_back_to_ntp_status(tmp_path, loopback_address):
    from agent.config import load_config

    config = load_config(write_config(tmp_path, loopback_address, Pki(tmp_path / "p").root().cert_path))
    check = doctor.check_clock(f"http://{loopback_address}:9/", time.time(), 1, lambda: {"NTPSynchronized": "no"})
    assert check.status == doctor.WARN and "set-ntp" in check.fix
    check = doctor.check_clock(None, time.time(), 1, lambda: {"NTPSynchronized": "yes"})
    assert check.status == doctor.PASS
    assert doctor.check_tpm(config, 1).status == doctor.SKIP


def test_tpm_checks(tmp_path, loopback_address):
    from agent.config import parse_config

    config, _ = parse_config({"identity": {"method": "tpm", "id_scope": "0ne1", "tpm_tcti": "device:/nonexistent"}})
    check = doctor.check_tpm(config, 1)
    assert check.status == doctor.FAIL and "tpm" in check.fix
    config, _ = parse_config({"identity": {"method": "tpm", "id_scope": "0ne1",
                                           "tpm_tcti": f"swtpm:host={loopback_address},port=2321"}})
    assert doctor.check_tpm(config, 1).status == doctor.FAIL


def test_expired_x509_certificate(tmp_path):
    import datetime as dt

    from agent.config import parse_config

    pki = Pki(tmp_path / "pki")
    device = pki.device("pi-x", days=1, not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    config, _ = parse_config({"identity": {"method": "x509", "id_scope": "0ne1",
                                           "cert_file": str(device.cert_path),
                                           "key_file": str(device.key_path)}})
    check = doctor.check_credentials(config, doctor.Target(None, None, False, None), time.time())
    assert check.status == doctor.FAIL and "expired" in check.detail


def test_board_and_sensors_on_the_emulated_platform(tmp_path):
    from agent.config import parse_config

    ident = {"method": "connection-string", "connection_string_file": "c.txt"}
    config, _ = parse_config({"device": {"platform": "emulated", "board": "rpi-4b"}, "identity": ident})
    checks = by_name(doctor.check_board(config))
    assert checks["board"].status == doctor.PASS
    assert checks["sensor climate"].status == doctor.PASS and "BME280" in checks["sensor climate"].detail
    config, _ = parse_config({"device": {"platform": "emulated", "board": "rpi-99"}, "identity": ident})
    assert doctor.check_board(config)[0].status == doctor.FAIL


def test_cli_json_and_exit_codes(tmp_path, loopback_address, web, capsys):
    pki = Pki(tmp_path / "pki")
    cert = pki.server("hub", [loopback_address])
    path = write_config(tmp_path, loopback_address, pki.root().cert_path)
    with HandshakeServer(loopback_address, cert.chain_path, cert.key_path):
        code = main(["doctor", "--config", str(path), "--json", "--no-board", "--time-url", web, "--timeout", "2"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["passed"] is True
    assert out["checks"][0]["name"] == "config"
    code = main(["doctor", "--config", str(path), "--no-board", "--time-url", web, "--timeout", "1"])
    text = capsys.readouterr().out
    assert code == 1 and "[FAIL] port 8883" in text and "fix: open outbound TCP 8883" in text
    (tmp_path / "bad.toml").write_text("[identity]\nmethod = 'tmp'\n")
    assert main(["doctor", "--config", str(tmp_path / "bad.toml")]) == 2
    assert "did you mean 'tpm'" in capsys.readouterr().err

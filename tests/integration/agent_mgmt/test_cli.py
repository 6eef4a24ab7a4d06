"""`roost provision` and `roost doctor` against the emulators, through the real command line entry point."""

from __future__ import annotations

import json

from mgmtrig import enroll_symmetric, new_key, write_secret

from agent.cli import main
from emulator.pki import Pki


def write_config(tmp_path, emu, key_file, *, ca_file=None, gateway=""):
    info = emu.emulator.connection_info()
    path = tmp_path / "roost.toml"
    path.write_text(f"""
[device]
state_dir = "{tmp_path / 'state'}"
platform = "emulated"
board = "rpi-4b"

[identity]
method = "symmetric"
provisioning_host = "{info['dps']['host']}"
id_scope = "{info['dps']['id_scope']}"
registration_id = "pi-cli"
symmetric_key_file = "{key_file}"
provisioning_ca_file = "{info['root_ca']}"
tpm_tcti = "swtpm:host=127.0.0.1,port=1"

[hub]
ca_file = "{ca_file or info['root_ca']}"
gateway_hostname = "{gateway}"
""")
    return path


def test_provision_then_status(emu, tmp_path, capsys):
    key = new_key()
    enroll_symmetric(emu, "pi-cli", key)
    path = write_config(tmp_path, emu, write_secret(tmp_path / "dev.key", key))
    assert main(["provision", "--config", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"auth": "sas", "device_id": "pi-cli", "gateway": None, "hub": emu.emulator.hub.hostname,
                   "method": "dps-symmetric"}
    assert main(["provision", "--config", str(path), "--status"]) == 0
    text = capsys.readouterr().out
    assert "pi-cli" in text and "initialAssignment" in text and key not in text


def test_provision_failure_says_what_to_do(emu, tmp_path, capsys):
    enroll_symmetric(emu, "pi-cli", new_key())
    path = write_config(tmp_path, emu, write_secret(tmp_path / "dev.key", new_key()))
    assert main(["provision", "--config", str(path), "--status"]) == 1
    assert "not provisioned" in capsys.readouterr().err
    assert main(["provision", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "rejected the device key" in err and "fix: check that an enrollment exists" in err


def doctor(path, time_url, *extra):
    return main(["doctor", "--config", str(path), "--json", "--no-board", "--timeout", "2", "--time-url", time_url,
                 *extra])


def test_doctor_healthy_and_broken(emu, tmp_path, capsys, time_url):
    key = new_key()
    enroll_symmetric(emu, "pi-cli", key)
    path = write_config(tmp_path, emu, write_secret(tmp_path / "dev.key", key))
    assert main(["provision", "--config", str(path)]) == 0
    capsys.readouterr()
    assert doctor(path, time_url) == 0
    report = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in report["checks"]}
    assert report["passed"] is True
    for name in ("identity", "dns hub", "port 8883", "tls chain", "tls hostname", "clock skew", "token expiry"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["port 443"]["status"] == "warn" and checks["port 443"]["fix"]
    assert doctor(path, time_url, "--strict") == 1
    capsys.readouterr()

    wrong = Pki(tmp_path / "wrong").root()
    broken = write_config(tmp_path, emu, tmp_path / "dev.key", ca_file=wrong.cert_path)
    assert doctor(broken, time_url) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["tls chain"]["status"] == "fail" and "hub.ca_file" in checks["tls chain"]["fix"]

"""`roost sensors scan|read`: the acceptance lines as subprocesses, the rest in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import main

ROOST = str(Path(sys.executable).parent / "roost")


@pytest.fixture
def clean_env(tmp_path, monkeypatch) -> dict[str, str]:
    """No board, platform or faults from the caller's environment; no config file."""
    for name in ("ROOST_BOARD", "ROOST_PLATFORM", "ROOST_EMULATOR_FAULTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ROOST_CONFIG", str(tmp_path / "absent.toml"))
    return dict(os.environ)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([ROOST, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def test_scan_on_the_emulated_rpi_4b(clean_env) -> None:
    done = run(["sensors", "scan", "--board", "rpi-4b", "--emulated"], clean_env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.split()[:3] == ["0x76", "BME280", "climate"] for line in lines), done.stdout
    assert any(line.split()[:3] == ["0x44", "SHT4x", "humidity"] for line in lines), done.stdout
    assert any(line.split()[:3] == ["0x48", "ADS1115", "analog"] for line in lines), done.stdout
    assert any(line.split()[:3] == ["uart", "PMS5003", "particles"] for line in lines), done.stdout
    assert "serial0 (uart, /dev/serial0, 9600 baud)" in done.stdout


def test_read_json_prints_one_object_per_sensor(clean_env) -> None:
    done = run(["sensors", "read", "--board", "rpi-4b", "--platform", "emulated", "--json"], clean_env)
    assert done.returncode == 0, done.stderr
    objects = [json.loads(line) for line in done.stdout.splitlines()]
    assert [o["sensor_id"] for o in objects] == ["climate", "humidity", "analog", "particles"]
    for o in objects:
        assert o["error"] is None and o["values"] and set(o["values"]) <= set(o["units"])
    climate = objects[0]
    assert climate["units"]["temperature"] == "degC" and 10 < climate["values"]["temperature"] < 35


def test_a_fault_from_the_environment_shows_on_the_command_line(clean_env) -> None:
    env = dict(clean_env, ROOST_EMULATOR_FAULTS="climate=nack", ROOST_BOARD="rpi-4b", ROOST_PLATFORM="emulated")
    done = run(["sensors", "read", "--json", "--sensor", "climate", "--sensor", "humidity"], env)
    assert done.returncode == 1
    climate, humidity = (json.loads(line) for line in done.stdout.splitlines())
    assert climate["error_kind"] == "nack" and "0x76" in climate["error"]
    assert humidity["error"] is None


def test_real_hardware_is_the_default_and_says_how_to_enable_it(clean_env, capsys) -> None:
    if Path("/dev/i2c-1").exists():
        pytest.skip("this machine has a real /dev/i2c-1")
    assert main(["sensors", "scan", "--board", "rpi-4b"]) == 1
    out = capsys.readouterr().out
    assert "bus error" in out and "/dev/i2c-1 does not exist" in out and "raspi-config" in out


def test_no_board_is_an_error_that_names_the_fix(clean_env, capsys) -> None:
    assert main(["sensors", "read"]) == 2
    err = capsys.readouterr().err
    assert "pass --board NAME" in err and "ROOST_BOARD" in err and "[device] board" in err


def test_board_and_platform_from_the_config_file(clean_env, tmp_path, monkeypatch, capsys) -> None:
    config = tmp_path / "roost.toml"
    config.write_text('[device]\nboard = "rpi-4b"\nplatform = "emulated"\n')
    monkeypatch.setenv("ROOST_CONFIG", str(config))
    assert main(["sensors", "read", "--sensor", "analog"]) == 0
    assert capsys.readouterr().out.startswith("analog  ADS1115  ain0 ")


def test_broken_config_file_is_reported(clean_env, tmp_path, capsys) -> None:
    config = tmp_path / "roost.toml"
    config.write_text("[device\n")
    assert main(["sensors", "read", "--config", str(config)]) == 2
    assert "cannot read" in capsys.readouterr().err
    # With both given on the command line the file is not needed.
    assert main(["sensors", "read", "--config", str(config), "--board", "rpi-4b", "--emulated",
                 "--sensor", "humidity"]) == 0


@pytest.mark.parametrize(("args", "says"), [
    (["--board", "rpi-9"], "no board called 'rpi-9'"),
    (["--board", "rpi-4b", "--platform", "quantum"], "no platform called 'quantum'"),
    (["--board", "rpi-4b", "--emulated", "--platform", "linux"], "--emulated contradicts --platform linux"),
    (["--board", "rpi-4b", "--emulated", "--sensor", "oven"], "no sensor 'oven'; its sensors: analog, climate"),
])
def test_usage_errors(clean_env, capsys, args, says) -> None:
    assert main(["sensors", "read", *args]) == 2
    assert says in capsys.readouterr().err


def test_bad_fault_spec_is_a_usage_error(clean_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOST_EMULATOR_FAULTS", "climate=melted")
    assert main(["sensors", "scan", "--board", "rpi-4b", "--emulated"]) == 2
    assert "unknown kind 'melted'" in capsys.readouterr().err


def test_watch_repeats_until_the_count(clean_env, capsys) -> None:
    assert main(["sensors", "read", "--board", "rpi-4b", "--emulated", "--sensor", "climate",
                 "--watch", "0.01", "--count", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.startswith("-- ") for line in out] == [True, False] * 3
    assert all(line.startswith("climate  BME280  temperature ") for line in out[1::2])


def test_unplugged_sensor_shows_as_missing_in_scan(clean_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ROOST_EMULATOR_FAULTS", "analog=unplugged")
    assert main(["sensors", "scan", "--board", "rpi-4b", "--emulated", "--json"]) == 1
    buses = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    i2c = next(b for b in buses if b["bus"] == "i2c1")
    missing = [e for e in i2c["entries"] if not e["present"]]
    assert [(e["address"], e["sensor_id"]) for e in missing] == [(0x48, "analog")]

"""packaging/systemd/roost.service: the hardening and the notify/watchdog contract the daemon implements."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[3] / "packaging" / "systemd" / "roost.service"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("key, value", [
    ("Type", "notify"), ("User", "roost"), ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
    ("StateDirectory", "roost"), ("ConfigurationDirectory", "roost"), ("PrivateTmp", "yes"),
    ("Restart", "on-failure"), ("RestartPreventExitStatus", "78"), ("ReadWritePaths", "/var/lib/roost"),
    ("SupplementaryGroups", "i2c dialout gpio tss"), ("DevicePolicy", "closed"),
])
def test_required_directives(key, value):
    assert value in directives().get(key, []), f"{key}={value} missing from {UNIT.name}"


def test_devices_cover_buses_gpio_and_the_tpm():
    allowed = " ".join(directives()["DeviceAllow"])
    for device in ("char-i2c", "char-ttyS", "char-ttyAMA", "char-gpiochip", "char-tpmrm"):
        assert device in allowed


def test_watchdog_leaves_room_for_the_ping_interval():
    seconds = int(directives()["WatchdogSec"][0])
    assert seconds >= 10   # the daemon pings every WatchdogSec/2 from its event loop


def test_exec_start_runs_the_daemon_with_the_config():
    assert directives()["ExecStart"] == ["/usr/bin/roost run --config /etc/roost/roost.toml"]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_accepts_the_unit_and_rates_it_well_hardened(tmp_path):
    copy = tmp_path / "roost.service"
    copy.write_text(UNIT.read_text().replace("/usr/bin/roost", "/bin/true"))
    verify = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(copy)],
                              capture_output=True, text=True, timeout=60)
    level = re.search(r"Overall exposure level for roost.service: ([0-9.]+)", security.stdout)
    assert level, security.stdout[-500:] + security.stderr
    assert float(level.group(1)) <= 3.0

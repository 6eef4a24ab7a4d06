from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from mgmt_fakes import FakeContext, make_config

from agent.management import Management
from agent.management.health import SystemProbe
from agent.management.system_actions import SystemActions


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A tiny /proc + /sys + /etc tree with known figures."""
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("51234\n")
    (root / "proc/loadavg").write_text("0.50 0.40 0.30 1/200 1234\n")
    (root / "proc/meminfo").write_text("MemTotal:  4000000 kB\nMemFree:  1000000 kB\nMemAvailable:  3000000 kB\n")
    (root / "proc/uptime").write_text("12345.67 20000.00\n")
    (root / "proc/self").mkdir()
    (root / "proc/self/status").write_text("Name:\tpython3\nVmRSS:\t   40960 kB\n")
    (root / "proc/device-tree/serial-number").write_text("10000000abcdef01\x00")
    (root / "proc/device-tree/model").write_text("Raspberry Pi 4 Model B Rev 1.5\x00")
    (root / "etc/os-release").write_text('NAME="Debian GNU/Linux"\nPRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n')
    return root


@pytest.fixture
def recorder(tmp_path: Path) -> tuple[SystemActions, Path]:
    """System actions whose commands append their arguments to a file instead of acting on the machine."""
    log = tmp_path / "actions.log"
    script = tmp_path / "record.sh"
    show = 'printf "Timezone=Europe/Berlin\\nNTP=yes\\nNTPSynchronized=no\\n"'
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nif [ "$1" = show ]; then {show}; fi\n')
    script.chmod(0o755)
    actions = SystemActions({"reboot": f"{script} reboot", "set_timezone": f"{script} set-timezone {{timezone}}",
                             "time_status": f"{script} show"})
    return actions, log


@pytest.fixture
def make_mgmt(tmp_path, clock, fake_root, recorder):
    def build(**sections):
        # The free space of the test machine's disk is not ours to assert on: that rule is off unless asked.
        sections["health"] = {"disk_free_min_mb": 0.0, **sections.get("health", {})}
        config = make_config(tmp_path, **sections)
        context = FakeContext(config, Path(config.device.state_dir))
        context.state_dir.mkdir(parents=True, exist_ok=True)
        mgmt = Management(context, clock=clock, system=recorder[0], info_root=fake_root,
                          probe=SystemProbe(root=fake_root, disk_path=tmp_path)).attach()
        return mgmt, context
    yield build
    import logging

    for handler in list(logging.getLogger().handlers):
        if type(handler).__name__ == "LogBuffer":
            logging.getLogger().removeHandler(handler)

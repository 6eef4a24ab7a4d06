"""A few real SIGKILLs at chosen write points: the same guarantees as the in-process power-cut sweep."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fwrig import CutAt, Rig

HERE = Path(__file__).parent


def _agent(rig: Rig, k: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HERE / "fw_sigkill_agent.py"), str(rig.config_file()), str(k), *args],
                          capture_output=True, text=True, timeout=60, check=False)


def _writes(rig: Rig, phase: str, bundle) -> list[tuple[str, str]]:
    hook = CutAt(None)
    engine = rig.engine(hook)
    if phase == "install":
        engine.install(str(bundle))
    else:
        engine.boot()
        engine.run_trial(reboot=False)
    return hook.ops


@pytest.mark.parametrize("kind", ["rpi-tryboot", "uboot"])
@pytest.mark.parametrize("where", ["slot-middle", "state-rename", "selector"])
def test_sigkill_during_install(tmp_path, kind, where):
    probe = Rig(tmp_path / "probe", kind)
    ops = _writes(probe, "install", probe.bundle("2.0"))
    k = {
        "slot-middle": next(i for i, (op, t) in enumerate(ops, 1) if "slot b@" in t and t.endswith("@24576")),
        "state-rename": [i for i, (op, t) in enumerate(ops, 1) if op == "rename" and "state.json" in t][-1],
        "selector": len(ops),
    }[where]
    rig = Rig(tmp_path / "kill", kind)
    done = _agent(rig, k, "install", str(rig.bundle("2.0")))
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    first = rig.board.power_on()
    assert first.ok and (first.slot, first.image["version"]) == ("a", "1.0")
    outcome, report = rig.settle()
    assert (outcome.slot, report.mode) == ("a", "normal")
    state = json.loads((rig.config.state_dir / "update" / "state.json").read_text())
    assert state["pending"] is None and state["slots"]["a"]["status"] == "good"
    assert state["slots"]["b"]["status"] in ("writing", "bad")


@pytest.mark.parametrize("kind", ["rpi-tryboot", "uboot"])
def test_sigkill_between_selector_switch_and_state_commit(tmp_path, kind):
    """The kill lands after the boot loader was switched to the new slot but before the state file followed."""
    probe = Rig(tmp_path / "probe", kind)
    probe.engine().install(str(probe.bundle("2.0")), reboot=True)
    probe.power_on()
    ops = _writes(probe, "trial", None)
    selector_done = [i for i, (op, t) in enumerate(ops, 1) if op in ("rename", "exec") and "state.json" not in t][-1]
    rig = Rig(tmp_path / "kill", kind)
    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    rig.power_on()
    done = _agent(rig, selector_done + 1, "trial")
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"], report.mode) == ("b", "2.0", "normal")
    state = json.loads((rig.config.state_dir / "update" / "state.json").read_text())
    assert state["slots"]["b"]["status"] == "good" and state["last_result"]["result"] == "committed"

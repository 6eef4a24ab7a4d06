"""Power cut at every write point of install, commit, rollback and the fall to the golden image.

For each phase the write hook first counts the durable operations (writes, fsyncs, renames, fw_setenv runs);
then, for every k, a fresh device runs the phase with power cut before operation k (the engine is abandoned
mid-flight), boots again from whatever is on disk, and lets a fresh engine reconcile. Every time: the boot ROM
starts a complete image on the first try, the state file agrees with it, and the device still takes updates.
"""

from __future__ import annotations

import json

import pytest
from fwrig import CutAt, PowerCut, Rig

from firmware.state import GOOD

BACKENDS = ["emulated", "rpi-tryboot", "uboot"]


def _prepare(rig: Rig, phase: str) -> None:
    """Bring the device to the point just before the phase under test."""
    if phase in ("commit", "rollback", "golden"):
        rig.engine().install(str(rig.bundle("2.0", healthy=phase == "commit")), reboot=True)
        trial = rig.power_on()
        assert trial.trial and trial.slot == "b"


def _run_phase(rig: Rig, phase: str, hook: CutAt) -> None:
    engine = rig.engine(hook)
    if phase == "install":
        engine.install(str(rig.bundle("2.0")), reboot=True)
        return
    report = engine.boot()
    assert report.action == "health-check"
    engine.run_trial()


def _expected(phase: str) -> set[tuple[str, str]]:
    return {
        "install": {("a", "1.0"), ("b", "2.0")},
        "commit": {("a", "1.0"), ("b", "2.0")},
        "rollback": {("a", "1.0")},
        "golden": {("golden", "golden-1")},
    }[phase]


def _check_consistent(rig: Rig, phase: str, k: int) -> None:
    first = rig.board.power_on()
    rig.boot_log.append(first)
    assert first.ok, f"k={k}: the boot ROM started slot {first.slot}, which does not hold a complete image"
    outcome, report = rig.settle()
    assert all(o.ok for o in rig.boot_log), f"k={k}: a boot after the cut started a torn image"
    assert (outcome.slot, outcome.image["version"]) in _expected(phase), f"k={k}: {outcome}"
    state = json.loads((rig.config.state_dir / "update" / "state.json").read_text())
    record = state["slots"][outcome.slot]
    assert record["status"] == GOOD, f"k={k}: booted slot {outcome.slot} is {record['status']} in the state file"
    assert record["version"] in (outcome.image["version"], "factory"), f"k={k}: state says {record['version']}"
    assert state["pending"] is None, f"k={k}: still pending after settling: {state['pending']}"
    last = state["last_result"]
    if last.get("result") == "committed":   # what the state file calls committed is what boots
        assert last["slot"] == outcome.slot, f"k={k}: state committed slot {last['slot']}, {outcome.slot} boots"
    if last.get("result") == "rolled-back":
        assert last["slot"] != outcome.slot and state["slots"][last["slot"]]["status"] == "bad", f"k={k}: {last}"
    expected_mode = "golden" if outcome.slot == "golden" else "normal"
    assert report.mode == expected_mode, f"k={k}: {report}"


def _still_updatable(rig: Rig, k: int) -> None:
    rig.engine().install(str(rig.bundle("3.0", security_version=2)), reboot=True)
    outcome, report = rig.settle()
    assert (outcome.image["version"], report.mode) == ("3.0", "normal"), f"k={k}: device wedged: {outcome}"


@pytest.mark.parametrize("kind", BACKENDS)
@pytest.mark.parametrize("phase", ["install", "commit", "rollback", "golden"])
def test_power_cut_at_every_write(tmp_path, kind, phase):
    counter = CutAt(None)
    rig = Rig(tmp_path / "count", kind, max_failed_trials=1 if phase == "golden" else 3)
    _prepare(rig, phase)
    _run_phase(rig, phase, counter)
    total = len(counter.ops)
    assert total >= (15 if phase == "install" else 2), counter.ops
    for k in range(1, total + 1):
        rig = Rig(tmp_path / f"k{k}", kind, max_failed_trials=1 if phase == "golden" else 3)
        _prepare(rig, phase)
        with pytest.raises(PowerCut):
            _run_phase(rig, phase, CutAt(k))
        _check_consistent(rig, phase, k)
        if phase != "golden" or k % 3 == 0:
            _still_updatable(rig, k)


def test_every_slot_write_is_a_cut_point(tmp_path):
    """The hook sees each block write of the slot, so the sweep really stops inside the payload."""
    counter = CutAt(None)
    rig = Rig(tmp_path)
    rig.engine(counter).install(str(rig.bundle("2.0")))
    slot_writes = [t for op, t in counter.ops if op == "write" and "slot b@" in t]
    assert len(slot_writes) == rig.image_size // rig.block_size

from __future__ import annotations

import pytest

from firmware.durable import Storage
from firmware.errors import StateError
from firmware.state import GOOD, SlotRecord, StateStore, UpdateState


class Stop(BaseException):
    pass


def stop_at(n):
    ops = []

    def hook(operation, target):
        ops.append(operation)
        if len(ops) == n:
            raise Stop

    return hook, ops


def test_atomic_write_points_and_outcomes(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"old")
    hook, ops = stop_at(None)
    Storage(hook).atomic_write(path, b"new")
    assert ops == ["write", "fsync", "rename", "fsync"] and path.read_bytes() == b"new"
    for k in range(1, 5):
        path.write_bytes(b"old")
        hook, _ = stop_at(k)
        with pytest.raises(Stop):
            Storage(hook).atomic_write(path, b"new")
        assert path.read_bytes() == (b"old" if k <= 3 else b"new")   # old or new, never a mix


def test_state_round_trip_and_mode(tmp_path):
    store = StateStore(tmp_path, Storage())
    assert store.load() == UpdateState()
    state = UpdateState(slots={"a": SlotRecord(GOOD, "1.0", 3, "abc")}, highest_security_version=3)
    store.save(state)
    assert store.load() == state
    assert (store.path.stat().st_mode & 0o777) == 0o600


def test_damaged_state_is_a_clear_error(tmp_path):
    store = StateStore(tmp_path, Storage())
    store.directory.mkdir(parents=True)
    store.path.write_text('{"slots": 3}')
    with pytest.raises(StateError, match="Move it aside"):
        store.load()


def test_command_failure_is_reported(tmp_path):
    from firmware.errors import BootError
    with pytest.raises(BootError, match="failed with exit code 1"):
        Storage().run(["false"], "x")
    with pytest.raises(BootError, match="could not run"):
        Storage().run([str(tmp_path / "no-such-tool")], "x")


def test_slot_state_machine_edges():
    from firmware.state import BAD, EMPTY, INSTALLED, SLOT_TRANSITIONS, WRITING

    state = UpdateState()
    assert state.move("b", WRITING).status == WRITING
    assert state.move("b", INSTALLED).status == INSTALLED
    assert state.move("b", BAD).status == BAD
    with pytest.raises(StateError, match="cannot go from bad to good"):
        state.move("b", GOOD)
    with pytest.raises(StateError, match="cannot go from empty to installed"):
        state.move("a", INSTALLED)
    assert state.slot("a").status == EMPTY
    # every status can be overwritten, and nothing else leaves good or bad
    assert all(WRITING in edges for edges in SLOT_TRANSITIONS.values())
    assert SLOT_TRANSITIONS[GOOD] == SLOT_TRANSITIONS[BAD] == {WRITING}

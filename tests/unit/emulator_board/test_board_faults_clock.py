"""Fault specs as users type them, fault sets, the emulator clock and seeded signals."""

from __future__ import annotations

import pytest

from emulator.board.clock import DEFAULT_WALL_EPOCH, EmulatorClock
from emulator.board.faults import FaultError, FaultRequest, FaultSet, parse_fault_spec
from emulator.board.signals import Environment, Signal


def test_parse_fault_spec() -> None:
    assert parse_fault_spec(" climate=nack:3, particles=garbage ,clock=jump:+3600s,clock=suspend:60,") == [
        FaultRequest("climate", "nack", count=3),
        FaultRequest("particles", "garbage"),
        FaultRequest("clock", "jump", seconds=3600.0),
        FaultRequest("clock", "suspend", seconds=60.0),
    ]
    assert parse_fault_spec("") == []


@pytest.mark.parametrize(("text", "says"), [
    ("climate", "SENSOR_ID=KIND"),
    ("climate=", "SENSOR_ID=KIND"),
    ("climate=melted", "known kinds: nack"),
    ("climate=nack:many", "whole number"),
    ("climate=nack:0", "at least 1"),
    ("clock=nack", "jump or suspend"),
    ("clock=jump:soon", "seconds"),
    ("clock=suspend:-5", "only moves time forward"),
])
def test_bad_fault_specs_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(FaultError, match=says):
        parse_fault_spec(text)


def test_fault_set_counts_and_refuses_unknown_kinds() -> None:
    faults = FaultSet(("nack", "stuck"), owner="BME280 'climate'")
    with pytest.raises(FaultError, match="BME280 'climate' cannot show fault 'bad_crc'; it supports: nack, stuck"):
        faults.inject("bad_crc")
    with pytest.raises(FaultError, match="positive"):
        faults.inject("nack", 0)
    faults.inject("nack", 2)
    faults.inject("stuck")
    assert faults.names() == ["nack", "stuck"]
    assert faults.active("nack")  # looking does not use it up
    assert [faults.take("nack") for _ in range(3)] == [True, True, False]
    assert faults.take("stuck") and faults.take("stuck")
    faults.clear("stuck")
    assert faults.names() == []


def test_manual_clock_moves_only_when_told() -> None:
    clock = EmulatorClock()
    assert clock.ticks_ms() == 0 and clock.time() == DEFAULT_WALL_EPOCH
    clock.sleep_ms(25)
    clock.advance(0.005)
    assert clock.ticks_ms() == 30
    assert clock.monotonic() == pytest.approx(0.030)
    start = clock.ticks_ms()
    deadline = clock.ticks_add(start, 100)
    clock.sleep_ms(40)
    assert clock.ticks_diff(deadline, clock.ticks_ms()) == 60
    with pytest.raises(ValueError, match="backwards"):
        clock.advance(-1)


def test_clock_jump_moves_wall_time_only_and_suspend_moves_both() -> None:
    clock = EmulatorClock()
    clock.jump(-3600)
    assert clock.time() == DEFAULT_WALL_EPOCH - 3600
    assert clock.ticks_ms() == 0
    clock.jump(120, monotonic=True)
    assert clock.ticks_ms() == 120_000
    assert clock.time() == DEFAULT_WALL_EPOCH - 3600 + 120
    with pytest.raises(ValueError, match="only jumps forward"):
        clock.jump(-1, monotonic=True)
    assert clock.jumps == [(-3600, False), (120, True)]


def test_realtime_clock_refuses_advance() -> None:
    clock = EmulatorClock(realtime=True)
    with pytest.raises(RuntimeError, match="manual clock"):
        clock.advance(1)
    first = clock.monotonic()
    clock.jump(10, monotonic=True)
    assert clock.monotonic() >= first + 10


def test_ticks_wrap_like_micropython() -> None:
    clock = EmulatorClock()
    clock.advance((1 << 30) / 1000 - 0.005)  # 5 ms before the tick counter wraps
    before = clock.ticks_ms()
    clock.sleep_ms(10)
    assert clock.ticks_ms() < before
    assert clock.ticks_diff(clock.ticks_ms(), before) == 10


def test_signals_are_seeded_and_can_be_held() -> None:
    a, b, c = (Signal(20.0, drift=1.0, noise=0.1, seed=s) for s in (1, 1, 2))
    series_a = [a.value(t) for t in range(10)]
    assert series_a == [b.value(t) for t in range(10)]
    assert series_a != [c.value(t) for t in range(10)]
    a.hold(25.0)
    assert a.value(99.0) == 25.0
    clamped = Signal(5.0, noise=100.0, low=0.0, high=10.0, seed=3)
    assert all(0.0 <= clamped.value(t) <= 10.0 for t in range(50))


def test_quiet_environment_has_no_drift_or_noise() -> None:
    env = Environment(seed=9, quiet=True)
    assert {name: s.value(1234.5) for name, s in env.signals().items()} == {
        name: s.base for name, s in env.signals().items()
    }


def test_lockstep_clock_moves_exactly_by_what_was_slept() -> None:
    clock = EmulatorClock(lockstep=True)
    clock.sleep_ms(3)
    clock.sleep_ms(2)
    assert clock.ticks_ms() == 5 and clock.monotonic() == pytest.approx(0.005)
    with pytest.raises(ValueError, match="either real time or lockstep"):
        EmulatorClock(realtime=True, lockstep=True)

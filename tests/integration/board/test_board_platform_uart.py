"""UART sensors through the whole stack: hal drivers -> SerialUART -> real pyserial on a pty -> part models.

The line runs in real time (a pty is a real kernel object), so these use a real-time clock and short
output periods; nothing here asserts on durations."""

from __future__ import annotations

import pytest

from emulator.board.platform import EmulatedPlatform
from emulator.board.uart import PtyUart
from hal.board import load_board, parse_board
from hal.sensors import open_sensors, scan


def uart_board(pms_mode: str = "passive"):
    return parse_board({
        "board": {"name": "uart-rig", "description": "a PMS5003 and a GPS on two UARTs", "runtime": "linux"},
        "buses": {
            "serial0": {"kind": "uart", "device": "/dev/serial0", "baudrate": 9600},
            "gps": {"kind": "uart", "device": "/dev/ttyAMA1", "baudrate": 9600},
        },
        "sensors": [
            {"id": "particles", "driver": "pms5003", "bus": "serial0",
             "options": {"mode": pms_mode, "timeout_ms": 1000}},
            {"id": "position", "driver": "nmea", "bus": "gps", "options": {"timeout_ms": 1000}},
        ],
    })


@pytest.fixture
def rig():
    board = uart_board()
    platform = EmulatedPlatform(board, quiet=True, uart_period_s=0.2)
    platform.emulator.environment.pm2_5_ugm3.hold(20.0)
    sensors = {s.id: s for s in open_sensors(board, platform)}
    yield board, platform, sensors
    platform.close()


def test_the_product_opens_the_pty_slave_with_pyserial(rig) -> None:
    _, platform, sensors = rig
    assert sensors["particles"].read().ok
    port = platform.uart("serial0").port
    line = platform.emulator.uart("serial0")
    assert isinstance(line, PtyUart)
    assert port.port == line.path and line.path.startswith("/dev/pts/")
    assert line.byte_time == pytest.approx(10 / 9600)


def test_pms5003_passive_mode_answers_the_drivers_commands(rig) -> None:
    _, platform, sensors = rig
    reading = sensors["particles"].read()
    assert reading.ok, reading
    assert reading.values["pm2_5"] == 20 and reading.units["pm2_5"] == "ug/m3"
    commands = platform.emulator.parts["particles"].commands
    assert commands[0] == (0xE1, 0)  # the driver switched the part to passive mode ...
    assert (0xE2, 0) in commands  # ... and asked for frames


def test_pms5003_active_mode_streams() -> None:
    board = uart_board("active")
    with EmulatedPlatform(board, quiet=True, uart_period_s=0.1) as platform:
        platform.emulator.environment.pm2_5_ugm3.hold(35.0)
        sensor = open_sensors(board, platform)[0]
        reading = sensor.read()
        assert reading.ok, reading
        assert reading.values["pm2_5"] == 35
        assert platform.emulator.parts["particles"].commands == [(0xE1, 1)]


def test_garbage_on_the_line_is_survived_by_resynchronising(rig) -> None:
    _, platform, sensors = rig
    assert sensors["particles"].read().ok
    platform.inject("particles", "garbage")
    readings = [sensors["particles"].read() for _ in range(4)]
    assert sum(r.ok for r in readings) >= 2, readings  # every other frame gets through intact
    assert all(r.error_kind in (None, "crc", "frame") for r in readings)
    assert sensors["particles"].device.skipped_bytes > 0


@pytest.mark.parametrize(("fault", "kinds"), [
    ("bad_crc", {"crc"}),
    ("partial", {"crc", "frame", "timeout"}),
    ("unplugged", {"timeout"}),
])
def test_uart_faults_reach_the_reading(rig, fault, kinds) -> None:
    _, platform, sensors = rig
    assert sensors["particles"].read().ok  # opened and identified before the fault starts
    platform.inject("particles", fault)
    if fault == "unplugged":
        # Bytes already in the pty when the part goes may arrive as a torn frame first; then the line is silent.
        seen = faults_until(sensors["particles"], "timeout")
        assert seen and seen[-1] == "timeout" and set(seen) <= {"frame", "timeout"}, seen
    else:
        assert first_fault(sensors["particles"]) in kinds
    assert sensors["position"].read().ok  # the other UART goes on
    platform.clear("particles")
    assert sensors["particles"].read().ok


def test_gps_fix_and_its_faults(rig) -> None:
    _, platform, sensors = rig
    reading = sensors["position"].read()
    assert reading.ok, reading
    assert reading.values["fix"] == 1 and reading.values["satellites"] == 8
    assert reading.values["latitude"] == pytest.approx(47.6397, abs=1e-3)
    assert reading.values["longitude"] == pytest.approx(-122.1283, abs=1e-3)
    # Sentences already on the wire when a fault starts still arrive intact: allow a read or two.
    platform.inject("position", "bad_crc")
    assert first_fault(sensors["position"]) == "crc"
    platform.inject("position", "unplugged")
    # The tail of a sentence sent before the unplug may still arrive and read as a broken frame first.
    kinds = faults_until(sensors["position"], "timeout")
    assert kinds and kinds[-1] == "timeout" and set(kinds) <= {"frame", "timeout"}, kinds


def faults_until(sensor, kind: str, tries: int = 3) -> list[str | None]:
    """Error kinds of failed reads, up to and including the first of ``kind`` (at most ``tries`` reads)."""
    kinds = []
    for _ in range(tries):
        reading = sensor.read()
        if not reading.ok:
            kinds.append(reading.error_kind)
            if reading.error_kind == kind:
                break
    return kinds


def first_fault(sensor, tries: int = 3) -> str | None:
    for _ in range(tries):
        reading = sensor.read()
        if not reading.ok:
            return reading.error_kind
    return None


def test_scan_reports_uart_parts_and_a_silent_one(rig) -> None:
    board, platform, _ = rig
    platform.inject("position", "unplugged")
    results = {bus.bus: bus for bus in scan(board, platform)}
    (particles,) = results["serial0"].entries
    assert (particles.chip, particles.sensor_id, particles.present) == ("PMS5003", "particles", True)
    (position,) = results["gps"].entries
    assert (position.sensor_id, position.present, position.error_kind) == ("position", False, "timeout")


def test_rpi_3b_gps_profile_builds_and_reads() -> None:
    board = load_board("rpi-3b")
    with EmulatedPlatform(board, quiet=True, uart_period_s=0.2) as platform:
        gps = next(s for s in open_sensors(board, platform) if s.driver == "nmea")
        assert gps.read().ok


def test_whole_board_on_a_lockstep_clock() -> None:
    from emulator.board.clock import DEFAULT_WALL_EPOCH, EmulatorClock

    board = load_board("rpi-4b")
    clock = EmulatorClock(lockstep=True)
    with EmulatedPlatform(board, clock=clock, uart_period_s=0.2) as platform:
        readings = [sensor.read() for sensor in open_sensors(board, platform)]
        assert all(r.ok for r in readings), readings
        # Emulated time moved only by the drivers' sleeps, and the timestamps follow it.
        assert readings[-1].timestamp == pytest.approx(DEFAULT_WALL_EPOCH + clock.monotonic(), abs=0.05)
        assert 0 < clock.monotonic() < 60

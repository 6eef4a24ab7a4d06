"""The I2C sensors of rpi-4b read through the whole stack: hal.sensors -> drivers -> SMBusI2C -> smbus2 ->
emulated i2c-dev ioctls -> register models, with a manual clock, and every I2C fault the emulator shows."""

from __future__ import annotations

import gc

import pytest

from emulator.board import i2c_ioctl
from emulator.board.clock import DEFAULT_WALL_EPOCH, EmulatorClock
from emulator.board.platform import EmulatedPlatform
from hal.board import load_board, parse_board
from hal.clock import ManualClock
from hal.platform import PlatformError, load_platform
from hal.sensors import open_sensors, scan

I2C_SENSORS = ("climate", "humidity", "analog")


@pytest.fixture
def board():
    return load_board("rpi-4b")


@pytest.fixture
def platform(board):
    # uart_period_s: the PMS5003 thread idles; these tests read only the I2C sensors.
    platform = EmulatedPlatform(board, clock=EmulatorClock(), quiet=True, uart_period_s=3600)
    env = platform.emulator.environment
    env.temperature_c.hold(22.0)
    env.pressure_pa.hold(100_000.0)
    env.humidity_rh.hold(50.0)
    platform.emulator.parts["climate"].offsets = (0.0, 0.0, 0.0)
    yield platform
    platform.close()


def read(board, platform, ids=I2C_SENSORS):
    sensors = {s.id: s for s in open_sensors(board, platform)}
    return {sensor_id: sensors[sensor_id].read() for sensor_id in ids}


def test_every_i2c_sensor_reads_its_target(board, platform) -> None:
    readings = read(board, platform)
    assert all(r.ok for r in readings.values()), readings
    climate = readings["climate"].values
    assert climate["temperature"] == pytest.approx(22.0, abs=0.01)
    assert climate["pressure"] == pytest.approx(100_000.0, abs=1.0)  # 18 bits at x4 oversampling
    assert climate["humidity"] == pytest.approx(50.0, abs=0.02)
    humidity = readings["humidity"].values
    assert humidity["temperature"] == pytest.approx(22.0, abs=0.003)
    assert humidity["humidity"] == pytest.approx(50.0, abs=0.003)
    analog = readings["analog"].values
    lsb = 4.096 / 32768
    assert analog["ain0"] == pytest.approx(0.6 * 3.3, abs=lsb)  # the light divider
    assert analog["ain1"] == pytest.approx(2.5, abs=lsb)
    assert analog["ain2"] == pytest.approx(1.4, abs=lsb)
    assert analog["ain3"] == pytest.approx(0.0, abs=lsb)
    assert readings["climate"].timestamp == pytest.approx(DEFAULT_WALL_EPOCH, abs=1.0)


def test_reads_go_through_smbus2_ioctls(board, platform) -> None:
    read(board, platform)
    smbus = platform.i2c("i2c1").smbus
    assert type(smbus).__mro__[1].__module__ == "smbus2.smbus2"
    assert i2c_ioctl.devfile_for(smbus.fd) is smbus.devfile
    assert smbus.devfile.calls[i2c_ioctl.I2C_RDWR] > 10
    assert platform.emulator.parts["climate"].conversions == 1


def test_scan_names_every_chip(board, platform) -> None:
    (i2c, uart) = scan(board, platform)
    found = {e.address: (e.chip, e.sensor_id, e.present) for e in i2c.entries}
    assert found == {0x44: ("SHT4x", "humidity", True), 0x48: ("ADS1115", "analog", True),
                     0x76: ("BME280", "climate", True)}
    assert uart.bus == "serial0"


@pytest.mark.parametrize(("sensor_id", "fault", "kind"), [
    ("climate", "nack", "nack"),
    ("climate", "unplugged", "nack"),
    ("climate", "busy", "timeout"),
    ("climate", "wrong_chip", "chip_id"),
    ("humidity", "busy", "timeout"),
    ("humidity", "bad_crc", "crc"),
    ("humidity", "unplugged", "nack"),
    ("analog", "busy", "timeout"),
    ("analog", "nack", "nack"),
])
def test_one_faulty_sensor_never_stops_the_others(board, platform, sensor_id, fault, kind) -> None:
    platform.inject(sensor_id, fault)
    readings = read(board, platform)
    assert readings[sensor_id].error_kind == kind, readings[sensor_id]
    assert readings[sensor_id].values == {}
    assert readings[sensor_id].error
    others = [r for name, r in readings.items() if name != sensor_id]
    assert all(r.ok for r in others), others
    platform.clear(sensor_id)
    again = read(board, platform, [sensor_id])[sensor_id]
    assert again.ok, again


def test_transient_nack_recovers_on_the_next_read(board, platform) -> None:
    sensors = {s.id: s for s in open_sensors(board, platform)}
    assert sensors["climate"].read().ok
    platform.inject("climate", "nack", count=1)
    assert sensors["climate"].read().error_kind == "nack"
    assert sensors["climate"].read().ok


def test_unplugged_part_is_missing_from_the_scan(board, platform) -> None:
    platform.inject("analog", "unplugged")
    i2c = scan(board, platform)[0]
    missing = [e for e in i2c.entries if not e.present]
    assert [(e.address, e.sensor_id, e.error_kind) for e in missing] == [(0x48, "analog", "nack")]


def test_wrong_chip_is_named_in_the_scan(board, platform) -> None:
    platform.inject("climate", "wrong_chip")
    entry = next(e for e in scan(board, platform)[0].entries if e.address == 0x76)
    assert entry.present and entry.error_kind == "chip_id" and "BME280" in entry.error


def test_stuck_value_repeats_while_the_room_changes(board, platform) -> None:
    sensors = {s.id: s for s in open_sensors(board, platform)}
    first = sensors["humidity"].read().values
    platform.inject("humidity", "stuck")
    platform.emulator.environment.temperature_c.hold(30.0)
    assert sensors["humidity"].read().values == first
    assert sensors["climate"].read().values["temperature"] == pytest.approx(30.0, abs=0.01)
    platform.clear("humidity", "stuck")
    assert sensors["humidity"].read().values["temperature"] == pytest.approx(30.0, abs=0.01)


def test_clock_jump_and_suspend(board, platform) -> None:
    sensors = {s.id: s for s in open_sensors(board, platform)}
    before = sensors["climate"].read()
    platform.inject("clock", "jump", seconds=-3600)
    stepped = sensors["climate"].read()
    assert stepped.ok and stepped.timestamp == pytest.approx(before.timestamp - 3600, abs=1.0)
    ticks = platform.clock.ticks_ms()
    platform.inject("clock", "suspend", seconds=600)
    assert platform.clock.ticks_diff(platform.clock.ticks_ms(), ticks) == 600_000
    assert sensors["climate"].read().ok


def test_status_led_and_button_through_gpiozero(platform) -> None:
    led = platform.pin(17, mode=1)
    led.on()
    led.off()
    led.on()
    assert platform.emulator.gpio.level("status_led") == 1
    assert platform.emulator.gpio.history("status_led")[-3:] == [1, 0, 1]
    button = platform.pin(27, mode=0, pull=1)
    presses = []
    button.irq(lambda pin: presses.append(pin.value()), trigger=button.IRQ_FALLING)
    gc.collect()  # the handler must survive: gpiozero keeps only a weak reference
    platform.emulator.gpio.press("button")
    assert presses == [0]


def test_fault_api_rejects_what_it_cannot_do(platform) -> None:
    with pytest.raises(ValueError, match="has no sensor 'oven'; its sensors: analog, climate, humidity, particles"):
        platform.inject("oven", "nack")
    with pytest.raises(ValueError, match="supports: nack, unplugged, stuck, busy, bad_crc"):
        platform.inject("humidity", "garbage")
    with pytest.raises(ValueError, match="needs seconds"):
        platform.inject("clock", "jump")
    with pytest.raises(ValueError, match="only jumps forward"):
        platform.inject("clock", "suspend", seconds=-1)


def test_faults_from_the_environment_variable(board, monkeypatch) -> None:
    monkeypatch.setenv("ROOST_EMULATOR_FAULTS", "climate=nack, humidity=bad_crc:1")
    with EmulatedPlatform(board, clock=EmulatorClock(), uart_period_s=3600) as platform:
        assert platform.emulator.active_faults() == {"climate": ["nack"], "humidity": ["bad_crc"]}
    monkeypatch.setenv("ROOST_EMULATOR_FAULTS", "climate=nack, humidity=garbage")
    with pytest.raises(PlatformError, match=r"ROOST_EMULATOR_FAULTS.*cannot show fault 'garbage'"):
        EmulatedPlatform(board, clock=EmulatorClock(), uart_period_s=3600)


def test_loaded_by_name_and_on_a_plain_hal_clock(board) -> None:
    clock = ManualClock()
    with load_platform("emulated", board, clock=clock, quiet=True, uart_period_s=3600) as platform:
        assert isinstance(platform, EmulatedPlatform)
        assert platform.clock is clock
        readings = read(board, platform)
        assert all(r.ok for r in readings.values()), readings
        assert clock.slept_ms > 0  # the drivers' waits moved the hal clock, and the models followed it


def test_boards_the_emulator_cannot_build(board) -> None:
    with pytest.raises(PlatformError, match="micropython board"):
        EmulatedPlatform(load_board("pico-w"))
    shared = parse_board({
        "board": {"name": "two-on-one", "description": "two parts on one UART", "runtime": "linux"},
        "buses": {"serial0": {"kind": "uart", "device": "/dev/serial0", "baudrate": 9600}},
        "sensors": [{"id": "a", "driver": "pms5003", "bus": "serial0"},
                    {"id": "b", "driver": "nmea", "bus": "serial0"}],
    })
    with pytest.raises(ValueError, match="share UART 'serial0'"):
        EmulatedPlatform(shared)


def test_the_profile_carries_the_fault_verbs(board, platform) -> None:
    import dataclasses

    assert platform.board.name == "rpi-4b" and platform.board.bus("i2c1") == board.bus("i2c1")
    assert dataclasses.asdict(platform.board) == dataclasses.asdict(board)
    platform.board.inject("climate", "nack")
    assert platform.emulator.active_faults() == {"climate": ["nack"]}
    assert read(board, platform, ["climate"])["climate"].error_kind == "nack"
    platform.board.clear("climate")
    assert read(board, platform, ["climate"])["climate"].ok

"""hal.sensors: readings with units, fault containment per sensor, re-opening, and bus scans.

Runs on the emulated platform (the linux platform's real adapters on emulated parts) so faults are
the ones a board shows, injected by sensor id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from hal.board import BoardProfile, load_board
from hal.clock import ManualClock
from hal.platform import Platform, load_platform
from hal.sensors import DRIVERS, Reading, Sensor, driver_class, open_sensors, probe_chip, scan

RPI4B = (Path(__file__).resolve().parents[3] / "boards" / "rpi-4b.toml").read_text()


@pytest.fixture
def board(tmp_path: Path) -> BoardProfile:
    # rpi-4b with a 1 s PMS5003 deadline, so a silent UART costs a second, not three.
    path = tmp_path / "rpi-4b-fast.toml"
    path.write_text(RPI4B.replace('options = { mode = "active" }', 'options = { mode = "active", timeout_ms = 1000 }'))
    return load_board(str(path))


@pytest.fixture
def platform(board: BoardProfile) -> Iterator[Platform]:
    with load_platform("emulated", board, seed=3, quiet=True, uart_period_s=0.1) as p:
        yield p


def by_id(readings: list[Reading]) -> dict[str, Reading]:
    return {r.sensor_id: r for r in readings}


def test_registry_names_real_driver_classes() -> None:
    for name in DRIVERS:
        cls = driver_class(name)
        assert cls.CHIP and cls.UNITS and cls.BUS in ("i2c", "uart")
    with pytest.raises(KeyError, match="known drivers: ads1115, bme280"):
        driver_class("bme680")


def test_sensors_open_lazily_and_read(board: BoardProfile, platform: Platform) -> None:
    sensors = open_sensors(board, platform)
    assert [s.id for s in sensors] == ["climate", "humidity", "analog", "particles"]
    assert not any(s.is_open for s in sensors)
    readings = by_id([s.read() for s in sensors])
    for reading in readings.values():
        assert reading.ok, reading.error
    climate = readings["climate"]
    assert climate.chip == "BME280" and climate.driver == "bme280"
    assert -20 < climate.values["temperature"] < 50 and 80000 < climate.values["pressure"] < 110000
    assert climate.units["pressure"] == "Pa"
    assert set(readings["analog"].values) == {"ain0", "ain1", "ain2", "ain3"}
    assert readings["particles"].values["pm2_5"] >= 0
    assert sensors[0].bus == "i2c1@0x76" and sensors[3].bus == "serial0"
    as_dict = climate.to_dict()
    assert as_dict["sensor_id"] == "climate" and as_dict["error"] is None and as_dict["timestamp"] > 0


def test_one_failing_sensor_does_not_stop_the_others(board: BoardProfile, platform: Platform) -> None:
    sensors = open_sensors(board, platform)
    platform.inject("climate", "nack")
    platform.inject("humidity", "bad_crc")
    readings = by_id([s.read() for s in sensors])
    assert readings["climate"].error_kind == "nack" and "0x76" in readings["climate"].error
    assert readings["climate"].values == {}
    assert readings["humidity"].error_kind == "crc"
    assert readings["analog"].ok and readings["particles"].ok


def test_a_sensor_that_failed_to_open_is_reopened(board: BoardProfile, platform: Platform) -> None:
    climate = open_sensors(board, platform)[0]
    platform.inject("climate", "wrong_chip")
    first = climate.read()
    assert first.error_kind == "chip_id" and not climate.is_open
    platform.clear("climate")
    second = climate.read()
    assert second.ok and climate.is_open
    assert second.values["temperature"] != 0


def test_a_sensor_is_reopened_after_it_stopped_answering(board: BoardProfile, platform: Platform) -> None:
    climate = open_sensors(board, platform)[0]
    assert climate.read().ok
    first = climate.device
    platform.inject("climate", "nack", count=1)
    assert climate.read().error_kind == "nack"
    assert not climate.is_open
    assert climate.read().ok
    assert climate.device is not first


def test_a_crc_error_keeps_the_sensor_open(board: BoardProfile, platform: Platform) -> None:
    humidity = open_sensors(board, platform)[1]
    assert humidity.read().ok
    first = humidity.device
    platform.inject("humidity", "bad_crc", count=1)
    assert humidity.read().error_kind == "crc"
    assert humidity.read().ok and humidity.device is first


def test_a_silent_uart_is_a_timeout_in_the_reading(board: BoardProfile, platform: Platform) -> None:
    particles = open_sensors(board, platform)[3]
    platform.inject("particles", "unplugged")
    reading = particles.read()
    assert reading.error_kind == "timeout" and "nothing received" in reading.error
    platform.clear("particles")
    assert particles.read().ok


def test_a_bus_that_cannot_open_fails_only_its_sensors(board: BoardProfile) -> None:
    from emulator.board.platform import EmulatedPlatform

    class NoI2C(EmulatedPlatform):
        def open_smbus(self, bus):
            raise FileNotFoundError(2, "No such file or directory", bus.device)

    with NoI2C(board, seed=3, quiet=True, uart_period_s=0.1) as platform:
        readings = by_id([s.read() for s in open_sensors(board, platform)])
    assert readings["climate"].error_kind == "platform" and "dtparam=i2c_arm=on" in readings["climate"].error
    assert readings["analog"].error_kind == "platform"
    assert readings["particles"].ok


def test_an_unexpected_driver_failure_is_contained_and_logged(board: BoardProfile, platform: Platform,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from hal.drivers.ads1115 import ADS1115

    def broken(self):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(ADS1115, "read", broken)
    with caplog.at_level(logging.WARNING, logger="hal.sensors"):
        readings = by_id([s.read() for s in open_sensors(board, platform)])
    assert readings["analog"].error_kind == "internal"
    assert readings["analog"].error == "ZeroDivisionError: division by zero"
    assert readings["climate"].ok
    assert any("driver failed unexpectedly" in r.message for r in caplog.records)


def test_repeated_faults_are_logged_once(board: BoardProfile, platform: Platform,
                                         caplog: pytest.LogCaptureFixture) -> None:
    climate = open_sensors(board, platform)[0]
    platform.inject("climate", "unplugged")
    with caplog.at_level(logging.INFO, logger="hal.sensors"):
        for _ in range(3):
            assert climate.read().error_kind == "nack"
        platform.clear("climate")
        assert climate.read().ok
    messages = [r.message for r in caplog.records]
    assert sum("no ACK" in m for m in messages) == 1
    assert sum("recovered" in m for m in messages) == 1


def test_bad_driver_options_are_a_config_error() -> None:
    class Quiet(Platform):
        def _open_i2c(self, bus):
            from hal_fakes import FakeI2C

            return FakeI2C({})

    board = load_board("rpi-4b")
    spec = board.sensor("climate")
    broken = type(spec)(spec.id, spec.driver, spec.bus, spec.address, spec.interval_s, {"filter": 3})
    reading = Sensor(broken, Quiet(board, clock=ManualClock(wall=1234.5))).read()
    assert reading.error_kind == "config" and "filter" in reading.error
    assert reading.timestamp == 1234.5


def test_scan_names_what_answers(board: BoardProfile, platform: Platform) -> None:
    results = {r.bus: r for r in scan(board, platform)}
    i2c = results["i2c1"]
    assert i2c.error is None
    found = {e.address: (e.chip, e.sensor_id, e.present) for e in i2c.entries}
    assert found == {0x44: ("SHT4x", "humidity", True), 0x48: ("ADS1115", "analog", True),
                     0x76: ("BME280", "climate", True)}
    uart = results["serial0"]
    assert [(e.sensor_id, e.chip, e.present) for e in uart.entries] == [("particles", "PMS5003", True)]
    assert uart.to_dict()["entries"][0]["error"] is None


def test_scan_reports_missing_and_wrong_parts(board: BoardProfile, platform: Platform) -> None:
    platform.inject("climate", "wrong_chip")
    platform.inject("humidity", "unplugged")
    platform.inject("particles", "unplugged")
    results = {r.bus: r for r in scan(board, platform)}
    entries = {e.sensor_id: e for e in results["i2c1"].entries}
    assert entries["climate"].present and entries["climate"].chip is None
    assert entries["climate"].error_kind == "chip_id" and "expects a BME280" in entries["climate"].error
    assert not entries["humidity"].present and entries["humidity"].error_kind == "nack"
    particles = results["serial0"].entries[0]
    assert not particles.present and particles.error_kind == "timeout"


def test_scan_reports_a_dead_bus_without_raising(board: BoardProfile) -> None:
    from emulator.board.platform import EmulatedPlatform

    class NoI2C(EmulatedPlatform):
        def open_smbus(self, bus):
            raise PermissionError(13, "Permission denied", bus.device)

    with NoI2C(board, seed=3, quiet=True, uart_period_s=0.1) as platform:
        results = {r.bus: r for r in scan(board, platform)}
    assert "add the user to group 'i2c'" in results["i2c1"].error
    assert results["serial0"].entries[0].present


def test_probe_chip_on_an_unknown_address(platform: Platform) -> None:
    assert probe_chip(platform.i2c("i2c1"), 0x76, platform.clock) == "BME280"
    assert probe_chip(platform.i2c("i2c1"), 0x20, platform.clock) is None


def test_sensors_on_one_bus_read_from_several_threads(board: BoardProfile, platform: Platform) -> None:
    import threading

    sensors = [s for s in open_sensors(board, platform) if s.bus.startswith("i2c1")]
    failures: list[str] = []

    def worker(sensor: Sensor) -> None:
        for _ in range(15):
            reading = sensor.read()
            if not reading.ok:
                failures.append(f"{sensor.id}: {reading.error}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in sensors]
    scanner = threading.Thread(target=lambda: [platform.i2c("i2c1").scan() for _ in range(5)])
    for t in [*threads, scanner]:
        t.start()
    for t in [*threads, scanner]:
        t.join()
    assert failures == []

"""Sensors as the agent and the CLI see them: a board's sensors opened on a platform, read safely.

``Sensor.read()`` never raises a sensor fault: the fault goes into the :class:`Reading`, the
sensor is re-opened on the next read if it never opened, and one failing sensor never stops the
others. ``scan`` answers "what is actually on this board's buses?".
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from hal.errors import SensorError

if TYPE_CHECKING:
    from hal.board import BoardProfile, SensorSpec
    from hal.platform import Platform

log = logging.getLogger(__name__)

#: Driver name used in board profiles -> "module:Class".
DRIVERS: dict[str, str] = {
    "bme280": "hal.drivers.bme280:BME280",
    "sht4x": "hal.drivers.sht4x:SHT4x",
    "ads1115": "hal.drivers.ads1115:ADS1115",
    "pms5003": "hal.drivers.pms5003:PMS5003",
    "nmea": "hal.drivers.nmea:NMEAGPS",
}


def driver_class(name: str) -> type:
    """The driver class registered as ``name``; KeyError listing the known drivers otherwise."""
    try:
        target = DRIVERS[name]
    except KeyError:
        raise KeyError(f"no driver called {name!r}; known drivers: {', '.join(sorted(DRIVERS))}") from None
    module_name, _, class_name = target.partition(":")
    return getattr(importlib.import_module(module_name), class_name)


@dataclass
class Reading:
    """One read of one sensor: values with units, or the fault that prevented them."""

    sensor_id: str
    driver: str
    chip: str
    values: dict[str, float]
    units: dict[str, str]
    timestamp: float
    error: str | None = None
    error_kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Faults after which an open sensor is opened again on the next read.
_REOPEN_AFTER = ("nack", "bus", "timeout", "chip_id")


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, SensorError):
        return exc.kind
    from hal.platform import PlatformError

    if isinstance(exc, PlatformError):
        return "platform"
    if isinstance(exc, ValueError):
        return "config"
    return "internal"


class Sensor:
    """One configured sensor on a platform. Opens its driver lazily; ``read()`` contains faults."""

    def __init__(self, spec: SensorSpec, platform: Platform) -> None:
        self.spec = spec
        self.platform = platform
        self.id = spec.id
        self.driver = spec.driver
        self.driver_class = driver_class(spec.driver)
        self.chip: str = self.driver_class.CHIP
        bus = platform.board.bus(spec.bus)
        self.bus = f"{spec.bus}@0x{spec.address:02x}" if spec.address is not None else spec.bus
        self.bus_spec = bus
        self.device: Any = None
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return self.device is not None

    def open(self) -> None:
        """Open the bus, build the driver and check the chip's identity. Raises on failure."""
        cls = self.driver_class
        clock = self.platform.clock
        if cls.BUS == "i2c":
            device = cls(self.platform.i2c(self.spec.bus), address=self.spec.address, clock=clock, **self.spec.options)
        else:
            device = cls(self.platform.uart(self.spec.bus), clock=clock, **self.spec.options)
        device.identify()
        self.device = device

    def read(self) -> Reading:
        """Read the sensor now. Faults are reported in the reading, never raised.

        After a NACK, bus fault, timeout or identity mismatch the driver is dropped and the next read
        opens it again, so a part that was unplugged or power-cycled comes back configured.
        """
        values: dict[str, float] = {}
        try:
            if self.device is None:
                self.open()
            values = self.device.read()
        except Exception as exc:  # containment is the point: one sensor must not stop the others
            kind = _error_kind(exc)
            if kind in _REOPEN_AFTER:
                # The part may have been unplugged or power-cycled and lost its settings: open it
                # afresh (identity check, calibration, configuration) on the next read.
                self.device = None
            if kind == "internal":
                log.exception("sensor %s (%s): driver failed unexpectedly", self.id, self.driver)
            message = f"{type(exc).__name__}: {exc}"
            if message != self.last_error:
                log.warning("sensor %s (%s on %s): %s", self.id, self.chip, self.bus, message)
            self.last_error = message
            return self._reading({}, message, kind)
        if self.last_error is not None:
            log.info("sensor %s (%s on %s) recovered", self.id, self.chip, self.bus)
        self.last_error = None
        return self._reading(values, None, None)

    def _reading(self, values: dict[str, float], error: str | None, kind: str | None) -> Reading:
        units = getattr(self.device, "UNITS", None) or self.driver_class.UNITS
        return Reading(sensor_id=self.id, driver=self.driver, chip=self.chip, values=dict(values), units=dict(units),
                       timestamp=self.platform.clock.time(), error=error, error_kind=kind)

    def __repr__(self) -> str:
        return f"<Sensor {self.id} {self.chip} on {self.bus}>"


def open_sensors(board: BoardProfile, platform: Platform) -> list[Sensor]:
    """A :class:`Sensor` for each sensor of the board. Nothing is opened until the first read."""
    return [Sensor(spec, platform) for spec in board.sensors]


@dataclass
class ScanEntry:
    """One finding on a bus: a device that answered, or a configured sensor that did not."""

    address: int | None
    present: bool
    chip: str | None = None
    sensor_id: str | None = None
    error: str | None = None
    error_kind: str | None = None


@dataclass
class BusScan:
    """What a scan found on one bus."""

    bus: str
    kind: str
    device: str | None
    entries: list[ScanEntry] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_chip(i2c: Any, address: int, clock: Any = None) -> str | None:
    """Name the chip at ``address`` by trying each I2C driver that may live there; None if none matches."""
    for name in sorted(DRIVERS):
        cls = driver_class(name)
        if cls.BUS != "i2c" or address not in cls.ADDRESSES:
            continue
        try:
            cls(i2c, address=address, clock=clock).identify()
        except SensorError:
            continue
        return cls.CHIP
    return None


def scan(board: BoardProfile, platform: Platform) -> list[BusScan]:
    """Scan every bus of the board.

    I2C: every address that ACKs, named by probing its id register, plus configured sensors that
    did not answer. UART: for each configured sensor, whether a valid frame of its driver arrives
    within the driver's deadline. A bus that cannot be opened is reported, never raised.
    """
    results = []
    for bus in board.buses.values():
        result = BusScan(bus=bus.name, kind=bus.kind, device=bus.device)
        configured = [s for s in board.sensors if s.bus == bus.name]
        try:
            if bus.kind == "i2c":
                _scan_i2c(platform, bus.name, configured, result)
            else:
                _scan_uart(platform, configured, result)
        except Exception as exc:  # a dead bus is a finding, not a crash
            result.error = f"{type(exc).__name__}: {exc}"
        results.append(result)
    return results


def _scan_i2c(platform: Platform, bus_name: str, configured: list[SensorSpec], result: BusScan) -> None:
    i2c = platform.i2c(bus_name)
    by_address = {s.address: s for s in configured}
    found = i2c.scan()
    for address in found:
        spec = by_address.get(address)
        entry = ScanEntry(address=address, present=True, sensor_id=spec.id if spec else None)
        entry.chip = probe_chip(i2c, address, platform.clock)
        if spec is not None and entry.chip != driver_class(spec.driver).CHIP:
            expected = driver_class(spec.driver).CHIP
            entry.error = f"sensor {spec.id!r} expects a {expected} here, found {entry.chip or 'an unknown part'}"
            entry.error_kind = "chip_id"
        result.entries.append(entry)
    for spec in configured:
        if spec.address not in found:
            result.entries.append(ScanEntry(
                address=spec.address, present=False, chip=None, sensor_id=spec.id,
                error=f"sensor {spec.id!r} ({driver_class(spec.driver).CHIP}) does not answer at 0x{spec.address:02x}",
                error_kind="nack"))


def _scan_uart(platform: Platform, configured: list[SensorSpec], result: BusScan) -> None:
    for spec in configured:
        sensor = Sensor(spec, platform)
        entry = ScanEntry(address=None, present=False, chip=None, sensor_id=spec.id)
        try:
            sensor.open()
        except Exception as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
            entry.error_kind = _error_kind(exc)
        else:
            entry.present = True
            entry.chip = sensor.chip
        result.entries.append(entry)

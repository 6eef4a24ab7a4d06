"""An emulated board built from a board profile: its buses, the parts on them, its GPIO and its clock.

Every ``[[sensors]]`` entry of the profile becomes a part model on the named bus: register-level
I2C parts on an :class:`~emulator.board.i2c_bus.I2CBus` at their address, UART parts behind a
:class:`~emulator.board.uart.PtyUart`. All parts sample one :class:`~emulator.board.signals.Environment`,
so sensors of the same quantity agree. Faults are injected by sensor id::

    board.inject("climate", "nack")          # the BME280 stops answering
    board.inject("particles", "garbage", count=5)
    board.inject("clock", "jump", seconds=3600)
    board.clear("climate")
"""

from __future__ import annotations

import threading
from typing import Any

from emulator.board.clock import EmulatorClock
from emulator.board.faults import CLOCK_FAULTS, CLOCK_TARGET, FaultError, FaultRequest, parse_fault_spec
from emulator.board.gpio import EmulatedGpio
from emulator.board.i2c_bus import I2CBus, I2CTarget
from emulator.board.models.ads1115 import Ads1115Model
from emulator.board.models.bme280 import Bme280Model
from emulator.board.models.nmea_gps import NmeaGpsModel
from emulator.board.models.pms5003 import Pms5003Model
from emulator.board.models.sht4x import Sht4xModel
from emulator.board.signals import Environment
from emulator.board.uart import PtyUart, UartPart

MODELED_DRIVERS = ("ads1115", "bme280", "nmea", "pms5003", "sht4x")


class EmulatedBoard:
    """The hardware of one board profile, emulated. Close it to stop its UART threads."""

    def __init__(self, profile: Any, *, clock: EmulatorClock | None = None, seed: int = 0, quiet: bool = False,
                 paced: bool = True, uart_period_s: float | None = None) -> None:
        self.profile = profile
        self.clock = clock if clock is not None else EmulatorClock(realtime=True)
        self.seed = seed
        self.environment = Environment(seed, quiet=quiet)
        self.gpio = EmulatedGpio(dict(profile.gpio), profile.name)
        self.i2c_buses: dict[str, I2CBus] = {}
        self.uarts: dict[str, PtyUart] = {}
        self.parts: dict[str, I2CTarget | UartPart] = {}
        self._paced = paced
        self._uart_period_s = uart_period_s
        self._lock = threading.Lock()
        self._closed = False
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # -- construction ------------------------------------------------------------------------------

    def _build(self) -> None:
        for bus in self.profile.buses.values():
            if bus.kind == "i2c":
                self.i2c_buses[bus.name] = I2CBus(bus.name)
        uart_parts: dict[str, tuple[str, UartPart]] = {}
        for index, spec in enumerate(self.profile.sensors):
            bus = self.profile.bus(spec.bus)
            part = self._make_part(spec, index)
            if bus.kind == "i2c":
                self.i2c_buses[bus.name].attach(part)
            else:
                if bus.name in uart_parts:
                    other = uart_parts[bus.name][0]
                    raise ValueError(
                        f"board {self.profile.name!r}: sensors {other!r} and {spec.id!r} share UART {bus.name!r}; "
                        "a UART connects one part (give each its own bus)"
                    )
                uart_parts[bus.name] = (spec.id, part)
            self.parts[spec.id] = part
        for bus in self.profile.buses.values():
            if bus.kind != "uart":
                continue
            # A UART with nothing attached still exists as a port: an idle line.
            part = uart_parts[bus.name][1] if bus.name in uart_parts else UartPart(name=f"{bus.name} (idle)")
            self.uarts[bus.name] = PtyUart(part, bus.baudrate or 9600, paced=self._paced, name=bus.name)

    def _make_part(self, spec: Any, index: int) -> I2CTarget | UartPart:
        env, clock = self.environment, self.clock
        seed = self.seed * 101 + index
        if spec.driver == "bme280":
            # A BME280 on a board reads a little warm (self-heating and the Pi's own warmth).
            return Bme280Model(spec.address, clock, env, name=spec.id, offsets=(0.4, 0.0, -1.2))
        if spec.driver == "sht4x":
            return Sht4xModel(spec.address, clock, env, name=spec.id, seed=seed, serial=0x0F1E0000 + index)
        if spec.driver == "ads1115":
            return Ads1115Model(spec.address, clock, env, name=spec.id, seed=seed)
        if spec.driver == "pms5003":
            period = self._uart_period_s if self._uart_period_s is not None else 1.0
            return Pms5003Model(clock, env, name=spec.id, period_s=period, seed=seed)
        if spec.driver == "nmea":
            period = self._uart_period_s if self._uart_period_s is not None else 1.0
            return NmeaGpsModel(clock, name=spec.id, period_s=period, seed=seed)
        raise ValueError(
            f"sensor {spec.id!r}: the board emulator has no model of driver {spec.driver!r}; "
            f"it models: {', '.join(MODELED_DRIVERS)}"
        )

    # -- access ------------------------------------------------------------------------------------

    def i2c_bus(self, name: str) -> I2CBus:
        try:
            return self.i2c_buses[name]
        except KeyError:
            known = ", ".join(sorted(self.i2c_buses)) or "none"
            raise KeyError(f"board {self.profile.name!r} has no I2C bus {name!r}; its I2C buses: {known}") from None

    def uart(self, name: str) -> PtyUart:
        try:
            return self.uarts[name]
        except KeyError:
            known = ", ".join(sorted(self.uarts)) or "none"
            raise KeyError(f"board {self.profile.name!r} has no UART {name!r}; its UARTs: {known}") from None

    def part(self, sensor_id: str) -> I2CTarget | UartPart:
        try:
            return self.parts[sensor_id]
        except KeyError:
            raise FaultError(self._unknown(sensor_id)) from None

    def _unknown(self, target: str) -> str:
        known = ", ".join(sorted(self.parts)) or "none"
        return f"board {self.profile.name!r} has no sensor {target!r}; its sensors: {known} (or 'clock')"

    # -- faults ------------------------------------------------------------------------------------

    def inject(self, target: str, kind: str, *, count: int | None = None, seconds: float | None = None) -> None:
        """Make sensor ``target`` show fault ``kind`` (``count`` times, or until cleared).

        ``target="clock"`` steps the board's clock: ``kind="jump"`` moves the wall clock by ``seconds``
        (either way), ``kind="suspend"`` moves ticks and wall clock forward as a suspend/resume does.
        """
        if target == CLOCK_TARGET:
            if kind not in CLOCK_FAULTS:
                raise FaultError(f"the clock takes {' or '.join(CLOCK_FAULTS)}, not {kind!r}")
            if seconds is None:
                raise FaultError(f"clock {kind} needs seconds=..., e.g. inject('clock', '{kind}', seconds=3600)")
            try:
                self.clock.jump(seconds, monotonic=kind == "suspend")
            except ValueError as exc:
                raise FaultError(str(exc)) from None
            return
        part = self.part(target)
        part.faults.inject(kind, count)
        self._wake(target)

    def clear(self, target: str | None = None, kind: str | None = None) -> None:
        """Clear ``kind`` (or every fault) on ``target`` (or on every part)."""
        targets = [target] if target is not None else list(self.parts)
        for name in targets:
            self.part(name).faults.clear(kind)
            self._wake(name)

    def apply(self, spec: str | list[FaultRequest]) -> list[FaultRequest]:
        """Inject faults written as text (``"climate=nack,clock=jump:+60"``, see :mod:`emulator.board.faults`).

        Everything is checked before anything is injected, so a typo leaves the board as it was.
        """
        requests = parse_fault_spec(spec) if isinstance(spec, str) else list(spec)
        for request in requests:
            if request.target == CLOCK_TARGET:
                continue
            part = self.part(request.target)
            if request.kind not in part.faults.supported:
                raise FaultError(
                    f"{part.chip} {request.target!r} cannot show fault {request.kind!r}; "
                    f"it supports: {', '.join(part.faults.supported)}"
                )
        for request in requests:
            self.inject(request.target, request.kind, count=request.count, seconds=request.seconds)
        return requests

    def active_faults(self) -> dict[str, list[str]]:
        return {name: part.faults.names() for name, part in self.parts.items() if part.faults.names()}

    def _wake(self, sensor_id: str) -> None:
        spec = next((s for s in self.profile.sensors if s.id == sensor_id), None)
        if spec is not None and spec.bus in self.uarts:
            self.uarts[spec.bus].wake()

    # -- life --------------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        for line in self.uarts.values():
            line.close()
        self.gpio.close()

    def __enter__(self) -> EmulatedBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EmulatedBoard {self.profile.name} parts={sorted(self.parts)}>"

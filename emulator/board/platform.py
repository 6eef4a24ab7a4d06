"""The ``emulated`` platform: the ``linux`` platform with its four hardware hooks pointed at an emulated board.

:class:`EmulatedPlatform` overrides exactly ``open_smbus`` (an :class:`EmulatedSMBus`), ``serial_device``
(the slave end of a pty), ``make_pin_factory`` (gpiozero's MockFactory) and ``make_clock`` (the board's
clock). Everything else, the smbus2 adapter, pyserial with its deadlines, the gpiozero pin adapter, the
drivers, runs as it does on a Raspberry Pi.

Chosen by name like any platform: ``load_platform("emulated", load_board("rpi-4b"), seed=7)``, or
``roost ... --platform emulated`` / ``--emulated``, or ``ROOST_PLATFORM=emulated``.

Options: ``seed`` (signals and noise), ``clock`` (an :class:`EmulatorClock`; default: one that follows the
machine's time, which UART parts need), ``quiet`` (no drift, no noise), ``paced`` (UART bytes at the baud
rate, default True), ``uart_period_s`` (PMS5003/GPS output period), ``faults`` (text as in
``ROOST_EMULATOR_FAULTS``, which is applied too), plus the ``linux`` platform's options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from emulator.board.board import EmulatedBoard
from emulator.board.clock import EmulatorClock
from emulator.board.faults import ENVIRONMENT_VARIABLE, FaultError
from emulator.board.smbus import EmulatedSMBus
from hal.board import BoardProfile, BusSpec
from hal.linux.platform import LinuxPlatform
from hal.platform import PlatformError
from hal.ports import Clock


class EmulatedPlatform(LinuxPlatform):
    """The ``linux`` platform on emulated hardware. ``emulator`` is the :class:`EmulatedBoard`; faults are
    injected with ``platform.inject(...)``, ``platform.board.inject(...)`` or ``platform.emulator.inject(...)``."""

    name = "emulated"
    supported_runtimes = ("linux",)

    def __init__(self, board: BoardProfile, *, clock: Clock | None = None, seed: int = 0, quiet: bool = False,
                 paced: bool = True, uart_period_s: float | None = None, faults: str | None = None,
                 **options: Any) -> None:
        if board.runtime not in self.supported_runtimes:
            # Same check as Platform's, made before any pty or thread exists.
            raise PlatformError(
                f"board {board.name!r} is a {board.runtime} board; the emulated platform emulates Linux boards "
                "(run MicroPython boards' drivers under the micropython interpreter instead)"
            )
        emulator_clock = _emulator_clock(clock)
        self.emulator = EmulatedBoard(board, clock=emulator_clock, seed=seed, quiet=quiet, paced=paced,
                                      uart_period_s=uart_period_s)
        try:
            profile = EmulatedProfile.of(board, self.emulator)
            super().__init__(profile, clock=clock if clock is not None else emulator_clock, **options)
            for text in (os.environ.get(ENVIRONMENT_VARIABLE, ""), faults or ""):
                if text.strip():
                    self.emulator.apply(text)
        except FaultError as exc:
            self.emulator.close()
            raise PlatformError(f"{ENVIRONMENT_VARIABLE} / faults: {exc}") from exc
        except BaseException:
            self.emulator.close()
            raise

    # -- the four hooks ----------------------------------------------------------------------------

    def open_smbus(self, bus: BusSpec) -> EmulatedSMBus:
        try:
            return EmulatedSMBus(self.emulator.i2c_bus(bus.name))
        except KeyError as exc:
            raise PlatformError(exc.args[0]) from None

    def serial_device(self, bus: BusSpec) -> str:
        try:
            return self.emulator.uart(bus.name).path
        except KeyError as exc:
            raise PlatformError(exc.args[0]) from None

    def make_pin_factory(self) -> Any:
        return self.emulator.gpio.factory

    def make_clock(self) -> Clock:
        return self.emulator.clock

    # -- faults ------------------------------------------------------------------------------------

    def inject(self, target: str, kind: str, *, count: int | None = None, seconds: float | None = None) -> None:
        """Shorthand for ``self.emulator.inject`` (see :class:`EmulatedBoard`)."""
        self.emulator.inject(target, kind, count=count, seconds=seconds)

    def clear(self, target: str | None = None, kind: str | None = None) -> None:
        self.emulator.clear(target, kind)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.emulator.close()


@dataclass(frozen=True)
class EmulatedProfile(BoardProfile):
    """The board profile as the emulated platform holds it (``platform.board``): the same data, plus the
    emulated board's fault verbs, so ``platform.board.inject("climate", "nack")`` works."""

    @classmethod
    def of(cls, profile: BoardProfile, emulator: EmulatedBoard) -> EmulatedProfile:
        values = {f.name: getattr(profile, f.name) for f in fields(BoardProfile)}
        made = cls(**values)
        # Not a dataclass field: asdict()/replace() of the profile must not reach into the emulator.
        object.__setattr__(made, "emulator", emulator)
        return made

    def inject(self, target: str, kind: str, *, count: int | None = None, seconds: float | None = None) -> None:
        self.emulator.inject(target, kind, count=count, seconds=seconds)

    def clear(self, target: str | None = None, kind: str | None = None) -> None:
        self.emulator.clear(target, kind)


class _TicksClock:
    """Lets the part models run on a plain ``hal.ports.Clock`` (e.g. ``hal.clock.ManualClock``): an
    unwrapped monotonic count rebuilt from its ticks, and its wall clock."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._last = clock.ticks_ms()
        self._elapsed_ms = 0

    def monotonic(self) -> float:
        now = self._clock.ticks_ms()
        self._elapsed_ms += max(0, self._clock.ticks_diff(now, self._last))
        self._last = now
        return self._elapsed_ms / 1000

    def time(self) -> float:
        return self._clock.time()

    def jump(self, seconds: float, *, monotonic: bool = False) -> None:
        raise ValueError(f"a {type(self._clock).__name__} cannot be stepped; give the platform an EmulatorClock")


def _emulator_clock(clock: Clock | None) -> Any:
    if clock is None:
        return EmulatorClock(realtime=True)
    if hasattr(clock, "monotonic") and hasattr(clock, "jump"):
        return clock
    return _TicksClock(clock)

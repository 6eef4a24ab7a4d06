"""The emulated board's clock: one time source for the sensor models and the drivers under test.

It satisfies :class:`hal.ports.Clock` (``ticks_ms``, ``ticks_diff``, ``ticks_add``, ``sleep_ms``,
``time``) and adds what the models and tests need: an unwrapped ``monotonic()`` in seconds and
``jump()`` to step the clock like an NTP correction or a suspend would.

Three modes. *Manual* (tests): time stands still until ``sleep_ms`` or ``advance`` moves it, so a
driver that waits 10 ms for a BME280 conversion returns at once and every run is identical.
*Lockstep* (``lockstep=True``): manual time that also waits for real in ``sleep_ms``, so parts that live
in real time (UART lines on a pty) keep pace while emulated time still moves only by what was slept.
*Real time* (demo, CLI): time follows the machine's monotonic clock and ``sleep_ms`` really sleeps.
"""

from __future__ import annotations

import threading
import time as _time

from hal.clock import TICKS_PERIOD, ticks_add, ticks_diff

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000
DEFAULT_WALL_EPOCH = 1_767_225_600.0  # 2026-01-01T00:00:00Z: a fixed wall clock keeps manual runs reproducible


class EmulatorClock:
    """A clock the tests own (default, or ``lockstep=True``) or one that follows the machine (``realtime=True``)."""

    def __init__(self, *, realtime: bool = False, lockstep: bool = False, wall: float | None = None) -> None:
        if realtime and lockstep:
            raise ValueError("a clock is either real time or lockstep (manual time that waits), not both")
        self.realtime = realtime
        self.lockstep = lockstep
        self._lock = threading.Lock()
        self._manual_ns = 0
        self._mono_offset_ns = 0
        self._started_ns = _time.monotonic_ns()
        if wall is None:
            wall = _time.time() if realtime else DEFAULT_WALL_EPOCH
        self._wall_at_zero = wall
        self.jumps: list[tuple[float, bool]] = []

    # -- the hal.ports.Clock interface -------------------------------------------------------------

    def ticks_ms(self) -> int:
        return (self.monotonic_ns() // _NS_PER_MS) % TICKS_PERIOD

    def ticks_diff(self, end: int, start: int) -> int:
        return ticks_diff(end, start)

    def ticks_add(self, ticks: int, delta: int) -> int:
        return ticks_add(ticks, delta)

    def sleep_ms(self, ms: int) -> None:
        if ms <= 0:
            return
        if self.realtime:
            _time.sleep(ms / 1000)
            return
        if self.lockstep:
            _time.sleep(ms / 1000)
        self.advance(ms / 1000)

    def time(self) -> float:
        """Wall-clock seconds since the epoch (moves with ``jump``; never use it for deadlines)."""
        return self._wall_at_zero + self.monotonic_ns() / _NS_PER_S

    # -- what the models and tests use -------------------------------------------------------------

    def monotonic_ns(self) -> int:
        with self._lock:
            if self.realtime:
                return _time.monotonic_ns() - self._started_ns + self._mono_offset_ns
            return self._manual_ns + self._mono_offset_ns

    def monotonic(self) -> float:
        """Seconds since the clock was made, never wrapping; models time conversions with it."""
        return self.monotonic_ns() / _NS_PER_S

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass (manual mode); in real time mode time passes by itself."""
        if seconds < 0:
            raise ValueError(f"time cannot run backwards: advance({seconds!r}); use jump() for a clock step")
        if self.realtime:
            raise RuntimeError("advance() needs a manual clock: this one follows the machine (realtime=True)")
        with self._lock:
            self._manual_ns += round(seconds * _NS_PER_S)

    def jump(self, seconds: float, *, monotonic: bool = False) -> None:
        """Step the clock by ``seconds`` (may be negative).

        By default only the wall clock steps, as when NTP corrects it: ticks keep their pace, so
        deadlines are unaffected but timestamps leap. ``monotonic=True`` moves ticks too (forward
        only), as a suspend/resume does.
        """
        if monotonic:
            if seconds < 0:
                raise ValueError("a monotonic clock only jumps forward; pass monotonic=False for a wall-clock step")
            with self._lock:
                # time() is derived from the monotonic count, so the wall clock moves along,
                # as both do across a real suspend.
                self._mono_offset_ns += round(seconds * _NS_PER_S)
        else:
            with self._lock:
                self._wall_at_zero += seconds
        self.jumps.append((seconds, monotonic))

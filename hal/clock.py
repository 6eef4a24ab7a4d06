"""Clocks: what drivers use for delays and deadlines, so tests can own time.

Runtime-neutral. The interface is MicroPython's ``time`` tick API plus a wall clock:
``ticks_ms()``, ``ticks_diff(a, b)``, ``ticks_add(t, delta)``, ``sleep_ms(ms)`` and ``time()``
(seconds since the epoch, for timestamps only). Ticks wrap like MicroPython's (2**30 ms), so a
deadline is always computed with ``ticks_diff`` and never by subtracting ticks.
"""

import time as _time

TICKS_PERIOD = 1 << 30
_TICKS_MAX = TICKS_PERIOD - 1
_TICKS_HALF = TICKS_PERIOD // 2


def ticks_diff(end, start):
    """Signed difference ``end - start`` on the wrapping tick circle (valid within half a period)."""
    return ((end - start + _TICKS_HALF) & _TICKS_MAX) - _TICKS_HALF


def ticks_add(ticks, delta):
    """``ticks + delta`` wrapped onto the tick circle."""
    return (ticks + delta) & _TICKS_MAX


class SystemClock:
    """The machine's own clock: ``time.ticks_ms`` on MicroPython, ``time.monotonic_ns`` on CPython."""

    def __init__(self):
        self._native = hasattr(_time, "ticks_ms")

    def ticks_ms(self):
        if self._native:
            return _time.ticks_ms() & _TICKS_MAX
        return (_time.monotonic_ns() // 1000000) & _TICKS_MAX

    def ticks_diff(self, end, start):
        return ticks_diff(end, start)

    def ticks_add(self, ticks, delta):
        return ticks_add(ticks, delta)

    def sleep_ms(self, ms):
        if ms <= 0:
            return
        if self._native:
            _time.sleep_ms(ms)
        else:
            _time.sleep(ms / 1000)

    def time(self):
        return _time.time()


class ManualClock:
    """A clock that only moves when told to: ``sleep_ms`` and ``advance`` move it, nothing else.

    Deterministic time for tests and emulators. ``on_sleep`` (if given) is called with the
    milliseconds slept, so a simulated part can finish a conversion "during" the driver's wait.
    """

    def __init__(self, start_ms=0, wall=1700000000.0, on_sleep=None):
        self._ms = start_ms
        self._wall0 = wall
        self._elapsed = 0
        self.on_sleep = on_sleep
        self.slept_ms = 0

    def ticks_ms(self):
        return self._ms & _TICKS_MAX

    def ticks_diff(self, end, start):
        return ticks_diff(end, start)

    def ticks_add(self, ticks, delta):
        return ticks_add(ticks, delta)

    def advance(self, ms):
        """Move time forward by ``ms`` milliseconds."""
        if ms < 0:
            raise ValueError(f"a clock cannot run backwards: advance({ms!r})")
        self._ms += ms
        self._elapsed += ms

    def sleep_ms(self, ms):
        if ms <= 0:
            return
        self.advance(ms)
        self.slept_ms += ms
        if self.on_sleep is not None:
            self.on_sleep(ms)

    def time(self):
        return self._wall0 + self._elapsed / 1000

"""What drivers need to run on both CPython and MicroPython.

``const``: MicroPython folds ``_NAME = const(value)`` at compile time (the compiler recognises the
name, so importing it from here keeps the optimisation); CPython gets the identity function.
``default_clock``: the clock a driver uses when none is injected.
"""

try:
    from micropython import const
except ImportError:

    def const(value):
        return value


def default_clock(clock):
    """``clock`` if given, else the machine's own clock (imported lazily to keep RAM down)."""
    if clock is not None:
        return clock
    from hal.clock import SystemClock

    return SystemClock()

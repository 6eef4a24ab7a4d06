"""The ports drivers talk to: a subset of MicroPython's ``machine`` API.

A driver written against these runs unchanged on a Pico (``machine.I2C``, ``machine.UART``,
``machine.Pin`` satisfy them as they are) and on Linux (``hal.linux`` adapts smbus2, pyserial and
gpiozero to them). These Protocols document the contract and let type checkers hold both sides
to it; drivers never import this module, since MicroPython has no ``typing``.

Faults: an adapter raises the typed errors of :mod:`hal.errors` (``NackError`` when no device
acknowledges, ``SensorTimeout`` on a bus timeout, ``BusError`` otherwise). ``machine`` raises
``OSError``; drivers map that with :func:`hal.errors.wrap_os_error`, so both look alike upstream.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from hal.clock import ManualClock, SystemClock

__all__ = ["I2C", "UART", "Clock", "ManualClock", "Pin", "SystemClock"]


@runtime_checkable
class I2C(Protocol):
    """An I2C controller (``machine.I2C``). Addresses are 7-bit."""

    def readfrom_mem_into(self, addr: int, memaddr: int, buf: bytearray, *, addrsize: int = 8) -> None:
        """Write ``memaddr`` then, after a repeated start, read ``len(buf)`` bytes into ``buf``."""

    def readfrom_mem(self, addr: int, memaddr: int, nbytes: int, *, addrsize: int = 8) -> bytes:
        """Like ``readfrom_mem_into`` but returns a new ``bytes``."""

    def writeto_mem(self, addr: int, memaddr: int, buf: bytes, *, addrsize: int = 8) -> None:
        """Write ``memaddr`` followed by ``buf`` in one transfer."""

    def readfrom_into(self, addr: int, buf: bytearray, stop: bool = True) -> None:
        """Read ``len(buf)`` bytes from the device into ``buf``."""

    def readfrom(self, addr: int, nbytes: int, stop: bool = True) -> bytes:
        """Read ``nbytes`` from the device."""

    def writeto(self, addr: int, buf: bytes, stop: bool = True) -> int:
        """Write ``buf`` to the device; returns the number of bytes acknowledged."""

    def scan(self) -> list[int]:
        """Addresses 0x08-0x77 that acknowledge, ascending."""


@runtime_checkable
class UART(Protocol):
    """A serial port (``machine.UART``) with MicroPython's timeout semantics."""

    def read(self, nbytes: int | None = None) -> bytes | None:
        """Up to ``nbytes`` bytes (all available if None); ``None`` if nothing arrived before the timeout."""

    def write(self, buf: bytes) -> int | None:
        """Queue ``buf`` for sending; returns the number of bytes written."""

    def any(self) -> int:
        """Bytes that can be read without waiting."""


@runtime_checkable
class Pin(Protocol):
    """A GPIO line (``machine.Pin``). Constants match the rp2 port."""

    IN: int
    OUT: int
    PULL_UP: int
    PULL_DOWN: int
    IRQ_FALLING: int
    IRQ_RISING: int

    def value(self, x: int | bool | None = None) -> int | None:
        """Read the level (no argument) or drive it (argument)."""

    def on(self) -> None:
        """Drive the line high."""

    def off(self) -> None:
        """Drive the line low."""

    def irq(self, handler: Callable[[Pin], None] | None = None, trigger: int = 12) -> object:
        """Call ``handler(pin)`` on the edges in ``trigger``; ``handler=None`` removes it."""


@runtime_checkable
class Clock(Protocol):
    """Time as drivers see it. See :mod:`hal.clock` for the implementations."""

    def ticks_ms(self) -> int:
        """A millisecond counter that wraps at 2**30."""

    def ticks_diff(self, end: int, start: int) -> int:
        """Signed ``end - start`` across wraparound."""

    def ticks_add(self, ticks: int, delta: int) -> int:
        """``ticks + delta`` across wraparound."""

    def sleep_ms(self, ms: int) -> None:
        """Wait ``ms`` milliseconds."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch, for timestamps only (never for deadlines)."""

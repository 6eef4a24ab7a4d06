"""Faults the emulated parts can be told to show, and the text form users type to ask for them.

Each model declares which kinds it can show (``FAULTS`` on the model class); asking a part for a kind it
cannot show is an error that lists the ones it can, never a silent no-op. A fault holds until cleared,
or for ``count`` transfers/frames when a count is given (a transient glitch that then recovers).

Text form, for ``ROOST_EMULATOR_FAULTS`` and ``roost-sim`` options (comma separated)::

    climate=nack            the part with sensor id "climate" NACKs every transfer
    climate=nack:3          ... only the next 3 transfers, then recovers
    particulates=garbage    random bytes between and inside the PMS5003's frames
    clock=jump:+3600        step the wall clock forward one hour (clock=jump:-30 steps it back)
    clock=suspend:120       move ticks and wall clock forward 120 s, as a suspend/resume does
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

FAULT_KINDS: dict[str, str] = {
    "nack": "the part does not acknowledge its address (errno 121 on Linux)",
    "unplugged": "the part is gone: no ACK, absent from a scan, a silent UART",
    "stuck": "the part repeats its last measurement forever",
    "busy": "a conversion never completes (status bit stays set, reads NACK or time out)",
    "bad_crc": "CRC or checksum bytes from the part are wrong",
    "wrong_chip": "another chip answers at the address (BME280 reads as a BMP280)",
    "garbage": "random bytes before every UART frame, a flipped bit inside every other one",
    "partial": "UART frames cut short before their checksum",
}

CLOCK_TARGET = "clock"
CLOCK_FAULTS = ("jump", "suspend")
ENVIRONMENT_VARIABLE = "ROOST_EMULATOR_FAULTS"


class FaultError(ValueError):
    """A fault request that cannot be honoured; the message says what would be accepted."""


@dataclass
class Fault:
    kind: str
    remaining: int | None = None  # None: until cleared
    hits: int = 0


@dataclass
class FaultSet:
    """The faults active on one part. Thread-safe: the demo reads while a test or user injects."""

    supported: tuple[str, ...]
    owner: str = "part"
    _active: dict[str, Fault] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def inject(self, kind: str, count: int | None = None) -> None:
        if kind not in self.supported:
            known = ", ".join(self.supported) or "none"
            raise FaultError(f"{self.owner} cannot show fault {kind!r}; it supports: {known}")
        if count is not None and count < 1:
            raise FaultError(f"fault count must be a positive number of transfers, got {count!r}")
        with self._lock:
            self._active[kind] = Fault(kind, count)

    def clear(self, kind: str | None = None) -> None:
        with self._lock:
            if kind is None:
                self._active.clear()
            else:
                self._active.pop(kind, None)

    def active(self, kind: str) -> bool:
        """Whether ``kind`` is in force, without using up a counted fault."""
        with self._lock:
            return kind in self._active

    def take(self, kind: str) -> bool:
        """Whether ``kind`` strikes now; a counted fault uses up one strike and expires at zero."""
        with self._lock:
            fault = self._active.get(kind)
            if fault is None:
                return False
            fault.hits += 1
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    del self._active[kind]
            return True

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._active)


@dataclass(frozen=True)
class FaultRequest:
    """One parsed item of the text form: ``target=kind[:argument]``."""

    target: str
    kind: str
    count: int | None = None
    seconds: float | None = None


def parse_fault_spec(text: str) -> list[FaultRequest]:
    """Parse ``"climate=nack:3, clock=jump:+3600"``; raise :class:`FaultError` saying what is wrong."""
    requests: list[FaultRequest] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        target, sep, rest = item.partition("=")
        target, rest = target.strip(), rest.strip()
        if not sep or not target or not rest:
            raise FaultError(f"fault {item!r} is not of the form SENSOR_ID=KIND[:COUNT] (e.g. climate=nack:3)")
        kind, _, argument = rest.partition(":")
        kind, argument = kind.strip(), argument.strip()
        if target == CLOCK_TARGET:
            requests.append(_parse_clock(item, kind, argument))
            continue
        if kind not in FAULT_KINDS:
            raise FaultError(f"fault {item!r}: unknown kind {kind!r}; known kinds: {', '.join(FAULT_KINDS)}")
        count = None
        if argument:
            try:
                count = int(argument)
            except ValueError:
                raise FaultError(f"fault {item!r}: the count after ':' must be a whole number") from None
            if count < 1:
                raise FaultError(f"fault {item!r}: the count must be at least 1")
        requests.append(FaultRequest(target, kind, count=count))
    return requests


def _parse_clock(item: str, kind: str, argument: str) -> FaultRequest:
    if kind not in CLOCK_FAULTS:
        raise FaultError(f"fault {item!r}: the clock takes {' or '.join(CLOCK_FAULTS)} (e.g. clock=jump:+3600)")
    try:
        seconds = float(argument.removesuffix("s"))
    except ValueError:
        raise FaultError(f"fault {item!r}: give the step in seconds, e.g. clock={kind}:+3600") from None
    if kind == "suspend" and seconds < 0:
        raise FaultError(f"fault {item!r}: a suspend only moves time forward; use clock=jump:{argument} to step back")
    return FaultRequest(CLOCK_TARGET, kind, seconds=seconds)

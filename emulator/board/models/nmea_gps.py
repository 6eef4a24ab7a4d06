"""An NMEA 0183 GPS receiver on a UART (9600 8N1), like the MediaTek/u-blox modules on Pi HATs.

Once a second it sends GGA (fix data), GSA (satellites, DOP) and RMC (recommended minimum), each
``$<talker><type>,...*hh\\r\\n`` with ``hh`` the XOR of the characters between ``$`` and ``*``. Until the
first fix (``fix_after_s`` after power-on) GGA reports quality 0 and RMC status ``V`` with empty position
fields, as a receiver that is still searching does. Time and date come from the board's wall clock, so a
clock jump shows in the sentences. ``$PMTK`` commands are acknowledged with ``$PMTK001,<cmd>,3``;
``$PMTK220,<ms>`` sets the update interval.
"""

from __future__ import annotations

import math
import time

from emulator.board.signals import Signal
from emulator.board.uart import UartPart


def nmea_checksum(body: str) -> int:
    value = 0
    for char in body.encode("ascii"):
        value ^= char
    return value


def sentence(body: str, *, corrupt: bool = False) -> bytes:
    """``$body*HH\\r\\n``; ``corrupt`` gives a wrong checksum."""
    check = nmea_checksum(body) ^ (0x5A if corrupt else 0)
    return f"${body}*{check:02X}\r\n".encode("ascii")


def _latitude(deg: float) -> tuple[str, str]:
    hemi = "N" if deg >= 0 else "S"
    deg = abs(deg)
    whole = int(deg)
    return f"{whole:02d}{(deg - whole) * 60:07.4f}", hemi


def _longitude(deg: float) -> tuple[str, str]:
    hemi = "E" if deg >= 0 else "W"
    deg = abs(deg)
    whole = int(deg)
    return f"{whole:03d}{(deg - whole) * 60:07.4f}", hemi


class NmeaGpsModel(UartPart):
    """A GPS receiver reporting a position near (``latitude``, ``longitude``) with a few metres of wander."""

    chip = "NMEA GPS"

    def __init__(self, clock, *, name: str = "", latitude: float = 47.6397, longitude: float = -122.1283,
                 altitude_m: float = 52.3, talker: str = "GP", period_s: float = 1.0, fix_after_s: float = 0.0,
                 satellites: int = 8, seed: int = 0, started: float | None = None) -> None:
        super().__init__(name, seed)
        self.clock = clock
        self.latitude = latitude
        self.longitude = longitude
        self.altitude_m = altitude_m
        self.talker = talker
        self.period_s = period_s
        self.fix_after_s = fix_after_s
        self.satellites = satellites
        # Wander of a few metres: 1e-5 degree of latitude is about 1.1 m.
        self._north = Signal(0.0, drift=2.5e-5, period_s=240.0, noise=4e-6, seed=seed * 17 + 1)
        self._east = Signal(0.0, drift=2.5e-5, period_s=310.0, noise=4e-6, seed=seed * 17 + 2)
        self._started = time.monotonic() if started is None else started
        self._next = self._started
        self._out = bytearray()
        self._rx = bytearray()
        self._last: tuple[float, float, float] | None = None
        self.commands: list[str] = []

    def has_fix(self, now: float) -> bool:
        return now - self._started >= self.fix_after_s

    def position(self) -> tuple[float, float, float]:
        if self.faults.active("stuck") and self._last is not None:
            return self._last
        t = self.clock.monotonic()
        lat = self.latitude + self._north.value(t)
        lon = self.longitude + self._east.value(t) / max(0.1, math.cos(math.radians(self.latitude)))
        self._last = (lat, lon, self.altitude_m)
        return self._last

    def sentences(self, now: float) -> list[bytes]:
        wall = self.clock.time()
        stamp = time.gmtime(wall)
        hhmmss = time.strftime("%H%M%S", stamp) + f".{int(wall * 100) % 100:02d}"
        ddmmyy = time.strftime("%d%m%y", stamp)
        t = self.talker
        corrupt = self.faults.take("bad_crc")
        if not self.has_fix(now):
            return [
                sentence(f"{t}GGA,{hhmmss},,,,,0,00,99.99,,,,,,", corrupt=corrupt),
                sentence(f"{t}GSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99", corrupt=corrupt),
                sentence(f"{t}RMC,{hhmmss},V,,,,,,,{ddmmyy},,,N", corrupt=corrupt),
            ]
        lat, lon, alt = self.position()
        la, ns = _latitude(lat)
        lo, ew = _longitude(lon)
        sats = ",".join(f"{n:02d}" for n in (2, 5, 12, 13, 15, 18, 24, 29, 25, 20, 10, 7)[: self.satellites])
        sats += "," * (12 - min(12, self.satellites))
        return [
            sentence(f"{t}GGA,{hhmmss},{la},{ns},{lo},{ew},1,{self.satellites:02d},0.92,{alt:.1f},M,-17.2,M,,",
                     corrupt=corrupt),
            sentence(f"{t}GSA,A,3,{sats},1.65,0.92,1.37", corrupt=corrupt),
            sentence(f"{t}RMC,{hhmmss},A,{la},{ns},{lo},{ew},0.02,0.00,{ddmmyy},,,A", corrupt=corrupt),
        ]

    def receive(self, data: bytes, now: float) -> None:
        self._rx += data
        while b"\n" in self._rx:
            line, _, rest = bytes(self._rx).partition(b"\n")
            self._rx = bytearray(rest)
            text = line.strip().decode("ascii", "replace")
            if not (text.startswith("$PMTK") and "*" in text):
                continue
            body, _, check = text[1:].partition("*")
            try:
                valid = int(check, 16) == nmea_checksum(body)
            except ValueError:
                valid = False
            if valid:
                command, *fields = body[4:].split(",")
                self.commands.append(body)
                if command == "220" and fields and fields[0].isdigit() and int(fields[0]) >= 100:
                    self.period_s = int(fields[0]) / 1000  # PMTK_SET_NMEA_UPDATERATE, in ms
                self._out += sentence(f"PMTK001,{command},3")

    def poll(self, now: float) -> bytes:
        if now >= self._next:
            following = self._next + self.period_s
            self._next = following if following > now else now + self.period_s
            for line in self.sentences(now):
                self._out += self.emit(line)
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self, now: float) -> float | None:
        return now if self._out else self._next

"""Plantower PMS5003 particulate sensor on its UART (9600 8N1), after the datasheet (V2.3).

Data frame, 32 bytes: ``42 4D``, frame length 28 (big-endian), thirteen big-endian words (PM1.0, PM2.5,
PM10 at "CF=1"; the same under atmospheric environment; particle counts beyond 0.3, 0.5, 1.0, 2.5, 5.0
and 10 um per 0.1 L; a reserved word), and a 16-bit checksum, the sum of all bytes before it.

Host commands, 7 bytes: ``42 4D CMD DATAH DATAL LRCH LRCL`` with LRC the sum of the first five. ``E2``
reads one frame in passive mode; ``E1 00/01`` selects passive/active mode; ``E4 00/01`` sleeps/wakes the
fan. The part answers a mode or sleep command with ``42 4D 00 04 CMD DATAL`` and a checksum, and
answers nothing to wake-up (frames resume once the fan has spun up). Commands with a bad LRC are ignored.
"""

from __future__ import annotations

import struct

from emulator.board.signals import Environment, Signal
from emulator.board.uart import UartPart

HEADER = b"\x42\x4d"
CMD_READ = 0xE2
CMD_MODE = 0xE1
CMD_SLEEP = 0xE4
RESERVED_WORD = 0x9700  # what production parts send in the reserved word (firmware version, error code 0)


def checksum(data: bytes) -> int:
    return sum(data) & 0xFFFF


def data_frame(words: list[int], *, corrupt: bool = False) -> bytes:
    body = HEADER + struct.pack(">H13H", 28, *words)
    total = checksum(body)
    if corrupt:
        total ^= 0x00FF
    return body + struct.pack(">H", total)


def command_frame(command: int, data: int = 0) -> bytes:
    """A host command (what a driver writes), for tests and tools."""
    body = HEADER + bytes((command, data >> 8 & 0xFF, data & 0xFF))
    return body + struct.pack(">H", checksum(body))


def reply_frame(command: int, data_low: int) -> bytes:
    body = HEADER + bytes((0x00, 0x04, command, data_low))
    return body + struct.pack(">H", checksum(body))


def pm_words(pm2_5_atm: float) -> list[int]:
    """Thirteen plausible data words for an atmospheric PM2.5 concentration (ug/m3)."""
    atm = (0.68 * pm2_5_atm, pm2_5_atm, 1.25 * pm2_5_atm)
    # CF=1 equals the atmospheric value in clean air and reads higher as the load grows.
    cf1 = tuple(v if v < 30 else 1.5 * v - 15 for v in atm)
    counts = (
        pm2_5_atm * 180 + 150,  # > 0.3 um per 0.1 L
        pm2_5_atm * 52 + 40,
        pm2_5_atm * 9 + 6,
        pm2_5_atm * 0.9,
        pm2_5_atm * 0.25,
        pm2_5_atm * 0.08,
    )
    words = [round(v) for v in (*cf1, *atm, *counts)] + [RESERVED_WORD]
    return [max(0, min(0xFFFF, w)) for w in words]


class Pms5003Model(UartPart):
    """A PMS5003 in active mode after power-on, sending a frame every ``period_s``."""

    chip = "PMS5003"

    def __init__(self, clock, environment: Environment, *, name: str = "", period_s: float = 1.0,
                 wake_s: float = 1.0, seed: int = 0, pm2_5: Signal | None = None) -> None:
        super().__init__(name, seed)
        self.clock = clock
        self.pm2_5 = pm2_5 or environment.pm2_5_ugm3
        self.period_s = period_s
        self.wake_s = wake_s
        self.active = True
        self.asleep = False
        self.commands: list[tuple[int, int]] = []
        self._rx = bytearray()
        self._out = bytearray()
        self._next_frame: float | None = 0.0  # the first frame is due at once (a real part: after power-up)
        self._last_words: list[int] | None = None
        self._wake_at = 0.0

    def receive(self, data: bytes, now: float) -> None:
        self._rx += data
        while True:
            start = self._rx.find(HEADER)
            if start < 0:
                del self._rx[: max(0, len(self._rx) - 1)]  # keep a trailing 0x42 that may start a header
                return
            del self._rx[:start]
            if len(self._rx) < 7:
                return
            command = bytes(self._rx[:7])
            if checksum(command[:5]) != struct.unpack(">H", command[5:])[0]:
                del self._rx[:1]  # not a command after all: resynchronise past this header byte
                continue
            del self._rx[:7]
            self._command(command[2], (command[3] << 8) | command[4], now)

    def _command(self, command: int, data: int, now: float) -> None:
        self.commands.append((command, data))
        low = data & 0xFF
        if command == CMD_SLEEP:
            if low == 0:
                self.asleep = True
                self._next_frame = None
                self._out += reply_frame(CMD_SLEEP, 0)
            elif self.asleep:
                self.asleep = False
                self._next_frame = now + self.wake_s if self.active else None
                self._wake_at = now + self.wake_s
        elif command == CMD_MODE and low in (0, 1):
            was_active, self.active = self.active, bool(low)
            self._out += reply_frame(CMD_MODE, low)
            if not self.active or self.asleep:
                self._next_frame = None
            elif not was_active:
                self._next_frame = now + self.period_s  # streaming resumes one period later
        elif command == CMD_READ and not self.active and not self.asleep and now >= self._wake_at:
            self._out += self.emit(self._frame())

    def _frame(self) -> bytes:
        if self.faults.active("stuck") and self._last_words is not None:
            words = self._last_words
        else:
            words = pm_words(self.pm2_5.value(self.clock.monotonic()))
            self._last_words = words
        return data_frame(words, corrupt=self.faults.take("bad_crc"))

    def poll(self, now: float) -> bytes:
        if self._next_frame is not None and now >= self._next_frame:
            following = self._next_frame + self.period_s
            self._next_frame = following if following > now else now + self.period_s
            self._out += self.emit(self._frame())
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self, now: float) -> float | None:
        if self._out:
            return now
        return self._next_frame

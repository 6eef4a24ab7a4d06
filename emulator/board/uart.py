"""UART parts on a pseudo-terminal: the product opens the slave path with real pyserial.

:class:`PtyUart` owns a pty pair (``os.openpty``). A thread plays the part's side on the master end: it
hands the bytes the host writes to the part model (:class:`UartPart`) and writes the part's output paced
as a real line would carry it, ten bit times per byte (start, eight data, stop) at the configured baud
rate, so a driver's timeouts and resynchronisation meet realistic timing. The slave end is put in raw
mode at once and kept open here, so the line discipline never echoes or translates bytes and the port
survives the product closing and reopening it.

The line runs in real time whatever the board's clock does: a pty is a real kernel object and pyserial's
timeouts are real. Only the *values* a part reports come from the board's clock.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import select
import threading
import time
import tty

from emulator.board.faults import FaultSet

BITS_PER_BYTE = 10  # 8N1: start bit, 8 data bits, stop bit
log = logging.getLogger(__name__)


class UartPart:
    """Base of the UART part models: a byte stream in each direction, plus the faults they share.

    ``receive(data, now)`` gets what the host wrote; ``poll(now)`` returns bytes the part starts sending
    now; ``next_event(now)`` says when ``poll`` has something again (``None``: only after input).
    ``now`` is the line's real-time clock in seconds. Frames go through :meth:`emit`, which applies the
    transmission faults (garbage, partial frames) so every part shows them the same way.
    """

    FAULTS: tuple[str, ...] = ("unplugged", "stuck", "bad_crc", "garbage", "partial")
    chip = "uart part"

    def __init__(self, name: str = "", seed: int = 0) -> None:
        self.name = name or self.chip
        self.faults = FaultSet(self.FAULTS, owner=f"{self.chip} {self.name!r}")
        self._fault_rng = random.Random(seed * 7 + 3)
        self.frames_sent = 0
        self.bytes_received = 0
        self._garbled = 0

    @property
    def present(self) -> bool:
        return not self.faults.active("unplugged")

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from the host."""

    def poll(self, now: float) -> bytes:
        return b""

    def next_event(self, now: float) -> float | None:
        return None

    def emit(self, frame: bytes) -> bytes:
        """A frame as it reaches the wire, after the transmission faults in force."""
        self.frames_sent += 1
        rng = self._fault_rng
        out = bytearray(frame)
        if self.faults.take("partial") and len(out) > 2:
            del out[rng.randrange(1, len(out) - 1):]
        if self.faults.take("garbage"):
            # Noise on the line: junk before every frame, and every other frame hit inside as well,
            # so a driver that resynchronises still gets good frames through.
            self._garbled += 1
            if out and self._garbled % 2 == 0:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            out[0:0] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        return bytes(out)


class PtyUart:
    """A serial line between the product (slave path) and a :class:`UartPart` (master end)."""

    def __init__(self, part: UartPart, baudrate: int = 9600, *, paced: bool = True, name: str = "") -> None:
        if baudrate <= 0:
            raise ValueError(f"baud rate must be positive, got {baudrate!r}")
        self.part = part
        self.baudrate = baudrate
        self.paced = paced
        self.name = name or part.name
        self.byte_time = BITS_PER_BYTE / baudrate
        self.bytes_written = 0
        self.bytes_dropped = 0
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._tx = bytearray()
        self._tx_started = 0.0
        self._tx_sent = 0
        self._wake_r, self._wake_w = os.pipe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"pty-uart {self.name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<PtyUart {self.name} {self.path} {self.baudrate} baud>"

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyUart:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wake(self) -> None:
        """Make the line thread look at the part now (after a fault or a setting changed)."""
        try:
            os.write(self._wake_w, b"w")
        except OSError:
            pass

    # -- the line thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._step():
                    return
            except Exception:  # a model bug must not kill the line silently: log it and go on
                log.exception("UART %s: the part model failed; the line keeps running", self.name)
                self._tx.clear()
                time.sleep(0.05)

    def _step(self) -> bool:
        """One turn of the line: wait for input or the next due byte, then move bytes both ways."""
        now = time.monotonic()
        deadline = self._next_deadline(now)
        timeout = None if deadline is None else max(0.0, deadline - now)
        try:
            readable, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
        except (OSError, ValueError):
            return False
        if self._stop.is_set():
            return False
        now = time.monotonic()
        if self._wake_r in readable:
            os.read(self._wake_r, 64)
        if self._master in readable:
            self._read_host(now)
        if self.part.present:
            out = self.part.poll(now)
            if out:
                self._queue(out, now)
        else:
            self._tx.clear()  # an unplugged part stops mid-frame
        self._transmit(time.monotonic())
        return True

    def _next_deadline(self, now: float) -> float | None:
        candidates = []
        if self._tx:
            candidates.append(self._tx_started + (self._tx_sent + 1) * self.byte_time if self.paced else now)
        if self.part.present:
            event = self.part.next_event(now)
            if event is not None:
                candidates.append(event)
        return min(candidates) if candidates else None

    def _read_host(self, now: float) -> None:
        try:
            data = os.read(self._master, 4096)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EIO):
                return  # EIO: no process has the slave open at this instant
            raise
        if data and self.part.present:
            self.part.bytes_received += len(data)
            self.part.receive(data, now)

    def _queue(self, data: bytes, now: float) -> None:
        if not self._tx:
            self._tx_started = now
            self._tx_sent = 0
        self._tx += data

    def _transmit(self, now: float) -> None:
        if not self._tx:
            return
        if self.paced:
            # A byte reaches the receiver when its stop bit ends.
            done = int((now - self._tx_started) / self.byte_time)
            count = min(len(self._tx), max(0, done - self._tx_sent))
        else:
            count = len(self._tx)
        if count <= 0:
            return
        chunk = bytes(self._tx[:count])
        try:
            written = os.write(self._master, chunk)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EIO):
                raise
            written = 0
        # Nobody reading and the pty buffer full: the bytes are lost, as on a real line.
        self.bytes_written += written
        self.bytes_dropped += count - written
        del self._tx[:count]
        self._tx_sent += count
        if not self._tx:
            self._tx_sent = 0

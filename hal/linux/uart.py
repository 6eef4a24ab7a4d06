"""The UART port over pyserial, with MicroPython's timeout semantics and deadlines of its own.

pyserial's ``inter_byte_timeout`` does not bound a read on POSIX (a steady trickle of bytes keeps
it going), so the port is put in non-blocking mode and every wait here is a ``select`` with a
deadline computed from ``timeout_ms`` (first byte) and ``timeout_char_ms`` (between bytes), like
``machine.UART(timeout=..., timeout_char=...)``. A read always ends: at ``nbytes``, when the line
goes quiet, or at the overall deadline, whichever comes first.
"""

from __future__ import annotations

import select
import time

import serial

from hal.errors import BusError

_READ_ALL_LIMIT = 4096  # read() without nbytes returns at most this much at once
# read() without nbytes on a line that never goes quiet ends after this many character timeouts.
_READ_ALL_SPAN = 64


class SerialUART:
    """``machine.UART`` on an open ``serial.Serial``.

    ``timeout_ms`` is how long ``read`` waits for the first byte (0: return at once, like the
    rp2 default); ``timeout_char_ms`` how long it waits for each following byte (default: three
    character times at the port's baud rate, at least 2 ms).
    """

    def __init__(self, port: serial.Serial, *, timeout_ms: int = 0, timeout_char_ms: int | None = None,
                 label: str | None = None) -> None:
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms must be 0 or more, got {timeout_ms!r}")
        self.port = port
        self.label = label or port.port or "uart"
        # Non-blocking reads: the waits below are ours, never pyserial's.
        if port.timeout != 0:
            port.timeout = 0
        self.timeout_ms = timeout_ms
        if timeout_char_ms is None:
            char_ms = 10_000 / (port.baudrate or 9600)  # 10 bits per byte on the wire (8N1)
            timeout_char_ms = max(2, int(3 * char_ms + 0.999))
        if timeout_char_ms < 0:
            raise ValueError(f"timeout_char_ms must be 0 or more, got {timeout_char_ms!r}")
        self.timeout_char_ms = timeout_char_ms

    @property
    def baudrate(self) -> int:
        return self.port.baudrate

    def any(self) -> int:
        try:
            return self.port.in_waiting
        except (OSError, serial.SerialException) as exc:
            raise self._fault("cannot query", exc) from exc

    def _wait_readable(self, seconds: float) -> bool:
        if seconds <= 0:
            return self.any() > 0
        try:
            ready, _, _ = select.select([self.port.fileno()], [], [], seconds)
        except (OSError, ValueError) as exc:
            raise self._fault("cannot wait on", exc) from exc
        return bool(ready)

    def read(self, nbytes: int | None = None) -> bytes | None:
        """Up to ``nbytes`` bytes, or everything that arrives until the line goes quiet if None.

        Returns None when nothing arrived within ``timeout_ms``, as ``machine.UART.read`` does.
        """
        if nbytes is not None and nbytes < 0:
            raise ValueError(f"nbytes must be 0 or more, got {nbytes!r}")
        if nbytes == 0:
            return b""
        want = nbytes if nbytes is not None else _READ_ALL_LIMIT
        span = nbytes if nbytes is not None else _READ_ALL_SPAN
        start = time.monotonic()
        if not self._wait_readable(self.timeout_ms / 1000):
            return None
        # The overall bound: a trickle may stretch a read to one char timeout per byte wanted, no more;
        # read() of "everything" on a line that never goes quiet stops after _READ_ALL_SPAN of them.
        deadline = start + (self.timeout_ms + span * max(self.timeout_char_ms, 1)) / 1000
        got = bytearray()
        while len(got) < want:
            try:
                chunk = self.port.read(min(want - len(got), max(self.port.in_waiting, 1)))
            except (OSError, serial.SerialException) as exc:
                raise self._fault("cannot read from", exc) from exc
            if chunk:
                got += chunk
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._wait_readable(min(self.timeout_char_ms / 1000, remaining)):
                break
        return bytes(got) if got else None

    def readinto(self, buf: bytearray | memoryview, nbytes: int | None = None) -> int | None:
        """Read into ``buf`` (at most ``nbytes``); the count, or None on timeout."""
        data = self.read(len(buf) if nbytes is None else min(nbytes, len(buf)))
        if data is None:
            return None
        buf[: len(data)] = data
        return len(data)

    def readline(self) -> bytes | None:
        """Bytes up to and including ``\\n``, or what arrived before the line went quiet."""
        line = bytearray()
        while True:
            byte = self.read(1)
            if byte is None:
                return bytes(line) if line else None
            line += byte
            if byte == b"\n" or len(line) >= _READ_ALL_LIMIT:
                return bytes(line)

    def write(self, buf: bytes | bytearray | memoryview) -> int:
        try:
            written = self.port.write(bytes(buf))
        except (OSError, serial.SerialException) as exc:
            raise self._fault("cannot write to", exc) from exc
        return len(buf) if written is None else written

    def flush(self) -> None:
        """Wait until everything written has left the port."""
        try:
            self.port.flush()
        except (OSError, serial.SerialException) as exc:
            raise self._fault("cannot flush", exc) from exc

    def _fault(self, what: str, exc: Exception) -> BusError:
        return BusError(f"{what} UART {self.label}: {exc}; is the device still there and not used by another program?")

    def close(self) -> None:
        self.port.close()

    def __repr__(self) -> str:
        return f"<SerialUART {self.label} {self.baudrate} baud>"

"""SerialUART over a real pty with real pyserial: machine.UART semantics and deadlines that hold."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest
import serial

from hal.board import load_board
from hal.errors import BusError
from hal.linux.platform import LinuxPlatform
from hal.linux.uart import SerialUART
from hal.ports import UART


class Pty:
    """A pty pair: the test writes to ``master``; pyserial opens ``path``."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def receive(self) -> bytes:
        import select

        out = b""
        while select.select([self.master], [], [], 0.5)[0]:
            out += os.read(self.master, 4096)
            if out.endswith(b"\n") or len(out) >= 7:
                break
        return out

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


def open_uart(pty: Pty, **kwargs) -> SerialUART:
    port = serial.Serial(pty.path, baudrate=9600, timeout=1.0)
    # raw mode on the master side too, so the line discipline passes bytes as they are
    return SerialUART(port, **kwargs)


def test_it_is_a_uart_port_and_non_blocking(pty: Pty) -> None:
    uart = open_uart(pty)
    assert isinstance(uart, UART)
    assert uart.port.timeout == 0  # the adapter's deadlines replace pyserial's
    assert uart.timeout_char_ms == 4  # three characters at 9600 baud (1.04 ms each), rounded up
    uart.close()


def test_read_with_nothing_arriving_returns_none(pty: Pty) -> None:
    uart = open_uart(pty, timeout_ms=30)
    assert uart.any() == 0
    assert uart.read(8) is None
    assert uart.read() is None
    assert uart.readinto(bytearray(4)) is None
    assert uart.readline() is None
    uart.close()


def test_read_returns_what_arrived(pty: Pty) -> None:
    uart = open_uart(pty, timeout_ms=200, timeout_char_ms=50)
    pty.send(b"\x42\x4d\x00\x1c" + b"x" * 28)
    assert uart.read(4) == b"\x42\x4d\x00\x1c"
    assert uart.any() == 28
    buf = bytearray(10)
    assert uart.readinto(buf) == 10 and bytes(buf) == b"x" * 10
    assert uart.read() == b"x" * 18
    assert uart.read(0) == b""
    uart.close()


def test_read_stops_at_a_gap_longer_than_the_char_timeout(pty: Pty) -> None:
    uart = open_uart(pty, timeout_ms=500, timeout_char_ms=20)
    pty.send(b"first")
    release = threading.Event()

    def later() -> None:
        release.wait(5)
        pty.send(b"second")

    writer = threading.Thread(target=later)
    writer.start()
    try:
        assert uart.read(100) == b"first"  # the gap ends the read; the rest is not waited for
    finally:
        release.set()
        writer.join()
    uart.close()


def test_read_of_everything_ends_on_a_line_that_never_goes_quiet(pty: Pty) -> None:
    # pyserial's inter_byte_timeout would keep reading this trickle forever on POSIX.
    uart = open_uart(pty, timeout_ms=100, timeout_char_ms=5)
    stop = threading.Event()
    sent = []

    def trickle() -> None:
        while not stop.is_set():
            pty.send(b"$")
            sent.append(1)
            stop.wait(0.001)

    pty.send(b"$")  # the first byte is there before the read starts, however loaded the machine
    writer = threading.Thread(target=trickle)
    writer.start()
    try:
        data = uart.read()
        assert data is not None and 0 < len(data) < 4096
        assert set(data) == {ord("$")}
    finally:
        stop.set()
        writer.join()
    assert len(sent) + 1 >= len(data)
    uart.close()


def test_readline(pty: Pty) -> None:
    uart = open_uart(pty, timeout_ms=200, timeout_char_ms=50)
    pty.send(b"$GPGGA,1*00\r\n$GPRMC")
    assert uart.readline() == b"$GPGGA,1*00\r\n"
    assert uart.readline() == b"$GPRMC"
    uart.close()


def test_write_reaches_the_other_end(pty: Pty) -> None:
    uart = open_uart(pty)
    assert uart.write(bytearray(b"\x42\x4d\xe2\x00\x00\x01\x71")) == 7
    uart.flush()
    assert pty.receive() == b"\x42\x4d\xe2\x00\x00\x01\x71"
    uart.close()


def test_a_vanished_device_is_a_bus_error(pty: Pty) -> None:
    uart = open_uart(pty, timeout_ms=50)
    os.close(pty.master)  # the other end hangs up: reads now fail with EIO
    with pytest.raises(BusError, match="UART"):
        uart.read(4)
    uart.close()


def test_bad_timeouts_are_refused(pty: Pty) -> None:
    port = serial.Serial(pty.path, baudrate=9600, timeout=0)
    with pytest.raises(ValueError, match="timeout_ms"):
        SerialUART(port, timeout_ms=-1)
    with pytest.raises(ValueError, match="timeout_char_ms"):
        SerialUART(port, timeout_char_ms=-5)
    with pytest.raises(ValueError, match="nbytes"):
        SerialUART(port).read(-1)
    port.close()


class PtyPlatform(LinuxPlatform):
    """The linux platform with its serial_device hook pointed at a pty, as the emulator does."""

    def __init__(self, board, pty: Pty, **options) -> None:
        self.pty = pty
        super().__init__(board, **options)

    def serial_device(self, bus) -> str:
        return self.pty.path


def test_platform_opens_the_uart_with_the_profile_baud_rate(pty: Pty) -> None:
    with PtyPlatform(load_board("rpi-4b"), pty, uart_timeout_ms=100) as platform:
        uart = platform.uart("serial0")
        assert isinstance(uart, SerialUART)
        assert uart.baudrate == 9600 and uart.timeout_ms == 100
        assert uart.label == "serial0 (/dev/serial0)"
        pty.send(b"ok")
        assert uart.read(2) == b"ok"
        # exclusive: a second program (or a second open) cannot share the port
        with pytest.raises(serial.SerialException):
            serial.Serial(pty.path, exclusive=True)


def test_pms5003_driver_over_a_pty(pty: Pty) -> None:
    from hal.clock import SystemClock
    from hal.drivers.pms5003 import PMS5003

    words = [5, 8, 10, 5, 8, 10, 825, 243, 59, 6, 1, 1, 0x9700]
    body = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        body += w.to_bytes(2, "big")
    frame = bytes(body) + sum(body).to_bytes(2, "big")
    uart = open_uart(pty)
    pty.send(b"\x00noise" + frame)
    sensor = PMS5003(uart, clock=SystemClock(), timeout_ms=2500)
    assert sensor.read()["pm2_5"] == 8
    assert pty.receive() == b"\x42\x4d\xe1\x00\x01\x01\x71"  # the driver set active mode first
    uart.close()

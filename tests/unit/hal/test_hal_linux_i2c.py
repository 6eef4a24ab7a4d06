"""SMBusI2C: the machine.I2C verbs over real smbus2, down to the i2c-dev ioctls.

The transfers go through smbus2's own ioctl code into the board emulator's i2c-dev decoder, with
a register-file part written here to watch START/STOP boundaries. Only errnos that no emulated
part can produce (ETIMEDOUT, ENXIO) come from a stand-in that raises them.
"""

from __future__ import annotations

import errno

import pytest
import smbus2

from emulator.board.i2c_bus import I2CBus, I2CTarget, Nack
from emulator.board.i2c_ioctl import BCM2835_FUNCS, I2C_FUNC_SMBUS_QUICK
from emulator.board.smbus import EmulatedSMBus
from hal.drivers.bme280 import BME280
from hal.errors import BusError, NackError, SensorTimeout
from hal.linux.i2c import SMBusI2C
from hal.ports import I2C


class RegisterFile(I2CTarget):
    """256 registers with an auto-incrementing pointer; logs every bus event."""

    chip = "register file"

    def __init__(self, address: int, *, wide: bool = False) -> None:
        super().__init__(address)
        self.regs = bytearray(range(256))
        self.pointer = 0
        self.wide = wide  # 16-bit register addresses (EEPROM style)
        self.events: list[tuple] = []

    def on_start(self, read: bool) -> None:
        self.events.append(("start", "read" if read else "write"))

    def on_write(self, data: bytes) -> None:
        self.events.append(("write", bytes(data)))
        width = 2 if self.wide else 1
        self.pointer = int.from_bytes(data[:width], "big") & 0xFF
        for offset, byte in enumerate(data[width:]):
            self.regs[(self.pointer + offset) & 0xFF] = byte

    def on_read(self, length: int) -> bytes:
        self.events.append(("read", length))
        out = bytes(self.regs[(self.pointer + i) & 0xFF] for i in range(length))
        self.pointer = (self.pointer + length) & 0xFF
        return out

    def on_stop(self) -> None:
        self.events.append(("stop",))


class BusyUntilRead(RegisterFile):
    """NACKs its read header a few times, as a part still converting does."""

    def __init__(self, address: int, nacks: int) -> None:
        super().__init__(address)
        self.nacks = nacks

    def on_start(self, read: bool) -> None:
        if read and self.nacks:
            self.nacks -= 1
            raise Nack(self.address, "busy")
        super().on_start(read)


@pytest.fixture
def bus() -> I2CBus:
    return I2CBus("i2c1")


def adapter(bus: I2CBus, **kwargs) -> SMBusI2C:
    return SMBusI2C(EmulatedSMBus(bus, **kwargs), label="i2c1 (/dev/i2c-1)")


def test_it_is_an_i2c_port(bus: I2CBus) -> None:
    assert isinstance(adapter(bus), I2C)


def test_register_read_is_one_combined_transfer(bus: I2CBus) -> None:
    part = bus.attach(RegisterFile(0x40))
    i2c = adapter(bus)
    buf = bytearray(3)
    i2c.readfrom_mem_into(0x40, 0x10, buf)
    assert buf == bytes([0x10, 0x11, 0x12])
    # write pointer, repeated START, read, one STOP: what machine.I2C.readfrom_mem_into puts on the wire
    assert part.events == [("start", "write"), ("write", b"\x10"), ("start", "read"), ("read", 3), ("stop",)]
    assert i2c.readfrom_mem(0x40, 0xFE, 2) == b"\xfe\xff"


def test_register_write_and_raw_transfers(bus: I2CBus) -> None:
    part = bus.attach(RegisterFile(0x40))
    i2c = adapter(bus)
    i2c.writeto_mem(0x40, 0x20, b"\xaa\xbb")
    assert part.regs[0x20:0x22] == b"\xaa\xbb"
    assert i2c.writeto(0x40, b"\x20") == 1
    assert i2c.readfrom(0x40, 2) == b"\xaa\xbb"
    buf = memoryview(bytearray(1))
    i2c.readfrom_into(0x40, buf)
    assert bytes(buf) == b"\x22"


def test_sixteen_bit_register_addresses(bus: I2CBus) -> None:
    part = bus.attach(RegisterFile(0x50, wide=True))
    i2c = adapter(bus)
    assert i2c.readfrom_mem(0x50, 0x0105, 1, addrsize=16) == b"\x05"
    assert ("write", b"\x01\x05") in part.events
    with pytest.raises(ValueError, match="does not fit in 8 bits"):
        i2c.readfrom_mem(0x50, 0x100, 1)
    with pytest.raises(ValueError, match="addrsize must be 8 or 16"):
        i2c.readfrom_mem(0x50, 0, 1, addrsize=12)
    with pytest.raises(ValueError, match="7-bit"):
        i2c.readfrom(0x80, 1)


def test_missing_part_is_a_nack_error(bus: I2CBus) -> None:
    i2c = adapter(bus)
    with pytest.raises(NackError, match="no ACK from 0x76 on i2c1") as caught:
        i2c.readfrom_mem(0x76, 0xD0, 1)
    assert caught.value.address == 0x76 and caught.value.kind == "nack"
    with pytest.raises(NackError):
        i2c.writeto(0x76, b"\x00")


def test_scan_probes_like_i2cdetect(bus: I2CBus) -> None:
    parts = [bus.attach(RegisterFile(a)) for a in (0x1C, 0x44, 0x50, 0x76)]
    assert adapter(bus).scan() == [0x1C, 0x44, 0x50, 0x76]
    # EEPROM range: read byte; elsewhere: quick write
    assert parts[2].events[0] == ("start", "read")
    assert parts[0].events[0] == ("start", "write") and ("read", 1) not in parts[0].events


def test_scan_without_quick_write_reads_instead(bus: I2CBus) -> None:
    part = bus.attach(RegisterFile(0x44))
    assert adapter(bus, funcs=BCM2835_FUNCS & ~I2C_FUNC_SMBUS_QUICK).scan() == [0x44]
    assert part.events[0] == ("start", "read")


def test_scan_counts_addresses_a_kernel_driver_owns(bus: I2CBus) -> None:
    bus.attach(RegisterFile(0x44))
    assert adapter(bus, busy_addresses=frozenset({0x68})).scan() == [0x44, 0x68]


def test_a_driver_retries_a_busy_part_through_the_adapter(bus: I2CBus) -> None:
    from hal.clock import ManualClock
    from hal.drivers.sht4x import SHT4x, crc8

    part = bus.attach(BusyUntilRead(0x44, nacks=3))
    word = bytes([0x66, 0x66]) + bytes([crc8(b"\x66\x66")])
    part.regs[0xFD:0xFD + 3] = word
    part.regs[0x00:0x03] = word  # the pointer wraps from 0xFE to 0x00
    sensor = SHT4x(adapter(bus), clock=ManualClock())
    assert sensor.read_fixed()[0] == 25000
    assert part.nacks == 0


class ErrnoSMBus(smbus2.SMBus):
    """Raises one errno from every transfer: conditions no emulated part produces."""

    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def i2c_rdwr(self, *msgs) -> None:
        raise OSError(self.code, errno.errorcode.get(self.code, "?"))

    def write_quick(self, addr, force=None) -> None:
        raise OSError(self.code, "quick")

    read_byte = write_quick


@pytest.mark.parametrize(("code", "fault", "words"), [
    (errno.EREMOTEIO, NackError, "no ACK"),
    (errno.ENXIO, NackError, "no ACK"),
    (errno.ETIMEDOUT, SensorTimeout, "holds SCL low"),
    (errno.EOPNOTSUPP, BusError, "does not support"),
    (errno.EIO, BusError, "errno 5"),
])
def test_errnos_become_typed_faults(code: int, fault: type, words: str) -> None:
    i2c = SMBusI2C(ErrnoSMBus(code), label="i2c1")
    with pytest.raises(fault, match=words):
        i2c.readfrom_mem(0x40, 0, 1)


def test_scan_stops_on_a_broken_bus_but_not_on_nacks() -> None:
    assert SMBusI2C(ErrnoSMBus(errno.EREMOTEIO)).scan() == []
    assert SMBusI2C(ErrnoSMBus(errno.ETIMEDOUT)).scan() == []
    with pytest.raises(BusError):
        SMBusI2C(ErrnoSMBus(errno.EIO)).scan()


def test_bme280_through_smbus2_matches_the_datasheet(bus: I2CBus) -> None:
    """The whole path: driver -> adapter -> smbus2 -> ioctl, on a register file holding the datasheet example."""
    import struct

    from hal.clock import ManualClock

    part = bus.attach(RegisterFile(0x76))
    part.regs[0xD0] = 0x60
    part.regs[0xF3] = 0x00
    calib = struct.pack("<HhhHhhhhhhhh", 27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600,
                        6000)
    part.regs[0x88:0x88 + 24] = calib
    part.regs[0xA1] = 75
    part.regs[0xE1:0xE8] = struct.pack("<hB", 362, 0) + bytes([0x13, 0x29, 0x03]) + struct.pack("<b", 30)
    adc_p, adc_t, adc_h = 415148, 519888, 30000
    part.regs[0xF7:0xFF] = bytes([adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0xF) << 4,
                                  adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0xF) << 4, adc_h >> 8, adc_h & 0xFF])
    sensor = BME280(adapter(bus), clock=ManualClock())
    assert sensor.identify() == "BME280"
    values = sensor.read()
    assert values["temperature"] == 25.08
    assert values["pressure"] == 100653.25390625

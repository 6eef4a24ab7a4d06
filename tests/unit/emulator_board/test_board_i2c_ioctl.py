"""The i2c-dev ioctl decoder, driven by smbus2's own code: what reaches the wire for each call."""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import termios

import pytest
import smbus2
from smbus2 import i2c_msg

from emulator.board import i2c_ioctl
from emulator.board.i2c_bus import I2CBus, I2CTarget, Message, Nack
from emulator.board.i2c_ioctl import BCM2835_FUNCS, I2CDevFile, routed_ioctl, smbus_pec
from emulator.board.smbus import EmulatedSMBus


class RegisterFile(I2CTarget):
    """A 256-byte register file with an auto-incrementing pointer, recording every message."""

    chip = "register file"

    def __init__(self, address: int, *, pec: bool = False) -> None:
        super().__init__(address)
        self.regs = bytearray(range(256))
        self.pointer = 0
        self.log: list[tuple[str, bytes | int]] = []
        self.stops = 0
        self.pec = pec
        self._wire = bytearray()

    def on_start(self, read: bool) -> None:
        self._wire += bytes([(self.address << 1) | int(read)])

    def on_write(self, data: bytes) -> None:
        self.log.append(("w", bytes(data)))
        self._wire += data
        self.pointer = data[0]
        for i, byte in enumerate(data[1:]):
            self.regs[(self.pointer + i) & 0xFF] = byte

    def on_read(self, length: int) -> bytes:
        self.log.append(("r", length))
        count = length - 1 if self.pec else length
        out = bytes(self.regs[(self.pointer + i) & 0xFF] for i in range(count))
        self.pointer = (self.pointer + count) & 0xFF
        if self.pec:
            self._wire += out
            out += bytes([smbus_pec(bytes(self._wire))])
        return out

    def on_stop(self) -> None:
        self.stops += 1
        self._wire.clear()


@pytest.fixture
def bus() -> I2CBus:
    bus = I2CBus("i2c-test")
    bus.attach(RegisterFile(0x50))
    return bus


@pytest.fixture
def smbus(bus: I2CBus):
    with EmulatedSMBus(bus) as handle:
        yield handle


def part(bus: I2CBus, address: int = 0x50) -> RegisterFile:
    target = bus.target(address)
    assert isinstance(target, RegisterFile)
    return target


def test_functionality_is_the_raspberry_pis(smbus: EmulatedSMBus) -> None:
    funcs = smbus2.I2cFunc(smbus.funcs)
    assert funcs & smbus2.I2cFunc.I2C
    assert funcs & smbus2.I2cFunc.SMBUS_READ_I2C_BLOCK
    assert funcs & smbus2.I2cFunc.SMBUS_PEC
    assert not funcs & smbus2.I2cFunc.SMBUS_READ_BLOCK_DATA
    assert not funcs & smbus2.I2cFunc.SMBUS_BLOCK_PROC_CALL
    assert smbus.funcs == BCM2835_FUNCS == 0x0EFF000D


@pytest.mark.parametrize("ctype", [ctypes.c_uint32, ctypes.c_ulong], ids=["smbus2-0.4", "smbus2-0.5+"])
def test_funcs_written_in_the_callers_width(bus: I2CBus, ctype) -> None:
    devfile = I2CDevFile(bus)
    word = ctype(0xFFFFFFFF if ctype is ctypes.c_uint32 else 0)
    assert devfile.ioctl(i2c_ioctl.I2C_FUNCS, word) == 0
    assert word.value == BCM2835_FUNCS


def test_byte_data_is_a_combined_write_then_read(smbus: EmulatedSMBus, bus: I2CBus) -> None:
    assert smbus.read_byte_data(0x50, 0x10) == 0x10
    assert part(bus).log == [("w", b"\x10"), ("r", 1)]
    assert part(bus).stops == 1  # one STOP for the whole transfer


def test_each_smbus_size_becomes_the_kernels_messages(smbus: EmulatedSMBus, bus: I2CBus) -> None:
    target = part(bus)
    smbus.write_byte_data(0x50, 0x20, 0xAB)
    smbus.write_word_data(0x50, 0x30, 0x1234)
    assert smbus.read_word_data(0x50, 0x30) == 0x1234  # little-endian, as SMBus words are
    smbus.write_quick(0x50)
    smbus.write_byte(0x50, 0x40)
    assert smbus.read_byte(0x50) == 0x40
    assert smbus.process_call(0x50, 0x60, 0xBEEF) == 0xBEEF
    smbus.write_block_data(0x50, 0x70, [1, 2, 3])
    smbus.write_i2c_block_data(0x50, 0x80, [9, 8, 7, 6])
    assert smbus.read_i2c_block_data(0x50, 0x80, 4) == [9, 8, 7, 6]
    assert target.log == [
        ("w", b"\x20\xab"),
        ("w", b"\x30\x34\x12"),
        ("w", b"\x30"), ("r", 2),
        # write_quick: an address-only message, no data phase
        ("w", b"\x40"),
        ("r", 1),
        ("w", b"\x60\xef\xbe"), ("r", 2),
        ("w", b"\x70\x03\x01\x02\x03"),  # SMBus block write carries its count
        ("w", b"\x80\x09\x08\x07\x06"),  # I2C block write does not
        ("w", b"\x80"), ("r", 4),
    ]


def test_block_read_is_refused_like_on_a_pi(smbus: EmulatedSMBus) -> None:
    with pytest.raises(OSError) as caught:
        smbus.read_block_data(0x50, 0x00)
    assert caught.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as caught:
        smbus.block_process_call(0x50, 0x00, [1, 2])
    assert caught.value.errno == errno.EOPNOTSUPP


def test_missing_address_nacks_with_remote_io_error(smbus: EmulatedSMBus) -> None:
    with pytest.raises(OSError) as caught:
        smbus.read_byte_data(0x51, 0)
    assert caught.value.errno == errno.EREMOTEIO == 121


def test_rdwr_transfers_and_returns_message_count(smbus: EmulatedSMBus, bus: I2CBus) -> None:
    write = i2c_msg.write(0x50, [0x05, 0xAA, 0xBB])
    reg = i2c_msg.write(0x50, [0x05])
    read = i2c_msg.read(0x50, 2)
    smbus.i2c_rdwr(write)
    smbus.i2c_rdwr(reg, read)
    assert list(read) == [0xAA, 0xBB]
    data = i2c_ioctl.KernelRdwrIoctlData()
    assert routed_ioctl(smbus.fd, i2c_ioctl.I2C_RDWR, data) == 0  # zero messages: nothing happens


def test_rdwr_nack_mid_transfer_still_ends_with_a_stop(smbus: EmulatedSMBus, bus: I2CBus) -> None:
    with pytest.raises(OSError) as caught:
        smbus.i2c_rdwr(i2c_msg.write(0x50, [1]), i2c_msg.read(0x52, 1))
    assert caught.value.errno == errno.EREMOTEIO
    assert part(bus).stops == 1


def test_rdwr_read_before_the_last_message_is_refused(smbus: EmulatedSMBus) -> None:
    with pytest.raises(OSError) as caught:
        smbus.i2c_rdwr(i2c_msg.read(0x50, 1), i2c_msg.write(0x50, [1]))
    assert caught.value.errno == errno.EOPNOTSUPP


def test_rdwr_limits_and_flags(smbus: EmulatedSMBus) -> None:
    many = [i2c_msg.write(0x50, [0]) for _ in range(43)]
    with pytest.raises(OSError) as caught:
        smbus.i2c_rdwr(*many)
    assert caught.value.errno == errno.EINVAL
    ten_bit = i2c_msg.write(0x50, [0])
    ten_bit.flags = i2c_ioctl.I2C_M_TEN
    with pytest.raises(OSError) as caught:
        smbus.i2c_rdwr(ten_bit)
    assert caught.value.errno == errno.EOPNOTSUPP


def test_slave_address_checks(bus: I2CBus) -> None:
    with EmulatedSMBus(bus, busy_addresses=frozenset({0x50})) as smbus:
        with pytest.raises(OSError) as caught:
            smbus.read_byte_data(0x50, 0)
        assert caught.value.errno == errno.EBUSY
        assert smbus.read_byte_data(0x50, 7, force=True) == 7  # I2C_SLAVE_FORCE takes it anyway
        with pytest.raises(OSError) as caught:
            routed_ioctl(smbus.fd, i2c_ioctl.I2C_SLAVE, 0x80)
        assert caught.value.errno == errno.EINVAL


def test_pec_write_carries_the_crc_and_a_read_without_one_fails(smbus: EmulatedSMBus, bus: I2CBus) -> None:
    smbus.enable_pec(True)
    smbus.write_byte_data(0x50, 0x22, 0x33)
    sent = part(bus).log[-1][1]
    assert sent[:2] == b"\x22\x33"
    assert sent[2] == smbus_pec(bytes([0x50 << 1, 0x22, 0x33]))
    # A part that does not send a PEC byte: the extra byte is just the next register, so the check fails.
    with pytest.raises(OSError) as caught:
        smbus.read_byte_data(0x50, 0x10)
    assert caught.value.errno == errno.EBADMSG


def test_pec_read_from_a_part_that_sends_one(bus: I2CBus) -> None:
    bus.attach(RegisterFile(0x60, pec=True))
    with EmulatedSMBus(bus) as smbus:
        smbus.enable_pec(True)
        assert smbus.read_byte_data(0x60, 0x42) == 0x42
        assert smbus.read_word_data(0x60, 0x10) == 0x1110


def test_smbus_pec_check_value() -> None:
    assert smbus_pec(b"123456789") == 0xF4  # CRC-8/SMBUS catalogue check value


def test_other_descriptors_reach_the_real_ioctl() -> None:
    master, slave = os.openpty()
    try:
        size = bytearray(8)
        assert routed_ioctl(slave, termios.TIOCGWINSZ, size) == 0
        null = os.open(os.devnull, os.O_RDWR)
        try:
            with pytest.raises(OSError) as caught:
                routed_ioctl(null, i2c_ioctl.I2C_FUNCS, ctypes.c_ulong())
            assert caught.value.errno == errno.ENOTTY  # the kernel's answer for /dev/null
        finally:
            os.close(null)
    finally:
        os.close(master)
        os.close(slave)


def test_install_routes_smbus2_and_is_idempotent() -> None:
    import smbus2.smbus2 as module

    i2c_ioctl.install()
    i2c_ioctl.install()
    assert module.ioctl is routed_ioctl
    assert i2c_ioctl._real_ioctl is fcntl.ioctl


def test_unknown_request_on_an_emulated_fd(smbus: EmulatedSMBus) -> None:
    with pytest.raises(OSError) as caught:
        routed_ioctl(smbus.fd, 0x1234, 0)
    assert caught.value.errno == errno.ENOTTY


def test_close_unroutes_and_reopen_starts_fresh(bus: I2CBus) -> None:
    smbus = EmulatedSMBus(bus)
    fd = smbus.fd
    assert smbus.read_byte_data(0x50, 3) == 3
    devfile = smbus.devfile
    smbus.close()
    assert i2c_ioctl.devfile_for(fd) is None
    smbus.open()
    # A new file starts at address 0 in the kernel; the cached address must not skip I2C_SLAVE.
    assert smbus.devfile is not devfile
    assert smbus.read_byte_data(0x50, 4) == 4
    assert smbus.devfile.calls[i2c_ioctl.I2C_SLAVE] == 1
    smbus.close()


def test_bus_refuses_two_parts_at_one_address(bus: I2CBus) -> None:
    with pytest.raises(ValueError, match="already holds"):
        bus.attach(RegisterFile(0x50))


def test_injected_nack_counts_down(bus: I2CBus) -> None:
    target = part(bus)
    target.faults.inject("nack", 2)
    for _ in range(2):
        with pytest.raises(Nack):
            bus.transfer([Message(0x50, False, b"\x00")])
    assert bus.transfer([Message(0x50, True, length=1)]) == [b"\x00"]

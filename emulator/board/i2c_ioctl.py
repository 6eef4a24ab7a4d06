"""The kernel side of ``/dev/i2c-N``, in-process: decode i2c-dev ioctls and run them on an emulated bus.

smbus2 talks to the kernel only through ``fcntl.ioctl`` (imported into ``smbus2.smbus2`` as ``ioctl``)
with the ctypes structures of ``<linux/i2c-dev.h>``. :func:`install` routes that name through
:func:`routed_ioctl`: file descriptors registered here are decoded by an :class:`I2CDevFile`, every other
descriptor goes to the real ``ioctl`` untouched.

Decoding works on the raw memory the structures occupy (this module's own copies of the kernel's uapi
layouts, read at the addresses the caller passed), not on smbus2's Python objects, so it serves any
smbus2 version and catches a caller whose structures do not match the kernel's. The translation of
SMBus commands into I2C messages follows ``i2c_smbus_xfer_emulated()`` in the Linux I2C core, and the
controller's limits follow the Raspberry Pi's ``i2c-bcm2835``: no SMBus block read (no
``I2C_M_RECV_LEN``), no 10-bit addresses, a read only as the last message of a transfer.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import sys
import threading
from collections.abc import Callable

from emulator.board.i2c_bus import I2CBus, Message, Nack

# ioctl requests, <linux/i2c-dev.h>
I2C_RETRIES = 0x0701
I2C_TIMEOUT = 0x0702
I2C_SLAVE = 0x0703
I2C_TENBIT = 0x0704
I2C_FUNCS = 0x0705
I2C_SLAVE_FORCE = 0x0706
I2C_RDWR = 0x0707
I2C_PEC = 0x0708
I2C_SMBUS = 0x0720

# i2c_smbus_ioctl_data.read_write and .size
I2C_SMBUS_WRITE = 0
I2C_SMBUS_READ = 1
I2C_SMBUS_QUICK = 0
I2C_SMBUS_BYTE = 1
I2C_SMBUS_BYTE_DATA = 2
I2C_SMBUS_WORD_DATA = 3
I2C_SMBUS_PROC_CALL = 4
I2C_SMBUS_BLOCK_DATA = 5
I2C_SMBUS_I2C_BLOCK_BROKEN = 6
I2C_SMBUS_BLOCK_PROC_CALL = 7
I2C_SMBUS_I2C_BLOCK_DATA = 8
I2C_SMBUS_BLOCK_MAX = 32

# i2c_msg.flags, <linux/i2c.h>
I2C_M_RD = 0x0001
I2C_M_TEN = 0x0010
I2C_M_RECV_LEN = 0x0400
I2C_M_NO_RD_ACK = 0x0800
I2C_M_IGNORE_NAK = 0x1000
I2C_M_REV_DIR_ADDR = 0x2000
I2C_M_NOSTART = 0x4000
I2C_RDWR_IOCTL_MAX_MSGS = 42
I2C_MSG_MAX_LEN = 8192

# Functionality bits, <linux/i2c.h>
I2C_FUNC_I2C = 0x00000001
I2C_FUNC_10BIT_ADDR = 0x00000002
I2C_FUNC_PROTOCOL_MANGLING = 0x00000004
I2C_FUNC_SMBUS_PEC = 0x00000008
I2C_FUNC_SMBUS_BLOCK_PROC_CALL = 0x00008000
I2C_FUNC_SMBUS_QUICK = 0x00010000
I2C_FUNC_SMBUS_BYTE = 0x00060000
I2C_FUNC_SMBUS_BYTE_DATA = 0x00180000
I2C_FUNC_SMBUS_WORD_DATA = 0x00600000
I2C_FUNC_SMBUS_PROC_CALL = 0x00800000
I2C_FUNC_SMBUS_READ_BLOCK_DATA = 0x01000000
I2C_FUNC_SMBUS_WRITE_BLOCK_DATA = 0x02000000
I2C_FUNC_SMBUS_I2C_BLOCK = 0x0C000000
I2C_FUNC_SMBUS_EMUL = (
    I2C_FUNC_SMBUS_QUICK
    | I2C_FUNC_SMBUS_BYTE
    | I2C_FUNC_SMBUS_BYTE_DATA
    | I2C_FUNC_SMBUS_WORD_DATA
    | I2C_FUNC_SMBUS_PROC_CALL
    | I2C_FUNC_SMBUS_WRITE_BLOCK_DATA
    | I2C_FUNC_SMBUS_I2C_BLOCK
    | I2C_FUNC_SMBUS_PEC
)
# What `i2cdetect -F 1` reports on a Raspberry Pi (i2c-bcm2835): plain I2C plus the SMBus emulation,
# without SMBus block read and block process call.
BCM2835_FUNCS = I2C_FUNC_I2C | I2C_FUNC_PROTOCOL_MANGLING | I2C_FUNC_SMBUS_EMUL


class KernelSmbusIoctlData(ctypes.Structure):
    """``struct i2c_smbus_ioctl_data`` as the kernel lays it out."""

    _fields_ = [
        ("read_write", ctypes.c_uint8),
        ("command", ctypes.c_uint8),
        ("size", ctypes.c_uint32),
        ("data", ctypes.c_void_p),  # union i2c_smbus_data __user *
    ]


class KernelI2cMsg(ctypes.Structure):
    """``struct i2c_msg``."""

    _fields_ = [
        ("addr", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
        ("len", ctypes.c_uint16),
        ("buf", ctypes.c_void_p),  # __u8 __user *
    ]


class KernelRdwrIoctlData(ctypes.Structure):
    """``struct i2c_rdwr_ioctl_data``."""

    _fields_ = [
        ("msgs", ctypes.c_void_p),  # struct i2c_msg __user *
        ("nmsgs", ctypes.c_uint32),
    ]


SMBUS_DATA_SIZE = I2C_SMBUS_BLOCK_MAX + 2  # union i2c_smbus_data: block[0] is the length, +1 for PEC


def _fail(code: int, detail: str = "") -> OSError:
    # Same shape as the OSError fcntl.ioctl raises (errno, strerror); the detail helps whoever debugs a model.
    message = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, message)


def smbus_pec(data: bytes, crc: int = 0) -> int:
    """SMBus Packet Error Code: CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), initial value 0."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class I2CDevFile:
    """One open ``/dev/i2c-N``: the client state i2c-dev keeps per file (address, PEC, 10-bit flag)."""

    def __init__(self, bus: I2CBus, funcs: int = BCM2835_FUNCS, busy_addresses: frozenset[int] = frozenset()) -> None:
        self.bus = bus
        self.funcs = funcs
        # Addresses claimed by a kernel driver (e.g. an rtc or iio driver bound via device tree):
        # I2C_SLAVE refuses them with EBUSY, I2C_SLAVE_FORCE takes them anyway.
        self.busy_addresses = busy_addresses
        self.address = 0  # the kernel's i2c_client starts at address 0
        self.pec = False
        self.tenbit = False
        self.calls: dict[int, int] = {}

    # -- entry point -------------------------------------------------------------------------------

    def ioctl(self, request: int, arg: object) -> int:
        self.calls[request] = self.calls.get(request, 0) + 1
        if request in (I2C_SLAVE, I2C_SLAVE_FORCE):
            return self._set_slave(request, _int_arg(arg))
        if request == I2C_FUNCS:
            _store_unsigned_long(arg, self.funcs)
            return 0
        if request == I2C_SMBUS:
            return self._smbus(arg)
        if request == I2C_RDWR:
            return self._rdwr(arg)
        if request == I2C_PEC:
            self.pec = bool(_int_arg(arg))
            return 0
        if request == I2C_TENBIT:
            self.tenbit = bool(_int_arg(arg))
            return 0
        if request in (I2C_RETRIES, I2C_TIMEOUT):
            if _int_arg(arg) < 0 or _int_arg(arg) > 0x7FFFFFFF:
                raise _fail(errno.EINVAL)
            return 0
        raise _fail(errno.ENOTTY, f"ioctl 0x{request:04x} is not an i2c-dev request")

    # -- I2C_SLAVE ---------------------------------------------------------------------------------

    def _set_slave(self, request: int, address: int) -> int:
        if address < 0 or address > 0x3FF or (not self.tenbit and address > 0x7F):
            raise _fail(errno.EINVAL, f"address 0x{address:x} out of range")
        if request == I2C_SLAVE and address in self.busy_addresses:
            raise _fail(errno.EBUSY, f"0x{address:02x} is claimed by a kernel driver")
        self.address = address
        return 0

    # -- I2C_RDWR ----------------------------------------------------------------------------------

    def _rdwr(self, arg: object) -> int:
        request = KernelRdwrIoctlData.from_buffer_copy(_readable(arg, ctypes.sizeof(KernelRdwrIoctlData)))
        if request.nmsgs > I2C_RDWR_IOCTL_MAX_MSGS:
            raise _fail(errno.EINVAL, f"{request.nmsgs} messages; i2c-dev allows {I2C_RDWR_IOCTL_MAX_MSGS}")
        if request.nmsgs == 0:
            return 0
        if not request.msgs:
            raise _fail(errno.EFAULT, "msgs is NULL")
        raw = (KernelI2cMsg * request.nmsgs).from_address(request.msgs)
        messages: list[Message] = []
        read_slots: list[tuple[int, int]] = []
        for index, msg in enumerate(raw):
            if msg.len > I2C_MSG_MAX_LEN:
                raise _fail(errno.EINVAL, f"message {index} is {msg.len} bytes; i2c-dev allows {I2C_MSG_MAX_LEN}")
            if msg.flags & (I2C_M_TEN | I2C_M_RECV_LEN | I2C_M_NOSTART | I2C_M_REV_DIR_ADDR | I2C_M_NO_RD_ACK):
                raise _fail(errno.EOPNOTSUPP, f"message {index}: flags 0x{msg.flags:04x} need protocol features "
                            "the Raspberry Pi's controller lacks")
            if msg.len and not msg.buf:
                raise _fail(errno.EFAULT, f"message {index} has a NULL buffer")
            if msg.flags & I2C_M_RD:
                messages.append(Message(msg.addr, True, length=msg.len))
                read_slots.append((msg.buf, msg.len))
            else:
                messages.append(Message(msg.addr, False, data=ctypes.string_at(msg.buf, msg.len)))
        self._check_bcm2835_order(messages)
        results = self._run(messages)
        for (address, length), data in zip(read_slots, results, strict=True):
            ctypes.memmove(address, data, length)
        return request.nmsgs

    @staticmethod
    def _check_bcm2835_order(messages: list[Message]) -> None:
        # i2c-bcm2835 can only turn the bus round once: every read but the last message is refused.
        for message in messages[:-1]:
            if message.read:
                raise _fail(errno.EOPNOTSUPP, "i2c-bcm2835 supports a read only as the last message")

    # -- I2C_SMBUS ---------------------------------------------------------------------------------

    def _smbus(self, arg: object) -> int:
        request = KernelSmbusIoctlData.from_buffer_copy(_readable(arg, ctypes.sizeof(KernelSmbusIoctlData)))
        size, read_write, command = request.size, request.read_write, request.command
        if read_write not in (I2C_SMBUS_READ, I2C_SMBUS_WRITE):
            raise _fail(errno.EINVAL, f"read_write={read_write}")
        if size not in (
            I2C_SMBUS_QUICK, I2C_SMBUS_BYTE, I2C_SMBUS_BYTE_DATA, I2C_SMBUS_WORD_DATA, I2C_SMBUS_PROC_CALL,
            I2C_SMBUS_BLOCK_DATA, I2C_SMBUS_I2C_BLOCK_BROKEN, I2C_SMBUS_BLOCK_PROC_CALL, I2C_SMBUS_I2C_BLOCK_DATA,
        ):
            raise _fail(errno.EINVAL, f"unknown SMBus transaction size {size}")
        # i2cdev_ioctl_smbus(): everything but a quick command or a byte write needs the data union.
        needs_data = not (size == I2C_SMBUS_QUICK or (size == I2C_SMBUS_BYTE and read_write == I2C_SMBUS_WRITE))
        if needs_data and not request.data:
            raise _fail(errno.EINVAL, "data pointer is NULL")
        data = (ctypes.c_uint8 * SMBUS_DATA_SIZE).from_address(request.data) if request.data else None
        if size in (I2C_SMBUS_PROC_CALL, I2C_SMBUS_BLOCK_PROC_CALL):
            read_write = I2C_SMBUS_READ  # process calls write and read back; i2c-dev treats them as reads
        if size == I2C_SMBUS_I2C_BLOCK_BROKEN:
            size = I2C_SMBUS_I2C_BLOCK_DATA  # the old request code: same transfer, 32 bytes on read
            if read_write == I2C_SMBUS_READ:
                data[0] = I2C_SMBUS_BLOCK_MAX
        if size in (I2C_SMBUS_BLOCK_DATA, I2C_SMBUS_BLOCK_PROC_CALL) and read_write == I2C_SMBUS_READ:
            raise _fail(errno.EOPNOTSUPP, "SMBus block read: the Raspberry Pi's controller cannot do I2C_M_RECV_LEN; "
                        "use read_i2c_block_data with an explicit length")
        self._smbus_emulated(self.address, read_write, command, size, data)
        return 0

    def _smbus_emulated(self, address: int, read_write: int, command: int, size: int, data) -> None:
        """``i2c_smbus_xfer_emulated()``: one SMBus command as one or two I2C messages."""
        reading = read_write == I2C_SMBUS_READ
        pec = self.pec and size not in (I2C_SMBUS_QUICK, I2C_SMBUS_I2C_BLOCK_DATA)
        write_buf = bytearray([command])
        read_len = 0
        single = False  # one message only (quick, byte)
        if size == I2C_SMBUS_QUICK:
            messages = [Message(address, reading, length=0)]
            single = True
            pec = False
        elif size == I2C_SMBUS_BYTE:
            single = True
            if reading:
                read_len = 1
        elif size == I2C_SMBUS_BYTE_DATA:
            if reading:
                read_len = 1
            else:
                write_buf.append(data[0])
        elif size == I2C_SMBUS_WORD_DATA:
            if reading:
                read_len = 2
            else:
                write_buf += bytes((data[0], data[1]))
        elif size == I2C_SMBUS_PROC_CALL:
            write_buf += bytes((data[0], data[1]))
            read_len = 2
        elif size == I2C_SMBUS_BLOCK_DATA:  # write only; the read was refused above
            count = data[0]
            if count == 0 or count > I2C_SMBUS_BLOCK_MAX:
                raise _fail(errno.EINVAL, f"block length {count}; SMBus allows 1-{I2C_SMBUS_BLOCK_MAX}")
            write_buf += bytes(data[0 : count + 1])
        elif size == I2C_SMBUS_I2C_BLOCK_DATA:
            count = data[0]
            if count == 0 or count > I2C_SMBUS_BLOCK_MAX:
                raise _fail(errno.EINVAL, f"I2C block length {count}; allowed 1-{I2C_SMBUS_BLOCK_MAX}")
            if reading:
                read_len = count
            else:
                write_buf += bytes(data[1 : count + 1])

        if size != I2C_SMBUS_QUICK:
            if single and reading:
                messages = [Message(address, True, length=read_len)]
            elif read_len:
                messages = [Message(address, False, data=bytes(write_buf)), Message(address, True, length=read_len)]
            else:
                messages = [Message(address, False, data=bytes(write_buf))]
        if pec:
            messages = self._with_pec(messages)

        results = self._run(messages)
        if not read_len:
            return
        received = results[-1]
        if pec:
            received = self._check_pec(messages, results)
        if size in (I2C_SMBUS_BYTE, I2C_SMBUS_BYTE_DATA):
            data[0] = received[0]
        elif size in (I2C_SMBUS_WORD_DATA, I2C_SMBUS_PROC_CALL):
            data[0], data[1] = received[0], received[1]
        elif size == I2C_SMBUS_I2C_BLOCK_DATA:
            for i, byte in enumerate(received):
                data[i + 1] = byte

    # -- PEC ---------------------------------------------------------------------------------------

    @staticmethod
    def _with_pec(messages: list[Message]) -> list[Message]:
        # A write ends with the PEC over everything on the wire; a read fetches one byte more to check.
        last = messages[-1]
        if last.read:
            return [*messages[:-1], Message(last.address, True, length=last.length + 1)]
        wire = bytes([last.address << 1]) + last.data
        return [*messages[:-1], Message(last.address, False, data=last.data + bytes([smbus_pec(wire)]))]

    @staticmethod
    def _check_pec(messages: list[Message], results: list[bytes]) -> bytes:
        wire = bytearray()
        for message in messages:
            if message.read:
                continue
            wire += bytes([message.address << 1]) + message.data
        read = messages[-1]
        body, received_pec = results[-1][:-1], results[-1][-1]
        wire += bytes([(read.address << 1) | 1]) + body
        if smbus_pec(bytes(wire)) != received_pec:
            raise _fail(errno.EBADMSG, f"PEC mismatch from 0x{read.address:02x}: the part does not send a PEC")
        return body

    # -- the bus -----------------------------------------------------------------------------------

    def _run(self, messages: list[Message]) -> list[bytes]:
        if self.tenbit:
            raise _fail(errno.EOPNOTSUPP, "10-bit addressing: the Raspberry Pi's controller has no I2C_FUNC_10BIT_ADDR")
        try:
            return self.bus.transfer(messages)
        except Nack as nack:
            raise _fail(errno.EREMOTEIO, str(nack)) from None


# -- argument handling, as fcntl.ioctl sees it ------------------------------------------------------


def _int_arg(arg: object) -> int:
    if isinstance(arg, int):
        return arg
    raise _fail(errno.EFAULT, f"expected an integer argument, got {type(arg).__name__}")


def _readable(arg: object, size: int) -> memoryview:
    if isinstance(arg, int):
        raise _fail(errno.EFAULT, "expected a pointer to a structure, got an integer")
    view = memoryview(arg).cast("B")
    if view.nbytes < size:
        raise _fail(errno.EFAULT, f"structure of {view.nbytes} bytes, the kernel reads {size}")
    return view[:size]


def _store_unsigned_long(arg: object, value: int) -> None:
    # smbus2 0.4.x passes a c_uint32, 0.5+ a c_ulong (8 bytes on 64-bit); like the kernel's put_user of an
    # unsigned long, write the value in the caller's width (the functionality bits all fit in 32 bits).
    if isinstance(arg, int):
        raise _fail(errno.EFAULT, "I2C_FUNCS needs a buffer to write into")
    view = memoryview(arg).cast("B")
    if view.readonly:
        raise _fail(errno.EFAULT, "I2C_FUNCS buffer is read-only")
    width = view.nbytes if view.nbytes in (4, 8) else 4
    view[:width] = value.to_bytes(width, sys.byteorder)


# -- routing smbus2's ioctl --------------------------------------------------------------------------

_files: dict[int, I2CDevFile] = {}
_files_lock = threading.Lock()
_real_ioctl: Callable[..., object] = fcntl.ioctl


def register(fd: int, devfile: I2CDevFile) -> None:
    """Route ioctls on ``fd`` to ``devfile`` (until :func:`unregister`)."""
    with _files_lock:
        _files[fd] = devfile


def unregister(fd: int) -> None:
    with _files_lock:
        _files.pop(fd, None)


def devfile_for(fd: int) -> I2CDevFile | None:
    with _files_lock:
        return _files.get(fd)


def routed_ioctl(fd, request, arg=0, mutate_flag=True):
    """Drop-in for ``fcntl.ioctl``: emulated descriptors are decoded here, the rest reach the kernel."""
    number = fd if isinstance(fd, int) else fd.fileno()
    devfile = devfile_for(number)
    if devfile is None:
        return _real_ioctl(fd, request, arg, mutate_flag)
    with devfile.bus.lock:
        return devfile.ioctl(request, arg)


def install() -> None:
    """Point ``smbus2.smbus2.ioctl`` at :func:`routed_ioctl` (idempotent; other descriptors are unaffected)."""
    global _real_ioctl
    import smbus2.smbus2 as smbus2_module

    current = smbus2_module.ioctl
    if current is routed_ioctl:
        return
    _real_ioctl = current  # chain to whatever was there (fcntl.ioctl, or another test's wrapper)
    smbus2_module.ioctl = routed_ioctl

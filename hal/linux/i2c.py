"""The I2C port over Linux i2c-dev, through smbus2.

Every transfer is plain I2C (``I2C_RDWR`` with ``i2c_msg``): a register read is one combined
write-then-read with a repeated start, as ``machine.I2C.readfrom_mem_into`` does on a Pico. The
Pi's controller has no SMBus block read, and SMBus caps blocks at 32 bytes, so nothing here relies
on SMBus transfers except ``scan`` (quick write / read byte, as ``i2cdetect`` probes).
"""

from __future__ import annotations

import ctypes
import errno
import threading

from smbus2 import SMBus, i2c_msg

from hal.errors import BusError, NackError, SensorError, SensorTimeout

# i2cdetect's default: reading is safer than a quick write for EEPROMs (0x50-0x5f) and the
# 0x30-0x37 range, where a quick write can corrupt some parts.
_READ_PROBE = (range(0x30, 0x38), range(0x50, 0x60))
_FUNC_QUICK = 0x00010000  # I2C_FUNC_SMBUS_QUICK
_FUNC_READ_BYTE = 0x00020000  # I2C_FUNC_SMBUS_READ_BYTE
_NACK_ERRNOS = (errno.EREMOTEIO, errno.ENXIO)
_TIMEOUT_ERRNOS = (errno.ETIMEDOUT,)


class SMBusI2C:
    """``machine.I2C`` on an open ``smbus2.SMBus``.

    Faults come out typed: a NACK (EREMOTEIO / ENXIO) is :class:`NackError`, a bus timeout is
    :class:`SensorTimeout`, anything else the adapter refuses is :class:`BusError`.
    """

    def __init__(self, smbus: SMBus, label: str = "i2c") -> None:
        self.smbus = smbus
        self.label = label
        # Sensors on one bus may be read from several threads; smbus2's SMBus calls (I2C_SLAVE then
        # I2C_SMBUS in scan) are not atomic, so each call here holds the bus.
        self.lock = threading.RLock()

    # -- transfers -----------------------------------------------------------------------------------------

    def _transfer(self, addr: int, *msgs: i2c_msg) -> None:
        _check_address(addr)
        try:
            with self.lock:
                self.smbus.i2c_rdwr(*msgs)
        except OSError as exc:
            raise _fault(exc, addr, self.label) from exc

    def readfrom_mem_into(self, addr: int, memaddr: int, buf: bytearray | memoryview, *, addrsize: int = 8) -> None:
        reg = i2c_msg.write(addr, _memaddr_bytes(memaddr, addrsize))
        read = i2c_msg.read(addr, len(buf))
        self._transfer(addr, reg, read)
        buf[:] = ctypes.string_at(read.buf, len(buf))

    def readfrom_mem(self, addr: int, memaddr: int, nbytes: int, *, addrsize: int = 8) -> bytes:
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf, addrsize=addrsize)
        return bytes(buf)

    def writeto_mem(self, addr: int, memaddr: int, buf: bytes | bytearray | memoryview, *, addrsize: int = 8) -> None:
        self._transfer(addr, i2c_msg.write(addr, _memaddr_bytes(memaddr, addrsize) + bytes(buf)))

    def readfrom_into(self, addr: int, buf: bytearray | memoryview, stop: bool = True) -> None:
        read = i2c_msg.read(addr, len(buf))
        self._transfer(addr, read)
        buf[:] = ctypes.string_at(read.buf, len(buf))

    def readfrom(self, addr: int, nbytes: int, stop: bool = True) -> bytes:
        buf = bytearray(nbytes)
        self.readfrom_into(addr, buf, stop)
        return bytes(buf)

    def writeto(self, addr: int, buf: bytes | bytearray | memoryview, stop: bool = True) -> int:
        data = bytes(buf)
        self._transfer(addr, i2c_msg.write(addr, data))
        return len(data)

    # -- discovery -------------------------------------------------------------------------------------------

    def scan(self) -> list[int]:
        """Addresses 0x08-0x77 that acknowledge a probe, ascending (what ``i2cdetect -y`` shows)."""
        funcs = int(getattr(self.smbus, "funcs", 0) or 0) or (_FUNC_QUICK | _FUNC_READ_BYTE)
        found = []
        for addr in range(0x08, 0x78):
            use_read = any(addr in span for span in _READ_PROBE)
            if use_read and not funcs & _FUNC_READ_BYTE:
                use_read = False
            elif not use_read and not funcs & _FUNC_QUICK:
                use_read = True
            try:
                with self.lock:
                    if use_read:
                        self.smbus.read_byte(addr)
                    else:
                        self.smbus.write_quick(addr)
            except OSError as exc:
                if exc.errno == errno.EBUSY:
                    # A kernel driver owns the address (i2cdetect shows "UU"): a part is certainly there.
                    found.append(addr)
                    continue
                fault = _fault(exc, addr, self.label)
                if isinstance(fault, (NackError, SensorTimeout)):
                    continue
                raise fault from exc
            found.append(addr)
        return found

    def close(self) -> None:
        with self.lock:
            self.smbus.close()

    def __repr__(self) -> str:
        return f"<SMBusI2C {self.label}>"


def _check_address(addr: int) -> None:
    if not isinstance(addr, int) or not 0 <= addr <= 0x7F:
        raise ValueError(f"I2C address must be a 7-bit integer 0x00-0x7f, got {addr!r}")


def _memaddr_bytes(memaddr: int, addrsize: int) -> bytes:
    if addrsize not in (8, 16):
        raise ValueError(f"addrsize must be 8 or 16 bits, got {addrsize!r}")
    limit = 1 << addrsize
    if not 0 <= memaddr < limit:
        raise ValueError(f"register address {memaddr!r} does not fit in {addrsize} bits")
    return memaddr.to_bytes(addrsize // 8, "big")


def _fault(exc: OSError, addr: int, label: str) -> SensorError:
    if exc.errno in _NACK_ERRNOS:
        return NackError(addr, f"no ACK from 0x{addr:02x} on {label}: check wiring, power and the address")
    if exc.errno in _TIMEOUT_ERRNOS:
        return SensorTimeout(f"I2C timeout talking to 0x{addr:02x} on {label} (a part holds SCL low?)")
    if exc.errno == errno.EOPNOTSUPP:
        return BusError(f"the I2C adapter of {label} does not support this transfer ({exc.strerror})")
    return BusError(f"I2C transfer to 0x{addr:02x} on {label} failed: {exc.strerror or exc} (errno {exc.errno})")

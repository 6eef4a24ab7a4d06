"""Typed sensor faults, shared by drivers on CPython and MicroPython.

Runtime-neutral: plain exception classes, no typing, no f-strings. Each class carries a short
``kind`` so a reading can say what went wrong without the caller matching on class names.
"""


class SensorError(Exception):
    """Base class of every fault a driver or bus adapter reports."""

    kind = "sensor"


class BusError(SensorError):
    """The bus itself failed (adapter error, unsupported transfer, device node gone)."""

    kind = "bus"


class NackError(BusError):
    """No device acknowledged the address (I2C NACK, errno 121 on Linux, EIO/ENODEV on MicroPython)."""

    kind = "nack"

    def __init__(self, address, message=None):
        self.address = address
        if message is None:
            message = f"no ACK from I2C address 0x{address:02x}: check wiring, power and the board profile's address"
        super().__init__(message)


class SensorTimeout(SensorError):
    """The part did not answer (or finish a conversion) before the driver's deadline."""

    kind = "timeout"


class CRCError(SensorError):
    """A CRC or checksum over data from the part did not match: noise on the bus or a failing part."""

    kind = "crc"


class FrameError(SensorError):
    """A frame or sentence from the part was malformed (bad length, header or field)."""

    kind = "frame"


class ChipIdError(SensorError):
    """The part at this address is not the chip the driver expects."""

    kind = "chip_id"

    def __init__(self, chip, expected, found, message=None):
        self.chip = chip
        self.expected = expected
        self.found = found
        if message is None:
            message = f"{chip}: identity check read {found!r}, expected {expected!r}: another part sits at this address"
        super().__init__(message)


class SettingError(SensorError):
    """A driver setting is out of range (oversampling, gain, data rate, mode ...)."""

    kind = "config"


def wrap_os_error(exc, address=None):
    """Map an OSError raised by a bus into the typed fault it stands for.

    Linux i2c-dev reports a NACK as EREMOTEIO (121) or ENXIO (6); MicroPython ports use EIO (5)
    or ENODEV (19); ETIMEDOUT (110) is a bus timeout (clock stretching, stuck SDA).
    """
    code = exc.args[0] if exc.args else None
    if code in (121, 6, 5, 19) and address is not None:
        return NackError(address)
    if code == 110:
        return SensorTimeout(f"bus timeout (errno {code}): a part holds the clock line or the bus is stuck")
    return BusError(f"bus error: {exc!r}")

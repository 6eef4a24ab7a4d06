"""Registers and bit fields as data, and the I2C plumbing every register-based driver shares.

In the manner of Pimoroni's i2cdevice: a driver declares ``BitField(register, mask)`` values
instead of writing shifts by hand. Runtime-neutral; preallocated buffers, no allocation per
single-byte access.
"""

# ruff: noqa: B904  -- MicroPython prints a warning for every "raise ... from ..."; drivers avoid it.

from hal.drivers.compat import default_clock
from hal.errors import SensorError, SettingError, wrap_os_error


class BitField:
    """Bits ``mask`` of 8-bit register ``reg``; values are given and returned unshifted."""

    def __init__(self, reg, mask):
        self.reg = reg
        self.mask = mask
        shift = 0
        while not (mask >> shift) & 1:
            shift += 1
        self.shift = shift

    def get(self, register_value):
        return (register_value & self.mask) >> self.shift

    def put(self, register_value, value):
        if value < 0 or (value << self.shift) & ~self.mask:
            raise SettingError("value %r does not fit bit field 0x%02x of register 0x%02x"
                               % (value, self.mask, self.reg))
        return (register_value & ~self.mask) | (value << self.shift)


def choose(name, value, table):
    """The code for ``value`` in ``table`` (a tuple of (value, code) pairs), or a SettingError listing choices."""
    for allowed, code in table:
        if allowed == value:
            return code
    raise SettingError("%s must be one of %s, got %r" % (name, ", ".join(str(a) for a, _ in table), value))


class I2CDevice:
    """Base of I2C drivers: address, clock and typed faults around the bus calls.

    ``machine.I2C`` raises ``OSError``; the Linux adapter already raises typed errors. Both come
    out of here as :mod:`hal.errors` exceptions.
    """

    BUS = "i2c"
    ADDRESSES = ()
    OPTIONS = {}

    def __init__(self, i2c, address, clock=None):
        if address not in self.ADDRESSES:
            raise SettingError(
                "%s cannot have I2C address %r; it uses %s"
                % (self.CHIP, address, ", ".join("0x%02x" % a for a in self.ADDRESSES))
            )
        self.i2c = i2c
        self.address = address
        self.clock = default_clock(clock)
        self._byte = bytearray(1)

    def read_into(self, reg, buf):
        try:
            self.i2c.readfrom_mem_into(self.address, reg, buf)
        except SensorError:
            raise
        except OSError as exc:
            raise wrap_os_error(exc, self.address)

    def write_mem(self, reg, buf):
        try:
            self.i2c.writeto_mem(self.address, reg, buf)
        except SensorError:
            raise
        except OSError as exc:
            raise wrap_os_error(exc, self.address)

    def write_raw(self, buf):
        try:
            self.i2c.writeto(self.address, buf)
        except SensorError:
            raise
        except OSError as exc:
            raise wrap_os_error(exc, self.address)

    def read_raw(self, buf):
        try:
            self.i2c.readfrom_into(self.address, buf)
        except SensorError:
            raise
        except OSError as exc:
            raise wrap_os_error(exc, self.address)

    def read_u8(self, reg):
        self.read_into(reg, self._byte)
        return self._byte[0]

    def write_u8(self, reg, value):
        self._byte[0] = value
        self.write_mem(reg, self._byte)

    def get_field(self, field):
        return field.get(self.read_u8(field.reg))

    def set_field(self, field, value):
        self.write_u8(field.reg, field.put(self.read_u8(field.reg), value))

    def deadline(self, ms):
        """A tick value ``ms`` from now, for ``expired``."""
        return self.clock.ticks_add(self.clock.ticks_ms(), ms)

    def expired(self, deadline):
        return self.clock.ticks_diff(self.clock.ticks_ms(), deadline) >= 0

"""Sensirion SHT4x (SHT40/41/43/45) temperature and humidity sensor over I2C.

Command-based (no registers): write one command byte, wait the measurement time, read 6 bytes
(two 16-bit words, each followed by its CRC-8: polynomial 0x31, init 0xFF). The part NACKs a
read while it is still measuring, so the driver retries until a deadline. Datasheet v6.6.
"""

# ruff: noqa: B904  -- MicroPython prints a warning for every "raise ... from ..."; drivers avoid it.

from hal.drivers.compat import const
from hal.drivers.register import I2CDevice, choose
from hal.errors import ChipIdError, CRCError, NackError, SensorTimeout

_CMD_SERIAL = const(0x89)
_CMD_SOFT_RESET = const(0x94)

# precision -> (command, maximum measurement time in ms)
_PRECISION = (("high", (0xFD, 9)), ("medium", (0xF6, 5)), ("low", (0xE0, 2)))
# (power, duration) -> (command, maximum time in ms) ; the heater always ends with a high-precision measurement
_HEATER = (
    ("200mW-1s", (0x39, 1100)),
    ("200mW-0.1s", (0x32, 110)),
    ("110mW-1s", (0x2F, 1100)),
    ("110mW-0.1s", (0x24, 110)),
    ("20mW-1s", (0x1E, 1100)),
    ("20mW-0.1s", (0x15, 110)),
)


def crc8(data, start=0, end=None):
    """Sensirion CRC-8: polynomial 0x31 (x^8 + x^5 + x^4 + 1), init 0xFF, no reflection, no final XOR."""
    if end is None:
        end = len(data)
    crc = 0xFF
    for i in range(start, end):
        crc ^= data[i]
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


class SHT4x(I2CDevice):
    """SHT4x at ``address`` (0x44 for -A parts, 0x45 for -B, 0x46 for -C).

    Settings: ``precision`` ("high", "medium", "low"). ``read()`` returns temperature (degC) and
    humidity (%RH, clamped to 0..100 as Sensirion recommends).
    """

    CHIP = "SHT4x"
    ADDRESSES = (0x44, 0x45, 0x46)
    UNITS = {"temperature": "degC", "humidity": "%RH"}
    OPTIONS = {"precision": ("high", "medium", "low")}

    def __init__(self, i2c, address=0x44, clock=None, precision="high"):
        super().__init__(i2c, address, clock)
        self._command, self._measure_ms = choose("precision", precision, _PRECISION)
        self._cmd = bytearray(1)
        self._buf = bytearray(6)
        self.serial_number = None

    def _transaction(self, command, wait_ms):
        """Send ``command``, wait, and read the 6-byte answer (retrying NACKs until a deadline)."""
        self._cmd[0] = command
        self.write_raw(self._cmd)
        self.clock.sleep_ms(wait_ms)
        deadline = self.deadline(2 * wait_ms + 10)
        while True:
            try:
                self.read_raw(self._buf)
                break
            except NackError:
                # Still measuring: the SHT4x does not acknowledge its address until the result is ready.
                if self.expired(deadline):
                    raise SensorTimeout("%s at 0x%02x: no result %d ms after command 0x%02x"
                                        % (self.CHIP, self.address, 3 * wait_ms + 10, command))
                self.clock.sleep_ms(1)
        b = self._buf
        for start in (0, 3):
            if crc8(b, start, start + 2) != b[start + 2]:
                raise CRCError("%s at 0x%02x: CRC mismatch in word %d (got 0x%02x, computed 0x%02x): noise on the bus?"
                               % (self.CHIP, self.address, start // 3, b[start + 2], crc8(b, start, start + 2)))
        return (b[0] << 8) | b[1], (b[3] << 8) | b[4]

    def read_serial(self):
        """The 32-bit serial number (command 0x89)."""
        high, low = self._transaction(_CMD_SERIAL, 1)
        self.serial_number = (high << 16) | low
        return self.serial_number

    def identify(self):
        """Read the serial number; a part that answers without valid CRCs is not an SHT4x."""
        try:
            self.read_serial()
        except CRCError as exc:
            raise ChipIdError(self.CHIP, "serial number with valid CRC", "CRC mismatch",
                              "%s at 0x%02x: serial-number answer fails its CRC (%s): another part at this address?"
                              % (self.CHIP, self.address, exc))
        return self.CHIP

    def reset(self):
        self._cmd[0] = _CMD_SOFT_RESET
        self.write_raw(self._cmd)
        self.clock.sleep_ms(1)

    def read_fixed(self, command=None, wait_ms=None):
        """One measurement in fixed point: (milli-degC, milli-%RH); humidity clamped to 0..100000."""
        if command is None:
            command, wait_ms = self._command, self._measure_ms
        t_ticks, rh_ticks = self._transaction(command, wait_ms)
        # T = -45 + 175 * S_T / (2^16 - 1); RH = -6 + 125 * S_RH / (2^16 - 1), rounded to the nearest milli-unit.
        temperature = -45000 + (175000 * t_ticks + 32767) // 65535
        humidity = -6000 + (125000 * rh_ticks + 32767) // 65535
        if humidity < 0:
            humidity = 0
        if humidity > 100000:
            humidity = 100000
        return temperature, humidity

    def heat(self, setting="20mW-0.1s"):
        """Run the heater (to drive off condensation) and return the measurement it ends with."""
        command, wait_ms = choose("heater", setting, _HEATER)
        temperature, humidity = self.read_fixed(command, wait_ms)
        return {"temperature": temperature / 1000, "humidity": humidity / 1000}

    def read(self):
        temperature, humidity = self.read_fixed()
        return {"temperature": temperature / 1000, "humidity": humidity / 1000}

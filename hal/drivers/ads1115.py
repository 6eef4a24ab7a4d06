"""TI ADS1115 16-bit ADC over I2C, single-shot conversions.

Each input is converted on demand: write the config register with OS=1 (start), wait one
conversion period, poll OS until it reads 1 again (conversion done) up to a deadline, then read the
signed conversion register. The part has no id register; ``identify`` checks the threshold
registers' reset values (0x8000 / 0x7FFF), which this driver never writes and which the usual
neighbours at 0x48 (LM75, TMP102: 0x4B00 / 0x5000) do not have. Datasheet SBAS444D.
"""

from hal.drivers.compat import const
from hal.drivers.register import I2CDevice, choose
from hal.errors import ChipIdError, SensorTimeout

_REG_CONVERSION = const(0x00)
_REG_CONFIG = const(0x01)
_REG_LO_THRESH = const(0x02)
_REG_HI_THRESH = const(0x03)

CONFIG_RESET = const(0x8583)
LO_THRESH_RESET = const(0x8000)
HI_THRESH_RESET = const(0x7FFF)

_OS = const(0x8000)  # write: start a single conversion; read: 1 = idle
_MODE_SINGLE = const(0x0100)
_COMP_QUE_DISABLE = const(0x0003)

# Full-scale range in mV -> PGA code (bits 11:9).
_RANGE_MV = ((6144, 0), (4096, 1), (2048, 2), (1024, 3), (512, 4), (256, 5))
# Samples per second -> DR code (bits 7:5).
_DATA_RATE = ((8, 0), (16, 1), (32, 2), (64, 3), (128, 4), (250, 5), (475, 6), (860, 7))
# Single-ended inputs AIN0..AIN3 against GND -> MUX code (bits 14:12).
_MUX_SINGLE = (4, 5, 6, 7)
_MUX_DIFFERENTIAL = (("0-1", 0), ("0-3", 1), ("1-3", 2), ("2-3", 3))


class ADS1115(I2CDevice):
    """ADS1115 at ``address`` (0x48..0x4B, by where ADDR is tied).

    Settings: ``channels`` (read AIN0..AIN<n-1> single-ended, 1-4), ``range_mv`` (full scale:
    6144, 4096, 2048, 1024, 512, 256), ``data_rate`` (8..860 samples/s). ``read()`` returns the
    volts on each input as ``ain0``.. ``ain3``.
    """

    CHIP = "ADS1115"
    ADDRESSES = (0x48, 0x49, 0x4A, 0x4B)
    UNITS = {"ain0": "V", "ain1": "V", "ain2": "V", "ain3": "V"}
    OPTIONS = {
        "channels": (1, 2, 3, 4),
        "range_mv": (6144, 4096, 2048, 1024, 512, 256),
        "data_rate": (8, 16, 32, 64, 128, 250, 475, 860),
    }

    def __init__(self, i2c, address=0x48, clock=None, channels=4, range_mv=2048, data_rate=128):
        super().__init__(i2c, address, clock)
        if channels not in (1, 2, 3, 4):
            raise_setting("channels", channels, "1, 2, 3 or 4")
        self.channels = channels
        self.range_mv = range_mv
        self._pga = choose("range_mv", range_mv, _RANGE_MV)
        self._dr = choose("data_rate", data_rate, _DATA_RATE)
        # One conversion takes 1/data_rate s (+10 % oscillator tolerance); round up to whole ms.
        self.conversion_ms = (1100 + data_rate - 1) // data_rate + 1
        self._word = bytearray(2)
        self.UNITS = {}
        for i in range(channels):
            self.UNITS["ain%d" % i] = "V"

    def _read_u16(self, reg):
        self.read_into(reg, self._word)
        return (self._word[0] << 8) | self._word[1]

    def _write_u16(self, reg, value):
        self._word[0] = value >> 8
        self._word[1] = value & 0xFF
        self.write_mem(reg, self._word)

    def identify(self):
        lo = self._read_u16(_REG_LO_THRESH)
        hi = self._read_u16(_REG_HI_THRESH)
        if lo != LO_THRESH_RESET or hi != HI_THRESH_RESET:
            raise ChipIdError(self.CHIP, (LO_THRESH_RESET, HI_THRESH_RESET), (lo, hi),
                              "%s at 0x%02x: threshold registers read 0x%04x/0x%04x, expected 0x8000/0x7fff: "
                              "another part (an LM75 or TMP102?) sits at this address"
                              % (self.CHIP, self.address, lo, hi))
        return self.CHIP

    def convert(self, mux):
        """One single-shot conversion with MUX code ``mux``: the signed 16-bit result."""
        config = _OS | (mux << 12) | (self._pga << 9) | _MODE_SINGLE | (self._dr << 5) | _COMP_QUE_DISABLE
        self._write_u16(_REG_CONFIG, config)
        self.clock.sleep_ms(self.conversion_ms)
        deadline = self.deadline(2 * self.conversion_ms + 10)
        while not self._read_u16(_REG_CONFIG) & _OS:
            if self.expired(deadline):
                raise SensorTimeout("%s at 0x%02x: conversion not ready %d ms after start"
                                    % (self.CHIP, self.address, 3 * self.conversion_ms + 10))
            self.clock.sleep_ms(1)
        raw = self._read_u16(_REG_CONVERSION)
        return raw - 0x10000 if raw & 0x8000 else raw

    def microvolts(self, raw):
        """A raw result in microvolts (full scale = 32768 counts), rounded toward zero."""
        value = abs(raw) * self.range_mv * 1000 // 32768
        return -value if raw < 0 else value

    def read_channel(self, channel):
        """Volts on AIN``channel`` (0-3) against GND."""
        if channel not in (0, 1, 2, 3):
            raise_setting("channel", channel, "0, 1, 2 or 3")
        return self.microvolts(self.convert(_MUX_SINGLE[channel])) / 1000000

    def read_differential(self, pair):
        """Volts between two inputs: ``pair`` is "0-1", "0-3", "1-3" or "2-3"."""
        return self.microvolts(self.convert(choose("pair", pair, _MUX_DIFFERENTIAL))) / 1000000

    def read(self):
        values = {}
        for channel in range(self.channels):
            values["ain%d" % channel] = self.read_channel(channel)
        return values


def raise_setting(name, value, allowed):
    from hal.errors import SettingError

    raise SettingError("%s must be %s, got %r" % (name, allowed, value))

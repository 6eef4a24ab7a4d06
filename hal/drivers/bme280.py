"""Bosch BME280 temperature, pressure and humidity sensor over I2C, in forced mode.

Each ``read()`` starts one measurement, waits the datasheet's maximum measurement time (then
polls the ``measuring`` bit up to a deadline), and compensates the raw values with Bosch's
integer formulas (datasheet rev 1.6, sections 4.2.3 and 8.2): 32-bit temperature and humidity,
64-bit pressure. Results are bit-identical on CPython and MicroPython.
"""

import struct

from hal.drivers.compat import const
from hal.drivers.register import BitField, I2CDevice, choose
from hal.errors import ChipIdError, SensorTimeout

_REG_CALIB_TP = const(0x88)  # 0x88..0xA1: dig_T1..dig_P9, (0xA0 unused), dig_H1
_REG_CHIP_ID = const(0xD0)
_REG_RESET = const(0xE0)
_REG_CALIB_H = const(0xE1)  # 0xE1..0xE7: dig_H2..dig_H6
_REG_CTRL_HUM = const(0xF2)
_REG_STATUS = const(0xF3)
_REG_CTRL_MEAS = const(0xF4)
_REG_CONFIG = const(0xF5)
_REG_DATA = const(0xF7)  # 0xF7..0xFE: press[3], temp[3], hum[2]

CHIP_ID = const(0x60)
_RESET_WORD = const(0xB6)
_MODE_FORCED = const(0x01)
_STATUS_MEASURING = const(0x08)
_STATUS_IM_UPDATE = const(0x01)

# Register fields, declared as data.
OSRS_H = BitField(_REG_CTRL_HUM, 0x07)
OSRS_T = BitField(_REG_CTRL_MEAS, 0xE0)
OSRS_P = BitField(_REG_CTRL_MEAS, 0x1C)
MODE = BitField(_REG_CTRL_MEAS, 0x03)
FILTER = BitField(_REG_CONFIG, 0x1C)

# Oversampling factor -> register code (0 = measurement skipped).
_OVERSAMPLING = ((0, 0), (1, 1), (2, 2), (4, 3), (8, 4), (16, 5))
_FILTER = ((0, 0), (2, 1), (4, 2), (8, 3), (16, 4))


class BME280(I2CDevice):
    """BME280 at ``address`` (0x76 with SDO low, 0x77 with SDO high).

    Settings: ``temperature_oversampling`` (1, 2, 4, 8, 16), ``pressure_oversampling`` and
    ``humidity_oversampling`` (0 skips the quantity, 1, 2, 4, 8, 16), ``filter`` (IIR coefficient
    0, 2, 4, 8, 16). ``read()`` returns temperature (degC), pressure (Pa), humidity (%RH).
    """

    CHIP = "BME280"
    ADDRESSES = (0x76, 0x77)
    UNITS = {"temperature": "degC", "pressure": "Pa", "humidity": "%RH"}
    OPTIONS = {
        "temperature_oversampling": (1, 2, 4, 8, 16),
        "pressure_oversampling": (0, 1, 2, 4, 8, 16),
        "humidity_oversampling": (0, 1, 2, 4, 8, 16),
        "filter": (0, 2, 4, 8, 16),
    }

    def __init__(self, i2c, address=0x76, clock=None, temperature_oversampling=1, pressure_oversampling=1,
                 humidity_oversampling=1, filter=0):
        super().__init__(i2c, address, clock)
        if temperature_oversampling == 0:
            # Pressure and humidity compensation need t_fine from a temperature measurement.
            choose("temperature_oversampling", temperature_oversampling, _OVERSAMPLING[1:])
        self._osrs_t = choose("temperature_oversampling", temperature_oversampling, _OVERSAMPLING)
        self._osrs_p = choose("pressure_oversampling", pressure_oversampling, _OVERSAMPLING)
        self._osrs_h = choose("humidity_oversampling", humidity_oversampling, _OVERSAMPLING)
        self._filter = choose("filter", filter, _FILTER)
        # Datasheet 9.1, maximum measurement time in microseconds.
        t_us = 1250 + 2300 * temperature_oversampling
        if pressure_oversampling:
            t_us += 2300 * pressure_oversampling + 575
        if humidity_oversampling:
            t_us += 2300 * humidity_oversampling + 575
        self.measure_ms = (t_us + 999) // 1000
        self._calib = None
        self._configured = False
        self._data = bytearray(8)
        self._calib_tp = bytearray(26)
        self._calib_h = bytearray(7)
        self.t_fine = 0

    def identify(self):
        """Check the chip-id register (0xD0 == 0x60); return the chip name."""
        found = self.read_u8(_REG_CHIP_ID)
        if found != CHIP_ID:
            raise ChipIdError(self.CHIP, CHIP_ID, found,
                              "%s: chip id 0x%02x at 0xd0, expected 0x60 (0x58 is a BMP280, which has no humidity)"
                              % (self.CHIP, found))
        return self.CHIP

    def reset(self):
        """Soft reset; calibration is read again and settings rewritten on the next read."""
        self.write_u8(_REG_RESET, _RESET_WORD)
        self._calib = None
        self._configured = False

    def _load_calibration(self):
        deadline = self.deadline(20)
        # NVM copy to the image registers runs after power-on/reset (status bit im_update).
        while self.read_u8(_REG_STATUS) & _STATUS_IM_UPDATE:
            if self.expired(deadline):
                raise SensorTimeout("%s at 0x%02x: calibration copy (im_update) did not finish"
                                    % (self.CHIP, self.address))
            self.clock.sleep_ms(2)
        self.read_into(_REG_CALIB_TP, self._calib_tp)
        self.read_into(_REG_CALIB_H, self._calib_h)
        self._calib = parse_calibration(self._calib_tp, self._calib_h)

    def _configure(self):
        # The filter is only written in sleep mode; in forced mode the part returns to sleep on its own.
        self.set_field(FILTER, self._filter)
        self._configured = True

    def measure_raw(self):
        """Run one forced measurement; return (adc_T, adc_P, adc_H)."""
        if self._calib is None:
            self._load_calibration()
        if not self._configured:
            self._configure()
        # ctrl_hum goes out before every measurement: it takes effect only with the ctrl_meas write
        # that follows, and a brown-out resets it to "humidity skipped", which would read as garbage.
        # Its bits 7:3 are unused, so no read-modify-write is needed.
        self.write_u8(_REG_CTRL_HUM, self._osrs_h)
        self.write_u8(_REG_CTRL_MEAS, (self._osrs_t << 5) | (self._osrs_p << 2) | _MODE_FORCED)
        self.clock.sleep_ms(self.measure_ms)
        deadline = self.deadline(2 * self.measure_ms + 10)
        while self.read_u8(_REG_STATUS) & _STATUS_MEASURING:
            if self.expired(deadline):
                raise SensorTimeout("%s at 0x%02x: measurement did not finish within %d ms"
                                    % (self.CHIP, self.address, 3 * self.measure_ms + 10))
            self.clock.sleep_ms(1)
        d = self._data
        self.read_into(_REG_DATA, d)
        adc_p = (d[0] << 12) | (d[1] << 4) | (d[2] >> 4)
        adc_t = (d[3] << 12) | (d[4] << 4) | (d[5] >> 4)
        adc_h = (d[6] << 8) | d[7]
        return adc_t, adc_p, adc_h

    def read_fixed(self):
        """One measurement in fixed point: (centi-degC, Pa * 256, %RH * 1024); None for skipped quantities."""
        adc_t, adc_p, adc_h = self.measure_raw()
        c = self._calib
        self.t_fine = t_fine = compensate_t_fine(adc_t, c)
        temperature = (t_fine * 5 + 128) >> 8
        pressure = compensate_pressure(adc_p, t_fine, c) if self._osrs_p else None
        humidity = compensate_humidity(adc_h, t_fine, c) if self._osrs_h else None
        return temperature, pressure, humidity

    def read(self):
        temperature, pressure, humidity = self.read_fixed()
        values = {"temperature": temperature / 100}
        if pressure is not None:
            values["pressure"] = pressure / 256
        if humidity is not None:
            values["humidity"] = humidity / 1024
        return values


def parse_calibration(tp, h):
    """The trimming parameters from the two NVM blocks (26 bytes at 0x88, 7 bytes at 0xE1), as a tuple.

    Order: T1, T2, T3, P1..P9, H1..H6.
    """
    t_p = struct.unpack("<HhhHhhhhhhhh", bytes(tp[0:24]))
    h1 = tp[25]
    h2, h3 = struct.unpack("<hB", bytes(h[0:3]))
    h4 = (_s8(h[3]) << 4) | (h[4] & 0x0F)
    h5 = (_s8(h[5]) << 4) | (h[4] >> 4)
    h6 = _s8(h[6])
    return t_p + (h1, h2, h3, h4, h5, h6)


def _s8(value):
    return value - 256 if value > 127 else value


def _div(a, b):
    # C integer division truncates toward zero; Python's // floors.
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def compensate_t_fine(adc_t, c):
    """Bosch BME280_compensate_T_int32, returning t_fine (temperature = (t_fine * 5 + 128) >> 8)."""
    t1, t2, t3 = c[0], c[1], c[2]
    var1 = (((adc_t >> 3) - (t1 << 1)) * t2) >> 11
    var2 = (((((adc_t >> 4) - t1) * ((adc_t >> 4) - t1)) >> 12) * t3) >> 14
    return var1 + var2


def compensate_pressure(adc_p, t_fine, c):
    """Bosch BME280_compensate_P_int64: pressure in Pa as Q24.8 (divide by 256)."""
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
    var1 = t_fine - 128000
    var2 = var1 * var1 * p6
    var2 = var2 + ((var1 * p5) << 17)
    var2 = var2 + (p4 << 35)
    var1 = ((var1 * var1 * p3) >> 8) + ((var1 * p2) << 12)
    var1 = (((1 << 47) + var1) * p1) >> 33
    if var1 == 0:
        return 0  # avoid a division by zero, as Bosch's code does
    p = 1048576 - adc_p
    p = _div(((p << 31) - var2) * 3125, var1)
    var1 = (p9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (p8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (p7 << 4)


def compensate_humidity(adc_h, t_fine, c):
    """Bosch bme280_compensate_H_int32: relative humidity as Q22.10 (divide by 1024), clamped to 0..100 %."""
    h1, h2, h3, h4, h5, h6 = c[12], c[13], c[14], c[15], c[16], c[17]
    v = t_fine - 76800
    v = ((((adc_h << 14) - (h4 << 20) - (h5 * v)) + 16384) >> 15) * (
        ((((((v * h6) >> 10) * (((v * h3) >> 11) + 32768)) >> 10) + 2097152) * h2 + 8192) >> 14
    )
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * h1) >> 4)
    if v < 0:
        v = 0
    if v > 419430400:
        v = 419430400
    return v >> 12

"""BME280: Bosch's datasheet vectors, the forced-mode sequence and every fault, through a fake bus."""

import struct

from hal_fakes import FakeI2C, RegisterDevice, approx, clock, raises

from hal.drivers.bme280 import (
    BME280,
    compensate_humidity,
    compensate_pressure,
    compensate_t_fine,
    parse_calibration,
)
from hal.errors import ChipIdError, NackError, SensorTimeout, SettingError

# Datasheet rev 1.6, section 8.1 example trimming values; humidity trimming from a real part.
T = (27504, 26435, -1000)
P = (36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000)
H = (75, 362, 0, 313, 50, 30)
CALIB = T + P + H
ADC_T = 519888
ADC_P = 415148
ADC_H = 30000


def calibration_bytes(t, p, h):
    h1, h2, h3, h4, h5, h6 = h
    tp = struct.pack("<HhhHhhhhhhhh", *(t + p)) + bytes([0, h1])
    e4 = (h4 >> 4) & 0xFF
    e5 = (h4 & 0x0F) | ((h5 & 0x0F) << 4)
    e6 = (h5 >> 4) & 0xFF
    hb = struct.pack("<hB", h2, h3) + bytes([e4, e5, e6]) + struct.pack("<b", h6)
    return tp, hb


class BME280Model(RegisterDevice):
    """Just enough of a BME280: chip id, trimming NVM, forced mode with a measuring bit."""

    def __init__(self, clk, chip_id=0x60, adc=(ADC_T, ADC_P, ADC_H), busy_ms=None):
        tp, hb = calibration_bytes(T, P, H)
        super().__init__({0xD0: chip_id, 0x88: tp, 0xE1: hb})
        self.clock = clk
        self.busy_until = None
        self.busy_ms = busy_ms
        self.measurements = 0
        adc_t, adc_p, adc_h = adc
        self.regs[0xF7:0xFF] = bytes([
            adc_p >> 12, (adc_p >> 4) & 0xFF, (adc_p & 0x0F) << 4,
            adc_t >> 12, (adc_t >> 4) & 0xFF, (adc_t & 0x0F) << 4,
            adc_h >> 8, adc_h & 0xFF,
        ])
        self.on_write = self._written
        self.on_read = self._reading

    def _written(self, reg, data):
        if reg == 0xF4 and data[0] & 0x03 == 0x01:
            self.measurements += 1
            busy = self.busy_ms if self.busy_ms is not None else 8
            self.busy_until = self.clock.ticks_ms() + busy
            self.regs[0xF3] |= 0x08

    def _reading(self, reg, n):
        if self.busy_until is not None and self.clock.ticks_ms() >= self.busy_until:
            self.regs[0xF3] &= ~0x08
            self.busy_until = None


def make(**settings):
    clk = clock()
    model = BME280Model(clk, **settings)
    return BME280(FakeI2C({0x76: model}), clock=clk), model, clk


def test_datasheet_temperature_vector():
    t_fine = compensate_t_fine(ADC_T, CALIB)
    assert t_fine == 128422
    assert (t_fine * 5 + 128) >> 8 == 2508  # 25.08 degC


def test_datasheet_pressure_vector():
    pressure = compensate_pressure(ADC_P, 128422, CALIB)
    assert pressure == 25767233
    assert int(pressure / 256 * 100) == 10065325  # 100653.25 Pa


def humidity_float(adc_h, t_fine, c):
    """The datasheet's floating-point humidity formula (section 8.1), as an independent reference."""
    h1, h2, h3, h4, h5, h6 = c[12:18]
    v = t_fine - 76800.0
    v = (adc_h - (h4 * 64.0 + h5 / 16384.0 * v)) * (h2 / 65536.0 * (1.0 + h6 / 67108864.0 * v * (1.0 + h3 / 67108864.0 * v)))
    v = v * (1.0 - h1 * v / 524288.0)
    return min(max(v, 0.0), 100.0)


def test_humidity_integer_formula_agrees_with_float_formula():
    for t_fine in (76800, 128422, 51200 * 5 // 5, 20000):
        for adc_h in (20000, 25000, 30000, 35000, 40000):
            fixed = compensate_humidity(adc_h, t_fine, CALIB) / 1024
            reference = humidity_float(adc_h, t_fine, CALIB)
            assert approx(fixed, reference, 0.05), (t_fine, adc_h, fixed, reference)


def test_humidity_is_clamped_to_0_and_100_percent():
    assert compensate_humidity(0, 128422, CALIB) == 0
    assert compensate_humidity(65535, 128422, CALIB) == 100 * 1024


def test_pressure_guards_division_by_zero():
    # dig_P1 == 0 makes the divisor 0; Bosch returns 0 rather than dividing.
    c = CALIB[:3] + (0,) + CALIB[4:]
    assert compensate_pressure(ADC_P, 128422, c) == 0


def test_calibration_parsing_unpacks_the_split_humidity_nibbles():
    for h4, h5 in ((313, 50), (-300, -7), (2047, -2048)):
        tp, hb = calibration_bytes(T, P, (75, 362, 0, h4, h5, -30))
        c = parse_calibration(tp, hb)
        assert c[:12] == T + P
        assert c[12:] == (75, 362, 0, h4, h5, -30)


def test_forced_read_returns_compensated_values():
    sensor, model, _ = make()
    assert sensor.identify() == "BME280"
    values = sensor.read()
    assert values["temperature"] == 25.08
    assert values["pressure"] == 100653.25390625
    assert values["humidity"] == compensate_humidity(ADC_H, 128422, CALIB) / 1024
    assert sensor.t_fine == 128422
    assert model.measurements == 1


def test_forced_read_writes_ctrl_hum_then_ctrl_meas_every_time():
    sensor, model, _ = make()
    sensor = BME280(sensor.i2c, clock=sensor.clock, temperature_oversampling=2, pressure_oversampling=16,
                    humidity_oversampling=4, filter=8)
    sensor.read()
    sensor.read()
    regs = [reg for reg, _ in model.writes if reg in (0xF2, 0xF4)]
    assert regs == [0xF2, 0xF4, 0xF2, 0xF4]
    ctrl_meas = [data[0] for reg, data in model.writes if reg == 0xF4]
    assert ctrl_meas == [(2 << 5) | (5 << 2) | 1] * 2  # osrs_t x2, osrs_p x16, forced
    assert model.regs[0xF2] & 0x07 == 3  # osrs_h x4
    assert (model.regs[0xF5] >> 2) & 0x07 == 3  # filter 8
    assert model.measurements == 2


def test_measurement_time_follows_the_datasheet():
    # 1.25 + 2.3 * 1 + (2.3 * 1 + 0.575) * 2 = 9.3 ms -> 10 ms
    assert make()[0].measure_ms == 10
    sensor = BME280(FakeI2C(), clock=clock(), temperature_oversampling=16, pressure_oversampling=16,
                    humidity_oversampling=16)
    assert sensor.measure_ms == 113  # 1.25 + 36.8 + 37.375 * 2 = 112.8 ms


def test_humidity_setting_survives_a_brown_out():
    sensor, model, _ = make()
    sensor.read()
    model.regs[0xF2] = 0x00  # the part reset: humidity skipped
    sensor.read()
    assert model.regs[0xF2] == 0x01


def test_skipped_quantities_are_left_out():
    sensor, _, _ = make()
    sensor = BME280(sensor.i2c, clock=sensor.clock, pressure_oversampling=0, humidity_oversampling=0)
    values = sensor.read()
    assert sorted(values) == ["temperature"]


def test_wrong_chip_id_is_a_chip_id_error():
    sensor, _, _ = make(chip_id=0x58)
    exc = raises(ChipIdError, sensor.identify)
    assert exc.found == 0x58 and exc.expected == 0x60
    assert "BMP280" in str(exc)


def test_missing_part_is_a_nack_error():
    sensor = BME280(FakeI2C({}), clock=clock())
    exc = raises(NackError, sensor.read)
    assert exc.address == 0x76
    assert exc.kind == "nack"


def test_a_part_that_never_finishes_times_out():
    sensor, _, clk = make(busy_ms=10 ** 6)
    exc = raises(SensorTimeout, sensor.read)
    assert "did not finish" in str(exc)
    assert clk.ticks_ms() < 100  # the deadline, not the part, ended the wait


def test_a_slow_part_is_waited_for():
    sensor, _, _ = make(busy_ms=25)
    assert sensor.read()["temperature"] == 25.08


def test_bad_settings_are_setting_errors():
    i2c = FakeI2C()
    assert "oversampling" in str(raises(SettingError, BME280, i2c, clock=clock(), pressure_oversampling=3))
    assert "temperature" in str(raises(SettingError, BME280, i2c, clock=clock(), temperature_oversampling=0))
    assert "filter" in str(raises(SettingError, BME280, i2c, clock=clock(), filter=5))
    assert "0x76" in str(raises(SettingError, BME280, i2c, address=0x40, clock=clock()))

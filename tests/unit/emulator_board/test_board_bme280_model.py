"""The BME280 model: datasheet compensation, inverted raw values, forced/normal mode, NVM, faults."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.board.clock import EmulatorClock
from emulator.board.i2c_bus import I2CBus, Message
from emulator.board.models import bme280 as m
from emulator.board.signals import Environment

CAL = m.Calibration()


def test_compensation_matches_the_datasheet_example() -> None:
    temperature, t_fine = m.compensate_temperature(519888, CAL)
    assert (temperature, t_fine) == (2508, 128422)
    assert m.compensate_pressure(415148, t_fine, CAL) / 256 == pytest.approx(100653.25, abs=0.01)


@settings(max_examples=60, deadline=None)
@given(celsius=st.floats(-40, 85), pascal=st.floats(30_000, 110_000), rh=st.floats(0, 100))
def test_raw_values_compensate_back_to_the_target(celsius: float, pascal: float, rh: float) -> None:
    adc_t = m.raw_temperature_for(celsius, CAL)
    temperature, t_fine = m.compensate_temperature(adc_t, CAL)
    # "Within the formula's resolution": half the largest step between neighbouring ADC codes over the
    # whole range with the datasheet calibration (t_fine 14 counts, P 51/256 Pa, RH 14/1024 %).
    assert abs(t_fine / 5120 - celsius) <= 7 / 5120
    assert abs(temperature / 100 - celsius) <= 0.005 + 7 / 5120  # the output is rounded to 0.01 degC
    adc_p = m.raw_pressure_for(pascal, t_fine, CAL)
    assert abs(m.compensate_pressure(adc_p, t_fine, CAL) / 256 - pascal) <= 26 / 256
    adc_h = m.raw_humidity_for(rh, t_fine, CAL)
    assert abs(m.compensate_humidity(adc_h, t_fine, CAL) / 1024 - rh) <= 7 / 1024


def test_nvm_layout_parses_back_to_the_calibration() -> None:
    low, high = CAL.nvm_low(), CAL.nvm_high()
    assert len(low) == 26 and len(high) == 7
    t1, t2, t3, p1, *_, p9 = struct.unpack("<HhhHhhhhhhhh", low[:24])
    assert (t1, t2, t3, p1, p9) == (CAL.T1, CAL.T2, CAL.T3, CAL.P1, CAL.P9)
    assert low[25] == CAL.H1
    h2, h3 = struct.unpack("<hB", high[:3])
    h4 = (struct.unpack("b", high[3:4])[0] << 4) | (high[4] & 0x0F)
    h5 = (struct.unpack("b", high[5:6])[0] << 4) | (high[4] >> 4)
    assert (h2, h3, h4, h5, struct.unpack("b", high[6:7])[0]) == (CAL.H2, CAL.H3, CAL.H4, CAL.H5, CAL.H6)


class Rig:
    """A BME280 model on a bus, driven with raw register transfers and a manual clock."""

    def __init__(self) -> None:
        self.clock = EmulatorClock()
        self.env = Environment(quiet=True)
        self.env.temperature_c.hold(23.45)
        self.env.pressure_pa.hold(98_765.4)
        self.env.humidity_rh.hold(55.5)
        self.bus = I2CBus("i2c1")
        self.part = self.bus.attach(m.Bme280Model(0x76, self.clock, self.env))
        self.clock.advance(0.01)  # past the NVM copy

    def write(self, register: int, value: int) -> None:
        self.bus.transfer([Message(0x76, False, bytes([register, value]))])

    def read(self, register: int, length: int) -> bytes:
        return self.bus.transfer([Message(0x76, False, bytes([register])), Message(0x76, True, length=length)])[0]

    def decode(self) -> tuple[int, int, int]:
        d = self.read(m.REG_DATA, 8)
        return (d[3] << 12) | (d[4] << 4) | (d[5] >> 4), (d[0] << 12) | (d[1] << 4) | (d[2] >> 4), (d[6] << 8) | d[7]

    def values(self) -> tuple[float, float, float]:
        adc_t, adc_p, adc_h = self.decode()
        temperature, t_fine = m.compensate_temperature(adc_t, CAL)
        return (temperature / 100, m.compensate_pressure(adc_p, t_fine, CAL) / 256,
                m.compensate_humidity(adc_h, t_fine, CAL) / 1024)


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_chip_id_and_power_on_data(rig: Rig) -> None:
    assert rig.read(m.REG_CHIP_ID, 1) == b"\x60"
    assert rig.decode() == (m.SKIPPED_20BIT, m.SKIPPED_20BIT, m.SKIPPED_16BIT)
    assert rig.read(m.REG_CALIB00, 26) == CAL.nvm_low()


def test_forced_measurement_sets_measuring_then_returns_to_sleep(rig: Rig) -> None:
    rig.write(m.REG_CTRL_HUM, 0x05)  # x16
    rig.write(m.REG_CTRL_MEAS, (5 << 5) | (5 << 2) | 0x01)
    assert rig.read(m.REG_STATUS, 1)[0] & 0x08
    rig.clock.advance(m.measurement_time_s(16, 16, 16) - 0.001)
    assert rig.read(m.REG_STATUS, 1)[0] & 0x08, "still converting before the datasheet time"
    rig.clock.advance(0.002)
    assert rig.read(m.REG_STATUS, 1)[0] == 0
    assert rig.read(m.REG_CTRL_MEAS, 1)[0] & 0x03 == 0  # back to sleep mode
    temperature, pressure, humidity = rig.values()
    assert temperature == pytest.approx(23.45 + 0.0, abs=0.01)
    assert pressure == pytest.approx(98_765.4, abs=0.2)
    assert humidity == pytest.approx(55.5, abs=0.01)
    assert rig.part.conversions == 1


def test_oversampling_x1_keeps_16_bits_and_skipped_reads_0x80000(rig: Rig) -> None:
    rig.write(m.REG_CTRL_MEAS, (1 << 5) | (0 << 2) | 0x01)  # T x1, P skipped, humidity never enabled
    rig.clock.advance(0.05)
    adc_t, adc_p, adc_h = rig.decode()
    assert adc_t & 0xF == 0
    assert adc_p == m.SKIPPED_20BIT
    assert adc_h == m.SKIPPED_16BIT


def test_ctrl_hum_waits_for_a_ctrl_meas_write(rig: Rig) -> None:
    rig.write(m.REG_CTRL_MEAS, (1 << 5) | (1 << 2) | 0x01)
    rig.clock.advance(0.05)
    rig.write(m.REG_CTRL_HUM, 0x01)  # not latched: the next conversion would still skip humidity ...
    assert rig.decode()[2] == m.SKIPPED_16BIT
    rig.write(m.REG_CTRL_MEAS, (1 << 5) | (1 << 2) | 0x01)  # ... until ctrl_meas is written
    rig.clock.advance(0.05)
    assert rig.decode()[2] != m.SKIPPED_16BIT


def test_soft_reset_restores_defaults_and_copies_nvm(rig: Rig) -> None:
    rig.write(m.REG_CONFIG, 0x10)
    rig.write(m.REG_RESET, 0xB6)
    assert rig.read(m.REG_STATUS, 1)[0] & 0x01  # im_update during the NVM copy
    assert rig.read(m.REG_CONFIG, 1) == b"\x00"
    rig.clock.advance(m.STARTUP_S)
    assert rig.read(m.REG_STATUS, 1)[0] & 0x01 == 0
    rig.write(m.REG_RESET, 0x00)  # anything but 0xB6 is ignored
    assert rig.read(m.REG_CHIP_ID, 1) == b"\x60"


def test_normal_mode_with_iir_filter_converges_on_a_step(rig: Rig) -> None:
    rig.write(m.REG_CONFIG, 4 << 2)  # filter coefficient 16
    rig.write(m.REG_CTRL_MEAS, (1 << 5) | (1 << 2) | 0x03)
    rig.clock.advance(0.1)
    assert rig.values()[0] == pytest.approx(23.45, abs=0.01)
    rig.env.temperature_c.hold(33.45)
    rig.clock.advance(m.measurement_time_s(1, 1, 0) + m.STANDBY_S[0])
    first = rig.values()[0]
    assert 23.45 < first < 28.0  # one cycle moves it a sixteenth of the way
    rig.clock.advance(2.0)  # many cycles later
    assert rig.values()[0] == pytest.approx(33.45, abs=0.05)


def test_writes_to_read_only_registers_are_ignored(rig: Rig) -> None:
    rig.write(m.REG_CHIP_ID, 0x00)
    rig.write(m.REG_CALIB00, 0x00)
    assert rig.read(m.REG_CHIP_ID, 1) == b"\x60"
    assert rig.read(m.REG_CALIB00, 26) == CAL.nvm_low()


def test_faults_busy_stuck_wrong_chip(rig: Rig) -> None:
    rig.part.faults.inject("wrong_chip")
    assert rig.read(m.REG_CHIP_ID, 1)[0] == m.BMP280_CHIP_ID
    rig.write(m.REG_CTRL_MEAS, (1 << 5) | (1 << 2) | 0x01)
    rig.clock.advance(0.05)
    before = rig.decode()
    rig.part.faults.inject("stuck")
    rig.env.temperature_c.hold(30.0)
    rig.write(m.REG_CTRL_MEAS, (1 << 5) | (1 << 2) | 0x01)
    rig.clock.advance(0.05)
    assert rig.decode() == before
    rig.part.faults.inject("busy")
    rig.write(m.REG_CTRL_MEAS, (1 << 5) | (1 << 2) | 0x01)
    rig.clock.advance(1.0)
    assert rig.read(m.REG_STATUS, 1)[0] & 0x08
    rig.part.faults.clear()
    rig.clock.advance(0.05)
    assert rig.values()[0] == pytest.approx(30.0, abs=0.01)

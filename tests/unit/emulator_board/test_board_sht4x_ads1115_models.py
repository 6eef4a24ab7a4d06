"""The SHT4x (command/response, CRC, NACK while busy) and ADS1115 (config, OS bit, PGA) models."""

from __future__ import annotations

import pytest

from emulator.board.clock import EmulatorClock
from emulator.board.i2c_bus import I2CBus, Message, Nack
from emulator.board.models import ads1115 as ads
from emulator.board.models import sht4x as sht
from emulator.board.signals import Environment, Signal


@pytest.fixture
def clock() -> EmulatorClock:
    return EmulatorClock()


@pytest.fixture
def env() -> Environment:
    env = Environment(quiet=True)
    env.temperature_c.hold(24.5)
    env.humidity_rh.hold(38.25)
    return env


def test_sensirion_crc_datasheet_vector() -> None:
    assert sht.crc8(b"\xbe\xef") == 0x92
    assert sht.word_with_crc(0xBEEF) == b"\xbe\xef\x92"


def command(bus: I2CBus, byte: int) -> None:
    bus.transfer([Message(0x44, False, bytes([byte]))])


def read6(bus: I2CBus) -> bytes:
    return bus.transfer([Message(0x44, True, length=6)])[0]


def decode(data: bytes) -> tuple[float, float]:
    assert sht.crc8(data[0:2]) == data[2] and sht.crc8(data[3:5]) == data[5]
    return (-45 + 175 * int.from_bytes(data[0:2], "big") / 65535,
            -6 + 125 * int.from_bytes(data[3:5], "big") / 65535)


def test_sht4x_measures_after_its_conversion_time(clock: EmulatorClock, env: Environment) -> None:
    bus = I2CBus("i2c1")
    bus.attach(sht.Sht4xModel(0x44, clock, env))
    with pytest.raises(Nack):
        read6(bus)  # nothing requested yet: the read header is NACKed
    command(bus, sht.CMD_MEASURE_HIGH)
    with pytest.raises(Nack):
        read6(bus)  # still converting
    clock.advance(0.0083)  # datasheet maximum for high repeatability
    temperature, humidity = decode(read6(bus))
    assert temperature == pytest.approx(24.5, abs=175 / 65535)
    assert humidity == pytest.approx(38.25, abs=125 / 65535)
    with pytest.raises(Nack):
        read6(bus)  # the result was read: nothing left


def test_sht4x_serial_reset_unknown_command_and_heater(clock: EmulatorClock, env: Environment) -> None:
    bus = I2CBus("i2c1")
    part = bus.attach(sht.Sht4xModel(0x44, clock, env, serial=0x12345678, noise=False))
    command(bus, sht.CMD_SERIAL)
    clock.advance(0.001)
    data = read6(bus)
    assert data == sht.word_with_crc(0x1234) + sht.word_with_crc(0x5678)
    with pytest.raises(Nack):
        command(bus, 0x42)
    command(bus, 0x39)  # 200 mW for 1 s, then a measurement
    clock.advance(0.5)
    with pytest.raises(Nack):
        read6(bus)
    clock.advance(0.6)
    heated_t, heated_rh = decode(read6(bus))
    assert heated_t > 24.5 + 5 and heated_rh < 38.25
    command(bus, sht.CMD_MEASURE_LOW)
    command(bus, sht.CMD_SOFT_RESET)
    clock.advance(0.01)
    with pytest.raises(Nack):
        read6(bus)  # the reset dropped the pending measurement
    assert part.commands[-2:] == [sht.CMD_MEASURE_LOW, sht.CMD_SOFT_RESET]


def test_sht4x_faults(clock: EmulatorClock, env: Environment) -> None:
    bus = I2CBus("i2c1")
    part = bus.attach(sht.Sht4xModel(0x44, clock, env, noise=False))
    part.faults.inject("bad_crc", 1)
    command(bus, sht.CMD_MEASURE_HIGH)
    clock.advance(0.01)
    data = read6(bus)
    assert sht.crc8(data[0:2]) != data[2]
    command(bus, sht.CMD_MEASURE_HIGH)
    clock.advance(0.01)
    good = read6(bus)
    decode(good)  # the counted fault expired
    part.faults.inject("stuck")
    env.temperature_c.hold(0.0)
    command(bus, sht.CMD_MEASURE_HIGH)
    clock.advance(0.01)
    assert read6(bus) == good
    part.faults.inject("busy")
    command(bus, sht.CMD_MEASURE_HIGH)
    clock.advance(1.0)
    with pytest.raises(Nack):
        read6(bus)


def test_sht4x_noise_is_seeded() -> None:
    def run(seed: int) -> list[bytes]:
        clock = EmulatorClock()
        env = Environment(seed=3)
        bus = I2CBus("i2c1")
        bus.attach(sht.Sht4xModel(0x44, clock, env, seed=seed))
        out = []
        for _ in range(5):
            command(bus, sht.CMD_MEASURE_HIGH)
            clock.advance(0.01)
            out.append(read6(bus))
        return out

    assert run(1) == run(1)
    assert run(1) != run(2)


# -- ADS1115 -------------------------------------------------------------------------------------------


class Adc:
    def __init__(self, clock: EmulatorClock, inputs: dict[int, Signal]) -> None:
        self.clock = clock
        self.bus = I2CBus("i2c1")
        self.part = self.bus.attach(ads.Ads1115Model(0x48, clock, Environment(quiet=True), inputs=inputs))

    def write(self, register: int, value: int) -> None:
        self.bus.transfer([Message(0x48, False, bytes([register, value >> 8, value & 0xFF]))])

    def read(self, register: int) -> int:
        self.bus.transfer([Message(0x48, False, bytes([register]))])
        data = self.bus.transfer([Message(0x48, True, length=2)])[0]
        return int.from_bytes(data, "big")

    def signed(self, register: int) -> int:
        value = self.read(register)
        return value - 0x10000 if value & 0x8000 else value


def inputs(*volts: float) -> dict[int, Signal]:
    return {i: Signal(v) for i, v in enumerate(volts)}


def config(mux: int, pga: int, *, start: bool = True, single: bool = True, dr: int = 4) -> int:
    return (0x8000 if start else 0) | (mux << 12) | (pga << 9) | (0x100 if single else 0) | (dr << 5) | 0x03


def test_ads1115_reset_values(clock: EmulatorClock) -> None:
    adc = Adc(clock, inputs())
    assert adc.read(ads.REG_CONFIG) == 0x8583
    assert adc.read(ads.REG_LO_THRESH) == 0x8000
    assert adc.read(ads.REG_HI_THRESH) == 0x7FFF


@pytest.mark.parametrize(("pga", "volts", "code"), [
    (1, 1.024, 8192),  # +-4.096 V
    (2, 1.024, 16384),  # +-2.048 V
    (5, 0.128, 16384),  # +-0.256 V
    (2, 3.0, 32767),  # beyond full scale: clipped
])
def test_ads1115_single_shot_with_pga_scaling(clock: EmulatorClock, pga: int, volts: float, code: int) -> None:
    adc = Adc(clock, inputs(volts))
    adc.write(ads.REG_CONFIG, config(4, pga))  # AIN0 vs GND
    assert adc.read(ads.REG_CONFIG) & 0x8000 == 0  # converting
    clock.advance(1 / 128)
    assert adc.read(ads.REG_CONFIG) & 0x8000
    assert adc.signed(ads.REG_CONVERSION) == code


def test_ads1115_differential_is_signed(clock: EmulatorClock) -> None:
    adc = Adc(clock, inputs(0.5, 1.5))
    adc.write(ads.REG_CONFIG, config(0, 2))  # AIN0 - AIN1
    clock.advance(0.01)
    assert adc.signed(ads.REG_CONVERSION) == ads.code_for(-1.0, 2.048) == -16000


def test_ads1115_continuous_mode_follows_the_input(clock: EmulatorClock) -> None:
    adc = Adc(clock, inputs(1.0))
    adc.write(ads.REG_CONFIG, config(4, 1, start=False, single=False, dr=7))
    clock.advance(0.002)
    first = adc.signed(ads.REG_CONVERSION)
    adc.part.inputs[0].hold(2.0)
    clock.advance(0.002)
    assert adc.signed(ads.REG_CONVERSION) == 2 * first == 16000


def test_ads1115_faults(clock: EmulatorClock) -> None:
    adc = Adc(clock, inputs(1.0))
    adc.part.faults.inject("busy")
    adc.write(ads.REG_CONFIG, config(4, 1))
    clock.advance(1.0)
    assert adc.read(ads.REG_CONFIG) & 0x8000 == 0
    adc.part.faults.clear("busy")
    clock.advance(0.01)
    assert adc.signed(ads.REG_CONVERSION) == 8000
    adc.part.faults.inject("stuck")
    adc.part.inputs[0].hold(0.5)
    adc.write(ads.REG_CONFIG, config(4, 1))
    clock.advance(0.01)
    assert adc.signed(ads.REG_CONVERSION) == 8000

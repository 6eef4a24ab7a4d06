"""Texas Instruments ADS1115 16-bit ADC, after its datasheet (SBAS444).

A pointer register selects one of four 16-bit registers (conversion, config, lo_thresh, hi_thresh),
written and read MSB first. The config register holds OS (write 1 in single-shot mode to start a
conversion; reads 0 while converting), MUX (four single-ended and four differential inputs), PGA (full
scale +-6.144 V .. +-0.256 V), MODE (continuous or single-shot), DR (8 .. 860 samples/s) and the
comparator bits. A conversion takes 1/DR; the code is ``round(V / FS * 32768)``, clipped to 16 bits.
"""

from __future__ import annotations

from emulator.board.i2c_bus import I2CTarget
from emulator.board.signals import Environment, Signal

REG_CONVERSION = 0
REG_CONFIG = 1
REG_LO_THRESH = 2
REG_HI_THRESH = 3
CONFIG_DEFAULT = 0x8583
LO_THRESH_DEFAULT = 0x8000
HI_THRESH_DEFAULT = 0x7FFF
OS_BIT = 0x8000
MODE_SINGLE = 0x0100
FULL_SCALE_V = (6.144, 4.096, 2.048, 1.024, 0.512, 0.256, 0.256, 0.256)
DATA_RATE_SPS = (8, 16, 32, 64, 128, 250, 475, 860)
# MUX -> (positive input, negative input or None for GND)
MUX = ((0, 1), (0, 3), (1, 3), (2, 3), (0, None), (1, None), (2, None), (3, None))
VDD = 3.3


def code_for(volts: float, full_scale: float) -> int:
    """The two's-complement conversion result for ``volts`` at full scale ``full_scale``."""
    return max(-32768, min(32767, round(volts / full_scale * 32768)))


class Ads1115Model(I2CTarget):
    """An ADS1115 at 0x48-0x4B (ADDR pin to GND, VDD, SDA or SCL) with four analog inputs."""

    chip = "ADS1115"
    FAULTS = ("nack", "unplugged", "stuck", "busy")

    def __init__(self, address: int, clock, environment: Environment, *, name: str = "",
                 inputs: dict[int, Signal] | None = None, seed: int = 0) -> None:
        super().__init__(address, name)
        self.clock = clock
        if inputs is None:
            inputs = default_inputs(environment, seed)
        self.inputs = inputs
        self.conversions = 0
        self.registers = [0, CONFIG_DEFAULT, LO_THRESH_DEFAULT, HI_THRESH_DEFAULT]
        self.pointer = REG_CONVERSION
        self._busy_until: float | None = None
        self._continuous_from: float | None = None
        self._continuous_done = 0

    def volts(self, channel: int) -> float:
        signal = self.inputs.get(channel)
        if signal is None:
            return 0.0  # an unconnected input pulled to ground
        # The inputs are clamped by the ESD diodes to the supply rails.
        return max(-0.3, min(VDD + 0.3, signal.value(self.clock.monotonic())))

    def _conversion_s(self) -> float:
        return 1.0 / DATA_RATE_SPS[(self.registers[REG_CONFIG] >> 5) & 7]

    def _convert(self) -> None:
        if self.faults.active("stuck") and self.conversions:
            return
        config = self.registers[REG_CONFIG]
        positive, negative = MUX[(config >> 12) & 7]
        volts = self.volts(positive) - (self.volts(negative) if negative is not None else 0.0)
        self.registers[REG_CONVERSION] = code_for(volts, FULL_SCALE_V[(config >> 9) & 7]) & 0xFFFF
        self.conversions += 1

    def _advance(self) -> None:
        if self.faults.active("busy"):
            return
        now = self.clock.monotonic()
        if self._busy_until is not None and now >= self._busy_until:
            self._busy_until = None
            self._convert()
            self.registers[REG_CONFIG] |= OS_BIT
        if self._continuous_from is not None:
            done = int((now - self._continuous_from) / self._conversion_s())
            if done > self._continuous_done:
                self._continuous_done = done
                self._convert()

    def on_start(self, read: bool) -> None:
        self._advance()

    def on_write(self, data: bytes) -> None:
        self.pointer = data[0] & 0x03
        if len(data) < 3:
            return
        value = (data[1] << 8) | data[2]
        if self.pointer == REG_CONVERSION:
            return  # read-only
        if self.pointer != REG_CONFIG:
            self.registers[self.pointer] = value
            return
        now = self.clock.monotonic()
        if value & MODE_SINGLE:
            self._continuous_from = None
            if value & OS_BIT and self._busy_until is None:
                self.registers[REG_CONFIG] = value & ~OS_BIT  # OS reads 0 while converting
                self._busy_until = now + self._conversion_s()
            else:
                self.registers[REG_CONFIG] = (value & ~OS_BIT) | (self.registers[REG_CONFIG] & OS_BIT)
        else:
            self.registers[REG_CONFIG] = value | OS_BIT
            self._busy_until = None
            self._continuous_from = now
            self._continuous_done = 0

    def on_read(self, length: int) -> bytes:
        value = self.registers[self.pointer]
        if self.pointer == REG_CONFIG and self.faults.active("busy"):
            value &= ~OS_BIT
        word = bytes((value >> 8, value & 0xFF))
        # Reading on past two bytes repeats the register (the pointer does not advance).
        return (word * ((length + 1) // 2))[:length]


def default_inputs(environment: Environment, seed: int = 0) -> dict[int, Signal]:
    """What hangs on the demo board's ADC: a light-dependent divider, the 5 V rail through a 1:2
    divider, a soil-moisture probe, and AIN3 tied to ground."""
    light = environment.light
    calm = 0.0 if environment.quiet else 1.0
    return {
        0: _Scaled(light, VDD),
        1: Signal(2.5, drift=0.02 * calm, period_s=300.0, noise=0.002 * calm, seed=seed * 13 + 1),
        2: Signal(1.4, drift=0.3 * calm, period_s=1500.0, noise=0.004 * calm, low=0.0, high=VDD, seed=seed * 13 + 2),
        3: Signal(0.0),
    }


class _Scaled(Signal):
    """A signal that follows another, scaled (the LDR divider follows the room's light)."""

    def __init__(self, source: Signal, factor: float) -> None:
        super().__init__(0.0)
        self.source = source
        self.factor = factor

    def value(self, t: float) -> float:
        if self.held is not None:
            return self.held
        return self.source.value(t) * self.factor

"""Bosch BME280 (temperature, pressure, humidity), register by register, after the datasheet (BST-BME280-DS002).

What a driver sees: chip id 0x60 at 0xD0, soft reset 0xB6 at 0xE0, the factory calibration NVM at
0x88-0xA1 and 0xE1-0xE7, ``ctrl_hum`` (takes effect at the next ``ctrl_meas`` write), ``ctrl_meas``
oversampling and mode (forced mode converts once, then the part falls back to sleep), ``status`` with its
``measuring`` bit for the conversion time of section 9.1 and ``im_update`` while the NVM is copied after a
reset, ``config`` (standby time and IIR filter), and burst-readable data registers 0xF7-0xFE whose values
are shadowed for the length of a read.

The raw ADC values are found by inverting the datasheet's integer compensation (section 4.2.3) for the
target temperature, pressure and humidity, so a correct driver reads back the target within the
formula's resolution, and an oversampling setting of ``xN`` keeps 16+log2(N) bits as the part does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from emulator.board.i2c_bus import I2CTarget
from emulator.board.signals import Environment, Signal

CHIP_ID = 0x60
BMP280_CHIP_ID = 0x58
REG_CALIB00 = 0x88
REG_CHIP_ID = 0xD0
REG_RESET = 0xE0
REG_CALIB26 = 0xE1
REG_CTRL_HUM = 0xF2
REG_STATUS = 0xF3
REG_CTRL_MEAS = 0xF4
REG_CONFIG = 0xF5
REG_DATA = 0xF7  # press_msb .. hum_lsb, 8 bytes
RESET_WORD = 0xB6
SKIPPED_20BIT = 0x80000
SKIPPED_16BIT = 0x8000
STARTUP_S = 0.002  # NVM copy after power-on or soft reset (datasheet: start-up time 2 ms)
STANDBY_S = (0.0005, 0.0625, 0.125, 0.25, 0.5, 1.0, 0.01, 0.02)  # config.t_sb
OVERSAMPLING = (0, 1, 2, 4, 8, 16, 16, 16)  # osrs_x field -> samples (0 = skipped)
FILTER = (1, 2, 4, 8, 16, 16, 16, 16)  # config.filter -> IIR coefficient (1 = off)


@dataclass(frozen=True)
class Calibration:
    """The trimming parameters (datasheet table 16). Defaults: the datasheet's worked example for T and P
    and a humidity set read from a production part."""

    T1: int = 27504
    T2: int = 26435
    T3: int = -1000
    P1: int = 36477
    P2: int = -10685
    P3: int = 3024
    P4: int = 2855
    P5: int = 140
    P6: int = -7
    P7: int = 15500
    P8: int = -14600
    P9: int = 6000
    H1: int = 75
    H2: int = 362
    H3: int = 0
    H4: int = 324
    H5: int = 50
    H6: int = 30

    def nvm_low(self) -> bytes:
        """0x88-0xA1: dig_T1..dig_P9, a reserved byte, dig_H1."""
        return struct.pack(
            "<HhhHhhhhhhhhBB", self.T1, self.T2, self.T3, self.P1, self.P2, self.P3, self.P4, self.P5,
            self.P6, self.P7, self.P8, self.P9, 0, self.H1,
        )

    def nvm_high(self) -> bytes:
        """0xE1-0xE7: dig_H2, dig_H3, dig_H4/dig_H5 sharing the nibbles of 0xE5, dig_H6."""
        e4 = (self.H4 >> 4) & 0xFF
        e5 = (self.H4 & 0x0F) | ((self.H5 & 0x0F) << 4)
        e6 = (self.H5 >> 4) & 0xFF
        return struct.pack("<hBBBBb", self.H2, self.H3, e4, e5, e6, self.H6)


# -- the datasheet's integer compensation (section 4.2.3), as reference and for inversion -------------


def _cdiv(a: int, b: int) -> int:
    """C99 integer division (truncates toward zero), as the Bosch code does."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def t_fine_from(adc_t: int, c: Calibration) -> int:
    var1 = (((adc_t >> 3) - (c.T1 << 1)) * c.T2) >> 11
    var2 = (((((adc_t >> 4) - c.T1) * ((adc_t >> 4) - c.T1)) >> 12) * c.T3) >> 14
    return var1 + var2


def compensate_temperature(adc_t: int, c: Calibration) -> tuple[int, int]:
    """(temperature in 0.01 degC, t_fine)."""
    t_fine = t_fine_from(adc_t, c)
    return (t_fine * 5 + 128) >> 8, t_fine


def compensate_pressure(adc_p: int, t_fine: int, c: Calibration) -> int:
    """Pressure in Pa as unsigned Q24.8 (divide by 256), the 64-bit formula."""
    var1 = t_fine - 128000
    var2 = var1 * var1 * c.P6
    var2 = var2 + ((var1 * c.P5) << 17)
    var2 = var2 + (c.P4 << 35)
    var1 = ((var1 * var1 * c.P3) >> 8) + ((var1 * c.P2) << 12)
    var1 = (((1 << 47) + var1) * c.P1) >> 33
    if var1 == 0:
        return 0
    p = 1048576 - adc_p
    p = _cdiv(((p << 31) - var2) * 3125, var1)
    var1 = (c.P9 * (p >> 13) * (p >> 13)) >> 25
    var2 = (c.P8 * p) >> 19
    return ((p + var1 + var2) >> 8) + (c.P7 << 4)


def compensate_humidity(adc_h: int, t_fine: int, c: Calibration) -> int:
    """Relative humidity in %RH as unsigned Q22.10 (divide by 1024)."""
    x = t_fine - 76800
    scale = ((((((x * c.H6) >> 10) * (((x * c.H3) >> 11) + 32768)) >> 10) + 2097152) * c.H2 + 8192) >> 14
    v = ((((adc_h << 14) - (c.H4 << 20) - (c.H5 * x)) + 16384) >> 15) * scale
    v = v - (((((v >> 15) * (v >> 15)) >> 7) * c.H1) >> 4)
    v = max(0, min(v, 419430400))
    return v >> 12


def _search(f, goal: float, lo: int, hi: int, increasing: bool) -> int:
    """The x in [lo, hi] whose f(x) is nearest ``goal``, for monotonic ``f`` (bisection, then the neighbour)."""
    a, b = lo, hi
    while a < b:
        mid = (a + b) // 2
        below = f(mid) < goal if increasing else f(mid) > goal
        if below:
            a = mid + 1
        else:
            b = mid
    best = a
    if a > lo and abs(f(a - 1) - goal) <= abs(f(a) - goal):
        best = a - 1
    return best


def raw_temperature_for(celsius: float, c: Calibration) -> int:
    """The 20-bit adc_T whose t_fine is nearest ``celsius`` (t_fine counts 1/5120 degC)."""
    return _search(lambda x: t_fine_from(x, c), celsius * 5120.0, 0, (1 << 20) - 1, increasing=True)


def raw_pressure_for(pascal: float, t_fine: int, c: Calibration) -> int:
    return _search(lambda x: compensate_pressure(x, t_fine, c), pascal * 256.0, 0, (1 << 20) - 1, increasing=False)


def raw_humidity_for(rh: float, t_fine: int, c: Calibration) -> int:
    return _search(lambda x: compensate_humidity(x, t_fine, c), rh * 1024.0, 0, (1 << 16) - 1, increasing=True)


def measurement_time_s(osrs_t: int, osrs_p: int, osrs_h: int) -> float:
    """Typical conversion time, datasheet section 9.1 (oversampling counts, 0 = skipped)."""
    ms = 1.0
    ms += 2.0 * osrs_t
    if osrs_p:
        ms += 2.0 * osrs_p + 0.5
    if osrs_h:
        ms += 2.0 * osrs_h + 0.5
    return ms / 1000.0


def _keep_bits(raw: int, samples: int, filtered: bool) -> int:
    # 16 bits at x1, one more per doubling up to 20; the IIR filter always yields 20 bits.
    bits = 20 if filtered else 15 + {1: 1, 2: 2, 4: 3, 8: 4, 16: 5}[samples]
    return (raw >> (20 - bits)) << (20 - bits)


class Bme280Model(I2CTarget):
    """A BME280 at 0x76 (SDO low) or 0x77 (SDO high)."""

    chip = "BME280"
    FAULTS = ("nack", "unplugged", "stuck", "busy", "wrong_chip")

    def __init__(self, address: int, clock, environment: Environment, *, name: str = "",
                 calibration: Calibration | None = None, offsets: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> None:
        super().__init__(address, name)
        self.clock = clock
        self.calibration = calibration or Calibration()
        self.temperature: Signal = environment.temperature_c
        self.pressure: Signal = environment.pressure_pa
        self.humidity: Signal = environment.humidity_rh
        self.offsets = offsets  # this part's bias from the room: (degC, Pa, %RH)
        self.conversions = 0
        self._power_on()

    # -- state --------------------------------------------------------------------------------------

    def _power_on(self) -> None:
        self.regs = bytearray(256)
        self.regs[REG_CALIB00 : REG_CALIB00 + 26] = self.calibration.nvm_low()
        self.regs[REG_CALIB26 : REG_CALIB26 + 7] = self.calibration.nvm_high()
        self.regs[REG_CHIP_ID] = CHIP_ID
        self._store(SKIPPED_20BIT, SKIPPED_20BIT, SKIPPED_16BIT)
        self.pointer = 0
        self._osrs_h_latched = 0
        now = self.clock.monotonic()
        self._nvm_ready_at = now + STARTUP_S
        self._busy_until = None  # end of the conversion in progress
        self._next_normal = None  # next normal-mode cycle end
        self._filtered: tuple[float, float] | None = None
        self._last_raw: tuple[int, int, int] | None = None

    def _store(self, adc_p: int, adc_t: int, adc_h: int) -> None:
        self.regs[REG_DATA : REG_DATA + 8] = bytes((
            adc_p >> 12 & 0xFF, adc_p >> 4 & 0xFF, (adc_p & 0xF) << 4,
            adc_t >> 12 & 0xFF, adc_t >> 4 & 0xFF, (adc_t & 0xF) << 4,
            adc_h >> 8 & 0xFF, adc_h & 0xFF,
        ))

    @property
    def mode(self) -> int:
        return self.regs[REG_CTRL_MEAS] & 0x03

    def _advance(self) -> None:
        """Bring the part up to the present: finish a conversion whose time is over, run normal mode."""
        now = self.clock.monotonic()
        if self.faults.active("busy"):
            return
        if self._busy_until is not None and now >= self._busy_until:
            self._busy_until = None
            self._convert()
            if self.mode in (1, 2):
                self.regs[REG_CTRL_MEAS] &= 0xFC  # forced mode: back to sleep
        if self.mode == 3 and self._next_normal is not None:
            cycle = self._cycle_s()
            if now >= self._next_normal:
                missed = int((now - self._next_normal) // cycle)
                # All cycles of a long gap in one step: the filter's closed form for a steady input.
                self._convert(cycles=missed + 1)
                self._next_normal += (missed + 1) * cycle

    def _cycle_s(self) -> float:
        return self._conversion_time() + STANDBY_S[self.regs[REG_CONFIG] >> 5]

    def _oversampling(self) -> tuple[int, int, int]:
        meas = self.regs[REG_CTRL_MEAS]
        return OVERSAMPLING[meas >> 5], OVERSAMPLING[(meas >> 2) & 7], OVERSAMPLING[self._osrs_h_latched & 7]

    def _conversion_time(self) -> float:
        return measurement_time_s(*self._oversampling())

    def _convert(self, cycles: int = 1) -> None:
        """A measurement (``cycles`` of them back to back in normal mode): targets from the environment,
        raw values from the inverted compensation."""
        if self.faults.active("stuck") and self._last_raw is not None:
            self._store(*self._last_raw)
            return
        self.conversions += 1
        osrs_t, osrs_p, osrs_h = self._oversampling()
        t = self.clock.monotonic()
        c = self.calibration
        coefficient = FILTER[(self.regs[REG_CONFIG] >> 2) & 7]
        adc_t = raw_temperature_for(self.temperature.value(t) + self.offsets[0], c)
        t_fine = t_fine_from(adc_t, c)
        adc_p = raw_pressure_for(self.pressure.value(t) + self.offsets[1], t_fine, c)
        if coefficient > 1:
            # IIR filter on T and P (datasheet 3.4.4): x[n] = (x[n-1] * (c - 1) + x_new) / c
            if self._filtered is None:
                self._filtered = (float(adc_t), float(adc_p))
            else:
                keep = ((coefficient - 1) / coefficient) ** cycles
                ft, fp = self._filtered
                self._filtered = (ft * keep + adc_t * (1 - keep), fp * keep + adc_p * (1 - keep))
            adc_t, adc_p = round(self._filtered[0]), round(self._filtered[1])
            t_fine = t_fine_from(adc_t, c)
        stored_t = _keep_bits(adc_t, osrs_t, coefficient > 1) if osrs_t else SKIPPED_20BIT
        stored_p = _keep_bits(adc_p, osrs_p, coefficient > 1) if osrs_p else SKIPPED_20BIT
        host_t_fine = t_fine_from(stored_t, c)
        adc_h = raw_humidity_for(self.humidity.value(t) + self.offsets[2], host_t_fine, c) if osrs_h else SKIPPED_16BIT
        self._last_raw = (stored_p, stored_t, adc_h)
        self._store(*self._last_raw)

    # -- the I2C interface --------------------------------------------------------------------------

    def on_start(self, read: bool) -> None:
        self._advance()

    def on_write(self, data: bytes) -> None:
        # The first byte sets the register pointer; then (register, value) pairs, no auto-increment.
        self.pointer = data[0]
        if len(data) == 1:
            return
        self._write_register(data[0], data[1])
        pairs = data[2:]
        for i in range(0, len(pairs) - 1, 2):
            self._write_register(pairs[i], pairs[i + 1])

    def _write_register(self, register: int, value: int) -> None:
        if register == REG_RESET:
            if value == RESET_WORD:
                self._power_on()
            return
        if register == REG_CTRL_HUM:
            self.regs[REG_CTRL_HUM] = value & 0x07
        elif register == REG_CONFIG:
            self.regs[REG_CONFIG] = value & 0xFD  # bit 1 is reserved
        elif register == REG_CTRL_MEAS:
            self.regs[REG_CTRL_MEAS] = value
            self._osrs_h_latched = self.regs[REG_CTRL_HUM]  # "ctrl_hum ... only effective after ctrl_meas"
            self._start_mode()
        # everything else is read-only: writes are ignored, as the part does

    def _start_mode(self) -> None:
        now = self.clock.monotonic()
        mode = self.mode
        if mode in (1, 2):
            self._busy_until = now + self._conversion_time()
            self._next_normal = None
        elif mode == 3:
            self._busy_until = None
            self._next_normal = now + self._conversion_time()
        else:
            self._busy_until = None
            self._next_normal = None
            self._filtered = None

    def on_read(self, length: int) -> bytes:
        out = bytearray()
        for _ in range(length):
            out.append(self._read_register(self.pointer))
            self.pointer = (self.pointer + 1) & 0xFF
        return bytes(out)

    def _read_register(self, register: int) -> int:
        if register == REG_STATUS:
            now = self.clock.monotonic()
            measuring = self.faults.active("busy") or self._busy_until is not None or (
                self._next_normal is not None and self._next_normal - self._conversion_time() <= now)
            im_update = now < self._nvm_ready_at
            return (0x08 if measuring else 0) | (0x01 if im_update else 0)
        if register == REG_CHIP_ID and self.faults.active("wrong_chip"):
            return BMP280_CHIP_ID
        return self.regs[register]

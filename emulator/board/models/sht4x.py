"""Sensirion SHT4x (SHT40/41/45) humidity and temperature sensor, after its datasheet (v6.6).

Command/response: the host writes one command byte, waits the conversion time, then reads six bytes
(T msb, T lsb, CRC, RH msb, RH lsb, CRC). CRC-8, polynomial 0x31, init 0xFF (CRC(0xBEEF) = 0x92). While a
conversion runs, or when nothing is waiting to be read, the part NACKs the read header, as the real one
does; a driver that reads too early sees errno 121. Raw values come from the datasheet's conversion,
inverted: ``S_T = (T + 45) * 65535 / 175`` and ``S_RH = (RH + 6) * 65535 / 125``.
"""

from __future__ import annotations

import math

from emulator.board.i2c_bus import I2CTarget, Nack
from emulator.board.signals import Environment, Signal

CMD_MEASURE_HIGH = 0xFD
CMD_MEASURE_MEDIUM = 0xF6
CMD_MEASURE_LOW = 0xE0
CMD_SERIAL = 0x89
CMD_SOFT_RESET = 0x94
# command -> (conversion time in s (typical), temperature noise degC, humidity noise %RH): datasheet tables 2/3
MEASURE = {
    CMD_MEASURE_HIGH: (0.0069, 0.04, 0.08),
    CMD_MEASURE_MEDIUM: (0.0037, 0.07, 0.15),
    CMD_MEASURE_LOW: (0.0013, 0.10, 0.25),
}
# heater command -> (power mW, duration s); the measurement after heating is high precision
HEATER = {
    0x39: (200, 1.0), 0x32: (200, 0.1),
    0x2F: (110, 1.0), 0x24: (110, 0.1),
    0x1E: (20, 1.0), 0x15: (20, 0.1),
}
RESET_TIME_S = 0.001
SERIAL_TIME_S = 0.001


def crc8(data: bytes) -> int:
    """Sensirion CRC-8: polynomial x^8 + x^5 + x^4 + 1 (0x31), initial value 0xFF, no final XOR."""
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x31) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def word_with_crc(word: int) -> bytes:
    pair = bytes((word >> 8 & 0xFF, word & 0xFF))
    return pair + bytes((crc8(pair),))


def ticks_for_temperature(celsius: float) -> int:
    return max(0, min(65535, round((celsius + 45.0) * 65535 / 175.0)))


def ticks_for_humidity(rh: float) -> int:
    # The datasheet's formula spans -6..119 %RH; the part reports beyond 0..100 and the host crops.
    return max(0, min(65535, round((rh + 6.0) * 65535 / 125.0)))


def _rh_at(rh: float, t_air: float, t_sensor: float) -> float:
    """Relative humidity seen by a sensor warmer than the air (Magnus formula for saturation pressure)."""
    def saturation(t: float) -> float:
        return 6.112 * math.exp(17.62 * t / (243.12 + t))

    return rh * saturation(t_air) / saturation(t_sensor)


class Sht4xModel(I2CTarget):
    """An SHT4x at 0x44 (SHT40-AD1B), 0x45 or 0x46."""

    chip = "SHT4x"
    FAULTS = ("nack", "unplugged", "stuck", "busy", "bad_crc")

    def __init__(self, address: int, clock, environment: Environment, *, name: str = "", serial: int = 0x0F1E2D3C,
                 offsets: tuple[float, float] = (0.0, 0.0), noise: bool = True, seed: int = 0) -> None:
        super().__init__(address, name)
        self.clock = clock
        self.temperature: Signal = environment.temperature_c
        self.humidity: Signal = environment.humidity_rh
        self.offsets = offsets
        self.serial = serial
        self.noise = noise
        self._noise_t = Signal(0.0, noise=1.0, seed=seed * 31 + 11)
        self._noise_rh = Signal(0.0, noise=1.0, seed=seed * 31 + 12)
        self.commands: list[int] = []
        self.conversions = 0
        self._ready_at: float | None = None
        self._response = b""
        self._last_measurement: bytes | None = None
        self._pending: int | None = None

    def on_start(self, read: bool) -> None:
        if not read:
            return
        now = self.clock.monotonic()
        if self.faults.active("busy") or self._ready_at is None or now < self._ready_at:
            raise Nack(self.address, "SHT4x busy or no data: read header NACKed")
        if self._pending is not None:
            self._response = self._respond(self._pending)
            self._pending = None

    def on_write(self, data: bytes) -> None:
        command = data[0]
        self.commands.append(command)
        now = self.clock.monotonic()
        if command in MEASURE:
            duration = MEASURE[command][0]
        elif command in HEATER:
            duration = HEATER[command][1]
        elif command == CMD_SERIAL:
            duration = SERIAL_TIME_S
        elif command == CMD_SOFT_RESET:
            self._ready_at = None
            self._pending = None
            self._response = b""
            return
        else:
            # An unknown command is NACKed on its data byte by the part.
            raise Nack(self.address, f"SHT4x does not know command 0x{command:02x}")
        # A new command discards an unread result, as on the part.
        self._pending = command
        self._response = b""
        self._ready_at = now + duration

    def on_read(self, length: int) -> bytes:
        out = self._response[:length]
        self._response = self._response[length:]
        if len(out) < length:
            out += b"\xff" * (length - len(out))  # past the last byte: the released bus reads 0xFF
        return out

    def on_stop(self) -> None:
        if self._ready_at is not None and self._pending is None and not self._response:
            self._ready_at = None  # the result has been read: nothing to read until the next command

    def _respond(self, command: int) -> bytes:
        if command == CMD_SERIAL:
            return word_with_crc(self.serial >> 16) + word_with_crc(self.serial & 0xFFFF)
        if self.faults.active("stuck") and self._last_measurement is not None:
            payload = self._last_measurement
        else:
            payload = self._measure(command)
            self._last_measurement = payload
        if self.faults.take("bad_crc"):
            payload = bytearray(payload)
            payload[2] ^= 0x5A
            payload[5] ^= 0xA5
            payload = bytes(payload)
        return payload

    def _measure(self, command: int) -> bytes:
        self.conversions += 1
        t = self.clock.monotonic()
        air_t = self.temperature.value(t) + self.offsets[0]
        air_rh = self.humidity.value(t) + self.offsets[1]
        if command in HEATER:
            power, seconds = HEATER[command]
            # A heated sensor ends its pulse a few degrees above the air; the humidity it sees drops.
            rise = power / 200.0 * (8.0 if seconds >= 1.0 else 2.5)
            sensor_t = air_t + rise
            rh = _rh_at(air_rh, air_t, sensor_t)
            t_noise, rh_noise = MEASURE[CMD_MEASURE_HIGH][1:]
        else:
            sensor_t, rh = air_t, air_rh
            t_noise, rh_noise = MEASURE[command][1:]
        if self.noise and self.temperature.held is None:
            sensor_t += t_noise * self._noise_t.value(t)
        if self.noise and self.humidity.held is None:
            rh += rh_noise * self._noise_rh.value(t)
        return word_with_crc(ticks_for_temperature(sensor_t)) + word_with_crc(ticks_for_humidity(rh))

"""Sensor benchmarks on the board emulator: the whole read path, and what decoding a reading costs.

- <sensor>_reads: readings per second of ``hal.sensors.Sensor.read()`` for the rpi-4b's I2C sensors,
  through driver -> SMBusI2C -> smbus2 -> emulated i2c-dev ioctls -> register model, on a manual clock
  (no real sleeping), against the rate of the cheapest raw transaction on the same emulated bus
  (``smbus2.read_byte_data`` of the chip-id register). The ratio is "transactions' worth per reading".
- emulated_transaction: raw emulated smbus2 transactions per second against real ioctl system calls
  (``TIOCGWINSZ`` on a pty): what a decoded transfer costs next to crossing into the kernel.
- <chip>_decode: microseconds to turn a reading's raw bytes into values with the driver's own code
  (BME280: Bosch integer compensation of T, P, H; SHT4x: two CRC checks and the conversion), against a
  bare ``struct.unpack`` of the same bytes.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios

from bench import figure, rate


def bench_reads() -> dict:
    from emulator.board.clock import EmulatorClock
    from emulator.board.platform import EmulatedPlatform
    from hal.board import load_board
    from hal.sensors import open_sensors

    board = load_board("rpi-4b")
    results = {}
    # A long UART period keeps the PMS5003's line thread asleep: only the I2C path is measured.
    with EmulatedPlatform(board, clock=EmulatorClock(), uart_period_s=3600, seed=2) as platform:
        sensors = {s.id: s for s in open_sensors(board, platform) if s.bus_spec.kind == "i2c"}
        smbus = platform.i2c("i2c1").smbus
        baseline = rate(lambda: smbus.read_byte_data(0x76, 0xD0), 1.2)
        for sensor_id, sensor in sensors.items():
            first = sensor.read()
            if not first.ok:
                raise RuntimeError(f"{sensor_id} does not read on the emulator: {first.error}")
            reads = rate(sensor.read, 1.2)
            results[f"{sensor_id}_reads"] = figure(
                reads, "reads/s", baseline=baseline, baseline_name="raw emulated smbus2 read_byte_data",
                chip=sensor.chip, driver_options=dict(sensor.spec.options))
        syscall_fd, other = os.openpty()
        try:
            winsize = bytearray(8)
            syscalls = rate(lambda: fcntl.ioctl(syscall_fd, termios.TIOCGWINSZ, winsize), 1.2)
        finally:
            os.close(syscall_fd)
            os.close(other)
        results["emulated_transaction"] = figure(
            baseline, "transactions/s", baseline=syscalls, baseline_name="real ioctl(TIOCGWINSZ) on a pty")
    return results


def bench_decode() -> dict:
    from emulator.board.models.bme280 import Calibration
    from hal.drivers import bme280, sht4x

    cal = Calibration()
    calib = bme280.parse_calibration(bytearray(cal.nvm_low()), bytearray(cal.nvm_high()))
    data = bytes.fromhex("656b007e3a006f1e")  # press, temp, hum registers of a real-looking measurement

    def bme280_decode() -> tuple:
        adc_p = (data[0] << 12) | (data[1] << 4) | (data[2] >> 4)
        adc_t = (data[3] << 12) | (data[4] << 4) | (data[5] >> 4)
        adc_h = (data[6] << 8) | data[7]
        t_fine = bme280.compensate_t_fine(adc_t, calib)
        return ((t_fine * 5 + 128) >> 8, bme280.compensate_pressure(adc_p, t_fine, calib),
                bme280.compensate_humidity(adc_h, t_fine, calib))

    answer = bytes.fromhex("6147" + "8a") + bytes.fromhex("6872" + "79")
    answer = answer[:2] + bytes([sht4x.crc8(answer, 0, 2)]) + answer[3:5] + bytes([sht4x.crc8(answer, 3, 5)])

    def sht4x_decode() -> tuple:
        for start in (0, 3):
            if sht4x.crc8(answer, start, start + 2) != answer[start + 2]:
                raise ValueError("crc")
        t_ticks = (answer[0] << 8) | answer[1]
        rh_ticks = (answer[3] << 8) | answer[4]
        return -45000 + (175000 * t_ticks + 32767) // 65535, -6000 + (125000 * rh_ticks + 32767) // 65535

    results = {}
    for name, func, raw, layout in (("bme280_decode", bme280_decode, data, ">8B"),
                                    ("sht4x_decode", sht4x_decode, answer, ">HBHB")):
        cost = 1e6 / rate(func, 1.2)
        unpack = 1e6 / rate(lambda raw=raw, layout=layout: struct.unpack(layout, raw), 1.2)
        results[name] = figure(cost, "us/reading", baseline=unpack, baseline_name=f"struct.unpack({layout!r})",
                               higher_is_better=False)
    return results


def run() -> dict:
    results = bench_reads()
    results.update(bench_decode())
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))

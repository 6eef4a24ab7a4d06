"""HAL benchmarks: driver overhead over raw smbus2, stream parsers, MicroPython speed and footprint.

- bme280_forced_reads: BME280 forced reads per second through driver -> SMBusI2C -> smbus2 -> i2c-dev
  ioctls (the board emulator's decoder), against the same three ioctl transfers issued raw with smbus2.
  Goal: the driver and adapter cost at most half the raw rate (ratio >= 0.5).
- pms5003_parse / nmea_parse: bytes per second through the drivers' stream parsers (with 10 % noise for
  the PMS5003), against a minimal parser built on bytes.find in the same run. Both far above the 960 B/s
  a 9600-baud line carries; the ratio shows what the preallocated, MicroPython-friendly parser costs.
- micropython_compensation: Bosch integer compensations (T, P, H) per second under the real
  MicroPython unix port, against CPython running the very same functions.
- mpy_bytes: size of the armv6m .mpy files a Pico needs, against their Python source.
- min_heap_kb: the smallest MicroPython heap (4 KB steps) in which each driver's test module runs
  from .mpy, against the 64 KB the test gate allows.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from bench import figure, rate

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent




def bench_bme280() -> dict:
    from smbus2 import i2c_msg

    from hal.board import load_board
    from hal.clock import ManualClock
    from hal.drivers.bme280 import BME280
    from hal.platform import load_platform

    with load_platform("emulated", load_board("rpi-4b"), clock=ManualClock(), quiet=True) as platform:
        i2c = platform.i2c("i2c1")
        sensor = BME280(i2c, address=0x76, clock=platform.clock)
        sensor.read()  # calibration and configuration, once
        driver = rate(sensor.read)
        smbus = i2c.smbus
        clock = platform.clock

        def raw() -> None:
            smbus.i2c_rdwr(i2c_msg.write(0x76, b"\xf4\x25"))
            clock.sleep_ms(10)
            smbus.i2c_rdwr(i2c_msg.write(0x76, b"\xf3"), i2c_msg.read(0x76, 1))
            smbus.i2c_rdwr(i2c_msg.write(0x76, b"\xf7"), i2c_msg.read(0x76, 8))

        baseline = rate(raw)
    return figure(driver, "reads/s", baseline=baseline, baseline_name="raw smbus2 i2c_rdwr, same 3 transfers",
                  goal=">= 0.5")


def _pms_stream() -> bytes:
    import random

    rng = random.Random(5)
    out = bytearray()
    for n in range(400):
        body = bytearray(b"\x42\x4d\x00\x1c")
        for w in range(13):
            body += ((n * 7 + w) & 0xFFFF).to_bytes(2, "big")
        frame = bytes(body) + sum(body).to_bytes(2, "big")
        if rng.random() < 0.1:
            out += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        out += frame
    return bytes(out)


def _naive_pms(stream: bytes) -> int:
    frames = 0
    i = stream.find(b"BM")
    while 0 <= i <= len(stream) - 32:
        frame = stream[i:i + 32]
        if frame[2:4] == b"\x00\x1c" and sum(frame[:30]) == int.from_bytes(frame[30:], "big"):
            frames += 1
            i = stream.find(b"BM", i + 32)
        else:
            i = stream.find(b"BM", i + 1)
    return frames


def bench_pms5003() -> dict:
    from hal.drivers.pms5003 import PMS5003

    stream = _pms_stream()
    expected = _naive_pms(stream)
    driver = PMS5003(uart=None)
    driver.feed(stream)
    if driver.frames != expected:
        raise RuntimeError(f"parser disagreement: driver {driver.frames} frames, reference {expected}")
    driver_rate = rate(lambda: driver.feed(stream)) * len(stream)
    baseline = rate(lambda: _naive_pms(stream)) * len(stream)
    return figure(driver_rate, "bytes/s", baseline=baseline, baseline_name="bytes.find + sum reference parser",
                  frames=expected, line_rate_9600_baud=960)


def bench_nmea() -> dict:
    from hal.drivers.nmea import NMEAGPS, checksum

    lines = [b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n",
             b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"] * 100
    stream = b"".join(lines)
    gps = NMEAGPS(uart=None)

    def naive() -> int:
        good = 0
        for line in stream.split(b"\r\n"):
            if line.startswith(b"$") and len(line) > 4 and int(line[-2:], 16) == checksum(line[1:-3]):
                line.decode().split(",")
                good += 1
        return good

    if gps.feed(stream) != naive():
        raise RuntimeError("NMEA parser disagreement")
    driver_rate = rate(lambda: gps.feed(stream)) * len(stream)
    baseline = rate(naive) * len(stream)
    return figure(driver_rate, "bytes/s", baseline=baseline, baseline_name="split + checksum reference",
                  line_rate_9600_baud=960)


_COMPENSATION = """
import sys, time
sys.path.insert(0, %r)
from hal.drivers.bme280 import compensate_t_fine, compensate_pressure, compensate_humidity
c = (27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000, 75, 362, 0, 313, 50, 30)
def once(i):
    t = compensate_t_fine(519888 + i, c)
    compensate_pressure(415148 + i, t, c)
    compensate_humidity(30000 + i, t, c)
if hasattr(time, "ticks_ms"):
    now = lambda: time.ticks_ms() / 1000
else:
    now = time.perf_counter
n = 0
start = now()
while now() - start < 1.5:
    for i in range(100):
        once(i)
    n += 100
print(n / (now() - start))
"""


def bench_micropython() -> dict:
    script = _COMPENSATION % str(ROOT)
    mp = float(subprocess.run([str(BIN / "micropython"), "-c", script], capture_output=True, text=True,
                              check=True, timeout=60).stdout.strip())
    cp = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                              timeout=60).stdout.strip())
    return figure(mp, "compensations/s", baseline=cp, baseline_name="CPython, same functions")


def _compile_tree(out: Path) -> tuple[int, int]:
    sources = [ROOT / "hal" / "__init__.py", ROOT / "hal" / "errors.py", ROOT / "hal" / "clock.py",
               *sorted((ROOT / "hal" / "drivers").glob("*.py"))]
    source_bytes = mpy_bytes = 0
    for source in sources:
        target = out / source.relative_to(ROOT).with_suffix(".mpy")
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BIN / "mpy-cross"), "-march=armv6m", "-o", str(target), str(source.relative_to(ROOT))],
                       cwd=ROOT, check=True, timeout=60)
        source_bytes += source.stat().st_size
        mpy_bytes += target.stat().st_size
    return mpy_bytes, source_bytes


def _runs(tree: Path, module: str, heap_kb: int) -> bool:
    result = subprocess.run([str(BIN / "micropython"), "-X", f"heapsize={heap_kb}k",
                             str(ROOT / "tests" / "micropython" / "run.py"), str(tree), module],
                            cwd=tree, capture_output=True, text=True, timeout=60)
    return result.returncode == 0


def bench_footprint() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp)
        mpy, source = _compile_tree(tree)
        heaps = {}
        for test in sorted((ROOT / "tests" / "micropython").glob("test_driver_*.py")):
            low, high = 4, 64  # invariant: fails at low (or untested), runs at high
            if not _runs(tree, test.stem, high):
                heaps[test.stem] = None
                continue
            while high - low > 4:
                mid = (low + high) // 2 // 4 * 4
                if _runs(tree, test.stem, mid):
                    high = mid
                else:
                    low = mid
            heaps[test.stem] = high
    worst = max(v for v in heaps.values() if v is not None)
    return {
        "mpy_bytes": figure(mpy, "bytes", baseline=source, baseline_name="Python source bytes",
                            higher_is_better=False),
        "min_heap_kb": figure(worst, "KB", baseline=64, baseline_name="heap the test gate allows",
                              higher_is_better=False, goal="<= 64", per_module=heaps),
    }


def run() -> dict:
    results = {
        "bme280_forced_reads": bench_bme280(),
        "pms5003_parse": bench_pms5003(),
        "nmea_parse": bench_nmea(),
        "micropython_compensation": bench_micropython(),
    }
    results.update(bench_footprint())
    return results


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))

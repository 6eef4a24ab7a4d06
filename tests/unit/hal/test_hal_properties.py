"""Properties of the drivers' parsers and fixed-point maths, over many generated inputs (CPython only).

Hypothesis runs derandomized, so every run checks the same cases.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hal.drivers.bme280 import compensate_humidity, compensate_pressure, compensate_t_fine
from hal.drivers.nmea import NMEAGPS, checksum
from hal.drivers.pms5003 import FIELDS, PMS5003
from hal.drivers.sht4x import crc8

DETERMINISTIC = settings(derandomize=True, max_examples=150, deadline=None)


def pms_frame(words: list[int]) -> bytes:
    body = bytearray(b"\x42\x4d\x00\x1c")
    for w in words:
        body += w.to_bytes(2, "big")
    return bytes(body) + sum(body).to_bytes(2, "big")


word_lists = st.lists(st.integers(0, 0xFFFF), min_size=13, max_size=13)


@DETERMINISTIC
@given(frames=st.lists(word_lists, min_size=1, max_size=6),
       noise=st.lists(st.binary(max_size=40), min_size=7, max_size=7))
def test_pms5003_recovers_every_frame_between_noise(frames: list[list[int]], noise: list[bytes]) -> None:
    stream = b"".join(noise[i] + pms_frame(words) for i, words in enumerate(frames)) + noise[-1]
    parser = PMS5003(uart=None)
    seen = []
    for byte in stream:
        if parser.feed(bytes([byte])):
            values = parser.values()
            seen.append([values[name] for name in FIELDS])
    # Noise could, once in 2**16, fake a checksum; the generated cases must show none of that.
    assert seen[-len(frames):] == [words[:12] for words in frames]


@DETERMINISTIC
@given(count=st.integers(1, 5), noise=st.lists(st.binary(max_size=60), min_size=6, max_size=6))
def test_nmea_recovers_every_sentence_between_noise(count: int, noise: list[bytes]) -> None:
    sentences = []
    for i in range(count):
        body = b"GPGGA,1235%02d,4807.%03d,N,01131.000,E,1,%02d,0.9,545.4,M,46.9,M,," % (i, i, i + 3)
        sentences.append(b"$" + body + b"*%02X\r\n" % checksum(body))
    stream = b"".join(noise[i] + s for i, s in enumerate(sentences)) + noise[-1]
    gps = NMEAGPS(uart=None)
    satellites = []
    for byte in stream:
        if gps.feed(bytes([byte])):
            satellites.append(gps.gga["satellites"])
    assert satellites == list(range(3, count + 3))


@DETERMINISTIC
@given(data=st.binary(min_size=2, max_size=2), bit=st.integers(0, 15))
def test_crc8_catches_every_single_bit_error(data: bytes, bit: int) -> None:
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    assert crc8(flipped) != crc8(data)


CALIB = (27504, 26435, -1000, 36477, -10685, 3024, 2855, 140, -7, 15500, -14600, 6000, 75, 362, 0, 313, 50, 30)


def pressure_float(adc_p: int, t_fine: int, c: tuple) -> float:
    """The datasheet's double-precision pressure formula (section 8.1), as an independent reference."""
    p1, p2, p3, p4, p5, p6, p7, p8, p9 = c[3:12]
    var1 = t_fine / 2.0 - 64000.0
    var2 = var1 * var1 * p6 / 32768.0
    var2 = var2 + var1 * p5 * 2.0
    var2 = var2 / 4.0 + p4 * 65536.0
    var1 = (p3 * var1 * var1 / 524288.0 + p2 * var1) / 524288.0
    var1 = (1.0 + var1 / 32768.0) * p1
    p = 1048576.0 - adc_p
    p = (p - var2 / 4096.0) * 6250.0 / var1
    var1 = p9 * p * p / 2147483648.0
    var2 = p * p8 / 32768.0
    return p + (var1 + var2 + p7) / 16.0


@DETERMINISTIC
@given(adc_t=st.integers(400000, 600000), adc_p=st.integers(250000, 500000))
def test_bme280_integer_pressure_matches_the_float_formula(adc_t: int, adc_p: int) -> None:
    t_fine = compensate_t_fine(adc_t, CALIB)
    fixed = compensate_pressure(adc_p, t_fine, CALIB) / 256
    assert abs(fixed - pressure_float(adc_p, t_fine, CALIB)) < 1.0  # Pa


@DETERMINISTIC
@given(adc_t=st.integers(400000, 600000), adc_h=st.integers(0, 65535))
def test_bme280_humidity_stays_within_0_and_100_percent(adc_t: int, adc_h: int) -> None:
    t_fine = compensate_t_fine(adc_t, CALIB)
    assert 0 <= compensate_humidity(adc_h, t_fine, CALIB) <= 100 * 1024

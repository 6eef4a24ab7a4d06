"""PMS5003: the datasheet's command frames, frame checksums, resynchronisation after noise, both modes."""

from hal_fakes import FakeUART, clock, raises

from hal.drivers.pms5003 import FIELDS, PMS5003, command
from hal.errors import ChipIdError, CRCError, FrameError, SensorTimeout, SettingError


def frame(words):
    """A 32-byte data frame from 13 words, checksum computed independently of the driver."""
    body = bytearray([0x42, 0x4D, 0x00, 28])
    for w in words:
        body += bytes([w >> 8, w & 0xFF])
    total = 0
    for b in body:
        total += b
    return bytes(body) + bytes([total >> 8, total & 0xFF])


# A frame written out by hand: the checksum 0x02E2 is the sum of the 30 bytes before it.
LITERAL = bytes([
    0x42, 0x4D, 0x00, 0x1C, 0x00, 0x05, 0x00, 0x08, 0x00, 0x0A, 0x00, 0x05, 0x00, 0x08, 0x00, 0x0A,
    0x03, 0x39, 0x00, 0xF3, 0x00, 0x3B, 0x00, 0x06, 0x00, 0x01, 0x00, 0x01, 0x97, 0x00, 0x02, 0xE2,
])
WORDS = [5, 8, 10, 5, 8, 10, 825, 243, 59, 6, 1, 1, 0x9700]
OTHER = [12, 20, 25, 12, 20, 25, 1500, 400, 80, 9, 2, 0, 0x9700]


def make(mode="active", timeout_ms=3000):
    clk = clock()
    uart = FakeUART(clk)
    return PMS5003(uart, clock=clk, mode=mode, timeout_ms=timeout_ms), uart, clk


def test_command_frames_match_the_datasheet():
    assert bytes(command(0xE2, 0)) == bytes([0x42, 0x4D, 0xE2, 0x00, 0x00, 0x01, 0x71])  # passive read
    assert bytes(command(0xE1, 0)) == bytes([0x42, 0x4D, 0xE1, 0x00, 0x00, 0x01, 0x70])  # passive mode
    assert bytes(command(0xE1, 1)) == bytes([0x42, 0x4D, 0xE1, 0x00, 0x01, 0x01, 0x71])  # active mode
    assert bytes(command(0xE4, 0)) == bytes([0x42, 0x4D, 0xE4, 0x00, 0x00, 0x01, 0x73])  # sleep
    assert bytes(command(0xE4, 1)) == bytes([0x42, 0x4D, 0xE4, 0x00, 0x01, 0x01, 0x74])  # wake


def test_literal_frame_checksum_and_values():
    assert frame(WORDS) == LITERAL
    sensor, uart, _ = make()
    uart.deliver(LITERAL)
    values = sensor.read()
    assert [values[name] for name in FIELDS] == WORDS[:12]
    assert values["pm2_5"] == 8 and values["count_0_3"] == 825


def test_active_mode_is_set_first_and_the_newest_frame_wins():
    sensor, uart, _ = make()
    uart.deliver(frame(WORDS) + frame(OTHER))
    assert sensor.read()["pm2_5"] == 20
    assert uart.written[0] == bytes(command(0xE1, 1))
    assert sensor.frames == 2


def test_waits_for_a_frame_that_arrives_later():
    sensor, uart, _ = make()
    uart.deliver(frame(WORDS)[:10], at_ms=300)
    uart.deliver(frame(WORDS)[10:], at_ms=900)
    assert sensor.read()["pm10"] == 10


def test_noise_before_a_frame_is_skipped():
    sensor, uart, _ = make()
    uart.deliver(b"\x00\xff\x42\x13\x4d" + frame(WORDS))
    assert sensor.read()["pm1_0"] == 5
    assert sensor.skipped_bytes == 5


def test_resync_after_a_bad_checksum():
    sensor, uart, _ = make()
    bad = bytearray(frame(OTHER))
    bad[10] ^= 0x40
    uart.deliver(bytes(bad) + frame(WORDS))
    assert sensor.read()["pm2_5"] == 8
    assert sensor.checksum_errors == 1


def test_a_false_header_inside_noise_does_not_hide_the_real_frame():
    sensor, uart, _ = make()
    # "BM" + length 28 announces a frame; the real one starts 6 bytes later, inside that span.
    uart.deliver(b"\x42\x4d\x00\x1c\x01\x02" + frame(WORDS))
    assert sensor.read()["pm10"] == 10
    assert sensor.checksum_errors == 1


def test_frames_split_byte_by_byte():
    sensor, uart, clk = make()
    for i, b in enumerate(frame(WORDS)):
        uart.deliver(bytes([b]), at_ms=i * 2)
    assert sensor.read()["count_0_5"] == 243


def test_mode_change_acknowledgement_is_not_data():
    sensor, uart, _ = make()
    ack = bytes([0x42, 0x4D, 0x00, 0x04, 0xE1, 0x01, 0x01, 0x75])
    uart.deliver(ack + frame(WORDS))
    assert sensor.read()["pm2_5"] == 8
    assert sensor.frames == 1 and sensor.checksum_errors == 0


def test_passive_mode_requests_each_frame():
    sensor, uart, clk = make(mode="passive")

    def answer(data):
        if data == bytes(command(0xE2, 0)):
            uart.deliver(frame(WORDS), at_ms=clk.ticks_ms() + 40)

    uart.on_write = answer
    uart.deliver(frame(OTHER))  # a stale frame from before: discarded, not returned
    assert sensor.read()["pm2_5"] == 8
    assert uart.written == [bytes(command(0xE1, 0)), bytes(command(0xE2, 0))]


def test_silence_is_a_timeout():
    sensor, _, clk = make(timeout_ms=1000)
    exc = raises(SensorTimeout, sensor.read)
    assert "nothing received" in str(exc)
    assert 1000 <= clk.ticks_ms() < 1100


def test_only_bad_checksums_is_a_crc_error():
    sensor, uart, _ = make(timeout_ms=1000)
    bad = bytearray(frame(WORDS))
    bad[31] ^= 0x01
    uart.deliver(bytes(bad))
    assert "checksum" in str(raises(CRCError, sensor.read))


def test_garbage_is_a_frame_error_and_not_our_chip():
    sensor, uart, _ = make(timeout_ms=1000)
    uart.deliver(b"$GPGGA,123519,4807.038,N*47\r\n")
    assert "no valid frame" in str(raises(FrameError, sensor.read))
    sensor, uart, _ = make(timeout_ms=1000)
    uart.deliver(b"$GPGGA,123519,4807.038,N*47\r\n")
    raises(ChipIdError, sensor.identify)


def test_sleep_and_wake_commands():
    sensor, uart, _ = make()
    sensor.sleep()
    sensor.wake()
    assert uart.written == [bytes(command(0xE4, 0)), bytes(command(0xE4, 1))]


def test_bad_settings_are_setting_errors():
    clk = clock()
    assert "mode" in str(raises(SettingError, PMS5003, FakeUART(clk), clock=clk, mode="turbo"))
    assert "timeout_ms" in str(raises(SettingError, PMS5003, FakeUART(clk), clock=clk, timeout_ms=0))

"""NMEA GPS: checksums of the classic reference sentences, coordinates, fix handling, noise and faults."""

from hal_fakes import FakeUART, clock, raises

from hal.drivers.nmea import NMEAGPS, checksum, parse_coordinate, parse_sentence
from hal.errors import ChipIdError, CRCError, FrameError, SensorTimeout, SettingError

# The reference sentences of the NMEA 0183 literature (checksums 47 and 6A as published).
GGA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n"
RMC = b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A\r\n"


def sentence(body):
    return b"$" + body + b"*" + ("%02X" % checksum(body)).encode() + b"\r\n"


GGA_NO_FIX = sentence(b"GPGGA,123520,,,,,0,03,,,M,,M,,")
RMC_NO_FIX = sentence(b"GPRMC,123520,V,,,,,,,230394,,")


def make(timeout_ms=2500):
    clk = clock()
    uart = FakeUART(clk)
    return NMEAGPS(uart, clock=clk, timeout_ms=timeout_ms), uart, clk


def test_reference_checksums():
    assert checksum(GGA[1:-5]) == 0x47
    assert checksum(RMC[1:-5]) == 0x6A
    assert parse_sentence(GGA)[:3] == ["GGA", "123519", "4807.038"]
    assert sentence(GGA[1:-5]) == GGA


def test_coordinates_in_micro_degrees():
    assert parse_coordinate("4807.038", "N") == 48117300  # 48 deg + 7.038 min
    assert parse_coordinate("01131.000", "E") == 11516667
    assert parse_coordinate("3351.8000", "S") == -33863333
    assert parse_coordinate("15112.6000", "W") == -151210000
    assert parse_coordinate("", "N") is None
    raises(FrameError, parse_coordinate, "4860.000", "N")
    raises(FrameError, parse_coordinate, "4807.038", "X")


def test_fix_from_gga_and_rmc():
    gps, uart, _ = make()
    uart.deliver(GGA + RMC)
    values = gps.read()
    assert values["fix"] == 1 and values["satellites"] == 8
    assert values["latitude"] == 48.1173
    assert values["longitude"] == 11.516667
    assert values["altitude"] == 545.4
    assert values["hdop"] == 0.9
    assert values["speed"] == 11.523  # 22.4 knots in m/s
    assert values["course"] == 84.4


def test_any_talker_is_accepted():
    gps, uart, _ = make()
    uart.deliver(sentence(GGA[3:-5].replace(b"GGA", b"GNGGA", 1)) + sentence(b"GNRMC" + RMC[6:-5]))
    assert gps.read()["fix"] == 1


def test_no_fix_reports_satellites_but_no_position():
    gps, uart, _ = make()
    uart.deliver(GGA_NO_FIX + RMC_NO_FIX)
    values = gps.read()
    assert values == {"fix": 0, "satellites": 3}


def test_sentences_arriving_over_time_are_waited_for():
    gps, uart, _ = make()
    uart.deliver(GGA, at_ms=200)
    uart.deliver(RMC[:20], at_ms=700)
    uart.deliver(RMC[20:], at_ms=1100)
    assert gps.read()["speed"] == 11.523


def test_bad_checksum_is_skipped_and_counted():
    gps, uart, _ = make()
    uart.deliver(GGA.replace(b"*47", b"*48") + GGA + RMC)
    assert gps.read()["fix"] == 1
    assert gps.checksum_errors == 1


def test_noise_mid_line_resyncs_on_dollar():
    gps, uart, _ = make()
    uart.deliver(b"\xff\x00$GPGGA,12" + GGA + b"\x13garbage" + RMC)
    assert gps.read()["latitude"] == 48.1173


def test_overlong_line_is_dropped():
    gps, uart, _ = make()
    uart.deliver(b"$GPTXT," + b"A" * 200 + b"\r\n" + GGA + RMC)
    assert gps.read()["fix"] == 1
    assert gps.frame_errors == 1


def test_other_sentences_are_ignored():
    gps, uart, _ = make()
    uart.deliver(sentence(b"GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00")
                 + sentence(b"PMTK001,314,3") + GGA + RMC)
    assert gps.read()["satellites"] == 8
    assert gps.frame_errors == 0 and gps.checksum_errors == 0
    assert parse_sentence(sentence(b"PMTK001,314,3")) == ["PMTK001", "314", "3"]


def test_one_of_the_two_sentences_is_enough_at_the_deadline():
    gps, uart, _ = make(timeout_ms=1000)
    uart.deliver(GGA)
    values = gps.read()
    assert values["latitude"] == 48.1173 and "speed" not in values


def test_silence_is_a_timeout():
    gps, _, clk = make(timeout_ms=1000)
    assert "nothing received" in str(raises(SensorTimeout, gps.read))
    assert clk.ticks_ms() >= 1000


def test_only_bad_checksums_is_a_crc_error():
    gps, uart, _ = make(timeout_ms=1000)
    uart.deliver(GGA.replace(b"*47", b"*00"))
    assert "checksum" in str(raises(CRCError, gps.read))


def test_garbage_is_a_frame_error_and_not_a_gps():
    gps, uart, _ = make(timeout_ms=1000)
    uart.deliver(b"\x42\x4d\x00\x1c" * 20)
    assert "no GGA/RMC" in str(raises(FrameError, gps.read))
    gps, uart, _ = make(timeout_ms=1000)
    uart.deliver(b"\x42\x4d\x00\x1c" * 20)
    raises(ChipIdError, gps.identify)


def test_malformed_sentences():
    raises(FrameError, parse_sentence, b"GPGGA,1*00")
    raises(FrameError, parse_sentence, b"$GPGGA,123519,4807.038")
    raises(FrameError, parse_sentence, b"$GPGGA,1*ZZ")
    raises(CRCError, parse_sentence, b"$GPGGA,1*00")
    raises(FrameError, parse_sentence, sentence(b"GGA,1"))


def test_bad_settings_are_setting_errors():
    clk = clock()
    assert "timeout_ms" in str(raises(SettingError, NMEAGPS, FakeUART(clk), clock=clk, timeout_ms=-1))

"""PMS5003 and NMEA GPS models at the byte level, and the pty line they run on."""

from __future__ import annotations

import struct

import pytest
import serial

from emulator.board.clock import EmulatorClock
from emulator.board.models import nmea_gps as gps
from emulator.board.models import pms5003 as pms
from emulator.board.signals import Environment
from emulator.board.uart import PtyUart, UartPart


@pytest.fixture
def env() -> Environment:
    env = Environment(quiet=True)
    env.pm2_5_ugm3.hold(20.0)
    return env


def parse_frame(frame: bytes) -> list[int]:
    assert frame[:2] == b"BM" and len(frame) == 32
    length, *words, total = struct.unpack(">H13HH", frame[2:])
    assert length == 28
    assert total == sum(frame[:30]) & 0xFFFF
    return words


def test_pms5003_streams_valid_frames_in_active_mode(env: Environment) -> None:
    part = pms.Pms5003Model(EmulatorClock(), env, period_s=1.0)
    first = part.poll(0.0)
    words = parse_frame(first)
    assert words[4] == 20  # PM2.5 atmospheric
    assert words[0] <= words[1] <= words[2]  # PM1 <= PM2.5 <= PM10
    assert words[12] == pms.RESERVED_WORD
    assert part.poll(0.5) == b""
    assert part.next_event(0.5) == 1.0
    assert len(part.poll(1.0)) == 32


def test_pms5003_answers_mode_commands_and_serves_passive_reads(env: Environment) -> None:
    part = pms.Pms5003Model(EmulatorClock(), env)
    part.poll(0.0)
    part.receive(pms.command_frame(pms.CMD_MODE, 0), 0.1)
    assert part.poll(0.2) == bytes.fromhex("424d0004e1000174")  # the reply parts send to "passive"
    assert part.poll(5.0) == b""  # no streaming in passive mode
    request = pms.command_frame(pms.CMD_READ)
    part.receive(b"\x00\x42" + request[:3], 5.0)  # noise before a command, and the command split
    part.receive(request[3:], 5.0)
    parse_frame(part.poll(5.0))
    part.receive(pms.command_frame(pms.CMD_MODE, 1), 6.0)
    assert part.poll(6.0) == bytes.fromhex("424d0004e1010175")
    assert len(part.poll(7.0)) == 32  # streaming again one period later


def test_pms5003_ignores_a_command_with_a_bad_checksum_and_sleeps(env: Environment) -> None:
    part = pms.Pms5003Model(EmulatorClock(), env, wake_s=2.0)
    part.poll(0.0)
    bad = bytearray(pms.command_frame(pms.CMD_MODE, 0))
    bad[-1] ^= 1
    part.receive(bytes(bad), 0.5)
    assert part.active and part.commands == []
    part.receive(pms.command_frame(pms.CMD_SLEEP, 0), 0.5)
    assert part.poll(0.5) == bytes.fromhex("424d0004e4000177")
    assert part.poll(10.0) == b""
    part.receive(pms.command_frame(pms.CMD_SLEEP, 1), 10.0)
    assert part.poll(10.1) == b""  # no reply to wake-up; the fan spins up first
    assert len(part.poll(12.0)) == 32


def test_pms5003_faults_on_the_wire(env: Environment) -> None:
    part = pms.Pms5003Model(EmulatorClock(), env, period_s=1.0, seed=4)
    part.faults.inject("bad_crc", 1)
    frame = part.poll(0.0)
    assert struct.unpack(">H", frame[30:])[0] != sum(frame[:30]) & 0xFFFF
    part.faults.inject("partial", 1)
    assert 1 <= len(part.poll(1.0)) < 32
    part.faults.inject("garbage", 2)
    noisy = part.poll(2.0) + part.poll(3.0)
    assert len(noisy) > 64  # junk before each frame
    part.faults.inject("stuck")
    first = part.poll(4.0)
    part.pm2_5.hold(200.0)
    assert part.poll(5.0) == first


def test_nmea_checksum_of_a_textbook_sentence() -> None:
    body = "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
    assert gps.nmea_checksum(body) == 0x6A
    assert gps.sentence(body) == b"$" + body.encode() + b"*6A\r\n"
    assert gps.sentence(body, corrupt=True) != gps.sentence(body)


def _fields(line: bytes) -> list[str]:
    text = line.decode().strip()
    body, _, check = text[1:].partition("*")
    assert int(check, 16) == gps.nmea_checksum(body)
    return body.split(",")


def test_nmea_gps_searches_then_reports_a_fix() -> None:
    clock = EmulatorClock()
    part = gps.NmeaGpsModel(clock, latitude=47.6397, longitude=-122.1283, fix_after_s=5.0, started=0.0)
    searching = part.poll(0.0).splitlines(keepends=True)
    gga, gsa, rmc = (_fields(line) for line in searching)
    assert gga[0] == "GPGGA" and gga[6] == "0" and gga[2] == ""
    assert rmc[0] == "GPRMC" and rmc[2] == "V"
    assert gsa[0] == "GPGSA"
    fixed = part.poll(5.0).splitlines(keepends=True)
    gga, _, rmc = (_fields(line) for line in fixed)
    assert gga[6] == "1" and rmc[2] == "A"
    latitude = int(gga[2][:2]) + float(gga[2][2:]) / 60
    longitude = -(int(gga[4][:3]) + float(gga[4][3:]) / 60)
    assert (gga[3], gga[5]) == ("N", "W")
    assert latitude == pytest.approx(47.6397, abs=1e-3)
    assert longitude == pytest.approx(-122.1283, abs=1e-3)
    assert rmc[9] == "010126"  # the emulator clock's wall time starts on 2026-01-01
    clock.jump(86400)
    assert _fields(part.poll(6.0).splitlines(keepends=True)[2])[9] == "020126"


def test_nmea_gps_acknowledges_pmtk_and_sets_the_rate() -> None:
    part = gps.NmeaGpsModel(EmulatorClock(), started=0.0)
    part.poll(0.0)
    part.receive(gps.sentence("PMTK220,200") + gps.sentence("PMTK220,100")[:-3] + b"00\r\n", 0.1)
    assert part.poll(0.1) == gps.sentence("PMTK001,220,3")  # the second, bad checksum, is ignored
    assert part.period_s == 0.2


def test_pty_line_carries_both_directions_through_pyserial(env: Environment) -> None:
    part = pms.Pms5003Model(EmulatorClock(realtime=True), env, period_s=0.05)
    with PtyUart(part, 115200) as line:
        port = serial.Serial(line.path, 115200, timeout=2)
        try:
            port.write(pms.command_frame(pms.CMD_MODE, 0))
            reply = port.read(8)
            while reply != bytes.fromhex("424d0004e1000174"):  # frames sent before the command may come first
                reply = reply[1:] + port.read(1)
                assert reply, "no reply to the mode command"
            port.reset_input_buffer()
            port.write(pms.command_frame(pms.CMD_READ))
            parse_frame(port.read(32))
        finally:
            port.close()
        assert part.commands[:2] == [(pms.CMD_MODE, 0), (pms.CMD_READ, 0)]


def test_unplugged_part_is_silent(env: Environment) -> None:
    part = pms.Pms5003Model(EmulatorClock(realtime=True), env, period_s=0.02)
    part.faults.inject("unplugged")
    with PtyUart(part, 115200, paced=False) as line:
        port = serial.Serial(line.path, 115200, timeout=0.3)
        try:
            assert port.read(32) == b""
        finally:
            port.close()
    assert part.frames_sent == 0


def test_an_idle_part_refuses_faults_it_cannot_show() -> None:
    with pytest.raises(ValueError, match="supports: unplugged"):
        UartPart().faults.inject("nack")


class FlakyPart(UartPart):
    """Raises on its first poll; after the host writes, answers b"xxx" once (a model with a bug)."""

    def __init__(self) -> None:
        super().__init__("flaky")
        self.polls = 0
        self.asked = False
        self.answered = False

    def receive(self, data: bytes, now: float) -> None:
        self.asked = True

    def poll(self, now: float) -> bytes:
        self.polls += 1
        if self.polls == 1:
            raise RuntimeError("model bug")
        if self.asked and not self.answered:
            self.answered = True
            return b"xxx"
        return b""

    def next_event(self, now: float) -> float | None:
        return now if self.asked and not self.answered else None


def test_a_failing_model_is_logged_and_the_line_goes_on(caplog) -> None:
    part = FlakyPart()
    with PtyUart(part, 115200, paced=False) as line:
        port = serial.Serial(line.path, 115200, timeout=2)
        try:
            port.write(b"?")  # pyserial flushed its input on open: ask only now
            assert port.read(3) == b"xxx"
        finally:
            port.close()
    assert part.polls >= 2
    assert "the part model failed" in caplog.text

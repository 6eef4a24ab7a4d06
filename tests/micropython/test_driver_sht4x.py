"""SHT4x: Sensirion's CRC vector, conversion formulas, NACK-while-busy retries and faults."""

from hal_fakes import FakeI2C, clock, raises

from hal.drivers.sht4x import SHT4x, crc8
from hal.errors import ChipIdError, CRCError, NackError, SensorTimeout, SettingError


def word(value):
    data = bytearray([value >> 8, value & 0xFF])
    return bytes(data) + bytes([crc8(data)])


class SHT4xModel:
    """Command-based part: remembers the last command, NACKs reads for ``busy_reads`` attempts."""

    def __init__(self, t_ticks=0x6666, rh_ticks=0x8000, serial=0x0F1E2D3C, busy_reads=0, corrupt=False):
        self.t_ticks = t_ticks
        self.rh_ticks = rh_ticks
        self.serial = serial
        self.busy_reads = busy_reads
        self.corrupt = corrupt
        self.commands = []

    def write_raw(self, data):
        self.commands.append(data[0])
        self.busy_left = self.busy_reads

    def read_raw(self, n):
        if self.busy_left:
            self.busy_left -= 1
            raise OSError(5)  # NACK: still measuring
        if self.commands[-1] == 0x89:
            answer = word(self.serial >> 16) + word(self.serial & 0xFFFF)
        else:
            answer = word(self.t_ticks) + word(self.rh_ticks)
        if self.corrupt:
            answer = answer[:5] + bytes([answer[5] ^ 0x01])
        return answer[:n]


def make(**kwargs):
    settings = {}
    if "precision" in kwargs:
        settings["precision"] = kwargs.pop("precision")
    model = SHT4xModel(**kwargs)
    clk = clock()
    return SHT4x(FakeI2C({0x44: model}), clock=clk, **settings), model, clk


def test_crc8_datasheet_vector():
    # Sensirion's example: CRC of 0xBEEF is 0x92.
    assert crc8(b"\xbe\xef") == 0x92
    assert crc8(b"\x00\x00") == 0x81
    assert crc8(b"\xff\xff") == 0xAC


def test_conversion_formulas():
    sensor, _, _ = make(t_ticks=0, rh_ticks=0xFFFF)
    assert sensor.read_fixed() == (-45000, 100000)  # RH would be 119 %: clamped
    sensor, _, _ = make(t_ticks=0xFFFF, rh_ticks=0)
    assert sensor.read_fixed() == (130000, 0)  # RH would be -6 %: clamped
    sensor, _, _ = make(t_ticks=0x6666, rh_ticks=0x8000)
    temperature, humidity = sensor.read_fixed()
    assert temperature == 25000  # -45 + 175 * 26214 / 65535 = 24.9998 -> 25.000
    assert humidity == 56501  # -6 + 125 * 32768 / 65535 = 56.501


def test_read_uses_the_precision_command():
    for precision, command in (("high", 0xFD), ("medium", 0xF6), ("low", 0xE0)):
        sensor, model, _ = make(precision=precision)
        values = sensor.read()
        assert model.commands == [command]
        assert values == {"temperature": 25.0, "humidity": 56.501}


def test_serial_number_identifies_the_part():
    sensor, model, _ = make(serial=0x12345678)
    assert sensor.identify() == "SHT4x"
    assert sensor.serial_number == 0x12345678
    assert model.commands == [0x89]


def test_reads_are_retried_while_the_part_nacks():
    sensor, _, _ = make(busy_reads=4)
    assert sensor.read()["temperature"] == 25.0


def test_a_part_that_never_answers_times_out():
    sensor, _, clk = make(busy_reads=10 ** 6)
    exc = raises(SensorTimeout, sensor.read)
    assert "no result" in str(exc)
    assert clk.ticks_ms() < 100


def test_missing_part_is_a_nack_error():
    sensor = SHT4x(FakeI2C({}), clock=clock())
    assert raises(NackError, sensor.read).address == 0x44


def test_corrupted_crc_is_a_crc_error():
    sensor, _, _ = make(corrupt=True)
    exc = raises(CRCError, sensor.read)
    assert "word 1" in str(exc)


def test_serial_with_bad_crc_is_not_an_sht4x():
    sensor, _, _ = make(corrupt=True)
    assert raises(ChipIdError, sensor.identify).chip == "SHT4x"


def test_heater_runs_the_heater_command():
    sensor, model, _ = make()
    assert sensor.heat("20mW-0.1s")["temperature"] == 25.0
    assert model.commands == [0x15]
    assert "heater" in str(raises(SettingError, sensor.heat, "1W"))


def test_bad_settings_are_setting_errors():
    assert "precision" in str(raises(SettingError, SHT4x, FakeI2C(), clock=clock(), precision="ultra"))
    raises(SettingError, SHT4x, FakeI2C(), address=0x76, clock=clock())

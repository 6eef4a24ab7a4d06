"""ADS1115: config words, scaling, the conversion-ready wait and its deadline, identity by reset values."""

from hal_fakes import FakeI2C, WordDevice, clock, raises

from hal.drivers.ads1115 import ADS1115
from hal.errors import ChipIdError, NackError, SensorTimeout, SettingError


class ADS1115Model(WordDevice):
    """Single-shot conversions that finish ``busy_polls`` config reads after they start."""

    def __init__(self, results=None, busy_polls=2, thresholds=(0x8000, 0x7FFF)):
        super().__init__({0: 0, 1: 0x8583, 2: thresholds[0], 3: thresholds[1]})
        self.results = results or {}
        self.busy_polls = busy_polls
        self.on_write = self._written
        self.on_read = self._reading
        self.polls_left = 0

    def _written(self, reg, value):
        if reg == 1 and value & 0x8000:
            self.words[1] = value & 0x7FFF  # OS reads 0 while converting
            self.polls_left = self.busy_polls
            mux = (value >> 12) & 0x07
            self.words[0] = self.results.get(mux, 0)

    def _reading(self, reg, n):
        if reg == 1 and not self.words[1] & 0x8000:
            if self.polls_left == 0:
                self.words[1] |= 0x8000
            else:
                self.polls_left -= 1


def make(results=None, **kwargs):
    settings = {}
    for key in ("channels", "range_mv", "data_rate"):
        if key in kwargs:
            settings[key] = kwargs.pop(key)
    model = ADS1115Model(results, **kwargs)
    clk = clock()
    return ADS1115(FakeI2C({0x48: model}), clock=clk, **settings), model, clk


def test_single_shot_config_word():
    sensor, model, _ = make(channels=1, range_mv=4096, data_rate=128)
    sensor.read()
    # OS=1, MUX=100 (AIN0-GND), PGA=001 (4.096 V), MODE=1, DR=100 (128 SPS), COMP_QUE=11
    assert model.word_writes == [(1, 0xC383)]


def test_each_channel_uses_its_mux_code():
    sensor, model, _ = make(channels=4)
    sensor.read()
    muxes = [(value >> 12) & 0x07 for reg, value in model.word_writes]
    assert muxes == [4, 5, 6, 7]


def test_scaling_full_scale_and_negative():
    sensor, _, _ = make({4: 0x7FFF, 5: 0x8000, 6: 0x4000, 7: 0xFFFF}, range_mv=4096)
    values = sensor.read()
    assert values["ain0"] == 4.095875  # 32767 * 4.096 / 32768
    assert values["ain1"] == -4.096
    assert values["ain2"] == 2.048
    assert values["ain3"] == -0.000125


def test_differential_read():
    sensor, model, _ = make({0: 0x2000}, range_mv=2048)
    assert sensor.read_differential("0-1") == 0.512
    assert (model.word_writes[-1][1] >> 12) & 0x07 == 0
    assert "pair" in str(raises(SettingError, sensor.read_differential, "0-2"))


def test_conversion_ready_is_polled():
    sensor, _, _ = make({4: 1000}, busy_polls=5, channels=1)
    assert sensor.read() == {"ain0": 0.0625}  # 1000 * 2.048 / 32768


def test_a_conversion_that_never_finishes_times_out():
    sensor, _, clk = make(busy_polls=10 ** 6, channels=1)
    exc = raises(SensorTimeout, sensor.read)
    assert "not ready" in str(exc)
    assert clk.ticks_ms() < 100


def test_conversion_time_follows_the_data_rate():
    assert make(data_rate=8)[0].conversion_ms == 139  # 137.5 ms + 1
    assert make(data_rate=860)[0].conversion_ms == 3


def test_identify_checks_threshold_reset_values():
    sensor, _, _ = make()
    assert sensor.identify() == "ADS1115"
    lm75, _, _ = make(thresholds=(0x4B00, 0x5000))
    exc = raises(ChipIdError, lm75.identify)
    assert exc.found == (0x4B00, 0x5000)
    assert "LM75" in str(exc)


def test_missing_part_is_a_nack_error():
    sensor = ADS1115(FakeI2C({}), clock=clock())
    assert raises(NackError, sensor.read).address == 0x48


def test_units_follow_the_channel_count():
    sensor, _, _ = make(channels=2)
    assert sorted(sensor.read()) == ["ain0", "ain1"]
    assert sorted(sensor.UNITS) == ["ain0", "ain1"]


def test_bad_settings_are_setting_errors():
    assert "range_mv" in str(raises(SettingError, ADS1115, FakeI2C(), clock=clock(), range_mv=5000))
    assert "data_rate" in str(raises(SettingError, ADS1115, FakeI2C(), clock=clock(), data_rate=100))
    assert "channels" in str(raises(SettingError, ADS1115, FakeI2C(), clock=clock(), channels=5))
    sensor, _, _ = make()
    assert "channel" in str(raises(SettingError, sensor.read_channel, 4))

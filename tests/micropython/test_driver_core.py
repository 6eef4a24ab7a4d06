"""Runtime-neutral core: wrapping ticks, the manual clock, OSError mapping, register bit fields."""

from hal_fakes import raises

from hal.clock import TICKS_PERIOD, ManualClock, SystemClock, ticks_add, ticks_diff
from hal.drivers.register import BitField, choose
from hal.errors import BusError, NackError, SensorError, SensorTimeout, SettingError, wrap_os_error


def test_ticks_diff_across_wraparound():
    near_end = TICKS_PERIOD - 5
    later = ticks_add(near_end, 10)
    assert later == 5
    assert ticks_diff(later, near_end) == 10
    assert ticks_diff(near_end, later) == -10


def test_deadline_across_wraparound_on_a_manual_clock():
    clk = ManualClock(start_ms=TICKS_PERIOD - 20)
    deadline = clk.ticks_add(clk.ticks_ms(), 50)
    clk.sleep_ms(40)
    assert clk.ticks_diff(clk.ticks_ms(), deadline) < 0
    clk.sleep_ms(10)
    assert clk.ticks_diff(clk.ticks_ms(), deadline) >= 0
    assert clk.slept_ms == 50


def test_manual_clock_wall_time_and_hooks():
    slept = []
    clk = ManualClock(wall=1000.0, on_sleep=slept.append)
    clk.sleep_ms(1500)
    clk.sleep_ms(0)
    assert clk.time() == 1001.5
    assert slept == [1500]
    raises(ValueError, clk.advance, -1)


def test_system_clock_moves_forward():
    clk = SystemClock()
    start = clk.ticks_ms()
    clk.sleep_ms(2)
    assert clk.ticks_diff(clk.ticks_ms(), start) >= 1
    assert clk.time() > 1600000000


def test_os_errors_map_to_typed_faults():
    for code in (5, 6, 19, 121):
        fault = wrap_os_error(OSError(code), 0x40)
        assert isinstance(fault, NackError) and fault.address == 0x40, code
    assert isinstance(wrap_os_error(OSError(110), 0x40), SensorTimeout)
    assert isinstance(wrap_os_error(OSError(95), 0x40), BusError)
    assert isinstance(wrap_os_error(OSError(5)), BusError)  # no address: not a NACK
    for cls in (NackError, SensorTimeout, BusError, SettingError):
        assert issubclass(cls, SensorError)


def test_bit_fields():
    osrs_t = BitField(0xF4, 0xE0)
    assert osrs_t.shift == 5
    assert osrs_t.put(0x03, 5) == 0xA3
    assert osrs_t.get(0xA3) == 5
    assert "does not fit" in str(raises(SettingError, osrs_t.put, 0, 8))


def test_choose_lists_the_choices():
    assert choose("gain", 2, ((1, 0), (2, 1))) == 1
    assert "1, 2" in str(raises(SettingError, choose, "gain", 3, ((1, 0), (2, 1))))

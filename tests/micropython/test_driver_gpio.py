"""Status LED and button over the Pin port: levels, blink timing through the clock, debounce."""

from hal_fakes import FakePin, clock, raises

from hal.drivers.button import Button
from hal.drivers.led import StatusLED
from hal.errors import SensorTimeout, SettingError


def test_led_levels():
    pin = FakePin()
    led = StatusLED(pin, clock=clock())
    led.on()
    led.toggle()
    led.toggle()
    assert pin.history == [0, 1, 0, 1]
    assert led.read() == {"state": 1}


def test_led_wired_to_3v3_is_inverted():
    pin = FakePin()
    led = StatusLED(pin, clock=clock(), active_high=False)
    led.on()
    assert pin.history == [1, 0]
    assert led.value() == 1


def test_blink_is_timed_by_the_clock_and_ends_off():
    pin = FakePin()
    clk = clock()
    led = StatusLED(pin, clock=clk)
    led.blink(3, on_ms=100, off_ms=50)
    assert pin.history == [0, 1, 0, 1, 0, 1, 0]
    assert clk.ticks_ms() == 450
    assert "blink" in str(raises(SettingError, led.blink, -1))


def test_button_counts_presses_and_calls_back():
    pin = FakePin(level=1)  # pulled up: released
    clk = clock()
    button = Button(pin, clock=clk)
    seen = []
    button.when_pressed = seen.append
    for _ in range(3):
        pin.drive(0)
        clk.advance(100)
        pin.drive(1)
        clk.advance(100)
    assert button.presses == 3
    assert seen == [button, button, button]
    assert pin.trigger == pin.IRQ_FALLING | pin.IRQ_RISING


def test_button_ignores_contact_bounce():
    pin = FakePin(level=1)
    clk = clock()
    button = Button(pin, clock=clk, debounce_ms=50)
    pin.drive(0)
    for _ in range(5):  # bounce for 10 ms
        clk.advance(2)
        pin.drive(1)
        clk.advance(2)
        pin.drive(0)
    clk.advance(200)
    pin.drive(1)
    assert button.presses == 1
    assert button.read() == {"pressed": 0, "presses": 1}


def test_button_active_high():
    pin = FakePin(level=0)
    button = Button(pin, clock=clock(), active_low=False)
    pin.drive(1)
    assert button.is_pressed() and button.presses == 1


def test_wait_for_press_times_out():
    pin = FakePin(level=1)
    clk = clock()
    button = Button(pin, clock=clk)
    assert "no press" in str(raises(SensorTimeout, button.wait_for_press, 500))
    assert clk.ticks_ms() >= 500


def test_wait_for_press_returns_on_a_press():
    pin = FakePin(level=1)
    clk = clock()
    button = Button(pin, clock=clk)

    def press_later(ms):
        if clk.ticks_ms() >= 300 and pin.level:
            pin.drive(0)

    clk.on_sleep = press_later
    assert button.wait_for_press(1000) is True
    assert 300 <= clk.ticks_ms() < 1000


def test_close_removes_the_handler():
    pin = FakePin(level=1)
    button = Button(pin, clock=clock())
    button.close()
    assert pin.handler is None

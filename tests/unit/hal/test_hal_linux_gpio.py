"""GpiozeroPin over gpiozero's MockFactory: machine.Pin verbs, interrupts that survive GC, errors."""

from __future__ import annotations

import gc

import pytest
from gpiozero.pins.mock import MockFactory

from hal.board import load_board
from hal.drivers.button import Button
from hal.drivers.led import StatusLED
from hal.errors import BusError
from hal.linux.gpio import GpiozeroPin
from hal.linux.platform import LinuxPlatform
from hal.platform import PlatformError
from hal.ports import Pin


class MockPlatform(LinuxPlatform):
    def make_pin_factory(self):
        return MockFactory()


@pytest.fixture
def platform():
    with MockPlatform(load_board("rpi-4b")) as p:
        yield p


def test_output_pin(platform) -> None:
    pin = platform.pin(17, GpiozeroPin.OUT)
    assert isinstance(pin, Pin)
    mock = platform.pin_factory().pin(17)
    pin.on()
    assert mock.state and pin.value() == 1
    pin.off()
    assert not mock.state and pin() == 0
    pin(1)
    assert mock.state


def test_input_pin_with_pull_up_reads_the_line(platform) -> None:
    pin = platform.pin(27, GpiozeroPin.IN, GpiozeroPin.PULL_UP)
    mock = platform.pin_factory().pin(27)
    assert mock.pull == "up" and pin.mode() == GpiozeroPin.IN
    assert pin.value() == 1
    mock.drive_low()
    assert pin.value() == 0
    with pytest.raises(ValueError, match=r"GPIO 27 is an input; open it with mode=Pin\.OUT"):
        pin.on()


def test_irq_edges_and_removal(platform) -> None:
    pin = platform.pin(27, GpiozeroPin.IN, GpiozeroPin.PULL_UP)
    mock = platform.pin_factory().pin(27)
    seen = []
    pin.irq(lambda p: seen.append(p.value()), GpiozeroPin.IRQ_FALLING)
    assert mock.edges == "falling"
    mock.drive_low()
    mock.drive_high()
    mock.drive_low()
    assert seen == [0, 0]
    pin.irq(None)
    mock.drive_high()
    mock.drive_low()
    assert seen == [0, 0]


def test_irq_handler_survives_garbage_collection(platform) -> None:
    # gpiozero keeps when_changed by weak reference; a lambda given to irq() must keep firing anyway.
    pin = platform.pin(27, GpiozeroPin.IN, GpiozeroPin.PULL_UP)
    mock = platform.pin_factory().pin(27)
    hits = []
    pin.irq(lambda p: hits.append(1), GpiozeroPin.IRQ_FALLING | GpiozeroPin.IRQ_RISING)
    gc.collect()
    mock.drive_low()
    mock.drive_high()
    assert hits == [1, 1]


def test_bad_modes_and_triggers(platform) -> None:
    pin = platform.pin(22)
    with pytest.raises(ValueError, match="mode must be"):
        pin.init(mode=7)
    with pytest.raises(ValueError, match="pull must be"):
        pin.init(pull=9)
    with pytest.raises(ValueError, match="trigger must include"):
        pin.irq(lambda p: None, 0)
    with pytest.raises(TypeError, match="must be callable"):
        pin.irq(42)


def test_invalid_pin_number_is_a_platform_error(platform) -> None:
    with pytest.raises(PlatformError, match="cannot open GPIO 99 on board 'rpi-4b'"):
        platform.pin(99)


def test_gpiozero_refusal_becomes_a_bus_error(platform) -> None:
    pin = platform.pin(2, GpiozeroPin.IN)  # GPIO 2 has a fixed physical pull-up on a Pi
    with pytest.raises(BusError, match="cannot set the pull of GPIO 2"):
        pin.init(pull=GpiozeroPin.PULL_DOWN)


def test_led_and_button_drivers_on_gpiozero_pins(platform) -> None:
    from hal.clock import ManualClock

    clock = ManualClock()
    led = StatusLED(platform.pin(17, GpiozeroPin.OUT), clock=clock)
    led.blink(2, 100, 100)
    mock_led = platform.pin_factory().pin(17)
    assert [state for _, state in mock_led.states] == [False, True, False, True, False]

    button = Button(platform.pin(27, GpiozeroPin.IN, GpiozeroPin.PULL_UP), clock=clock)
    mock_button = platform.pin_factory().pin(27)
    mock_button.drive_low()
    clock.advance(100)
    mock_button.drive_high()
    assert button.presses == 1


def test_pin_factory_by_name() -> None:
    with LinuxPlatform(load_board("rpi-4b"), pin_factory="mock") as p:
        assert type(p.pin_factory()).__name__ == "MockFactory"
    with LinuxPlatform(load_board("rpi-4b"), pin_factory="nonesuch") as p, \
            pytest.raises(PlatformError, match=r"gpiozero has no pin factory 'nonesuch'; known: .*mock"):
        p.pin_factory()


def test_no_gpio_on_this_machine_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpiozero import Device

    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)

    def no_backend():
        raise RuntimeError("Unable to load any default pin factory!")

    monkeypatch.setattr(Device, "_default_pin_factory", staticmethod(no_backend))
    with LinuxPlatform(load_board("rpi-4b")) as p, pytest.raises(PlatformError, match="python3-lgpio"):
        p.pin(17)


def test_closing_the_platform_closes_its_pins() -> None:
    platform = MockPlatform(load_board("rpi-4b"))
    factory = platform.pin_factory()
    pin = platform.pin(17, GpiozeroPin.OUT)
    pin.irq(lambda p: None)
    platform.close()
    assert pin.pin.when_changed is None
    assert platform._factory is None and factory is not None


def test_asking_again_with_a_mode_applies_it(platform) -> None:
    pin = platform.pin(22, GpiozeroPin.OUT)
    assert platform.pin(22) is pin and pin.mode() == GpiozeroPin.OUT
    assert platform.pin(22, GpiozeroPin.IN, GpiozeroPin.PULL_UP) is pin
    assert pin.mode() == GpiozeroPin.IN and pin.value() == 1

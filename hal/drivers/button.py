"""A push button on a Pin port: debounced press counting from edge interrupts, and polling.

The pin is an input (with a pull-up for a button to GND, the usual wiring, so ``active_low``).
Edges closer than ``debounce_ms`` to the last accepted one are contact bounce and are ignored.
"""

from hal.drivers.compat import default_clock
from hal.errors import SensorTimeout, SettingError


class Button:
    """A button on ``pin``; ``when_pressed`` (if set) is called with the Button on each debounced press."""

    CHIP = "button"
    BUS = "gpio"
    UNITS = {"pressed": "", "presses": ""}

    def __init__(self, pin, clock=None, active_low=True, debounce_ms=50):
        if debounce_ms < 0:
            raise SettingError("debounce_ms must be 0 or more, got %r" % (debounce_ms,))
        self.pin = pin
        self.clock = default_clock(clock)
        self.active_low = active_low
        self.debounce_ms = debounce_ms
        self.presses = 0
        self.when_pressed = None
        self._last_edge = None
        self._was_pressed = self.is_pressed()
        pin.irq(self._edge, pin.IRQ_FALLING | pin.IRQ_RISING)

    def identify(self):
        """A button has no identity to check; present for the common driver interface."""
        return self.CHIP

    def is_pressed(self):
        level = self.pin.value()
        return bool(level) != bool(self.active_low)

    def _edge(self, pin):
        now = self.clock.ticks_ms()
        pressed = self.is_pressed()
        if pressed == self._was_pressed:
            return  # a bounce that ended where it started
        if self._last_edge is not None and self.clock.ticks_diff(now, self._last_edge) < self.debounce_ms:
            return
        self._last_edge = now
        self._was_pressed = pressed
        if pressed:
            self.presses += 1
            handler = self.when_pressed
            if handler is not None:
                handler(self)

    def wait_for_press(self, timeout_ms):
        """Block (through the clock) until the next press; SensorTimeout after ``timeout_ms``."""
        start = self.presses
        clock = self.clock
        deadline = clock.ticks_add(clock.ticks_ms(), timeout_ms)
        while self.presses == start:
            if clock.ticks_diff(clock.ticks_ms(), deadline) >= 0:
                raise SensorTimeout("button: no press within %d ms" % (timeout_ms,))
            clock.sleep_ms(10)
        return True

    def close(self):
        self.pin.irq(None)

    def read(self):
        return {"pressed": 1 if self.is_pressed() else 0, "presses": self.presses}

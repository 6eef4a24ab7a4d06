"""A status LED on a Pin port: on, off, toggle and blink patterns timed by the injected clock."""

from hal.drivers.compat import default_clock
from hal.errors import SettingError


class StatusLED:
    """An LED on ``pin`` (an output ``machine.Pin``-like object). ``active_high=False`` for LEDs wired to 3V3."""

    CHIP = "LED"
    BUS = "gpio"
    UNITS = {"state": ""}

    def __init__(self, pin, clock=None, active_high=True):
        self.pin = pin
        self.clock = default_clock(clock)
        self.active_high = active_high
        self._state = 0
        self.off()

    def identify(self):
        """An LED has no identity to check; present for the common driver interface."""
        return self.CHIP

    def value(self, state=None):
        if state is None:
            return self._state
        self._state = 1 if state else 0
        self.pin.value(self._state if self.active_high else 1 - self._state)
        return None

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(1 - self._state)

    def blink(self, times=3, on_ms=200, off_ms=200):
        """Blink ``times`` times (blocking, through the clock) and leave the LED off."""
        if times < 0 or on_ms < 0 or off_ms < 0:
            raise SettingError("blink needs times, on_ms and off_ms of 0 or more, got %r, %r, %r"
                               % (times, on_ms, off_ms))
        for _ in range(times):
            self.on()
            self.clock.sleep_ms(on_ms)
            self.off()
            self.clock.sleep_ms(off_ms)

    def read(self):
        return {"state": self._state}

"""The Pin port over a gpiozero pin, so drivers see ``machine.Pin`` on a Pi too.

gpiozero's factory owns the pins (reservation, board info, the backend: lgpio, RPi.GPIO, native,
or MockFactory in tests); this adapter only translates the ``machine.Pin`` verbs. gpiozero holds
``when_changed`` callbacks by weak reference, so the adapter keeps its own strong reference to
the callback it installs: otherwise an ``irq`` handler would silently stop firing after a GC.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpiozero import GPIOZeroError

from hal.errors import BusError


class GpiozeroPin:
    """``machine.Pin`` on a gpiozero ``Pin`` (from ``factory.pin(number)``)."""

    # Same values as MicroPython's rp2 port, so drivers may compare them.
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, pin: Any, mode: int | None = None, pull: int | None = None, *,
                 number: int | None = None) -> None:
        self.pin = pin
        self.number = number if number is not None else getattr(pin, "number", None)
        self._handler: Callable[[GpiozeroPin], None] | None = None
        self._on_change: Callable[..., None] | None = None  # strong reference; gpiozero keeps a weak one
        self.init(mode, pull)

    def init(self, mode: int | None = None, pull: int | None = None) -> None:
        """Set direction and pull, as ``machine.Pin.init``; None leaves a setting as it is."""
        if mode is not None:
            if mode not in (self.IN, self.OUT):
                raise ValueError(f"GPIO {self.number}: mode must be Pin.IN or Pin.OUT, got {mode!r}")
            self._call("set the direction of", setattr, self.pin, "function", "output" if mode == self.OUT else "input")
        if pull is not None:
            names = {self.PULL_UP: "up", self.PULL_DOWN: "down", 0: "floating"}
            if pull not in names:
                raise ValueError(f"GPIO {self.number}: pull must be Pin.PULL_UP, Pin.PULL_DOWN or 0, got {pull!r}")
            self._call("set the pull of", setattr, self.pin, "pull", names[pull])

    def _call(self, what: str, func: Callable[..., Any], *args: Any) -> Any:
        try:
            return func(*args)
        except GPIOZeroError as exc:
            raise BusError(f"cannot {what} GPIO {self.number}: {exc}") from exc

    def mode(self) -> int:
        return self.OUT if self.pin.function == "output" else self.IN

    def value(self, x: int | bool | None = None) -> int | None:
        if x is None:
            return 1 if self._call("read", getattr, self.pin, "state") else 0
        if self.pin.function != "output":
            raise ValueError(f"GPIO {self.number} is an input; open it with mode=Pin.OUT to drive it")
        self._call("drive", setattr, self.pin, "state", bool(x))
        return None

    def on(self) -> None:
        self.value(1)

    def off(self) -> None:
        self.value(0)

    def __call__(self, x: int | bool | None = None) -> int | None:
        return self.value(x)

    def irq(self, handler: Callable[[GpiozeroPin], None] | None = None, trigger: int = IRQ_FALLING | IRQ_RISING) -> Any:
        """Call ``handler(pin)`` on the edges in ``trigger``; ``handler=None`` removes the handler."""
        if handler is None:
            self._call("clear the handler of", setattr, self.pin, "when_changed", None)
            self._handler = self._on_change = None
            return None
        if not callable(handler):
            raise TypeError(f"GPIO {self.number}: irq handler must be callable, got {handler!r}")
        rising = bool(trigger & self.IRQ_RISING)
        falling = bool(trigger & self.IRQ_FALLING)
        if not (rising or falling):
            raise ValueError(f"GPIO {self.number}: trigger must include Pin.IRQ_RISING and/or Pin.IRQ_FALLING")
        edges = "both" if rising and falling else ("rising" if rising else "falling")
        self._handler = handler

        def on_change(ticks: Any = None, state: Any = None) -> None:
            current = self._handler
            if current is not None:
                current(self)

        self._on_change = on_change
        self._call("set edge detection on", setattr, self.pin, "edges", edges)
        self._call("set a handler on", setattr, self.pin, "when_changed", on_change)
        return on_change

    def close(self) -> None:
        if self._on_change is not None:
            self.irq(None)
        self.pin.close()

    def __repr__(self) -> str:
        return f"<GpiozeroPin GPIO{self.number}>"

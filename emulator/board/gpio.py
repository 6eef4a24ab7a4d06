"""The emulated board's GPIO header: gpiozero's MockFactory, with the board's pin roles by name.

The product opens pins through the factory exactly as on a Pi (the ``linux`` platform's gpiozero
adapter), so everything it does to a pin is recorded by the MockPin. This class adds the other side
of the wire: ``drive`` an input (a button, a sensor's ready line), read back what the product drives
(``level``, ``history`` of the status LED), and ``press`` a button. The MockPin records every change,
so observing an output needs no ``when_changed`` callback (a pin has one, and it belongs to the product).
"""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory, MockPin

# Board revision codes gpiozero knows, so pin names and header maps match the board being emulated.
REVISIONS = {"rpi-3b": "a02082", "rpi-4b": "c03112", "rpi-5": "d04170", "rpi-zero-2w": "902120"}


class EmulatedGpio:
    """GPIO of one emulated board; ``roles`` maps names such as ``status_led`` to BCM numbers."""

    def __init__(self, roles: dict[str, int], board_name: str = "") -> None:
        self.roles = dict(roles)
        self.factory = MockFactory(revision=REVISIONS.get(board_name, REVISIONS["rpi-4b"]))

    def number(self, pin: str | int) -> int:
        if isinstance(pin, int):
            return pin
        try:
            return self.roles[pin]
        except KeyError:
            known = ", ".join(f"{k}={v}" for k, v in sorted(self.roles.items())) or "none"
            raise KeyError(f"the board has no GPIO role {pin!r}; its roles are: {known}") from None

    def pin(self, pin: str | int) -> MockPin:
        """The MockPin behind a role or BCM number (the same object the product's pin factory hands out)."""
        return self.factory.pin(self.number(pin))

    def drive(self, pin: str | int, level: bool) -> None:
        """Drive an input from outside the Pi (a button, an open-drain alert line)."""
        mock = self.pin(pin)
        if level:
            mock.drive_high()
        else:
            mock.drive_low()

    def press(self, pin: str | int = "button") -> None:
        """A push and release of an active-low button (pulled up, shorted to ground while pressed)."""
        self.drive(pin, False)
        self.drive(pin, True)

    def level(self, pin: str | int) -> int:
        """The pin's present level: what the product drives on an output."""
        return int(bool(self.pin(pin).state))

    def history(self, pin: str | int) -> list[int]:
        """Every level the pin has had since it was opened, oldest first."""
        return [int(bool(s.state)) for s in self.pin(pin).states]

    def close(self) -> None:
        self.factory.close()

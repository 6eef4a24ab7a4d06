"""The status LED as cloud management uses it: a mode set from the twin, and blinking to identify a device."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

PIN_OUT = 1   # machine.Pin.OUT, the value every roost Pin port uses


class StatusLed:
    """Drives the board's status LED through the platform's Pin port; absent LED -> ``available`` False."""

    def __init__(self, platform: Any) -> None:
        self._platform = platform
        self._pin: Any = None
        self.mode = "auto"
        self._identify: asyncio.Task | None = None

    @property
    def pin_number(self) -> int | None:
        board = getattr(self._platform, "board", None)
        return getattr(board, "status_led", None) if board is not None else None

    @property
    def available(self) -> bool:
        return self.pin_number is not None

    @property
    def identifying(self) -> bool:
        """True while an identify blink runs (the LED shows the mode again once it is over)."""
        return self._identify is not None and not self._identify.done()

    def _port(self) -> Any:
        if self._pin is None:
            self._pin = self._platform.pin(self.pin_number, PIN_OUT)
        return self._pin

    def set_mode(self, mode: str) -> None:
        """auto (the agent shows its state: lit while running), on, or off."""
        if not self.available:
            raise ValueError("this board has no status LED (no gpio.status_led in its profile)")
        self.mode = mode
        if not self.identifying:
            self._show_mode()

    def _show_mode(self) -> None:
        pin = self._port()
        if self.mode == "off":
            pin.off()
        else:
            pin.on()

    def identify(self, seconds: float, period_s: float = 0.5) -> asyncio.Task:
        """Blink for ``seconds`` (a new request restarts the blinking), then go back to the mode's state."""
        if not self.available:
            raise ValueError("this board has no status LED (no gpio.status_led in its profile)")
        if self.identifying:
            self._identify.cancel()
        self._identify = asyncio.get_running_loop().create_task(self._blink(seconds, period_s))
        return self._identify

    async def _blink(self, seconds: float, period_s: float) -> None:
        pin = self._port()
        toggles = max(2, int(seconds / (period_s / 2)))
        try:
            for i in range(toggles):
                if i % 2 == 0:
                    pin.on()
                else:
                    pin.off()
                await asyncio.sleep(period_s / 2)
        finally:
            self._show_mode()

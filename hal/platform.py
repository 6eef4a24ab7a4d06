"""Platforms: where a board's buses and pins come from, chosen by name.

Like gpiozero's pin factories, a platform is looked up in an entry point group
(``roost.platforms``): roost ships ``linux`` (``hal.linux``); the board emulator registers
``emulated``. Code above the HAL asks ``load_platform(name, board)`` and never imports an
implementation, so the emulator is swapped in by a name in the configuration.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from hal.board import BoardProfile, BusSpec
from hal.ports import I2C, UART, Clock, Pin

ENTRY_POINT_GROUP = "roost.platforms"


class PlatformError(RuntimeError):
    """A platform cannot be chosen or cannot open a bus or pin; the message says how to fix it."""


class Platform:
    """Opens a board's ports. Subclasses implement ``_open_i2c``, ``_open_uart``, ``_open_pin``.

    Ports are opened on first use and cached, so two sensors on one bus share it; ``close()``
    closes everything this platform opened. A platform is a context manager.
    """

    name = "base"
    #: Board runtimes this platform can drive.
    supported_runtimes: tuple[str, ...] = ("linux",)

    def __init__(self, board: BoardProfile, *, clock: Clock | None = None, **options: Any) -> None:
        if board.runtime not in self.supported_runtimes:
            raise PlatformError(
                f"board {board.name!r} is a {board.runtime} board and the {self.name!r} platform drives "
                f"{' and '.join(self.supported_runtimes)} boards only; choose a platform for {board.runtime} "
                f"or a different board profile"
            )
        self.board = board
        self.options = options
        self.clock: Clock = clock if clock is not None else self.make_clock()
        self._i2c: dict[str, I2C] = {}
        self._uart: dict[str, UART] = {}
        self._pins: dict[int, Pin] = {}
        self._closed = False

    # -- what subclasses provide ---------------------------------------------------------------------------

    def make_clock(self) -> Clock:
        from hal.clock import SystemClock

        return SystemClock()

    def _open_i2c(self, bus: BusSpec) -> I2C:
        raise PlatformError(f"the {self.name!r} platform has no I2C")

    def _open_uart(self, bus: BusSpec) -> UART:
        raise PlatformError(f"the {self.name!r} platform has no UART")

    def _open_pin(self, number: int, mode: int | None, pull: int | None) -> Pin:
        raise PlatformError(f"the {self.name!r} platform has no GPIO")

    def pin_factory(self) -> Any:
        """The gpiozero pin Factory behind ``pin()``, for code that builds gpiozero devices itself."""
        raise PlatformError(f"the {self.name!r} platform has no gpiozero pin factory")

    def _close_port(self, port: Any) -> None:
        close = getattr(port, "close", None)
        if close is not None:
            close()

    # -- the public face -------------------------------------------------------------------------------------

    def _bus(self, bus_name: str, kind: str) -> BusSpec:
        self._check_open()
        try:
            spec = self.board.bus(bus_name)
        except KeyError as exc:
            raise PlatformError(exc.args[0]) from None
        if spec.kind != kind:
            raise PlatformError(f"bus {bus_name!r} of board {self.board.name!r} is {spec.kind}, not {kind}")
        return spec

    def i2c(self, bus_name: str) -> I2C:
        """The I2C port for the board's bus ``bus_name`` (opened once, then shared)."""
        port = self._i2c.get(bus_name)
        if port is None:
            port = self._i2c[bus_name] = self._open_i2c(self._bus(bus_name, "i2c"))
        return port

    def uart(self, bus_name: str) -> UART:
        """The UART port for the board's bus ``bus_name`` (opened once, then shared)."""
        port = self._uart.get(bus_name)
        if port is None:
            port = self._uart[bus_name] = self._open_uart(self._bus(bus_name, "uart"))
        return port

    def pin(self, number: int, mode: int | None = None, pull: int | None = None) -> Pin:
        """The GPIO ``number`` (BCM numbering on a Pi); ``mode``/``pull`` as ``machine.Pin``."""
        self._check_open()
        port = self._pins.get(number)
        if port is None:
            port = self._pins[number] = self._open_pin(number, mode, pull)
        elif mode is not None or pull is not None:
            # Asked again with a direction or pull: apply it, as machine.Pin(n, mode) does.
            port.init(mode, pull)
        return port

    def _check_open(self) -> None:
        if self._closed:
            raise PlatformError(f"the {self.name!r} platform for {self.board.name!r} is closed")

    def close(self) -> None:
        """Close every port opened through this platform. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        ports: list[Any] = [*self._pins.values(), *self._uart.values(), *self._i2c.values()]
        self._pins.clear()
        self._uart.clear()
        self._i2c.clear()
        for port in ports:
            self._close_port(port)

    def __enter__(self) -> Platform:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} board={self.board.name!r}>"


def platform_names() -> list[str]:
    """Names registered in the ``roost.platforms`` entry point group, sorted."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def load_platform(name: str, board: BoardProfile, **options: Any) -> Platform:
    """Build the platform registered as ``name`` for ``board``; ``options`` go to its constructor."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        available = ", ".join(platform_names()) or "none (is roost installed? try: pip install -e .)"
        raise PlatformError(f"no platform called {name!r}; available platforms: {available}")
    try:
        cls = found[0].load()
    except ImportError as exc:
        raise PlatformError(f"platform {name!r} ({found[0].value}) cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Platform)):
        raise PlatformError(f"platform {name!r} ({found[0].value}) is not a hal.platform.Platform subclass")
    return cls(board, **options)

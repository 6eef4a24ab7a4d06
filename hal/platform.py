"""Platforms: where a board's buses and pins come from, chosen by name.

Like gpiozero's pin factories, a platform is looked up in an entry point group
(``roost.platforms``): roost ships ``linux`` (``hal.linux``); the board emulator registers
``emulated``. Code above the HAL asks ``load_platform(name, board)`` and never imports an
implementation, so the emulator is swapped in by a name in the configuration.

Finding a platform must stay cheap, because the agent does it once and then runs for months: importlib.metadata
alone keeps about 0.7 MB resident (email, csv, zipfile and its caches). So ``linux`` is found without any package
metadata, and any other name is first looked up by reading the ``entry_points.txt`` files of the distributions
installed on ``sys.path`` directly; importlib.metadata is the authority only when that finds nothing (zipped or
otherwise unusual installs) and for listing every platform.
"""

from __future__ import annotations

import importlib
import os
import sys
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


#: Platforms roost itself provides, found without reading package metadata. A distribution cannot replace them.
BUILTIN_PLATFORMS = {"linux": "hal.linux.platform:LinuxPlatform"}


def platform_names() -> list[str]:
    """Names registered in the ``roost.platforms`` entry point group (and the built-in ones), sorted."""
    from importlib.metadata import entry_points

    return sorted({*BUILTIN_PLATFORMS, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})


def load_platform(name: str, board: BoardProfile, **options: Any) -> Platform:
    """Build the platform registered as ``name`` for ``board``; ``options`` go to its constructor."""
    target = BUILTIN_PLATFORMS.get(name) or declared_platform(name) or _declared_in_metadata(name)
    if target is None:
        available = ", ".join(platform_names()) or "none (is roost installed? try: pip install -e .)"
        raise PlatformError(f"no platform called {name!r}; available platforms: {available}")
    try:
        cls = _load_object(target)
    except (ImportError, AttributeError) as exc:
        raise PlatformError(f"platform {name!r} ({target}) cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, Platform)):
        raise PlatformError(f"platform {name!r} ({target}) is not a hal.platform.Platform subclass")
    return cls(board, **options)


def declared_platform(name: str, path: list[str] | None = None) -> str | None:
    """The ``module:attribute`` a distribution installed on ``path`` (default ``sys.path``) declares for the
    platform ``name`` in its entry_points.txt; None when none does. The first one on the path wins, as for
    imports. Only plain directories are searched."""
    for entry in sys.path if path is None else path:
        directory = entry or "."
        try:
            names = sorted(os.listdir(directory))
        except OSError:     # a zip file or a directory that is gone: importlib.metadata's business
            continue
        for dist in names:
            if not dist.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(directory, dist, "entry_points.txt"), encoding="utf-8") as handle:
                    text = handle.read()
            except (OSError, UnicodeDecodeError):
                continue
            target = entry_point_in(text, ENTRY_POINT_GROUP, name)
            if target:
                return target
    return None


def entry_point_in(text: str, group: str, name: str) -> str | None:
    """The value of entry point ``name`` in ``group`` of an entry_points.txt (an INI file), or None."""
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != group:
            continue
        key, sep, value = line.partition("=")
        if sep and key.strip() == name:
            return value.strip() or None
    return None


def _declared_in_metadata(name: str) -> str | None:
    from importlib.metadata import entry_points

    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    return found[0].value if found else None


def _load_object(target: str) -> Any:
    """Import ``module:attribute.path`` (extras in brackets ignored), as an entry point's load() does."""
    module_name, _, attribute = target.split("[", 1)[0].strip().partition(":")
    obj = importlib.import_module(module_name.strip())
    for part in filter(None, attribute.strip().split(".")):
        obj = getattr(obj, part)
    return obj

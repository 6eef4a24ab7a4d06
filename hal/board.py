"""Board profiles: which buses, pins and sensors a board has, read from ``boards/<name>.toml``.

A profile is data, checked once when it is loaded. Anything wrong raises :class:`ProfileError`
naming the file, the key and what was expected, so a typo never turns into a silent default.
The schema is documented in docs/boards.md.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

RUNTIMES = ("linux", "micropython")
BUS_KINDS = ("i2c", "uart")
BOOT_BACKENDS = ("rpi-tryboot", "uboot", "emulated", "none")
# Highest GPIO number per runtime: BCM 0-27 on the Pi header, GP0-GP28 on the RP2040.
GPIO_MAX = {"linux": 27, "micropython": 28}
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_SECTIONS = ("board", "buses", "gpio", "sensors", "boot", "tpm")


class ProfileError(ValueError):
    """A board profile that cannot be used: which file, which key, what is wrong, what would be right."""

    def __init__(self, path: str, key: str, problem: str, expected: str) -> None:
        self.path = str(path)
        self.key = key
        self.problem = problem
        self.expected = expected
        super().__init__(f"{self.path}: {key}: {problem}; expected {expected}")


@dataclass(frozen=True)
class BusSpec:
    """One bus of a board. Linux buses name a device node; MicroPython buses name pins."""

    name: str
    kind: str  # "i2c" | "uart"
    device: str | None = None  # Linux: /dev/i2c-1, /dev/serial0
    baudrate: int | None = None  # UART only
    id: int | None = None  # MicroPython: machine.I2C(id) / machine.UART(id)
    sda: int | None = None
    scl: int | None = None
    freq: int | None = None  # MicroPython I2C clock in Hz
    tx: int | None = None
    rx: int | None = None

    @property
    def label(self) -> str:
        """How the bus is shown to people: its name and where it lives."""
        where = self.device if self.device is not None else f"id {self.id}"
        return f"{self.name} ({where})"


@dataclass(frozen=True)
class SensorSpec:
    """One attached sensor: which driver reads it, on which bus, at which address, how often."""

    id: str
    driver: str
    bus: str
    address: int | None = None
    interval_s: float = 10.0
    options: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class BoardProfile:
    """A whole board as the agent sees it."""

    name: str
    description: str
    runtime: str
    buses: dict[str, BusSpec] = field(hash=False)
    gpio: dict[str, int] = field(hash=False)
    sensors: list[SensorSpec] = field(hash=False)
    boot_backend: str = "none"
    tpm_device: str | None = None
    path: str = ""

    @property
    def status_led(self) -> int | None:
        return self.gpio.get("status_led")

    @property
    def button(self) -> int | None:
        return self.gpio.get("button")

    def bus(self, name: str) -> BusSpec:
        """The bus called ``name``; a KeyError that lists the board's buses otherwise."""
        try:
            return self.buses[name]
        except KeyError:
            raise KeyError(
                f"board {self.name!r} has no bus {name!r}; its buses are: {', '.join(sorted(self.buses)) or 'none'}"
            ) from None

    def sensor(self, sensor_id: str) -> SensorSpec:
        for spec in self.sensors:
            if spec.id == sensor_id:
                return spec
        known = ", ".join(s.id for s in self.sensors) or "none"
        raise KeyError(f"board {self.name!r} has no sensor {sensor_id!r}; its sensors are: {known}")


def board_names() -> list[str]:
    """Names of the profiles shipped in the ``boards`` package, sorted."""
    root = resources.files("boards")
    return sorted(entry.name[:-5] for entry in root.iterdir() if entry.name.endswith(".toml"))


def load_board(name_or_path: str) -> BoardProfile:
    """Load and check a profile: a shipped board by name (``"rpi-4b"``) or a TOML file by path."""
    text, path = _read_profile(str(name_or_path))
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(path, "(file)", f"not valid TOML ({exc})", "a TOML document, see docs/boards.md") from None
    return parse_board(data, path)


def _is_path(name_or_path: str) -> bool:
    return os.sep in name_or_path or "/" in name_or_path or name_or_path.endswith(".toml")


def _read_profile(name_or_path: str) -> tuple[str, str]:
    if _is_path(name_or_path):
        try:
            with open(name_or_path, encoding="utf-8") as handle:
                return handle.read(), name_or_path
        except FileNotFoundError:
            raise ProfileError(name_or_path, "(file)", "no such file", "a path to a board profile (.toml)") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ProfileError(name_or_path, "(file)", f"cannot be read ({exc})", "a readable UTF-8 file") from None
    if not _NAME.match(name_or_path):
        raise ProfileError(name_or_path, "(name)", "not a board name", f"one of: {', '.join(board_names())}")
    resource = resources.files("boards").joinpath(f"{name_or_path}.toml")
    if not resource.is_file():
        raise ProfileError(
            f"boards/{name_or_path}.toml", "(name)", f"no board called {name_or_path!r}",
            f"one of: {', '.join(board_names())} (or a path to a .toml file)",
        )
    return resource.read_text(encoding="utf-8"), str(resource)


# -- checking --------------------------------------------------------------------------------------------------


class _Checker:
    """Reads typed values out of the parsed TOML, raising ProfileError with the full key on mismatch."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, key: str, problem: str, expected: str) -> ProfileError:
        return ProfileError(self.path, key, problem, expected)

    def table(self, data: dict, key: str, name: str, *, required: bool = True) -> dict:
        value = data.get(name)
        full = f"{key}.{name}" if key else name
        if value is None:
            if required:
                raise self.fail(full, "missing", f"a [{full}] table")
            return {}
        if not isinstance(value, dict):
            raise self.fail(full, f"is {_describe(value)}", f"a [{full}] table")
        return value

    def no_extra(self, data: dict, key: str, allowed: tuple[str, ...]) -> None:
        for name in data:
            if name not in allowed:
                full = f"{key}.{name}" if key else name
                raise self.fail(full, "unknown key", f"one of: {', '.join(allowed)}")

    def string(self, data: dict, key: str, name: str, *, required: bool = True,
               choices: tuple[str, ...] | None = None) -> str | None:
        full = f"{key}.{name}"
        value = data.get(name)
        want = f"one of: {', '.join(choices)}" if choices else "a string"
        if value is None:
            if required:
                raise self.fail(full, "missing", want)
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(full, f"is {_describe(value)}", want)
        if choices and value not in choices:
            raise self.fail(full, f"unknown value {value!r}", want)
        return value

    def integer(self, data: dict, key: str, name: str, *, required: bool = True,
                low: int | None = None, high: int | None = None, hexadecimal: bool = False) -> int | None:
        full = f"{key}.{name}"
        value = data.get(name)
        fmt = (lambda n: f"0x{n:02x}") if hexadecimal else str
        span = ""
        if low is not None and high is not None:
            span = f" from {fmt(low)} to {fmt(high)}"
        elif low is not None:
            span = f" of at least {fmt(low)}"
        want = f"an integer{span}"
        if value is None:
            if required:
                raise self.fail(full, "missing", want)
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            hint = " (write numbers without quotes, e.g. 0x76)" if isinstance(value, str) else ""
            raise self.fail(full, f"is {_describe(value)}{hint}", want)
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(full, f"{fmt(value)} is out of range", want)
        return value

    def number(self, data: dict, key: str, name: str, default: float) -> float:
        full = f"{key}.{name}"
        value = data.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(full, f"is {_describe(value)}", "a number of seconds greater than 0")
        if not math.isfinite(value) or value <= 0:
            raise self.fail(full, f"{value!r} is not a usable interval", "a number of seconds greater than 0")
        return float(value)


def _describe(value: Any) -> str:
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table"}
    return f"{kinds.get(type(value), type(value).__name__)} ({value!r})"


def parse_board(data: dict, path: str = "<profile>") -> BoardProfile:
    """Check parsed TOML and build the profile (``load_board`` without the file reading)."""
    check = _Checker(path)
    check.no_extra(data, "", _SECTIONS)

    board = check.table(data, "", "board")
    check.no_extra(board, "board", ("name", "description", "runtime"))
    name = check.string(board, "board", "name")
    if not _NAME.match(name):
        raise check.fail("board.name", f"{name!r} is not a usable name", "lower-case letters, digits, '-' and '_'")
    description = check.string(board, "board", "description")
    runtime = check.string(board, "board", "runtime", choices=RUNTIMES)

    buses = _parse_buses(check, check.table(data, "", "buses"), runtime)
    gpio = _parse_gpio(check, check.table(data, "", "gpio", required=False), runtime)
    sensors = _parse_sensors(check, data.get("sensors", []), buses)

    boot = check.table(data, "", "boot", required=False)
    check.no_extra(boot, "boot", ("backend",))
    backend = check.string(boot, "boot", "backend", required=False, choices=BOOT_BACKENDS) or "none"

    tpm = check.table(data, "", "tpm", required=False)
    check.no_extra(tpm, "tpm", ("device",))
    tpm_device = check.string(tpm, "tpm", "device", required=False)
    if tpm_device is not None and runtime != "linux":
        raise check.fail("tpm.device", f"a TPM on a {runtime} board", "no [tpm] table: only Linux boards use a TPM")
    if tpm_device is not None and not tpm_device.startswith("/"):
        raise check.fail("tpm.device", f"{tpm_device!r} is not an absolute path", "a device such as /dev/tpmrm0")

    return BoardProfile(name=name, description=description, runtime=runtime, buses=buses, gpio=gpio,
                        sensors=sensors, boot_backend=backend, tpm_device=tpm_device, path=str(path))


_LINUX_BUS_KEYS = {"i2c": ("kind", "device"), "uart": ("kind", "device", "baudrate")}
_MPY_BUS_KEYS = {"i2c": ("kind", "id", "sda", "scl", "freq"), "uart": ("kind", "id", "tx", "rx", "baudrate")}


def _parse_buses(check: _Checker, table: dict, runtime: str) -> dict[str, BusSpec]:
    if not table:
        raise check.fail("buses", "no buses declared", "at least one [buses.<name>] table")
    buses: dict[str, BusSpec] = {}
    pin_max = GPIO_MAX[runtime]
    for bus_name, spec in table.items():
        key = f"buses.{bus_name}"
        if not isinstance(spec, dict):
            raise check.fail(key, f"is {_describe(spec)}", f"a [{key}] table")
        if not _NAME.match(bus_name):
            raise check.fail(key, f"{bus_name!r} is not a usable bus name", "lower-case letters, digits, '-' and '_'")
        kind = check.string(spec, key, "kind", choices=BUS_KINDS)
        if runtime == "linux":
            check.no_extra(spec, key, _LINUX_BUS_KEYS[kind])
            device = check.string(spec, key, "device")
            if not device.startswith("/dev/"):
                raise check.fail(f"{key}.device", f"{device!r} is not a device node", "a path under /dev/")
            baudrate = check.integer(spec, key, "baudrate", low=50, high=4_000_000) if kind == "uart" else None
            buses[bus_name] = BusSpec(bus_name, kind, device=device, baudrate=baudrate)
        else:
            check.no_extra(spec, key, _MPY_BUS_KEYS[kind])
            bus_id = check.integer(spec, key, "id", low=0, high=1)
            if kind == "i2c":
                sda = check.integer(spec, key, "sda", low=0, high=pin_max)
                scl = check.integer(spec, key, "scl", low=0, high=pin_max)
                freq = check.integer(spec, key, "freq", required=False, low=10_000, high=1_000_000) or 400_000
                buses[bus_name] = BusSpec(bus_name, kind, id=bus_id, sda=sda, scl=scl, freq=freq)
            else:
                tx = check.integer(spec, key, "tx", low=0, high=pin_max)
                rx = check.integer(spec, key, "rx", low=0, high=pin_max)
                baudrate = check.integer(spec, key, "baudrate", low=50, high=4_000_000)
                buses[bus_name] = BusSpec(bus_name, kind, id=bus_id, tx=tx, rx=rx, baudrate=baudrate)
    return buses


def _parse_gpio(check: _Checker, table: dict, runtime: str) -> dict[str, int]:
    gpio: dict[str, int] = {}
    used: dict[int, str] = {}
    for role in table:
        if not _NAME.match(role):
            raise check.fail(f"gpio.{role}", f"{role!r} is not a usable name", "lower-case letters, digits, '_'")
        number = check.integer(table, "gpio", role, low=0, high=GPIO_MAX[runtime])
        if number in used:
            raise check.fail(f"gpio.{role}", f"GPIO {number} is already gpio.{used[number]}", "one role per pin")
        used[number] = role
        gpio[role] = number
    return gpio


def _parse_sensors(check: _Checker, items: Any, buses: dict[str, BusSpec]) -> list[SensorSpec]:
    # Imported here: hal.sensors imports this module for its types.
    from hal.sensors import DRIVERS, driver_class

    if not isinstance(items, list):
        raise check.fail("sensors", f"is {_describe(items)}", "[[sensors]] tables")
    sensors: list[SensorSpec] = []
    seen_ids: set[str] = set()
    seen_addresses: dict[tuple[str, int], str] = {}
    for index, item in enumerate(items):
        key = f"sensors[{index}]"
        if not isinstance(item, dict):
            raise check.fail(key, f"is {_describe(item)}", "a [[sensors]] table")
        check.no_extra(item, key, ("id", "driver", "bus", "address", "interval_s", "options"))
        sensor_id = check.string(item, key, "id")
        if not _NAME.match(sensor_id):
            raise check.fail(f"{key}.id", f"{sensor_id!r} is not a usable id", "lower-case letters, digits, '-', '_'")
        if sensor_id in seen_ids:
            raise check.fail(f"{key}.id", f"{sensor_id!r} is used twice", "a different id for every sensor")
        seen_ids.add(sensor_id)
        driver = check.string(item, key, "driver", choices=tuple(sorted(DRIVERS)))
        bus_name = check.string(item, key, "bus")
        if bus_name not in buses:
            raise check.fail(f"{key}.bus", f"no bus called {bus_name!r}", f"one of: {', '.join(sorted(buses))}")
        bus = buses[bus_name]
        cls = driver_class(driver)
        if bus.kind != cls.BUS:
            raise check.fail(f"{key}.bus", f"{bus_name!r} is an {bus.kind} bus but {driver} is an {cls.BUS} part",
                             f"a bus of kind {cls.BUS!r}")
        address = None
        if cls.BUS == "i2c":
            allowed = cls.ADDRESSES
            address = check.integer(item, key, "address", low=0x03, high=0x77, hexadecimal=True)
            if address not in allowed:
                raise check.fail(f"{key}.address", f"0x{address:02x} is not an address a {cls.CHIP} can have",
                                 f"one of: {', '.join(f'0x{a:02x}' for a in allowed)}")
            other = seen_addresses.get((bus_name, address))
            if other is not None:
                raise check.fail(f"{key}.address", f"0x{address:02x} on {bus_name} is already sensor {other!r}",
                                 "one sensor per address and bus")
            seen_addresses[(bus_name, address)] = sensor_id
        elif "address" in item:
            raise check.fail(f"{key}.address", f"{driver} is a UART part and has no address", "no address key")
        interval = check.number(item, key, "interval_s", 10.0)
        options = item.get("options", {})
        if not isinstance(options, dict):
            raise check.fail(f"{key}.options", f"is {_describe(options)}", "a table of driver settings")
        _check_options(check, f"{key}.options", cls, options)
        sensors.append(SensorSpec(sensor_id, driver, bus_name, address, interval, dict(options)))
    return sensors


def _check_options(check: _Checker, key: str, cls: type, options: dict) -> None:
    """Each driver declares OPTIONS: setting name -> tuple of allowed values."""
    allowed_options: dict = getattr(cls, "OPTIONS", {})
    for name, value in options.items():
        if name not in allowed_options:
            known = ", ".join(sorted(allowed_options)) or "none"
            raise check.fail(f"{key}.{name}", f"{cls.CHIP} has no setting {name!r}", f"one of: {known}")
        choices = allowed_options[name]
        if isinstance(value, bool) or value not in choices:
            raise check.fail(f"{key}.{name}", f"{value!r} is not a {cls.CHIP} {name}",
                             f"one of: {', '.join(repr(c) for c in choices)}")

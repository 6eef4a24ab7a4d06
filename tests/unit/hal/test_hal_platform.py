"""Platforms chosen by entry point name; the base class's caching, closing and errors."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import hal.platform as platform_module
from hal.board import load_board
from hal.clock import ManualClock
from hal.linux.platform import LinuxPlatform
from hal.platform import Platform, PlatformError, load_platform, platform_names


class CountingPlatform(Platform):
    """A platform whose ports are plain objects, to watch the base class at work."""

    name = "counting"

    def __init__(self, *args, **kwargs) -> None:
        self.opened: list[str] = []
        self.closed: list[str] = []
        super().__init__(*args, **kwargs)

    def _port(self, label: str):
        platform = self

        class Port:
            def close(self) -> None:
                platform.closed.append(label)

        self.opened.append(label)
        return Port()

    def _open_i2c(self, bus):
        return self._port(bus.name)

    def _open_uart(self, bus):
        return self._port(bus.name)

    def _open_pin(self, number, mode, pull):
        return self._port(f"gpio{number}")


def test_shipped_platform_names() -> None:
    assert {"linux", "emulated"} <= set(platform_names())


def test_load_platform_by_name() -> None:
    board = load_board("rpi-4b")
    with load_platform("linux", board, uart_timeout_ms=5) as platform:
        assert isinstance(platform, LinuxPlatform)
        assert platform.name == "linux" and platform.board is board
        assert platform.options == {"uart_timeout_ms": 5}


def test_unknown_platform_lists_the_available_ones() -> None:
    with pytest.raises(PlatformError, match=r"no platform called 'pico'; available platforms: .*linux"):
        load_platform("pico", load_board("rpi-4b"))


def _fake_entry_points(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    ep = EntryPoint(name="broken", value=value, group=platform_module.ENTRY_POINT_GROUP)
    monkeypatch.setattr(platform_module, "entry_points", lambda group: [ep] if group == ep.group else [])


def test_entry_point_that_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, "roost_no_such_module:Platform")
    with pytest.raises(PlatformError, match="cannot be imported"):
        load_platform("broken", load_board("rpi-4b"))


def test_entry_point_that_is_not_a_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_entry_points(monkeypatch, "collections:OrderedDict")
    with pytest.raises(PlatformError, match=r"not a hal\.platform\.Platform subclass"):
        load_platform("broken", load_board("rpi-4b"))


def test_linux_platform_refuses_a_micropython_board() -> None:
    with pytest.raises(PlatformError, match="'pico-w' is a micropython board"):
        LinuxPlatform(load_board("pico-w"))


def test_ports_are_opened_once_and_closed_once() -> None:
    platform = CountingPlatform(load_board("rpi-5"), clock=ManualClock())
    assert platform.i2c("i2c1") is platform.i2c("i2c1")
    assert platform.uart("gps") is platform.uart("gps")
    assert platform.pin(17) is platform.pin(17)
    assert platform.opened == ["i2c1", "gps", "gpio17"]
    platform.close()
    platform.close()
    assert sorted(platform.closed) == ["gpio17", "gps", "i2c1"]
    with pytest.raises(PlatformError, match="is closed"):
        platform.i2c("i2c1")


def test_unknown_bus_and_wrong_kind() -> None:
    platform = CountingPlatform(load_board("rpi-4b"), clock=ManualClock())
    with pytest.raises(PlatformError, match="no bus 'i2c0'; its buses are: i2c1, serial0"):
        platform.i2c("i2c0")
    with pytest.raises(PlatformError, match="bus 'serial0' of board 'rpi-4b' is uart, not i2c"):
        platform.i2c("serial0")


def test_the_base_platform_has_no_ports() -> None:
    platform = Platform(load_board("rpi-4b"))
    for call in (lambda: platform.i2c("i2c1"), lambda: platform.uart("serial0"), lambda: platform.pin(17),
                 platform.pin_factory):
        with pytest.raises(PlatformError, match="platform has no"):
            call()


def test_default_clock_is_the_system_clock() -> None:
    from hal.clock import SystemClock

    assert isinstance(Platform(load_board("rpi-4b")).clock, SystemClock)
    manual = ManualClock()
    assert Platform(load_board("rpi-4b"), clock=manual).clock is manual


def test_missing_device_nodes_say_how_to_enable_them(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[3] / "boards" / "rpi-4b.toml").read_text()
    text = text.replace("/dev/i2c-1", "/dev/roost-test-no-i2c").replace("/dev/serial0", "/dev/roost-test-no-uart")
    (tmp_path / "b.toml").write_text(text)
    with LinuxPlatform(load_board(str(tmp_path / "b.toml"))) as platform:
        with pytest.raises(PlatformError, match=r"does not exist: enable I2C .*dtparam=i2c_arm=on"):
            platform.i2c("i2c1")
        with pytest.raises(PlatformError, match=r"does not exist: enable the UART .*enable_uart=1"):
            platform.uart("serial0")


def test_unreadable_device_names_the_group() -> None:
    # Tests may run as root, who opens anything: the hook raises what the kernel reports to others.
    class Denied(LinuxPlatform):
        def open_smbus(self, bus):
            raise PermissionError(13, "Permission denied", bus.device)

    with Denied(load_board("rpi-4b")) as platform, pytest.raises(PlatformError, match="add the user to group 'i2c'"):
        platform.i2c("i2c1")

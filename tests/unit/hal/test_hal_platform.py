"""Platforms chosen by entry point name; the base class's caching, closing and errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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


def _install(site: Path, dist: str, platforms: dict[str, str], modules: dict[str, str] | None = None) -> None:
    """A distribution as pip leaves it: ``dist``.dist-info/entry_points.txt, plus module files beside it."""
    info = site / f"{dist}.dist-info"
    info.mkdir(parents=True)
    lines = "".join(f"{name} = {target}\n" for name, target in platforms.items())
    (info / "entry_points.txt").write_text(f"[console_scripts]\nbroken = nowhere:main\n\n"
                                           f"[{platform_module.ENTRY_POINT_GROUP}]\n{lines}")
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))


def test_entry_point_that_does_not_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "broken-1.0", {"broken": "roost_no_such_module:Platform"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PlatformError, match="cannot be imported"):
        load_platform("broken", load_board("rpi-4b"))


def test_entry_point_that_is_not_a_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "broken-1.0", {"broken": "collections:OrderedDict"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PlatformError, match=r"not a hal\.platform\.Platform subclass"):
        load_platform("broken", load_board("rpi-4b"))


def test_entry_point_whose_attribute_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "broken-1.0", {"broken": "collections:NoSuchPlatform"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(PlatformError, match="cannot be imported"):
        load_platform("broken", load_board("rpi-4b"))


THIRD_PARTY = """
    from hal.platform import Platform

    class Outer:
        class BenchPlatform(Platform):
            name = "bench"
"""


def test_a_third_party_platform_plugs_in_through_its_entry_point(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _install(tmp_path, "roost_bench_platform-2.0", {"bench": "roost_bench_platform:Outer.BenchPlatform [extra]"},
             {"roost_bench_platform": THIRD_PARTY})
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        platform = load_platform("bench", load_board("rpi-4b"), speed=3)
        assert type(platform).__qualname__ == "Outer.BenchPlatform" and platform.options == {"speed": 3}
        assert "bench" in platform_names()    # importlib.metadata sees the same distribution
    finally:
        sys.modules.pop("roost_bench_platform", None)


def test_the_first_distribution_on_the_path_wins(tmp_path: Path) -> None:
    _install(tmp_path / "a", "first-1.0", {"dup": "first:P"})
    _install(tmp_path / "b", "second-1.0", {"dup": "second:P", "other": "second:Other"})
    path = [str(tmp_path / "missing"), str(tmp_path / "a"), str(tmp_path / "b")]
    assert platform_module.declared_platform("dup", path) == "first:P"
    assert platform_module.declared_platform("other", path) == "second:Other"
    assert platform_module.declared_platform("nobody", path) is None


def test_direct_lookup_agrees_with_importlib_metadata() -> None:
    from importlib.metadata import entry_points

    declared = {ep.name: ep.value for ep in entry_points(group=platform_module.ENTRY_POINT_GROUP)}
    assert {"linux", "emulated"} <= set(declared)
    for name, value in declared.items():
        assert platform_module.declared_platform(name) == value


def test_entry_points_file_parsing() -> None:
    text = textwrap.dedent("""
        # comment
        [console_scripts]
        emulated = not:this

        [ roost.platforms ]
        ; another comment
        emulated=emulator.board.platform:EmulatedPlatform
          spaced   =   pkg.mod:Cls [extra1,extra2]
        empty =
    """)
    group = platform_module.ENTRY_POINT_GROUP
    assert platform_module.entry_point_in(text, group, "emulated") == "emulator.board.platform:EmulatedPlatform"
    assert platform_module.entry_point_in(text, group, "spaced") == "pkg.mod:Cls [extra1,extra2]"
    assert platform_module.entry_point_in(text, group, "empty") is None
    assert platform_module.entry_point_in(text, group, "missing") is None
    assert platform_module.entry_point_in(text, "console_scripts", "emulated") == "not:this"


def test_importlib_metadata_is_asked_when_the_direct_lookup_finds_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A zipped or otherwise unusual install: the entry point is known to importlib.metadata only.
    monkeypatch.setattr(platform_module, "declared_platform", lambda name, path=None: None)
    platform = load_platform("emulated", load_board("rpi-4b"))
    try:
        assert platform.name == "emulated"
    finally:
        platform.close()


def test_linux_is_built_in_and_needs_no_metadata() -> None:
    # A fresh interpreter: hal.board and hal.platform alone never load importlib.metadata or importlib.resources
    # (gpiozero, imported by the linux platform itself, is another matter).
    probe = textwrap.dedent("""
        import json, sys
        from hal import board, platform
        board.board_names()
        board.load_board("rpi-4b")
        found = platform.declared_platform("emulated"), platform.BUILTIN_PLATFORMS["linux"]
        heavy = sorted(m for m in ("importlib.metadata", "importlib.resources", "email", "zipfile")
                       if m in sys.modules)
        print(json.dumps({"found": found, "heavy": heavy}))
    """)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[3])
    result = json.loads(out.stdout)
    assert result == {"found": ["emulator.board.platform:EmulatedPlatform", "hal.linux.platform:LinuxPlatform"],
                      "heavy": []}


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

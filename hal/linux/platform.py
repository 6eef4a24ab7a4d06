"""The ``linux`` platform: a Raspberry Pi's I2C, UART and GPIO through smbus2, pyserial and gpiozero.

All hardware access goes through four hooks (``open_smbus``, ``serial_device``,
``make_pin_factory``, ``make_clock``). The board emulator subclasses this class and overrides
only those, so every other line here and in the adapters runs in tests exactly as on a Pi.
"""

from __future__ import annotations

import errno
from typing import Any

import serial
from smbus2 import SMBus

from hal.board import BoardProfile, BusSpec
from hal.clock import SystemClock
from hal.linux.gpio import GpiozeroPin
from hal.linux.i2c import SMBusI2C
from hal.linux.uart import SerialUART
from hal.platform import Platform, PlatformError
from hal.ports import Clock

_ENABLE_HINT = {
    "i2c": "enable I2C (raspi-config nonint do_i2c 0, or dtparam=i2c_arm=on in config.txt) and reboot",
    "uart": "enable the UART (raspi-config nonint do_serial_hw 0, or enable_uart=1 in config.txt) and reboot",
}
_GROUP = {"i2c": "i2c", "uart": "dialout"}


class LinuxPlatform(Platform):
    """Buses from the board profile's device nodes; pins from a gpiozero pin factory.

    Options: ``uart_timeout_ms`` (how long a UART read waits for its first byte, default 0) and
    ``pin_factory`` (a gpiozero factory name such as ``"lgpio"``; default: gpiozero's own choice,
    which honours ``GPIOZERO_PIN_FACTORY``).
    """

    name = "linux"
    supported_runtimes = ("linux",)

    def __init__(self, board: BoardProfile, *, clock: Clock | None = None, **options: Any) -> None:
        super().__init__(board, clock=clock, **options)
        self._factory: Any = None

    # -- hooks (the emulator overrides these) ----------------------------------------------------------------

    def open_smbus(self, bus: BusSpec) -> SMBus:
        """An open smbus2 bus for ``bus`` (its device node, e.g. /dev/i2c-1)."""
        return SMBus(bus.device)

    def serial_device(self, bus: BusSpec) -> str:
        """The path pyserial opens for ``bus`` (e.g. /dev/serial0)."""
        return bus.device

    def make_pin_factory(self) -> Any:
        """The gpiozero pin factory: the one named in options, else gpiozero's default choice."""
        from gpiozero import Device

        name = self.options.get("pin_factory")
        try:
            if name:
                from importlib.metadata import entry_points

                found = [ep for ep in entry_points(group="gpiozero_pin_factories") if ep.name == name]
                if not found:
                    known = ", ".join(sorted(ep.name for ep in entry_points(group="gpiozero_pin_factories")))
                    raise PlatformError(f"gpiozero has no pin factory {name!r}; known: {known}")
                return found[0].load()()
            if Device.pin_factory is not None:
                return Device.pin_factory
            return Device._default_pin_factory()
        except PlatformError:
            raise
        except Exception as exc:  # gpiozero raises a variety of errors when no GPIO backend works
            raise PlatformError(
                f"no GPIO on this machine ({exc}); on a Pi install python3-lgpio, elsewhere set "
                f"GPIOZERO_PIN_FACTORY=mock or choose the 'emulated' platform"
            ) from exc

    def make_clock(self) -> Clock:
        return SystemClock()

    # -- ports ---------------------------------------------------------------------------------------------

    def _open_i2c(self, bus: BusSpec) -> SMBusI2C:
        try:
            smbus = self.open_smbus(bus)
        except OSError as exc:
            raise self._open_error(bus, exc) from exc
        return SMBusI2C(smbus, label=bus.label)

    def _open_uart(self, bus: BusSpec) -> SerialUART:
        path = self.serial_device(bus)
        try:
            port = serial.Serial(path, baudrate=bus.baudrate, timeout=0, write_timeout=2.0, exclusive=True)
        except serial.SerialException as exc:
            raise self._open_error(bus, exc) from exc
        return SerialUART(port, timeout_ms=int(self.options.get("uart_timeout_ms", 0)), label=bus.label)

    def pin_factory(self) -> Any:
        self._check_open()
        if self._factory is None:
            self._factory = self.make_pin_factory()
        return self._factory

    def _open_pin(self, number: int, mode: int | None, pull: int | None) -> GpiozeroPin:
        from gpiozero import GPIOZeroError

        factory = self.pin_factory()
        try:
            pin = factory.pin(number)
        except GPIOZeroError as exc:
            raise PlatformError(f"cannot open GPIO {number} on board {self.board.name!r}: {exc}") from exc
        return GpiozeroPin(pin, mode, pull, number=number)

    def _open_error(self, bus: BusSpec, exc: Exception) -> PlatformError:
        code = getattr(exc, "errno", None)
        where = f"{bus.kind.upper()} bus {bus.name!r} at {bus.device}"
        if code == errno.ENOENT:
            return PlatformError(f"{where} does not exist: {_ENABLE_HINT[bus.kind]}")
        if code in (errno.EACCES, errno.EPERM):
            return PlatformError(f"{where}: permission denied; add the user to group {_GROUP[bus.kind]!r}")
        if code == errno.EBUSY or "exclusive" in str(exc).lower() or "lock" in str(exc).lower():
            return PlatformError(f"{where} is in use by another program (stop it, e.g. a serial console)")
        return PlatformError(f"cannot open {where}: {exc}")

    def close(self) -> None:
        super().close()
        factory, self._factory = self._factory, None
        # A factory the caller supplied through gpiozero's Device.pin_factory is not ours to close.
        if factory is not None and factory is not _default_factory():
            factory.close()


def _default_factory() -> Any:
    from gpiozero import Device

    return Device.pin_factory

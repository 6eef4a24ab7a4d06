"""Boot backends: one small interface, one module per boot loader (like RAUC's src/bootloaders/).

``create(name, options, storage)`` builds a backend from the ``[update.boot]`` config table. The names are
``rpi-tryboot``, ``uboot`` and ``emulated``.
"""

from __future__ import annotations

from firmware.boot.base import BootBackend, BootInfo, Rebooter, command_rebooter
from firmware.durable import Storage
from firmware.errors import BootError

__all__ = ["BACKENDS", "BootBackend", "BootInfo", "Rebooter", "command_rebooter", "create"]

BACKENDS = ("rpi-tryboot", "uboot", "emulated")


def create(name: str, options: dict, storage: Storage, rebooter: Rebooter | None = None) -> BootBackend:
    if name == "rpi-tryboot":
        from firmware.boot.rpi_tryboot import RpiTryboot
        return RpiTryboot.from_options(options, storage, rebooter)
    if name == "uboot":
        from firmware.boot.uboot import UBoot
        return UBoot.from_options(options, storage, rebooter)
    if name == "emulated":
        from firmware.boot.emulated import EmulatedSelector
        return EmulatedSelector.from_options(options, storage, rebooter)
    raise BootError(f"unknown boot backend {name!r}; set [update] boot to one of: {', '.join(BACKENDS)}")

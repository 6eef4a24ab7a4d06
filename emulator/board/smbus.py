"""``EmulatedSMBus``: a real ``smbus2.SMBus`` whose file descriptor leads to an emulated bus.

Everything above the ioctl is smbus2's own code: building ``i2c_smbus_ioctl_data`` and ``i2c_msg``
structures, address caching, PEC, the functionality mask. Only the descriptor differs: it is
``/dev/null`` opened read-write, registered with :mod:`emulator.board.i2c_ioctl`, which decodes the
ioctls as i2c-dev would. Works with smbus2 0.4.x (``c_uint32`` functionality word) through 0.6.x.
"""

from __future__ import annotations

import os

import smbus2

from emulator.board import i2c_ioctl
from emulator.board.i2c_bus import I2CBus


class EmulatedSMBus(smbus2.SMBus):
    """``smbus2.SMBus`` on an emulated :class:`~emulator.board.i2c_bus.I2CBus`."""

    def __init__(self, bus: I2CBus, force: bool = False, *, funcs: int = i2c_ioctl.BCM2835_FUNCS,
                 busy_addresses: frozenset[int] = frozenset()) -> None:
        self.emulated_bus = bus
        self._funcs_mask = funcs
        self._busy = frozenset(busy_addresses)
        super().__init__(None, force)
        self.open(bus)

    def open(self, bus: I2CBus | None = None) -> None:
        """Open (or reopen) the emulated bus; ``bus`` defaults to the one given at construction."""
        if bus is not None and not isinstance(bus, I2CBus):
            raise TypeError(f"EmulatedSMBus opens an emulated I2CBus, not {type(bus).__name__} {bus!r}")
        if self.fd is not None:
            self.close()
        if bus is not None:
            self.emulated_bus = bus
        i2c_ioctl.install()
        fd = os.open(os.devnull, os.O_RDWR)
        self.devfile = i2c_ioctl.I2CDevFile(self.emulated_bus, self._funcs_mask, self._busy)
        i2c_ioctl.register(fd, self.devfile)
        self.fd = fd
        # smbus2 0.4.x keeps the cached address across close/open; a new file starts at address 0.
        self.address = None
        self._force_last = None
        self.funcs = self._get_funcs()

    def close(self) -> None:
        fd = self.fd
        if fd is not None:
            # Unroute before closing: once closed, the number can be handed to someone else's file.
            i2c_ioctl.unregister(fd)
        super().close()

    def __repr__(self) -> str:
        return f"<EmulatedSMBus {self.emulated_bus.name} fd={self.fd}>"

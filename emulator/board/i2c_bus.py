"""An I2C bus segment with register-level parts on it, at the level of START, bytes and STOP.

The ioctl decoder (:mod:`emulator.board.i2c_ioctl`) turns every smbus2 call into a *transfer*: a list of
messages, each addressed to one 7-bit address, read or write, joined by repeated STARTs and ended by one
STOP, exactly what the Linux I2C core hands a controller driver. The bus delivers those to the parts;
a part that does not acknowledge its address raises :class:`Nack`, which the decoder reports as
EREMOTEIO (121), what the Pi's i2c-bcm2835 driver returns.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from emulator.board.faults import FaultSet


class Nack(Exception):
    """No acknowledge from ``address`` (address phase or a data byte)."""

    def __init__(self, address: int, why: str = "no device") -> None:
        super().__init__(f"NACK from 0x{address:02x}: {why}")
        self.address = address
        self.why = why


@dataclass(frozen=True)
class Message:
    """One segment of a transfer: ``data`` for a write, ``length`` bytes wanted for a read."""

    address: int
    read: bool
    data: bytes = b""
    length: int = 0


class I2CTarget:
    """Base of the register-level part models: address handling and the faults every part shares.

    Subclasses implement ``on_write``/``on_read`` (and may refuse a read header with ``Nack``, as the
    SHT4x does while converting). ``FAULTS`` lists the fault kinds the part can show.
    """

    FAULTS: tuple[str, ...] = ("nack", "unplugged")
    chip = "i2c part"

    def __init__(self, address: int, name: str = "") -> None:
        if not 0x03 <= address <= 0x77:
            raise ValueError(f"7-bit I2C address 0x{address:02x} is reserved or out of range (0x03-0x77)")
        self.address = address
        self.name = name or f"{self.chip}@0x{address:02x}"
        self.faults = FaultSet(self.FAULTS, owner=f"{self.chip} {self.name!r}")
        self.transfers = 0

    @property
    def present(self) -> bool:
        return not self.faults.active("unplugged")

    def acknowledge(self, read: bool) -> None:
        """Address phase; raises :class:`Nack` when the part does not answer."""
        if not self.present:
            raise Nack(self.address, "unplugged")
        if self.faults.take("nack"):
            raise Nack(self.address, "injected NACK")
        self.on_start(read)

    def on_start(self, read: bool) -> None:
        """Called on each (repeated) START addressed to the part, after it acknowledged."""

    def on_write(self, data: bytes) -> None:
        """Bytes the controller wrote (all acknowledged). A bare part ignores them."""

    def on_read(self, length: int) -> bytes:
        """Bytes for a read message. A bare part drives nothing: the pull-ups read as 0xFF."""
        return b"\xff" * length

    def on_stop(self) -> None:
        """Called once at the STOP that ends a transfer the part took part in."""


class I2CBus:
    """One I2C controller and the parts wired to it (``/dev/i2c-1`` on a Pi is one of these)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._targets: dict[int, I2CTarget] = {}
        # The kernel serialises transfers per adapter; so does this lock (the demo reads from threads).
        self.lock = threading.RLock()
        self.transfers = 0

    def attach(self, target: I2CTarget) -> I2CTarget:
        if target.address in self._targets:
            other = self._targets[target.address]
            raise ValueError(
                f"bus {self.name}: address 0x{target.address:02x} already holds {other.name!r}; "
                "two parts cannot share an address (change one part's address pin)"
            )
        self._targets[target.address] = target
        return target

    def detach(self, address: int) -> None:
        self._targets.pop(address, None)

    def target(self, address: int) -> I2CTarget | None:
        return self._targets.get(address)

    def targets(self) -> list[I2CTarget]:
        return [self._targets[a] for a in sorted(self._targets)]

    def transfer(self, messages: Sequence[Message]) -> list[bytes]:
        """Run one transfer; returns the bytes of each read message, in order.

        Raises :class:`Nack` if any addressed part does not answer; parts already addressed still see
        the STOP the controller sends after the NACK.
        """
        results: list[bytes] = []
        touched: list[I2CTarget] = []
        with self.lock:
            self.transfers += 1
            try:
                for message in messages:
                    target = self._targets.get(message.address)
                    if target is None:
                        raise Nack(message.address)
                    target.acknowledge(message.read)
                    if target not in touched:
                        touched.append(target)
                        target.transfers += 1
                    if message.read:
                        data = bytes(target.on_read(message.length))
                        if len(data) != message.length:  # a model bug, never a bus condition
                            raise ValueError(f"{target.name} returned {len(data)} bytes for {message.length}")
                        results.append(data)
                    elif message.data:
                        target.on_write(message.data)
            finally:
                for target in touched:
                    target.on_stop()
        return results

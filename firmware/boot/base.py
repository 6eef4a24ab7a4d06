"""The interface every boot backend implements, and the reboot seam."""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from firmware.errors import BootError

# reboot(trial) -> None. On a device it runs a command; the emulated board's boot ROM supplies its own.
Rebooter = Callable[[bool], None]
DEFAULT_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True)
class BootInfo:
    slot: str       # the slot this boot runs from
    trial: bool     # True when this is the one-time trial boot armed by arm_trial()
    boot_id: str = ""   # changes on every boot (the kernel's random boot_id); tells "same boot" from "rebooted"


class BootBackend(ABC):
    """What the update engine needs from a boot loader. Each write must leave a bootable selection if power
    is cut at any point during it."""

    name = ""

    def __init__(self, rebooter: Rebooter | None, boot_id_file: Path = DEFAULT_BOOT_ID) -> None:
        self.rebooter = rebooter
        self.boot_id_file = Path(boot_id_file)

    def boot_id(self) -> str:
        try:
            return self.boot_id_file.read_text().strip()
        except OSError as exc:
            raise BootError(f"cannot read the boot id from {self.boot_id_file}: {exc.strerror}") from None

    @abstractmethod
    def booted(self) -> BootInfo:
        """Which slot is running, and whether this boot is the one-time trial."""

    @abstractmethod
    def primary(self) -> str:
        """The slot that boots when no trial is armed (or after a failed one)."""

    @abstractmethod
    def arm_trial(self, slot: str, fallback: str) -> None:
        """Make the next boot (reboot(trial=True)) try ``slot`` once; any later boot returns to ``fallback``."""

    @abstractmethod
    def commit(self, slot: str, previous: str) -> None:
        """``slot`` passed its trial: make it the primary; keep ``previous`` as the tryboot/alternate target."""

    @abstractmethod
    def set_primary(self, slot: str) -> None:
        """Boot ``slot`` from now on, with no trial armed (rollback, golden)."""

    def reboot(self, trial: bool = False) -> None:
        if self.rebooter is None:
            raise BootError("no reboot command configured; set [update.boot] reboot_command")
        self.rebooter(trial)


def command_rebooter(normal: Sequence[str], trial: Sequence[str] | None = None) -> Rebooter:
    """A rebooter that runs ``normal`` (or ``trial`` for a trial boot) as a command."""

    def reboot(is_trial: bool) -> None:
        argv = list(trial if is_trial and trial else normal)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BootError(f"reboot command {argv} could not run: {exc}") from None
        if done.returncode != 0:
            raise BootError(f"reboot command {argv} failed ({done.returncode}): {done.stderr.strip()}")

    return reboot

"""Raspberry Pi firmware tryboot: autoboot.txt on the first FAT partition, `reboot "0 tryboot"` for one trial.

The firmware reports what it booted in the device tree (``chosen/bootloader/partition`` and ``.../tryboot``,
big-endian u32), so the booted slot is never guessed from the root file system. autoboot.txt is replaced as a
whole (write a .tmp file, fsync, rename, fsync the directory), so a power cut leaves either the old or the new
selection, each of which names a slot holding a verified image.
"""

from __future__ import annotations

import struct
from pathlib import Path

from firmware.boot.base import DEFAULT_BOOT_ID, BootBackend, BootInfo, Rebooter, command_rebooter
from firmware.durable import Storage
from firmware.errors import BootError

DEFAULT_PARTITIONS = {"a": 2, "b": 3, "golden": 4}


def render_autoboot(primary: int, tryboot: int) -> bytes:
    return (f"[all]\ntryboot_a_b=1\nboot_partition={primary}\n"
            f"[tryboot]\nboot_partition={tryboot}\n").encode()


def parse_autoboot(text: str) -> dict[str, dict[str, str]]:
    """autoboot.txt as {section: {key: value}}; lines outside a section belong to [all], as for the firmware."""
    sections: dict[str, dict[str, str]] = {"all": {}}
    current = "all"
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip().lower()
            sections.setdefault(current, {})
        elif "=" in line:
            key, _, value = line.partition("=")
            sections[current][key.strip()] = value.strip()
    return sections


class RpiTryboot(BootBackend):
    name = "rpi-tryboot"

    def __init__(self, boot_dir: Path, device_tree: Path, partitions: dict[str, int], storage: Storage,
                 rebooter: Rebooter | None, boot_id_file: Path = DEFAULT_BOOT_ID) -> None:
        super().__init__(rebooter, boot_id_file)
        self.autoboot = Path(boot_dir) / "autoboot.txt"
        self.device_tree = Path(device_tree)
        self.partitions = dict(partitions)
        self.slots_by_partition = {v: k for k, v in self.partitions.items()}
        self.storage = storage

    @classmethod
    def from_options(cls, options: dict, storage: Storage, rebooter: Rebooter | None) -> RpiTryboot:
        if rebooter is None:
            rebooter = command_rebooter(options.get("reboot_command", ["reboot"]),
                                        options.get("trial_reboot_command", ["reboot", "0 tryboot"]))
        return cls(Path(options.get("boot_dir", "/boot/firmware")),
                   Path(options.get("device_tree", "/proc/device-tree/chosen/bootloader")),
                   {k: int(v) for k, v in options.get("partitions", DEFAULT_PARTITIONS).items()}, storage, rebooter,
                   Path(options.get("boot_id_file", DEFAULT_BOOT_ID)))

    def _read_u32(self, name: str) -> int:
        path = self.device_tree / name
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise BootError(f"cannot read {path} ({exc.strerror}); this boot was not started by Raspberry Pi "
                            "firmware with tryboot support, or [update.boot] device_tree points elsewhere") from None
        if len(raw) != 4:
            raise BootError(f"{path} holds {len(raw)} bytes, expected a big-endian u32")
        return struct.unpack(">I", raw)[0]

    def _slot(self, partition: int, where: str) -> str:
        try:
            return self.slots_by_partition[partition]
        except KeyError:
            raise BootError(f"{where} names partition {partition}, which is not one of the slots "
                            f"{self.partitions}; fix [update.boot] partitions") from None

    def booted(self) -> BootInfo:
        return BootInfo(self._slot(self._read_u32("partition"), "the device tree"), self._read_u32("tryboot") != 0,
                        self.boot_id())

    def _sections(self) -> dict[str, dict[str, str]]:
        try:
            text = self.autoboot.read_text()
        except OSError as exc:
            raise BootError(f"cannot read {self.autoboot} ({exc.strerror}); mount the boot partition or fix "
                            "[update.boot] boot_dir") from None
        return parse_autoboot(text)

    def primary(self) -> str:
        value = self._sections()["all"].get("boot_partition")
        if value is None or not value.isdigit():
            raise BootError(f"{self.autoboot} has no [all] boot_partition")
        return self._slot(int(value), str(self.autoboot))

    def _write(self, primary: str, tryboot: str) -> None:
        self.storage.atomic_write(self.autoboot, render_autoboot(self.partitions[primary], self.partitions[tryboot]))

    def arm_trial(self, slot: str, fallback: str) -> None:
        self._write(fallback, slot)

    def commit(self, slot: str, previous: str) -> None:
        self._write(slot, previous)

    def set_primary(self, slot: str) -> None:
        # tryboot points at the primary too, so a stray tryboot flag cannot start a slot nobody armed
        self._write(slot, slot)

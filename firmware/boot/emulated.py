"""A boot selector for the emulated board and demos: one small JSON file, replaced atomically.

``selector.json`` holds {"primary": slot, "trial": slot or null}; the emulated boot ROM consumes "trial" once
(it clears it before booting, like a one-shot flag) and writes ``booted.json`` {"slot", "trial", "boot_id"}.
"""

from __future__ import annotations

import json
from pathlib import Path

from firmware.boot.base import BootBackend, BootInfo, Rebooter, command_rebooter
from firmware.durable import Storage
from firmware.errors import BootError


class EmulatedSelector(BootBackend):
    name = "emulated"

    def __init__(self, directory: Path, storage: Storage, rebooter: Rebooter | None) -> None:
        super().__init__(rebooter)
        self.selector = Path(directory) / "selector.json"
        self.booted_file = Path(directory) / "booted.json"
        self.storage = storage

    @classmethod
    def from_options(cls, options: dict, storage: Storage, rebooter: Rebooter | None) -> EmulatedSelector:
        if rebooter is None and "reboot_command" in options:
            rebooter = command_rebooter(options["reboot_command"], options.get("trial_reboot_command"))
        if "directory" not in options:
            raise BootError("the emulated boot backend needs [update.boot] directory (the emulated board's boot dir)")
        return cls(Path(options["directory"]), storage, rebooter)

    def _load(self, path: Path) -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise BootError(f"cannot read {path}: {exc}; start the emulated board first") from None

    def booted(self) -> BootInfo:
        doc = self._load(self.booted_file)
        return BootInfo(str(doc["slot"]), bool(doc["trial"]), str(doc.get("boot_id", "")))

    def primary(self) -> str:
        return str(self._load(self.selector)["primary"])

    def _write(self, primary: str, trial: str | None) -> None:
        self.storage.atomic_write(self.selector, json.dumps({"primary": primary, "trial": trial}).encode())

    def arm_trial(self, slot: str, fallback: str) -> None:
        self._write(fallback, slot)

    def commit(self, slot: str, previous: str) -> None:
        self._write(slot, None)

    def set_primary(self, slot: str) -> None:
        self._write(slot, None)

"""U-Boot with CONFIG_BOOTCOUNT_LIMIT: the environment chooses the slot, bootcount/bootlimit bound the trial.

Variables (the boot script in docs/updates.md reads the same ones):
    boot_slot          slot that bootcmd boots
    rollback_slot      slot altbootcmd switches to when bootcount exceeds bootlimit
    upgrade_available  1 while a trial is armed or running; U-Boot counts boots only then
    bootcount, bootlimit

All variables of one step go to a single `fw_setenv` call, which libubootenv writes as one new copy of the
redundant environment (the flag byte decides which copy is current), so a power cut leaves the old or the new
set, never a mix. The booted slot comes from the kernel command line (``roost.slot=<name>``) set by bootcmd.
"""

from __future__ import annotations

from pathlib import Path

from firmware.boot.base import DEFAULT_BOOT_ID, BootBackend, BootInfo, Rebooter, command_rebooter
from firmware.durable import Storage
from firmware.errors import BootError


class UBoot(BootBackend):
    name = "uboot"

    def __init__(self, config: Path, storage: Storage, rebooter: Rebooter | None, *, cmdline: Path,
                 cmdline_key: str = "roost.slot", bootlimit: int = 1, printenv: str = "fw_printenv",
                 setenv: str = "fw_setenv", boot_id_file: Path = DEFAULT_BOOT_ID) -> None:
        super().__init__(rebooter, boot_id_file)
        self.config = Path(config)
        self.storage = storage
        self.cmdline = Path(cmdline)
        self.cmdline_key = cmdline_key
        self.bootlimit = bootlimit
        self.printenv_tool = printenv
        self.setenv_tool = setenv

    @classmethod
    def from_options(cls, options: dict, storage: Storage, rebooter: Rebooter | None) -> UBoot:
        if rebooter is None:
            rebooter = command_rebooter(options.get("reboot_command", ["reboot"]))
        return cls(Path(options.get("fw_env_config", "/etc/fw_env.config")), storage, rebooter,
                   cmdline=Path(options.get("cmdline", "/proc/cmdline")),
                   cmdline_key=options.get("cmdline_key", "roost.slot"), bootlimit=int(options.get("bootlimit", 1)),
                   printenv=options.get("fw_printenv", "fw_printenv"), setenv=options.get("fw_setenv", "fw_setenv"),
                   boot_id_file=Path(options.get("boot_id_file", DEFAULT_BOOT_ID)))

    def environment(self) -> dict[str, str]:
        out = Storage().run([self.printenv_tool, "-c", str(self.config)], "read", timeout=30)
        env = {}
        for line in out.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                env[key] = value
        return env

    def _set(self, **values: object) -> None:
        argv = [self.setenv_tool, "-c", str(self.config)]
        for key, value in values.items():
            argv += [key, str(value)]
        self.storage.run(argv, f"uboot-env:{self.config}")

    def booted(self) -> BootInfo:
        try:
            words = self.cmdline.read_text().split()
        except OSError as exc:
            raise BootError(f"cannot read {self.cmdline}: {exc.strerror}") from None
        prefix = self.cmdline_key + "="
        slots = [w[len(prefix):] for w in words if w.startswith(prefix)]
        if not slots:
            raise BootError(f"the kernel command line has no {prefix}<slot>; make bootcmd append it "
                            "(see docs/updates.md, U-Boot)")
        env = self.environment()
        trial = env.get("upgrade_available") == "1" and env.get("boot_slot") == slots[-1]
        return BootInfo(slots[-1], trial, self.boot_id())

    def primary(self) -> str:
        env = self.environment()
        if env.get("upgrade_available") == "1":
            return env.get("rollback_slot", "")
        slot = env.get("boot_slot")
        if not slot:
            raise BootError(f"the U-Boot environment ({self.config}) has no boot_slot")
        return slot

    def arm_trial(self, slot: str, fallback: str) -> None:
        self._set(boot_slot=slot, rollback_slot=fallback, upgrade_available=1, bootcount=0, bootlimit=self.bootlimit)

    def commit(self, slot: str, previous: str) -> None:
        self._set(boot_slot=slot, rollback_slot=previous, upgrade_available=0, bootcount=0)

    def set_primary(self, slot: str) -> None:
        self._set(boot_slot=slot, rollback_slot=slot, upgrade_available=0, bootcount=0)

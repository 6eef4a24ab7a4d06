"""The emulated boot ROM: boots an emulated board from the same selector files the real backends write.

It is an independent reading of each boot loader's rules, so the product's writers are tested against it:

- ``rpi-tryboot``: Raspberry Pi firmware. Reads autoboot.txt; the one-shot tryboot flag (set by
  ``reboot "0 tryboot"``, here by :meth:`EmulatedBoard.reboot` with trial=True) is cleared as it is consumed and
  selects the [tryboot] section. Reports the partition and the flag in device-tree files (big-endian u32).
- ``uboot``: U-Boot with CONFIG_BOOTCOUNT_LIMIT and a redundant environment (two copies, CRC32 + flag byte,
  the format libubootenv's fw_setenv writes). When upgrade_available=1 every boot increments bootcount; past
  bootlimit it runs altbootcmd (boot_slot=rollback_slot, upgrade_available=0). Puts roost.slot=<slot> on the
  kernel command line.
- ``emulated``: selector.json {"primary", "trial"}; "trial" is consumed once.

A slot whose content is not a complete image does not boot (:attr:`BootOutcome.ok` is False): the board
"hangs", and the test calls :meth:`EmulatedBoard.power_on` again as the watchdog would.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from emulator.board.slots import image_info

PARTITIONS = {"a": 2, "b": 3, "golden": 4}
ENV_SIZE = 0x4000


@dataclass
class BootOutcome:
    slot: str
    trial: bool
    ok: bool               # the slot held a complete image and "the kernel started"
    image: dict | None     # that image's header (version, healthy, ...)
    boot_number: int


class EmulatedBoard:
    def __init__(self, directory: Path, kind: str, slots: dict[str, Path]) -> None:
        if kind not in ("rpi-tryboot", "uboot", "emulated"):
            raise ValueError(f"unknown boot kind {kind!r}")
        self.directory = Path(directory)
        self.kind = kind
        self.slots = {k: Path(v) for k, v in slots.items()}
        self.boot_dir = self.directory / "boot"
        self.device_tree = self.directory / "device-tree" / "chosen" / "bootloader"
        self.tryboot_flag = self.directory / "tryboot-flag"
        self.env_copies = (self.directory / "uboot-env-1.bin", self.directory / "uboot-env-2.bin")
        self.fw_env_config = self.directory / "fw_env.config"
        self.cmdline = self.directory / "cmdline"
        self.boot_id_file = self.directory / "boot_id"
        self.boot_count_file = self.directory / "boot-count"
        self.reboots: list[bool] = []     # trial flag of each reboot the agent requested

    @property
    def boots(self) -> int:
        try:
            return int(self.boot_count_file.read_text())
        except (OSError, ValueError):
            return 0

    @boots.setter
    def boots(self, value: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.boot_count_file.write_text(str(value))

    # ---- factory setup --------------------------------------------------------------------------------------

    def install_bootloader(self, primary: str = "a", bootlimit: int = 1) -> None:
        """Lay down the selector files a freshly flashed board has, booting ``primary``."""
        self.boot_dir.mkdir(parents=True, exist_ok=True)
        self.device_tree.mkdir(parents=True, exist_ok=True)
        if self.kind == "rpi-tryboot":
            n = PARTITIONS[primary]
            (self.boot_dir / "autoboot.txt").write_text(
                f"[all]\ntryboot_a_b=1\nboot_partition={n}\n[tryboot]\nboot_partition={n}\n")
        elif self.kind == "uboot":
            env = {"boot_slot": primary, "rollback_slot": primary, "upgrade_available": "0", "bootcount": "0",
                   "bootlimit": str(bootlimit), "bootcmd": "run roost_boot", "altbootcmd": "run roost_altboot"}
            self.env_copies[0].write_bytes(encode_env(env, 1))
            self.env_copies[1].write_bytes(encode_env(env, 0))
            self.fw_env_config.write_text(f"{self.env_copies[0]} 0x0 {ENV_SIZE:#x}\n"
                                          f"{self.env_copies[1]} 0x0 {ENV_SIZE:#x}\n")
        else:
            (self.boot_dir / "selector.json").write_text(json.dumps({"primary": primary, "trial": None}))

    def backend_options(self) -> dict:
        """The [update.boot] options that point the product's backend at this board's files."""
        common = {"boot_id_file": str(self.boot_id_file)}
        if self.kind == "rpi-tryboot":
            return common | {"boot_dir": str(self.boot_dir), "device_tree": str(self.device_tree),
                             "partitions": dict(PARTITIONS)}
        if self.kind == "uboot":
            return common | {"fw_env_config": str(self.fw_env_config), "cmdline": str(self.cmdline)}
        return common | {"directory": str(self.boot_dir)}

    # ---- reboots --------------------------------------------------------------------------------------------

    def reboot(self, trial: bool) -> None:
        """The agent's reboot command. A trial reboot on the Pi sets the firmware's one-shot tryboot flag."""
        self.reboots.append(trial)
        if trial and self.kind == "rpi-tryboot":
            self.tryboot_flag.write_bytes(b"1")

    def power_on(self) -> BootOutcome:
        """Run the boot ROM: pick a slot from the selector files, publish what booted, check the image."""
        self.boots += 1    # persisted, so every power-on has a new boot id even across processes
        if self.kind == "rpi-tryboot":
            slot, trial = self._rpi_select()
        elif self.kind == "uboot":
            slot, trial = self._uboot_select()
        else:
            slot, trial = self._emulated_select()
        self.boot_id_file.write_text(f"boot-{self.boots}\n")
        info = image_info(self.slots[slot]) if slot in self.slots else None
        return BootOutcome(slot, trial, info is not None, info, self.boots)

    def booted_image(self) -> dict | None:
        """Header of the image in the slot the last boot started (None if it was not a complete image)."""
        return image_info(self.slots[self.current_slot()])

    def current_slot(self) -> str:
        if self.kind == "rpi-tryboot":
            number = struct.unpack(">I", (self.device_tree / "partition").read_bytes())[0]
            return {v: k for k, v in PARTITIONS.items()}[number]
        if self.kind == "uboot":
            return self.cmdline.read_text().split("roost.slot=")[1].split()[0]
        return json.loads((self.boot_dir / "booted.json").read_text())["slot"]

    def _rpi_select(self) -> tuple[str, bool]:
        trial = self.tryboot_flag.exists()
        if trial:
            self.tryboot_flag.unlink()      # the firmware clears the flag as it consumes it: one attempt only
        sections = _parse_sections((self.boot_dir / "autoboot.txt").read_text())
        section = sections.get("tryboot", {}) if trial else {}
        number = int(section.get("boot_partition", sections["all"]["boot_partition"]))
        self.device_tree.mkdir(parents=True, exist_ok=True)
        (self.device_tree / "partition").write_bytes(struct.pack(">I", number))
        (self.device_tree / "tryboot").write_bytes(struct.pack(">I", 1 if trial else 0))
        return {v: k for k, v in PARTITIONS.items()}.get(number, f"partition-{number}"), trial

    def _uboot_select(self) -> tuple[str, bool]:
        env, flag, index = read_env(self.env_copies)
        if env.get("upgrade_available") == "1":
            env["bootcount"] = str(int(env.get("bootcount", "0")) + 1)
            if int(env["bootcount"]) > int(env.get("bootlimit", "1")):
                # altbootcmd: give up on the trial slot
                env["boot_slot"] = env.get("rollback_slot", env["boot_slot"])
                env["upgrade_available"] = "0"
                env["bootcount"] = "0"
            flag, index = (flag + 1) % 256, 1 - index
            self.env_copies[index].write_bytes(encode_env(env, flag))   # saveenv: the other copy, newer flag
        slot = env["boot_slot"]
        self.cmdline.write_text(f"console=serial0,115200 rootwait roost.slot={slot}\n")
        return slot, env.get("upgrade_available") == "1"

    def _emulated_select(self) -> tuple[str, bool]:
        path = self.boot_dir / "selector.json"
        selector = json.loads(path.read_text())
        trial = selector.get("trial")
        if trial:
            selector["trial"] = None
            tmp = path.with_name("selector.json.rom")
            tmp.write_text(json.dumps(selector))
            os.replace(tmp, path)
        slot = trial or selector["primary"]
        (self.boot_dir / "booted.json").write_text(json.dumps({"slot": slot, "trial": bool(trial),
                                                               "boot_id": f"boot-{self.boots}"}))
        return slot, bool(trial)


def _parse_sections(text: str) -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {"all": {}}
    current = "all"
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, {})
        elif "=" in line:
            key, _, value = line.partition("=")
            sections[current][key.strip()] = value.strip()
    return sections


def encode_env(env: dict[str, str], flag: int, size: int = ENV_SIZE) -> bytes:
    """One copy of a redundant U-Boot environment: CRC32 (LE) of the data, the flag byte, then name=value\\0..."""
    data = b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()) + b"\0"
    data = data.ljust(size - 5, b"\0")
    return struct.pack("<I", zlib.crc32(data)) + bytes([flag]) + data


def decode_env(raw: bytes) -> tuple[dict[str, str], int] | None:
    if len(raw) < 6:
        return None
    crc, flag, data = struct.unpack("<I", raw[:4])[0], raw[4], raw[5:]
    if zlib.crc32(data) != crc:
        return None
    env = {}
    for item in data.split(b"\0\0", 1)[0].split(b"\0"):
        key, sep, value = item.decode().partition("=")
        if sep:
            env[key] = value
    return env, flag


def read_env(copies: tuple[Path, Path]) -> tuple[dict[str, str], int, int]:
    """The current environment of a redundant pair: the valid copy with the newer flag (modulo 256)."""
    decoded = [decode_env(p.read_bytes()) for p in copies]
    valid = [(i, d) for i, d in enumerate(decoded) if d is not None]
    if not valid:
        raise RuntimeError("both U-Boot environment copies are corrupt; U-Boot would fall back to its default env")
    if len(valid) == 2:
        f0, f1 = valid[0][1][1], valid[1][1][1]
        index = 1 if 1 <= (f1 - f0) % 256 <= 127 else 0
    else:
        index = valid[0][0]
    env, flag = decoded[index]  # type: ignore[misc]
    return env, flag, index


# ---- command line: lets `roost update` drive the emulated board from a shell (demo, system tests) -----------------

def _board(directory: Path) -> EmulatedBoard:
    doc = json.loads((Path(directory) / "board.json").read_text())
    return EmulatedBoard(directory, doc["kind"], {k: Path(v) for k, v in doc["slots"].items()})


def main(argv: list[str] | None = None) -> int:
    """python -m emulator.board.boot setup|power-on|reboot|options --dir DIR ..."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m emulator.board.boot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="lay down the boot loader files of a fresh board")
    setup.add_argument("--dir", required=True, type=Path)
    setup.add_argument("--kind", required=True, choices=("rpi-tryboot", "uboot", "emulated"))
    setup.add_argument("--slot", action="append", required=True, metavar="NAME=PATH", help="a=..., b=..., golden=...")
    setup.add_argument("--primary", default="a")
    for name in ("power-on", "options"):
        sub.add_parser(name).add_argument("--dir", required=True, type=Path)
    reboot = sub.add_parser("reboot", help="the agent's reboot command: request the boot, then run the boot ROM")
    reboot.add_argument("--dir", required=True, type=Path)
    reboot.add_argument("--trial", action="store_true", help="a trial reboot (reboot \"0 tryboot\" on the Pi)")
    args = parser.parse_args(argv)

    if args.command == "setup":
        slots = dict(item.split("=", 1) for item in args.slot)
        args.dir.mkdir(parents=True, exist_ok=True)
        (args.dir / "board.json").write_text(json.dumps({"kind": args.kind, "slots": slots}))
        board = _board(args.dir)
        board.install_bootloader(args.primary)
        outcome = board.power_on()
    else:
        board = _board(args.dir)
        if args.command == "options":
            print(json.dumps(board.backend_options()))
            return 0
        if args.command == "reboot":
            board.reboot(args.trial)
        outcome = board.power_on()
        # a boot that does not come up is reset by the watchdog, as often as the board's own rules allow
        for _ in range(4):
            if outcome.ok:
                break
            outcome = board.power_on()
    print(json.dumps({"slot": outcome.slot, "trial": outcome.trial, "ok": outcome.ok,
                      "version": (outcome.image or {}).get("version"), "boot": outcome.boot_number}))
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

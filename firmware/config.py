"""The ``[update]`` table of roost.toml, with every path configurable so tests point them at a temporary tree.

    [update]
    board = "rpi-4b"
    state_dir = "/var/lib/roost"
    keys_dir = "/etc/roost/keys"
    max_failed_trials = 3           # consecutive failed trials (any slot) before the golden image boots
    trial_deadline = 300            # seconds for the health probes to pass after a trial boot
    signature_threshold = 1         # distinct trusted keys that must sign a manifest
    min_security_version = 0        # floor before any bundle has been committed
    http_timeout = 30
    verify_first = false            # true: hash the whole payload before writing a byte (second read)
    [update.slots]
    a = "/dev/mmcblk0p5"
    b = "/dev/mmcblk0p6"
    golden = "/dev/mmcblk0p7"       # optional
    [update.boot]
    backend = "rpi-tryboot"         # or "uboot", "emulated"; the other keys are the backend's options
    boot_dir = "/boot/firmware"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from firmware.errors import FirmwareError
from firmware.slots import SLOT_NAMES, Slot

DEFAULT_CONFIG = Path("/etc/roost/roost.toml")


class ConfigError(FirmwareError):
    exit_code = 2


@dataclass
class UpdateConfig:
    board: str
    slots: dict[str, Slot]
    state_dir: Path = Path("/var/lib/roost")
    keys_dir: Path = Path("/etc/roost/keys")
    boot: str = "rpi-tryboot"
    boot_options: dict = field(default_factory=dict)
    max_failed_trials: int = 3
    trial_deadline: float = 300.0
    signature_threshold: int = 1
    min_security_version: int = 0
    http_timeout: float = 30.0
    health_services: list[str] = field(default_factory=list)
    verify_first: bool = False

    def __post_init__(self) -> None:
        if "a" not in self.slots or "b" not in self.slots:
            raise ConfigError("[update.slots] needs at least slots 'a' and 'b'")
        unknown = set(self.slots) - set(SLOT_NAMES)
        if unknown:
            raise ConfigError(f"unknown slot name(s) {sorted(unknown)} in [update.slots]; use a, b and golden")
        paths = [s.path.resolve() for s in self.slots.values()]
        if len(set(paths)) != len(paths):
            raise ConfigError("two slots in [update.slots] point at the same device or file")
        if self.signature_threshold < 1:
            raise ConfigError("signature_threshold must be at least 1; signature checks cannot be turned off")
        if self.max_failed_trials < 1:
            raise ConfigError("max_failed_trials must be at least 1")

    @classmethod
    def from_table(cls, table: dict, *, state_dir: Path | None = None) -> UpdateConfig:
        """Build from the parsed [update] table; ``state_dir`` is the default when the table names none (the
        agent passes its [device] state_dir so both share one directory)."""
        if not isinstance(table.get("board"), str):
            raise ConfigError("[update] board is missing; set it to the board name bundles are built for")
        slots = {}
        for name, value in dict(table.get("slots", {})).items():
            if isinstance(value, dict):
                slots[name] = Slot(name, Path(value["path"]), int(value["size"]) if "size" in value else None)
            else:
                slots[name] = Slot(name, Path(value))
        known = {"board", "slots", "state_dir", "keys_dir", "boot", "max_failed_trials", "trial_deadline",
                 "signature_threshold", "min_security_version", "http_timeout", "health_services", "boot_options",
                 "verify_first"}
        extra = set(table) - known
        if extra:
            raise ConfigError(f"unknown key(s) in [update]: {', '.join(sorted(extra))}")
        boot = table.get("boot", "rpi-tryboot")
        options = table.get("boot_options", {})
        if isinstance(boot, dict):   # [update.boot] given as a table: its "backend" key names it
            options = dict(boot)
            boot = options.pop("backend", "rpi-tryboot")
        return cls(board=table["board"], slots=slots,
                   state_dir=Path(table.get("state_dir", state_dir or "/var/lib/roost")),
                   keys_dir=Path(table.get("keys_dir", "/etc/roost/keys")), boot=boot, boot_options=options,
                   max_failed_trials=int(table.get("max_failed_trials", 3)),
                   trial_deadline=float(table.get("trial_deadline", 300)),
                   signature_threshold=int(table.get("signature_threshold", 1)),
                   min_security_version=int(table.get("min_security_version", 0)),
                   http_timeout=float(table.get("http_timeout", 30)),
                   health_services=list(table.get("health_services", [])),
                   verify_first=bool(table.get("verify_first", False)))

    @classmethod
    def load(cls, path: Path = DEFAULT_CONFIG) -> UpdateConfig:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found; pass --config or create it (docs/updates.md)") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        if "update" not in doc:
            raise ConfigError(f"{path} has no [update] table (docs/updates.md shows one)")
        return cls.from_table(doc["update"])

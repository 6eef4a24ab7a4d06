"""A whole emulated device for update tests: slot files, an emulated boot ROM, signing keys and the engine."""

from __future__ import annotations

import hashlib
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from emulator.board.boot import EmulatedBoard
from emulator.board.slots import create_slot_disks, make_image
from firmware import keys
from firmware.bundle import build_manifest, write_bundle
from firmware.config import UpdateConfig
from firmware.engine import UpdateEngine
from firmware.health import HealthChecks
from firmware.slots import Slot

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BOARD = "rpi-4b"


class PowerCut(BaseException):
    """Raised by the write hook: the process 'dies' here. BaseException so no product handler can swallow it."""


class CutAt:
    """A write hook that cuts power at the k-th durable operation (1-based) and records every operation."""

    def __init__(self, k: int | None) -> None:
        self.k = k
        self.ops: list[tuple[str, str]] = []

    def __call__(self, operation: str, target: str) -> None:
        self.ops.append((operation, target))
        if self.k is not None and len(self.ops) >= self.k:
            raise PowerCut(f"power cut before {operation} {target}")


class Rig:
    def __init__(self, tmp: Path, kind: str = "emulated", *, slot_size: int = 64 * 1024, image_size: int = 48 * 1024,
                 block_size: int = 4096, golden: bool = True, max_failed_trials: int = 3) -> None:
        self.tmp = Path(tmp)
        self.kind = kind
        self.image_size = image_size
        self.block_size = block_size
        self.now = NOW
        self.keys_dir = self.tmp / "keys"
        self.keys_dir.mkdir(parents=True)
        self.key = keys.generate("ed25519")
        keys.write_public(self.key, self.keys_dir / "release.pem")
        self.factory = make_image("1.0", image_size)
        images = {"a": self.factory}
        if golden:
            images["golden"] = make_image("golden-1", image_size)
        self.slot_paths = create_slot_disks(self.tmp / "disks", slot_size, images)
        slot_names = ("a", "b", "golden") if golden else ("a", "b")
        self.board = EmulatedBoard(self.tmp / "board", kind, {n: self.slot_paths[n] for n in slot_names})
        self.board.install_bootloader("a")
        # lets `python -m emulator.board.boot reboot --dir ...` find this board: CLI tests never run a real reboot
        (self.board.directory / "board.json").write_text(json.dumps(
            {"kind": kind, "slots": {n: str(self.slot_paths[n]) for n in slot_names}}))
        self.config = UpdateConfig(board=BOARD, slots={n: Slot(n, self.slot_paths[n]) for n in slot_names},
                                   state_dir=self.tmp / "state", keys_dir=self.keys_dir, boot=kind,
                                   boot_options=self.board.backend_options(), max_failed_trials=max_failed_trials,
                                   trial_deadline=0)
        self.bundles = self.tmp / "bundles"
        self.bundles.mkdir()
        self.boot_log: list = []
        outcome = self.board.power_on()
        assert outcome.ok and outcome.slot == "a"

    # ---- engine and boots -----------------------------------------------------------------------------------

    def engine(self, hook=None, **kwargs) -> UpdateEngine:
        health = HealthChecks(clock=lambda: 0.0, sleep=lambda s: None)
        health.register("image-healthy", self._image_healthy)
        return UpdateEngine(self.config, write_hook=hook, rebooter=self.board.reboot, now=lambda: self.now,
                            health=health, **kwargs)

    def _image_healthy(self) -> tuple[bool, str]:
        info = self.board.booted_image()
        return (bool(info and info["healthy"]), "" if info and info["healthy"] else "the new system reports unhealthy")

    def power_on(self, max_resets: int = 6):
        """Boot until a slot with a complete image starts (the watchdog resets a hung boot)."""
        for _ in range(max_resets):
            outcome = self.board.power_on()
            self.boot_log.append(outcome)
            if outcome.ok:
                return outcome
        raise AssertionError("the board never booted a complete image")

    def settle(self, hook=None, max_boots: int = 8):
        """Power on and let the agent do what boot() asks (health checks, reboots) until it is idle."""
        outcome = self.power_on()
        for _ in range(max_boots):
            engine = self.engine(hook)
            report = engine.boot()
            if report.action == "health-check":
                engine.run_trial()
                outcome = self.power_on()
            elif report.action == "reboot":
                engine.reboot()
                outcome = self.power_on()
            else:
                return outcome, report
        raise AssertionError("the device kept rebooting")

    # ---- bundles --------------------------------------------------------------------------------------------

    def image(self, version: str, healthy: bool = True) -> bytes:
        return make_image(version, self.image_size, healthy=healthy)

    def bundle(self, version: str, *, security_version: int = 1, healthy: bool = True, image: bytes | None = None,
               compatible: tuple[str, ...] = (BOARD,), expires: datetime | None = None, signers=None,
               golden: bool = False, name: str | None = None) -> Path:
        image = image if image is not None else self.image(version, healthy)
        raw = self.bundles / f"{name or version}.img"
        raw.write_bytes(image)
        manifest = build_manifest(raw, compatible=compatible, version=version, security_version=security_version,
                                  expires=expires or self.now + timedelta(days=30), block_size=self.block_size,
                                  golden=golden, created=self.now)
        out = self.bundles / f"{name or version}.roostb"
        write_bundle(raw, manifest, out, [self.key] if signers is None else signers)
        return out

    # ---- observations ---------------------------------------------------------------------------------------

    def slot_bytes(self, name: str) -> bytes:
        return self.slot_paths[name].read_bytes()

    def digest(self, name: str) -> str:
        return hashlib.sha256(self.slot_bytes(name)).hexdigest()

    def selector_files(self) -> dict[str, bytes]:
        """Every file the boot ROM reads, to prove a rejected install switched nothing."""
        out = {}
        for path in sorted(self.board.directory.rglob("*")):
            if path.is_file() and path.name not in ("boot_id",):
                out[str(path)] = path.read_bytes()
        return out

    def config_file(self) -> Path:
        """The same settings as a roost.toml [update] table, for CLI tests."""
        lines = ["[update]", f'board = "{BOARD}"', f'state_dir = "{self.config.state_dir}"',
                 f'keys_dir = "{self.keys_dir}"', f"max_failed_trials = {self.config.max_failed_trials}",
                 "trial_deadline = 0", "[update.slots]"]
        lines += [f'{name} = {{ path = "{slot.path}", size = {slot.size} }}' if slot.size else f'{name} = "{slot.path}"'
                  for name, slot in self.config.slots.items()]
        lines += ["[update.boot]", f'backend = "{self.kind}"']
        reboot = [sys.executable, "-m", "emulator.board.boot", "reboot", "--dir", str(self.board.directory)]
        lines += [f"reboot_command = {json.dumps(reboot)}",
                  f"trial_reboot_command = {json.dumps([*reboot, '--trial'])}"]
        for key, value in self.config.boot_options.items():
            if isinstance(value, dict):
                lines.append(f"{key} = {{ {', '.join(f'{k} = {v}' for k, v in value.items())} }}")
            else:
                lines.append(f'{key} = "{value}"')
        path = self.tmp / "roost.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

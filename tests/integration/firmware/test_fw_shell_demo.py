"""The documented shell walk-through (docs/updates.md, "Try it on one machine"), run as real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from emulator.board.slots import create_slot_disks, make_image

ROOST = str(Path(sys.executable).with_name("roost"))


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done


def test_shell_walk_through(tmp_path):
    slots = create_slot_disks(tmp_path / "disks", 128 * 1024, {"a": make_image("1.0", 96 * 1024),
                                                                "golden": make_image("golden", 96 * 1024)})
    board = tmp_path / "board"
    rom = [sys.executable, "-m", "emulator.board.boot"]
    first = run(*rom, "setup", "--dir", str(board), "--kind", "rpi-tryboot",
                *[f"--slot={name}={path}" for name, path in slots.items()], cwd=tmp_path)
    assert json.loads(first.stdout)["slot"] == "a"

    run(ROOST, "keys", "generate", "release", cwd=tmp_path)
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "release.pem").write_bytes((tmp_path / "release.pem").read_bytes())
    (tmp_path / "os-2.0.img").write_bytes(make_image("2.0", 96 * 1024))
    run(ROOST, "bundle", "create", "os-2.0.img", "-o", "os-2.0.roostb", "--version", "2.0", "--compatible", "rpi-4b",
        "--security-version", "1", "--block-size", "4096", "--key", "release.key", cwd=tmp_path)

    options = json.loads(run(*rom, "options", "--dir", str(board), cwd=tmp_path).stdout)
    reboot = [*rom, "reboot", "--dir", str(board)]
    (tmp_path / "roost.toml").write_text(
        '[update]\nboard = "rpi-4b"\nstate_dir = "state"\nkeys_dir = "keys"\n'
        + "[update.slots]\n" + "".join(f'{n} = "{p}"\n' for n, p in slots.items())
        + '[update.boot]\nbackend = "rpi-tryboot"\n'
        + "".join(f'{k} = "{v}"\n' for k, v in options.items() if isinstance(v, str))
        + f"reboot_command = {json.dumps(reboot)}\ntrial_reboot_command = {json.dumps([*reboot, '--trial'])}\n")

    out = run(ROOST, "update", "--config", "roost.toml", "install", "os-2.0.roostb", "--reboot", cwd=tmp_path).stdout
    assert "installed in slot b" in out
    status = json.loads(run(ROOST, "update", "--config", "roost.toml", "status", "--json", cwd=tmp_path).stdout)
    assert status["booted_slot"] == "b" and status["trial_boot"]
    out = run(ROOST, "update", "--config", "roost.toml", "check", cwd=tmp_path).stdout
    assert "committed" in out
    status = json.loads(run(ROOST, "update", "--config", "roost.toml", "status", "--json", cwd=tmp_path).stdout)
    assert (status["primary_slot"], status["slots"]["b"]["version"], status["slots"]["b"]["status"]) == \
        ("b", "2.0", "good")
    again = json.loads(run(*rom, "power-on", "--dir", str(board), cwd=tmp_path).stdout)
    assert (again["slot"], again["version"], again["trial"]) == ("b", "2.0", False)

"""What cloud management asks of the operating system, as configurable commands.

Reboots and time-zone changes act on the whole machine, so they go through this one small layer of
commands (``systemctl reboot``, ``timedatectl ...``) read from the config. Tests point the commands at
scripts that record what they were asked, which proves the real path runs without rebooting anything.
Commands are argument lists, never shell strings built from cloud input.
"""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_COMMANDS: dict[str, str] = {
    "reboot": "systemctl reboot",
    "set_timezone": "timedatectl set-timezone {timezone}",
    "time_status": "timedatectl show",
}


class SystemActionError(RuntimeError):
    """A system command failed; the message carries its exit status and error output."""


@dataclass
class SystemActions:
    """Run the configured OS commands. ``commands`` maps action name to a command line with {placeholders}."""

    commands: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_COMMANDS))
    timeout_s: float = 30.0

    @classmethod
    def from_config(cls, config: Any) -> SystemActions:
        """Commands from ``[management]``: reboot_command, and set_timezone_command / time_status_command."""
        commands = dict(DEFAULT_COMMANDS)
        management = getattr(config, "management", None)
        if management is not None:
            commands["reboot"] = getattr(management, "reboot_command", commands["reboot"]) or commands["reboot"]
            extra = getattr(management, "extra", {}) or {}
            for action in ("set_timezone", "time_status"):
                value = extra.get(f"{action}_command")
                if isinstance(value, str) and value.strip():
                    commands[action] = value
        return cls(commands)

    def argv(self, action: str, **values: str) -> list[str]:
        template = self.commands[action]
        # Split first, substitute after: a value can never become an extra argument or shell syntax.
        return [part.format(**values) for part in shlex.split(template)]

    def run(self, action: str, **values: str) -> str:
        argv = self.argv(action, **values)
        log.info("system action %s: %s", action, " ".join(argv))
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except FileNotFoundError:
            raise SystemActionError(f"{action}: command {argv[0]!r} not found; "
                                    f"set management.{action}_command in the config") from None
        except subprocess.TimeoutExpired:
            raise SystemActionError(f"{action}: {argv[0]} did not finish within {self.timeout_s:.0f} s") from None
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()
            raise SystemActionError(f"{action}: {argv[0]} exited with status {done.returncode}"
                                    + (f": {detail[-1]}" if detail else ""))
        return done.stdout

    def reboot(self) -> None:
        self.run("reboot")

    def set_timezone(self, timezone: str) -> None:
        self.run("set_timezone", timezone=timezone)

    def time_status(self) -> dict[str, str]:
        """``timedatectl show`` as a dict (Timezone, NTP, NTPSynchronized, TimeUSec, ...)."""
        return parse_key_values(self.run("time_status").splitlines())


def parse_key_values(lines: Sequence[str]) -> dict[str, str]:
    out = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out

"""The `roost-sim` command: emulated board, local IoT Hub + DPS, PKI, demo."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agent.cli import main_for


def main(argv: Sequence[str] | None = None) -> int:
    from emulator import commands

    # Like `roost`, only the named subcommand's module is imported (the hub emulator does not load the board's).
    return main_for("roost-sim", "roost emulators: board, IoT Hub, DPS", commands, argv)


if __name__ == "__main__":
    sys.exit(main())

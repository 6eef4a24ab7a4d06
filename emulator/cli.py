"""The `roost-sim` command: emulated board, local IoT Hub + DPS, PKI, demo."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agent import __version__
from agent.cli import build_parser, run_parser


def main(argv: Sequence[str] | None = None) -> int:
    from emulator import commands

    parser = build_parser("roost-sim", "roost emulators: board, IoT Hub, DPS", commands, __version__)
    return run_parser(parser, argv)


if __name__ == "__main__":
    sys.exit(main())

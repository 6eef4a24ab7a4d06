"""`roost-sim board show`: what the emulator builds for a board profile, and the faults each part can show.

    roost-sim board show [--board rpi-4b] [--json]

Use it to write ``ROOST_EMULATOR_FAULTS`` (``SENSOR_ID=KIND[:COUNT]``, see docs/emulator-board.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from emulator.board.faults import CLOCK_FAULTS, FAULT_KINDS


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("board", help="the emulated board: parts and faults", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="board_command", metavar="ACTION")
    show = sub.add_parser("show", help="list the emulated parts of a board and the faults each can show")
    show.add_argument("--board", default="rpi-4b", help="board profile name or TOML path (default rpi-4b)")
    show.add_argument("--json", action="store_true", help="one JSON object per part")
    show.set_defaults(func=run_show)


def describe(board_name: str) -> list[dict[str, Any]]:
    """One entry per emulated part: sensor id, chip, bus, address, supported faults."""
    from emulator.board.board import EmulatedBoard
    from hal.board import load_board

    profile = load_board(board_name)
    with EmulatedBoard(profile, uart_period_s=3600) as board:
        parts = []
        for spec in profile.sensors:
            part = board.parts[spec.id]
            bus = profile.bus(spec.bus)
            parts.append({
                "sensor_id": spec.id, "chip": part.chip, "bus": bus.name, "kind": bus.kind,
                "address": spec.address, "faults": list(part.faults.supported),
            })
    return parts


def run_show(args: argparse.Namespace, out: Any = None) -> int:
    from hal.board import ProfileError

    out = out or sys.stdout
    try:
        parts = describe(args.board)
    except (ProfileError, ValueError) as exc:
        print(f"roost-sim board: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for part in parts:
            out.write(json.dumps(part, sort_keys=True) + "\n")
        return 0
    for part in parts:
        where = f"0x{part['address']:02x}" if part["address"] is not None else "uart"
        out.write(f"{part['sensor_id']:<12} {part['chip']:<9} {part['bus']:<8} {where:<5} "
                  f"faults: {', '.join(part['faults'])}\n")
    out.write(f"{'clock':<12} {'':<9} {'':<8} {'':<5} faults: "
              f"{', '.join(f'{k}:SECONDS' for k in CLOCK_FAULTS)}\n")
    out.write("\n" + "".join(f"  {k:<11} {v}\n" for k, v in FAULT_KINDS.items()))
    out.write("e.g.  ROOST_EMULATOR_FAULTS=" + ",".join(
        f"{p['sensor_id']}={p['faults'][0]}" for p in parts[:2]) + " roost sensors read --board "
        f"{args.board} --emulated\n")
    return 0

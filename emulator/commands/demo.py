"""`roost-sim demo`: the emulated board's sensors, read live through the real HAL, in a refreshing table.

    roost-sim demo [--board rpi-4b] [--interval 1] [--count N] [--seed N] [--faults SPEC] [--chaos]

Every value comes the way it would on a Raspberry Pi: hal drivers, smbus2 ioctls (decoded by the
emulator), pyserial on a pty. ``--faults`` (or ``ROOST_EMULATOR_FAULTS``) shows a fault from the start,
e.g. ``--faults climate=nack``; ``--chaos`` injects and clears faults on its own so you can watch one
sensor fail while the others go on. Ctrl-C ends it.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from emulator.board.readings_table import LiveTable, clock_title

# Faults --chaos picks from, per driver: ones every part of that kind can show.
CHAOS_FAULTS = {
    "bme280": ("nack", "busy", "stuck"),
    "sht4x": ("nack", "bad_crc", "busy"),
    "ads1115": ("nack", "busy"),
    "pms5003": ("garbage", "bad_crc", "unplugged"),
    "nmea": ("bad_crc", "unplugged"),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="live sensor table of the emulated board", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", default="rpi-4b", help="board profile to emulate (default rpi-4b)")
    parser.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between rounds of reads (default 1)")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop after N rounds")
    parser.add_argument("--seed", type=int, default=1, help="seed of the emulated signals (default 1)")
    parser.add_argument("--faults", default="", metavar="SPEC",
                        help="faults to show from the start, e.g. climate=nack,particles=garbage")
    parser.add_argument("--chaos", action="store_true", help="inject and clear random faults as it runs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: Any = None) -> int:
    from hal.board import ProfileError, load_board
    from hal.platform import PlatformError, load_platform
    from hal.sensors import open_sensors

    out = out or sys.stdout
    if not args.interval > 0:
        print("roost-sim demo: --interval must be more than 0 seconds", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print("roost-sim demo: --count must be 1 or more", file=sys.stderr)
        return 2
    try:
        board = load_board(args.board)
        platform = load_platform("emulated", board, seed=args.seed, faults=args.faults or None)
    except (ProfileError, PlatformError) as exc:
        print(f"roost-sim demo: {exc}", file=sys.stderr)
        return 2
    table = LiveTable(out)
    chaos = Chaos(platform, board, random.Random(args.seed)) if args.chaos else None
    rounds = 0
    try:
        with platform:
            sensors = open_sensors(board, platform)
            while True:
                started = time.monotonic()
                if chaos is not None:
                    chaos.step()
                readings = [sensor.read() for sensor in sensors]
                faults = platform.emulator.active_faults()
                footer = "faults: " + ", ".join(f"{k}={'+'.join(v)}" for k, v in sorted(faults.items())) \
                    if faults else "faults: none  (try --chaos, or --faults climate=nack)"
                table.show(readings, title=clock_title(board.name, platform.clock.time()), footer=footer)
                rounds += 1
                if args.count is not None and rounds >= args.count:
                    return 0
                time.sleep(max(0.0, args.interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0


class Chaos:
    """Now and then breaks one sensor for a few rounds, then mends it."""

    def __init__(self, platform: Any, board: Any, rng: random.Random, *, every: int = 4, lasts: int = 3) -> None:
        self.platform = platform
        self.sensors = [s for s in board.sensors if s.driver in CHAOS_FAULTS]
        self.rng = rng
        self.every = every
        self.lasts = lasts
        self.round = 0
        self.broken: tuple[str, int] | None = None

    def step(self) -> None:
        self.round += 1
        if self.broken is not None and self.round >= self.broken[1]:
            self.platform.clear(self.broken[0])
            self.broken = None
        if self.broken is None and self.sensors and self.round % self.every == 0:
            spec = self.rng.choice(self.sensors)
            self.platform.inject(spec.id, self.rng.choice(CHAOS_FAULTS[spec.driver]))
            self.broken = (spec.id, self.round + self.lasts)

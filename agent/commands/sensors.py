"""`roost sensors scan|read`: what answers on the board's buses, and what the configured sensors read.

Both run against the real hardware by default (the ``linux`` platform) and against the board emulator
with ``--emulated`` (same as ``--platform emulated``). The board comes from ``--board``, else
``$ROOST_BOARD``, else ``[device] board`` of the agent's config file (``--config``, ``$ROOST_CONFIG``,
/etc/roost/roost.toml); the platform from ``--platform``/``--emulated``, else ``$ROOST_PLATFORM``, else
``[device] platform`` of that file, else ``linux``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

BOARD_ENV = "ROOST_BOARD"
PLATFORM_ENV = "ROOST_PLATFORM"
EXIT_OK = 0
EXIT_SENSOR_FAULT = 1  # the command ran; at least one sensor did not answer or read
EXIT_USAGE = 2  # no board, unknown board or platform, bus cannot be opened


class UsageError(Exception):
    """Something the user has to fix before the command can run; the message says how."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sensors", help="scan the board's buses and read its sensors",
        description="Scan the board's buses and read its sensors, on real hardware or on the board emulator.",
    )
    sub = parser.add_subparsers(dest="sensors_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _help(parser))

    scan = sub.add_parser("scan", help="list what answers on each bus and name the chips")
    _common_options(scan)
    scan.set_defaults(func=run_scan)

    read = sub.add_parser("read", help="read every configured sensor, with units")
    _common_options(read)
    read.add_argument("--watch", nargs="?", type=_positive_seconds, const=2.0, default=None, metavar="SECONDS",
                      help="read again every SECONDS (default 2) until interrupted")
    read.add_argument("--count", type=_positive_int, default=None, metavar="N",
                      help="with --watch: stop after N rounds")
    read.add_argument("--sensor", action="append", default=[], metavar="ID",
                      help="read only this sensor (repeatable)")
    read.set_defaults(func=run_read)


def _common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--board", help=f"board profile name (rpi-4b ...) or TOML path; default: ${BOARD_ENV}, "
                                        "else [device] board of the config file")
    parser.add_argument("--platform", help=f"hardware implementation: linux (default) or emulated; "
                                           f"default: ${PLATFORM_ENV}, else [device] platform of the config file")
    parser.add_argument("--emulated", action="store_true", help="use the board emulator (same as --platform emulated)")
    parser.add_argument("--config", help="agent config file to take [device] board/platform from "
                                         "(default: $ROOST_CONFIG, else /etc/roost/roost.toml)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the interval must be more than 0 seconds")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 or more")
    return value


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


# -- choosing board and platform ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    board: str
    platform: str
    board_from: str
    platform_from: str


def _device_section(config_path: str | None) -> tuple[dict[str, Any], str, str | None]:
    """([device] table, file name, problem or None). A missing default file is no problem."""
    from agent.config import default_path

    path = default_path(config_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if config_path:
            return {}, str(path), f"config file {path} does not exist; pass an existing --config or drop it"
        return {}, str(path), None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return {}, str(path), f"cannot read {path}: {exc}; fix the file or pass --board and --platform"
    device = data.get("device", {})
    if not isinstance(device, dict):
        return {}, str(path), f"{path}: [device] must be a table; fix the file or pass --board and --platform"
    return device, str(path), None


def resolve_target(args: argparse.Namespace, environ: dict[str, str] | None = None) -> Target:
    """Board and platform from the options, the environment and the config file, in that order."""
    env = os.environ if environ is None else environ
    if args.emulated and args.platform and args.platform != "emulated":
        raise UsageError(f"--emulated contradicts --platform {args.platform}; give one of them")
    board_given = bool(args.board or env.get(BOARD_ENV))
    platform_given = bool(args.emulated or args.platform or env.get(PLATFORM_ENV))
    device: dict[str, Any] = {}
    config_source, problem = "", None
    if not (board_given and platform_given):
        device, config_source, problem = _device_section(args.config)

    if args.board:
        board, board_from = args.board, "--board"
    elif env.get(BOARD_ENV):
        board, board_from = env[BOARD_ENV], f"${BOARD_ENV}"
    elif problem:
        raise UsageError(problem)
    elif isinstance(device.get("board"), str) and device["board"]:
        board, board_from = device["board"], f"[device] board in {config_source}"
    else:
        raise UsageError(
            f"no board given: pass --board NAME (e.g. --board rpi-4b, add --emulated for the board emulator), "
            f"set ${BOARD_ENV}, or set [device] board in {config_source or '/etc/roost/roost.toml'}"
        )

    if args.emulated:
        platform, platform_from = "emulated", "--emulated"
    elif args.platform:
        platform, platform_from = args.platform, "--platform"
    elif env.get(PLATFORM_ENV):
        platform, platform_from = env[PLATFORM_ENV], f"${PLATFORM_ENV}"
    elif problem:
        raise UsageError(problem)
    elif isinstance(device.get("platform"), str) and device["platform"]:
        platform, platform_from = device["platform"], f"[device] platform in {config_source}"
    else:
        platform, platform_from = "linux", "default"
    return Target(board, platform, board_from, platform_from)


def _open(args: argparse.Namespace) -> tuple[Any, Any]:
    from hal.board import ProfileError, load_board
    from hal.platform import PlatformError, load_platform

    target = resolve_target(args)
    try:
        board = load_board(target.board)
    except ProfileError as exc:
        raise UsageError(f"board {target.board!r} (from {target.board_from}): {exc}") from None
    try:
        platform = load_platform(target.platform, board)
    except PlatformError as exc:
        raise UsageError(f"platform {target.platform!r} (from {target.platform_from}): {exc}") from None
    return board, platform


def _guarded(run: Callable[[argparse.Namespace, TextIO], int]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        try:
            return run(args, sys.stdout)
        except UsageError as exc:
            print(f"roost sensors: {exc}", file=sys.stderr)
            return EXIT_USAGE
    command.__name__ = run.__name__
    command.__doc__ = run.__doc__
    return command


# -- scan ------------------------------------------------------------------------------------------


def scan_command(args: argparse.Namespace, out: TextIO) -> int:
    """`roost sensors scan`."""
    from hal.sensors import scan

    board, platform = _open(args)
    with platform:
        results = scan(board, platform)
    if args.json:
        for bus in results:
            out.write(json.dumps(bus.to_dict(), sort_keys=True) + "\n")
    else:
        out.write(format_scan(board, results))
    healthy = all(bus.error is None and all(e.present and not e.error for e in bus.entries) for bus in results)
    return EXIT_OK if healthy else EXIT_SENSOR_FAULT


def format_scan(board: Any, results: list[Any]) -> str:
    lines = [f"board {board.name}: {board.description}"]
    for bus in results:
        spec = board.buses.get(bus.bus)
        extra = f", {spec.baudrate} baud" if spec is not None and spec.baudrate else ""
        lines.append(f"{bus.bus} ({bus.kind}, {bus.device}{extra})")
        if bus.error:
            lines.append(f"  bus error: {bus.error}")
        if not bus.entries and not bus.error:
            lines.append("  nothing answers")
        for entry in bus.entries:
            where = f"0x{entry.address:02x}" if entry.address is not None else "uart"
            chip = entry.chip or ("unknown part" if entry.present else "-")
            sensor = entry.sensor_id or "(not in the board profile)"
            state = "answers" if entry.present else "MISSING"
            line = f"  {where:<6} {chip:<13} {sensor:<26} {state}"
            if entry.error:
                line += f": {entry.error}"
            lines.append(line.rstrip())
    return "\n".join(lines) + "\n"


# -- read ------------------------------------------------------------------------------------------


def read_command(args: argparse.Namespace, out: TextIO, *, sleep: Callable[[float], None] = time.sleep) -> int:
    """`roost sensors read`."""
    from hal.sensors import open_sensors

    board, platform = _open(args)
    with platform:
        sensors = open_sensors(board, platform)
        if args.sensor:
            known = {s.id for s in sensors}
            unknown = [name for name in args.sensor if name not in known]
            if unknown:
                raise UsageError(f"board {board.name!r} has no sensor {', '.join(map(repr, unknown))}; "
                                 f"its sensors: {', '.join(sorted(known))}")
            sensors = [s for s in sensors if s.id in args.sensor]
        rounds = 0
        status = EXIT_OK
        while True:
            readings = [sensor.read() for sensor in sensors]
            status = EXIT_OK if all(r.ok for r in readings) else EXIT_SENSOR_FAULT
            if args.json:
                for reading in readings:
                    out.write(json.dumps(reading.to_dict(), sort_keys=True) + "\n")
            else:
                if args.watch is not None:
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(platform.clock.time()))
                    out.write(f"-- {stamp}\n")
                out.write(format_readings(readings))
            out.flush()
            rounds += 1
            if args.watch is None or (args.count is not None and rounds >= args.count):
                return status
            sleep(args.watch)


def _number(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.3f}".rstrip("0").rstrip(".")
        return text if text not in ("", "-0") else "0"
    return str(value)


def format_readings(readings: list[Any]) -> str:
    """One line per sensor: id, chip, then each value with its unit, or the fault."""
    width_id = max((len(r.sensor_id) for r in readings), default=0)
    width_chip = max((len(r.chip) for r in readings), default=0)
    lines = []
    for reading in readings:
        head = f"{reading.sensor_id:<{width_id}}  {reading.chip:<{width_chip}}  "
        if reading.ok:
            parts = [f"{name} {_number(value)} {reading.units.get(name, '')}".rstrip()
                     for name, value in reading.values.items()]
            lines.append(head + "  ".join(parts))
        else:
            lines.append(head + f"ERROR ({reading.error_kind}): {reading.error}")
    return "\n".join(lines) + "\n"


run_scan = _guarded(scan_command)
run_read = _guarded(read_command)

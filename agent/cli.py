"""The `roost` command. Subcommands live in agent/commands/, one module each (see its docstring).

A command line that names its subcommand imports only that subcommand's module: the agent daemon (`roost run`)
runs for months, and every other command's imports (bundle signing, the TPM, doctor's probes) would stay
resident in it for nothing (about 1.5 MB). Help, a bad command and the bare `roost` still see every subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from agent import __version__


def command_names(package: ModuleType) -> list[str]:
    """The subcommands ``package`` provides: its public modules, sorted (listed, not imported)."""
    return sorted(m.name for m in pkgutil.iter_modules(package.__path__) if not m.name.startswith("_"))


def requested_command(argv: Sequence[str], names: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names, when its first word that is not an option is one of ``names``."""
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            return word if word in names else None
    return None


def build_parser(prog: str, description: str, package: ModuleType, version: str,
                 only: str | None = None) -> argparse.ArgumentParser:
    """An argparse parser whose subcommands are the modules of ``package`` (shared with roost-sim).

    With ``only``, just that subcommand is registered (and only its module imported).
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (repeatable)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [only] if only else command_names(package):
        importlib.import_module(f"{package.__name__}.{name}").register(sub)
    return parser


def run_parser(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


def main_for(prog: str, description: str, package: ModuleType, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` (default: the process's arguments) with ``package``'s subcommands and run the one named."""
    words = list(sys.argv[1:] if argv is None else argv)
    only = requested_command(words, command_names(package))
    return run_parser(build_parser(prog, description, package, __version__, only), words)


def main(argv: Sequence[str] | None = None) -> int:
    from agent import commands

    return main_for("roost", "roost device agent", commands, argv)


if __name__ == "__main__":
    sys.exit(main())

"""`roost update`: install a signed firmware bundle into the inactive slot and manage its trial boot.

    roost update install FILE|URL [--reboot] [--verify-first]   verify, write the inactive slot, arm a trial boot
    roost update status [--json]                                 slots, boot selection, pending trial, last result
    roost update check [--no-reboot]                             after boot: reconcile, run health checks, commit
                                                                 or roll back (what the agent does at start-up)
    roost update mark-good                                       commit the running trial slot
    roost update rollback [--reason TEXT] [--reboot]             leave the trial (or running) slot

Settings come from the [update] table of the config file (docs/updates.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from firmware.config import DEFAULT_CONFIG, UpdateConfig
from firmware.engine import UpdateEngine
from firmware.errors import FirmwareError
from firmware.health import services_probe


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("update", help="install firmware bundles, trial boot, commit, rollback",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="config file (default: $ROOST_CONFIG or /etc/roost/roost.toml)")
    sub = parser.add_subparsers(dest="update_command", metavar="UPDATE_COMMAND")
    install = sub.add_parser("install", help="verify and install a bundle from a file or an http(s) URL")
    install.add_argument("source", help="bundle file or http(s) URL")
    install.add_argument("--reboot", action="store_true", help="reboot into the trial boot when installed")
    install.add_argument("--retry-failed", action="store_true",
                         help="allow a bundle that already failed a trial boot on this device")
    install.add_argument("--verify-first", action="store_true", default=None,
                         help="verify the whole payload before writing any of it (reads it twice)")
    install.set_defaults(func=_install)
    status = sub.add_parser("status", help="show slots, boot selection and the last result")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)
    check = sub.add_parser("check", help="reconcile after boot; in a trial boot run the health checks")
    check.add_argument("--no-reboot", action="store_true", help="report what would happen instead of rebooting")
    check.set_defaults(func=_check)
    good = sub.add_parser("mark-good", help="commit the running trial slot")
    good.set_defaults(func=_mark_good)
    back = sub.add_parser("rollback", help="leave the trial slot, or switch to the other committed slot")
    back.add_argument("--reason", default="rollback requested from the command line")
    back.add_argument("--reboot", action="store_true")
    back.set_defaults(func=_rollback)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _engine(args: argparse.Namespace) -> UpdateEngine:
    path = args.config or Path(os.environ.get("ROOST_CONFIG", DEFAULT_CONFIG))
    config = UpdateConfig.load(path)
    engine = UpdateEngine(config)
    if config.health_services:
        engine.health.register("services", services_probe(config.health_services))
    return engine


def _run(args: argparse.Namespace, action) -> int:
    try:
        return action(_engine(args))
    except FirmwareError as exc:
        print(f"roost update: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except PermissionError as exc:
        print(f"roost update: error: {exc.filename}: permission denied; run as root (or as the user that owns "
              "the update state and the slots)", file=sys.stderr)
        return 13
    except OSError as exc:
        print(f"roost update: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def _install(args: argparse.Namespace) -> int:
    def action(engine: UpdateEngine) -> int:
        result = engine.install(args.source, reboot=args.reboot, retry_failed=args.retry_failed,
                                verify_first=args.verify_first)
        if result.already_installed:
            print(f"{result.version} is already installed and committed in slot {result.slot}; nothing to do")
        else:
            s = result.stats
            print(f"{result.version} installed in slot {result.slot} ({s.blocks_fetched} blocks read, "
                  f"{s.blocks_copied} copied from the running slot, {s.blocks_present} already present); "
                  + ("rebooting into its trial boot" if args.reboot else "trial boot armed: reboot to try it"))
        return 0
    return _run(args, action)


def _status(args: argparse.Namespace) -> int:
    def action(engine: UpdateEngine) -> int:
        status = engine.status()
        if args.json:
            print(json.dumps(status, indent=1))
            return 0
        print(f"mode {status['mode']}, board {status['board']}, boot backend {status['boot_backend']}")
        print(f"booted slot {status['booted_slot']}{' (trial boot)' if status['trial_boot'] else ''}, "
              f"primary slot {status['primary_slot']}, security version floor {status['security_version_floor']}")
        for name, rec in status["slots"].items():
            print(f"  slot {name:6} {rec['status']:9} {rec['version'] or '-'} (security version "
                  f"{rec['security_version']})")
        if status["pending"]:
            print(f"pending: trial of slot {status['pending']['slot']} ({status['pending']['phase']})")
        if status["last_result"]:
            print(f"last result: {status['last_result']['result']}: {status['last_result']['detail']}")
        return 0
    return _run(args, action)


def _check(args: argparse.Namespace) -> int:
    def action(engine: UpdateEngine) -> int:
        report = engine.boot()
        print(f"slot {report.slot}: {report.mode}; {report.detail}")
        if report.action == "health-check":
            health = engine.run_trial(reboot=not args.no_reboot)
            print("health checks passed: committed" if health.ok else f"health checks failed: {health.failures()}")
            return 0 if health.ok else 1
        if report.action == "reboot" and not args.no_reboot:
            engine.reboot()
        return 0
    return _run(args, action)


def _mark_good(args: argparse.Namespace) -> int:
    def action(engine: UpdateEngine) -> int:
        engine.mark_good()
        print("trial slot committed")
        return 0
    return _run(args, action)


def _rollback(args: argparse.Namespace) -> int:
    def action(engine: UpdateEngine) -> int:
        slot = engine.rollback(args.reason, reboot=args.reboot)
        print(f"slot {slot} boots next")
        return 0
    return _run(args, action)

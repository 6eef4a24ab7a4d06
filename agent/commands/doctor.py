"""``roost doctor``: check everything between this device and its hub, with a fix for each problem."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "doctor", help="check DNS, ports, TLS, clock, credentials, board and TPM",
        description="Run the connectivity and device checks; exit 0 when none failed (with --strict: and none "
                    "warned), 1 otherwise, 2 when the config cannot be read.")
    parser.add_argument("--config", help="config file (default $ROOST_CONFIG or /etc/roost/roost.toml)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    parser.add_argument("--strict", action="store_true", help="treat warnings as failures")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per network check (default 5)")
    parser.add_argument("--time-url", help="HTTPS URL whose Date header is the reference for clock skew "
                                           "(default: the provisioning service or the hub)")
    parser.add_argument("--no-board", action="store_true", help="skip opening the board and reading sensors")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent import doctor
    from agent.config import ConfigError, load_config
    from agent.management.system_actions import SystemActions

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        problems = [{"name": "config", "status": "fail", "detail": str(p), "fix": p.fix} for p in exc.problems]
        if args.json:
            print(json.dumps({"passed": False, "checks": problems}, indent=2))
        else:
            for p in exc.problems:
                print(f"[FAIL] config  {p}", file=sys.stderr)
            print("fix the configuration first (roost config check), then run roost doctor again", file=sys.stderr)
        return 2
    actions = SystemActions.from_config(config)
    checks = doctor.run_checks(config, timeout=args.timeout, time_url=args.time_url, board=not args.no_board,
                               time_status=actions.time_status)
    checks.insert(0, doctor.Check("config", doctor.PASS, f"{config.source} is valid"))
    ok = doctor.passed(checks, strict=args.strict)
    if args.json:
        print(json.dumps({"passed": ok, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        print(doctor.format_text(checks))
    return 0 if ok else 1

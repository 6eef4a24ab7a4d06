"""``roost provision``: resolve this device's identity through DPS (or the cache) and show the assignment."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "provision", help="register with DPS (or reuse the cached assignment) and show the hub",
        description="Resolve the device identity: the cached DPS assignment when there is one, otherwise a DPS "
                    "registration. Exit 0 on success, 1 when provisioning failed, 2 when the config is unusable.")
    parser.add_argument("--config", help="config file (default $ROOST_CONFIG or /etc/roost/roost.toml)")
    parser.add_argument("--force", action="store_true", help="ignore the cached assignment and ask DPS again")
    parser.add_argument("--status", action="store_true", help="show the cached assignment; contact nothing")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(func=run)


def _print(args: argparse.Namespace, data: dict) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True))
        return
    for key, value in data.items():
        if value not in (None, ""):
            print(f"{key:>16}: {value}")


def run(args: argparse.Namespace) -> int:
    from agent import identity
    from agent.config import ConfigError, load_config
    from agent.identity import assignment

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"roost provision: {exc}", file=sys.stderr)
        return 2
    if args.status:
        cached = assignment.load(config.state_dir)
        if cached is None:
            print("not provisioned: no cached assignment (run roost provision)", file=sys.stderr)
            return 1
        data = dataclasses.asdict(cached)
        data["assigned_at"] = dt.datetime.fromtimestamp(cached.assigned_at, dt.UTC).isoformat()
        data.pop("fingerprint")
        _print(args, data)
        return 0
    try:
        creds = identity.resolve(config, config.state_dir, force=args.force)
    except identity.IdentityError as exc:
        print(f"roost provision: {exc.problem}", file=sys.stderr)
        if exc.fix:
            print(f"fix: {exc.fix}", file=sys.stderr)
        return 1
    except ImportError as exc:   # identity.method = "tpm" without the TPM stack installed
        print(f"roost provision: {exc}; install python3-tpm2-pytss", file=sys.stderr)
        return 1
    _print(args, {"hub": creds.hostname, "device_id": creds.device_id, "method": creds.source,
                  "gateway": creds.gateway_hostname, "auth": "x509" if creds.x509 else "sas"})
    return 0

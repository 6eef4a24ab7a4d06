"""`roost config check`: read a config file and say, key by key, what is wrong and how to fix it."""

from __future__ import annotations

import argparse
import sys

from agent.config import check_config, default_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("config", help="check the agent's configuration",
                                   description="Work with the agent's configuration file.")
    sub = parser.add_subparsers(dest="config_command", metavar="ACTION")
    check = sub.add_parser("check", help="check a config file; exit 1 when it has errors",
                           description="Check every key of the config file and the files it names "
                                       "(existence, 0600 and ownership of secrets).")
    check.add_argument("--config", metavar="PATH",
                       help="config file (default: $ROOST_CONFIG or /etc/roost/roost.toml)")
    check.set_defaults(func=check_command)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def check_command(args: argparse.Namespace) -> int:
    path = default_path(args.config)
    config, problems = check_config(path)
    errors = [p for p in problems if not p.warning]
    warnings = [p for p in problems if p.warning]
    for problem in errors:
        print(f"error: {problem}")
    for problem in warnings:
        print(f"warning: {problem}")
    if errors or config is None:
        print(f"{path}: {len(errors)} error(s), {len(warnings)} warning(s); the agent will not start with it")
        return 1
    sensors = ", ".join(sorted(config.telemetry.sensors)) or "board defaults"
    ident = config.identity
    via = f" via gateway {config.hub.gateway_hostname}" if config.hub.gateway_hostname else ""
    print(f"{path}: OK{' with ' + str(len(warnings)) + ' warning(s)' if warnings else ''}")
    print(f"  device     board {config.device.board} on platform {config.device.platform}, "
          f"state in {config.device.state_dir}, log level {config.device.log_level}")
    print(f"  identity   {ident.method}" + (f" through DPS {ident.provisioning_host} scope {ident.id_scope}"
                                            if ident.method != "connection-string" else "") + via)
    print(f"  telemetry  every {config.telemetry.interval_s:g} s, batches up to {config.telemetry.batch_max_bytes} "
          f"bytes or {config.telemetry.batch_max_delay_s:g} s, outbox {config.outbox_path} "
          f"(max {config.telemetry.outbox_max_bytes // 1024} KiB); sensors: {sensors}")
    sys.stdout.flush()
    return 0

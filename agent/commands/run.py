"""`roost run`: start the agent daemon in the foreground (systemd runs it as Type=notify)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from agent import logging as agent_logging
from agent.config import ConfigError, default_path, load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("run", help="run the agent (foreground; what the systemd unit starts)",
                                   description="Run the roost agent: sample sensors, keep every reading in the "
                                               "outbox until IoT Hub has it, answer the cloud.")
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $ROOST_CONFIG or /etc/roost/roost.toml)")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"),
                        help="override device.log_level")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent import memory

    memory.skip_charset_detection()   # before the daemon's imports bring in requests
    from agent.daemon import EX_CONFIG, Daemon

    path = default_path(args.config)
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(f"roost: {path} cannot be used:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        print("roost: fix these (roost config check shows them again) and start the agent again", file=sys.stderr)
        return EX_CONFIG
    agent_logging.configure(args.log_level or config.device.log_level)
    return asyncio.run(Daemon(config).run())

"""systemd service integration without libsystemd: sd_notify over $NOTIFY_SOCKET and the watchdog interval.

The protocol is one datagram of ``KEY=VALUE`` lines to a unix socket (an ``@`` prefix means the abstract
namespace). Outside systemd ``$NOTIFY_SOCKET`` is unset and every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send ``READY=1``, ``STATUS=...``, ``WATCHDOG=1``, ``STOPPING=1``...; False when not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode())
        return True
    except OSError as exc:
        # systemd going away must never take the agent with it; the watchdog will say what happened.
        log.warning("cannot notify systemd at %s: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False


def ready(status: str = "") -> bool:
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(text: str) -> bool:
    return notify(f"STATUS={text}")


def stopping(status_text: str = "stopping") -> bool:
    return notify("STOPPING=1", f"STATUS={status_text}")


def watchdog_ping() -> bool:
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between watchdog pings (half of WatchdogSec), or None when systemd does not watch this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not a number of microseconds", usec)
        return None
    return value / 1e6 / 2 if value > 0 else None

"""Helpers shared by every room's tests; importable as ``roost_test_support`` from any test module.

(tests/ has no __init__.py, so pytest puts this directory on sys.path when it loads tests/conftest.py.)
"""

from __future__ import annotations

import contextlib
import fcntl
import http.server
import itertools
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

_counter = itertools.count(1)
# Locks on the addresses this process handed out, held until it exits (the kernel drops them then).
_held: list[int] = []
_LOCK_DIR = Path(tempfile.gettempdir()) / "roost-test-addresses"


def _claim(address: str) -> bool:
    """Take ``address`` for this process unless another pytest process holds it."""
    _LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(_LOCK_DIR / address, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held.append(fd)
    return True


def _address_block() -> int:
    """Second octet of this process's addresses: distinct per xdist worker and per pytest process.

    Two pytest runs at once (two developers' suites, or the 3.11 and 3.13 runs) must not hand out the
    same addresses, so the process id picks the block; the xdist worker number spreads workers apart.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under xdist
    index = int(worker.removeprefix("gw")) if worker.startswith("gw") and worker[2:].isdigit() else 0
    return 20 + (os.getpid() * 7 + index) % 230


def unique_loopback() -> str:
    """A loopback address no other test, xdist worker or concurrent pytest process uses.

    The Azure IoT SDK hard-codes port 8883, so parallel hub emulators cannot share 127.0.0.1;
    each one binds its own 127.x.y.z instead (any 127/8 address works on Linux without setup).
    A free port at this instant is not enough (another process may take it before the test binds),
    so each address is also claimed with a lock file that this process holds until it exits.
    """
    for _ in range(1000):
        n = next(_counter)
        address = f"127.{_address_block()}.{(n // 250) % 250 + 1}.{n % 250 + 1}"
        if not _claim(address):
            continue
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, 8883))
            except OSError:
                continue
        return address
    raise RuntimeError("no free loopback address for port 8883")


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, what: str = "condition", poll_s: float = 0.01) -> T:
    """Poll until ``predicate()`` is truthy and return its value: a deadline against hangs, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}")


@contextlib.contextmanager
def head_server(address: str) -> Iterator[str]:
    """An HTTP server on ``address`` answering HEAD with 200 (its Date header is a clock reference); yields its URL."""

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer((address, 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()

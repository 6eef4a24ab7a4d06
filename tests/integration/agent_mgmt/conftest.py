from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import mgmtrig
from roost_test_support import unique_loopback


@pytest.fixture
def second_loopback(loopback_address) -> str:
    """Another loopback address of this test's own (a gateway beside the hub)."""
    return unique_loopback()


@pytest.fixture
def emu(tmp_path, loopback_address):
    emulator = mgmtrig.start(tmp_path / "emu", loopback_address)
    yield emulator
    emulator.stop()


@pytest.fixture
def time_url(loopback_address):
    """A web server whose Date header is the clock reference (the emulator's HTTPS sends none)."""
    import http.server
    import threading

    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer((loopback_address, 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{loopback_address}:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()

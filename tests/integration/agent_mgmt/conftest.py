from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import mgmtrig
from roost_test_support import head_server, unique_loopback


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
    with head_server(loopback_address) as url:
        yield url

"""Fixtures for the hub emulator's integration tests: one emulator per test on its own loopback address."""

from __future__ import annotations

import hubrig
import pytest


@pytest.fixture
def emu(tmp_path, loopback_address):
    emulator = hubrig.start(tmp_path, loopback_address)
    yield emulator
    emulator.stop()


@pytest.fixture
def ca_pem(emu) -> str:
    return hubrig.root_ca(emu)

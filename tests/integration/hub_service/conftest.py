"""Fixtures for the service API tests: one emulator with its service side per test, on its own address."""

from __future__ import annotations

import pytest
import servicerig


@pytest.fixture
def rig(tmp_path, loopback_address):
    running = servicerig.Rig(tmp_path, loopback_address)
    yield running
    running.stop()


@pytest.fixture
def sdk_trusts_emulator(rig, monkeypatch):
    """The service SDK (msrest over requests) trusts the emulator's root CA, as a user would configure it."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", rig.root_ca)
    return rig

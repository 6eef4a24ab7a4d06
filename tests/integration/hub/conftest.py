"""Fixtures for the hub emulator's integration tests: one emulator per test on its own loopback address."""

from __future__ import annotations

from pathlib import Path

import hubrig
import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_address_allocator(request):
    """Share tests/conftest.py's unique_loopback (and its counter) with hubrig: two copies would hand out the
    same addresses. Every test directory has a module called `conftest`, so it is found by file."""
    root = (Path(str(request.config.rootpath)) / "tests" / "conftest.py").resolve()
    for plugin in request.config.pluginmanager.get_plugins():
        path = getattr(plugin, "__file__", None)
        if path and Path(path).resolve() == root:
            hubrig.set_address_source(plugin.unique_loopback)
            return
    raise RuntimeError(f"{root} is not loaded as a conftest")


@pytest.fixture
def emu(tmp_path, loopback_address):
    emulator = hubrig.start(tmp_path, loopback_address)
    yield emulator
    emulator.stop()


@pytest.fixture
def ca_pem(emu) -> str:
    return hubrig.root_ca(emu)

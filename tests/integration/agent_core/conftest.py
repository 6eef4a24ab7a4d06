from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent_rig import Hub


def _next_loopback() -> str:
    # The suite's root conftest owns address allocation; find it among the loaded modules (it is also "conftest").
    for module in list(sys.modules.values()):
        allocate = getattr(module, "unique_loopback", None)
        if callable(allocate):
            return allocate()
    raise RuntimeError("tests/conftest.py is not loaded")


@pytest.fixture
def hub(loopback_address, tmp_path):
    # Other test processes on this machine probe the same loopback range; if one takes the address between
    # the probe and the bind, the next address is tried.
    address = loopback_address
    for attempt in range(3):
        try:
            rig = Hub(address, tmp_path / f"hub{attempt}")
            break
        except OSError:
            if attempt == 2:
                raise
            address = _next_loopback()
    yield rig
    if rig.thread is not None:
        rig.stop()

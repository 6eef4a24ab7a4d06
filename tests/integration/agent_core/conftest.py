from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from agent_rig import Hub


@pytest.fixture
def hub(loopback_address, tmp_path):
    rig = Hub(loopback_address, tmp_path / "hub")
    yield rig
    if rig.thread is not None:
        rig.stop()

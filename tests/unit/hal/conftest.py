"""HAL unit tests share the runtime-neutral fakes of tests/micropython (the drivers' own test doubles)."""

import sys
from pathlib import Path

_FAKES = str(Path(__file__).resolve().parents[2] / "micropython")
if _FAKES not in sys.path:
    sys.path.insert(0, _FAKES)

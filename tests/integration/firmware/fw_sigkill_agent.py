"""Run one update phase in a real process that SIGKILLs itself before its k-th durable write.

    python fw_sigkill_agent.py CONFIG.toml K install BUNDLE
    python fw_sigkill_agent.py CONFIG.toml K trial

Used by test_fw_sigkill.py to show that the in-process power-cut hook tells the truth about a real kill.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from firmware.config import UpdateConfig
from firmware.engine import UpdateEngine
from firmware.health import HealthChecks


def main() -> int:
    config_path, k, phase = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    count = 0

    def hook(operation: str, target: str) -> None:
        nonlocal count
        count += 1
        if count >= k:
            os.kill(os.getpid(), signal.SIGKILL)

    health = HealthChecks(clock=lambda: 0.0, sleep=lambda s: None)
    health.register("always", lambda: True)
    engine = UpdateEngine(UpdateConfig.load(config_path), write_hook=hook, rebooter=lambda trial: None, health=health)
    if phase == "install":
        engine.install(sys.argv[4])
    else:
        assert engine.boot().action == "health-check"
        engine.run_trial(reboot=False)
    print(f"finished after {count} writes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

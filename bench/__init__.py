"""roost benchmarks. `make bench` (python -m bench) prints one JSON document.

Each bench/bench_<room>.py defines ``run() -> dict`` returning figures. A figure compares roost with a
baseline measured in the same run, so the number that matters is a ratio, not a machine-dependent time:

    {"value": 1234.0, "unit": "reads/s", "baseline": 4100.0, "baseline_name": "raw smbus2 ioctl",
     "ratio": 0.30, "goal": ">= 0.25"}

``figure()`` below builds that shape. Timings never appear in tests; they live here.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def figure(value: float, unit: str, *, baseline: float | None = None, baseline_name: str = "",
           goal: str = "", higher_is_better: bool = True, **extra: object) -> dict:
    """One benchmark figure; ``ratio`` is value/baseline (higher_is_better) or baseline-relative cost."""
    out: dict = {"value": round(value, 4), "unit": unit}
    if baseline is not None:
        out["baseline"] = round(baseline, 4)
        out["baseline_name"] = baseline_name
        out["ratio"] = round(value / baseline, 4) if baseline else None
    if goal:
        out["goal"] = goal
    out.update(extra)
    return out


def rate(func: Callable[[], object], seconds: float = 1.5) -> float:
    """Calls per second of ``func`` over about ``seconds``, best of three rounds (the least disturbed one)."""
    best = 0.0
    for _ in range(3):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds / 3
        while time.perf_counter() < deadline:
            func()
            count += 1
        best = max(best, count / (time.perf_counter() - start))
    return best

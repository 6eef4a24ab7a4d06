"""roost benchmarks. `make bench` (python -m bench) prints one JSON document.

Each bench/bench_<room>.py defines ``run() -> dict`` returning figures. A figure compares roost with a
baseline measured in the same run, so the number that matters is a ratio, not a machine-dependent time:

    {"value": 1234.0, "unit": "reads/s", "baseline": 4100.0, "baseline_name": "raw smbus2 ioctl",
     "ratio": 0.30, "goal": ">= 0.25"}

``figure()`` below builds that shape. Timings never appear in tests; they live here.
"""

from __future__ import annotations


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

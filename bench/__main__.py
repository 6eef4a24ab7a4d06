"""Run every bench/bench_*.py (or those named in $BENCH, comma separated) and print one JSON document."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback

import bench
from agent import __version__


def main() -> int:
    wanted = {n.strip() for n in os.environ.get("BENCH", "").split(",") if n.strip()}
    names = sorted(m.name for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))
    doc: dict = {
        "roost": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "results": {},
    }
    failed = False
    for name in names:
        room = name.removeprefix("bench_")
        if wanted and room not in wanted:
            continue
        print(f"bench: {room} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            doc["results"][room] = importlib.import_module(f"bench.{name}").run()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            doc["results"][room] = {"error": f"{type(exc).__name__}: {exc}"}
            failed = True
        print(f"bench: {room} done in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    json.dump(doc, sys.stdout, indent=2)
    print()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

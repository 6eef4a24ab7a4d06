"""Trial-boot health checks: named probes that must all pass before a deadline.

A probe is a callable returning True/False, or (ok, detail); raising counts as a failure with the exception as
the detail. Probes are polled until all pass or the deadline expires, because some (the hub connection) need a
while after boot. The daemon registers its own ("hub-connected"); applications add theirs the same way.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

ProbeResult = bool | tuple[bool, str]
Probe = Callable[[], ProbeResult]


@dataclass
class HealthReport:
    ok: bool
    results: dict[str, tuple[bool, str]] = field(default_factory=dict)
    rounds: int = 0

    def failures(self) -> str:
        return "; ".join(f"{name}: {detail or 'failed'}" for name, (ok, detail) in self.results.items() if not ok)


class HealthChecks:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._probes: dict[str, Probe] = {}
        self.clock = clock
        self.sleep = sleep

    def register(self, name: str, probe: Probe) -> None:
        if name in self._probes:
            raise ValueError(f"a health probe named {name!r} is already registered")
        self._probes[name] = probe

    def unregister(self, name: str) -> None:
        self._probes.pop(name, None)

    @property
    def names(self) -> list[str]:
        return list(self._probes)

    def run_once(self) -> HealthReport:
        results = {}
        for name, probe in self._probes.items():
            try:
                outcome = probe()
            except Exception as exc:  # a crashing probe is a failing probe, not a crashing agent
                outcome = (False, f"{type(exc).__name__}: {exc}")
            ok, detail = outcome if isinstance(outcome, tuple) else (bool(outcome), "")
            results[name] = (bool(ok), detail)
        return HealthReport(all(ok for ok, _ in results.values()), results, 1)

    def run(self, deadline: float, interval: float = 2.0) -> HealthReport:
        """Poll every probe until all pass (ok) or ``deadline`` seconds have passed (not ok)."""
        end = self.clock() + deadline
        rounds = 0
        while True:
            report = self.run_once()
            rounds += 1
            report.rounds = rounds
            if report.ok or self.clock() + interval > end:
                return report
            self.sleep(interval)


def services_probe(units: Sequence[str], systemctl: Sequence[str] = ("systemctl",)) -> Probe:
    """A probe that passes when every systemd unit in ``units`` is active."""

    def probe() -> ProbeResult:
        down = []
        for unit in units:
            done = subprocess.run([*systemctl, "is-active", "--quiet", unit], check=False, timeout=30)
            if done.returncode != 0:
                down.append(unit)
        return (not down, f"inactive: {', '.join(down)}" if down else "")

    return probe

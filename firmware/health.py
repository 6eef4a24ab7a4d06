"""Trial-boot health checks: named probes that must all pass before a deadline.

A probe is a callable returning True/False, or (ok, detail); raising counts as a failure with the exception as
the detail. Probes are polled until all pass or the deadline expires, because some (the hub connection) need a
while after boot. The daemon registers its own ("hub-connected"); applications add theirs the same way.
"""

from __future__ import annotations

import inspect
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

ProbeResult = bool | tuple[bool, str]
Probe = Callable[[], ProbeResult | Awaitable[ProbeResult]]   # async probes only work with arun()


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
                if inspect.isawaitable(outcome):
                    close = getattr(outcome, "close", None)
                    if close:
                        close()
                    outcome = (False, "async probe: run the checks with arun() from the event loop")
            except Exception as exc:  # a crashing probe is a failing probe, not a crashing agent
                outcome = (False, f"{type(exc).__name__}: {exc}")
            results[name] = _verdict(outcome)
        return HealthReport(all(ok for ok, _ in results.values()), results, 1)

    async def arun_once(self) -> HealthReport:
        results = {}
        for name, probe in self._probes.items():
            try:
                outcome = probe()
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except Exception as exc:
                outcome = (False, f"{type(exc).__name__}: {exc}")
            results[name] = _verdict(outcome)
        return HealthReport(all(ok for ok, _ in results.values()), results, 1)

    async def arun(self, deadline: float, interval: float = 2.0) -> HealthReport:
        """run() for the agent's event loop: probes may be coroutines, waiting does not block the loop."""
        import asyncio  # here, not at the top: the install process never needs it (about 2 MB resident)

        end = self.clock() + deadline
        rounds = 0
        while True:
            report = await self.arun_once()
            rounds += 1
            report.rounds = rounds
            if report.ok or self.clock() + interval > end:
                return report
            await asyncio.sleep(interval)

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


def _verdict(outcome: object) -> tuple[bool, str]:
    if isinstance(outcome, tuple):
        return bool(outcome[0]), str(outcome[1]) if len(outcome) > 1 else ""
    return bool(outcome), ""


def connected_probe(uplink: object, what: str = "IoT Hub") -> Probe:
    """A probe that passes while ``uplink.connected`` is true (the agent's hub connection)."""

    def probe() -> ProbeResult:
        connected = bool(getattr(uplink, "connected", False))
        return (connected, "" if connected else f"not connected to {what}")

    return probe


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

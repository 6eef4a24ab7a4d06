"""Device health: what is measured, how it is reported, and the rules that raise alerts.

Metrics come from the kernel's own files (``/proc``, ``/sys``) under a root directory that tests can point
elsewhere, plus the outbox counters and the last error the agent logged. Rules are thresholds on metrics:
the ``[health]`` config gives the defaults, the twin's ``healthRules`` adds, changes or removes rules by name.
An alert event is emitted when a rule starts to hold and a ``cleared`` event when it stops, never on every
sample, so a hot device does not flood the outbox.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METRICS = ("cpuTemperature", "load1", "load5", "load15", "memoryUsedPercent", "memoryAvailableMb",
           "diskFreeMb", "diskUsedPercent", "uptime", "outboxDepth", "outboxFill", "agentRssMb",
           "offlineSeconds")

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b,
}


def default_rules(health_config: Any) -> dict[str, dict]:
    """The rules the ``[health]`` section implies; the twin's healthRules are layered on top by name."""
    return {
        "cpuTemperatureHigh": {"metric": "cpuTemperature", "op": ">", "threshold": health_config.cpu_temp_max_c,
                               "severity": "warning"},
        "diskFreeLow": {"metric": "diskFreeMb", "op": "<", "threshold": health_config.disk_free_min_mb,
                        "severity": "critical"},
        "memoryHigh": {"metric": "agentRssMb", "op": ">", "threshold": health_config.memory_max_mb,
                       "severity": "warning"},
        "outboxFull": {"metric": "outboxFill", "op": ">", "threshold": health_config.outbox_fill_max,
                       "severity": "warning"},
        "offlineLong": {"metric": "offlineSeconds", "op": ">", "threshold": health_config.offline_max_s,
                        "severity": "warning"},
    }


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


@dataclass
class SystemProbe:
    """Reads health figures from a Linux file system rooted at ``root`` (``/`` on a device)."""

    root: Path = Path("/")
    disk_path: Path = Path("/")

    def cpu_temperature(self) -> float | None:
        # thermal_zone0 is the SoC on every Raspberry Pi; millidegrees Celsius.
        text = _read(self.root / "sys/class/thermal/thermal_zone0/temp")
        try:
            return round(int(text.strip()) / 1000.0, 1) if text else None
        except ValueError:
            return None

    def load(self) -> tuple[float, float, float] | None:
        text = _read(self.root / "proc/loadavg")
        try:
            a, b, c = (float(x) for x in text.split()[:3]) if text else (None, None, None)
        except ValueError:
            return None
        return None if a is None else (a, b, c)

    def memory(self) -> tuple[float, float] | None:
        """(used percent, available MB) from /proc/meminfo."""
        text = _read(self.root / "proc/meminfo")
        if not text:
            return None
        info = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                info[key] = int(parts[0])   # kB
        total, available = info.get("MemTotal"), info.get("MemAvailable")
        if not total or available is None:
            return None
        return round(100.0 * (total - available) / total, 1), round(available / 1024.0, 1)

    def uptime(self) -> float | None:
        text = _read(self.root / "proc/uptime")
        try:
            return float(text.split()[0]) if text else None
        except (ValueError, IndexError):
            return None

    def disk(self) -> tuple[float, float] | None:
        """(free MB, used percent) of the file system holding the state directory."""
        # shutil.disk_usage's own arithmetic; statvfs directly, since shutil is not otherwise loaded at run time.
        try:
            fs = os.statvfs(self.disk_path)
        except OSError:
            return None
        total, free = fs.f_blocks * fs.f_frsize, fs.f_bavail * fs.f_frsize
        used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        return round(free / 2**20, 1), round(100.0 * used / total, 1) if total else 0.0

    def agent_rss_mb(self) -> float:
        status = _read(self.root / "proc/self/status") or ""
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def collect(probe: SystemProbe, outbox: Mapping[str, Any], outbox_max_bytes: int, offline_s: float,
            last_error: str | None) -> dict[str, Any]:
    """One health sample: every metric (None when the platform cannot tell) plus ``lastError``."""
    sample: dict[str, Any] = dict.fromkeys(METRICS)
    sample["cpuTemperature"] = probe.cpu_temperature()
    load = probe.load()
    if load:
        sample["load1"], sample["load5"], sample["load15"] = load
    memory = probe.memory()
    if memory:
        sample["memoryUsedPercent"], sample["memoryAvailableMb"] = memory
    disk = probe.disk()
    if disk:
        sample["diskFreeMb"], sample["diskUsedPercent"] = disk
    sample["uptime"] = probe.uptime()
    sample["agentRssMb"] = probe.agent_rss_mb()
    depth = outbox.get("depth")
    sample["outboxDepth"] = depth if isinstance(depth, (int, float)) else None
    used = outbox.get("bytes")
    if isinstance(used, (int, float)) and outbox_max_bytes:
        sample["outboxFill"] = round(used / outbox_max_bytes, 4)
    sample["offlineSeconds"] = round(offline_s, 1)
    sample["lastError"] = last_error
    return sample


@dataclass
class RuleEngine:
    """Edge-triggered threshold rules over health samples."""

    rules: dict[str, dict] = field(default_factory=dict)
    active: dict[str, float] = field(default_factory=dict)   # rule name -> value when raised

    def set_rules(self, rules: Mapping[str, dict]) -> None:
        self.rules = dict(rules)
        # A removed or changed rule must be able to raise again from a clean state.
        self.active = {k: v for k, v in self.active.items() if k in self.rules}

    def evaluate(self, sample: Mapping[str, Any]) -> list[dict]:
        """Alerts for rules that started or stopped holding in this sample."""
        events = []
        for name, rule in sorted(self.rules.items()):
            value = sample.get(rule["metric"])
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            holds = _OPS[rule["op"]](value, rule["threshold"])
            if holds and name not in self.active:
                self.active[name] = value
                events.append(_alert(name, rule, value, "raised"))
            elif not holds and name in self.active:
                del self.active[name]
                events.append(_alert(name, rule, value, "cleared"))
        return events


def _alert(name: str, rule: Mapping[str, Any], value: float, state: str) -> dict:
    return {"alert": {"rule": name, "state": state, "metric": rule["metric"], "value": value, "op": rule["op"],
                      "threshold": rule["threshold"], "severity": rule["severity"]}}


class HealthMonitor:
    """Samples health, applies the rules in force, and knows how often to report."""

    def __init__(self, health_config: Any, probe: SystemProbe) -> None:
        self.config = health_config
        self.probe = probe
        self.interval_s: float = float(health_config.interval_s)
        self._overrides: dict[str, dict] = {}     # rules set from the twin; None values remove a default
        self._removed: set[str] = set()
        self.engine = RuleEngine(default_rules(health_config))

    def set_interval(self, interval_s: float | None) -> None:
        self.interval_s = float(self.config.interval_s if interval_s is None else interval_s)

    def update_rules(self, rules: Mapping[str, dict | None] | None) -> None:
        """Merge twin rules by name (None deletes one); ``rules=None`` goes back to the configured defaults."""
        if rules is None:
            self._overrides, self._removed = {}, set()
        else:
            for name, rule in rules.items():
                if rule is None:
                    self._overrides.pop(name, None)
                    self._removed.add(name)
                else:
                    self._overrides[name] = rule
                    self._removed.discard(name)
        merged = {**default_rules(self.config), **self._overrides}
        self.engine.set_rules({k: r for k, r in merged.items() if k not in self._removed})

    def rules_value(self) -> dict[str, dict]:
        return dict(sorted(self.engine.rules.items()))

    def sample(self, outbox: Mapping[str, Any], outbox_max_bytes: int, offline_s: float,
               last_error: str | None) -> tuple[dict, list[dict]]:
        sample = collect(self.probe, outbox, outbox_max_bytes, offline_s, last_error)
        return sample, self.engine.evaluate(sample)

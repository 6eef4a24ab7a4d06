"""Per-sensor filters between the sampler and the outbox: windowed aggregation, deadband, rate limit.

A chain is built from one sensor's settings and applied in that order: aggregate first (so deadband and rate
limit judge the window's summary, not raw noise), then deadband, then rate limit. Error readings are never
aggregated or deadbanded away — a sensor going bad is news — but they are rate limited like any other reading.
Time comes from the samples' own timestamps, so the filters are deterministic under test clocks.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field, replace
from typing import Any

from agent.config import SensorSettings


@dataclass(frozen=True)
class Sample:
    """One reading as the agent sends it: sensor id, time, values with units, and its quality."""

    sensor_id: str
    timestamp: float                                   # unix seconds
    values: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    error: str | None = None                           # what went wrong, for quality "error"
    error_kind: str | None = None                      # "nack", "crc", "timeout", ...
    driver: str = ""
    aggregate: dict[str, Any] | None = None            # {"window_s", "count", "min": {...}, "max": {...}}

    @property
    def quality(self) -> str:
        return "error" if self.error else "good"

    def to_json(self) -> str:
        """Compact JSON for the outbox.

        The sensor id and units are stored beside it and sent once per sensor per batch; quality "good" is
        implied by the absence of an error; values keep 7 significant digits (beyond what any supported sensor
        resolves). All so that a batch carries more readings per billed 4 KB.
        """
        body: dict[str, Any] = {"ts": round(self.timestamp, 3)}
        if self.values:
            body["values"] = {k: _significant(v) for k, v in self.values.items()}
        if self.error:
            body["q"] = "error"
            body["error"] = self.error
            if self.error_kind:
                body["error_kind"] = self.error_kind
        if self.aggregate:
            agg = dict(self.aggregate)
            for key in ("min", "max"):
                agg[key] = {k: _significant(v) for k, v in agg[key].items()}
            body["agg"] = agg
        return json.dumps(body, separators=(",", ":"), allow_nan=False)

    def units_json(self) -> str | None:
        # A sensor reports the same units every time: serialise each distinct set once.
        return _units_text(tuple(self.units.items())) if self.units else None


@functools.lru_cache(maxsize=256)
def _units_text(units: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(dict(units), separators=(",", ":"), sort_keys=True)


def _significant(value: float) -> float | int:
    rounded = float(f"{value:.7g}")
    return int(rounded) if rounded.is_integer() and abs(rounded) < 1e15 else rounded


def from_reading(reading: Any) -> Sample:
    """A Sample from a hal Reading (sensor_id, driver, chip, values, units, timestamp, error, error_kind)."""
    values = {k: float(v) for k, v in (reading.values or {}).items()
              if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    error = reading.error
    if error is None and len(values) != len(reading.values or {}):
        error, kind = "reading held a value that is not a finite number", "invalid"
    else:
        kind = getattr(reading, "error_kind", None)
    return Sample(sensor_id=reading.sensor_id, timestamp=float(reading.timestamp), values=values,
                  units=dict(reading.units or {}), error=str(error) if error else None, error_kind=kind,
                  driver=getattr(reading, "driver", "") or "")


class Window:
    """Aggregates good samples into min/mean/max/count over consecutive windows of ``window_s`` seconds."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._start: float | None = None
        self._samples: list[Sample] = []

    def push(self, sample: Sample) -> list[Sample]:
        out = self.flush(sample.timestamp)
        if self._start is None:
            # Windows are aligned to multiples of window_s so every device reports the same boundaries.
            self._start = math.floor(sample.timestamp / self.window_s) * self.window_s
        self._samples.append(sample)
        return out

    def flush(self, now: float | None = None) -> list[Sample]:
        """The finished window's aggregate (all of it when ``now`` is None, e.g. at shutdown)."""
        if self._start is None or not self._samples:
            return []
        if now is not None and now < self._start + self.window_s:
            return []
        samples, start = self._samples, self._start
        self._samples, self._start = [], None
        return [_aggregate(samples, start, self.window_s)]


def _aggregate(samples: list[Sample], start: float, window_s: float) -> Sample:
    keys = sorted({k for s in samples for k in s.values})
    lo, hi, mean = {}, {}, {}
    for key in keys:
        series = [s.values[key] for s in samples if key in s.values]
        lo[key], hi[key] = min(series), max(series)
        # Rounding can put the mean of equal values a hair outside them; a mean is never outside min..max.
        mean[key] = min(max(math.fsum(series) / len(series), lo[key]), hi[key])
    last = samples[-1]
    return replace(last, timestamp=start + window_s, values=mean,
                   aggregate={"window_s": window_s, "start": start, "count": len(samples), "min": lo, "max": hi})


class Deadband:
    """Passes a good sample only when some value moved more than ``threshold`` from the last one passed."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self._last: dict[str, float] | None = None

    def push(self, sample: Sample) -> bool:
        if sample.error:
            self._last = None   # after a fault, the first good reading always goes out
            return True
        last = self._last
        if last is None or last.keys() != sample.values.keys() or any(
                abs(v - last[k]) > self.threshold for k, v in sample.values.items()):
            self._last = dict(sample.values)
            return True
        return False


class RateLimit:
    """Passes at most one sample per ``min_interval_s`` seconds of sample time."""

    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self._last: float | None = None

    def push(self, sample: Sample) -> bool:
        # A clock stepping backwards (NTP at boot) must not silence a sensor until it catches up again.
        if self._last is None or sample.timestamp - self._last >= self.min_interval_s \
                or sample.timestamp < self._last:
            self._last = sample.timestamp
            return True
        return False


class FilterChain:
    """The filters of one sensor, built from its SensorSettings; counts what each filter held back."""

    def __init__(self, settings: SensorSettings) -> None:
        self.settings = settings
        self.window = Window(settings.window_s) if settings.window_s > 0 else None
        self.deadband = Deadband(settings.deadband) if settings.deadband > 0 else None
        self.rate_limit = RateLimit(settings.rate_limit_s) if settings.rate_limit_s > 0 else None
        self.counters = {"in": 0, "out": 0, "deadband": 0, "rate_limit": 0, "aggregated": 0}

    def push(self, sample: Sample) -> list[Sample]:
        """Feed one sample; returns the samples to store now (zero, one, or a finished window and an error)."""
        self.counters["in"] += 1
        if self.window is not None and not sample.error:
            self.counters["aggregated"] += 1
            return self._after_window(self.window.push(sample))
        return self._after_window([sample])

    def flush(self, now: float | None = None) -> list[Sample]:
        """Close a window whose time is up (``now``), or any open window (None, at shutdown)."""
        if self.window is None:
            return []
        return self._after_window(self.window.flush(now))

    def _after_window(self, samples: list[Sample]) -> list[Sample]:
        out = []
        for sample in samples:
            if self.deadband is not None and not self.deadband.push(sample):
                self.counters["deadband"] += 1
                continue
            if self.rate_limit is not None and not self.rate_limit.push(sample):
                self.counters["rate_limit"] += 1
                continue
            out.append(sample)
        self.counters["out"] += len(out)
        return out

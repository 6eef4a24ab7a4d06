"""Plausible physical signals for the sensor models: a base value, slow seeded drift and noise.

Drift is a deterministic function of emulated time (two slow sines with seeded phases), so a test that
holds the clock sees a fixed value and one that advances it sees the same curve on every run. Noise comes
from a seeded generator. ``hold()`` pins a signal to an exact value for tests that check arithmetic.
"""

from __future__ import annotations

import math
import random
import threading
from dataclasses import dataclass


@dataclass
class Signal:
    """``value(t) = base + drift(t) + noise``, clamped to ``[low, high]``."""

    base: float
    drift: float = 0.0  # amplitude of the slow wander, in the signal's unit
    period_s: float = 600.0
    noise: float = 0.0  # standard deviation of the per-sample noise
    low: float = -math.inf
    high: float = math.inf
    seed: int = 0

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        phases = random.Random(self.seed ^ 0x5EED)
        self._phase1 = phases.uniform(0, 2 * math.pi)
        self._phase2 = phases.uniform(0, 2 * math.pi)
        self._held: float | None = None
        self._lock = threading.Lock()

    def hold(self, value: float | None) -> None:
        """Pin the signal to ``value`` exactly (no drift, no noise); ``None`` lets it wander again."""
        self._held = value

    @property
    def held(self) -> float | None:
        return self._held

    def value(self, t: float) -> float:
        if self._held is not None:
            return self._held
        v = self.base
        if self.drift:
            w = 2 * math.pi * t / self.period_s
            v += self.drift * (0.75 * math.sin(w + self._phase1) + 0.25 * math.sin(3.7 * w + self._phase2))
        if self.noise:
            with self._lock:  # random.Random is not safe to share between threads mid-call
                v += self._rng.gauss(0.0, self.noise)
        return min(self.high, max(self.low, v))


class Environment:
    """The air and light around the emulated board; every model samples the same one, so the
    BME280 and the SHT4x agree within their own offsets, as two real sensors side by side do."""

    def __init__(self, seed: int = 0, *, quiet: bool = False) -> None:
        self.seed = seed
        self.quiet = quiet

        def s(base, drift, period, noise, low, high, salt):
            return Signal(base, 0 if quiet else drift, period, 0 if quiet else noise, low, high, seed * 7919 + salt)

        self.temperature_c = s(21.5, 1.5, 900.0, 0.02, -40.0, 85.0, 1)
        self.humidity_rh = s(45.0, 6.0, 1300.0, 0.1, 0.0, 100.0, 2)
        self.pressure_pa = s(101_325.0, 120.0, 3600.0, 1.5, 30_000.0, 110_000.0, 3)
        self.pm2_5_ugm3 = s(12.0, 8.0, 500.0, 1.0, 0.0, 999.0, 4)
        self.light = s(0.6, 0.3, 700.0, 0.005, 0.0, 1.0, 5)  # 0..1 of full scale, for an LDR divider

    def signals(self) -> dict[str, Signal]:
        return {k: v for k, v in vars(self).items() if isinstance(v, Signal)}

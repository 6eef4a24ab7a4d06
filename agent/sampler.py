"""The sampler: one task per sensor reads it at its interval, runs its filters, and hands results to a sink.

Sensor reads are blocking bus I/O (I2C ioctls, UART reads with their own deadlines), so each runs in a worker
thread under a deadline: a wedged bus turns into an error reading for that sensor, never a stalled agent.
Schedules are drift-free (tick k is at start + k * interval); a tick missed because a read was slow is
skipped, not made up in a burst.

The sampler is also the agent's SensorControl (agent.context): twin configuration and methods change a
sensor's settings live through ``apply``, which validates first and changes nothing on error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from agent.config import Config, ConfigError, SensorSettings, parse_sensor_settings
from agent.filters import FilterChain, Sample, from_reading

log = logging.getLogger(__name__)

Sink = Callable[[list[Sample]], Awaitable[None]]


class SensorLike(Protocol):
    """What the sampler needs of a sensor (hal.sensors.Sensor is one): an id and a read() that contains faults."""

    id: str

    def read(self) -> Any: ...


class Sampler:
    """Samples every enabled sensor at its interval through its filters into ``sink``."""

    def __init__(self, sensors: Sequence[SensorLike], config: Config, sink: Sink, *,
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic,
                 read_timeout_s: float = 10.0) -> None:
        self._sensors = {s.id: s for s in sensors}
        self._settings: dict[str, SensorSettings] = {sid: config.sensor(sid) for sid in self._sensors}
        self._default_interval = config.telemetry.interval_s
        self._chains = {sid: FilterChain(st) for sid, st in self._settings.items()}
        self._changed = {sid: asyncio.Event() for sid in self._sensors}
        self._sink = sink
        self._clock = clock
        self._monotonic = monotonic
        self._read_timeout_s = read_timeout_s
        self._stopping = asyncio.Event()
        # One thread per sensor: a slow UART read never delays an I2C sensor, and close() can wait for all.
        self._executor = ThreadPoolExecutor(max_workers=max(1, len(self._sensors)), thread_name_prefix="roost-read")
        self.reads = dict.fromkeys(self._sensors, 0)
        unknown = sorted(set(config.telemetry.sensors) - set(self._sensors))
        if unknown:
            log.warning("config has settings for sensors this board does not have: %s (known: %s)",
                        ", ".join(unknown), ", ".join(sorted(self._sensors)) or "none")

    # ---- SensorControl ---------------------------------------------------------------------------------------

    def sensor_ids(self) -> list[str]:
        return sorted(self._sensors)

    def settings(self) -> dict[str, dict]:
        return {sid: dataclasses.asdict(st) for sid, st in sorted(self._settings.items())}

    def apply(self, sensor_id: str, settings: dict) -> None:
        """Change one sensor's settings now; ValueError (ConfigError) with the reason, and no change, if bad."""
        if sensor_id not in self._sensors:
            raise ValueError(f"no sensor {sensor_id!r}; this device has {', '.join(self.sensor_ids()) or 'none'}")
        try:
            new = parse_sensor_settings(settings, self._settings[sensor_id], f"sensors.{sensor_id}")
        except ConfigError as exc:
            raise ValueError("; ".join(str(p) for p in exc.problems)) from None
        if new.interval_s <= 0:
            new = dataclasses.replace(new, interval_s=self._default_interval)
        self._settings[sensor_id] = new
        self._chains[sensor_id] = FilterChain(new)
        self._changed[sensor_id].set()
        log.info("sensor %s settings: %s", sensor_id, dataclasses.asdict(new))

    # ---- running ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._sample_forever(sid), name=f"roost-sample-{sid}") for sid in self._sensors]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        self._stopping.set()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Wait (bounded) for reads still running in their threads, so the buses can be closed under nobody."""
        done = asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        try:
            await asyncio.wait_for(done, timeout_s)
        except TimeoutError:
            log.warning("a sensor read did not finish within %.0f s of shutdown", timeout_s)

    async def flush(self) -> None:
        """Close every open aggregation window into the sink (at shutdown, so no reading is left in memory)."""
        out: list[Sample] = []
        for chain in self._chains.values():
            out += chain.flush(None)
        if out:
            await self._sink(out)

    async def sample_once(self, sensor_id: str) -> list[Sample]:
        """Read one sensor now, filter, and sink the result; returns what went to the sink."""
        sensor = self._sensors[sensor_id]
        try:
            read = asyncio.get_running_loop().run_in_executor(self._executor, sensor.read)
            reading = await asyncio.wait_for(read, self._read_timeout_s)
            sample = from_reading(reading)
        except TimeoutError:
            sample = Sample(sensor_id, self._clock(), error=f"read took longer than {self._read_timeout_s:g} s",
                            error_kind="timeout")
        except Exception as exc:   # hal sensors contain their faults; anything else is reported the same way
            sample = Sample(sensor_id, self._clock(), error=f"{type(exc).__name__}: {exc}", error_kind="internal")
        self.reads[sensor_id] += 1
        chain = self._chains[sensor_id]
        out = chain.flush(sample.timestamp) + chain.push(sample)
        if out:
            await self._sink(out)
        return out

    async def _sample_forever(self, sensor_id: str) -> None:
        changed = self._changed[sensor_id]
        while not self._stopping.is_set():
            settings = self._settings[sensor_id]
            if not settings.enabled:
                changed.clear()
                await _wait_first(changed, self._stopping)
                continue
            changed.clear()
            start = self._monotonic()
            tick = 0
            while not self._stopping.is_set() and not changed.is_set():
                await self.sample_once(sensor_id)
                now = self._monotonic()
                tick, due = next_tick(start, tick, settings.interval_s, now)
                await _wait_first(changed, self._stopping, timeout=due - now)


def next_tick(start: float, tick: int, interval_s: float, now: float) -> tuple[int, float]:
    """The next tick after ``tick`` and when it is due: start + k * interval, skipping ticks already past."""
    tick += 1
    due = start + tick * interval_s
    if due < now:   # the read overran its slot: skip to the next future tick instead of bursting
        tick += int((now - due) // interval_s) + 1
        due = start + tick * interval_s
    return tick, due


async def _wait_first(*events: asyncio.Event, timeout: float | None = None) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=None if timeout is None else max(0.0, timeout),
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()

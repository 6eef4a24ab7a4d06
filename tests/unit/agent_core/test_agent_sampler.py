"""agent.sampler: reads at the interval through the filters; live settings; faults become error readings."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest

from agent.config import parse_config
from agent.sampler import Sampler, next_tick


class Counter:
    def __init__(self, sensor_id="t1", fail_at=(), hang: threading.Event | None = None):
        self.id = sensor_id
        self.n = 0
        self.fail_at = set(fail_at)
        self.hang = hang

    def read(self):
        self.n += 1
        if self.hang is not None:
            self.hang.wait(5)
        if self.n in self.fail_at:
            raise OSError(121, "Remote I/O error")
        return SimpleNamespace(sensor_id=self.id, driver="counter", values={"v": float(self.n)}, units={"v": "1"},
                               timestamp=1000.0 + self.n, error=None, error_kind=None)


def config(**sensors):
    cfg, problems = parse_config({"identity": {"method": "connection-string", "connection_string_file": "cs"},
                                  "telemetry": {"interval_s": 0.01, "sensors": sensors}})
    assert cfg is not None, problems
    return cfg


class Sink:
    def __init__(self):
        self.samples = []

    async def __call__(self, samples):
        self.samples += samples


def test_sample_once_filters_and_sinks():
    async def main():
        sink = Sink()
        sampler = Sampler([Counter()], config(t1={"rate_limit_s": 2}), sink)
        for _ in range(5):
            await sampler.sample_once("t1")
        return sink.samples

    samples = asyncio.run(main())
    assert [s.values["v"] for s in samples] == [1.0, 3.0, 5.0]


def test_an_exception_from_a_sensor_becomes_an_error_reading():
    async def main():
        sink = Sink()
        sampler = Sampler([Counter(fail_at={2})], config(), sink)
        for _ in range(3):
            await sampler.sample_once("t1")
        return sink.samples

    samples = asyncio.run(main())
    assert [s.quality for s in samples] == ["good", "error", "good"]
    assert "Remote I/O error" in samples[1].error


def test_a_hung_read_times_out_without_stalling_the_others():
    release = threading.Event()

    async def main():
        sink = Sink()
        sampler = Sampler([Counter("slow", hang=release), Counter("fast")], config(), sink, read_timeout_s=0.2)
        slow = asyncio.create_task(sampler.sample_once("slow"))
        await sampler.sample_once("fast")
        result = await slow
        release.set()
        await sampler.close()
        return sink.samples, result

    samples, slow = asyncio.run(main())
    assert slow[0].error_kind == "timeout"
    assert {s.sensor_id for s in samples} == {"slow", "fast"}


def test_run_samples_every_sensor_until_stopped_and_skips_disabled_ones():
    async def main():
        sink = Sink()
        a, b = Counter("a"), Counter("b")
        sampler = Sampler([a, b], config(b={"enabled": False}), sink)
        task = asyncio.create_task(sampler.run())
        async with asyncio.timeout(10):
            while a.n < 5:
                await asyncio.sleep(0.01)
        sampler.apply("b", {"enabled": True, "interval_s": 0.01})
        async with asyncio.timeout(10):
            while b.n < 3:
                await asyncio.sleep(0.01)
        sampler.stop()
        await task
        await sampler.close()
        return a.n, b.n

    a_reads, b_reads = asyncio.run(main())
    assert a_reads >= 5 and b_reads >= 3


def test_apply_validates_and_changes_nothing_on_error():
    sampler = Sampler([Counter()], config(t1={"interval_s": 5}), Sink())
    before = sampler.settings()
    with pytest.raises(ValueError, match="interval_s"):
        sampler.apply("t1", {"interval_s": "fast", "deadband": 1})
    with pytest.raises(ValueError, match="no sensor 'nope'"):
        sampler.apply("nope", {"deadband": 1})
    assert sampler.settings() == before
    sampler.apply("t1", {"deadband": 0.5})
    assert sampler.settings()["t1"] == {"enabled": True, "interval_s": 5.0, "deadband": 0.5,
                                        "rate_limit_s": 0.0, "window_s": 0.0}


def test_flush_closes_open_windows():
    async def main():
        sink = Sink()
        sampler = Sampler([Counter()], config(t1={"window_s": 3600}), sink)
        for _ in range(3):
            await sampler.sample_once("t1")
        assert sink.samples == []
        await sampler.flush()
        return sink.samples

    (aggregate,) = asyncio.run(main())
    assert aggregate.aggregate["count"] == 3 and aggregate.values == {"v": 2.0}


@pytest.mark.parametrize("tick, now, expected", [
    (0, 0.3, (1, 10.0)),       # on time: the next slot
    (5, 50.2, (6, 60.0)),      # a read took 0.2 s: still the same grid, no drift
    (6, 60.0, (7, 70.0)),
    (1, 35.0, (4, 40.0)),      # a read overran three slots: skip them, do not burst
])
def test_ticks_stay_on_the_grid(tick, now, expected):
    assert next_tick(0.0, tick, 10.0, now) == expected


def test_ticks_never_fall_behind():
    due = 0.0
    tick = 0
    for now in [0.5, 12.0, 13.0, 49.9, 50.0, 51.0]:
        tick, due = next_tick(0.0, tick, 10.0, now)
        assert due > now or due == now == 50.0
        assert due == tick * 10.0

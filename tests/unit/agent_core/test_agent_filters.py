"""agent.filters: windowed aggregation, deadband and rate limit on sample time."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config import SensorSettings
from agent.filters import Deadband, FilterChain, RateLimit, Sample, Window, from_reading


def s(t: float, **values: float) -> Sample:
    return Sample("t1", t, values=values, units={k: "C" for k in values})


def err(t: float) -> Sample:
    return Sample("t1", t, error="OSError: [Errno 121] NACK", error_kind="nack")


def test_deadband_passes_only_moves_beyond_the_threshold():
    band = Deadband(0.5)
    passed = [band.push(s(i, temp=v)) for i, v in enumerate([20.0, 20.3, 20.5, 20.6, 19.9, 19.95])]
    assert passed == [True, False, False, True, True, False]


def test_deadband_lets_errors_and_the_first_good_reading_after_them_through():
    band = Deadband(1.0)
    assert [band.push(x) for x in (s(0, temp=20), err(1), s(2, temp=20.1), s(3, temp=20.2))] == \
        [True, True, True, False]


def test_rate_limit_uses_sample_time_and_survives_clock_steps_back():
    limit = RateLimit(10)
    times = [0, 3, 9.99, 10, 15, 25, 5, 6]
    assert [limit.push(s(t, temp=1)) for t in times] == [True, False, False, True, False, True, True, False]


def test_window_aggregates_min_mean_max_count_on_aligned_boundaries():
    window = Window(60)
    out = []
    for t, v in [(61, 1.0), (70, 3.0), (119, 2.0), (120, 10.0), (185, 5.0)]:
        out += window.push(s(t, temp=v))
    assert len(out) == 2
    first, second = out
    assert first.aggregate == {"window_s": 60, "start": 60, "count": 3, "min": {"temp": 1.0}, "max": {"temp": 3.0}}
    assert first.values == {"temp": 2.0} and first.timestamp == 120
    assert second.aggregate["count"] == 1 and second.values == {"temp": 10.0}
    assert window.flush(None)[0].values == {"temp": 5.0}
    assert window.flush(None) == []


def test_chain_order_and_counters():
    chain = FilterChain(SensorSettings(window_s=10, deadband=0.5, rate_limit_s=30))
    out = []
    for t in range(0, 100):
        out += chain.push(s(t, temp=20.0 + (t // 10)))   # steps of 1.0 every window
    # one aggregate per 10 s window, rate limited to one per 30 s
    assert [o.timestamp for o in out] == [10, 40, 70]
    assert chain.counters["in"] == 100 and chain.counters["out"] == 3
    assert chain.counters["rate_limit"] == 6


def test_errors_bypass_the_window():
    chain = FilterChain(SensorSettings(window_s=60))
    assert chain.push(s(1, temp=1)) == []
    out = chain.push(err(2))
    assert len(out) == 1 and out[0].quality == "error"


def test_sample_json_is_compact_and_complete():
    sample = Sample("t1", 1.23456, values={"temp": 20.5, "p": 101267.9296875, "n": 3.0}, units={"temp": "C"})
    body = json.loads(sample.to_json())
    assert body == {"ts": 1.235, "values": {"temp": 20.5, "p": 101267.9, "n": 3}}
    assert json.loads(sample.units_json()) == {"temp": "C"}
    body = json.loads(err(2).to_json())
    assert body["q"] == "error" and body["error_kind"] == "nack" and "values" not in body


def test_from_reading_rejects_non_finite_values():
    reading = SimpleNamespace(sensor_id="x", driver="bme280", values={"t": float("nan")}, units={"t": "C"},
                              timestamp=5.0, error=None, error_kind=None)
    sample = from_reading(reading)
    assert sample.quality == "error" and sample.error_kind == "invalid" and sample.values == {}
    sample.to_json()   # must stay valid JSON


@given(st.lists(st.floats(min_value=-1e6, max_value=1e6), min_size=1, max_size=50),
       st.floats(min_value=0.01, max_value=100))
def test_deadband_never_hides_a_move_bigger_than_the_band(values, band):
    dead = Deadband(band)
    last_sent = None
    for i, v in enumerate(values):
        passed = dead.push(s(i, x=v))
        if last_sent is None or abs(v - last_sent) > band:
            assert passed
            last_sent = v
        else:
            assert not passed


@pytest.mark.parametrize("window", [1, 7.5, 60])
@given(values=st.lists(st.floats(min_value=-1e3, max_value=1e3), min_size=1, max_size=40))
def test_window_conserves_count(window, values):
    w = Window(window)
    out = []
    for i, v in enumerate(values):
        out += w.push(s(i * 0.9, x=v))
    out += w.flush(None)
    assert sum(o.aggregate["count"] for o in out) == len(values)
    for o in out:
        assert o.aggregate["min"]["x"] <= o.values["x"] <= o.aggregate["max"]["x"]

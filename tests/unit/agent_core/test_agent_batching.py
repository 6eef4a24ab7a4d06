"""agent.batching: messages packed toward 4 KB, exact sizes, ids for deduplication, and the forwarder."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import batching
from agent.outbox import Outbox


def reading(n: int, pad: int = 0) -> str:
    return json.dumps({"sensor": "t", "n": n, "pad": "x" * pad}, separators=(",", ":"))


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "o.sqlite", 64 << 20, clock=lambda: 1000.0) as ob:
        yield ob


def readings_of(body: bytes) -> list[dict]:
    """A batch's readings in their original order, each with its sensor."""
    doc = json.loads(body)
    out = [dict(r, sensor=name) for name, group in doc["sensors"].items() for r in group["readings"]]
    return sorted(out, key=lambda r: r["seq"])


def drain(ob: Outbox, limit: int) -> list[batching.Batch]:
    out = []
    while items := batching.claim(ob, ob.epoch, limit):
        out.append(batching.build(ob.epoch, items))
        ob.ack(out[-1].seqs)
    return out


def test_a_batch_is_json_with_ids_and_routing_properties(outbox):
    outbox.add_many([reading(i) for i in range(3)])
    (batch,) = drain(outbox, 4096)
    body = json.loads(batch.body)
    assert body["schema"] == batching.SCHEMA and body["outbox"] == outbox.epoch
    assert list(body["sensors"]) == [""]       # readings stored without a sensor id
    assert [r["seq"] for r in readings_of(batch.body)] == [1, 2, 3]
    assert [r["n"] for r in readings_of(batch.body)] == [0, 1, 2]
    assert batch.message_id == f"{outbox.epoch}-1-3"
    assert batch.properties == {"schema": batching.SCHEMA}
    assert body["sensors"][""]["units"] == {}
    assert batch.billed_units == 1


def test_units_travel_once_per_sensor_per_batch(outbox):
    units = {"a": '{"temperature":"degC"}', "b": '{"humidity":"%RH"}'}
    sensors = [("a", units["a"]), ("b", units["b"]), ("a", units["a"]), ("c", None)]
    outbox.add_many([reading(i) for i in range(4)], sensors=sensors)
    (batch,) = drain(outbox, 4096)
    groups = json.loads(batch.body)["sensors"]
    assert {name: g["units"] for name, g in groups.items()} == {"a": {"temperature": "degC"}, "b": {"humidity": "%RH"},
                                                                 "c": {}}
    assert [r["seq"] for r in groups["a"]["readings"]] == [1, 3]
    assert [r["sensor"] for r in readings_of(batch.body)] == ["a", "b", "a", "c"]


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.tuples(st.integers(min_value=0, max_value=5000), st.sampled_from("abcd")),
                      min_size=1, max_size=60),
       limit=st.sampled_from([256, 1000, 4096]))
def test_batches_fit_the_limit_and_keep_every_reading_in_order(tmp_path_factory, sizes, limit):
    with Outbox(tmp_path_factory.mktemp("b") / "o.sqlite", 64 << 20) as ob:
        ob.add_many([reading(i, pad) for i, (pad, _) in enumerate(sizes)],
                    sensors=[(name, json.dumps({f"unit_{name}": "x" * (ord(name) - 90)})) for _, name in sizes])
        batches = drain(ob, limit)
    seen = []
    for b in batches:
        readings = readings_of(b.body)
        assert set(json.loads(b.body)["sensors"]) <= set("abcd")
        assert batching.metered_size(b) <= limit or len(readings) == 1
        seen += [r["n"] for r in readings]
    assert seen == list(range(len(sizes)))


def test_typical_readings_fill_most_of_a_billing_unit(outbox):
    outbox.add_many([reading(i, 60) for i in range(1000)])
    batches = drain(outbox, 4096)
    full = batches[:-1]
    assert all(4096 - 200 < batching.metered_size(b) <= 4096 for b in full)
    assert sum(b.billed_units for b in batches) == len(batches)


def test_an_event_is_sent_alone_with_its_own_schema(outbox):
    outbox.add('{"alert":"overheat","value":91}', kind="alert", props={"severity": "critical"})
    (batch,) = drain(outbox, 4096)
    assert batch.properties == {"schema": "roost.alert.v1", "severity": "critical"}
    assert json.loads(batch.body) == {"seq": 1, "outbox": outbox.epoch, "alert": "overheat", "value": 91}


class FlakySender:
    """A stand-in for the hub: acknowledges sends, except the ones told to fail."""

    def __init__(self, fail_first: int = 0) -> None:
        self.connected = True
        self.fail_left = fail_first
        self.received: list[tuple[str, bytes]] = []

    async def wait_connected(self, timeout=None) -> bool:
        await asyncio.sleep(0)
        return self.connected

    async def send(self, body, *, message_id, properties, content_type="", content_encoding=""):
        await asyncio.sleep(0)
        assert content_type == "application/json" and content_encoding == "utf-8"
        if self.fail_left:
            self.fail_left -= 1
            raise ConnectionError("no PUBACK")
        self.received.append((message_id, body))


async def run_until(forwarder: batching.Forwarder, condition, limit: float = 10.0) -> None:
    task = asyncio.create_task(forwarder.run())
    try:
        async with asyncio.timeout(limit):
            while not condition():
                await asyncio.sleep(0.01)
    finally:
        forwarder.stop()
        await task


def delivered(sender: FlakySender) -> list[int]:
    return [r["n"] for _, body in sender.received for r in readings_of(body)]


@pytest.mark.parametrize("in_flight", [1, 8])
def test_forwarder_drains_a_backlog_in_order_without_loss(outbox, in_flight):
    async def main():
        outbox.add_many([reading(i, 50) for i in range(2000)])
        sender = FlakySender(fail_first=5)
        # the readings are 10 s old: the last, partly filled batch is due too
        fwd = batching.Forwarder(outbox, sender, batch_max_bytes=4096, batch_max_delay_s=5, max_in_flight=in_flight,
                                 clock=lambda: 1010.0)
        await run_until(fwd, lambda: outbox.stats().depth == 0)
        got = delivered(sender)
        assert sorted(got) == list(range(2000))
        if in_flight == 1:
            assert got == list(range(2000))
        assert fwd.retries == 5
        assert outbox.stats().counters["sent_readings"] == 2000

    asyncio.run(main())


def test_a_partial_batch_waits_for_the_delay_then_goes(outbox):
    async def main():
        now = [1000.0]
        outbox.add(reading(1))
        sender = FlakySender()
        fwd = batching.Forwarder(outbox, sender, batch_max_bytes=4096, batch_max_delay_s=5, max_in_flight=2,
                                 clock=lambda: now[0])
        task = asyncio.create_task(fwd.run())
        await asyncio.sleep(0.2)
        assert sender.received == []          # one small reading, only 0 s old: keep waiting for company
        now[0] += 5
        fwd.notify()
        async with asyncio.timeout(5):
            while not sender.received:
                await asyncio.sleep(0.01)
        fwd.stop()
        await task
        assert delivered(sender) == [0 + 1]

    asyncio.run(main())


def test_flushing_sends_partial_batches_at_once(outbox):
    async def main():
        outbox.add(reading(1))
        sender = FlakySender()
        fwd = batching.Forwarder(outbox, sender, batch_max_bytes=4096, batch_max_delay_s=5, max_in_flight=2,
                                 clock=lambda: 1000.0)
        fwd.flushing = True
        await run_until(fwd, lambda: bool(sender.received))
        assert outbox.stats().depth == 0

    asyncio.run(main())


def test_a_full_batch_does_not_wait(outbox):
    async def main():
        outbox.add_many([reading(i, 200) for i in range(40)])
        sender = FlakySender()
        fwd = batching.Forwarder(outbox, sender, batch_max_bytes=4096, batch_max_delay_s=5, max_in_flight=1,
                                 clock=lambda: 1000.0)
        await run_until(fwd, lambda: len(sender.received) >= 1)
        assert len(readings_of(sender.received[0][1])) > 10

    asyncio.run(main())

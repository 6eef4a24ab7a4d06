"""agent.outbox: stored before sent, removed only on ack, bounded with drop-oldest, survives reopen."""

from __future__ import annotations

import json
import sqlite3

import pytest

from agent.outbox import ROW_OVERHEAD, Outbox, OutboxError


def body(n: int, pad: int = 0) -> str:
    return json.dumps({"sensor": "t", "n": n, "pad": "x" * pad}, separators=(",", ":"))


@pytest.fixture
def outbox(tmp_path):
    with Outbox(tmp_path / "outbox.sqlite", 1 << 20, clock=lambda: 1000.0) as ob:
        yield ob


def test_wal_mode_and_order(outbox):
    mode = outbox._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    seqs = outbox.add_many([body(i) for i in range(5)])
    assert seqs == [1, 2, 3, 4, 5]
    items = outbox.claim(1 << 20)
    assert [json.loads(i.body)["n"] for i in items] == [0, 1, 2, 3, 4]


def test_claimed_readings_stay_until_acked_and_survive_a_reopen(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, 1 << 20).open()
    ob.add_many([body(i) for i in range(10)])
    first = ob.claim(60)
    assert 1 <= len(first) < 10
    ob.ack([i.seq for i in first])
    ob.claim(1 << 20)            # claimed but never acknowledged: the process "dies" here
    ob._db.close()               # no close(): no checkpoint, like SIGKILL
    again = Outbox(path, 1 << 20).open()
    left = again.claim(1 << 20)
    assert [i.seq for i in left] == list(range(len(first) + 1, 11))
    assert again.stats().counters["sent_readings"] == len(first)
    again.close()


def test_sequence_numbers_never_repeat_after_the_outbox_empties(tmp_path):
    path = tmp_path / "o.sqlite"
    with Outbox(path, 1 << 20) as ob:
        ob.ack([i.seq for i in (ob.claim(1 << 20) if ob.add_many([body(1), body(2)]) else [])])
        epoch = ob.epoch
        assert ob.stats().depth == 0
    with Outbox(path, 1 << 20) as ob:
        assert ob.add(body(3)) == 3
        assert ob.epoch == epoch


def test_bound_drops_the_oldest_and_counts_them(tmp_path):
    size = len(body(10, 100)) + ROW_OVERHEAD      # two-digit n: every reading here has the same size
    with Outbox(tmp_path / "o.sqlite", max_bytes=10 * size) as ob:
        ob.add_many([body(i, 100) for i in range(10, 20)])
        assert ob.stats().counters["dropped_readings"] == 0
        ob.add_many([body(i, 100) for i in range(20, 23)])
        stats = ob.stats()
        assert stats.depth == 10 and stats.bytes <= 10 * size
        assert stats.counters["dropped_readings"] == 3
        assert stats.counters["dropped_bytes"] == 3 * (size - ROW_OVERHEAD)
        assert [json.loads(i.body)["n"] for i in ob.claim(1 << 20)] == list(range(13, 23))


def test_in_flight_readings_are_never_dropped(tmp_path):
    size = len(body(0, 100)) + ROW_OVERHEAD
    with Outbox(tmp_path / "o.sqlite", max_bytes=4 * size) as ob:
        ob.add_many([body(i, 100) for i in range(4)])
        in_flight = ob.claim(2 * len(body(0, 100)))
        assert len(in_flight) == 2
        ob.add_many([body(i, 100) for i in range(4, 6)])
        ob.ack([i.seq for i in in_flight])
        assert [json.loads(i.body)["n"] for i in ob.claim(1 << 20)] == [4, 5]
        assert ob.stats().counters["dropped_readings"] == 2


def test_events_travel_alone_with_their_properties(outbox):
    outbox.add(body(1))
    outbox.add('{"alert":"hot"}', kind="alert", props={"severity": "warning"})
    outbox.add(body(2))
    batches = []
    while True:
        items = outbox.claim(1 << 20)
        if not items:
            break
        batches.append([(i.kind, i.props) for i in items])
    assert batches == [[("telemetry", None)], [("alert", {"severity": "warning"})], [("telemetry", None)]]


def test_released_batches_come_back_first(outbox):
    outbox.add_many([body(i) for i in range(6)])
    a = outbox.claim(2 * len(body(0)))
    b = outbox.claim(2 * len(body(0)))
    outbox.release(a)
    assert [i.seq for i in outbox.claim(1 << 20)] == [i.seq for i in a]
    outbox.ack([i.seq for i in a + b])
    assert [i.seq for i in outbox.claim(1 << 20)] == [5, 6]


def test_pending_reports_unclaimed_json_and_the_oldest(outbox):
    assert outbox.pending() == (0, 0, None)
    outbox.add_many([body(1), body(2)])
    json_bytes, count, oldest = outbox.pending()
    assert (json_bytes, count, oldest) == (len(body(1)) + len(body(2)), 2, 1000.0)
    outbox.claim(1 << 20)
    assert outbox.pending() == (0, 0, None)


def test_disk_full_keeps_readings_in_memory_and_stores_them_later(tmp_path):
    path = tmp_path / "o.sqlite"
    with Outbox(path, 1 << 30) as ob:
        ob.add(body(0))
        pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
        ob._db.execute(f"PRAGMA max_page_count={pages}")   # SQLite now fails writes with SQLITE_FULL
        ob.add_many([body(i, 2000) for i in range(1, 30)])
        stats = ob.stats()
        assert stats.spilled > 0 and stats.counters["store_errors"] >= 1 and stats.depth == 30
        claimed = ob.claim(1 << 20)     # the spill is sent like stored readings, in order
        assert [json.loads(i.body)["n"] for i in claimed] == list(range(30))
        ob._db.execute("PRAGMA max_page_count=1073741823")
        ob.release(claimed)
        ob.add(body(30))                 # space is back: the spill is written first, then the new one
        assert ob.stats().spilled == 0
    with Outbox(path, 1 << 30) as ob:
        assert [json.loads(i.body)["n"] for i in ob.claim(1 << 30)] == list(range(31))


def test_readings_claimed_from_the_spill_are_not_claimed_again_once_stored(tmp_path):
    with Outbox(tmp_path / "o.sqlite", 1 << 30) as ob:
        ob.add(body(0))
        pages = ob._db.execute("PRAGMA page_count").fetchone()[0]
        ob._db.execute(f"PRAGMA max_page_count={pages}")
        ob.add_many([body(i, 2000) for i in range(1, 6)])
        first = ob.claim_batches(3, 1, max_items=1)                 # readings 0, 1 and 2, the last two spilled
        ob._db.execute("PRAGMA max_page_count=1073741823")
        ob.add(body(6))                  # the spill is stored now, then the new reading
        assert ob.stats().spilled == 0
        rest = ob.claim(1 << 30)
        assert [json.loads(i.body)["n"] for batch in first for i in batch] == [0, 1, 2]
        assert [json.loads(i.body)["n"] for i in rest] == [3, 4, 5, 6]


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(OutboxError, match="move the file aside"):
        Outbox(path, 1 << 20).open()


def test_rows_are_really_in_sqlite(outbox):
    outbox.add(body(7))
    db = sqlite3.connect(outbox.path)
    assert db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 1
    db.close()


def test_ranges_group_consecutive_sequences():
    from agent.outbox import _ranges

    assert _ranges([1, 2, 3, 7, 9, 10]) == [(1, 3), (7, 7), (9, 10)]
    assert _ranges([]) == []


def test_acks_queued_together_share_one_transaction(outbox):
    import asyncio

    outbox.add_many([body(i) for i in range(30)])
    batches = [outbox.claim(3 * len(body(10))) for _ in range(10)]
    assert all(len(b) == 3 for b in batches)

    async def main():
        await asyncio.gather(*(outbox.aack([i.seq for i in b]) for b in batches))

    asyncio.run(main())
    stats = outbox.stats()
    assert stats.depth == 0 and stats.counters["sent_messages"] == 10 and stats.counters["sent_readings"] == 30
    assert outbox._db.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0


def test_counters_survive_a_clean_close(tmp_path):
    path = tmp_path / "o.sqlite"
    with Outbox(path, 1 << 20) as ob:
        ob.add_many([body(i) for i in range(4)])
        ob.ack([i.seq for i in ob.claim(1 << 20)], messages=2)
    with Outbox(path, 1 << 20) as ob:
        counters = ob.stats().counters
        assert counters["sent_readings"] == 4 and counters["sent_messages"] == 2 and counters["stored_readings"] == 4


def test_acks_queued_just_before_close_are_stored(tmp_path):
    path = tmp_path / "o.sqlite"
    ob = Outbox(path, 1 << 20).open()
    ob.add_many([body(i) for i in range(6)])
    for item in ob.claim(1 << 20):
        ob.ack_soon([item.seq])
    ob.close()
    with Outbox(path, 1 << 20) as again:
        assert again.stats().depth == 0 and again.stats().counters["sent_messages"] == 6


def test_acks_wait_to_share_a_transaction_until_the_last_one_in_flight(tmp_path, monkeypatch):
    import asyncio

    from agent import outbox as outbox_module

    monkeypatch.setattr(outbox_module, "ACK_LINGER_S", 60.0)

    async def main(ob: Outbox) -> list[int]:
        first, second, third = ob.claim_batches(3, 1, max_items=1)
        depths = []
        for batch in (first, second):
            ob.ack_soon([i.seq for i in batch])
            await ob.run_in_thread(lambda: None)      # every job posted so far has run
            depths.append(ob.stats().depth)
        ob.ack_soon([i.seq for i in third])           # nothing else in flight: stored at once, with the others
        await ob.run_in_thread(lambda: None)
        depths.append(ob.stats().depth)
        return depths

    with Outbox(tmp_path / "o.sqlite", 1 << 20) as ob:
        ob.add_many([body(i) for i in range(4)])
        assert asyncio.run(main(ob)) == [4, 4, 1]
        assert [seq for (seq,) in ob._db.execute("SELECT seq FROM readings")] == [4]


def test_concurrent_handovers_share_a_commit_and_all_callers_get_their_seqs(tmp_path):
    import asyncio

    async def main(ob: Outbox) -> list[list[int]]:
        return await asyncio.gather(*(ob.aadd_many([body(3 * k), body(3 * k + 1), body(3 * k + 2)])
                                      for k in range(20)))

    with Outbox(tmp_path / "o.sqlite", 1 << 20) as ob:
        seqs = asyncio.run(main(ob))
        assert sorted(s for group in seqs for s in group) == list(range(1, 61))
        assert all(group == list(range(group[0], group[0] + 3)) for group in seqs)
        assert ob.stats().depth == 60


def test_a_failed_group_commit_reaches_every_caller_of_the_group(tmp_path):
    import asyncio

    ob = Outbox(tmp_path / "o.sqlite", 1 << 20).open()

    def broken(entries):
        raise sqlite3.DatabaseError("database disk image is malformed")

    ob._store_entries = broken

    async def main() -> list:
        return await asyncio.gather(*(ob.aadd_many([body(k)]) for k in range(5)), return_exceptions=True)

    try:
        outcomes = asyncio.run(main())
    finally:
        del ob._store_entries
        ob.close()
    assert len(outcomes) == 5
    assert all(isinstance(o, sqlite3.DatabaseError) for o in outcomes)


def test_claim_batches_takes_only_complete_batches_after_the_first(outbox):
    outbox.add_many([body(i) for i in range(7)])
    size = len(body(0))
    batches = outbox.claim_batches(5, 2 * size)
    # 7 readings, two per batch: three complete batches; the seventh waits for company.
    assert [[json.loads(i.body)["n"] for i in b] for b in batches] == [[0, 1], [2, 3], [4, 5]]
    assert outbox.pending()[1] == 1 and outbox.pending()[2] == 1000.0
    assert [json.loads(i.body)["n"] for i in outbox.claim_batches(5, 2 * size)[0]] == [6]   # the first goes anyway
    assert outbox.pending() == (0, 0, None)


def test_claim_batches_serves_released_batches_first_and_alone(outbox):
    outbox.add_many([body(i) for i in range(6)])
    size = len(body(0))
    first, second = outbox.claim_batches(2, 2 * size)
    outbox.release(first)
    assert outbox.claim_batches(3, 2 * size) == [first]
    assert [json.loads(i.body)["n"] for b in outbox.claim_batches(3, 2 * size) for i in b] == [4, 5]
    assert outbox.stats().in_flight == 6 and second


def test_release_memory_shrinks_the_page_cache_and_the_outbox_keeps_working(tmp_path):
    import asyncio

    with Outbox(tmp_path / "o.sqlite", 1 << 24) as ob:
        ob.add_many([body(i, pad=400) for i in range(2000)])
        while batch := ob.claim(1 << 16):
            ob.ack([i.seq for i in batch])
        used = sqlite3_memory_used()
        asyncio.run(ob.arelease_memory())
        assert sqlite3_memory_used() < used
        ob.add_many([body(1)])
        assert ob.stats().depth == 1


def sqlite3_memory_used() -> int:
    """SQLite's own count of the heap it holds, from the library the sqlite3 module is linked with."""
    import _sqlite3
    import ctypes

    lib = ctypes.CDLL(_sqlite3.__file__)      # dlsym looks through the extension's own dependencies
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    return lib.sqlite3_memory_used()


@pytest.mark.parametrize("count", [1, 31, 32, 33, 70])
def test_group_commits_of_any_size_store_every_reading_in_order(tmp_path, count):
    with Outbox(tmp_path / "o.sqlite", 1 << 24) as ob:
        assert ob.add_many([body(i) for i in range(count)]) == list(range(1, count + 1))
        rows = ob._db.execute("SELECT seq, body FROM readings ORDER BY seq").fetchall()
    assert [(seq, json.loads(text)["n"]) for seq, text in rows] == [(i + 1, i) for i in range(count)]


def _claimed(batches: list[list]) -> list[list[tuple]]:
    return [[tuple(item) for item in batch] for batch in batches]


@pytest.mark.parametrize("seed", range(6))
def test_claims_from_memory_match_claims_from_the_table(tmp_path, seed):
    """The in-memory copy of fresh readings is only a shortcut: every claim is what the table would give."""
    import random

    rng = random.Random(seed)
    size = len(body(10, 40)) + ROW_OVERHEAD
    fast = Outbox(tmp_path / "fast.sqlite", 40 * size, clock=lambda: 1000.0).open()   # drop-oldest now and then
    reference = Outbox(tmp_path / "reference.sqlite", 40 * size, clock=lambda: 1000.0).open()
    fast.fresh_max_bytes = 12 * size      # overflows in bursts, then catches up again
    reference.fresh_max_bytes = 0         # every claim reads the table
    from_memory = overflows = 0
    in_flight: list[tuple[list, list]] = []
    try:
        for step in range(300):
            action = rng.random()
            if action < 0.4:
                bodies = [body(rng.randrange(10, 99), rng.randrange(0, 60)) for _ in range(rng.randrange(1, 8))]
                kind = "telemetry" if rng.random() < 0.9 else "event"
                sensors = [(rng.choice("abc"), None) for _ in bodies]
                complete = fast._fresh_complete
                assert fast.add_many(bodies, kind, sensors=sensors) == reference.add_many(bodies, kind,
                                                                                         sensors=sensors)
                overflows += complete and not fast._fresh_complete
            elif action < 0.75:
                count, max_bytes = rng.randrange(1, 5), rng.randrange(60, 600)
                from_memory += overflows and fast._fresh_complete and bool(fast._fresh)
                got, expected = fast.claim_batches(count, max_bytes), reference.claim_batches(count, max_bytes)
                assert _claimed(got) == _claimed(expected), f"step {step}"
                in_flight.extend(zip(got, expected, strict=True))
            elif action < 0.9 and in_flight:
                mine, theirs = in_flight.pop(rng.randrange(len(in_flight)))
                fast.ack([i.seq for i in mine])
                reference.ack([i.seq for i in theirs])
            elif in_flight:
                mine, theirs = in_flight.pop(0)
                fast.release(mine)
                reference.release(theirs)
            assert fast.pending() == reference.pending(), f"step {step}"
            assert fast.stats().depth == reference.stats().depth, f"step {step}"
        assert overflows and from_memory, "claims did not go back to memory after the copy overflowed"
        assert fast.stats().counters["dropped_readings"], "the bound never dropped anything"
    finally:
        fast.close()
        reference.close()


def test_claims_from_memory_skip_the_outbox_thread_unless_it_holds_the_outbox(tmp_path):
    import asyncio
    import threading

    path = tmp_path / "o.sqlite"
    with Outbox(path, 1 << 20) as ob:
        ob.add_many([body(i) for i in range(6)])
        batches = asyncio.run(ob.aclaim_batches(2, 1, max_items=1))
        assert [[i.seq for i in b] for b in batches] == [[1], [2]]
        assert ob._jobs._thread is None                  # served on the caller's thread
        held, release = threading.Event(), threading.Event()

        def hold() -> None:                              # as the outbox thread does during a commit's fsync
            with ob._lock:
                held.set()
                release.wait(5)

        holder = threading.Thread(target=hold)
        holder.start()
        assert held.wait(5)

        async def claim_while_held() -> list:
            pending = asyncio.ensure_future(ob.aclaim_batches(1, 1, max_items=1))
            await asyncio.sleep(0.05)
            assert not pending.done()                    # queued for the outbox thread, the loop is free
            release.set()
            return await pending

        assert [[i.seq for i in b] for b in asyncio.run(claim_while_held())] == [[3]]
        holder.join(5)
        assert ob._jobs._thread is not None
    with Outbox(path, 1 << 20) as again:                 # stored before this start: read from the table
        assert [[i.seq for i in b] for b in asyncio.run(again.aclaim_batches(1, 1 << 20))] == [[1, 2, 3, 4, 5, 6]]
        assert again._jobs._thread is not None

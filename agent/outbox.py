"""The lossless outbox: every reading is stored in SQLite before it is sent, and removed only after its PUBACK.

Durability: the database runs in WAL mode. Inserts commit with ``synchronous=FULL``, so a reading the sampler
handed over is on disk (the WAL fsynced) before anything else happens: it survives SIGKILL *and* a power cut.
Deletes after a PUBACK run with ``synchronous=NORMAL``: losing one in a power cut only means that batch is
sent again, which consumers already handle (at-least-once, every reading carries a unique id). That halves
the fsyncs of the hot path without weakening the guarantee that matters.

Identity of readings: each outbox has a random ``epoch`` made when its file is created, and each reading a
sequence number that never repeats within it (SQLite AUTOINCREMENT keeps the high-water mark even when the
table is empty). ``(epoch, seq)`` is the id a consumer deduplicates on; a batch's message id is
``epoch-first-last``.

Bound and drop policy: ``max_bytes`` counts each reading's JSON plus ``ROW_OVERHEAD`` bytes. When a new reading
would exceed it, the *oldest* readings not currently in flight are dropped (fresh data is worth more than old
data after a long outage) and counted in ``dropped_readings`` / ``dropped_bytes``, which survive restarts.

Disk full: a failed insert keeps the reading in a bounded memory spill (in order, sent from there if need be)
and retries storing it before every later insert; only spill overflow drops readings, again counted.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from agent.jobthread import Coalescer, JobThread, settle, settle_threadsafe

log = logging.getLogger(__name__)

COUNTER_SAVE_INTERVAL_S = 5.0
# Acknowledged readings are deleted in groups: a transaction per PUBACK would cost the outbox thread more than
# the rest of the pipeline. An ack waits at most this long for company (a crash in that window only means those
# readings are sent again, with their ids), and a group this large goes at once.
ACK_LINGER_S = 0.02
ACK_GROUP_MAX = 256
# Readings stored since the last claim caught up are also kept in memory, up to this many bytes (as counted for
# the bound), so claiming them costs no query. Beyond it (a burst, or a backlog after a restart) claims read the
# table until they catch up again.
FRESH_MAX_BYTES = 512 * 1024
ROW_OVERHEAD = 64          # bytes counted per stored reading beyond its JSON (row header, index entry)
TELEMETRY = "telemetry"
COUNTERS = ("stored_readings", "sent_readings", "sent_messages", "dropped_readings", "dropped_bytes",
            "store_errors")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    props TEXT,
    sensor TEXT,
    units TEXT,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
"""


class Item(NamedTuple):
    """One stored reading or event, as the batcher sees it (a named tuple: made by the thousand per second)."""

    seq: int
    kind: str
    body: str
    props: Mapping[str, str] | None
    created: float
    sensor: str | None = None      # which sensor, so a batch can name each sensor's units once
    units: str | None = None       # that sensor's units as JSON object text

    @property
    def size(self) -> int:
        return len(self.body) + ROW_OVERHEAD


@dataclass
class Stats:
    depth: int = 0                 # readings waiting (stored or spilled, including in flight)
    bytes: int = 0                 # their counted size
    in_flight: int = 0
    spilled: int = 0               # held in memory because the disk refused them
    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))

    def as_dict(self) -> dict:
        return {"depth": self.depth, "bytes": self.bytes, "in_flight": self.in_flight, "spilled": self.spilled,
                **self.counters}


class OutboxError(RuntimeError):
    """The outbox file cannot be opened (wrong path, not a database, permissions)."""


class Outbox:
    """SQLite-backed FIFO of readings. Blocking methods are thread-safe; ``a*`` methods run them off the loop."""

    def __init__(self, path: str | Path, max_bytes: int, *, spill_max: int = 20_000,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.spill_max = spill_max
        self.clock = clock
        self._lock = threading.RLock()
        # One thread: SQLite calls stay serialized and in order, and fsyncs never block the event loop.
        self._jobs = JobThread("roost-outbox")
        self._db: sqlite3.Connection | None = None
        self.epoch = ""
        self._next_seq = 1
        self._cursor = 0                    # highest seq handed to a batch so far
        self._in_flight: dict[int, int] = {}    # seq -> size
        self._spill: collections.deque[Item] = collections.deque()
        self._sizes_total = 0
        self._depth = 0
        self._oldest_unclaimed: float | None = None
        self._unclaimed_bytes = 0
        self._unclaimed_n = 0
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._disk_full_logged = False
        self._retry: list[list[Item]] = []      # batches given back by release(), served first
        self._released: set[int] = set()
        # Every stored, unclaimed reading, in order, while ``_fresh_complete``; see FRESH_MAX_BYTES.
        self._fresh: collections.deque[Item] = collections.deque()
        self._fresh_bytes = 0
        self._fresh_complete = False
        self.fresh_max_bytes = FRESH_MAX_BYTES     # 0: every claim reads the table
        # Handed over by the event loop, stored by the outbox thread a group per transaction.
        self._acks = Coalescer(self._jobs, self._store_acks, linger_s=ACK_LINGER_S, max_items=ACK_GROUP_MAX,
                               weight=lambda ack: len(ack[0]))
        self._writes = Coalescer(self._jobs, self._commit_writes)
        self._counters_saved = 0.0

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def open(self) -> Outbox:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            # The outbox is read front to back once: a small page cache keeps the agent's memory flat (a 1 MB
            # cache measured no faster at draining a backlog than this 256 KB one).
            db.execute("PRAGMA cache_size=-256")
            db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}; move the file aside (it will be "
                              "recreated) or set telemetry.outbox_path to a writable location") from exc
        except OSError as exc:
            raise OutboxError(f"cannot create the outbox directory for {self.path}: {exc.strerror}; "
                              "check device.state_dir and its permissions") from exc
        self._db = db
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if "epoch" not in meta:
            meta["epoch"] = uuid.uuid4().hex[:16]
            db.execute("INSERT INTO meta(key, value) VALUES ('epoch', ?)", (meta["epoch"],))
        self.epoch = meta["epoch"]
        for name in COUNTERS:
            self._counters[name] = int(meta.get(name, 0) or 0)
        row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='readings'").fetchone()
        high = db.execute("SELECT COALESCE(MAX(seq), 0), COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(created) "
                          "FROM readings").fetchone()
        self._next_seq = max(row[0] if row else 0, high[0]) + 1
        self._depth = high[1]
        self._sizes_total = high[2] + ROW_OVERHEAD * high[1]
        self._unclaimed_bytes = self._sizes_total
        self._unclaimed_n = self._depth
        self._oldest_unclaimed = high[3]
        self._forget_fresh(complete=self._depth == 0)
        return self

    def close(self) -> None:
        """Store what the spill holds if the disk allows, checkpoint the WAL and close."""
        with self._lock:
            if self._db is None:
                return
            self._writes.run_now()   # readings handed over just before close are stored, not dropped
            self._flush_spill()
            self._acks.run_now()     # PUBACKs already received: those readings must not be sent again
            self._persist_counters()
            if self._spill:
                log.error("outbox closing with %d readings that could not be stored (disk full): they are lost",
                          len(self._spill))
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError as exc:
                log.warning("outbox checkpoint at close failed: %s", exc)
            self._db.close()
            self._db = None
        self._jobs.close()

    def __enter__(self) -> Outbox:
        return self.open() if self._db is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def next_seq(self) -> int:
        """The sequence number the next stored reading gets."""
        return self._next_seq

    # ---- writing ---------------------------------------------------------------------------------------------

    def add(self, body: str, kind: str = TELEMETRY, props: Mapping[str, str] | None = None) -> int:
        """Store one reading (a JSON object text); returns its sequence number."""
        return self.add_many([body], kind, props)[0]

    def add_many(self, bodies: Iterable[str], kind: str = TELEMETRY,
                 props: Mapping[str, str] | None = None,
                 sensors: Sequence[tuple[str, str | None]] | None = None) -> list[int]:
        """Store several readings in one transaction (one fsync); returns their sequence numbers.

        ``sensors`` gives each reading's (sensor id, units JSON text); units travel once per sensor per batch
        instead of in every reading.
        """
        entry = _Entry.make(bodies, kind, props, sensors)
        self._store_entries([entry])
        return entry.seqs

    def _store_entries(self, entries: list[_Entry]) -> None:
        """Store several callers' readings in one transaction: the group commit behind ``aadd_many``."""
        now = self.clock()
        with self._lock:
            items = []
            for entry in entries:
                first = seq = self._next_seq
                kind, props = entry.kind, entry.props
                for body, (sensor, units) in zip(entry.bodies, entry.sensors, strict=True):
                    items.append(Item(seq, kind, body, props, now, sensor, units))
                    seq += 1
                self._next_seq = seq
                entry.seqs = list(range(first, seq))
            incoming = sum(i.size for i in items)
            self._make_room(incoming)
            self._flush_spill()
            if self._spill or not self._insert(items):
                self._spill.extend(items)
                self._trim_spill()
            # Accounted for the whole group at once: this runs per commit, not per reading.
            self._depth += len(items)
            self._sizes_total += incoming
            self._unclaimed_bytes += incoming
            self._unclaimed_n += len(items)
            if self._oldest_unclaimed is None and items:
                self._oldest_unclaimed = now
            self._counters["stored_readings"] += len(items)

    def _insert(self, items: list[Item]) -> bool:
        assert self._db is not None, "outbox is not open"
        try:
            with _transaction(self._db, durable=True):
                _insert_rows(self._db, [(i.seq, i.kind, i.body, _props_text(i.props), i.sensor, i.units, i.created)
                                        for i in items])
        except sqlite3.OperationalError as exc:
            self._counters["store_errors"] += 1
            if not self._disk_full_logged:
                log.error("outbox %s cannot store readings (%s); holding up to %d in memory until space returns",
                          self.path, exc, self.spill_max)
                self._disk_full_logged = True
            return False
        if self._disk_full_logged:
            log.warning("outbox %s stores readings again", self.path)
            self._disk_full_logged = False
        if self._fresh_complete:
            for item in items:
                if item.seq > self._cursor:    # a spilled reading may have been claimed before it was stored
                    self._fresh.append(item)
                    self._fresh_bytes += item.size
            if self._fresh_bytes > self.fresh_max_bytes:
                self._forget_fresh(complete=False)
        return True

    def _forget_fresh(self, *, complete: bool) -> None:
        """Empty the in-memory copy; ``complete``: nothing unclaimed is stored, so it is whole again."""
        self._fresh.clear()
        self._fresh_bytes = 0
        self._fresh_complete = complete

    def _flush_spill(self) -> None:
        while self._spill:
            chunk = list(self._spill)[:500]
            if not self._insert(chunk):
                return
            for _ in chunk:
                self._spill.popleft()

    def _trim_spill(self) -> None:
        while len(self._spill) > self.spill_max:
            victim = self._spill.popleft()
            if victim.seq in self._in_flight:
                self._spill.append(victim)     # keep in-flight ones; their PUBACK will remove them
                continue
            self._forget(victim.seq, victim.size, dropped=True)

    def _make_room(self, incoming: int) -> None:
        """Drop the oldest readings not in flight until ``incoming`` more bytes fit under the bound."""
        excess = self._sizes_total + incoming - self.max_bytes
        if excess <= 0:
            return
        assert self._db is not None
        victims: list[tuple[int, int]] = []
        freed = 0
        after = 0
        while freed < excess:
            rows = self._db.execute("SELECT seq, LENGTH(body) FROM readings WHERE seq > ? ORDER BY seq LIMIT 512",
                                    (after,)).fetchall()
            if not rows:
                break
            for seq, length in rows:
                after = seq
                if seq in self._in_flight:
                    continue
                victims.append((seq, length + ROW_OVERHEAD))
                freed += length + ROW_OVERHEAD
                if freed >= excess:
                    break
        try:
            with _transaction(self._db, durable=False):
                self._db.executemany("DELETE FROM readings WHERE seq = ?", [(s,) for s, _ in victims])
        except sqlite3.OperationalError as exc:
            log.error("outbox cannot drop old readings to make room: %s", exc)
            victims = []
        for seq, size in victims:
            self._forget(seq, size, dropped=True)
        if victims and victims[-1][0] > self._cursor:   # unclaimed readings are gone from the table
            self._forget_fresh(complete=False)
        if victims:
            log.warning("outbox full (%d bytes bound): dropped the %d oldest readings", self.max_bytes, len(victims))
            self._persist_counters()
        if freed < excess:   # the database alone could not make room: the spill's oldest go next
            while self._spill and self._sizes_total + incoming > self.max_bytes:
                victim = self._spill.popleft()
                self._forget(victim.seq, victim.size, dropped=True)

    def _forget(self, seq: int, size: int, *, dropped: bool) -> None:
        self._depth -= 1
        self._sizes_total -= size
        if seq > self._cursor or seq in self._released:
            self._unclaimed_bytes -= size
            self._unclaimed_n -= 1
        self._released.discard(seq)
        if dropped:
            self._counters["dropped_readings"] += 1
            self._counters["dropped_bytes"] += size - ROW_OVERHEAD

    # ---- reading and acknowledging ---------------------------------------------------------------------------

    def claim(self, max_bytes: int, max_items: int = 10_000, *, base: int = 0,
              cost: Callable[[Item], int] = lambda item: len(item.body)) -> list[Item]:
        """The next readings in order, marked in flight: at least one, and as many as fit ``max_bytes``.

        ``base`` + the sum of ``cost(item)`` is kept within ``max_bytes``, so the caller decides what a reading
        costs once packed. Telemetry readings come together; any other kind (events) comes alone, so it can
        be sent with its own properties.
        """
        batches = self.claim_batches(1, max_bytes, max_items, base=base, cost_factory=lambda: cost)
        return batches[0] if batches else []

    def claim_batches(self, count: int, max_bytes: int, max_items: int = 10_000, *, base: int = 0,
                      cost_factory: Callable[[], Callable[[Item], int]] = lambda: lambda item: len(item.body),
                      ) -> list[list[Item]]:
        """Up to ``count`` consecutive batches (as ``claim`` makes them) from one scan of the table.

        The first batch is claimed whatever its size; a later one only when it is complete (the next reading
        did not fit, or is of another kind): a partly filled batch waits for company until its owner decides
        it is due. Batches given back by ``release`` come first, on their own.
        """
        with self._lock:
            assert self._db is not None, "outbox is not open"
            retried = self._claim_released(count)
            if retried:
                return retried
            cursor = None
            if self._fresh_complete:
                stored: Iterator[Item] = iter(self._fresh)
            else:
                cursor = self._db.execute("SELECT seq, kind, body, props, created, sensor, units FROM readings "
                                          "WHERE seq > ? ORDER BY seq", (self._cursor,))
                # Rows are fetched a few at a time: a batch needs tens of them, the table may hold millions.
                stored = (Item(s, k, b, json.loads(p) if p else None, c, sn, u)
                          for chunk in _growing_fetch(cursor) for s, k, b, p, c, sn, u in chunk)
            spilled = (i for i in list(self._spill) if i.seq > self._cursor)   # always newer than stored rows
            candidates = itertools.chain(stored, spilled)
            batches: list[list[Item]] = []
            following = next(candidates, None)     # the first reading not claimed yet, if there is one
            while following is not None and len(batches) < count:
                batch, following, complete = _fill(following, candidates, max_bytes, max_items, base,
                                                   cost_factory())
                if batches and not complete:
                    following = batch[0]           # left for later, with its company
                    break
                batches.append(batch)
            for batch in batches:
                self._mark_in_flight(batch)
                self._cursor = batch[-1].seq
            if cursor is not None:
                cursor.close()
                if following is None:          # the table had nothing more: what is stored next is all there is
                    self._forget_fresh(complete=True)
            while self._fresh and self._fresh[0].seq <= self._cursor:
                self._fresh_bytes -= self._fresh.popleft().size
            # The scan stopped at the oldest unclaimed reading (or found none): no second query needed.
            self._oldest_unclaimed = following.created if following is not None else None
            return batches

    def _claim_released(self, count: int) -> list[list[Item]]:
        out: list[list[Item]] = []
        while self._retry and len(out) < count:
            batch = [i for i in self._retry.pop(0) if i.seq in self._released]
            if not batch:
                continue
            self._released.difference_update(i.seq for i in batch)
            self._mark_in_flight(batch)
            out.append(batch)
        return out

    def _mark_in_flight(self, batch: list[Item]) -> None:
        sizes = {item.seq: len(item.body) + ROW_OVERHEAD for item in batch}   # Item.size, without the calls
        self._in_flight.update(sizes)
        self._unclaimed_bytes -= sum(sizes.values())
        self._unclaimed_n -= len(batch)

    def ack(self, seqs: Iterable[int], messages: int = 1) -> None:
        """IoT Hub acknowledged these readings: remove them for good."""
        self.ack_many([(list(seqs), messages)])

    def ack_many(self, acks: list[tuple[list[int], int]]) -> None:
        """Several acknowledged batches in one transaction (the forwarder's workers finish close together)."""
        seqs = [seq for batch, _ in acks for seq in batch]
        with self._lock:
            assert self._db is not None, "outbox is not open"
            spilled = {i.seq for i in self._spill} if self._spill else set()
            ranges = _ranges(sorted(s for s in seqs if s not in spilled))
            self._counters["sent_readings"] += len(seqs)
            self._counters["sent_messages"] += sum(m for _, m in acks)
            try:
                with _transaction(self._db, durable=False):
                    self._db.executemany("DELETE FROM readings WHERE seq BETWEEN ? AND ?", ranges)
                    # Counters are statistics: saving them every few seconds (and at close) is enough.
                    if time.monotonic() - self._counters_saved >= COUNTER_SAVE_INTERVAL_S:
                        self._write_counters()
                        self._counters_saved = time.monotonic()
            except sqlite3.OperationalError as exc:
                # Not deleting only means a redelivery after a restart; the reading is not lost.
                log.error("outbox cannot remove sent readings (%s); they may be sent again after a restart", exc)
            if spilled:
                acked = set(seqs)
                self._spill = collections.deque(i for i in self._spill if i.seq not in acked)
            for seq in seqs:
                size = self._in_flight.pop(seq, None)
                if size is not None:
                    self._depth -= 1
                    self._sizes_total -= size

    def release(self, batch: list[Item]) -> None:
        """A claimed batch was not sent and its claimer gives up on it: claim() hands it out again first."""
        with self._lock:
            batch = [i for i in batch if i.seq in self._in_flight]
            if not batch:
                return
            for item in batch:
                self._unclaimed_bytes += self._in_flight.pop(item.seq)
                self._unclaimed_n += 1
                self._released.add(item.seq)
            self._retry.append(batch)
            self._retry.sort(key=lambda b: b[0].seq)

    # pending() and stats() read in-memory counters without the lock on purpose: the event loop calls them, and
    # the lock may be held for an fsync by the outbox thread. A reading taken mid-update is off by one batch at
    # most, which only shifts when the next batch is claimed.

    def pending(self) -> tuple[int, int, float | None]:
        """(JSON bytes not yet claimed, how many readings that is, creation time of the oldest of them)."""
        count = self._unclaimed_n
        return max(0, self._unclaimed_bytes - ROW_OVERHEAD * count), count, self._oldest_unclaimed

    def stats(self) -> Stats:
        return Stats(depth=self._depth, bytes=self._sizes_total, in_flight=len(self._in_flight),
                     spilled=len(self._spill), counters=dict(self._counters))

    def _write_counters(self) -> None:
        assert self._db is not None
        self._db.executemany("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET "
                             "value=excluded.value", list(self._counters.items()))

    def _persist_counters(self) -> None:
        try:
            with _transaction(self._db, durable=False):
                self._write_counters()
        except sqlite3.OperationalError as exc:
            log.warning("outbox counters not saved: %s", exc)

    # ---- the same, off the event loop ------------------------------------------------------------------------

    async def run_in_thread(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the outbox thread (for several outbox calls in one hop)."""
        return await self._jobs.call(fn)

    async def aadd_many(self, bodies: list[str], kind: str = TELEMETRY,
                        props: Mapping[str, str] | None = None,
                        sensors: Sequence[tuple[str, str | None]] | None = None) -> list[int]:
        """``add_many`` off the event loop, with group commit: readings handed over by several callers while
        the previous fsync was running are stored together in the next transaction, by one job whose outcome
        reaches every caller of the group in one hop back to the loop."""
        entry = _Entry.make(bodies, kind, props, sensors)
        entry.done = asyncio.get_running_loop().create_future()
        self._writes.put(entry)
        await entry.done
        return entry.seqs

    def _commit_writes(self, entries: list[_Entry]) -> None:
        error: BaseException | None = None
        try:
            self._store_entries(entries)
        except BaseException as exc:   # every caller of the group learns it; none is left waiting
            error = exc
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future]] = {}
        for entry in entries:
            if entry.done is not None:
                by_loop.setdefault(entry.done.get_loop(), []).append(entry.done)
        for loop, futures in by_loop.items():
            settle_threadsafe(loop, _settle_all, futures, error)

    async def arelease_memory(self) -> None:
        """Hand SQLite's page cache back to the C library (the daemon calls this once a backlog has drained)."""
        def shrink() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.execute("PRAGMA shrink_memory")

        await self._jobs.call(shrink)

    async def aclaim(self, max_bytes: int, max_items: int = 10_000, *, base: int = 0,
                     cost: Callable[[Item], int] = lambda item: len(item.body)) -> list[Item]:
        batches = await self.aclaim_batches(1, max_bytes, max_items, base=base, cost_factory=lambda: cost)
        return batches[0] if batches else []

    async def aclaim_batches(self, count: int, max_bytes: int, max_items: int = 10_000, *, base: int = 0,
                             cost_factory: Callable[[], Callable[[Item], int]] = lambda: lambda item: len(item.body),
                             ) -> list[list[Item]]:
        """``claim_batches`` for the event loop: right here when no query is needed, else on the outbox thread.

        Readings waiting in memory (see FRESH_MAX_BYTES) are claimed without the thread hop, unless the outbox
        thread holds the lock (in a commit's fsync, say): the loop never waits for it.
        """
        def claim() -> list[list[Item]]:
            return self.claim_batches(count, max_bytes, max_items, base=base, cost_factory=cost_factory)

        if self._fresh_complete and self._lock.acquire(blocking=False):
            try:
                if self._fresh_complete:      # still, now that nothing can change it
                    return claim()
            finally:
                self._lock.release()
        return await self._jobs.call(claim)

    def ack_soon(self, seqs: list[int], messages: int = 1) -> None:
        """Queue an acknowledgement for the outbox thread and return at once (the forwarder's hot path).

        Acks arriving together share one transaction, and a PUBACK costs the event loop a list append rather
        than a task and a thread round trip. ``aflush_acks`` waits until every queued ack is stored.
        Acks are held back up to ``ACK_LINGER_S`` to share a transaction, unless nothing else is in flight
        (the queue has drained: its depth should say so at once).
        """
        last = len(self._in_flight) <= self._acks.queued + len(seqs)   # in flight until their ack is stored
        self._acks.put((list(seqs), messages), now=last)

    async def aack(self, seqs: list[int], messages: int = 1) -> None:
        """Acknowledge and wait until the deletion is done."""
        self.ack_soon(seqs, messages)
        await self.aflush_acks()

    async def aflush_acks(self) -> None:
        await self._jobs.call(self._acks.run_now)

    def _store_acks(self, acks: list[tuple[list[int], int]]) -> None:
        try:
            self.ack_many(acks)
        except Exception:   # nobody awaits this job: say so rather than lose the error in a future
            log.exception("outbox could not remove %d acknowledged batches; they may be sent again", len(acks))


@dataclass
class _Entry:
    """One caller's readings waiting for the group commit."""

    bodies: list[str]
    kind: str
    props: Mapping[str, str] | None
    sensors: list[tuple[str | None, str | None]]
    seqs: list[int] = field(default_factory=list)
    done: asyncio.Future | None = None      # resolved on the caller's loop once stored (aadd_many)

    @classmethod
    def make(cls, bodies: Iterable[str], kind: str, props: Mapping[str, str] | None,
             sensors: Sequence[tuple[str, str | None]] | None) -> _Entry:
        bodies = list(bodies)
        for body in bodies:
            if not body.startswith("{"):
                raise ValueError("an outbox body must be a JSON object text")
        meta: list[tuple[str | None, str | None]] = (list(sensors) if sensors is not None
                                                     else [(None, None)] * len(bodies))
        if len(meta) != len(bodies):
            raise ValueError("sensors must name one (sensor, units) pair per body")
        return cls(bodies, kind, dict(props) if props else None, meta)


def _fill(first: Item, candidates: Iterator[Item], max_bytes: int, max_items: int, base: int,
          cost: Callable[[Item], int]) -> tuple[list[Item], Item | None, bool]:
    """One batch starting at ``first``: (batch, the next reading after it or None, whether the batch is complete).

    Complete means it cannot grow: the next reading did not fit, is of another kind, or ``max_items`` was
    reached. Incomplete means the readings ran out first.
    """
    batch = [first]
    used = base + cost(first)   # cost is called once per item, in order: it may depend on what came before
    for item in candidates:
        if len(batch) >= max_items or item.kind != TELEMETRY or first.kind != TELEMETRY:
            return batch, item, True
        price = cost(item)
        if used + price > max_bytes:
            return batch, item, True
        batch.append(item)
        used += price
    return batch, None, len(batch) >= max_items


_INSERT = "INSERT INTO readings(seq, kind, body, props, sensor, units, created) VALUES "
_ROW = "(?, ?, ?, ?, ?, ?, ?)"
_ROWS_PER_STATEMENT = 32
_INSERT_MANY = _INSERT + ",".join([_ROW] * _ROWS_PER_STATEMENT)


def _insert_rows(db: sqlite3.Connection, rows: list[tuple]) -> None:
    """Insert rows 32 to a statement.

    Each statement step releases and retakes the GIL; one step per row made a group commit of a few hundred
    readings hand the GIL back and forth hundreds of times, stalling the SDK's threads behind it.
    """
    whole = len(rows) - len(rows) % _ROWS_PER_STATEMENT
    if whole:
        db.executemany(_INSERT_MANY, [tuple(itertools.chain.from_iterable(rows[i:i + _ROWS_PER_STATEMENT]))
                                      for i in range(0, whole, _ROWS_PER_STATEMENT)])
    if whole < len(rows):
        db.executemany(_INSERT + _ROW, rows[whole:])


def _props_text(props: Mapping[str, str] | None) -> str | None:
    return json.dumps(dict(props), separators=(",", ":")) if props else None


def _settle_all(futures: list[asyncio.Future], error: BaseException | None) -> None:
    for future in futures:
        settle(future, None, error)


def _growing_fetch(cursor: sqlite3.Cursor):
    """Rows in chunks of 4, 16, 64, 256: a one-reading batch fetches little, a 4 KB batch a few round trips."""
    size = 4
    while rows := cursor.fetchmany(size):
        yield rows
        size = min(size * 4, 256)


def _ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted sequence numbers as (first, last) runs, so a batch is deleted with one statement."""
    out: list[tuple[int, int]] = []
    for seq in seqs:
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT with the synchronous level the operation needs."""

    def __init__(self, db: sqlite3.Connection | None, *, durable: bool) -> None:
        assert db is not None, "outbox is not open"
        self.db = db
        self.durable = durable

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.DatabaseError:
                self.db.execute("ROLLBACK")
                raise
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.DatabaseError:
            pass

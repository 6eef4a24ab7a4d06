"""Packing readings into IoT Hub messages toward its 4 KB billing unit, and the properties routing needs.

A telemetry message body is one JSON object, readings grouped by sensor (each sensor's name and units appear
once per message, which is what lets ~35 readings share one billed 4 KB unit):

    {"schema":"roost.telemetry.v1","outbox":"<epoch>","sensors":{
        "climate":{"units":{"temperature":"degC"},
                   "readings":[{"seq":17,"ts":1795444617.456,"values":{"temperature":21.21}},...]},
        ...}}

``seq`` with ``outbox`` identifies each reading for ever, so a consumer drops redelivered duplicates by that
pair (and restores the global order by ``seq``). The body is assembled from the stored JSON texts without
re-parsing them, and its metered size is computed exactly, so a batch stays within ``batch_max_bytes`` (a
single reading larger than that goes alone).
"""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.outbox import TELEMETRY, Item, Outbox

log = logging.getLogger(__name__)

SCHEMA = "roost.telemetry.v1"
CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"
BILLING_UNIT = 4096          # IoT Hub meters device-to-cloud messages in 4 KB units
MAX_MESSAGE_BYTES = 256 * 1024


@dataclass(frozen=True)
class Batch:
    """One message's worth of outbox items and everything the uplink needs to send it."""

    items: tuple[Item, ...]
    body: bytes
    message_id: str
    properties: Mapping[str, str]

    @property
    def seqs(self) -> list[int]:
        return [i.seq for i in self.items]

    @property
    def billed_units(self) -> int:
        return max(1, -(-metered_size(self) // BILLING_UNIT))


TELEMETRY_PROPERTIES: Mapping[str, str] = types.MappingProxyType({"schema": SCHEMA})


@functools.lru_cache(maxsize=8)
def header(epoch: str) -> str:
    return f'{{"schema":"{SCHEMA}","outbox":"{epoch}","sensors":{{'


def group_overhead(sensor: str | None, units: str | None) -> int:
    """Bytes one sensor's group adds besides its readings: `"name":{"units":{..},"readings":[` ... `]},`."""
    return len(_json_text(sensor or "")) + len(':{"units":,"readings":[]},') + len(units or "{}")


def item_overhead(seq: int) -> int:
    """Bytes a reading's stored JSON grows by when packed: `"seq":N,` and the separating comma."""
    return len('"seq":,') + len(str(seq)) + 1


def build(epoch: str, items: Sequence[Item]) -> Batch:
    """The message for a claimed run of items: a packed telemetry batch, or one event with its properties."""
    if not items:
        raise ValueError("a batch needs at least one item")
    first, last = items[0].seq, items[-1].seq
    message_id = f"{epoch}-{first}-{last}"
    if items[0].kind != TELEMETRY:
        if len(items) != 1:
            raise ValueError("events are sent one per message")
        props = {"schema": f"roost.{items[0].kind}.v1", **(items[0].props or {})}
        body = (f'{{"seq":{first},"outbox":"{epoch}",' + items[0].body[1:]).encode()
        return Batch(tuple(items), body, message_id, props)
    groups: dict[str, tuple[str, list[str]]] = {}       # sensor -> (units, packed readings), first-seen order
    for item in items:
        sensor = item.sensor or ""
        if sensor not in groups:
            groups[sensor] = (item.units or "{}", [])
        # '{"seq":N,' + rest of the stored object: no parse, no re-serialisation.
        packed = f'{{"seq":{item.seq},' + item.body[1:] if len(item.body) > 2 else f'{{"seq":{item.seq}}}'
        groups[sensor][1].append(packed)
    sensors = ",".join(f'{_json_text(sensor)}:{{"units":{units},"readings":[{",".join(readings)}]}}'
                       for sensor, (units, readings) in groups.items())
    body = (header(epoch) + sensors + "}}").encode()
    return Batch(tuple(items), body, message_id, TELEMETRY_PROPERTIES)


@functools.lru_cache(maxsize=256)
def _json_text(name: str) -> str:
    return json.dumps(name)


def claim(outbox, epoch: str, batch_max_bytes: int, max_items: int = 10_000) -> list[Item]:
    """Claim from ``outbox`` exactly what fits in one message of at most ``batch_max_bytes``."""
    return outbox.claim(body_budget(epoch, batch_max_bytes), max_items, base=envelope_size(epoch),
                        cost=packed_cost())


async def aclaim(outbox, epoch: str, batch_max_bytes: int, max_items: int = 10_000) -> list[Item]:
    return await outbox.aclaim(body_budget(epoch, batch_max_bytes), max_items, base=envelope_size(epoch),
                               cost=packed_cost())


async def aclaim_full(outbox: Outbox, epoch: str, batch_max_bytes: int, count: int) -> list[list[Item]]:
    """Up to ``count`` batches in one claim (one trip to the outbox thread and one scan of its table, if any).

    A backlog drains faster this way; only the first batch may be partly filled (the caller decided it is
    due), later ones are claimed only when full, so a partial one waits for company.
    """
    budget = body_budget(epoch, batch_max_bytes)
    base = envelope_size(epoch)
    return await outbox.aclaim_batches(count, budget, base=base, cost_factory=packed_cost)


def properties_size(epoch: str) -> int:
    """The most a telemetry message's properties can add to its metered size.

    IoT Hub meters a message as its body plus its system property values (message id, content type and
    encoding) plus its application property names and values, so those come out of the 4 KB too.
    """
    message_id = len(epoch) + 2 * (1 + 12)                      # epoch-first-last with 12-digit sequences
    application = len("schema") + len(SCHEMA)
    return message_id + len(CONTENT_TYPE) + len(CONTENT_ENCODING) + application


def body_budget(epoch: str, batch_max_bytes: int) -> int:
    """How large a telemetry body may be so the metered message stays within ``batch_max_bytes``."""
    return batch_max_bytes - properties_size(epoch)


def metered_size(batch: Batch) -> int:
    """The size IoT Hub bills for this message: body, system property values, application properties."""
    props = batch.properties
    application = (_TELEMETRY_PROPERTIES_SIZE if props is TELEMETRY_PROPERTIES
                   else sum(len(k) + len(v) for k, v in props.items()))
    return len(batch.body) + len(batch.message_id) + len(CONTENT_TYPE) + len(CONTENT_ENCODING) + application


_TELEMETRY_PROPERTIES_SIZE = sum(len(k) + len(v) for k, v in TELEMETRY_PROPERTIES.items())


def envelope_size(epoch: str) -> int:
    """Bytes of a telemetry message outside the sensor groups (header and the closing brackets)."""
    return len(header(epoch)) + len("}}")


def packed_cost() -> Callable[[Item], int]:
    """What each stored reading adds to one packed message: itself, and its sensor's group the first time."""
    seen: set[str] = set()

    def cost(item: Item) -> int:
        extra = 0
        sensor = item.sensor or ""
        if sensor not in seen:
            seen.add(sensor)
            extra = group_overhead(item.sensor, item.units)
        return len(item.body) + item_overhead(item.seq) + extra

    return cost


class Sender(Protocol):
    """What the forwarder needs from the uplink (agent.uplink.HubUplink satisfies it)."""

    @property
    def connected(self) -> bool: ...

    async def wait_connected(self, timeout: float | None = None) -> bool: ...

    async def send(self, body: bytes, *, message_id: str, properties: Mapping[str, str],
                   content_type: str = ..., content_encoding: str = ...) -> None: ...


class Forwarder:
    """Moves batches from the outbox to the uplink: in order, several in flight, each removed only on PUBACK.

    A partly filled batch waits at most ``batch_max_delay_s`` for company, measured from its oldest reading;
    a backlog (after an outage) is claimed in full batches back to back, ``max_in_flight`` at a time, while
    new readings keep joining the end of the queue. A batch that fails is retried by the same worker after
    the uplink is back, so nothing is skipped and order is kept within the in-flight window.
    """

    def __init__(self, outbox: Outbox, uplink: Sender, *, batch_max_bytes: int, batch_max_delay_s: float,
                 max_in_flight: int, clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.uplink = uplink
        self.batch_max_bytes = batch_max_bytes
        self.batch_max_delay_s = batch_max_delay_s
        self.max_in_flight = max_in_flight
        self.clock = clock
        self.flushing = False        # at shutdown: send partial batches at once
        self.retries = 0
        self.billed_units = 0
        self._wakeup = asyncio.Event()
        self._claim_lock = asyncio.Lock()
        self._refills: set[asyncio.Task] = set()
        self._refilling = False
        self._ready: collections.deque[list[Item]] = collections.deque()   # claimed, not yet taken by a worker
        self._stopping = False

    def notify(self) -> None:
        """New readings are in the outbox."""
        self._wakeup.set()

    async def run(self) -> None:
        workers = [asyncio.create_task(self._worker(n), name=f"roost-forwarder-{n}")
                   for n in range(self.max_in_flight)]
        try:
            await asyncio.gather(*workers)
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await asyncio.gather(*self._refills, return_exceptions=True)
            # Acknowledgements already received must reach the outbox, or those batches are sent twice.
            await self.outbox.aflush_acks()

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()
        while self._ready:   # claimed for a worker that will not send it now: next start sends it
            self.outbox.release(self._ready.popleft())

    async def _worker(self, n: int) -> None:
        while not self._stopping:
            if not self.uplink.connected:
                await self.uplink.wait_connected(timeout=1.0)
                continue
            items = await self._next_batch()
            if not items:
                continue
            batch = build(self.outbox.epoch, items)
            while True:
                try:
                    await self.uplink.send(batch.body, message_id=batch.message_id, properties=batch.properties,
                                           content_type=CONTENT_TYPE, content_encoding=CONTENT_ENCODING)
                    break
                except ConnectionError as exc:
                    self.retries += 1
                    log.debug("batch %s waits for the hub: %s", batch.message_id, exc)
                    if self._stopping:
                        self.outbox.release(list(items))
                        return
                    await self.uplink.wait_connected(timeout=1.0)
            self.billed_units += batch.billed_units
            # The worker moves on to its next batch while the outbox thread deletes this one (acks coalesce).
            self.outbox.ack_soon(batch.seqs)
            # Not kept alive while this worker waits, perhaps for hours: after a backlog, 16 idle workers would
            # otherwise hold up to 16 full batches of readings.
            items = batch = None

    async def _next_batch(self) -> list[Item]:
        """Wait until a batch is worth sending, then claim it (one worker decides and claims at a time)."""
        if self._ready:
            items = self._ready.popleft()
            self._refill_soon()
            return items
        async with self._claim_lock:
            while not self._stopping:
                if self._ready:   # a refill landed while this worker waited for the lock
                    return self._ready.popleft()
                if self._backlog():
                    # Claim a batch for every worker in one trip to the outbox thread.
                    self._ready.extend(await aclaim_full(self.outbox, self.outbox.epoch, self.batch_max_bytes,
                                                         self.max_in_flight))
                    continue
                _json_bytes, count, oldest = self.outbox.pending()
                if count:
                    age = self.clock() - oldest if oldest is not None else 0.0
                    wait_s = self.batch_max_delay_s - age
                    if wait_s <= 0 or self.flushing:
                        return await aclaim(self.outbox, self.outbox.epoch, self.batch_max_bytes)
                    # A clock stepped backwards makes age negative: never wait longer than the delay itself.
                    timeout = min(wait_s, self.batch_max_delay_s)
                else:
                    timeout = 1.0
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), timeout)
                except TimeoutError:
                    pass
                if not self.uplink.connected:
                    return []
            return []

    def _backlog(self) -> bool:
        """At least one full message is waiting to be claimed."""
        json_bytes, count, _ = self.outbox.pending()
        estimate = envelope_size(self.outbox.epoch) + json_bytes + count * item_overhead(self.outbox.next_seq)
        return count > 0 and estimate >= body_budget(self.outbox.epoch, self.batch_max_bytes)

    def _refill_soon(self) -> None:
        """Keep claimed batches ahead of the workers while a backlog drains, so none waits for the outbox."""
        if self._refilling or self._stopping or len(self._ready) >= self.max_in_flight or not self._backlog():
            return
        self._refilling = True

        async def refill() -> None:
            try:
                async with self._claim_lock:
                    if self._backlog() and not self._stopping:
                        self._ready.extend(await aclaim_full(self.outbox, self.outbox.epoch, self.batch_max_bytes,
                                                             self.max_in_flight))
            finally:
                self._refilling = False

        task = asyncio.create_task(refill())
        self._refills.add(task)      # awaited at shutdown
        task.add_done_callback(self._refills.discard)

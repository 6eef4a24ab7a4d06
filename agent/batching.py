"""Packing readings into IoT Hub messages toward its 4 KB billing unit, and the properties routing needs.

A telemetry message body is one JSON object:

    {"schema":"roost.telemetry.v1","outbox":"<epoch>",
     "readings":[{"seq":17,"sensor":"climate","ts":1795444617.456,"values":{"temperature":21.21}},...],
     "units":{"climate":{"temperature":"degC"}}}

``seq`` with ``outbox`` identifies each reading for ever, so a consumer drops redelivered duplicates by that
pair. The body is assembled from the stored JSON texts without re-parsing them, and its size is exact, so a
batch stays within ``batch_max_bytes`` (a single reading larger than that goes alone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
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


def header(epoch: str) -> str:
    return f'{{"schema":"{SCHEMA}","outbox":"{epoch}","readings":['


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
    # '{"seq":N,' + rest of the stored object: no parse, no re-serialisation.
    parts = [f'{{"seq":{i.seq},' + i.body[1:] if len(i.body) > 2 else f'{{"seq":{i.seq}}}' for i in items]
    units: dict[str, str] = {}
    for item in items:
        if item.sensor is not None and item.units and item.sensor not in units:
            units[item.sensor] = item.units
    unit_map = ",".join(f"{json.dumps(sensor)}:{text}" for sensor, text in units.items())
    body = (header(epoch) + ",".join(parts) + '],"units":{' + unit_map + "}}").encode()
    return Batch(tuple(items), body, message_id, {"schema": SCHEMA})


def claim(outbox, epoch: str, batch_max_bytes: int, max_items: int = 10_000) -> list[Item]:
    """Claim from ``outbox`` exactly what fits in one message of at most ``batch_max_bytes``."""
    return outbox.claim(body_budget(epoch, batch_max_bytes), max_items, base=envelope_size(epoch),
                        cost=packed_cost())


async def aclaim(outbox, epoch: str, batch_max_bytes: int, max_items: int = 10_000) -> list[Item]:
    return await outbox.aclaim(body_budget(epoch, batch_max_bytes), max_items, base=envelope_size(epoch),
                               cost=packed_cost())


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
    return (len(batch.body) + len(batch.message_id) + len(CONTENT_TYPE) + len(CONTENT_ENCODING)
            + sum(len(k) + len(v) for k, v in batch.properties.items()))


def envelope_size(epoch: str) -> int:
    """Bytes of a telemetry message that are not readings or units (header and the closing part)."""
    return len(header(epoch)) + len('],"units":{}}')


def packed_cost() -> Callable[[Item], int]:
    """What each stored reading adds to one packed message: itself, and its sensor's units the first time."""
    seen: set[str] = set()

    def cost(item: Item) -> int:
        extra = 0
        if item.sensor is not None and item.units and item.sensor not in seen:
            seen.add(item.sensor)
            extra = len(json.dumps(item.sensor)) + 1 + len(item.units) + 1
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

    def stop(self) -> None:
        self._stopping = True
        self._wakeup.set()

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
            await self.outbox.aack(batch.seqs)

    async def _next_batch(self) -> list[Item]:
        """Wait until a batch is worth sending, then claim it (one worker decides and claims at a time)."""
        async with self._claim_lock:
            while not self._stopping:
                json_bytes, count, oldest = self.outbox.pending()
                if count:
                    estimate = envelope_size(self.outbox.epoch) + json_bytes + count * item_overhead(
                        self.outbox.next_seq)
                    age = self.clock() - oldest if oldest is not None else 0.0
                    wait_s = self.batch_max_delay_s - age
                    if estimate >= body_budget(self.outbox.epoch, self.batch_max_bytes) or wait_s <= 0 \
                            or self.flushing:
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

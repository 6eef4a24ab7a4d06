"""Packing readings into IoT Hub messages toward its 4 KB billing unit, and the properties routing needs.

A telemetry message body is one JSON object:

    {"schema":"roost.telemetry.v1","outbox":"<epoch>","readings":[{"seq":17,"sensor":"bme280",...},...]}

``seq`` with ``outbox`` identifies each reading for ever, so a consumer drops redelivered duplicates by that
pair. The body is assembled from the stored JSON texts without re-parsing them, and its size is exact, so a
batch stays within ``batch_max_bytes`` (a single reading larger than that goes alone).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.outbox import TELEMETRY, Item

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
        return max(1, -(-len(self.body) // BILLING_UNIT))


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
    body = (header(epoch) + ",".join(parts) + "]}").encode()
    return Batch(tuple(items), body, message_id, {"schema": SCHEMA, "count": str(len(items))})


def claim(outbox, epoch: str, batch_max_bytes: int, max_items: int = 10_000) -> list[Item]:
    """Claim from ``outbox`` exactly what fits in one message of at most ``batch_max_bytes``."""
    return outbox.claim(batch_max_bytes, max_items, base=envelope_size(epoch), cost=packed_cost)


async def aclaim(outbox, epoch: str, batch_max_bytes: int, max_items: int = 10_000) -> list[Item]:
    return await outbox.aclaim(batch_max_bytes, max_items, base=envelope_size(epoch), cost=packed_cost)


def envelope_size(epoch: str) -> int:
    """Bytes of a telemetry message that are not readings (header and closing brackets, less one comma)."""
    return len(header(epoch)) + len("]}") - 1


def packed_cost(item: Item) -> int:
    """What one stored reading adds to a packed message."""
    return len(item.body) + item_overhead(item.seq)

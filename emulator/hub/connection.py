"""One MQTT connection on the server side: read packets, write packets, QoS 1 publish with PUBACK wait."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

from emulator.hub import codec

log = logging.getLogger(__name__)


# asyncio gives every TLS connection a 256 KiB read buffer, written at once, so each idle device would cost
# a quarter megabyte. TLS records are at most 16 KiB: 32 KiB reads lose nothing.
_TLS_READ_BUFFER = 32 * 1024


def _shrink_tls_read_buffer(writer: asyncio.StreamWriter) -> None:
    """Replace asyncio's per-connection TLS read buffer with a smaller one (CPython 3.11-3.13 internals;
    left alone when they are not there)."""
    protocol = getattr(writer.transport, "_ssl_protocol", None)
    if protocol is None or not all(hasattr(protocol, a) for a in ("max_size", "_ssl_buffer", "_ssl_buffer_view")):
        return
    if protocol.max_size <= _TLS_READ_BUFFER:
        return
    protocol.max_size = _TLS_READ_BUFFER
    protocol._ssl_buffer = bytearray(_TLS_READ_BUFFER)
    protocol._ssl_buffer_view = memoryview(protocol._ssl_buffer)


class ConnectionClosed(Exception):
    """The peer went away or the connection was closed by the server."""


class MqttConnection:
    """Wraps an asyncio stream pair. Writes never block the caller; :meth:`drain` applies back-pressure."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_packet: int) -> None:
        self.reader = reader
        self.writer = writer
        self.max_packet = max_packet
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.ssl_object: ssl.SSLObject | None = writer.get_extra_info("ssl_object")
        _shrink_tls_read_buffer(writer)
        self.keep_alive = 0
        self.closed = asyncio.Event()
        self.close_reason = ""
        self._next_id = 0
        self._acks: dict[int, asyncio.Future[None]] = {}
        self._on_ack: dict[int, Callable[[], None]] = {}

    async def read(self) -> codec.Packet:
        """The next packet; enforces keep-alive (1.5 x the client's interval, MQTT-3.1.2-24)."""
        try:
            if self.keep_alive:
                async with asyncio.timeout(self.keep_alive * 1.5):
                    return await codec.read_packet(self.reader, self.max_packet)
            return await codec.read_packet(self.reader, self.max_packet)
        except TimeoutError:
            raise ConnectionClosed(f"no packet within 1.5 x keep-alive ({self.keep_alive} s)") from None
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError) as exc:
            raise ConnectionClosed(f"connection lost: {type(exc).__name__}") from None

    def send(self, packet: codec.Packet) -> None:
        if self.closed.is_set():
            raise ConnectionClosed(self.close_reason or "connection closed")
        self.writer.write(codec.encode(packet))

    async def drain(self) -> None:
        try:
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise ConnectionClosed(f"connection lost: {type(exc).__name__}") from None

    def packet_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._acks:
                return self._next_id
        raise ConnectionClosed("65535 QoS 1 messages in flight")

    async def publish(self, topic: str, payload: bytes, qos: int = 0,
                      on_ack: Callable[[], None] | None = None) -> None:
        """Send a PUBLISH; with QoS 1 wait for the client's PUBACK (raises ConnectionClosed if it never comes).

        ``on_ack`` runs as soon as the PUBACK is read, even if the connection closes right after, so the
        caller's bookkeeping never misses an acknowledgement that arrived.
        """
        if qos == 0:
            self.send(codec.Publish(topic, payload))
            await self.drain()
            return
        pid = self.packet_id()
        future = asyncio.get_running_loop().create_future()
        self._acks[pid] = future
        if on_ack is not None:
            self._on_ack[pid] = on_ack
        try:
            self.send(codec.Publish(topic, payload, qos=1, packet_id=pid))
            await self.drain()
            closed = asyncio.ensure_future(self.closed.wait())
            try:
                await asyncio.wait((future, closed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
            if not future.done():
                raise ConnectionClosed(self.close_reason or "connection closed before PUBACK")
        finally:
            self._acks.pop(pid, None)
            self._on_ack.pop(pid, None)

    def puback_received(self, packet_id: int) -> None:
        future = self._acks.get(packet_id)
        if future and not future.done():
            future.set_result(None)
            callback = self._on_ack.pop(packet_id, None)
            if callback is not None:
                callback()

    def close(self, reason: str, *, abort: bool = False) -> None:
        """Close the connection (idempotent); ``reason`` is kept for logs and tests.

        The reader is ended at once, so the session's read loop finishes now rather than when TLS has
        exchanged close_notify with a peer that may never answer; ``abort`` also drops unsent data.
        """
        if not self.closed.is_set():
            self.close_reason = reason
            self.closed.set()
            log.info("connection %s closed: %s", self.peer, reason)
        with contextlib.suppress(Exception):
            self.writer.close()
        self.reader.feed_eof()
        if abort:
            with contextlib.suppress(Exception):
                self.writer.transport.abort()

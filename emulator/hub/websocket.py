"""MQTT over WebSockets (RFC 6455), as IoT Hub, DPS and IoT Edge serve it on port 443.

A device SDK created with ``websockets=True`` opens TLS to port 443, asks to upgrade ``GET /$iothub/websocket``
with the ``mqtt`` subprotocol, then sends its MQTT packets in masked binary frames. :func:`accept` answers the
upgrade and returns a stream pair that carries the frames' payloads, so the emulator's MQTT code serves the
connection unchanged. Networks that allow only HTTPS out (a proxy, a firewall closed to 8883) are why devices
use it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import struct
from typing import Any

log = logging.getLogger(__name__)

PATH = "/$iothub/websocket"
SUBPROTOCOL = "mqtt"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455 section 1.3

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_UNSUPPORTED_DATA, CLOSE_TOO_BIG = 1000, 1002, 1003, 1009


class HandshakeRefused(Exception):
    """An upgrade request that cannot be accepted: ``status`` and a message saying what to change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class FrameError(Exception):
    """A frame that breaks RFC 6455; ``code`` is the close code the connection ends with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def check_upgrade(method: str, path: str, headers: dict[str, str]) -> str:
    """The accept key for a valid upgrade request to the MQTT endpoint; raises HandshakeRefused otherwise.

    ``headers`` are keyed in lower case.
    """
    if path != PATH:
        raise HandshakeRefused(404, f"MQTT over WebSockets is served at {PATH}, not {path}")
    if method != "GET":
        raise HandshakeRefused(405, f"a WebSocket upgrade is a GET, not {method}")
    if "websocket" not in headers.get("upgrade", "").lower() or \
            "upgrade" not in headers.get("connection", "").lower():
        raise HandshakeRefused(426, "send Upgrade: websocket and Connection: Upgrade")
    if headers.get("sec-websocket-version") != "13":
        raise HandshakeRefused(426, "only WebSocket version 13 is supported (Sec-WebSocket-Version: 13)")
    protocols = [p.strip().lower() for p in headers.get("sec-websocket-protocol", "").split(",")]
    if SUBPROTOCOL not in protocols:
        raise HandshakeRefused(400, "ask for the mqtt subprotocol (Sec-WebSocket-Protocol: mqtt)")
    key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise HandshakeRefused(400, "Sec-WebSocket-Key must be 16 random bytes in base64") from None
    return accept_key(key)


def switching_protocols(accept: str) -> bytes:
    return (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n").encode("ascii")


def encode_frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, unmasked frame, as a server sends them."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return encode_frame(CLOSE, struct.pack("!H", code) + reason.encode("utf-8")[:120])


async def read_frame(reader: asyncio.StreamReader, max_payload: int) -> tuple[bool, int, bytes]:
    """(final, opcode, unmasked payload) of the next frame from a client."""
    first, second = await reader.readexactly(2)
    if first & 0x70:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "reserved bits set without a negotiated extension")
    final, opcode = bool(first & 0x80), first & 0x0F
    if not second & 0x80:
        raise FrameError(CLOSE_PROTOCOL_ERROR, "client frames must be masked (RFC 6455 section 5.1)")
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    if opcode >= CLOSE and (length > 125 or not final):
        raise FrameError(CLOSE_PROTOCOL_ERROR, "control frames carry at most 125 bytes and are never fragmented")
    if length > max_payload:
        raise FrameError(CLOSE_TOO_BIG, f"frame of {length} bytes exceeds the limit of {max_payload} bytes")
    mask = await reader.readexactly(4)
    data = await reader.readexactly(length)
    # XOR with the repeated 4-byte key as one big integer: no per-byte Python loop.
    key = int.from_bytes(mask * (length // 4 + 1), "big") >> (8 * (4 - length % 4))
    payload = (int.from_bytes(data, "big") ^ key).to_bytes(length, "big") if length else b""
    return final, opcode, payload


class FramedWriter:
    """What the MQTT code writes, sent as binary frames over the TLS stream; the rest is the stream's."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.transport = writer.transport

    def write(self, data: bytes) -> None:
        if data:
            self._writer.write(encode_frame(BINARY, bytes(data)))

    def write_raw(self, frame: bytes) -> None:
        self._writer.write(frame)

    async def drain(self) -> None:
        await self._writer.drain()

    def close(self) -> None:
        if not self._writer.is_closing():
            with contextlib.suppress(Exception):
                self._writer.write(close_frame(CLOSE_NORMAL))
        self._writer.close()

    def is_closing(self) -> bool:
        return self._writer.is_closing()

    async def wait_closed(self) -> None:
        await self._writer.wait_closed()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._writer.get_extra_info(name, default)


async def pump(reader: asyncio.StreamReader, writer: FramedWriter, into: asyncio.StreamReader,
               max_payload: int) -> None:
    """Feed the payloads of binary frames to ``into`` until the client closes or breaks the protocol.

    Pings are answered; text frames are refused (MQTT is binary); a protocol error ends the connection with
    its close code, and ``into`` always ends, so the MQTT session sees the connection go.
    """
    try:
        while True:
            # MQTT is a byte stream: frame and fragment boundaries carry no meaning, so payloads just flow on.
            _final, opcode, payload = await read_frame(reader, max_payload)
            if opcode in (BINARY, CONTINUATION):
                into.feed_data(payload)
            elif opcode == PING:
                writer.write_raw(encode_frame(PONG, payload))
            elif opcode == PONG:
                pass
            elif opcode == CLOSE:
                writer.write_raw(encode_frame(CLOSE, payload[:2]))
                return
            elif opcode == TEXT:
                raise FrameError(CLOSE_UNSUPPORTED_DATA, "MQTT travels in binary frames, not text")
            else:
                raise FrameError(CLOSE_PROTOCOL_ERROR, f"opcode {opcode:#x} is not defined")
    except FrameError as exc:
        log.info("WebSocket closed: %s", exc)
        with contextlib.suppress(Exception):
            writer.write_raw(close_frame(exc.code, str(exc)))
    except (asyncio.IncompleteReadError, ConnectionError, OSError):
        pass
    finally:
        into.feed_eof()

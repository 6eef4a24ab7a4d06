"""MQTT 3.1.1 packets: decode from bytes, encode to bytes.

Only what IoT Hub and DPS speak: QoS 0 and 1, no retained-message store, no MQTT 5. The decoder is strict
(reserved flags, protocol name, UTF-8, wildcards in publish topics) because a lenient decoder turns a
client bug into silent misbehaviour; every refusal raises :class:`MalformedPacket` saying what was wrong.

Decoding is split so a stream reader and a fuzzer share it: :func:`decode_remaining_length` reads the
variable-length header, :func:`decode` turns (first byte, body) into a packet object.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field
from enum import IntEnum


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnackCode(IntEnum):
    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_CREDENTIALS = 4
    NOT_AUTHORIZED = 5


SUBACK_FAILURE = 0x80
MAX_REMAINING_LENGTH = 268_435_455  # the largest value four length bytes can carry


class MalformedPacket(ValueError):
    """The bytes are not a valid MQTT 3.1.1 packet; the connection must be closed."""


class PacketTooLarge(MalformedPacket):
    """The packet announces more bytes than the receiver accepts."""


@dataclass
class Connect:
    client_id: str
    username: str | None = None
    password: bytes | None = field(default=None, repr=False)  # a SAS token: never in logs
    clean_session: bool = True
    keep_alive: int = 60
    will_topic: str | None = None
    will_message: bytes | None = None
    will_qos: int = 0
    will_retain: bool = False
    protocol_level: int = 4


@dataclass
class Connack:
    return_code: int
    session_present: bool = False


@dataclass
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    packet_id: int | None = None
    retain: bool = False
    dup: bool = False


@dataclass
class Subscribe:
    packet_id: int
    topics: list[tuple[str, int]]


@dataclass
class Suback:
    packet_id: int
    return_codes: list[int]


@dataclass
class Unsubscribe:
    packet_id: int
    topics: list[str]


@dataclass
class Ack:
    """PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK: a type and a packet id."""

    kind: PacketType
    packet_id: int


@dataclass
class Control:
    """PINGREQ, PINGRESP, DISCONNECT: a type and nothing else."""

    kind: PacketType


Packet = Connect | Connack | Publish | Subscribe | Suback | Unsubscribe | Ack | Control

_ACK_KINDS = (PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP, PacketType.UNSUBACK)
_CONTROL_KINDS = (PacketType.PINGREQ, PacketType.PINGRESP, PacketType.DISCONNECT)
# MQTT-2.2.2-1: these packets carry fixed header flags 0b0010, every other non-PUBLISH packet 0b0000.
_FLAGS_0010 = (PacketType.PUBREL, PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE)


# --- decoding -------------------------------------------------------------------------------------------

def decode_remaining_length(data: bytes, offset: int = 1) -> tuple[int, int] | None:
    """(remaining length, offset of the body) from ``data``, or None if more bytes are needed."""
    value = 0
    for i in range(4):
        if offset + i >= len(data):
            return None
        byte = data[offset + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if i > 0 and byte == 0:
                raise MalformedPacket("remaining length is not minimally encoded")
            return value, offset + i + 1
    raise MalformedPacket("remaining length longer than 4 bytes")


class _Body:
    """A cursor over a packet body that raises MalformedPacket instead of IndexError."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > self.remaining():
            raise MalformedPacket(f"packet ends inside {what} (needs {n} bytes, {self.remaining()} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("!H", self.take(2, what))[0]

    def binary(self, what: str) -> bytes:
        return self.take(self.u16(f"length of {what}"), what)

    def text(self, what: str) -> str:
        raw = self.binary(what)
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacket(f"{what} is not valid UTF-8") from exc
        if "\x00" in value:
            raise MalformedPacket(f"{what} contains U+0000")  # MQTT-1.5.3-2
        return value

    def packet_id(self, what: str) -> int:
        pid = self.u16(f"packet id of {what}")
        if pid == 0:
            raise MalformedPacket(f"{what} has packet id 0")  # MQTT-2.3.1-1
        return pid

    def end(self, what: str) -> None:
        if self.remaining():
            raise MalformedPacket(f"{self.remaining()} unexpected trailing bytes after {what}")


def decode(first_byte: int, body: bytes) -> Packet:
    """Decode one packet from its first header byte and its body (the bytes after the remaining length)."""
    try:
        kind = PacketType(first_byte >> 4)
    except ValueError:
        raise MalformedPacket(f"packet type {first_byte >> 4} does not exist in MQTT 3.1.1") from None
    flags = first_byte & 0x0F
    if kind is not PacketType.PUBLISH:
        expected = 0b0010 if kind in _FLAGS_0010 else 0
        if flags != expected:
            raise MalformedPacket(f"{kind.name} has fixed header flags {flags:#06b}, expected {expected:#06b}")
    cur = _Body(body)
    if kind is PacketType.CONNECT:
        return _decode_connect(cur)
    if kind is PacketType.CONNACK:
        ack_flags = cur.u8("CONNACK flags")
        if ack_flags & 0xFE:
            raise MalformedPacket("CONNACK reserved flags are set")
        packet = Connack(return_code=cur.u8("CONNACK return code"), session_present=bool(ack_flags & 1))
        cur.end("CONNACK")
        return packet
    if kind is PacketType.PUBLISH:
        return _decode_publish(flags, cur)
    if kind in _ACK_KINDS:
        packet_ack = Ack(kind, cur.packet_id(kind.name))
        cur.end(kind.name)
        return packet_ack
    if kind is PacketType.SUBSCRIBE:
        pid = cur.packet_id("SUBSCRIBE")
        topics = []
        while cur.remaining():
            topic = cur.text("topic filter")
            qos = cur.u8("requested QoS")
            if qos > 2:  # MQTT-3-8.3-4: reserved bits zero, QoS 3 does not exist
                raise MalformedPacket(f"requested QoS byte {qos:#04x} is invalid (0, 1 or 2)")
            _check_filter(topic)
            topics.append((topic, qos))
        if not topics:
            raise MalformedPacket("SUBSCRIBE without any topic filter")  # MQTT-3.8.3-3
        return Subscribe(pid, topics)
    if kind is PacketType.SUBACK:
        pid = cur.packet_id("SUBACK")
        codes = list(cur.take(cur.remaining(), "SUBACK return codes"))
        for code in codes:
            if code not in (0, 1, 2, SUBACK_FAILURE):
                raise MalformedPacket(f"SUBACK return code {code:#04x} is invalid")
        return Suback(pid, codes)
    if kind is PacketType.UNSUBSCRIBE:
        pid = cur.packet_id("UNSUBSCRIBE")
        filters = []
        while cur.remaining():
            topic = cur.text("topic filter")
            _check_filter(topic)
            filters.append(topic)
        if not filters:
            raise MalformedPacket("UNSUBSCRIBE without any topic filter")
        return Unsubscribe(pid, filters)
    cur.end(kind.name)
    return Control(kind)


def _decode_connect(cur: _Body) -> Connect:
    name = cur.binary("protocol name")
    level = cur.u8("protocol level")
    if name != b"MQTT":
        raise MalformedPacket(f"protocol name {name!r} is not 'MQTT' (MQTT 3.1.1 only)")
    flags = cur.u8("connect flags")
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set")  # MQTT-3.1.2-3
    keep_alive = cur.u16("keep alive")
    client_id = cur.text("client id")
    will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    if not will and (will_qos or will_retain):
        raise MalformedPacket("will QoS/retain set without a will")  # MQTT-3.1.2-13/15
    if will_qos == 3:
        raise MalformedPacket("will QoS 3 does not exist")
    has_user, has_password = bool(flags & 0x80), bool(flags & 0x40)
    if has_password and not has_user:
        raise MalformedPacket("password given without a user name")  # MQTT-3.1.2-22
    packet = Connect(client_id=client_id, clean_session=bool(flags & 0x02), keep_alive=keep_alive,
                     will_qos=will_qos, will_retain=will_retain, protocol_level=level)
    if will:
        packet.will_topic = cur.text("will topic")
        packet.will_message = cur.binary("will message")
    if has_user:
        packet.username = cur.text("user name")
    if has_password:
        packet.password = cur.binary("password")
    cur.end("CONNECT")
    return packet


def _decode_publish(flags: int, cur: _Body) -> Publish:
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")  # MQTT-3.3.1-4
    dup = bool(flags & 0x08)
    if qos == 0 and dup:
        raise MalformedPacket("PUBLISH QoS 0 with DUP set")  # MQTT-3.3.1-2
    topic = cur.text("topic name")
    if not topic:
        raise MalformedPacket("PUBLISH with an empty topic name")
    if "+" in topic or "#" in topic:
        raise MalformedPacket(f"PUBLISH topic {topic[:80]!r} contains a wildcard")  # MQTT-3.3.2-2
    pid = cur.packet_id("PUBLISH") if qos else None
    return Publish(topic=topic, payload=cur.take(cur.remaining(), "payload"), qos=qos, packet_id=pid,
                   retain=bool(flags & 0x01), dup=dup)


def _check_filter(topic: str) -> None:
    if not topic:
        raise MalformedPacket("empty topic filter")  # MQTT-4.7.3-1
    levels = topic.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise MalformedPacket(f"topic filter {topic[:80]!r}: '#' must be a whole last level")
        if "+" in level and level != "+":
            raise MalformedPacket(f"topic filter {topic[:80]!r}: '+' must be a whole level")


async def read_packet(reader: asyncio.StreamReader, max_size: int) -> Packet:
    """Read one packet from a stream; raises PacketTooLarge before reading a body above ``max_size`` bytes.

    Raises asyncio.IncompleteReadError when the peer closes the stream.
    """
    header = await reader.readexactly(2)
    if not 1 <= header[0] >> 4 <= 14:  # refuse at once rather than wait for the body of a non-packet
        raise MalformedPacket(f"packet type {header[0] >> 4} does not exist in MQTT 3.1.1")
    while True:
        parsed = decode_remaining_length(header)
        if parsed is not None:
            break
        header += await reader.readexactly(1)
    length, _ = parsed
    if length > max_size:
        raise PacketTooLarge(f"packet of {length} bytes exceeds the limit of {max_size} bytes")
    body = await reader.readexactly(length) if length else b""
    return decode(header[0], body)


def split_packets(data: bytes, max_size: int = MAX_REMAINING_LENGTH) -> tuple[list[Packet], bytes]:
    """Decode every complete packet at the start of ``data``; returns (packets, unconsumed rest)."""
    packets: list[Packet] = []
    while len(data) >= 2:
        parsed = decode_remaining_length(data)
        if parsed is None:
            break
        length, start = parsed
        if length > max_size:
            raise PacketTooLarge(f"packet of {length} bytes exceeds the limit of {max_size} bytes")
        if len(data) < start + length:
            break
        packets.append(decode(data[0], data[start:start + length]))
        data = data[start + length:]
    return packets, data


# --- encoding -------------------------------------------------------------------------------------------

def _length(n: int) -> bytes:
    if n > MAX_REMAINING_LENGTH:
        raise ValueError(f"MQTT packets carry at most {MAX_REMAINING_LENGTH} bytes, not {n}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bin(data: bytes) -> bytes:
    if len(data) > 0xFFFF:
        raise ValueError(f"an MQTT string holds at most 65535 bytes, not {len(data)}")
    return struct.pack("!H", len(data)) + data


def _str(text: str) -> bytes:
    return _bin(text.encode("utf-8"))


def _frame(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _length(len(body)) + body


def encode(packet: Packet) -> bytes:
    """The wire bytes of ``packet``."""
    if isinstance(packet, Publish):
        first = (PacketType.PUBLISH << 4) | (packet.qos << 1) | (0x08 if packet.dup else 0) | int(packet.retain)
        body = _str(packet.topic)
        if packet.qos:
            body += struct.pack("!H", packet.packet_id or 0)
        return _frame(first, body + packet.payload)
    if isinstance(packet, Ack):
        flags = 0b0010 if packet.kind in _FLAGS_0010 else 0
        return _frame((packet.kind << 4) | flags, struct.pack("!H", packet.packet_id))
    if isinstance(packet, Control):
        return bytes(((packet.kind << 4), 0))
    if isinstance(packet, Connack):
        return bytes(((PacketType.CONNACK << 4), 2, int(packet.session_present), packet.return_code))
    if isinstance(packet, Suback):
        return _frame(PacketType.SUBACK << 4, struct.pack("!H", packet.packet_id) + bytes(packet.return_codes))
    if isinstance(packet, Subscribe):
        body = struct.pack("!H", packet.packet_id) + b"".join(_str(t) + bytes((q,)) for t, q in packet.topics)
        return _frame((PacketType.SUBSCRIBE << 4) | 0b0010, body)
    if isinstance(packet, Unsubscribe):
        body = struct.pack("!H", packet.packet_id) + b"".join(_str(t) for t in packet.topics)
        return _frame((PacketType.UNSUBSCRIBE << 4) | 0b0010, body)
    if isinstance(packet, Connect):
        return _encode_connect(packet)
    raise TypeError(f"cannot encode {type(packet).__name__}")


def _encode_connect(packet: Connect) -> bytes:
    flags = 0x02 if packet.clean_session else 0
    tail = _str(packet.client_id)
    if packet.will_topic is not None:
        flags |= 0x04 | (packet.will_qos << 3) | (0x20 if packet.will_retain else 0)
        tail += _str(packet.will_topic) + _bin(packet.will_message or b"")
    if packet.username is not None:
        flags |= 0x80
        tail += _str(packet.username)
    if packet.password is not None:
        flags |= 0x40
        tail += _bin(packet.password)
    body = _str("MQTT") + bytes((packet.protocol_level, flags)) + struct.pack("!H", packet.keep_alive) + tail
    return _frame(PacketType.CONNECT << 4, body)

"""The MQTT 3.1.1 codec: round trips, strictness, and a fuzzed decoder that only ever says MalformedPacket."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.hub import codec
from emulator.hub.codec import (
    Ack,
    Connack,
    Connect,
    Control,
    MalformedPacket,
    PacketType,
    Publish,
    Suback,
    Subscribe,
    Unsubscribe,
)

text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
topic_name = text.filter(lambda t: t and "+" not in t and "#" not in t)
packet_id = st.integers(1, 65535)
topic_filter = st.lists(st.sampled_from(["a", "b", "+", "$iothub", "devices"]), min_size=1, max_size=4).map(
    "/".join) | st.just("#")

packets = st.one_of(
    st.builds(Connect, client_id=text, username=st.none() | text, password=st.none(), clean_session=st.booleans(),
              keep_alive=st.integers(0, 65535)),
    st.builds(lambda c, u, p: Connect(client_id=c, username=u, password=p), text, text, st.binary(max_size=64)),
    st.builds(Connect, client_id=text, will_topic=topic_name, will_message=st.binary(max_size=20),
              will_qos=st.integers(0, 2), will_retain=st.booleans()),
    st.builds(Connack, return_code=st.integers(0, 5), session_present=st.booleans()),
    st.builds(lambda t, p, r: Publish(t, p, 0, None, r), topic_name, st.binary(max_size=300), st.booleans()),
    st.builds(lambda t, p, i, d: Publish(t, p, 1, i, dup=d), topic_name, st.binary(max_size=300), packet_id,
              st.booleans()),
    st.builds(Subscribe, packet_id, st.lists(st.tuples(topic_filter, st.integers(0, 2)), min_size=1, max_size=4)),
    st.builds(Suback, packet_id, st.lists(st.sampled_from([0, 1, 2, 0x80]), max_size=4)),
    st.builds(Unsubscribe, packet_id, st.lists(topic_filter, min_size=1, max_size=4)),
    st.builds(Ack, st.sampled_from([PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP,
                                    PacketType.UNSUBACK]), packet_id),
    st.builds(Control, st.sampled_from([PacketType.PINGREQ, PacketType.PINGRESP, PacketType.DISCONNECT])),
)


@given(packets)
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_encode_then_decode_is_identity(packet):
    decoded, rest = codec.split_packets(codec.encode(packet))
    assert decoded == [packet] and rest == b""


@given(st.binary(max_size=200))
@settings(max_examples=2000)
def test_fuzzed_bytes_decode_or_raise_malformed_only(data):
    try:
        packets, rest = codec.split_packets(data)
    except MalformedPacket:
        return
    assert len(rest) <= len(data)
    for packet in packets:
        codec.encode(packet)  # whatever decodes is a packet we can also write


@given(packets, st.integers(0, 30), st.binary(min_size=1, max_size=3))
@settings(max_examples=400)
def test_mutated_valid_packets_never_crash_the_decoder(packet, position, replacement):
    data = bytearray(codec.encode(packet))
    position %= len(data)
    data[position:position + len(replacement)] = replacement
    try:
        codec.split_packets(bytes(data))
    except MalformedPacket:
        pass


@given(st.lists(packets, min_size=1, max_size=5), st.integers(1, 7))
def test_stream_reader_reassembles_packets_split_anywhere(items, chunk):
    wire = b"".join(codec.encode(p) for p in items)

    async def read_all():
        reader = asyncio.StreamReader()
        for i in range(0, len(wire), chunk):
            reader.feed_data(wire[i:i + chunk])
        reader.feed_eof()
        return [await codec.read_packet(reader, 1 << 20) for _ in items]

    assert asyncio.run(read_all()) == items


@pytest.mark.parametrize(("data", "message"), [
    (b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00", "reserved flag"),
    (b"\x10\x0c\x00\x04MQTX\x04\x02\x00\x3c\x00\x00", "protocol name"),
    (b"\x10\x0c\x00\x04MQTT\x04\x42\x00\x3c\x00\x00", "password given without a user name"),
    (b"\x10\x0c\x00\x04MQTT\x04\x1e\x00\x3c\x00\x00", "will QoS 3"),
    (b"\x10\x0c\x00\x04MQTT\x04\x08\x00\x3c\x00\x00", "without a will"),
    (b"\x36\x05\x00\x01a\x00\x01", "QoS 3"),
    (b"\x38\x03\x00\x01a", "DUP set"),
    (b"\x32\x05\x00\x01a\x00\x00", "packet id 0"),
    (b"\x30\x05\x00\x03a/#", "wildcard"),
    (b"\x30\x02\x00\x00", "empty topic"),
    (b"\x30\x04\x00\x02\xc3\x28", "UTF-8"),
    (b"\x30\x04\x00\x02a\x00", r"U\+0000"),
    (b"\x80\x02\x00\x01", "flags"),
    (b"\x82\x02\x00\x01", "without any topic filter"),
    (b"\x82\x06\x00\x01\x00\x01#\x03", "requested QoS"),
    (b"\x82\x07\x00\x01\x00\x02a#\x00", "'#' must be a whole last level"),
    (b"\x82\x07\x00\x01\x00\x02a+\x00", r"'\+' must be a whole level"),
    (b"\xa2\x02\x00\x01", "UNSUBSCRIBE without"),
    (b"\x40\x03\x00\x01\x00", "trailing"),
    (b"\x40\x01\x00", "packet ends inside"),
    (b"\xc0\x80\x00", "minimally encoded"),
    (b"\x00\x00", "does not exist"),
    (b"\x20\x02\x02\x00", "reserved flags"),
    (b"\x90\x03\x00\x01\x05", "SUBACK return code"),
])
def test_malformed_packets_are_refused_with_a_reason(data, message):
    with pytest.raises(MalformedPacket, match=message):
        codec.split_packets(data)


def test_reader_refuses_oversize_packet_before_reading_its_body():
    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(b"\x30\xff\xff\xff\x7f")  # announces 268 MB, sends nothing more
        return await codec.read_packet(reader, 1024)

    with pytest.raises(codec.PacketTooLarge, match="exceeds the limit of 1024"):
        asyncio.run(main())
    with pytest.raises(codec.PacketTooLarge):
        codec.split_packets(codec.encode(Publish("t", b"x" * 2000)), max_size=1000)


def test_incomplete_data_waits_for_more():
    wire = codec.encode(Publish("a/b", b"payload", 1, 9))
    assert codec.split_packets(wire[:1]) == ([], wire[:1])
    assert codec.split_packets(wire[:5]) == ([], wire[:5])
    assert codec.split_packets(wire + wire[:3]) == ([Publish("a/b", b"payload", 1, 9)], wire[:3])


def test_encoder_refuses_what_mqtt_cannot_carry():
    with pytest.raises(ValueError, match="65535"):
        codec.encode(Publish("t" * 70000, b""))
    with pytest.raises(TypeError):
        codec.encode("not a packet")  # type: ignore[arg-type]


def test_connect_password_never_shows_in_repr():
    assert "secret" not in repr(Connect("c", "u", b"SharedAccessSignature secret"))


def test_reader_refuses_a_nonexistent_packet_type_without_waiting_for_its_body():
    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(b"\xf0\x05")  # type 15, announces 5 body bytes that never come
        return await asyncio.wait_for(codec.read_packet(reader, 1024), 5)

    with pytest.raises(MalformedPacket, match="type 15"):
        asyncio.run(main())

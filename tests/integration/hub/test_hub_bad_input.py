"""Bad input: the offending client gets the right error, everyone else keeps being served, nothing is lost."""

from __future__ import annotations

import asyncio
import json

import hubrig
import pytest
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device import exceptions as sdk_errors

from emulator.hub import codec


@pytest.fixture
def bystander(emu, ca_pem):
    """A healthy SDK client that must keep working while others misbehave."""
    client = IoTHubDeviceClient.create_from_connection_string(hubrig.connection_string(emu, "bystander"),
                                                             server_verification_cert=ca_pem, connection_retry=False)
    client.connect()
    client.send_message("before")
    yield client
    client.send_message("after")
    assert [r.payload for r in emu.emulator.hub.state.telemetry(device_id="bystander")] == [b"before", b"after"]
    client.shutdown()


def _raw(emu, ca_pem) -> hubrig.RawClient:
    return hubrig.RawClient(emu.emulator.hub.hostname, ca_pem)


def _device(emu, device_id: str):
    hub = emu.emulator.hub
    return hub.state.find_device(device_id) or hub.state.create_device(device_id)


@pytest.mark.parametrize("garbage", [
    b"\x10\xff\xff\xff\xff\x7f",                     # remaining length longer than 4 bytes
    b"\x30\x02\x00\x05",                             # PUBLISH whose topic runs past the packet
    b"\xf0\x00",                                     # packet type 15 does not exist
    b"\x10\x0c\x00\x04MQTT\x04\x03\x00\x3c\x00\x00",  # CONNECT with the reserved flag set
])
def test_malformed_first_packet_closes_only_that_connection(emu, ca_pem, bystander, garbage):
    raw = _raw(emu, ca_pem)
    raw.send_raw(garbage)
    assert raw.recv_until_closed() == []
    raw.close()


def test_malformed_packet_after_connect_disconnects(emu, ca_pem, bystander):
    device = _device(emu, "rogue")
    raw = _raw(emu, ca_pem)
    assert raw.connect_device(emu.emulator.hub.hostname, "rogue", device.primary_key).return_code == 0
    raw.send_raw(b"\x82\x05\x00\x01\x00\x01a")  # SUBSCRIBE whose filter is cut short
    assert raw.recv_until_closed() == []
    assert "malformed packet" in _last_close_reason(emu, "rogue")
    assert emu.emulator.hub.state.find_device("rogue") is not None


def _last_close_reason(emu, device_id: str) -> str:
    return hubrig.wait_for(lambda: emu.run(lambda: emu.emulator.hub.closed_reasons.get(device_id)), what="close")


def test_wrong_protocol_level_gets_connack_1(emu, ca_pem):
    raw = _raw(emu, ca_pem)
    raw.send(codec.Connect("x", "u", b"p", protocol_level=5))
    assert raw.recv() == codec.Connack(codec.ConnackCode.UNACCEPTABLE_PROTOCOL)
    assert raw.recv() is None


def test_bad_credentials_get_connack_5_and_client_id_mismatch_connack_2(emu, ca_pem):
    device = _device(emu, "dev")
    hostname = emu.emulator.hub.hostname
    raw = _raw(emu, ca_pem)
    assert raw.connect_device(hostname, "dev", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=").return_code == 5
    raw = _raw(emu, ca_pem)
    raw.send(codec.Connect("other", f"{hostname}/dev/?api-version=2021-04-12", b"x"))
    assert raw.recv().return_code == 2
    raw = _raw(emu, ca_pem)
    assert raw.connect_device("some-other-hub", "dev", device.primary_key).return_code == 5
    raw = _raw(emu, ca_pem)
    raw.send(codec.Connect("dev", hostname, b"x"))
    assert raw.recv().return_code == 4


def test_first_packet_must_be_connect(emu, ca_pem):
    raw = _raw(emu, ca_pem)
    raw.send(codec.Control(codec.PacketType.PINGREQ))
    assert raw.recv_until_closed() == []


def test_oversize_message_disconnects_and_is_not_stored(emu, ca_pem, bystander):
    device = _device(emu, "big")
    raw = _raw(emu, ca_pem)
    raw.connect_device(emu.emulator.hub.hostname, "big", device.primary_key)
    raw.send(codec.Publish("devices/big/messages/events/", b"x" * (256 * 1024 + 1), qos=1, packet_id=1))
    assert raw.recv_until_closed() == []
    assert emu.emulator.hub.state.telemetry(device_id="big") == []
    raw = _raw(emu, ca_pem)
    raw.connect_device(emu.emulator.hub.hostname, "big", device.primary_key)
    raw.send(codec.Publish("devices/big/messages/events/", b"x" * (256 * 1024 - 100), qos=1, packet_id=2))
    assert raw.recv() == codec.Ack(codec.PacketType.PUBACK, 2)


def test_packet_beyond_the_reader_limit_is_refused_before_reading_it(emu, ca_pem):
    device = _device(emu, "huge")
    raw = _raw(emu, ca_pem)
    raw.connect_device(emu.emulator.hub.hostname, "huge", device.primary_key)
    raw.send_raw(b"\x32\xff\xff\xff\x7f")  # announces 256 MB
    assert raw.recv_until_closed() == []


@pytest.mark.parametrize("topic", ["devices/someone-else/messages/events/", "not/an/iothub/topic",
                                   "$iothub/twin/GET/"])
def test_unknown_or_foreign_topic_disconnects(emu, ca_pem, bystander, topic):
    device = _device(emu, "nosy")
    raw = _raw(emu, ca_pem)
    raw.connect_device(emu.emulator.hub.hostname, "nosy", device.primary_key)
    raw.send(codec.Publish(topic, b"{}", qos=1, packet_id=1))
    assert raw.recv_until_closed() == []


def test_qos2_publish_disconnects(emu, ca_pem):
    device = _device(emu, "q2")
    raw = _raw(emu, ca_pem)
    raw.connect_device(emu.emulator.hub.hostname, "q2", device.primary_key)
    raw.send(codec.Publish("devices/q2/messages/events/", b"x", qos=2, packet_id=1))
    assert raw.recv_until_closed() == []


def test_unsupported_subscription_is_refused_in_suback(emu, ca_pem):
    device = _device(emu, "sub")
    raw = _raw(emu, ca_pem)
    raw.connect_device(emu.emulator.hub.hostname, "sub", device.primary_key)
    raw.send(codec.Subscribe(7, [("$iothub/twin/res/#", 2), ("devices/other/messages/devicebound/#", 1), ("#", 0)]))
    assert raw.recv() == codec.Suback(7, [1, codec.SUBACK_FAILURE, codec.SUBACK_FAILURE])


def test_bad_json_in_reported_patch_gets_400_and_changes_nothing(emu, ca_pem, bystander):
    device = _device(emu, "twinny")
    hub = emu.emulator.hub
    hub.state.patch_reported("twinny", {"kept": True})
    raw = _raw(emu, ca_pem)
    raw.connect_device(hub.hostname, "twinny", device.primary_key)
    raw.send(codec.Subscribe(1, [("$iothub/twin/res/#", 0)]))
    assert isinstance(raw.recv(), codec.Suback)
    for rid, body in (("1", b"{not json"), ("2", b"[1, 2]"), ("3", b'{"$bad": 1}'), ("4", b'{"a.b": 1}')):
        raw.send(codec.Publish(f"$iothub/twin/PATCH/properties/reported/?$rid={rid}", body, qos=1, packet_id=int(rid)))
        answers = [raw.recv(), raw.recv()]
        response = next(p for p in answers if isinstance(p, codec.Publish))
        assert response.topic == f"$iothub/twin/res/400/?$rid={rid}"
        assert "invalid reported properties patch" in json.loads(response.payload)["message"]
        assert codec.Ack(codec.PacketType.PUBACK, int(rid)) in answers
    twin = hub.state.get_twin("twinny")
    assert (twin.reported, twin.reported_version) == ({"kept": True}, 2)
    raw.send(codec.Publish("$iothub/twin/PATCH/properties/reported/?$rid=9", b'{"ok": 1}'))
    assert raw.recv().topic == "$iothub/twin/res/204/?$rid=9&$version=3"


def test_sdk_reported_patch_with_bad_document_fails_with_status_400(emu, ca_pem):
    client = IoTHubDeviceClient.create_from_connection_string(hubrig.connection_string(emu, "sdkbad"),
                                                             server_verification_cert=ca_pem, connection_retry=False)
    try:
        client.connect()
        with pytest.raises(sdk_errors.ClientError) as failure:
            client.patch_twin_reported_properties({"$reserved": 1})
        assert "status 400" in str(failure.value.__cause__)
        client.patch_twin_reported_properties({"fine": 1})
    finally:
        client.shutdown()
    assert emu.emulator.hub.state.get_twin("sdkbad").reported == {"fine": 1}


def test_method_answer_that_is_not_json_is_an_error_for_the_caller(emu, ca_pem):
    from emulator.hub.iothub import InvalidMethodResponse

    device = _device(emu, "mute")
    hub = emu.emulator.hub
    raw = _raw(emu, ca_pem)
    raw.connect_device(hub.hostname, "mute", device.primary_key)
    raw.send(codec.Subscribe(1, [("$iothub/methods/POST/#", 0)]))
    raw.recv()
    pending = asyncio.run_coroutine_threadsafe(hub.invoke_method("mute", "ping", {}, timeout_s=10), emu.loop)
    request = raw.recv()
    rid = request.topic.split("$rid=")[1]
    raw.send(codec.Publish(f"$iothub/methods/res/200/?$rid={rid}", b"<html>"))
    with pytest.raises(InvalidMethodResponse):
        pending.result(10)


def test_device_deleted_while_connected_is_dropped_on_its_next_request(emu, ca_pem, bystander):
    device = _device(emu, "doomed")
    hub = emu.emulator.hub
    raw = _raw(emu, ca_pem)
    raw.connect_device(hub.hostname, "doomed", device.primary_key)
    raw.send(codec.Subscribe(1, [("$iothub/twin/res/#", 0)]))
    raw.recv()
    hub.state.delete_device("doomed")
    raw.send(codec.Publish("$iothub/twin/GET/?$rid=1", b""))
    assert raw.recv_until_closed() == []
    assert "not registered" in _last_close_reason(emu, "doomed")

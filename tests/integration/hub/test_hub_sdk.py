"""The unmodified azure-iot-device client against the emulated IoT Hub (sync and asyncio)."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import hubrig
import pytest
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse
from azure.iot.device import exceptions as sdk_errors
from azure.iot.device.aio import IoTHubDeviceClient as AsyncDeviceClient

from emulator.hub.iothub import DeviceNotOnline, MethodTimeout
from emulator.hub.sas import make_sas


@pytest.fixture
def client(emu, ca_pem):
    device = IoTHubDeviceClient.create_from_connection_string(
        hubrig.connection_string(emu, "dev1"), server_verification_cert=ca_pem, connection_retry=False)
    device.connect()
    yield device
    device.shutdown()


def test_sas_client_sends_1000_messages_with_properties(emu, client):
    first = Message(json.dumps({"t": 21.5}), content_encoding="utf-8", content_type="application/json")
    first.custom_properties["sensor"] = "bme280"
    first.message_id = "m-0"
    client.send_message(first)
    for i in range(1, 1000):
        client.send_message(f"reading {i}")
    records = emu.emulator.hub.state.telemetry(limit=2000, device_id="dev1")
    assert len(records) == 1000
    assert records[0].properties == {"sensor": "bme280"}
    assert records[0].system_properties == {"$.mid": "m-0", "$.ct": "application/json", "$.ce": "utf-8"}
    assert json.loads(records[0].payload) == {"t": 21.5}
    assert [r.payload for r in records[1:4]] == [b"reading 1", b"reading 2", b"reading 3"]
    counters = emu.emulator.hub.state.counters()
    assert counters["d2c_messages"] == 1000 and counters["d2c_units"] == 1000


def test_message_units_count_4kb_blocks(emu, client):
    client.send_message("x" * 4096)
    client.send_message("x" * 4097)
    client.send_message("x" * 12000)
    assert [r.units for r in emu.emulator.hub.state.telemetry()] == [1, 2, 3]
    assert emu.emulator.hub.state.counters()["d2c_units"] == 6


def test_asyncio_client_sends_gathered_messages(emu, ca_pem):
    async def main():
        device = AsyncDeviceClient.create_from_connection_string(
            hubrig.connection_string(emu, "adev"), server_verification_cert=ca_pem, connection_retry=False)
        await device.connect()
        try:
            await asyncio.gather(*(device.send_message(f"m{i}") for i in range(200)))
            return await device.get_twin()
        finally:
            await device.shutdown()

    twin = asyncio.run(main())
    assert twin == {"desired": {"$version": 1}, "reported": {"$version": 1}}
    payloads = {r.payload for r in emu.emulator.hub.state.telemetry(limit=500, device_id="adev")}
    assert payloads == {f"m{i}".encode() for i in range(200)}


def test_c2d_with_properties_and_feedback(emu, client):
    received = []
    client.on_message_received = received.append
    hub = emu.emulator.hub
    sent = emu.call(hub.send_c2d("dev1", b"open valve", properties={"valve": "3"}, correlation_id="c-9",
                                 ack="full"))
    message = hubrig.wait_for(lambda: received and received[0], what="C2D delivery")
    assert message.data == b"open valve"
    assert message.custom_properties == {"valve": "3"}
    assert message.message_id == sent.message_id and message.correlation_id == "c-9"
    feedback = hubrig.wait_for(lambda: hub.state.feedback(), what="feedback")
    assert [(f.message_id, f.status) for f in feedback] == [(sent.message_id, "Success")]
    assert hub.state.pending_c2d("dev1") == []


def test_twin_get_reported_patch_and_desired_notifications(emu, client):
    hub = emu.emulator.hub
    patches = []
    client.on_twin_desired_properties_patch_received = patches.append
    client.patch_twin_reported_properties({"firmware": {"version": "1.2.0"}, "interval": {"value": 5, "ac": 200,
                                                                                          "av": 1}})
    emu.call(hub.update_twin("dev1", desired={"interval": 10}, tags={"site": "lab"}))
    patch = hubrig.wait_for(lambda: patches and patches[0], what="desired patch")
    assert patch == {"interval": 10, "$version": 2}
    twin = client.get_twin()
    assert twin["desired"] == {"interval": 10, "$version": 2}
    assert twin["reported"]["firmware"] == {"version": "1.2.0"}
    assert twin["reported"]["$version"] == 2
    assert "tags" not in twin  # devices never see tags
    client.patch_twin_reported_properties({"firmware": None})
    assert "firmware" not in client.get_twin()["reported"]
    assert hub.state.get_twin("dev1").tags == {"site": "lab"}


def test_direct_method_round_trips(emu, client):
    def on_method(request):
        if request.name == "fail":
            client.send_method_response(MethodResponse.create_from_method_request(request, 500, {"error": "nope"}))
        else:
            client.send_method_response(MethodResponse.create_from_method_request(request, 200,
                                                                                  {"got": request.payload}))

    client.on_method_request_received = on_method
    hub = emu.emulator.hub
    hubrig.wait_for(lambda: hub.sessions["dev1"].wants("$iothub/methods/POST/x/?$rid=1"), what="method subscription")
    for i in range(20):
        result = emu.call(hub.invoke_method("dev1", "echo", {"n": i}, timeout_s=10))
        assert (result.status, result.payload) == (200, {"got": {"n": i}})
    failed = emu.call(hub.invoke_method("dev1", "fail", None, timeout_s=10))
    assert (failed.status, failed.payload) == (500, {"error": "nope"})


def test_method_timeout_and_offline_device(emu, client):
    client.on_method_request_received = lambda request: None  # never answers
    hub = emu.emulator.hub
    hubrig.wait_for(lambda: hub.sessions["dev1"].wants("$iothub/methods/POST/x/?$rid=1"), what="method subscription")
    with pytest.raises(MethodTimeout) as timeout:
        emu.call(hub.invoke_method("dev1", "slow", {}, timeout_s=0.2))
    assert timeout.value.status == 504
    hub.state.create_device("offline")
    with pytest.raises(DeviceNotOnline) as offline:
        emu.call(hub.invoke_method("offline", "reboot", {}, timeout_s=1))
    assert offline.value.status == 404
    with pytest.raises(ValueError, match="outside IoT Hub's range"):
        emu.call(hub.invoke_method("dev1", "x", {}, timeout_s=301))


def test_persistent_session_keeps_subscriptions_and_queued_c2d(emu, ca_pem):
    hub = emu.emulator.hub
    cs = hubrig.connection_string(emu, "sess")
    received = []
    first = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca_pem,
                                                            connection_retry=False)
    first.on_message_received = received.append
    first.connect()
    hubrig.wait_for(lambda: "sess" in hub.sessions and hub.sessions["sess"].subscriptions, what="subscription")
    first.shutdown()
    hubrig.wait_for(lambda: "sess" not in hub.sessions, what="disconnect")
    assert hub.state.load_session("sess") == {"devices/sess/messages/devicebound/#": 1}
    for i in range(3):
        emu.call(hub.send_c2d("sess", f"while away {i}".encode()))
    assert len(hub.state.pending_c2d("sess")) == 3

    second = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca_pem,
                                                             connection_retry=False)
    try:
        second.connect()
        got = [second.receive_message(timeout=10) for _ in range(3)]
    finally:
        second.shutdown()
    assert [m.data for m in got] == [b"while away 0", b"while away 1", b"while away 2"]
    hubrig.wait_for(lambda: hub.state.pending_c2d("sess") == [], what="the last PUBACK to be processed")


def test_second_connection_with_same_id_takes_over(emu, ca_pem):
    hub = emu.emulator.hub
    cs = hubrig.connection_string(emu, "twice")
    dropped = threading.Event()
    first = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca_pem,
                                                            connection_retry=False)
    first.on_connection_state_change = lambda: None if first.connected else dropped.set()
    first.connect()
    old_session = hubrig.wait_for(lambda: hub.sessions.get("twice"), what="first session")
    second = IoTHubDeviceClient.create_from_connection_string(cs, server_verification_cert=ca_pem,
                                                             connection_retry=False)
    try:
        second.connect()
        assert dropped.wait(10)
        assert old_session.conn.close_reason == "another connection with the same device id took over"
        second.send_message("from the new connection")
        assert hub.connected_devices() == ["twice"]
        assert hub.state.telemetry(device_id="twice")[-1].payload == b"from the new connection"
    finally:
        second.shutdown()
        first.shutdown()


def test_wrong_key_is_refused(emu, ca_pem):
    emu.emulator.hub.state.create_device("keyed")
    bad = "HostName={};DeviceId=keyed;SharedAccessKey={}".format(emu.emulator.hub.hostname,
                                                                  "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    device = IoTHubDeviceClient.create_from_connection_string(bad, server_verification_cert=ca_pem,
                                                             connection_retry=False)
    try:
        with pytest.raises(sdk_errors.CredentialError):
            device.connect()
    finally:
        device.shutdown()
    assert emu.emulator.hub.connected_devices() == []


def test_expired_token_is_refused(tmp_path, loopback_address):
    # The emulator's clock runs an hour ahead: a token the SDK still considers valid has expired there.
    emu = hubrig.start(tmp_path, loopback_address, clock=lambda: time.time() + 3600)
    try:
        hub = emu.emulator.hub
        device = hub.state.create_device("late")
        token = make_sas(f"{hub.hostname}/devices/late", device.primary_key, int(time.time()) + 600)
        client = IoTHubDeviceClient.create_from_sastoken(token, server_verification_cert=hubrig.root_ca(emu),
                                                         connection_retry=False)
        try:
            with pytest.raises(sdk_errors.CredentialError):
                client.connect()
        finally:
            client.shutdown()
        assert hub.connected_devices() == []
    finally:
        emu.stop()


def test_disabled_and_unknown_devices_are_refused(emu, ca_pem):
    hub = emu.emulator.hub
    cs = hubrig.connection_string(emu, "off")
    hub.state.update_device("off", status="disabled")
    for connection_string in (cs, cs.replace("DeviceId=off", "DeviceId=ghost")):
        device = IoTHubDeviceClient.create_from_connection_string(connection_string, server_verification_cert=ca_pem,
                                                                 connection_retry=False)
        try:
            with pytest.raises(sdk_errors.CredentialError):
                device.connect()
        finally:
            device.shutdown()


def test_wrong_ca_fails_tls(emu, tmp_path):
    from emulator.pki import Pki

    other_root = Pki(tmp_path / "other").root().pem
    device = IoTHubDeviceClient.create_from_connection_string(
        hubrig.connection_string(emu, "dev1"), server_verification_cert=other_root, connection_retry=False)
    try:
        with pytest.raises(sdk_errors.ClientError) as failure:
            device.connect()
    finally:
        device.shutdown()
    assert "TLS" in str(failure.value)
    assert emu.emulator.hub.connected_devices() == []


def test_asyncio_client_twin_methods_and_c2d(emu, ca_pem):
    hub = emu.emulator.hub

    async def main():
        device = AsyncDeviceClient.create_from_connection_string(
            hubrig.connection_string(emu, "aio"), server_verification_cert=ca_pem, connection_retry=False)
        received: asyncio.Queue = asyncio.Queue()
        patches: asyncio.Queue = asyncio.Queue()

        async def on_method(request):
            await device.send_method_response(MethodResponse.create_from_method_request(request, 201, request.payload))

        loop = asyncio.get_running_loop()
        # The SDK runs handlers on its own threads: hand results to this loop thread-safely.
        device.on_method_request_received = on_method
        device.on_message_received = lambda m: loop.call_soon_threadsafe(received.put_nowait, m)
        device.on_twin_desired_properties_patch_received = lambda p: loop.call_soon_threadsafe(patches.put_nowait, p)
        await device.connect()
        try:
            await device.patch_twin_reported_properties({"ready": True})
            await loop.run_in_executor(None, hubrig.wait_for,
                                       lambda: len(hub.sessions.get("aio").subscriptions) == 4 if "aio" in
                                       hub.sessions else False)
            result = await loop.run_in_executor(None, lambda: emu.call(hub.invoke_method("aio", "echo", [1, 2])))
            await loop.run_in_executor(None, lambda: emu.call(hub.send_c2d("aio", b"to aio")))
            await loop.run_in_executor(None, lambda: emu.call(hub.update_twin("aio", desired={"x": 1})))
            message = await asyncio.wait_for(received.get(), 10)
            patch = await asyncio.wait_for(patches.get(), 10)
            return result, message.data, patch
        finally:
            await device.shutdown()

    result, data, patch = asyncio.run(main())
    assert (result.status, result.payload) == (201, [1, 2])
    assert data == b"to aio" and patch == {"x": 1, "$version": 2}
    assert hub.state.get_twin("aio").reported == {"ready": True}

"""Microsoft's unmodified azure-iot-hub service SDK against the emulator, with azure-iot-device on the other end."""

from __future__ import annotations

import threading

import pytest
import servicerig
from azure.iot.device import IoTHubDeviceClient, MethodResponse
from azure.iot.hub import IoTHubRegistryManager
from azure.iot.hub.models import CloudToDeviceMethod, QuerySpecification, Twin, TwinProperties
from msrest.exceptions import HttpOperationError


@pytest.fixture
def registry(sdk_trusts_emulator):
    return IoTHubRegistryManager.from_connection_string(sdk_trusts_emulator.connection_string)


def _device_client(rig, device_id: str, key: str) -> IoTHubDeviceClient:
    client = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={rig.hub.hostname};DeviceId={device_id};SharedAccessKey={key}",
        server_verification_cert=rig.ca_pem, connection_retry=False)
    client.connect()
    return client


def test_connection_string_host_carries_the_port(rig):
    host = rig.connection_string.split(";")[0].removeprefix("HostName=")
    assert host == f"{rig.address}:{rig.url.rsplit(':', 1)[1]}"


def test_sdk_creates_device_and_the_device_client_connects_with_its_key(rig, registry):
    created = registry.create_device_with_sas("dev1", None, None, "enabled")
    assert created.device_id == "dev1"
    assert created.authentication.type == "sas"
    key = created.authentication.symmetric_key.primary_key
    assert key == rig.hub.state.get_device("dev1").primary_key
    device = _device_client(rig, "dev1", key)
    try:
        assert registry.get_device("dev1").connection_state == "Connected"
    finally:
        device.shutdown()


def test_sdk_twin_patch_reaches_the_connected_device(rig, registry):
    key = registry.create_device_with_sas("dev1", None, None, "enabled").authentication.symmetric_key.primary_key
    device = _device_client(rig, "dev1", key)
    patches = []
    arrived = threading.Event()

    def on_patch(patch):
        patches.append(patch)
        arrived.set()

    device.on_twin_desired_properties_patch_received = on_patch
    try:
        twin = registry.get_twin("dev1")
        assert twin.properties.desired == {"$version": 1}
        updated = registry.update_twin("dev1", Twin(tags={"site": "lab"},
                                                    properties=TwinProperties(desired={"interval": 10})), twin.etag)
        assert updated.properties.desired == {"interval": 10, "$version": 2}
        assert updated.tags == {"site": "lab"}
        assert arrived.wait(10)
        assert patches == [{"interval": 10, "$version": 2}]
        device.patch_twin_reported_properties({"interval": 10})
        assert registry.get_twin("dev1").properties.reported["interval"] == 10
        replaced = registry.replace_twin("dev1", Twin(properties=TwinProperties(desired={"mode": "eco"})))
        assert replaced.properties.desired == {"mode": "eco", "$version": 3}
        assert replaced.tags == {}
    finally:
        device.shutdown()


def test_sdk_twin_update_with_a_stale_etag_is_refused_and_changes_nothing(rig, registry):
    registry.create_device_with_sas("dev1", None, None, "enabled")
    stale = registry.get_twin("dev1").etag
    registry.update_twin("dev1", Twin(properties=TwinProperties(desired={"a": 1})), stale)
    with pytest.raises(HttpOperationError) as caught:
        registry.update_twin("dev1", Twin(properties=TwinProperties(desired={"a": 2})), stale)
    assert caught.value.response.status_code == 412
    assert rig.hub.state.get_twin("dev1").desired == {"a": 1}


def test_sdk_invokes_a_method_on_a_connected_device(rig, registry):
    key = registry.create_device_with_sas("dev1", None, None, "enabled").authentication.symmetric_key.primary_key
    device = _device_client(rig, "dev1", key)

    def on_method(request):
        device.send_method_response(MethodResponse.create_from_method_request(
            request, 200, {"echo": request.payload, "name": request.name}))

    device.on_method_request_received = on_method
    try:
        result = registry.invoke_device_method("dev1", CloudToDeviceMethod(
            method_name="blink", payload={"times": 3}, response_timeout_in_seconds=10))
        assert result.status == 200
        assert result.payload == {"echo": {"times": 3}, "name": "blink"}
    finally:
        device.shutdown()


def test_sdk_method_on_an_offline_device_is_404_device_not_online(rig, registry):
    registry.create_device_with_sas("dev1", None, None, "enabled")
    with pytest.raises(HttpOperationError) as caught:
        registry.invoke_device_method("dev1", CloudToDeviceMethod(method_name="blink", payload=None))
    response = caught.value.response
    assert response.status_code == 404
    assert response.headers["iothub-errorcode"] == "DeviceNotOnline"
    assert response.json()["Message"].startswith("ErrorCode:DeviceNotOnline;")


def test_sdk_method_waits_connect_timeout_for_the_device(rig, registry):
    key = registry.create_device_with_sas("dev1", None, None, "enabled").authentication.symmetric_key.primary_key
    device = IoTHubDeviceClient.create_from_connection_string(
        f"HostName={rig.hub.hostname};DeviceId=dev1;SharedAccessKey={key}", server_verification_cert=rig.ca_pem,
        connection_retry=False)
    results = []
    caller = threading.Thread(target=lambda: results.append(registry.invoke_device_method("dev1", CloudToDeviceMethod(
        method_name="hello", payload=None, response_timeout_in_seconds=10, connect_timeout_in_seconds=20))))
    caller.start()
    try:
        servicerig.wait_for(lambda: rig.hub.state.counters().get("method_connect_waits") == 1,
                            what="the call waiting for the device")
        # Setting the handler connects the client (the SDK's auto-connect) and subscribes to methods.
        device.on_method_request_received = lambda request: device.send_method_response(
            MethodResponse.create_from_method_request(request, 201, "late but here"))
        caller.join(30)
        assert [(r.status, r.payload) for r in results] == [(201, "late but here")]
    finally:
        device.shutdown()


def test_sdk_queries_twins_with_where_count_and_paging(rig, registry):
    for i in range(5):
        registry.create_device_with_sas(f"q{i}", None, None, "enabled")
        registry.update_twin(f"q{i}", Twin(tags={"floor": i % 2}), "*")
    rows = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices WHERE tags.floor = 1"))
    assert rows.type == "twin"
    assert sorted(t.device_id for t in rows.items) == ["q1", "q3"]
    count = registry.query_iot_hub(QuerySpecification(query="SELECT COUNT() AS n FROM devices WHERE tags.floor = 0"))
    # The SDK reads every query answer as twins; a COUNT row's field lands in additional_properties.
    assert [item.additional_properties for item in count.items] == [{"n": 3}]
    first = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), None, 2)
    assert [t.device_id for t in first.items] == ["q0", "q1"]
    assert first.continuation_token
    second = registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices"), first.continuation_token, 10)
    assert [t.device_id for t in second.items] == ["q2", "q3", "q4"]
    assert second.continuation_token is None


def test_sdk_unsupported_query_is_400_with_the_reason(rig, registry):
    with pytest.raises(HttpOperationError) as caught:
        registry.query_iot_hub(QuerySpecification(query="SELECT * FROM devices.modules"))
    assert caught.value.response.status_code == 400
    assert "FROM devices" in caught.value.response.json()["Message"]


def test_sdk_registry_listing_statistics_update_and_delete(rig, registry):
    registry.create_device_with_sas("a", None, None, "enabled")
    registry.create_device_with_sas("b", None, None, "disabled")
    assert [d.device_id for d in registry.get_devices()] == ["a", "b"]
    stats = registry.get_device_registry_statistics()
    assert (stats.total_device_count, stats.enabled_device_count, stats.disabled_device_count) == (2, 1, 1)
    device = registry.get_device("b")
    updated = registry.update_device_with_sas("b", device.etag, None, None, "enabled", status_reason="fixed")
    assert (updated.status, updated.status_reason) == ("enabled", "fixed")
    with pytest.raises(HttpOperationError) as conflict:
        registry.create_device_with_sas("a", None, None, "enabled")
    assert conflict.value.response.status_code == 409
    registry.delete_device("a")
    with pytest.raises(HttpOperationError) as gone:
        registry.get_device("a")
    assert gone.value.response.status_code == 404
    assert gone.value.response.headers["iothub-errorcode"] == "DeviceNotFound"


def test_sdk_with_a_wrong_key_is_401_and_creates_nothing(rig, sdk_trusts_emulator):
    host = rig.connection_string.split(";")[0]
    wrong = IoTHubRegistryManager.from_connection_string(
        f"{host};SharedAccessKeyName=iothubowner;SharedAccessKey=" + "A" * 43 + "=")
    with pytest.raises(HttpOperationError) as caught:
        wrong.create_device_with_sas("intruder", None, None, "enabled")
    assert caught.value.response.status_code == 401
    assert rig.hub.state.find_device("intruder") is None

"""The service REST API over HTTPS: auth, bad input with IoT Hub-shaped errors, and the roost routes."""

from __future__ import annotations

import json
import threading
import time

import pytest
import servicerig
from azure.iot.device import IoTHubDeviceClient, Message

from emulator.hub.server import EmulatorConfig, EmulatorThread


def _error(response) -> tuple[int, str, str]:
    body = response.json()
    assert set(body) == {"Message", "ExceptionMessage"}
    name, _, text = body["Message"].removeprefix("ErrorCode:").partition(";")
    assert response.headers["iothub-errorcode"] == name
    return response.status_code, name, text


@pytest.fixture
def device(rig):
    client = IoTHubDeviceClient.create_from_connection_string(
        rig.device_connection_string("dev1"), server_verification_cert=rig.ca_pem, connection_retry=False)
    client.connect()
    yield client
    client.shutdown()


# --- authentication ---------------------------------------------------------------------------------------------

def test_valid_token_reads_the_registry(rig):
    rig.hub.state.create_device("dev1")
    response = rig.request("GET", "/devices/dev1")
    assert response.status_code == 200
    assert response.json()["deviceId"] == "dev1"


@pytest.mark.parametrize("case", ["bad-signature", "expired", "no-header", "unknown-policy", "other-hub",
                                  "device-token", "garbage"])
def test_bad_credentials_are_401_and_change_nothing(rig, case):
    now = int(time.time())
    token = {
        "bad-signature": lambda: rig.token(key="A" * 43 + "="),
        "expired": lambda: rig.token(expiry=now - 5),
        "no-header": lambda: "",
        "unknown-policy": lambda: rig.token().replace("skn=iothubowner", "skn=nobody"),
        "other-hub": lambda: rig.token(resource="otherhub.example:443"),
        "device-token": lambda: rig.token().split("&skn=")[0],
        "garbage": lambda: "Bearer abc",
    }[case]()
    response = rig.request("PUT", "/devices/intruder", body={"deviceId": "intruder"}, token=token)
    status, name, text = _error(response)
    assert (status, name) == (401, "IotHubUnauthorizedAccess")
    assert text
    assert "sig=" not in text    # the token never comes back
    assert rig.hub.state.find_device("intruder") is None


def test_policy_rights_are_enforced(rig):
    read_only = rig.token("registryRead")
    assert rig.request("GET", "/devices", token=read_only).status_code == 200
    status, _, text = _error(rig.request("PUT", "/devices/x", body={}, token=read_only))
    assert status == 401 and "RegistryWrite" in text
    assert rig.hub.state.find_device("x") is None
    status, _, text = _error(rig.request("GET", "/twins/x", token=rig.token("registryReadWrite")))
    assert status == 401 and "ServiceConnect" in text


def test_token_for_a_path_below_the_hub_is_accepted_only_there(rig):
    rig.hub.state.create_device("dev1")
    host = rig.service._served[rig.hub.hostname].host
    scoped = rig.token(resource=f"{host}/devices/dev1")
    assert rig.request("GET", "/devices/dev1", token=scoped).status_code == 200
    assert rig.request("GET", "/devices", token=scoped).status_code == 401


# --- bad input ----------------------------------------------------------------------------------------------

def test_missing_api_version_is_400(rig):
    status, name, text = _error(rig.request("GET", "/devices", api_version=None))
    assert (status, name) == (400, "InvalidProtocolVersion") and "api-version" in text


def test_malformed_json_is_400_and_changes_nothing(rig):
    rig.hub.state.create_device("dev1")
    before = rig.hub.state.get_twin("dev1")
    response = rig.request("PATCH", "/twins/dev1", raw=b'{"properties": {"desired": {"a": 1}',
                           headers={"Content-Type": "application/json"})
    status, name, text = _error(response)
    assert (status, name) == (400, "ArgumentInvalid") and "JSON" in text
    assert rig.request("PUT", "/devices/new", raw=b"[1,", headers={"Content-Type": "application/json"}) \
        .status_code == 400
    assert rig.hub.state.get_twin("dev1") == before
    assert rig.hub.state.find_device("new") is None


@pytest.mark.parametrize("body, fragment", [
    ([1, 2], "JSON object"),
    ({"properties": {"reported": {"x": 1}}}, "reported"),
    ({"properties": {"desired": {"bad.name": 1}}}, "may not contain"),
    ({"tags": "x"}, "must be a JSON object"),
    ({}, "changes nothing"),
])
def test_bad_twin_patches_are_400_and_change_nothing(rig, body, fragment):
    rig.hub.state.create_device("dev1")
    before = rig.hub.state.get_twin("dev1")
    status, name, text = _error(rig.request("PATCH", "/twins/dev1", body=body))
    assert (status, name) == (400, "ArgumentInvalid")
    assert fragment in text
    assert rig.hub.state.get_twin("dev1") == before


@pytest.mark.parametrize("body, fragment", [
    ({"authentication": {"type": "pgp"}}, "pgp"),
    ({"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "not base64!"}}}, "base64"),
    ({"deviceId": "other"}, "differs"),
    ({"status": "sleeping"}, "sleeping"),
    ({"authentication": {"type": "selfSigned"}}, "thumbprint"),
])
def test_bad_device_documents_are_400_and_create_nothing(rig, body, fragment):
    status, name, text = _error(rig.request("PUT", "/devices/dev9", body=body))
    assert (status, name) == (400, "ArgumentInvalid")
    assert fragment in text
    assert rig.hub.state.find_device("dev9") is None


def test_unknown_devices_routes_and_methods(rig):
    assert _error(rig.request("GET", "/twins/ghost"))[:2] == (404, "DeviceNotFound")
    assert _error(rig.request("POST", "/twins/ghost/methods", body={"methodName": "x"}))[:2] == \
        (404, "DeviceNotFound")
    assert _error(rig.request("DELETE", "/devices/ghost"))[:2] == (404, "DeviceNotFound")
    assert _error(rig.request("GET", "/nothing/here"))[0] == 404
    assert _error(rig.request("POST", "/devices"))[:2] == (405, "MethodNotAllowed")


def test_method_body_and_timeouts_are_checked(rig, device):
    assert _error(rig.request("POST", "/twins/dev1/methods", body={"payload": 1}))[0] == 400
    status, _, text = _error(rig.request("POST", "/twins/dev1/methods",
                                         body={"methodName": "x", "responseTimeoutInSeconds": 1000}))
    assert status == 400 and "responseTimeoutInSeconds" in text


def test_method_timeout_is_504(rig, device):
    device.on_method_request_received = lambda request: None   # never answers
    status, name, _ = _error(rig.request("POST", "/twins/dev1/methods",
                                         body={"methodName": "slow", "responseTimeoutInSeconds": 5}))
    assert (status, name) == (504, "GatewayTimeout")


def test_if_match_guards_device_updates(rig):
    created = rig.request("PUT", "/devices/dev1", body={"deviceId": "dev1"}).json()
    stale = rig.request("PUT", "/devices/dev1", body={"status": "disabled"}, headers={"If-Match": '"nope"'})
    assert _error(stale)[:2] == (412, "PreconditionFailed")
    assert rig.hub.state.get_device("dev1").enabled
    fresh = rig.request("PUT", "/devices/dev1", body={"status": "disabled"},
                        headers={"If-Match": f'"{created["etag"]}"'})
    assert fresh.status_code == 200 and fresh.json()["status"] == "disabled"


def test_disabling_a_connected_device_disconnects_it(rig, device):
    etag = rig.hub.state.get_device("dev1").etag
    rig.request("PUT", "/devices/dev1", body={"status": "disabled"}, headers={"If-Match": etag})
    servicerig.wait_for(lambda: "dev1" not in rig.hub.connected_devices(), what="disconnect")


# --- roost routes ---------------------------------------------------------------------------------------------

def test_c2d_send_reaches_the_device_with_properties(rig, device):
    received = []
    arrived = threading.Event()
    device.on_message_received = lambda m: (received.append(m), arrived.set())
    response = rig.request("POST", "/roost/devices/dev1/c2d",
                           body={"body": "open valve", "properties": {"valve": "3"}, "correlationId": "c-1",
                                 "ack": "full"})
    assert response.status_code == 201
    sent = response.json()
    assert arrived.wait(10)
    assert received[0].data == b"open valve"
    assert received[0].custom_properties == {"valve": "3"}
    assert received[0].message_id == sent["messageId"] and received[0].correlation_id == "c-1"
    feedback = servicerig.wait_for(lambda: rig.request("GET", "/roost/feedback").json()["records"], what="feedback")
    assert feedback[0]["originalMessageId"] == sent["messageId"] and feedback[0]["statusCode"] == "Success"


def test_c2d_bad_input_and_queue_limit(rig):
    rig.hub.state.create_device("dev1")
    assert _error(rig.request("POST", "/roost/devices/dev1/c2d", body={"bodyBase64": "***"}))[0] == 400
    assert _error(rig.request("POST", "/roost/devices/dev1/c2d", body={"nothing": 1}))[0] == 400
    assert _error(rig.request("POST", "/roost/devices/dev1/c2d", body={"body": "x", "ack": "maybe"}))[0] == 400
    assert _error(rig.request("POST", "/roost/devices/ghost/c2d", body={"body": "x"}))[:2] == (404, "DeviceNotFound")
    assert rig.hub.state.pending_c2d("dev1") == []
    for i in range(50):
        assert rig.request("POST", "/roost/devices/dev1/c2d", body={"body": f"m{i}"}).status_code == 201
    status, name, _ = _error(rig.request("POST", "/roost/devices/dev1/c2d", body={"body": "one too many"}))
    assert (status, name) == (403, "DeviceMaximumQueueDepthExceeded")
    assert len(rig.request("GET", "/roost/devices/dev1/c2d").json()) == 50
    purged = rig.request("DELETE", "/devices/dev1/commands").json()
    assert purged["totalMessagesPurged"] == 50
    assert rig.hub.state.pending_c2d("dev1") == []


def test_telemetry_pages_and_long_polls(rig, device):
    for i in range(3):
        device.send_message(Message(json.dumps({"i": i}), content_type="application/json",
                                    content_encoding="utf-8"))
    page = rig.request("GET", "/roost/telemetry", params={"limit": 2}).json()
    assert [json.loads(m["body"])["i"] for m in page["messages"]] == [0, 1]
    assert page["messages"][0]["systemProperties"]["$.ct"] == "application/json"
    rest = rig.request("GET", "/roost/telemetry", params={"since": page["next"]}).json()
    assert [json.loads(m["body"])["i"] for m in rest["messages"]] == [2]
    latest = rig.request("GET", "/roost/telemetry", params={"since": "latest"}).json()
    assert latest == {"messages": [], "next": rest["next"]}
    results = []
    poller = threading.Thread(target=lambda: results.append(rig.request(
        "GET", "/roost/telemetry", params={"since": rest["next"], "wait": 30, "device": "dev1"}).json()))
    poller.start()
    device.send_message("late")
    poller.join(40)
    assert [m["body"] for m in results[0]["messages"]] == ["late"]


def test_telemetry_parameters_are_checked(rig):
    for params in ({"since": "yesterday"}, {"limit": 0}, {"wait": 999}, {"limit": "many"}):
        status, name, text = _error(rig.request("GET", "/roost/telemetry", params=params))
        assert (status, name) == (400, "ArgumentInvalid") and next(iter(params)) in text


def test_connections_and_metering(rig, device):
    rig.hub.state.create_device("idle")
    device.send_message("x" * 5000)
    connections = rig.request("GET", "/roost/connections").json()
    assert connections["connected"] == ["dev1"]
    states = {d["deviceId"]: d["connectionState"] for d in connections["devices"]}
    assert states == {"dev1": "Connected", "idle": "Disconnected"}
    metering = rig.request("GET", "/roost/metering").json()
    assert metering["counters"]["d2c_messages"] == 1 and metering["counters"]["d2c_units"] == 2
    assert _error(rig.request("GET", "/roost/metering", params={"day": "23/11/2026"}))[0] == 400
    assert rig.request("GET", "/statistics/service").json() == {"connectedDeviceCount": 1}


def test_enrollments_crud_in_dps_shape(rig):
    body = {"attestation": {"type": "symmetricKey"}, "deviceId": "sensor-1",
            "initialTwin": {"tags": {"site": "lab"}, "properties": {"desired": {"interval": 5}}}}
    created = rig.request("PUT", "/enrollments/reg-1", body=body).json()
    assert created["registrationId"] == "reg-1" and created["deviceId"] == "sensor-1"
    assert created["attestation"]["symmetricKey"]["primaryKey"]
    assert rig.emu.emulator.dps.state.get_enrollment("reg-1").initial_twin["tags"] == {"site": "lab"}
    group = rig.request("PUT", "/enrollmentGroups/g1", body={"attestation": {"type": "symmetricKey"}}).json()
    assert group["enrollmentGroupId"] == "g1"
    assert [e["registrationId"] for e in rig.request("GET", "/enrollments").json()] == ["reg-1"]
    assert [e["enrollmentGroupId"] for e in rig.request("GET", "/enrollmentGroups").json()] == ["g1"]
    bad = rig.request("PUT", "/enrollments/reg-2", body={"attestation": {"type": "tpm"}})
    assert _error(bad)[0] == 400 and rig.emu.emulator.dps.state.find_enrollment("reg-2") is None
    assert _error(rig.request("PUT", "/enrollments/reg-3", body={"attestation": {"type": "symmetricKey"},
                                                                  "iotHubs": ["nohub"]}))[0] == 400
    assert rig.request("DELETE", "/enrollments/reg-1").status_code == 204
    assert _error(rig.request("GET", "/enrollments/reg-1"))[0] == 404


def test_faults_api_validates_and_clears(rig):
    rig.hub.state.create_device("dev1")
    assert _error(rig.request("POST", "/roost/faults/meteor", body={}))[0] == 404
    assert _error(rig.request("POST", "/roost/faults/drop", body={}))[0] == 400
    assert _error(rig.request("POST", "/roost/faults/drop", body={"deviceId": "dev1"}))[:2] == \
        (404, "DeviceNotOnline")
    assert _error(rig.request("POST", "/roost/faults/delay", body={"seconds": -1}))[0] == 400
    assert _error(rig.request("POST", "/roost/faults/throttle", body={"d2cPerSecond": "fast"}))[0] == 400
    assert rig.hub.faults.delays == {} and rig.hub.quotas.d2c_per_second is None
    state = rig.request("POST", "/roost/faults/throttle", body={"d2cPerSecond": 5}).json()
    assert state["quotas"]["d2cPerSecond"] == 5
    rig.request("POST", "/roost/faults/refuse", body={"deviceId": "dev1", "count": 2})
    cleared = rig.request("DELETE", "/roost/faults").json()
    assert cleared["refusals"] == {} and cleared["quotas"]["d2cPerSecond"] is None
    assert rig.hub.quotas.d2c_per_second is None


def test_policy_keys_persist_across_restarts(tmp_path, loopback_address):
    first = servicerig.Rig(tmp_path, loopback_address)
    connection_string = first.connection_string
    first.stop()
    assert oct((tmp_path / "state" / "service-policies.json").stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "state" / "service.json").stat().st_mode & 0o777) == "0o600"
    second = servicerig.Rig(tmp_path, loopback_address)
    try:
        key = connection_string.split("SharedAccessKey=")[1]
        assert second.service.policies["iothubowner"].primary_key == key
    finally:
        second.stop()


def test_updating_status_keeps_an_x509_devices_credentials(rig):
    thumbprint = "AB" * 20
    rig.request("PUT", "/devices/cam", body={"authentication": {"type": "selfSigned",
                                                                  "x509Thumbprint": {"primaryThumbprint": thumbprint}}})
    updated = rig.request("PUT", "/devices/cam", body={"status": "disabled"}, headers={"If-Match": "*"}).json()
    assert updated["authentication"]["type"] == "selfSigned"
    assert updated["authentication"]["x509Thumbprint"]["primaryThumbprint"] == thumbprint


def test_a_corrupt_policy_file_is_reported_with_its_fix(tmp_path, loopback_address):
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "service-policies.json").write_text("{not json")
    with pytest.raises(ValueError, match="delete it to generate new service keys"):
        servicerig.Rig(tmp_path, loopback_address)
    assert (tmp_path / "state" / "service-policies.json").read_text() == "{not json"


def test_each_hub_serves_its_own_api_and_refuses_the_others_tokens(tmp_path, loopback_address):
    import requests

    from emulator.hub.sas import make_sas
    from emulator.hub.server import EmulatorConfig, EmulatorThread
    from emulator.hub.service_api import ServiceApi, ServiceOptions

    first, second = loopback_address, servicerig.unique_loopback(loopback_address)
    emu = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "state", address=first, extra_hubs=[second],
                                        dps_https_port=0)).start()
    service = ServiceApi(emu.emulator, ServiceOptions(port=0, device_port=None, blob_port=None))
    try:
        emu.call(service.start())
        emu.emulator.hubs[second].state.create_device("only-on-second")
        ca = str(emu.emulator.pki.root().cert_path)

        def get(hub: str, token_hub: str) -> requests.Response:
            token = make_sas(service._served[token_hub].host,
                                        service.policies["iothubowner"].primary_key, int(time.time()) + 60,
                                        "iothubowner")
            return requests.get(f"{service.url(hub)}/devices/only-on-second", params={"api-version": "2021-04-12"},
                                headers={"Authorization": token}, verify=ca, timeout=30)

        assert get(second, second).status_code == 200
        assert get(first, first).status_code == 404
        assert get(second, first).status_code == 401
        assert service.connection_string(second).startswith(f"HostName={second}:")
    finally:
        emu.call(service.stop())
        emu.stop()


def _kept_alive(host: str, port: int, ca_file: str, request: str, headers: dict[str, str] | None = None):
    """A TLS client that sent one request and read its answer's head, its connection left open (kept alive)."""
    import socket
    import ssl

    context = ssl.create_default_context(cafile=ca_file)
    client = context.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname=host,
                                 suppress_ragged_eofs=False)
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    client.sendall(f"{request} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += client.recv(65536)
    assert b"Connection: keep-alive" in head, head
    return client


def _assert_aborted(client) -> None:
    """A graceful close would send close_notify first (recv returns b""); an aborted connection just ends."""
    import ssl

    with client, pytest.raises((ssl.SSLEOFError, ConnectionResetError)):
        while client.recv(65536):
            pass


def test_stop_drops_kept_alive_connections_without_waiting_for_the_client(rig):
    """An idle pooled client never answers a TLS close_notify; from Python 3.12 on Server.wait_closed() would
    wait for it (30 s per connection), so stop() aborts kept-alive connections instead of closing them."""
    port = int(rig.url.rsplit(":", 1)[1])
    client = _kept_alive(rig.address, port, rig.root_ca, "GET /devices?api-version=2021-04-12",
                         {"Authorization": rig.token()})
    rig.emu.call(rig.service.stop())
    _assert_aborted(client)


def test_emulator_stop_drops_kept_alive_dps_rest_connections(tmp_path, loopback_address):
    emu = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "state", address=loopback_address,
                                        dps_https_port=0)).start()
    try:
        scope = emu.emulator.config.id_scope
        client = _kept_alive(loopback_address, emu.emulator.dps_https_port, str(emu.emulator.pki.root().cert_path),
                             f"PUT /{scope}/registrations/dev1/register")     # 400: no api-version, kept alive
    finally:
        emu.stop()
    _assert_aborted(client)

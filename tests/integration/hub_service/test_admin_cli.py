"""`roost-sim hub ...` end to end: the CLI in a subprocess against a running emulator, an SDK client watching."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading

import pytest
import requests
import servicerig
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device import exceptions as sdk_errors


def cli(rig, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ROOST_HUB_CONNECTION_STRING"}
    result = subprocess.run([sys.executable, "-m", "emulator.cli", "hub", *args, "--state-dir", str(rig.state_dir)],
                            capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def _tpm_public() -> bytes:
    """A marshalled TPM2B_PUBLIC (an ECC P-256 key template) no device is enrolled with."""
    from tpm2_pytss import TPM2B_PUBLIC, TPMT_PUBLIC

    return bytes(TPM2B_PUBLIC(publicArea=TPMT_PUBLIC.parse("ecc256")).marshal())


def cli_json(rig, *args: str):
    return json.loads(cli(rig, *args, "--json").stdout)


def _client(rig, device_id: str = "dev1", retry: bool = False) -> IoTHubDeviceClient:
    connection_string = json.loads(cli(rig, "devices", "connection-string", device_id, "--json").stdout)
    return IoTHubDeviceClient.create_from_connection_string(
        connection_string["connectionString"], server_verification_cert=rig.ca_pem, connection_retry=retry)


@pytest.fixture
def device(rig):
    cli(rig, "devices", "create", "dev1")
    client = _client(rig, retry=True)
    client.connect()
    yield client
    client.shutdown()


def test_devices_create_show_list_disable_delete(rig):
    created = cli_json(rig, "devices", "create", "dev1")
    assert created["deviceId"] == "dev1" and created["authentication"]["type"] == "sas"
    assert rig.hub.state.get_device("dev1").primary_key == created["authentication"]["symmetricKey"]["primaryKey"]
    text = cli(rig, "devices", "list").stdout
    assert "dev1" in text and "Disconnected" in text
    assert cli_json(rig, "devices", "disable", "dev1", "--reason", "stolen")["status"] == "disabled"
    assert rig.hub.state.get_device("dev1").status_reason == "stolen"
    assert "deleted dev1" in cli(rig, "devices", "delete", "dev1").stdout
    assert rig.hub.state.find_device("dev1") is None


def test_connection_string_from_the_cli_connects_the_sdk(rig):
    cli(rig, "devices", "create", "dev1")
    client = _client(rig)
    try:
        client.connect()
        assert "Connected" in cli(rig, "connections").stdout
    finally:
        client.shutdown()


def test_twin_desired_reaches_the_device_and_invoke_returns_its_answer(rig, device):
    patches = []
    arrived = threading.Event()
    device.on_twin_desired_properties_patch_received = lambda p: (patches.append(p), arrived.set())
    twin = cli_json(rig, "twin", "desired", "dev1", '{"interval": 15}')
    assert twin["properties"]["desired"]["interval"] == 15
    assert arrived.wait(10) and patches == [{"interval": 15, "$version": 2}]

    from azure.iot.device import MethodResponse

    device.on_method_request_received = lambda r: device.send_method_response(
        MethodResponse.create_from_method_request(r, 200, {"got": r.payload}))
    result = cli_json(rig, "invoke", "dev1", "identify", '{"seconds": 3}', "--timeout", "10")
    assert result == {"status": 200, "payload": {"got": {"seconds": 3}}}
    assert "status 200" in cli(rig, "invoke", "dev1", "identify").stdout


def test_c2d_send_reaches_the_sdk_client(rig, device):
    received = []
    arrived = threading.Event()
    device.on_message_received = lambda m: (received.append(m), arrived.set())
    out = cli(rig, "c2d", "send", "dev1", "open valve", "-p", "valve=3", "--correlation-id", "c-7").stdout
    assert out.startswith("queued ")
    assert arrived.wait(10)
    assert (received[0].data, received[0].custom_properties, received[0].correlation_id) == \
        (b"open valve", {"valve": "3"}, "c-7")


def test_telemetry_tail_follow_and_export(rig, device, tmp_path):
    for i in range(3):
        device.send_message(json.dumps({"n": i}))
    lines = cli(rig, "telemetry", "tail", "--json").stdout.splitlines()
    assert [json.loads(json.loads(line)["body"])["n"] for line in lines] == [0, 1, 2]
    assert '#1 ' in cli(rig, "telemetry", "tail", "--device", "dev1").stdout
    follower = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "hub", "telemetry", "tail", "--follow", "--since", "latest",
         "--count", "1", "--json", "--timeout", "60", "--state-dir", str(rig.state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        servicerig.wait_for(lambda: rig.hub._listeners, what="the follower's long poll")
        device.send_message("live one")
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert json.loads(out)["body"] == "live one"
    target = tmp_path / "export.jsonl"
    cli(rig, "telemetry", "export", "-o", str(target))
    exported = [json.loads(line) for line in target.read_text().splitlines()]
    assert [m["seq"] for m in exported] == [1, 2, 3, 4]
    assert exported[3]["body"] == "live one"


def test_fault_drop_makes_the_sdk_reconnect(rig, device):
    connections = rig.hub.state.counters()["connections"]
    assert "no faults" in cli(rig, "fault", "drop", "dev1").stdout
    servicerig.wait_for(lambda: rig.hub.state.counters()["connections"] == connections + 1, 30,
                        "the SDK reconnecting")
    device.send_message("after the drop")
    assert rig.hub.state.telemetry()[-1].payload == b"after the drop"


def test_fault_expire_token_makes_the_sdk_reconnect(rig, device):
    connections = rig.hub.state.counters()["connections"]
    cli(rig, "fault", "expire-token", "dev1")
    servicerig.wait_for(lambda: rig.hub.state.counters()["connections"] == connections + 1, 30,
                        "the SDK reconnecting")
    assert "dev1" in rig.hub.connected_devices()


def test_fault_withhold_puback_holds_the_send_until_redelivery(rig, device):
    cli(rig, "fault", "withhold-puback", "dev1", "--count", "1")
    sender = threading.Thread(target=device.send_message, args=("held",))
    sender.start()
    servicerig.wait_for(lambda: rig.hub.state.telemetry(), what="the message stored")
    assert sender.is_alive()           # stored, but the SDK has no PUBACK: its send has not returned
    cli(rig, "fault", "drop", "dev1")   # on reconnect paho sends it again and this time gets its PUBACK
    sender.join(30)
    assert not sender.is_alive()
    assert [r.payload for r in rig.hub.state.telemetry()] == [b"held", b"held"]   # at least once


def test_fault_delay_holds_replies_to_the_device(rig, device):
    # The longest delay the API allows: the PUBACK cannot come back before `fault clear` releases it.
    assert "dev1=300.0" in cli(rig, "fault", "delay", "300", "--device", "dev1").stdout
    sender = threading.Thread(target=device.send_message, args=("slow",))
    sender.start()
    servicerig.wait_for(lambda: rig.hub.faults.held_replies.get("dev1") == 1, what="the PUBACK held back")
    assert [r.payload for r in rig.hub.state.telemetry()] == [b"slow"]    # stored, not yet acknowledged
    assert sender.is_alive()
    assert cli_json(rig, "fault", "list")["heldReplies"] == {"dev1": 1}
    assert "replies held by a delay now: dev1=1" in cli(rig, "fault", "list").stdout
    assert "no faults" in cli(rig, "fault", "clear").stdout               # releases the held PUBACK now
    sender.join(30)
    assert not sender.is_alive()
    assert rig.hub.faults.held_replies == {}


def test_fault_throttle_slows_acknowledgements(rig, device):
    cli(rig, "fault", "throttle", "2", "--burst", "1")
    for i in range(3):
        device.send_message(f"m{i}")
    assert rig.hub.state.counters().get("throttled", 0) >= 1
    cli(rig, "fault", "throttle", "off")
    assert rig.hub.quotas.d2c_per_second is None


def test_fault_quota_disconnects_the_sending_device(rig):
    cli(rig, "devices", "create", "dev1")
    client = _client(rig)
    client.connect()
    try:
        cli(rig, "fault", "quota", "1")
        client.send_message("uses the day's only unit")
        threading.Thread(target=lambda: _ignore_errors(client.send_message, "over quota"), daemon=True).start()
        servicerig.wait_for(lambda: rig.hub.state.counters().get("quota_refusals") == 1, what="the refusal")
        servicerig.wait_for(lambda: "dev1" not in rig.hub.connected_devices(), what="the disconnect")
        metering = cli(rig, "metering").stdout
        assert "quota_refusals: 1" in metering and "dailyMessageUnits: 1" in metering
    finally:
        client.shutdown()


def _ignore_errors(call, *args) -> None:
    try:
        call(*args)
    except Exception:
        return


def test_fault_refuse_fails_the_next_connect(rig):
    cli(rig, "devices", "create", "dev1")
    cli(rig, "fault", "refuse", "--device", "dev1", "--count", "1")
    refused = _client(rig)
    try:
        with pytest.raises(sdk_errors.ConnectionFailedError):
            refused.connect()
    finally:
        refused.shutdown()
    # A fresh client: the refused one's paho may still be processing the server's close of that attempt.
    accepted = _client(rig)
    try:
        accepted.connect()     # the one refusal is used up
        assert "dev1" in rig.hub.connected_devices()
    finally:
        accepted.shutdown()


def test_enrollments_and_files_commands(rig):
    created = cli_json(rig, "enrollments", "create", "reg-1", "--desired", '{"interval": 5}')
    assert created["registrationId"] == "reg-1"
    assert rig.emu.emulator.dps.state.get_enrollment("reg-1").initial_twin["properties"]["desired"] == \
        {"interval": 5}
    assert "reg-1" in cli(rig, "enrollments", "list").stdout
    cli(rig, "enrollments", "create", "grp", "--group")
    assert [e["enrollmentGroupId"] for e in cli_json(rig, "enrollments", "list", "--group")] == ["grp"]
    cli(rig, "enrollments", "delete", "reg-1")
    assert rig.emu.emulator.dps.state.find_enrollment("reg-1") is None
    assert "no file uploads" in cli(rig, "files").stdout


# --- bad input ----------------------------------------------------------------------------------------------

def test_errors_from_the_api_are_shown_with_their_message(rig):
    missing = cli(rig, "devices", "show", "ghost", check=False)
    assert missing.returncode == 1
    assert "device 'ghost' is not registered" in missing.stderr and "404" in missing.stderr
    cli(rig, "devices", "create", "dev1")
    again = cli(rig, "devices", "create", "dev1", check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    offline = cli(rig, "invoke", "dev1", "reboot", check=False)
    assert offline.returncode == 1 and "not connected" in offline.stderr
    bad_key = cli(rig, "devices", "create", "dev2", "--primary-key", "not-base64", check=False)
    assert bad_key.returncode == 1 and "base64" in bad_key.stderr
    assert rig.hub.state.find_device("dev2") is None
    queued = cli(rig, "c2d", "send", "ghost", "x", check=False)
    assert queued.returncode == 1 and "ghost" in queued.stderr


def test_bad_arguments_are_refused_before_any_request(rig):
    cli(rig, "devices", "create", "dev1")
    before = rig.hub.state.get_twin("dev1")
    not_json = cli(rig, "twin", "desired", "dev1", "{interval: 5}", check=False)
    assert not_json.returncode == 2 and "not valid JSON" in not_json.stderr
    not_object = cli(rig, "twin", "desired", "dev1", "[5]", check=False)
    assert not_object.returncode == 2 and "JSON object" in not_object.stderr
    bad_property = cli(rig, "c2d", "send", "dev1", "x", "-p", "novalue", check=False)
    assert bad_property.returncode == 2 and "KEY=VALUE" in bad_property.stderr
    bad_since = cli(rig, "telemetry", "tail", "--since", "yesterday", check=False)
    assert bad_since.returncode == 2 and "--since" in bad_since.stderr
    assert rig.hub.state.get_twin("dev1") == before
    assert rig.hub.state.pending_c2d("dev1") == []


def test_without_a_running_service_the_cli_says_how_to_start_one(tmp_path):
    result = subprocess.run([sys.executable, "-m", "emulator.cli", "hub", "devices", "list", "--state-dir",
                             str(tmp_path / "nothing")], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "ROOST_HUB_CONNECTION_STRING"})
    assert result.returncode == 1
    assert "roost-sim hub serve" in result.stderr


def test_a_wrong_connection_string_is_refused_with_401(rig):
    host = rig.connection_string.split(";")[0]
    wrong = f"{host};SharedAccessKeyName=iothubowner;SharedAccessKey={'B' * 43}="
    result = cli(rig, "devices", "list", "--connection-string", wrong, check=False)
    assert result.returncode == 1 and "401" in result.stderr and "signature" in result.stderr


def test_serve_prints_the_iothubowner_connection_string_and_the_cli_uses_it(tmp_path, loopback_address):
    state_dir = tmp_path / "served"
    env = {k: v for k, v in os.environ.items() if k != "ROOST_HUB_CONNECTION_STRING"}
    server = subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "hub", "serve", "--address", loopback_address, "--dps-https-port", "0",
         "--service-port", "0", "--json", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        info = json.loads(server.stdout.readline())
        service = info["service"]
        assert service["connectionString"].startswith(f"HostName={loopback_address}:")
        assert "SharedAccessKeyName=iothubowner;SharedAccessKey=" in service["connectionString"]
        created = subprocess.run(
            [sys.executable, "-m", "emulator.cli", "hub", "devices", "create", "dev1", "--json",
             "--connection-string", service["connectionString"], "--ca-file", info["root_ca"],
             "--state-dir", str(tmp_path / "elsewhere")],
            capture_output=True, text=True, timeout=60, env=env)
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["deviceId"] == "dev1"
        # The health attestation service runs beside it, named in the output and in service.json, and answers
        # over TLS the emulator's root CA vouches for (an unknown EK is a 404 that says how to enroll).
        health = info["health_attestation"]["url"]
        assert health.startswith(f"https://{loopback_address}:")
        assert json.loads((state_dir / "service.json").read_text())["healthAttestationUrl"] == health
        ek = base64.b64encode(_tpm_public()).decode()
        refused = requests.post(f"{health}/attestation/challenge", json={"endorsementKey": ek, "attestationKey": ek},
                                verify=info["root_ca"], timeout=30)
        assert refused.status_code == 404 and "enroll" in refused.json()["fix"]
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert server.returncode == 0


def _serve(loopback_address: str, state_dir, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "ROOST_HUB_CONNECTION_STRING"}
    return subprocess.Popen(
        [sys.executable, "-m", "emulator.cli", "hub", "serve", "--address", loopback_address, "--dps-https-port", "0",
         "--service-port", "0", "--state-dir", str(state_dir), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_serve_prints_the_health_attestation_url_for_people(tmp_path, loopback_address):
    server = _serve(loopback_address, tmp_path / "served")
    try:
        lines = []
        while not (line := server.stdout.readline()).startswith("Ctrl-C stops"):
            assert line, f"serve ended early: {server.stderr.read()}"
            lines.append(line)
        health = [line.split()[1] for line in lines if line.split()[:1] == ["health"]]
        assert len(health) == 1 and health[0].startswith(f"https://{loopback_address}:")
        assert health[0].endswith("/attestation/challenge")
        named = json.loads((tmp_path / "served" / "service.json").read_text())["healthAttestationUrl"]
        assert health[0] == named + "/attestation/challenge"
    finally:
        server.terminate()
        server.communicate(timeout=30)
    assert server.returncode == 0


def test_serve_refuses_a_health_port_in_use_and_says_which_option_to_change(tmp_path, loopback_address):
    import socket

    with socket.socket() as taken:
        taken.bind((loopback_address, 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = _serve(loopback_address, tmp_path / "served", "--health-port", str(port))
        _, stderr = server.communicate(timeout=60)
    assert server.returncode == 1
    assert f"{loopback_address}:{port}" in stderr and "--health-port" in stderr
    assert "Traceback" not in stderr

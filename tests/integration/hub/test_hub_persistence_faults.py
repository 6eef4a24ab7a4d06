"""Restarts lose nothing; quotas, throttling and injected faults behave like the service; the CLI serves."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import hubrig
import pytest
from azure.iot.device import IoTHubDeviceClient

from emulator.hub import codec
from emulator.hub.faults import Quotas
from emulator.hub.state import Attestation, Enrollment


def _closed(emu, device_id: str) -> str:
    """Why the device's last connection ended (the server records it just after the socket closes)."""
    return hubrig.wait_for(lambda: emu.run(lambda: emu.emulator.hub.closed_reasons.get(device_id)), what="close")


def test_restart_keeps_registry_twins_enrollments_c2d_and_sessions(tmp_path, loopback_address):
    emu = hubrig.start(tmp_path, loopback_address)
    hub = emu.emulator.hub
    device = hub.state.create_device("keeper")
    emu.call(hub.update_twin("keeper", desired={"interval": 7}, tags={"site": "attic"}))
    hub.state.patch_reported("keeper", {"fw": "2.0"})
    hub.state.save_session("keeper", {"devices/keeper/messages/devicebound/#": 1})
    emu.call(hub.send_c2d("keeper", b"survive", properties={"p": "1"}))
    enrollment = emu.emulator.dps.state.put_enrollment(Enrollment("later", Attestation("symmetricKey")))
    root = emu.emulator.pki.root().pem
    address, name = emu.emulator.config.address, hub.hostname
    emu.stop()

    # State belongs to the hub's name. Another test process may take the address while it is free (hubrig then
    # moves to a fresh one), so the restart names the hub explicitly instead of relying on the address.
    emu = hubrig.start(tmp_path, address, hub_hostname=name)
    try:
        hub = emu.emulator.hub
        assert hub.hostname == name
        assert hub.state.get_device("keeper").primary_key == device.primary_key
        twin = hub.state.get_twin("keeper")
        assert (twin.desired, twin.tags, twin.reported) == ({"interval": 7}, {"site": "attic"}, {"fw": "2.0"})
        assert emu.emulator.dps.state.get_enrollment("later").attestation.primary_key == \
            enrollment.attestation.primary_key
        assert emu.emulator.pki.root().pem == root
        # The session's subscription survived, so the queued message flows as soon as the device connects.
        raw = hubrig.RawClient(emu.emulator.config.address, root)
        ack = raw.connect_device(hub.hostname, "keeper", device.primary_key)
        assert ack == codec.Connack(0, session_present=True)
        message = raw.recv()
        assert (message.topic.split("/")[:4], message.payload) == (["devices", "keeper", "messages", "devicebound"],
                                                                   b"survive")
        assert "p=1" in message.topic
        raw.send(codec.Ack(codec.PacketType.PUBACK, message.packet_id))
        hubrig.wait_for(lambda: hub.state.pending_c2d("keeper") == [], what="completion")
        raw.close()
    finally:
        emu.stop()


def test_unacknowledged_c2d_is_redelivered_after_reconnect(emu, ca_pem):
    hub = emu.emulator.hub
    device = hub.state.create_device("flaky")
    emu.call(hub.send_c2d("flaky", b"once"))
    raw = hubrig.RawClient(hub.hostname, ca_pem)
    raw.connect_device(hub.hostname, "flaky", device.primary_key)
    raw.send(codec.Subscribe(1, [("devices/flaky/messages/devicebound/#", 1)]))
    first = [raw.recv(), raw.recv()]
    assert any(isinstance(p, codec.Publish) and p.payload == b"once" for p in first)
    raw.close()  # no PUBACK
    hubrig.wait_for(lambda: "flaky" not in hub.connected_devices(), what="disconnect")
    raw = hubrig.RawClient(hub.hostname, ca_pem)
    raw.connect_device(hub.hostname, "flaky", device.primary_key)
    again = raw.recv()
    assert again.payload == b"once" and again.qos == 1
    assert hub.state.pending_c2d("flaky")[0].delivery_count == 2
    raw.close()


def test_daily_quota_disconnects_the_sender(tmp_path, loopback_address):
    emu = hubrig.start(tmp_path, loopback_address, quotas=Quotas(daily_message_units=3))
    try:
        hub = emu.emulator.hub
        device = hub.state.create_device("chatty")
        raw = hubrig.RawClient(hub.hostname, hubrig.root_ca(emu))
        raw.connect_device(hub.hostname, "chatty", device.primary_key)
        raw.send(codec.Publish("devices/chatty/messages/events/", b"x" * 5000, qos=1, packet_id=1))  # 2 units
        assert raw.recv() == codec.Ack(codec.PacketType.PUBACK, 1)
        raw.send(codec.Publish("devices/chatty/messages/events/", b"y", qos=1, packet_id=2))           # 3 units
        assert raw.recv() == codec.Ack(codec.PacketType.PUBACK, 2)
        raw.send(codec.Publish("devices/chatty/messages/events/", b"z", qos=1, packet_id=3))
        assert raw.recv_until_closed() == []
        assert "IotHubQuotaExceeded" in _closed(emu, "chatty")
        counters = hub.state.counters()
        assert (counters["d2c_units"], counters["d2c_messages"], counters["quota_refusals"]) == (3, 2, 1)
    finally:
        emu.stop()


def test_throttling_holds_acks_back_but_loses_nothing(tmp_path, loopback_address):
    # 20 messages/s: sent one after the other, each waiting for its PUBACK, every message past the burst finds
    # the bucket empty unless its round trip took longer than 50 ms, whatever the speed of the machine.
    emu = hubrig.start(tmp_path, loopback_address, quotas=Quotas(d2c_per_second=20, d2c_burst=5))
    try:
        hub = emu.emulator.hub
        client = IoTHubDeviceClient.create_from_connection_string(
            hubrig.connection_string(emu, "fast"), server_verification_cert=hubrig.root_ca(emu),
            connection_retry=False)
        try:
            client.connect()
            for i in range(30):
                client.send_message(f"{i}")
        finally:
            client.shutdown()
        assert len(hub.state.telemetry(device_id="fast")) == 30
        assert hub.state.counters()["throttled"] >= 20  # only the burst of 5 (+ a slow round trip) passes
    finally:
        emu.stop()


def test_connection_rate_limit_answers_connack_3(tmp_path, loopback_address):
    emu = hubrig.start(tmp_path, loopback_address, quotas=Quotas(connections_per_second=0.001))
    try:
        hub = emu.emulator.hub
        device = hub.state.create_device("door")
        codes = []
        for _ in range(2):
            raw = hubrig.RawClient(hub.hostname, hubrig.root_ca(emu))
            codes.append(raw.connect_device(hub.hostname, "door", device.primary_key).return_code)
            raw.close()
        assert codes == [0, codec.ConnackCode.SERVER_UNAVAILABLE]
    finally:
        emu.stop()


def test_faults_withhold_puback_delay_drop_and_expire(emu, ca_pem):
    hub = emu.emulator.hub
    device = hub.state.create_device("victim")
    raw = hubrig.RawClient(hub.hostname, ca_pem)
    raw.connect_device(hub.hostname, "victim", device.primary_key)
    hub.faults.withhold_puback("victim", 1)
    raw.send(codec.Publish("devices/victim/messages/events/", b"lost ack", qos=1, packet_id=1))
    raw.send(codec.Publish("devices/victim/messages/events/", b"acked", qos=1, packet_id=2))
    assert raw.recv() == codec.Ack(codec.PacketType.PUBACK, 2)  # 1 was stored but never acknowledged
    assert [r.payload for r in hub.state.telemetry(device_id="victim")] == [b"lost ack", b"acked"]

    hub.faults.delay("victim", 0.05)
    raw.send(codec.Publish("devices/victim/messages/events/", b"slow", qos=1, packet_id=3))
    assert raw.recv() == codec.Ack(codec.PacketType.PUBACK, 3)
    hub.faults.delay("victim", 0)
    with pytest.raises(ValueError):
        hub.faults.delay("victim", -1)

    assert emu.run(lambda: hub.faults.drop("victim"))
    assert raw.recv_until_closed() == []
    assert _closed(emu, "victim") == "connection dropped by fault injection"

    raw = hubrig.RawClient(hub.hostname, ca_pem)
    raw.connect_device(hub.hostname, "victim", device.primary_key)
    hubrig.wait_for(lambda: "victim" in hub.connected_devices(), what="reconnect")
    emu.run(lambda: hub.closed_reasons.pop("victim"))
    assert emu.run(lambda: hub.faults.expire_token("victim"))
    assert raw.recv_until_closed() == []
    assert "SAS token expired" in _closed(emu, "victim")
    assert not emu.run(lambda: hub.faults.drop("nobody"))


def test_token_expiry_closes_a_live_connection(tmp_path, loopback_address):
    clock = {"now": 1_800_000_000.0}
    emu = hubrig.start(tmp_path, loopback_address, clock=lambda: clock["now"])
    try:
        hub = emu.emulator.hub
        device = hub.state.create_device("shortlived")
        raw = hubrig.RawClient(hub.hostname, hubrig.root_ca(emu))
        # The token expires one second after the connection opens on the emulator's (injected) clock.
        assert raw.connect_device(hub.hostname, "shortlived", device.primary_key,
                                  expiry=int(clock["now"]) + 1).return_code == 0
        assert raw.recv_until_closed() == []
        assert "SAS token expired" in _closed(emu, "shortlived")
    finally:
        emu.stop()


def test_cli_serve_prints_connection_details_and_stops_on_sigterm(tmp_path, loopback_address):
    env = {**os.environ, "ROOST_SIM_STATE_DIR": str(tmp_path / "cli-state")}
    process = subprocess.Popen([sys.executable, "-m", "emulator.cli", "hub", "serve", "--address", loopback_address,
                                "--dps-https-port", "0", "--device", "cli-dev", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        info = json.loads(process.stdout.readline())
        assert info["hub"] == loopback_address
        assert info["devices"]["cli-dev"].startswith(f"HostName={loopback_address};DeviceId=cli-dev;SharedAccessKey=")
        assert info["root_ca"].startswith(str(tmp_path / "cli-state"))
        client = IoTHubDeviceClient.create_from_connection_string(
            info["devices"]["cli-dev"], server_verification_cert=Path(info["root_ca"]).read_text(),
            connection_retry=False)
        try:
            client.connect()
            client.send_message("hello from the CLI test")
        finally:
            client.shutdown()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    keys = [p for p in (tmp_path / "cli-state" / "pki").iterdir() if p.name.endswith(".key.pem")]
    assert keys and all(p.stat().st_mode & 0o777 == 0o600 for p in keys)
    assert (tmp_path / "cli-state" / f"hub-{loopback_address}.sqlite").stat().st_mode & 0o777 == 0o600


def test_cli_serve_reports_an_address_in_use(tmp_path, emu):
    result = subprocess.run([sys.executable, "-m", "emulator.cli", "hub", "serve", "--state-dir", str(tmp_path / "s"),
                             "--address", emu.emulator.hub.hostname, "--dps-https-port", "0"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert "cannot start" in result.stderr and "--address" in result.stderr


def test_sdk_reconnects_by_itself_after_drops_and_keeps_receiving(emu, ca_pem):
    hub = emu.emulator.hub
    received = []
    client = IoTHubDeviceClient.create_from_connection_string(hubrig.connection_string(emu, "phoenix"),
                                                             server_verification_cert=ca_pem)  # default retry
    client.on_message_received = received.append
    try:
        client.connect()
        client.send_message("before")
        for fault in (hub.faults.drop, hub.faults.expire_token):
            old = emu.run(lambda: hub.sessions["phoenix"])
            assert emu.run(lambda fault=fault: fault("phoenix"))
            hubrig.wait_for(lambda old=old: emu.run(lambda: hub.sessions.get("phoenix")) not in (None, old),
                            what="the SDK's own reconnect")
            hubrig.wait_for(lambda: client.connected, what="the SDK to see itself connected")
            client.send_message(fault.__name__)
        emu.call(hub.send_c2d("phoenix", b"still subscribed"))
        assert hubrig.wait_for(lambda: received, what="C2D after reconnects")[0].data == b"still subscribed"
    finally:
        client.shutdown()
    assert [r.payload for r in hub.state.telemetry(device_id="phoenix")] == [b"before", b"drop", b"expire_token"]
    assert hub.state.counters()["connections"] == 3

"""The live server under hostile bytes: whatever a connected client sends, others keep being served."""

from __future__ import annotations

import hubrig
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.hub import codec


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    emu = hubrig.start(tmp_path_factory.mktemp("fuzz"), hubrig.unique_loopback())
    device = emu.emulator.hub.state.create_device("fuzzer")
    emu.emulator.hub.state.create_device("witness")
    yield emu, device.primary_key
    emu.stop()


@given(st.binary(min_size=1, max_size=300))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_random_bytes_after_connect_never_break_the_server(server, garbage):
    emu, key = server
    hub = emu.emulator.hub
    ca = hubrig.root_ca(emu)
    raw = hubrig.RawClient(hub.hostname, ca, timeout=10)
    assert raw.connect_device(hub.hostname, "fuzzer", key).return_code == 0
    raw.send_raw(garbage)  # may be refused at once, or be the start of a packet the server waits to complete
    raw.close()
    witness = hubrig.RawClient(hub.hostname, ca)
    device = hub.state.get_device("witness")
    assert witness.connect_device(hub.hostname, "witness", device.primary_key).return_code == 0
    witness.send(codec.Publish("devices/witness/messages/events/", b"still here", qos=1, packet_id=1))
    assert witness.recv() == codec.Ack(codec.PacketType.PUBACK, 1)
    witness.close()


def test_keep_alive_silence_closes_the_connection(server):
    emu, _ = server
    hub = emu.emulator.hub
    key = hub.state.create_device("sleeper").primary_key
    raw = hubrig.RawClient(hub.hostname, hubrig.root_ca(emu))
    raw.send(codec.Connect("sleeper", f"{hub.hostname}/sleeper/?api-version=2021-04-12",
                           hubrig.make_sas(f"{hub.hostname}/devices/sleeper", key, 2_000_000_000).encode(),
                           keep_alive=1))
    assert raw.recv().return_code == 0
    assert raw.recv_until_closed() == []  # after 1.5 x keep-alive without a packet
    assert "keep-alive" in hubrig.wait_for(lambda: emu.run(lambda: hub.closed_reasons.get("sleeper")), what="close")


def test_connections_use_a_small_tls_read_buffer(server):
    emu, key = server
    hub = emu.emulator.hub
    raw = hubrig.RawClient(hub.hostname, hubrig.root_ca(emu))
    raw.connect_device(hub.hostname, "fuzzer", key)
    session = hubrig.wait_for(lambda: emu.run(lambda: hub.sessions.get("fuzzer")), what="session")
    protocol = session.conn.writer.transport._ssl_protocol
    assert (protocol.max_size, len(protocol._ssl_buffer)) == (32 * 1024, 32 * 1024)
    raw.send(codec.Publish("devices/fuzzer/messages/events/", b"z" * 200_000, qos=1, packet_id=5))
    assert raw.recv() == codec.Ack(codec.PacketType.PUBACK, 5)  # large messages still arrive whole
    assert hub.state.telemetry(device_id="fuzzer")[-1].payload == b"z" * 200_000
    raw.close()

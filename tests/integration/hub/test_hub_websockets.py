"""MQTT over WebSockets on port 443: the unmodified SDK (websockets=True) and malformed upgrades and frames."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import threading

import hubrig
import pytest
from azure.iot.device import IoTHubDeviceClient, Message, MethodResponse

from emulator.hub import http, websocket


@pytest.fixture
def emu(tmp_path, loopback_address):
    emulator = hubrig.start(tmp_path, loopback_address, websocket_port=443)
    yield emulator
    emulator.stop()


def test_sdk_client_over_websockets_sends_twins_and_answers_methods(emu, ca_pem):
    device = IoTHubDeviceClient.create_from_connection_string(
        hubrig.connection_string(emu, "ws1"), server_verification_cert=ca_pem, connection_retry=False,
        websockets=True)
    answered = threading.Event()

    def on_method(request):
        answered.set()   # before the answer: the hub may hand the result over before this thread goes on
        device.send_method_response(MethodResponse.create_from_method_request(request, 200, {"ok": True}))

    device.on_method_request_received = on_method
    device.connect()
    try:
        # 10 bytes, 300 bytes and 100 KB: the three WebSocket length encodings.
        bodies = [b"a" * 10, b"b" * 300, b"c" * 100_000]
        for body in bodies:
            device.send_message(Message(body))
        device.patch_twin_reported_properties({"transport": "mqtt-ws"})
        hub = emu.emulator.hub
        hubrig.wait_for(lambda: hub.sessions["ws1"].wants("$iothub/methods/POST/x/?$rid=1"),
                        what="method subscription")
        result = emu.call(hub.invoke_method("ws1", "ping", {}, timeout_s=10))
    finally:
        device.shutdown()
    assert [r.payload for r in hub.state.telemetry(device_id="ws1")] == bodies
    assert hub.state.get_twin("ws1").reported["transport"] == "mqtt-ws"
    assert answered.is_set() and (result.status, result.payload) == (200, {"ok": True})


def _tls(emu, ca_pem) -> ssl.SSLSocket:
    host = emu.emulator.hub.hostname
    context = ssl.create_default_context(cadata=ca_pem)
    return context.wrap_socket(socket.create_connection((host, 443), timeout=5), server_hostname=host)


def _request(sock: ssl.SSLSocket, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    lines = [f"GET {path} HTTP/1.1", f"Host: {sock.server_hostname}"] + [f"{k}: {v}" for k, v in headers.items()]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head + b"\r\n\r\n" + rest


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Protocol": "mqtt", "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}


@pytest.mark.parametrize(("path", "change", "status", "says"), [
    ("/$iothub/websocket", {"Sec-WebSocket-Protocol": "chat"}, 400, "mqtt subprotocol"),
    ("/$iothub/websocket", {"Sec-WebSocket-Key": "short"}, 400, "16 random bytes"),
    ("/$iothub/websocket", {"Sec-WebSocket-Version": "8"}, 426, "version 13"),
    ("/mqtt", {}, 404, "/$iothub/websocket"),
    ("/", {"Upgrade": None, "Connection": None}, 404, "send Upgrade: websocket"),
])
def test_a_bad_upgrade_is_refused_with_what_to_fix_and_the_port_keeps_serving(emu, ca_pem, path, change, status,
                                                                              says):
    headers = {k: v for k, v in {**UPGRADE, **change}.items() if v is not None}
    with _tls(emu, ca_pem) as sock:
        got, response = _request(sock, path, headers)
    assert got == status and says.encode() in response, response
    with _tls(emu, ca_pem) as sock:
        assert _request(sock, "/$iothub/websocket", UPGRADE)[0] == 101


def _frame(opcode: int, payload: bytes, *, masked: bool = True) -> bytes:
    mask = os.urandom(4) if masked else b""
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if masked else payload
    return struct.pack("!BB", 0x80 | opcode, (0x80 if masked else 0) | len(payload)) + mask + body


def _read_frame(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    head = sock.recv(2)
    length = head[1] & 0x7F
    payload = b""
    while len(payload) < length:
        payload += sock.recv(length - len(payload))
    return head[0] & 0x0F, payload


@pytest.mark.parametrize(("frame", "code"), [
    (_frame(websocket.BINARY, b"\x10\x00", masked=False), websocket.CLOSE_PROTOCOL_ERROR),
    (_frame(websocket.TEXT, b"CONNECT"), websocket.CLOSE_UNSUPPORTED_DATA),
    (_frame(0x3, b""), websocket.CLOSE_PROTOCOL_ERROR),
], ids=["unmasked", "text", "undefined-opcode"])   # stable ids: the frames carry random masks
def test_a_broken_frame_closes_that_connection_with_its_code(emu, ca_pem, frame, code):
    with _tls(emu, ca_pem) as sock:
        assert _request(sock, "/$iothub/websocket", UPGRADE)[0] == 101
        sock.sendall(_frame(websocket.PING, b"hi"))
        assert _read_frame(sock) == (websocket.PONG, b"hi")
        sock.sendall(frame)
        opcode, payload = _read_frame(sock)
    assert opcode == websocket.CLOSE and struct.unpack("!H", payload[:2])[0] == code, payload
    device = IoTHubDeviceClient.create_from_connection_string(
        hubrig.connection_string(emu, "ws2"), server_verification_cert=ca_pem, connection_retry=False,
        websockets=True)
    device.connect()
    device.send_message("still served")
    device.shutdown()
    assert [r.payload for r in emu.emulator.hub.state.telemetry(device_id="ws2")] == [b"still served"]


def test_plain_https_on_the_port_reaches_the_handler_routed_there(emu, ca_pem):
    async def handler(request: http.Request) -> http.Response:
        return http.Response(200, {"path": request.path})

    assert emu.emulator.route_https(emu.emulator.hub.hostname, handler)
    with _tls(emu, ca_pem) as sock:
        status, response = _request(sock, "/devices/x/files", {"Connection": "close"})
    assert status == 200 and json.loads(response.partition(b"\r\n\r\n")[2]) == {"path": "/devices/x/files"}
    assert not emu.emulator.route_https("127.0.0.2", handler)   # no WebSocket listener on that address


def test_a_leaf_device_reaches_the_hub_through_the_gateway_over_websockets(tmp_path, loopback_address):
    gateway = hubrig.unique_loopback()
    emu = hubrig.start(tmp_path, loopback_address, gateway_address=gateway, websocket_port=443)
    try:
        hub = emu.emulator.hub
        device = hub.state.create_device("leaf-ws")
        client = IoTHubDeviceClient.create_from_symmetric_key(
            device.primary_key, hub.hostname, "leaf-ws", gateway_hostname=gateway,
            server_verification_cert=emu.emulator.pki.root().pem, connection_retry=False, websockets=True)
        client.connect()
        try:
            client.send_message("through the gateway on 443")
            assert hub.sessions["leaf-ws"].via_gateway
        finally:
            client.shutdown()
        assert [r.payload for r in hub.state.telemetry(device_id="leaf-ws")] == [b"through the gateway on 443"]
    finally:
        emu.stop()

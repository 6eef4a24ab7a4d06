"""Test rig for the hub emulator: a running emulator per test and a raw MQTT client for bad input."""

from __future__ import annotations

import errno
import socket
import ssl
import time
from pathlib import Path

import roost_test_support

from emulator.hub import codec
from emulator.hub.sas import make_sas
from emulator.hub.server import EmulatorConfig, EmulatorThread


def unique_loopback() -> str:
    """Another loopback address from the same allocator (and counter) as the `loopback_address` fixture."""
    return roost_test_support.unique_loopback()


def start(tmp_path: Path, address: str, **options) -> EmulatorThread:
    """An emulator on ``address``; if another test process grabbed it since it was probed, on a fresh one."""
    options.setdefault("dps_https_port", 0)
    for attempt in range(5):
        emu = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "state", address=address, **options))
        try:
            return emu.start()
        except OSError as exc:
            emu.stop()
            if exc.errno != errno.EADDRINUSE or attempt == 4:
                raise
            address = unique_loopback()
    raise AssertionError("unreachable")


def root_ca(emu: EmulatorThread) -> str:
    return Path(emu.emulator.connection_info()["root_ca"]).read_text()


def connection_string(emu: EmulatorThread, device_id: str) -> str:
    hub = emu.emulator.hub
    device = hub.state.find_device(device_id) or hub.state.create_device(device_id)
    return f"HostName={hub.hostname};DeviceId={device_id};SharedAccessKey={device.primary_key}"


wait_for = roost_test_support.wait_for   # poll with a deadline against hangs (not a timing assertion)


class RawClient:
    """A bare MQTT-over-TLS client speaking through the emulator's own codec (for malformed traffic)."""

    def __init__(self, host: str, ca_pem: str, cert: tuple[str, str] | None = None, timeout: float = 5.0) -> None:
        context = ssl.create_default_context(cadata=ca_pem)
        if cert:
            context.load_cert_chain(*cert)
        raw = socket.create_connection((host, 8883), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=host)
        self.buffer = b""
        self.pending: list[codec.Packet] = []

    def send(self, packet: codec.Packet) -> None:
        self.sock.sendall(codec.encode(packet))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self) -> codec.Packet | None:
        """The next packet, or None when the server closed the connection."""
        while True:
            packets, rest = codec.split_packets(self.buffer)
            if packets:
                # split_packets decoded all complete packets; keep the others queued for the next calls.
                self.pending.extend(packets)
                self.buffer = rest
            if self.pending:
                return self.pending.pop(0)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionError, ssl.SSLError):
                chunk = b""
            if not chunk:
                self.close()  # as a real client does once the server has closed: lets the server finish at once
                return None
            self.buffer += chunk

    def recv_until_closed(self) -> list[codec.Packet]:
        out = []
        while (packet := self.recv()) is not None:
            out.append(packet)
        return out

    def connect_device(self, hub: str, device_id: str, key: str | None, expiry: int | None = None,
                       clean: bool = False) -> codec.Connack:
        password = None
        if key is not None:
            password = make_sas(f"{hub}/devices/{device_id}", key, expiry or int(time.time()) + 3600).encode()
        self.send(codec.Connect(device_id, f"{hub}/{device_id}/?api-version=2021-04-12", password, clean))
        ack = self.recv()
        assert isinstance(ack, codec.Connack), ack
        return ack

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

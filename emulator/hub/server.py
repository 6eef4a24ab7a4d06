"""The emulator process: PKI, TLS listeners, hubs, DPS and the transparent gateway, started together.

Every listener speaks MQTT on port 8883 (the SDK hard-codes it) of its own address. A CONNECT is routed by
its user name: ``{idScope}/registrations/{id}/...`` goes to DPS, ``{hub}/{device}/?...`` to the hub of that
name. The gateway listener presents the gateway certificate chain (root -> gateway CA -> gateway) and hands
sessions to the hub the user name names, as an IoT Edge transparent gateway relays to its parent hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from emulator.hub import codec, http, websocket
from emulator.hub.connection import ConnectionClosed, MqttConnection
from emulator.hub.dps import Dps
from emulator.hub.dps_http import DpsHttpApi
from emulator.hub.faults import Quotas
from emulator.hub.iothub import Hub
from emulator.hub.state import DpsState, HubState
from emulator.hub.tls import server_context
from emulator.pki import Pki

log = logging.getLogger(__name__)

T = TypeVar("T")
MQTT_PORT = 8883
DEFAULT_ID_SCOPE = "0ne00000001"
CONNECT_TIMEOUT_S = 10.0
_PACKET_OVERHEAD = 70_000
# How long a closing TLS connection waits for the peer's close_notify (asyncio's default is 30 s).
_TLS_SHUTDOWN_TIMEOUT_S = 2.0  # topic (at most 65535 bytes) and header around a maximal message


def free_loopback_address(ports: tuple[int, ...] = (8883,), second_octets: range = range(100, 200)) -> str:
    """A random 127.x.y.z address whose ``ports`` are all free at this moment.

    The Azure IoT SDK always connects to port 8883, so each emulator run (a demo, a benchmark) beside others
    needs an address of its own; any 127/8 address works on Linux without setup.
    """
    rng = random.Random()
    for _ in range(500):
        address = f"127.{rng.choice(second_octets)}.{rng.randint(1, 250)}.{rng.randint(1, 250)}"
        free = True
        for port in ports:
            with socket.socket() as probe:
                try:
                    probe.bind((address, port))
                except OSError:
                    free = False
                    break
        if free:
            return address
    raise RuntimeError(f"no loopback address with ports {ports} free")


def default_state_dir() -> Path:
    """$ROOST_SIM_STATE_DIR, else ~/.local/state/roost-sim/hub (XDG_STATE_HOME respected)."""
    if os.environ.get("ROOST_SIM_STATE_DIR"):
        return Path(os.environ["ROOST_SIM_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "roost-sim" / "hub"


@dataclass
class EmulatorConfig:
    """Where the emulator listens and keeps its state.

    ``address`` serves the primary hub (named ``hub_hostname``, default the address) and, unless
    ``dps_address`` says otherwise, DPS. ``extra_hubs`` adds hubs for DPS allocation; each entry is an address
    that is also the hub's host name. The gateway listens on ``gateway_address`` with a certificate naming
    ``gateway_hostnames`` (default: the gateway address).
    """

    state_dir: Path
    address: str = "127.0.0.1"
    hub_hostname: str | None = None
    extra_hubs: list[str] = field(default_factory=list)
    dps_address: str | None = None
    dps_https_port: int = 8443
    id_scope: str = DEFAULT_ID_SCOPE
    gateway_address: str | None = None
    gateway_hostnames: list[str] | None = None
    server_names: list[str] = field(default_factory=list)   # extra SANs for the hub/DPS certificate
    mqtt_port: int = MQTT_PORT
    # MQTT over WebSockets (the SDK's websockets=True, always port 443) beside 8883 on every listener address.
    websocket_port: int | None = None
    immediate_assignment: bool = True
    quotas: Quotas | None = None
    clock: Callable[[], float] = time.time


@dataclass
class _Listener:
    address: str
    gateway: bool
    hubs: set[str]
    dps: bool
    server: asyncio.Server | None = None
    websocket_server: asyncio.Server | None = None
    # Plain HTTPS requests on the WebSocket port (device file upload), once the service API hands them a handler.
    https_handler: http.Handler | None = None


class Emulator:
    """All of it, on the running asyncio loop: ``await start()``, ``await stop()``."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.state_dir = Path(config.state_dir)
        self.pki = Pki(self.state_dir / "pki")
        self.hubs: dict[str, Hub] = {}
        self.dps: Dps | None = None
        self._listeners: list[_Listener] = []
        self._https: asyncio.Server | None = None
        self._https_connections = http.Connections()
        self._connections: dict[asyncio.Task, MqttConnection] = {}
        self.started = False

    @property
    def hub(self) -> Hub:
        """The primary hub."""
        return self.hubs[self.config.hub_hostname or self.config.address]

    def _layout(self) -> list[_Listener]:
        cfg = self.config
        primary = cfg.hub_hostname or cfg.address
        by_address: dict[str, _Listener] = {}
        by_address[cfg.address] = _Listener(cfg.address, False, {primary}, False)
        for extra in cfg.extra_hubs:
            if extra in by_address:
                raise ValueError(f"hub address {extra} is given twice")
            by_address[extra] = _Listener(extra, False, {extra}, False)
        dps_address = cfg.dps_address or cfg.address
        by_address.setdefault(dps_address, _Listener(dps_address, False, set(), False)).dps = True
        listeners = list(by_address.values())
        if cfg.gateway_address:
            if cfg.gateway_address in by_address:
                raise ValueError(f"the gateway needs an address of its own, {cfg.gateway_address} serves the hub/DPS")
            listeners.append(_Listener(cfg.gateway_address, True, set(), False))
        return listeners

    async def start(self) -> None:
        cfg = self.config
        self._listeners = self._layout()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o700)
        root = self.pki.root()
        names = sorted({a for lst in self._listeners if not lst.gateway for a in (lst.address, *lst.hubs)}
                       | set(cfg.server_names))
        server_cert = self.pki.server("server", names)
        hub_context = server_context(str(server_cert.chain_path), str(server_cert.key_path))
        quotas = cfg.quotas
        for lst in self._listeners:
            for name in lst.hubs:
                state = HubState(self.state_dir / f"hub-{name}.sqlite", cfg.clock)
                self.hubs[name] = Hub(name, state, trusted_cas=[root.certificate], clock=cfg.clock,
                                      quotas=quotas if name == (cfg.hub_hostname or cfg.address) and quotas else None)
        self.dps = Dps(DpsState(self.state_dir / "dps.sqlite", cfg.clock), self.hubs, cfg.id_scope, clock=cfg.clock,
                       immediate_assignment=cfg.immediate_assignment)
        max_packet = max(h.quotas.max_message_bytes for h in self.hubs.values()) + _PACKET_OVERHEAD
        try:
            for lst in self._listeners:
                context = hub_context
                if lst.gateway:
                    gateway_cert = self._gateway_certificate(lst.address)
                    context = server_context(str(gateway_cert.chain_path), str(gateway_cert.key_path))
                lst.server = await asyncio.start_server(
                    lambda r, w, listener=lst: self._on_connection(r, w, listener, max_packet),
                    lst.address, cfg.mqtt_port, ssl=context, reuse_address=True,
                    ssl_shutdown_timeout=_TLS_SHUTDOWN_TIMEOUT_S)
                if cfg.websocket_port is not None:
                    lst.websocket_server = await http.start_server(
                        functools.partial(self._on_https, lst), lst.address, cfg.websocket_port, context,
                        cfg.clock, self._https_connections,
                        upgrade=functools.partial(self._on_websocket, lst, max_packet))
            dps_address = cfg.dps_address or cfg.address
            self._https = await http.start_server(DpsHttpApi(self.dps), dps_address, cfg.dps_https_port,
                                                  server_context(str(server_cert.chain_path),
                                                                 str(server_cert.key_path)), cfg.clock,
                                                  self._https_connections)
        except OSError:
            await self.stop()
            raise
        self.started = True
        log.info("emulator listening: %s", self.connection_info())

    def route_https(self, address: str, handler: http.Handler) -> bool:
        """Serve ``handler`` for plain HTTPS requests on ``address``'s WebSocket port, which devices also use for
        file upload; False when no WebSocket listener is there (bind the port yourself then)."""
        for lst in self._listeners:
            if lst.address == address and lst.websocket_server is not None:
                lst.https_handler = handler
                return True
        return False

    async def _on_https(self, listener: _Listener, request: http.Request) -> http.Response:
        if listener.https_handler is None:
            raise http.HttpError(404, f"{request.path} is not served here; MQTT over WebSockets is at "
                                      f"{websocket.PATH} (send Upgrade: websocket)")
        return await listener.https_handler(request)

    async def _on_websocket(self, listener: _Listener, max_packet: int, request: http.Request,
                            reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Answer the upgrade, then serve MQTT over the frames as over 8883."""
        try:
            accept = websocket.check_upgrade(request.method, request.path, request.headers)
        except websocket.HandshakeRefused as exc:
            log.info("refused a WebSocket upgrade from %s: %s", writer.get_extra_info("peername"), exc)
            raise http.HttpError(exc.status, str(exc)) from None
        writer.write(websocket.switching_protocols(accept))
        framed = websocket.FramedWriter(writer)
        payloads = asyncio.StreamReader()
        frames = asyncio.create_task(websocket.pump(reader, framed, payloads, max_packet))
        try:
            await self._on_connection(payloads, framed, listener, max_packet)
        finally:
            frames.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await frames

    def _gateway_certificate(self, address: str):
        """The configured names' certificate; without names, one `roost-sim pki gateway` made, else the address."""
        names = self.config.gateway_hostnames
        if not names:
            existing = self.pki.load("gateway")
            if existing is not None and self.pki.is_fresh(existing):
                return existing
            names = [address]
        return self.pki.gateway(names)

    def gateway_hostnames(self) -> list[str]:
        """The names in the gateway certificate in use (what GatewayHostName must be)."""
        gateway = self.pki.load("gateway")
        if gateway is None:
            return []
        from cryptography import x509

        san = gateway.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(n.value) for n in san]

    @property
    def dps_https_port(self) -> int:
        if self._https is None:
            return self.config.dps_https_port
        return self._https.sockets[0].getsockname()[1]

    def connection_info(self) -> dict[str, Any]:
        """What a client needs: hub host names, DPS scope and hosts, the gateway, the root CA."""
        cfg = self.config
        dps_address = cfg.dps_address or cfg.address
        root = self.pki.root()
        info: dict[str, Any] = {
            "hubs": sorted(self.hubs),
            "hub": cfg.hub_hostname or cfg.address,
            "mqtt_port": cfg.mqtt_port,
            "websocket_port": cfg.websocket_port,
            "dps": {"id_scope": cfg.id_scope, "host": dps_address,
                    "https": f"https://{dps_address}:{self.dps_https_port}"},
            "root_ca": str(root.cert_path),
            "state_dir": str(self.state_dir),
        }
        if cfg.gateway_address:
            info["gateway"] = {"address": cfg.gateway_address, "hostnames": self.gateway_hostnames()}
        return info

    async def stop(self) -> None:
        for lst in self._listeners:
            for server in (lst.server, lst.websocket_server):
                if server:
                    server.close()
        if self._https:
            self._https.close()
        # Sessions first, over 8883 and WebSockets alike; then whatever HTTPS connections are left.
        for hub in self.hubs.values():
            await hub.close_all("emulator stopping")
        await self._https_connections.abort_all()
        for task, conn in list(self._connections.items()):
            conn.close("emulator stopping", abort=True)
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for lst in self._listeners:
            if lst.server:
                with contextlib.suppress(Exception):
                    await lst.server.wait_closed()
        for hub in self.hubs.values():
            hub.state.close()
        if self.dps:
            self.dps.state.close()
        self.started = False

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             listener: _Listener, max_packet: int) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = MqttConnection(reader, writer, max_packet)
        self._connections[task] = conn
        try:
            await self._dispatch(conn, listener)
        except ConnectionClosed as exc:
            conn.close(str(exc))
        except Exception:
            log.exception("connection %s failed", conn.peer)
            conn.close("internal error")
        finally:
            conn.close(conn.close_reason or "done")
            self._connections.pop(task, None)

    async def _dispatch(self, conn: MqttConnection, listener: _Listener) -> None:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                first = await conn.read()
        except TimeoutError:
            conn.close("no CONNECT within 10 s")
            return
        except codec.MalformedPacket as exc:
            # A CONNECT from another protocol version gets CONNACK 1 (MQTT-3.1.2-2); anything else: close.
            if "protocol name" in str(exc):
                conn.send(codec.Connack(codec.ConnackCode.UNACCEPTABLE_PROTOCOL))
            conn.close(f"malformed first packet: {exc}")
            return
        if not isinstance(first, codec.Connect):
            conn.close(f"first packet is {type(first).__name__}, not CONNECT")  # MQTT-3.1.0-1
            return
        if first.protocol_level != 4:
            conn.send(codec.Connack(codec.ConnackCode.UNACCEPTABLE_PROTOCOL))
            conn.close(f"MQTT protocol level {first.protocol_level} (only 3.1.1, level 4)")
            return
        conn.keep_alive = first.keep_alive
        username = first.username or ""
        parts = username.split("/")
        if len(parts) >= 3 and parts[1] == "registrations":
            if self.dps is None or not listener.dps:
                conn.send(codec.Connack(codec.ConnackCode.NOT_AUTHORIZED))
                conn.close("DPS is not served on this address")
                return
            await self.dps.serve_mqtt(conn, first)
            return
        hub = self.hubs.get(parts[0].lower()) or self.hubs.get(parts[0])
        if hub is None or not (listener.gateway or hub.hostname in listener.hubs):
            log.info("refused %s: user name names hub %r, not served here", conn.peer, parts[0])
            conn.send(codec.Connack(codec.ConnackCode.NOT_AUTHORIZED))
            await conn.drain()
            conn.close("unknown hub")
            return
        await hub.serve(conn, first, via_gateway=listener.gateway)


class EmulatorThread:
    """Runs an :class:`Emulator` on its own event loop in a daemon thread (for tests and sync callers)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.emulator = Emulator(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="roost-hub-emulator", daemon=True)

    def start(self) -> EmulatorThread:
        self._thread.start()
        self.call(self.emulator.start())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = 60) -> T:
        """Run a coroutine on the emulator's loop and return its result (or raise its exception)."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def run(self, fn: Callable[[], T]) -> T:
        """Run a plain function on the emulator's loop (for code that touches sessions)."""
        async def wrapper() -> T:
            return fn()

        return self.call(wrapper())

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self.call(self.emulator.stop(), timeout=30)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
        if not self.loop.is_running():
            self.loop.close()

    def __enter__(self) -> EmulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

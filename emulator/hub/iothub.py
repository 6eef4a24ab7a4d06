"""IoT Hub's device side over MQTT: authentication, telemetry, twins, direct methods, C2D, sessions.

A :class:`Hub` owns one hub's state and the live :class:`DeviceSession` of each connected device. Topics
are dispatched by a :class:`TopicRouter` (longest prefix wins); a topic nobody handles disconnects the
client, as IoT Hub does. Service-side operations (invoke a method, change a twin, send C2D) are coroutines
to run on the emulator's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from emulator.hub import codec, tls
from emulator.hub.connection import ConnectionClosed, MqttConnection
from emulator.hub.faults import Faults, Quotas
from emulator.hub.sas import SasError, verify_sas
from emulator.hub.state import (
    AUTH_CA,
    AUTH_SAS,
    AUTH_SELF_SIGNED,
    C2DMessage,
    HubState,
    StateError,
    TelemetryRecord,
    Twin,
    normalize_thumbprint,
)
from emulator.pki import thumbprint

log = logging.getLogger(__name__)

# A handler returns True when it sent (or deliberately withheld) the PUBACK itself; otherwise the session
# acknowledges a QoS 1 publish once the handler returns.
Handler = Callable[["DeviceSession", codec.Publish], Awaitable[bool | None]]
TelemetryListener = Callable[[TelemetryRecord], None]

TWIN_RESPONSE = "$iothub/twin/res/"
TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/"
METHOD_REQUEST = "$iothub/methods/POST/"
CLOSE_WAIT_S = 2.0  # how long a closing session waits for the peer to finish the TLS close


class HubError(Exception):
    """A service-side operation failed; ``status`` and ``error_code`` are what IoT Hub would answer."""

    status = 500
    error_code = 500001

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeviceNotOnline(HubError):
    status = 404
    error_code = 404103


class MethodTimeout(HubError):
    status = 504
    error_code = 504101


class InvalidMethodResponse(HubError):
    status = 502
    error_code = 502000


@dataclass
class MethodResult:
    status: int
    payload: Any


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 filter matching with ``+`` and ``#``; ``$`` topics never match a leading wildcard."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for i, level in enumerate(filter_levels):
        if level == "#":
            return True
        if i >= len(topic_levels) or (level != "+" and level != topic_levels[i]):
            return False
    return len(filter_levels) == len(topic_levels)


def parse_properties(text: str) -> dict[str, str]:
    """``k=v&k2=v2`` (URL-encoded) from a topic tail; a key without ``=`` maps to an empty string."""
    out: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        out[urllib.parse.unquote(key)] = urllib.parse.unquote(value)
    return out


def encode_properties(props: dict[str, str]) -> str:
    return "&".join(f"{urllib.parse.quote(k, safe='')}={urllib.parse.quote(v, safe='')}" for k, v in props.items())


class TopicRouter:
    """Maps topic prefixes to handlers; the longest registered prefix matching a topic wins."""

    def __init__(self) -> None:
        self._routes: dict[str, Handler] = {}

    def add(self, prefix: str, handler: Handler) -> None:
        self._routes[prefix] = handler

    def remove(self, prefix: str) -> None:
        self._routes.pop(prefix, None)

    def match(self, topic: str) -> Handler | None:
        best = max((p for p in self._routes if topic.startswith(p)), key=len, default=None)
        return self._routes[best] if best is not None else None


class DeviceSession:
    """A connected device: its connection, subscriptions and the C2D delivery task."""

    def __init__(self, hub: Hub, conn: MqttConnection, device_id: str, clean: bool,
                 subscriptions: dict[str, int], via_gateway: bool) -> None:
        self.hub = hub
        self.conn = conn
        self.device_id = device_id
        self.clean = clean
        self.subscriptions = subscriptions
        self.via_gateway = via_gateway
        self.c2d_wakeup = asyncio.Event()
        self.finished = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._expiry: asyncio.TimerHandle | None = None

    def wants(self, topic: str) -> bool:
        return any(topic_matches(f, topic) for f in self.subscriptions)

    def close(self, reason: str, *, abort: bool = False) -> None:
        self.conn.close(reason, abort=abort)

    async def reply(self, topic: str, payload: bytes = b"", qos: int = 0) -> None:
        """Send to the device after any injected delay (ignored when the device did not subscribe)."""
        await self.hub.faults.hold(self.device_id)
        if self.wants(topic):
            await self.conn.publish(topic, payload, qos)

    async def ack(self, packet_id: int) -> None:
        await self.hub.faults.hold(self.device_id)
        self.conn.send(codec.Ack(codec.PacketType.PUBACK, packet_id))

    async def run(self, session_present: bool, token_expiry: float | None) -> None:
        conn = self.conn
        conn.send(codec.Connack(codec.ConnackCode.ACCEPTED, session_present))
        loop = asyncio.get_running_loop()
        if token_expiry is not None:
            # IoT Hub closes the connection when the SAS token it was opened with expires.
            self._expiry = loop.call_later(max(0.0, token_expiry - self.hub.clock()), self.close,
                                           "SAS token expired; reconnect with a fresh token")
        self._tasks.append(asyncio.ensure_future(self._deliver_c2d()))
        try:
            while True:
                packet = await conn.read()
                if isinstance(packet, codec.Publish):
                    await self._on_publish(packet)
                elif isinstance(packet, codec.Ack) and packet.kind is codec.PacketType.PUBACK:
                    conn.puback_received(packet.packet_id)
                elif isinstance(packet, codec.Subscribe):
                    self._on_subscribe(packet)
                elif isinstance(packet, codec.Unsubscribe):
                    for topic in packet.topics:
                        self.subscriptions.pop(topic, None)
                    self._save()
                    conn.send(codec.Ack(codec.PacketType.UNSUBACK, packet.packet_id))
                elif isinstance(packet, codec.Control) and packet.kind is codec.PacketType.PINGREQ:
                    conn.send(codec.Control(codec.PacketType.PINGRESP))
                elif isinstance(packet, codec.Control) and packet.kind is codec.PacketType.DISCONNECT:
                    conn.close("client disconnected")
                    break
                else:
                    conn.close(f"unexpected {type(packet).__name__} packet from a connected client")
                    break
        except codec.MalformedPacket as exc:
            conn.close(f"malformed packet: {exc}")
        except ConnectionClosed as exc:
            conn.close(str(exc))
        finally:
            await self._finish()

    async def _finish(self) -> None:
        if self._expiry:
            self._expiry.cancel()
        self.c2d_wakeup.set()
        for task in self._tasks:
            task.cancel()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            # The device counts as connected until its socket is really closed (TLS close_notify answered, or
            # the bounded shutdown gave up), so "disconnected" on the service side means the client saw it too.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.writer.wait_closed(), CLOSE_WAIT_S)
        finally:
            # Even when the connection's task is cancelled meanwhile (the emulator stopping): close_all and a
            # taking-over connection wait for this.
            self.hub._session_ended(self)
            self.finished.set()

    def _save(self) -> None:
        if not self.clean:
            self.hub.state.save_session(self.device_id, self.subscriptions)

    def _on_subscribe(self, packet: codec.Subscribe) -> None:
        codes = []
        for topic, qos in packet.topics:
            if self.hub.allowed_filter(self.device_id, topic):
                granted = min(qos, 1)  # IoT Hub has no QoS 2
                self.subscriptions[topic] = granted
                codes.append(granted)
            else:
                log.info("device %s: refused subscription to %r", self.device_id, topic)
                codes.append(codec.SUBACK_FAILURE)
        self._save()
        self.conn.send(codec.Suback(packet.packet_id, codes))
        self.c2d_wakeup.set()

    async def _on_publish(self, packet: codec.Publish) -> None:
        if packet.qos == 2:
            self.conn.close("QoS 2 is not supported by IoT Hub")
            raise ConnectionClosed("QoS 2")
        handler = self.hub.router.match(packet.topic)
        if handler is None:
            self.conn.close(f"topic {packet.topic[:120]!r} is not an IoT Hub topic")
            raise ConnectionClosed("unknown topic")
        try:
            handled = await handler(self, packet)
        except StateError as exc:
            # e.g. the device was deleted while connected: IoT Hub drops such a connection.
            self.conn.close(f"cannot serve {packet.topic[:80]!r}: {exc}")
            raise ConnectionClosed(str(exc)) from None
        if not handled and packet.qos == 1 and packet.packet_id is not None:
            self.conn.send(codec.Ack(codec.PacketType.PUBACK, packet.packet_id))

    async def _deliver_c2d(self) -> None:
        probe = f"devices/{self.device_id}/messages/devicebound/x"
        state = self.hub.state
        while not self.conn.closed.is_set():
            self.c2d_wakeup.clear()
            message = state.next_c2d(self.device_id) if self.wants(probe) else None
            if message is None:
                await self.c2d_wakeup.wait()
                continue
            topic = f"devices/{self.device_id}/messages/devicebound/" + \
                encode_properties({**message.system_properties, **message.properties})
            acked: list[int] = []

            def completed(seq: int = message.seq, acked: list[int] = acked) -> None:
                acked.append(seq)
                state.complete_c2d(seq)

            try:
                await self.conn.publish(topic, message.payload, qos=1, on_ack=completed)
            finally:
                if not acked:
                    state.release_c2d(message.seq)


class Hub:
    """One emulated IoT hub, named by the host name devices put in their connection strings."""

    def __init__(self, hostname: str, state: HubState, *, trusted_cas: list[x509.Certificate] | None = None,
                 clock: Callable[[], float] = time.time, quotas: Quotas | None = None) -> None:
        self.hostname = hostname
        self.state = state
        self.clock = clock
        self.quotas = quotas or Quotas()
        self.faults = Faults(_hub=self)
        self.trusted_cas = list(trusted_cas or [])
        self.sessions: dict[str, DeviceSession] = {}
        self.closed_reasons: dict[str, str] = {}   # device id -> why its last connection ended (diagnostics)
        self.router = TopicRouter()
        self.router.add("devices/", self._on_device_topic)
        self.router.add("$iothub/twin/", self._on_twin)
        self.router.add("$iothub/methods/res/", self._on_method_response)
        self._listeners: list[TelemetryListener] = []
        self._methods: dict[str, tuple[str, asyncio.Future[MethodResult]]] = {}
        self._rid = itertools.count(1)

    # device connections

    def allowed_filter(self, device_id: str, topic: str) -> bool:
        return topic in (f"devices/{device_id}/messages/devicebound/#", "$iothub/twin/res/#",
                         "$iothub/twin/PATCH/properties/desired/#", "$iothub/methods/POST/#")

    async def serve(self, conn: MqttConnection, connect: codec.Connect, *, via_gateway: bool = False) -> None:
        """Authenticate a CONNECT addressed to this hub and run the session until it ends."""
        code, device_id, expiry = self._authenticate(conn, connect)
        if code != codec.ConnackCode.ACCEPTED:
            conn.send(codec.Connack(code))
            await conn.drain()
            conn.close(f"CONNACK {int(code)}")
            return
        old = self.sessions.get(device_id)
        if old is not None:
            # MQTT-3.1.4-2 and IoT Hub: a second connection with the same client id takes over.
            # Abort rather than close: the old peer is often gone, and the new connection must not wait for it.
            old.close("another connection with the same device id took over", abort=True)
            await old.finished.wait()
        if connect.clean_session:
            self.state.drop_session(device_id)
            subscriptions, present = {}, False
        else:
            stored = self.state.load_session(device_id)
            subscriptions, present = (stored or {}), stored is not None
        session = DeviceSession(self, conn, device_id, connect.clean_session, subscriptions, via_gateway)
        self.sessions[device_id] = session
        self.state.set_connection_state(device_id, True)
        self.state.count("connections")
        log.info("device %s connected from %s%s", device_id, conn.peer, " via gateway" if via_gateway else "")
        await session.run(present, expiry)

    def _authenticate(self, conn: MqttConnection, connect: codec.Connect) -> tuple[int, str, float | None]:
        refused = codec.ConnackCode.NOT_AUTHORIZED
        parts = (connect.username or "").split("/")
        if len(parts) < 3 or not parts[1]:
            log.info("refused %s: user name %r is not '{hub}/{device}/?api-version=...'", conn.peer,
                     connect.username)
            return codec.ConnackCode.BAD_CREDENTIALS, "", None
        device_id = parts[1]
        if len(parts) > 3 and parts[2] and not parts[2].startswith("?"):
            log.info("refused %s: module identities are not emulated", conn.peer)
            return refused, device_id, None
        if connect.client_id != device_id:
            log.info("refused %s: client id %r differs from device id %r", conn.peer, connect.client_id, device_id)
            return codec.ConnackCode.IDENTIFIER_REJECTED, device_id, None
        if self.faults.take_refusal(device_id):
            log.info("refused %s: device %r: connection refused by fault injection", conn.peer, device_id)
            return codec.ConnackCode.SERVER_UNAVAILABLE, device_id, None
        if not self.quotas.connection_permitted():
            self.state.count("throttled_connections")
            return codec.ConnackCode.SERVER_UNAVAILABLE, device_id, None
        device = self.state.find_device(device_id)
        if device is None:
            log.info("refused %s: device %r is not registered in %s", conn.peer, device_id, self.hostname)
            return refused, device_id, None
        if not device.enabled:
            log.info("refused %s: device %r is disabled", conn.peer, device_id)
            return refused, device_id, None
        if connect.password is not None:
            if device.auth_type != AUTH_SAS:
                log.info("refused %s: device %r uses X.509, not SAS", conn.peer, device_id)
                return refused, device_id, None
            try:
                token = verify_sas(connect.password.decode("utf-8", "replace"), f"{self.hostname}/devices/{device_id}",
                                   [device.primary_key, device.secondary_key], self.clock())
            except SasError as exc:
                log.info("refused %s: device %r: %s", conn.peer, device_id, exc)
                return refused, device_id, None
            return codec.ConnackCode.ACCEPTED, device_id, float(token.expiry)
        problem = self.check_certificate(device.auth_type, device_id, tls.peer_chain(conn.ssl_object),
                                         [device.primary_thumbprint, device.secondary_thumbprint])
        if problem:
            log.info("refused %s: device %r: %s", conn.peer, device_id, problem)
            return refused, device_id, None
        return codec.ConnackCode.ACCEPTED, device_id, None

    def check_certificate(self, auth_type: str, device_id: str, chain: list[x509.Certificate],
                          thumbprints: list[str | None]) -> str | None:
        """None if ``chain`` proves ``device_id`` under ``auth_type``; otherwise the reason it does not."""
        if not chain:
            return "no SAS token and no client certificate"
        now = datetime.datetime.fromtimestamp(self.clock(), datetime.UTC)
        leaf = chain[0]
        if auth_type == AUTH_SELF_SIGNED:
            problem = tls.check_validity(leaf, now)
            if problem:
                return problem
            wanted = {normalize_thumbprint(t) for t in thumbprints if t}
            if {thumbprint(leaf, "sha1"), thumbprint(leaf, "sha256")} & wanted:
                return None
            return "certificate thumbprint is not registered for this device"
        if auth_type == AUTH_CA:
            cns = [a.value for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
            if device_id not in cns:
                return f"certificate subject CN {cns} does not name the device {device_id!r}"
            trusted = self.trusted_cas + [x509.load_pem_x509_certificate(p.encode())
                                          for p in self.state.list_cas().values()]
            return tls.check_client_chain(chain, trusted, now)
        return f"device authentication type {auth_type!r} does not accept certificates"

    def _session_ended(self, session: DeviceSession) -> None:
        self.closed_reasons.pop(session.device_id, None)
        self.closed_reasons[session.device_id] = session.conn.close_reason
        if len(self.closed_reasons) > 10_000:
            del self.closed_reasons[next(iter(self.closed_reasons))]
        if self.sessions.get(session.device_id) is session:
            del self.sessions[session.device_id]
            self.state.release_all_c2d(session.device_id)
            if self.state.find_device(session.device_id):
                self.state.set_connection_state(session.device_id, False)

    def connected_devices(self) -> list[str]:
        return sorted(self.sessions)

    def disconnect(self, device_id: str, reason: str = "disconnected by the service") -> bool:
        session = self.sessions.get(device_id)
        if session is None:
            return False
        session.close(reason)
        return True

    async def close_all(self, reason: str) -> None:
        sessions = list(self.sessions.values())
        for session in sessions:
            session.close(reason, abort=True)
        await asyncio.gather(*(s.finished.wait() for s in sessions))

    # telemetry

    def add_telemetry_listener(self, listener: TelemetryListener) -> None:
        self._listeners.append(listener)

    def remove_telemetry_listener(self, listener: TelemetryListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def _on_device_topic(self, session: DeviceSession, packet: codec.Publish) -> bool:
        prefix = f"devices/{session.device_id}/messages/events/"
        if not (packet.topic.startswith(prefix) or packet.topic == prefix[:-1]):
            session.close(f"device {session.device_id!r} may not publish to {packet.topic[:120]!r}")
            raise ConnectionClosed("topic of another device")
        tail = packet.topic[len(prefix):]
        props = parse_properties(tail)
        system = {k: v for k, v in props.items() if k.startswith("$.")}
        application = {k: v for k, v in props.items() if not k.startswith("$.")}
        size = len(packet.payload) + len(tail)
        if size > self.quotas.max_message_bytes:
            session.close(f"message of {size} bytes exceeds IoT Hub's limit of {self.quotas.max_message_bytes}")
            raise ConnectionClosed("message too large")
        limit = self.quotas.daily_message_units
        if limit is not None and self.state.counters().get("d2c_units", 0) >= limit:
            self.state.count("quota_refusals")
            session.close(f"IotHubQuotaExceeded (403002): today's {limit} message units are used up")
            raise ConnectionClosed("quota exceeded")
        if await self.quotas.d2c_permit():
            self.state.count("throttled")
        record = self.state.add_telemetry(session.device_id, packet.payload, application, system)
        for listener in list(self._listeners):
            try:
                listener(record)
            except Exception:
                log.exception("telemetry listener failed")
        if packet.qos == 1 and packet.packet_id is not None and not self.faults.take_withheld(session.device_id):
            await session.ack(packet.packet_id)
        return True

    # twins

    async def _on_twin(self, session: DeviceSession, packet: codec.Publish) -> None:
        path, _, query = packet.topic.partition("?")
        rid = parse_properties(query).get("$rid")
        if rid is None:
            session.close(f"twin request {packet.topic[:120]!r} has no $rid")
            raise ConnectionClosed("twin without rid")
        response = f"{TWIN_RESPONSE}{{status}}/?$rid={urllib.parse.quote(rid, safe='')}"
        if path.rstrip("/") == "$iothub/twin/GET":
            twin = self.state.get_twin(session.device_id)
            await session.reply(response.format(status=200), json.dumps(twin.device_view()).encode())
        elif path.rstrip("/") == "$iothub/twin/PATCH/properties/reported":
            try:
                patch = json.loads(packet.payload)
                twin = self.state.patch_reported(session.device_id, patch)
            except (ValueError, StateError) as exc:
                message = f"invalid reported properties patch: {exc}"
                body = json.dumps({"errorCode": 400004, "message": message}).encode()
                await session.reply(response.format(status=400), body)
                return
            self.state.count("twin_updates")
            await session.reply(response.format(status=204) + f"&$version={twin.reported_version}")
        else:
            body = json.dumps({"errorCode": 400000, "message": f"unknown twin operation {path!r}"}).encode()
            await session.reply(response.format(status=400), body)

    async def update_twin(self, device_id: str, *, tags: dict | None = None, desired: dict | None = None,
                          replace: bool = False, etag: str | None = None) -> Twin:
        """Change tags/desired properties as the service does and push a desired patch to the device."""
        twin, push = self.state.update_twin(device_id, tags=tags, desired=desired, replace=replace, etag=etag)
        session = self.sessions.get(device_id)
        if push is not None and session is not None:
            try:
                await session.reply(f"{TWIN_DESIRED}?$version={twin.desired_version}", json.dumps(push).encode())
            except ConnectionClosed:
                pass  # the device fetches its twin after reconnecting, as the SDK does
        return twin

    # methods

    async def invoke_method(self, device_id: str, name: str, payload: Any = None, *,
                            timeout_s: float = 30.0) -> MethodResult:
        """Call a direct method on a connected device and wait for its answer."""
        session = self.sessions.get(device_id)
        if session is None or not session.wants(f"{METHOD_REQUEST}{name}/?$rid=0"):
            raise DeviceNotOnline(f"device {device_id!r} is not connected or has not subscribed to methods")
        if not 0 < timeout_s <= 300:
            raise ValueError(f"method timeout {timeout_s} s is outside IoT Hub's range (0, 300]")
        rid = format(next(self._rid), "x")
        future: asyncio.Future[MethodResult] = asyncio.get_running_loop().create_future()
        self._methods[rid] = (device_id, future)
        self.state.count("methods")
        try:
            await session.reply(f"{METHOD_REQUEST}{urllib.parse.quote(name, safe='')}/?$rid={rid}",
                                json.dumps(payload).encode())
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            raise MethodTimeout(f"device {device_id!r} did not answer method {name!r} within {timeout_s} s") from None
        except ConnectionClosed:
            raise DeviceNotOnline(f"device {device_id!r} disconnected before the method {name!r} was sent") from None
        finally:
            self._methods.pop(rid, None)

    async def _on_method_response(self, session: DeviceSession, packet: codec.Publish) -> None:
        path, _, query = packet.topic.partition("?")
        rid = parse_properties(query).get("$rid", "")
        status_text = path[len("$iothub/methods/res/"):].strip("/")
        pending = self._methods.get(rid)
        if pending is None or pending[0] != session.device_id or pending[1].done():
            log.info("device %s answered unknown method request %r", session.device_id, rid)
            return
        future = pending[1]
        try:
            status = int(status_text)
        except ValueError:
            future.set_exception(InvalidMethodResponse(f"device answered with status {status_text!r}"))
            return
        try:
            body = json.loads(packet.payload) if packet.payload else None
        except ValueError:
            future.set_exception(InvalidMethodResponse("device answered the method with a payload that is not JSON"))
            return
        future.set_result(MethodResult(status, body))

    # cloud-to-device

    async def send_c2d(self, device_id: str, payload: bytes, **options: Any) -> C2DMessage:
        """Queue a C2D message (see HubState.enqueue_c2d) and wake the device's delivery if it is connected."""
        message = self.state.enqueue_c2d(device_id, payload, **options)
        session = self.sessions.get(device_id)
        if session is not None:
            session.c2d_wakeup.set()
        return message


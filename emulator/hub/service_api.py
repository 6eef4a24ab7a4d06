"""The hub's service REST API over HTTPS: IoT Hub's own routes where they exist, roost routes for the rest.

IoT Hub compatible (``?api-version=`` required, SharedAccessSignature of a shared access policy):

    GET /devices    GET|PUT|DELETE /devices/{id}    GET|PATCH|PUT /twins/{id}    POST /twins/{id}/methods
    POST /devices/query    DELETE /devices/{id}/commands    GET /statistics/devices    GET /statistics/service

Device side (the device's own SAS token or client certificate): file upload,
``POST /devices/{id}/files`` and ``POST /devices/{id}/files/notifications``.

DPS service shaped: ``GET /enrollments``, ``GET|PUT|DELETE /enrollments/{id}``, the same under
``/enrollmentGroups``, ``GET|DELETE /registrations/{id}``.

roost (what the real service does over AMQP and Event Hubs, plus the emulator's controls): C2D send, list and
purge, feedback, telemetry with long polling, connection state, metering, fault injection, uploaded files.
docs/hub-service-api.md describes every route.

Each hub of the emulator is served on its own address, so the host name of a connection string (which may
carry a port) picks the hub. Bad input never changes state: documents are checked before anything is stored.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.hub import http
from emulator.hub.blob import BlobServer, BlobStore
from emulator.hub.http import HttpError, Request, Response
from emulator.hub.iothub import METHOD_REQUEST, Hub, HubError
from emulator.hub.service_auth import (
    OWNER,
    REGISTRY_READ,
    REGISTRY_WRITE,
    SERVICE_CONNECT,
    ServiceAuth,
    connection_string,
    load_policies,
)
from emulator.hub.service_documents import (
    c2d_json,
    device_changes,
    device_json,
    enrollment_from_json,
    enrollment_json,
    feedback_json,
    registration_json,
    telemetry_json,
    twin_json,
)
from emulator.hub.service_errors import ServiceError, error_response
from emulator.hub.service_files import FileUploads
from emulator.hub.service_query import parse_query
from emulator.hub.state import (
    AUTH_SAS,
    Conflict,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
    StateError,
)
from emulator.hub.tls import server_context
from emulator.pki import write_secret

log = logging.getLogger(__name__)

HTTPS_PORT = 443
FALLBACK_PORT = 9443            # when 443 may not be bound (unprivileged user)
MAX_TELEMETRY_WAIT_S = 60.0
MAX_QUERY_PAGE = 1000
_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
_FAULT_KINDS = ("drop", "withhold-puback", "delay", "throttle", "quota", "expire-token", "refuse")


@dataclass
class ServiceOptions:
    """Ports of the service side. ``port`` None: 443, or 9443 where 443 may not be bound; 0: any free port.

    ``device_port`` is where devices reach the hub over HTTPS (file upload): the device SDK always uses 443,
    so it defaults to 443 and is skipped with a warning when that is not permitted. ``blob_port`` 0 picks
    a free port for the local blob endpoint (the URL is handed to devices); None disables file upload.
    """

    port: int | None = None
    device_port: int | None = HTTPS_PORT
    blob_port: int | None = 0
    file_upload_ttl_s: float = 3600.0
    max_blob_bytes: int = 256 * 1024 * 1024
    write_discovery_file: bool = True


@dataclass
class _Served:
    hub: Hub
    address: str
    port: int = 0
    device_port: int | None = None
    servers: list[asyncio.Server] = field(default_factory=list)

    @property
    def host(self) -> str:
        """HostName for connection strings: the hub's name, with the port unless it is 443."""
        return self.hub.hostname if self.port == HTTPS_PORT else f"{self.hub.hostname}:{self.port}"


Route = Callable[[_Served, Request, list[str]], Awaitable[Response]]


class ServiceApi:
    """The service side of an :class:`~emulator.hub.server.Emulator`; ``await start()`` after the emulator's."""

    def __init__(self, emulator: Any, options: ServiceOptions | None = None) -> None:
        self.emulator = emulator
        self.options = options or ServiceOptions()
        state_dir = Path(emulator.state_dir)
        self.policies = load_policies(state_dir / "service-policies.json")
        self.auth = ServiceAuth(self.policies, emulator.config.clock)
        self.blobs: BlobStore | None = None
        self.blob_server: BlobServer | None = None
        self.files: FileUploads | None = None
        self.warnings: list[str] = []
        self._served: dict[str, _Served] = {}
        self._initial_quotas: dict[str, dict[str, Any]] = {}
        self._routes = self._route_table()
        self._open = http.Connections()
        self.health_attestation_url: str | None = None

    # lifecycle

    async def start(self) -> None:
        emulator = self.emulator
        cert = emulator.pki.load("server")
        if not emulator.started or cert is None:
            raise RuntimeError("start the emulator before its service API (await emulator.start())")
        context = server_context(str(cert.chain_path), str(cert.key_path))
        config = emulator.config
        primary = config.hub_hostname or config.address
        try:
            for name, hub in emulator.hubs.items():
                served = _Served(hub, config.address if name == primary else name)
                self._served[name] = served
                self._initial_quotas[name] = _quota_snapshot(hub)
                await self._listen(served, context)
            if self.options.blob_port is not None:
                self.blobs = BlobStore(Path(emulator.state_dir) / "blobs", config.clock)
                self.blob_server = BlobServer(self.blobs, self.options.max_blob_bytes)
                await self.blob_server.start(config.address, self.options.blob_port, context)
                self.files = FileUploads(self.blobs, f"{config.address}:{self.blob_server.port}",
                                         self.options.file_upload_ttl_s, config.clock)
        except OSError:
            await self.stop()
            raise
        self._write_discovery_file()
        log.info("service API listening: %s", {n: s.port for n, s in self._served.items()})

    def _handler_for(self, served: _Served) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            return await self.handle(served, request)

        return handler

    async def _start_server(self, served: _Served, port: int, context: Any) -> asyncio.Server:
        """An HTTPS listener whose connections are tracked, so stop() ends kept-alive ones too."""
        return await http.start_server(self._handler_for(served), served.address, port, context,
                                       self.emulator.config.clock, self._open)

    async def _listen(self, served: _Served, context: Any) -> None:
        port = self.options.port
        shared = self.emulator.config.websocket_port   # the hub's WebSocket listener, when it serves one
        wanted = HTTPS_PORT if port is None else port
        if shared is not None and wanted == shared and \
                self.emulator.route_https(served.address, self._handler_for(served)):
            served.port = shared   # one port for devices and the service, as 443 is in Azure
        else:
            if port is None:
                try:
                    server = await self._start_server(served, HTTPS_PORT, context)
                except PermissionError:
                    server = await self._start_server(served, FALLBACK_PORT, context)
            else:
                server = await self._start_server(served, port, context)
            served.servers.append(server)
            served.port = server.sockets[0].getsockname()[1]
        device_port = self.options.device_port
        if not device_port:
            return
        if device_port == served.port:
            served.device_port = device_port
        elif device_port == shared and self.emulator.route_https(served.address, self._handler_for(served)):
            served.device_port = device_port   # the WebSocket listener answers file upload requests too
        else:
            try:
                extra = await self._start_server(served, device_port, context)
            except PermissionError:
                self.warnings.append(
                    f"device file upload needs {served.address}:{device_port}, which this user may not bind; "
                    "run as root, grant CAP_NET_BIND_SERVICE, or lower net.ipv4.ip_unprivileged_port_start")
            else:
                served.servers.append(extra)
                served.device_port = device_port

    async def stop(self) -> None:
        for served in self._served.values():
            for server in served.servers:
                server.close()
        await self._open.abort_all()   # kept-alive connections too (see http.Connections)
        for served in self._served.values():
            for server in served.servers:
                with contextlib.suppress(Exception):
                    await server.wait_closed()
            served.servers.clear()
        if self.blob_server is not None:
            await self.blob_server.stop()
        if self.blobs is not None:
            self.blobs.close()
            self.blobs = None

    def _write_discovery_file(self) -> None:
        if self.options.write_discovery_file:
            write_secret(Path(self.emulator.state_dir) / "service.json", json.dumps(self.info(), indent=2).encode())

    def announce_health_attestation(self, url: str) -> None:
        """Name the health attestation service running beside this hub in info() and service.json."""
        self.health_attestation_url = url
        self._write_discovery_file()

    # what clients need

    def connection_string(self, hub: str | None = None, policy: str = OWNER) -> str:
        served = self._served[hub or self._primary()]
        return connection_string(served.host, self.policies[policy])

    def url(self, hub: str | None = None) -> str:
        served = self._served[hub or self._primary()]
        return f"https://{served.address}:{served.port}"

    def _primary(self) -> str:
        config = self.emulator.config
        return config.hub_hostname or config.address

    def info(self) -> dict[str, Any]:
        """The discovery document (also written to ``service.json`` in the state dir, 0600: it holds a key)."""
        primary = self._primary()
        return {
            "hub": primary,
            "url": self.url(primary),
            "connectionString": self.connection_string(primary),
            "rootCa": str(self.emulator.pki.root().cert_path),
            "hubs": {name: {"url": self.url(name), "connectionString": self.connection_string(name),
                            "devicePort": served.device_port} for name, served in self._served.items()},
            "blobEndpoint": f"https://{self.emulator.config.address}:{self.blob_server.port}"
                            if self.blob_server else None,
            "healthAttestationUrl": self.health_attestation_url,
            "warnings": list(self.warnings),
        }

    # dispatch

    async def handle(self, served: _Served, request: Request) -> Response:
        try:
            return await self._dispatch(served, request)
        except ServiceError as exc:
            return exc.response()
        except HttpError as exc:
            return error_response(exc.status, exc.message)
        except StateError as exc:
            return _state_error(exc).response()
        except HubError as exc:
            names = {404: "DeviceNotOnline", 504: "GatewayTimeout", 502: "BadGateway"}
            return error_response(exc.status, exc.message, names.get(exc.status))
        except Exception as exc:   # a bug must answer 500 in IoT Hub's shape and keep the server running
            log.exception("service API: %s %s failed", request.method, request.path)
            return error_response(500, f"internal error ({type(exc).__name__}); the emulator's log has details")

    async def _dispatch(self, served: _Served, request: Request) -> Response:
        parts = [p for p in request.path.split("/") if p]
        for method, pattern, right, route in self._routes:
            if len(pattern) != len(parts) or any(p != "*" and p != q for p, q in zip(pattern, parts, strict=True)):
                continue
            if method != request.method:
                continue
            roost = pattern[0] == "roost"
            if not roost:
                version = request.query.get("api-version")
                if not version or not _API_VERSION.match(version):
                    raise ServiceError(400, "the api-version query parameter is required, e.g. "
                                            "?api-version=2021-04-12", "InvalidProtocolVersion")
            if right is not None:
                self.auth.check(request.headers.get("authorization"), self._hosts(served), request.path, right)
            return await route(served, request, parts)
        if any(len(p) == len(parts) and all(a == "*" or a == b for a, b in zip(p, parts, strict=True))
               for _, p, _, _ in self._routes):
            raise ServiceError(405, f"{request.method} is not supported on {request.path}", "MethodNotAllowed")
        raise ServiceError(404, f"there is no service resource at {request.path}; see docs/hub-service-api.md",
                           "NotFound")

    def _hosts(self, served: _Served) -> list[str]:
        name = served.hub.hostname
        ports = {served.port, *([served.device_port] if served.device_port else [])}
        return [name, *(f"{name}:{p}" for p in ports)]

    def _route_table(self) -> list[tuple[str, list[str], str | None, Route]]:
        read, write, service = REGISTRY_READ, REGISTRY_WRITE, SERVICE_CONNECT
        routes: list[tuple[str, str, str | None, Route]] = [
            ("GET", "devices", read, self._list_devices),
            ("POST", "devices/query", service, self._query),
            ("GET", "devices/*", read, self._get_device),
            ("PUT", "devices/*", write, self._put_device),
            ("DELETE", "devices/*", write, self._delete_device),
            ("DELETE", "devices/*/commands", service, self._purge_commands),
            ("POST", "devices/*/files", None, self._file_upload_start),
            ("POST", "devices/*/files/notifications", None, self._file_upload_notify),
            ("GET", "twins/*", service, self._get_twin),
            ("PATCH", "twins/*", service, self._patch_twin),
            ("PUT", "twins/*", service, self._replace_twin),
            ("POST", "twins/*/methods", service, self._invoke),
            ("GET", "statistics/devices", read, self._device_statistics),
            ("GET", "statistics/service", service, self._service_statistics),
            ("GET", "enrollments", read, self._list_enrollments),
            ("GET", "enrollments/*", read, self._get_enrollment),
            ("PUT", "enrollments/*", write, self._put_enrollment),
            ("DELETE", "enrollments/*", write, self._delete_enrollment),
            ("GET", "enrollmentGroups", read, self._list_enrollments),
            ("GET", "enrollmentGroups/*", read, self._get_enrollment),
            ("PUT", "enrollmentGroups/*", write, self._put_enrollment),
            ("DELETE", "enrollmentGroups/*", write, self._delete_enrollment),
            ("GET", "registrations/*", read, self._get_registration),
            ("DELETE", "registrations/*", write, self._delete_registration),
            ("POST", "roost/devices/*/c2d", service, self._send_c2d),
            ("GET", "roost/devices/*/c2d", service, self._pending_c2d),
            ("DELETE", "roost/devices/*/c2d", service, self._purge_commands),
            ("GET", "roost/feedback", service, self._feedback),
            ("GET", "roost/telemetry", service, self._telemetry),
            ("GET", "roost/connections", service, self._connections),
            ("GET", "roost/metering", service, self._metering),
            ("GET", "roost/faults", service, self._get_faults),
            ("DELETE", "roost/faults", write, self._clear_faults),
            ("POST", "roost/faults/*", write, self._inject_fault),
            ("GET", "roost/files", service, self._list_files),
        ]
        return [(m, p.split("/"), r, h) for m, p, r, h in routes]

    # registry

    async def _list_devices(self, served: _Served, request: Request, parts: list[str]) -> Response:
        top = _int_param(request.query, "top", 1000, 1, 1000)
        return Response(200, [device_json(d) for d in served.hub.state.list_devices()[:top]])

    async def _get_device(self, served: _Served, request: Request, parts: list[str]) -> Response:
        return Response(200, device_json(served.hub.state.get_device(parts[1])))

    async def _put_device(self, served: _Served, request: Request, parts: list[str]) -> Response:
        device_id = parts[1]
        changes = device_changes(_json_body(request), device_id)
        state = served.hub.state
        etag = _if_match(request)
        if etag is None:
            keys = {k: changes.pop(k) for k in list(changes) if k in ("primary_key", "secondary_key",
                                                                      "primary_thumbprint", "secondary_thumbprint")}
            device = state.create_device(device_id, auth_type=changes.pop("auth_type", AUTH_SAS),
                                         status=changes.pop("status", "enabled"),
                                         status_reason=changes.pop("status_reason", ""),
                                         iot_edge=changes.pop("iot_edge", False), **keys)
            log.info("service: device %s created (%s)", device_id, device.auth_type)
            return Response(200, device_json(device))
        device = state.update_device(device_id, etag=etag, **changes)
        if not device.enabled:
            served.hub.disconnect(device_id, "device disabled by the service")
        return Response(200, device_json(device))

    async def _delete_device(self, served: _Served, request: Request, parts: list[str]) -> Response:
        served.hub.state.delete_device(parts[1], etag=_if_match(request))
        served.hub.disconnect(parts[1], "device deleted by the service")
        return Response(204)

    async def _device_statistics(self, served: _Served, request: Request, parts: list[str]) -> Response:
        devices = served.hub.state.list_devices()
        enabled = sum(1 for d in devices if d.enabled)
        return Response(200, {"totalDeviceCount": len(devices), "enabledDeviceCount": enabled,
                              "disabledDeviceCount": len(devices) - enabled})

    async def _service_statistics(self, served: _Served, request: Request, parts: list[str]) -> Response:
        return Response(200, {"connectedDeviceCount": len(served.hub.connected_devices())})

    # twins, methods, queries

    def _twin(self, served: _Served, device_id: str) -> dict[str, Any]:
        state = served.hub.state
        return twin_json(state.get_twin(device_id), state.get_device(device_id))

    async def _get_twin(self, served: _Served, request: Request, parts: list[str]) -> Response:
        return Response(200, self._twin(served, parts[1]), {"ETag": f'"{served.hub.state.get_twin(parts[1]).etag}"'})

    async def _patch_twin(self, served: _Served, request: Request, parts: list[str]) -> Response:
        return await self._change_twin(served, request, parts[1], replace=False)

    async def _replace_twin(self, served: _Served, request: Request, parts: list[str]) -> Response:
        return await self._change_twin(served, request, parts[1], replace=True)

    async def _change_twin(self, served: _Served, request: Request, device_id: str, *, replace: bool) -> Response:
        body = _json_body(request)
        if not isinstance(body, dict):
            raise ServiceError(400, 'the twin body must be a JSON object such as {"properties": {"desired": '
                                    '{"interval": 10}}}', "ArgumentInvalid")
        properties = body.get("properties") or {}
        if not isinstance(properties, dict):
            raise ServiceError(400, "properties must be an object with a desired section", "ArgumentInvalid")
        if properties.get("reported"):
            raise ServiceError(400, "reported properties are written by the device; the service may change "
                                    "tags and desired properties only", "ArgumentInvalid")
        tags, desired = body.get("tags"), properties.get("desired")
        if replace:
            tags, desired = tags or {}, desired or {}
        elif tags is None and desired is None:
            raise ServiceError(400, "the patch changes nothing: give tags or properties.desired", "ArgumentInvalid")
        if desired is not None and isinstance(desired, dict):
            desired = {k: v for k, v in desired.items() if k not in ("$version", "$metadata")}
        await served.hub.update_twin(device_id, tags=tags, desired=desired, replace=replace,
                                     etag=_if_match(request))
        return Response(200, self._twin(served, device_id))

    async def _invoke(self, served: _Served, request: Request, parts: list[str]) -> Response:
        device_id = parts[1]
        body = _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("methodName"), str) or not body["methodName"]:
            raise ServiceError(400, 'the body must be {"methodName": "...", "payload": ..., '
                                    '"responseTimeoutInSeconds": 30}', "ArgumentInvalid")
        response_timeout = _number(body, "responseTimeoutInSeconds", 30, 5, 300)
        connect_timeout = _number(body, "connectTimeoutInSeconds", 0, 0, 300)
        hub = served.hub
        hub.state.get_device(device_id)   # 404 DeviceNotFound before waiting for a connection
        name = body["methodName"]
        if connect_timeout:
            await _wait_for_method_subscription(hub, device_id, name, connect_timeout)
        result = await hub.invoke_method(device_id, name, body.get("payload"), timeout_s=response_timeout)
        return Response(200, {"status": result.status, "payload": result.payload})

    async def _query(self, served: _Served, request: Request, parts: list[str]) -> Response:
        body = _json_body(request)
        query = parse_query(body.get("query") if isinstance(body, dict) else None)
        state = served.hub.state
        devices = {d.device_id: d for d in state.list_devices()}
        twins = [twin_json(t, devices[t.device_id]) for t in state.list_twins() if t.device_id in devices]
        item_type, items = query.run(twins)
        page = _int_header(request.headers, "x-ms-max-item-count", 100, 1, MAX_QUERY_PAGE)
        start = _int_header(request.headers, "x-ms-continuation", 0, 0, 1 << 31)
        headers = {"x-ms-item-type": item_type}
        if start + page < len(items):
            headers["x-ms-continuation"] = str(start + page)
        return Response(200, items[start:start + page], headers)

    # cloud-to-device

    async def _send_c2d(self, served: _Served, request: Request, parts: list[str]) -> Response:
        body = _json_body(request)
        if not isinstance(body, dict):
            raise ServiceError(400, 'the body must be a JSON object such as {"body": "open valve", '
                                    '"properties": {"valve": "3"}}', "ArgumentInvalid")
        if "bodyBase64" in body:
            try:
                payload = base64.b64decode(str(body["bodyBase64"]), validate=True)
            except ValueError:
                raise ServiceError(400, "bodyBase64 is not valid base64", "ArgumentInvalid") from None
        elif isinstance(body.get("body"), str):
            payload = body["body"].encode()
        elif "body" in body:
            payload = json.dumps(body["body"]).encode()
        else:
            raise ServiceError(400, 'give the message as "body" (text or JSON) or "bodyBase64"', "ArgumentInvalid")
        properties = body.get("properties") or {}
        if not isinstance(properties, dict):
            raise ServiceError(400, "properties must be an object of strings", "ArgumentInvalid")
        options: dict[str, Any] = {"properties": {str(k): str(v) for k, v in properties.items()},
                                   "ack": str(body.get("ack") or "none"),
                                   "ttl_s": _number(body, "ttlSeconds", 3600, 1, 48 * 3600)}
        if body.get("messageId"):
            options["message_id"] = str(body["messageId"])
        if body.get("correlationId"):
            options["correlation_id"] = str(body["correlationId"])
        message = await served.hub.send_c2d(parts[2], payload, **options)
        return Response(201, c2d_json(message))

    async def _pending_c2d(self, served: _Served, request: Request, parts: list[str]) -> Response:
        served.hub.state.get_device(parts[2])
        return Response(200, [c2d_json(m) for m in served.hub.state.pending_c2d(parts[2])])

    async def _purge_commands(self, served: _Served, request: Request, parts: list[str]) -> Response:
        device_id = parts[2] if parts[0] == "roost" else parts[1]
        served.hub.state.get_device(device_id)
        purged = served.hub.state.purge_c2d(device_id)
        return Response(200, {"totalMessagesPurged": purged, "deviceId": device_id, "moduleId": None})

    async def _feedback(self, served: _Served, request: Request, parts: list[str]) -> Response:
        since = _int_param(request.query, "since", 0, 0, 1 << 62)
        limit = _int_param(request.query, "limit", 100, 1, 1000)
        records = served.hub.state.feedback(since, limit)
        return Response(200, {"records": [feedback_json(r) for r in records],
                              "next": records[-1].seq if records else since})

    # telemetry, connections, metering

    async def _telemetry(self, served: _Served, request: Request, parts: list[str]) -> Response:
        state = served.hub.state
        device = request.query.get("device") or None
        if request.query.get("since") in ("latest", "end"):
            since = state.last_telemetry_seq()
        else:
            since = _int_param(request.query, "since", 0, 0, 1 << 62)
        limit = _int_param(request.query, "limit", 100, 1, 1000)
        wait = _float_param(request.query, "wait", 0.0, 0.0, MAX_TELEMETRY_WAIT_S)
        records = state.telemetry(since, limit, device)
        if not records and wait:
            records = await _wait_for_telemetry(served.hub, since, limit, device, wait)
        return Response(200, {"messages": [telemetry_json(r) for r in records],
                              "next": records[-1].seq if records else since})

    async def _connections(self, served: _Served, request: Request, parts: list[str]) -> Response:
        hub = served.hub
        devices = []
        for device in hub.state.list_devices():
            session = hub.sessions.get(device.device_id)
            devices.append({"deviceId": device.device_id, "connectionState": device.connection_state,
                            "lastActivityTime": device_json(device)["lastActivityTime"],
                            "viaGateway": bool(session and session.via_gateway),
                            "peer": session.conn.peer if session else None})
        return Response(200, {"devices": devices, "connected": hub.connected_devices()})

    async def _metering(self, served: _Served, request: Request, parts: list[str]) -> Response:
        day = request.query.get("day") or None
        if day and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            raise ServiceError(400, f"day {day!r} must be YYYY-MM-DD (UTC)", "ArgumentInvalid")
        state = served.hub.state
        return Response(200, {"day": day or state.day(), "counters": state.counters(day),
                              "quotas": _quota_snapshot(served.hub)})

    # faults

    async def _get_faults(self, served: _Served, request: Request, parts: list[str]) -> Response:
        return Response(200, _faults_json(served.hub))

    async def _clear_faults(self, served: _Served, request: Request, parts: list[str]) -> Response:
        hub = served.hub
        hub.faults.clear()
        for name, value in self._initial_quotas[hub.hostname].items():
            setattr(hub.quotas, _QUOTA_FIELDS[name], value)
        log.info("service: faults cleared on %s", hub.hostname)
        return Response(200, _faults_json(hub))

    async def _inject_fault(self, served: _Served, request: Request, parts: list[str]) -> Response:
        kind = parts[2]
        if kind not in _FAULT_KINDS:
            raise ServiceError(404, f"unknown fault {kind!r}; faults: {', '.join(_FAULT_KINDS)}", "NotFound")
        body = _json_body(request) or {}
        if not isinstance(body, dict):
            raise ServiceError(400, "the fault body must be a JSON object", "ArgumentInvalid")
        hub = served.hub
        device = body.get("deviceId")
        if device is not None and not isinstance(device, str):
            raise ServiceError(400, "deviceId must be a string", "ArgumentInvalid")
        needs_device = kind in ("drop", "withhold-puback", "expire-token")
        if needs_device and not device:
            raise ServiceError(400, f"the {kind} fault needs a deviceId", "ArgumentInvalid")
        if device:
            hub.state.get_device(device)    # 404 for a device that does not exist
        if kind in ("drop", "expire-token"):
            done = hub.faults.drop(device) if kind == "drop" else hub.faults.expire_token(device)
            if not done:
                raise ServiceError(404, f"device {device!r} is not connected", "DeviceNotOnline")
        elif kind == "withhold-puback":
            hub.faults.withhold_puback(device, int(_number(body, "count", 1, 1, 1_000_000)))
        elif kind == "delay":
            hub.faults.delay(device, _number(body, "seconds", None, 0, 300))
        elif kind == "refuse":
            count = body.get("count")
            hub.faults.refuse_connections(device, None if count is None else int(_number(body, "count", 1, 1,
                                                                                           1_000_000)))
        elif kind == "throttle":
            hub.quotas.d2c_per_second = _optional_number(body, "d2cPerSecond", 0.001, 1e6)
            hub.quotas.d2c_burst = _optional_number(body, "burst", 1, 1e6, integer=True)
            if "connectionsPerSecond" in body:
                hub.quotas.connections_per_second = _optional_number(body, "connectionsPerSecond", 0.001, 1e6)
        elif kind == "quota":
            hub.quotas.daily_message_units = _optional_number(body, "dailyMessageUnits", 0, 1 << 40, integer=True)
        log.info("service: fault %s injected on %s (%s)", kind, hub.hostname, device or "all devices")
        return Response(200, _faults_json(hub))

    # file upload (device side)

    def _files(self) -> FileUploads:
        if self.files is None:
            raise ServiceError(403, "file upload is not configured on this hub (no blob endpoint)",
                               "IotHubNotFound")
        return self.files

    async def _file_upload_start(self, served: _Served, request: Request, parts: list[str]) -> Response:
        files = self._files()
        files.authenticate_device(served.hub, parts[1], request)
        return Response(200, files.start(served.hub, parts[1], _json_body(request)))

    async def _file_upload_notify(self, served: _Served, request: Request, parts: list[str]) -> Response:
        files = self._files()
        files.authenticate_device(served.hub, parts[1], request)
        files.notify(served.hub, parts[1], _json_body(request))
        return Response(204)

    async def _list_files(self, served: _Served, request: Request, parts: list[str]) -> Response:
        if self.files is None:
            return Response(200, {"uploads": [], "blobs": []})
        return Response(200, self.files.listing(request.query.get("device") or None))

    # DPS enrollments and registrations

    def _dps(self) -> Any:
        if self.emulator.dps is None:
            raise ServiceError(404, "this emulator runs no DPS", "NotFound")
        return self.emulator.dps

    async def _list_enrollments(self, served: _Served, request: Request, parts: list[str]) -> Response:
        group = parts[0] == "enrollmentGroups"
        return Response(200, [enrollment_json(e) for e in self._dps().state.list_enrollments(group=group)])

    async def _get_enrollment(self, served: _Served, request: Request, parts: list[str]) -> Response:
        group = parts[0] == "enrollmentGroups"
        return Response(200, enrollment_json(self._dps().state.get_enrollment(parts[1], group=group)))

    async def _put_enrollment(self, served: _Served, request: Request, parts: list[str]) -> Response:
        group = parts[0] == "enrollmentGroups"
        enrollment = enrollment_from_json(_json_body(request), parts[1], group)
        unknown = [h for h in enrollment.iot_hubs if h not in self.emulator.hubs]
        if unknown:
            raise ServiceError(400, f"iotHubs {unknown} are not hubs of this emulator "
                                    f"({', '.join(sorted(self.emulator.hubs))})", "ArgumentInvalid")
        stored = self._dps().state.put_enrollment(enrollment, etag=_if_match(request))
        return Response(200, enrollment_json(stored))

    async def _delete_enrollment(self, served: _Served, request: Request, parts: list[str]) -> Response:
        group = parts[0] == "enrollmentGroups"
        self._dps().state.delete_enrollment(parts[1], group=group)
        return Response(204)

    async def _get_registration(self, served: _Served, request: Request, parts: list[str]) -> Response:
        return Response(200, registration_json(self._dps().state.get_registration(parts[1])))

    async def _delete_registration(self, served: _Served, request: Request, parts: list[str]) -> Response:
        self._dps().state.delete_registration(parts[1])
        return Response(204)


# --- helpers ------------------------------------------------------------------------------------------------

_QUOTA_FIELDS = {"d2cPerSecond": "d2c_per_second", "burst": "d2c_burst", "dailyMessageUnits": "daily_message_units",
                 "connectionsPerSecond": "connections_per_second", "maxMessageBytes": "max_message_bytes"}


def _quota_snapshot(hub: Hub) -> dict[str, Any]:
    return {name: getattr(hub.quotas, attr) for name, attr in _QUOTA_FIELDS.items()}


def _faults_json(hub: Hub) -> dict[str, Any]:
    faults = hub.faults
    return {"withheldPubacks": dict(faults.withheld_pubacks),
            "delays": {("*" if k is None else k): v for k, v in faults.delays.items()},
            "heldReplies": dict(faults.held_replies),
            "refusals": {("*" if k is None else k): v for k, v in faults.refusals.items()},
            "quotas": _quota_snapshot(hub)}


def _state_error(exc: StateError) -> ServiceError:
    text = str(exc)
    if isinstance(exc, NotFound):
        name = "DeviceNotFound" if "device" in text else "NotFound"
    elif isinstance(exc, Conflict):
        name = "DeviceAlreadyExists" if "already exists" in text else "Conflict"
    elif isinstance(exc, PreconditionFailed):
        name = "PreconditionFailed"
    elif isinstance(exc, QuotaExceeded):
        name = "DeviceMaximumQueueDepthExceeded" if "queued" in text else "IotHubQuotaExceeded"
    elif isinstance(exc, InvalidInput):
        name = "ArgumentInvalid"
    else:
        name = None
    return ServiceError(exc.status, text, name)


def _json_body(request: Request) -> Any:
    if request.body and "json" not in request.headers.get("content-type", "application/json").lower():
        raise ServiceError(400, f"Content-Type {request.headers['content-type']!r} is not JSON; send "
                                "application/json", "ArgumentInvalid")
    try:
        return request.json()
    except HttpError as exc:
        raise ServiceError(400, exc.message, "ArgumentInvalid") from None


def _if_match(request: Request) -> str | None:
    value = request.headers.get("if-match")
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"') or None


def _number_param(query: dict[str, str], name: str, default: float, low: float, high: float, kind: type = float):
    """Query parameter ``name`` as ``kind`` (int or float) within low..high; absent or empty gives ``default``."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ServiceError(400, f"query parameter {name}={raw[:40]!r} is not {what}", "ArgumentInvalid") from None
    if not low <= value <= high:
        raise ServiceError(400, f"query parameter {name}={value} is outside {low}..{high}", "ArgumentInvalid")
    return value


def _int_param(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number_param(query, name, default, low, high, int)


def _float_param(query: dict[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number_param(query, name, default, low, high, float)


def _int_header(headers: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    try:
        return _int_param({name: headers.get(name, "")}, name, default, low, high)
    except ServiceError:
        raise ServiceError(400, f"header {name} must be an integer in {low}..{high}", "ArgumentInvalid") from None


def _number(body: dict, name: str, default: float | None, low: float, high: float) -> float:
    value = body.get(name, default)
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ServiceError(400, f"{name} must be a number between {low} and {high}", "ArgumentInvalid")
    if not low <= value <= high:
        raise ServiceError(400, f"{name}={value} is outside {low}..{high}", "ArgumentInvalid")
    return value


def _optional_number(body: dict, name: str, low: float, high: float, integer: bool = False) -> Any:
    """A number within bounds, or None (JSON null or absent) meaning 'no limit'."""
    if body.get(name) is None:
        return None
    value = _number(body, name, None, low, high)
    return int(value) if integer else float(value)


async def _wait_for_method_subscription(hub: Hub, device_id: str, name: str, timeout: float) -> None:
    """Wait up to ``timeout`` s for the device to connect and subscribe to methods (connectTimeoutInSeconds)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    probe = f"{METHOD_REQUEST}{name}/?$rid=0"
    session = hub.sessions.get(device_id)
    if session is not None and session.wants(probe):
        return
    hub.state.count("method_connect_waits")   # metered: calls that waited for their device to come online
    while loop.time() < deadline:
        session = hub.sessions.get(device_id)
        if session is not None and session.wants(probe):
            return
        await asyncio.sleep(0.05)


async def _wait_for_telemetry(hub: Hub, since: int, limit: int, device: str | None, wait: float) -> list:
    """Long poll: wait up to ``wait`` s for a message after ``since`` (of ``device``, if given)."""
    arrived = asyncio.Event()

    def listener(record: Any) -> None:
        if device is None or record.device_id == device:
            arrived.set()

    hub.add_telemetry_listener(listener)
    try:
        records = hub.state.telemetry(since, limit, device)   # again: one may have arrived before listening
        if records:
            return records
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(arrived.wait(), wait)
        return hub.state.telemetry(since, limit, device)
    finally:
        hub.remove_telemetry_listener(listener)


def port_is_bindable(address: str, port: int) -> bool:
    """True when this process may listen on ``address:port`` now (used to explain a skipped listener)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True

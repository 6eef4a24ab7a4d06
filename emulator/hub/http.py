"""A minimal asyncio HTTP/1.1 server for the emulator's REST endpoints (JSON in, JSON out).

Enough for SDK-style clients: Content-Length bodies (no chunked uploads), keep-alive, size limits. A
handler gets a :class:`Request` and returns a :class:`Response`; raising :class:`HttpError` answers with
that status and an IoT-style ``{"errorCode", "message"}`` body.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from cryptography import x509

from emulator.hub import tls

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024
# How long a closing TLS connection waits for the client's close_notify (asyncio's default is 30 s).
TLS_SHUTDOWN_TIMEOUT_S = 2.0

Clock = Callable[[], float]


def http_date(now: float) -> str:
    """``now`` (Unix time) as an RFC 7231 IMF-fixdate, e.g. ``Mon, 23 Nov 2026 15:04:05 GMT``."""
    return email.utils.formatdate(now, usegmt=True)


class HttpError(Exception):
    def __init__(self, status: int, message: str, error_code: int | None = None, body: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code or status * 1000
        self.body = body


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]          # lower-case names
    body: bytes = field(repr=False)
    client_chain: list[x509.Certificate] = field(default_factory=list)

    def json(self) -> Any:
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise HttpError(400, f"request body is not valid JSON: {exc}", 400001) from None


@dataclass
class Response:
    status: int = 200
    body: Any = None                 # dict/list -> JSON, bytes as is, None -> empty
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, keep_alive: bool, now: float | None = None) -> bytes:
        """The response on the wire; its ``Date`` header is ``now`` (the server's clock, default the system's)."""
        if isinstance(self.body, bytes | bytearray):
            payload = bytes(self.body)
        elif self.body is None:
            payload = b""
        else:
            payload = json.dumps(self.body).encode()
            self.headers.setdefault("Content-Type", "application/json; charset=utf-8")
        reason = HTTPStatus(self.status).phrase if self.status in HTTPStatus._value2member_map_ else "Status"
        lines = [f"HTTP/1.1 {self.status} {reason}", f"Content-Length: {len(payload)}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        if not any(k.lower() == "date" for k in self.headers):
            lines.append(f"Date: {http_date(time.time() if now is None else now)}")
        lines += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


Handler = Callable[[Request], Awaitable[Response]]
# Takes over a connection whose request asks for ``Upgrade`` (MQTT over WebSockets); it owns the stream then,
# or raises HttpError to refuse before switching protocols.
Upgrade = Callable[[Request, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader, chain: list[x509.Certificate]) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise HttpError(400, "request ended inside its headers") from None
        return None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request headers exceed {MAX_HEADER_BYTES} bytes") from None
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, target, version = lines[0].split(" ")
    except ValueError:
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}") from None
    if not version.startswith("HTTP/1."):
        raise HttpError(505, f"{version[:20]} is not supported; use HTTP/1.1")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError(411, "chunked request bodies are not supported; send Content-Length")
    try:
        length = int(headers.get("content-length", "0"))
    except ValueError:
        raise HttpError(400, "Content-Length is not a number") from None
    if length < 0 or length > MAX_BODY_BYTES:
        raise HttpError(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES}")
    body = await reader.readexactly(length) if length else b""
    url = urllib.parse.urlsplit(target)
    query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
    return Request(method.upper(), urllib.parse.unquote(url.path), query, headers, body, chain)


def _error(exc: HttpError) -> Response:
    body = {"errorCode": exc.error_code, "message": exc.message, "trackingId": ""}
    body.update(exc.body or {})
    return Response(exc.status, body)


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler,
                           clock: Clock = time.time, upgrade: Upgrade | None = None) -> None:
    """Answer requests on one connection until the client closes it or an error ends it.

    Every response carries a ``Date`` header from ``clock``, as Azure's endpoints do: clients (``roost
    doctor``) measure their clock skew against it, and an emulator with a shifted clock shows them one.
    A request with an ``Upgrade`` header goes to ``upgrade``, when given, which keeps the connection.
    """
    chain = tls.peer_chain(writer.get_extra_info("ssl_object"))
    try:
        while True:
            try:
                request = await _read_request(reader, chain)
            except HttpError as exc:
                # The request could not be framed: answer, then close, since the stream position is unknown.
                writer.write(_error(exc).encode(keep_alive=False, now=clock()))
                await writer.drain()
                return
            if request is None:
                return
            if upgrade is not None and "upgrade" in request.headers:
                try:
                    await upgrade(request, reader, writer)
                except HttpError as exc:   # refused before the switch: an ordinary error response
                    writer.write(_error(exc).encode(keep_alive=False, now=clock()))
                    await writer.drain()
                return
            keep_alive = request.headers.get("connection", "").lower() != "close"
            try:
                response = await handler(request)
            except HttpError as exc:
                response = _error(exc)
            except Exception as exc:  # a handler bug must not take the server down
                log.exception("HTTP handler failed")
                response = Response(500, {"errorCode": 500000, "message": f"internal error: {type(exc).__name__}"})
            writer.write(response.encode(keep_alive, now=clock()))
            await writer.drain()
            if not keep_alive:
                return
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        return
    finally:
        writer.close()


class Connections:
    """The open connections of one or more servers, so that stopping can end kept-alive ones at once.

    A graceful TLS close waits for the client's close_notify, which an idle pooled client never sends, and
    from Python 3.12 on ``Server.wait_closed()`` waits for every connection: so :meth:`abort_all` aborts.
    """

    def __init__(self) -> None:
        self._open: dict[asyncio.Task, asyncio.StreamWriter] = {}

    def __len__(self) -> int:
        return len(self._open)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handler: Handler,
                    clock: Clock = time.time, upgrade: Upgrade | None = None) -> None:
        """:func:`serve_connection`, tracked until it ends."""
        task = asyncio.current_task()
        assert task is not None
        self._open[task] = writer
        try:
            await serve_connection(reader, writer, handler, clock, upgrade)
        except asyncio.CancelledError:
            # abort_all() cancels; the task must not finish cancelled, or asyncio's stream callback
            # (Python 3.11) reports the CancelledError as an unhandled error.
            writer.close()
        finally:
            self._open.pop(task, None)

    async def abort_all(self) -> None:
        for task, writer in list(self._open.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._open, return_exceptions=True)


async def start_server(handler: Handler, host: str, port: int, ssl_context: ssl.SSLContext,
                       clock: Clock = time.time, connections: Connections | None = None,
                       upgrade: Upgrade | None = None) -> asyncio.Server:
    """Serve ``handler`` over HTTPS; pass ``connections`` to be able to end open connections later."""
    tracked = connections if connections is not None else Connections()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await tracked.serve(reader, writer, handler, clock, upgrade)

    return await asyncio.start_server(on_connect, host, port, ssl=ssl_context, limit=MAX_HEADER_BYTES,
                                      ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S)

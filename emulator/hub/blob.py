"""A local blob endpoint for IoT Hub file upload: the storage account a hub links to, on loopback.

IoT Hub hands a device a SAS URL ``https://{host}/{container}/{blob}?sv=..&sr=b&sp=rw&se=..&sig=..`` and the
device PUTs the file there (Azure Storage's Put Blob: ``x-ms-blob-type: BlockBlob``, Content-Length body).
This endpoint accepts that PUT (and GET, to read a blob back), checks the SAS signature, streams the body to
a file under the state directory and records it in SQLite; the service API lists blobs from there.

Errors are answered like Azure Storage: a status and ``<Error><Code>..</Code><Message>..</Message></Error>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import hmac
import logging
import os
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from emulator.hub.http import TLS_SHUTDOWN_TIMEOUT_S, http_date
from emulator.hub.state import _Database, new_key
from emulator.pki import write_secret

log = logging.getLogger(__name__)

STORAGE_VERSION = "2021-08-06"
MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_BLOB_BYTES = 256 * 1024 * 1024
_CHUNK = 64 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
    container TEXT NOT NULL, name TEXT NOT NULL, file TEXT NOT NULL, size INTEGER NOT NULL,
    md5 TEXT NOT NULL, content_type TEXT NOT NULL, etag TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (container, name)
);
CREATE TABLE IF NOT EXISTS uploads (
    correlation_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, container TEXT NOT NULL, name TEXT NOT NULL,
    requested REAL NOT NULL, expiry REAL NOT NULL, state TEXT NOT NULL DEFAULT 'requested',
    success INTEGER, status_code INTEGER, status_description TEXT, notified REAL
);
"""


class BlobError(Exception):
    """A refused blob request: HTTP ``status``, Azure Storage error ``code``, ``message`` for a person."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass
class Blob:
    container: str
    name: str
    file: str
    size: int
    md5: str          # base64, as Azure's Content-MD5
    content_type: str
    etag: str
    created: float


@dataclass
class Upload:
    """One file upload a device asked for (POST /devices/{id}/files) and what it reported afterwards."""

    correlation_id: str
    device_id: str
    container: str
    name: str
    requested: float
    expiry: float
    state: str                 # requested | succeeded | failed
    success: bool | None
    status_code: int | None
    status_description: str | None
    notified: float | None


def check_blob_name(name: str) -> str:
    """A blob name IoT Hub would accept: 1-1024 characters, no empty, '.' or '..' segments, no control bytes."""
    if not name or len(name) > 1024:
        raise BlobError(400, "InvalidResourceName", "the blob name must be 1-1024 characters")
    if any(ord(c) < 32 for c in name) or "\\" in name:
        raise BlobError(400, "InvalidResourceName", "the blob name may not contain control characters or '\\'")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise BlobError(400, "InvalidResourceName",
                        f"the blob name {name[:80]!r} has an empty, '.' or '..' path segment")
    return name


class BlobStore(_Database):
    """Blobs (files under ``directory/data``) and the file-upload requests that lead to them."""

    SCHEMA = _SCHEMA

    def __init__(self, directory: str | os.PathLike, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.data_dir = self.directory / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        super().__init__(self.directory / "blobs.sqlite", clock)
        key_path = self.directory / "account-key"
        if not key_path.exists():
            write_secret(key_path, new_key().encode())
        self._account_key = key_path.read_text().strip()

    # SAS tokens for one blob

    def sas_token(self, container: str, name: str, expiry: float, permissions: str = "rw") -> str:
        """A service SAS (query string with leading '?') for one blob, as IoT Hub returns to a device."""
        se = datetime.datetime.fromtimestamp(int(expiry), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sig = base64.b64encode(self._signature(container, name, permissions, se)).decode()
        query = {"sv": STORAGE_VERSION, "sr": "b", "sp": permissions, "se": se, "sig": sig}
        return "?" + urllib.parse.urlencode(query)

    def _signature(self, container: str, name: str, permissions: str, se: str) -> bytes:
        text = f"{permissions}\n{se}\n/blob/{container}/{name}".encode()
        return hmac.new(base64.b64decode(self._account_key), text, hashlib.sha256).digest()

    def check_sas(self, query: dict[str, str], container: str, name: str, permission: str) -> None:
        """Raise BlobError 403 unless ``query`` is a valid, unexpired SAS for this blob granting ``permission``."""
        if "sig" not in query or "se" not in query or "sp" not in query:
            raise BlobError(403, "AuthenticationFailed", "the URL carries no SAS token (sig, se, sp); use the "
                                                         "URL the hub returned for this upload")
        try:
            expiry = datetime.datetime.strptime(query["se"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
            given = base64.b64decode(query["sig"], validate=True)
        except ValueError:
            raise BlobError(403, "AuthenticationFailed", "the SAS token's se or sig is malformed") from None
        expected = self._signature(container, name, query["sp"], query["se"])
        if not hmac.compare_digest(given, expected):
            raise BlobError(403, "AuthenticationFailed", "the SAS signature does not match this blob")
        if expiry.timestamp() <= self.clock():
            raise BlobError(403, "AuthenticationFailed", f"the SAS token expired at {query['se']}; ask the hub "
                                                         "for a new upload URL")
        if permission not in query["sp"]:
            raise BlobError(403, "AuthorizationPermissionMismatch",
                            f"the SAS token grants {query['sp']!r}, this operation needs {permission!r}")

    # blobs

    def put(self, container: str, name: str, temp_file: Path, size: int, md5: bytes, content_type: str) -> Blob:
        """Move a fully received upload into place (replacing an older blob of the same name)."""
        file_name = uuid.uuid4().hex
        os.replace(temp_file, self.data_dir / file_name)
        blob = Blob(container, name, file_name, size, base64.b64encode(md5).decode(), content_type,
                    f'"0x{uuid.uuid4().hex[:16].upper()}"', self.clock())
        with self._tx() as db:
            old = db.execute("SELECT file FROM blobs WHERE container=? AND name=?", (container, name)).fetchone()
            db.execute("INSERT OR REPLACE INTO blobs VALUES (?,?,?,?,?,?,?,?)",
                       (container, name, file_name, size, blob.md5, content_type, blob.etag, blob.created))
        if old:
            with contextlib.suppress(FileNotFoundError):
                (self.data_dir / old["file"]).unlink()
        return blob

    def get(self, container: str, name: str) -> Blob | None:
        rows = self._query("SELECT * FROM blobs WHERE container=? AND name=?", (container, name))
        return Blob(**dict(rows[0])) if rows else None

    def blob_path(self, blob: Blob) -> Path:
        return self.data_dir / blob.file

    def list(self, container: str | None = None, prefix: str = "") -> list[Blob]:
        rows = self._query("SELECT * FROM blobs ORDER BY container, name")
        return [Blob(**dict(r)) for r in rows
                if (container is None or r["container"] == container) and r["name"].startswith(prefix)]

    def temp_path(self) -> Path:
        return self.data_dir / f".incoming-{uuid.uuid4().hex}"

    # file-upload requests

    def start_upload(self, device_id: str, container: str, name: str, expiry: float) -> Upload:
        correlation_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        now = self.clock()
        with self._tx() as db:
            db.execute("INSERT INTO uploads (correlation_id, device_id, container, name, requested, expiry) "
                       "VALUES (?,?,?,?,?,?)", (correlation_id, device_id, container, name, now, expiry))
        return self.get_upload(correlation_id)  # type: ignore[return-value]

    def active_uploads(self, device_id: str) -> int:
        rows = self._query("SELECT COUNT(*) AS n FROM uploads WHERE device_id=? AND state='requested' AND expiry>?",
                           (device_id, self.clock()))
        return rows[0]["n"]

    def get_upload(self, correlation_id: str) -> Upload | None:
        rows = self._query("SELECT * FROM uploads WHERE correlation_id=?", (correlation_id,))
        if not rows:
            return None
        row = dict(rows[0])
        row["success"] = None if row["success"] is None else bool(row["success"])
        return Upload(**row)

    def finish_upload(self, correlation_id: str, success: bool, status_code: int | None,
                      description: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE uploads SET state=?, success=?, status_code=?, status_description=?, notified=? "
                       "WHERE correlation_id=?", ("succeeded" if success else "failed", int(success), status_code,
                                                  description, self.clock(), correlation_id))

    def uploads(self, device_id: str | None = None) -> list[Upload]:
        rows = self._query("SELECT correlation_id FROM uploads ORDER BY requested")
        found = [self.get_upload(r["correlation_id"]) for r in rows]
        return [u for u in found if u is not None and (device_id is None or u.device_id == device_id)]


# --- the HTTP side ------------------------------------------------------------------------------------------

def _error_bytes(exc: BlobError, keep_alive: bool, now: float) -> bytes:
    body = (f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{escape(exc.code)}</Code>'
            f"<Message>{escape(exc.message)}</Message></Error>").encode()
    return _response(exc.status, body, {"Content-Type": "application/xml", "x-ms-error-code": exc.code},
                     keep_alive, now)


def _response(status: int, body: bytes, headers: dict[str, str], keep_alive: bool, now: float) -> bytes:
    from http import HTTPStatus

    reason = HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}",
             f"Connection: {'keep-alive' if keep_alive else 'close'}", f"x-ms-version: {STORAGE_VERSION}",
             f"x-ms-request-id: {uuid.uuid4()}", f"Date: {http_date(now)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class BlobServer:
    """Serves one :class:`BlobStore` over HTTPS: Put Blob (block blobs in one request) and Get Blob."""

    def __init__(self, store: BlobStore, max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
                 on_blob: Callable[[Blob], None] | None = None) -> None:
        self.store = store
        self.max_blob_bytes = max_blob_bytes
        self.on_blob = on_blob
        self.server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task, asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        self.server = await asyncio.start_server(self._serve, host, port, ssl=ssl_context, limit=MAX_HEADER_BYTES,
                                                 ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT_S)

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for task, writer in list(self._connections.items()):
                writer.transport.abort()   # no close_notify wait for idle clients (see ServiceApi.stop)
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while await self._one_request(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError, asyncio.CancelledError):
            pass   # a cancelled connection (stop()) must not end as a cancelled task: see service_api
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _one_request(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        except asyncio.LimitOverrunError:
            writer.write(_error_bytes(BlobError(431, "InvalidHeaderValue", "request headers are too large"), False,
                                      self.store.clock()))
            await writer.drain()
            return False
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ")
        except ValueError:
            writer.write(_error_bytes(BlobError(400, "InvalidUri", "malformed request line"), False,
                                      self.store.clock()))
            await writer.drain()
            return False
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        keep_alive = headers.get("connection", "").lower() != "close"
        try:
            response = await self._handle(method.upper(), target, headers, reader)
        except BlobError as exc:
            # A refused PUT leaves its body unread: the stream position is lost, so close after answering.
            writer.write(_error_bytes(exc, False, self.store.clock()))
            await writer.drain()
            return False
        writer.write(response if keep_alive else response.replace(b"Connection: keep-alive", b"Connection: close", 1))
        await writer.drain()
        return keep_alive

    async def _handle(self, method: str, target: str, headers: dict[str, str],
                      reader: asyncio.StreamReader) -> bytes:
        url = urllib.parse.urlsplit(target)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        container, _, name = urllib.parse.unquote(url.path).lstrip("/").partition("/")
        if not container or not name:
            raise BlobError(400, "InvalidUri", f"{url.path!r} is not /{{container}}/{{blob}}")
        check_blob_name(name)
        if method == "PUT":
            return await self._put(container, name, query, headers, reader)
        if method == "GET":
            return await self._get(container, name, query)
        raise BlobError(405, "UnsupportedHttpVerb", f"{method} is not supported; PUT a block blob or GET it")

    async def _put(self, container: str, name: str, query: dict[str, str], headers: dict[str, str],
                   reader: asyncio.StreamReader) -> bytes:
        self.store.check_sas(query, container, name, "w")
        if "comp" in query:
            raise BlobError(400, "UnsupportedQueryParameter",
                            f"comp={query['comp']} (staged block uploads) is not supported by the local blob "
                            "endpoint; upload the file in one Put Blob request")
        if headers.get("x-ms-blob-type", "").lower() != "blockblob":
            raise BlobError(400, "MissingRequiredHeader", "Put Blob needs the header x-ms-blob-type: BlockBlob")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise BlobError(411, "MissingContentLengthHeader", "send the blob with a Content-Length header, "
                                                               "not chunked")
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            raise BlobError(411, "MissingContentLengthHeader", "Put Blob needs a Content-Length header") from None
        if length < 0 or length > self.max_blob_bytes:
            raise BlobError(413, "RequestBodyTooLarge",
                            f"the blob of {length} bytes exceeds this endpoint's limit of {self.max_blob_bytes}")
        temp = self.store.temp_path()
        digest = hashlib.md5(usedforsecurity=False)
        try:
            with open(temp, "wb") as out:
                left = length
                while left:
                    chunk = await reader.readexactly(min(_CHUNK, left))
                    digest.update(chunk)
                    out.write(chunk)
                    left -= len(chunk)
            claimed = headers.get("content-md5")
            if claimed and claimed != base64.b64encode(digest.digest()).decode():
                raise BlobError(400, "Md5Mismatch", "the body's MD5 differs from the Content-MD5 header")
            blob = self.store.put(container, name, temp, length, digest.digest(),
                                  headers.get("x-ms-blob-content-type") or headers.get("content-type")
                                  or "application/octet-stream")
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        log.info("blob %s/%s stored (%d bytes)", container, name, length)
        if self.on_blob:
            self.on_blob(blob)
        return _response(201, b"", {"ETag": blob.etag, "Content-MD5": blob.md5,
                                    "x-ms-request-server-encrypted": "false"}, True, self.store.clock())

    async def _get(self, container: str, name: str, query: dict[str, str]) -> bytes:
        self.store.check_sas(query, container, name, "r")
        blob = self.store.get(container, name)
        if blob is None:
            raise BlobError(404, "BlobNotFound", f"blob {container}/{name} does not exist")
        data = await asyncio.to_thread(self.store.blob_path(blob).read_bytes)
        headers = {"ETag": blob.etag, "Content-MD5": blob.md5, "Content-Type": blob.content_type,
                   "x-ms-blob-type": "BlockBlob"}
        return _response(200, data, headers, True, self.store.clock())

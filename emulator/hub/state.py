"""What the local IoT Hub and DPS remember, in SQLite: restarting the emulator loses nothing.

Two stores, one file each:

- :class:`HubState` (one per emulated hub): the device registry (keys, thumbprints, status), twins
  (tags, desired, reported, each with its ``$version``), queued cloud-to-device messages with their
  feedback, stored telemetry, persistent MQTT sessions and metering counters.
- :class:`DpsState`: individual enrollments, enrollment groups and device registrations.

Every method is safe to call from any thread (one connection behind a lock), so the asyncio server and a
service API running in another thread share one store. Methods raise :class:`NotFound`,
:class:`Conflict` (etag or existence) or :class:`InvalidInput` with a message meant for the user.
Times are unix seconds (floats) from an injectable clock so tests control expiry.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Clock = Callable[[], float]

AUTH_SAS = "sas"
AUTH_SELF_SIGNED = "selfSigned"                 # X.509, registry holds the certificate thumbprints
AUTH_CA = "certificateAuthority"                # X.509, any certificate chaining to a trusted CA
AUTH_TYPES = (AUTH_SAS, AUTH_SELF_SIGNED, AUTH_CA)

C2D_MAX_QUEUE = 50          # IoT Hub's per-device limit of enqueued cloud-to-device messages
C2D_DEFAULT_TTL_S = 3600.0  # IoT Hub's default message time to live (1 hour)
C2D_MAX_DELIVERIES = 10     # after this many deliveries without completion the message is dead-lettered
MESSAGE_UNIT = 4096         # IoT Hub meters device-to-cloud traffic in 4 KB units


class StateError(Exception):
    """Base of the store's errors; ``status`` is the HTTP status a service API should answer with."""

    status = 400


class NotFound(StateError):
    status = 404


class Conflict(StateError):
    status = 409


class PreconditionFailed(StateError):
    status = 412


class InvalidInput(StateError):
    status = 400


class QuotaExceeded(StateError):
    status = 403


def new_key() -> str:
    """A fresh base64 symmetric key (32 random bytes, the size IoT Hub generates)."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def message_units(size: int) -> int:
    """IoT Hub's billing units for one device-to-cloud message of ``size`` bytes (at least one)."""
    return max(1, -(-size // MESSAGE_UNIT))


def merge_patch(target: dict, patch: dict) -> dict:
    """RFC 7396 JSON merge patch, as twins use it: ``null`` removes a key, objects merge recursively."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_patch(out[key], value)
        elif isinstance(value, dict):
            out[key] = merge_patch({}, value)
        else:
            out[key] = value
    return out


def _check_patch(patch: Any, what: str) -> dict:
    if not isinstance(patch, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(patch).__name__}")
    for key in patch:
        if not isinstance(key, str) or not key:
            raise InvalidInput(f"{what}: property names must be non-empty strings")
        if key.startswith("$") and key not in ("$version", "$metadata"):
            raise InvalidInput(f"{what}: property name {key!r} may not start with '$' (reserved by IoT Hub)")
        if any(c in key for c in ".  \x00"):
            raise InvalidInput(f"{what}: property name {key!r} may not contain '.', ' ' or control characters")
    return {k: v for k, v in patch.items() if not k.startswith("$")}


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    return 0


class _Database:
    """One SQLite connection, WAL journal, serialised by a lock."""

    SCHEMA = ""

    def __init__(self, path: str | os.PathLike, clock: Clock = time.time) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.clock = clock
        self._lock = threading.RLock()
        # Create the file 0600 before SQLite opens it: SQLite gives its -wal and -shm files the database's
        # mode, and all three hold device keys.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for path in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
            if path.exists():
                os.chmod(path, 0o600)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives process crashes (the emulator's restarts); only an OS crash can lose
        # the last transactions, which is the trade the real service's latency budget would make too.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._db.executescript(self.SCHEMA)  # executescript manages its own transaction

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def close(self) -> None:
        with self._lock:
            self._db.close()


# --- hub ------------------------------------------------------------------------------------------------

@dataclass
class Device:
    device_id: str
    auth_type: str = AUTH_SAS
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    primary_thumbprint: str | None = None
    secondary_thumbprint: str | None = None
    status: str = "enabled"
    status_reason: str = ""
    etag: str = ""
    generation_id: str = ""
    created: float = 0.0
    updated: float = 0.0
    iot_edge: bool = False
    connection_state: str = "Disconnected"
    last_activity: float = 0.0
    c2d_queued: int = 0

    @property
    def enabled(self) -> bool:
        return self.status == "enabled"


@dataclass
class Twin:
    device_id: str
    tags: dict
    desired: dict
    reported: dict
    desired_version: int
    reported_version: int
    version: int
    etag: str

    def device_view(self) -> dict:
        """The document a device receives for a twin GET: properties only, with their ``$version``."""
        return {"desired": {**self.desired, "$version": self.desired_version},
                "reported": {**self.reported, "$version": self.reported_version}}


@dataclass
class C2DMessage:
    seq: int
    device_id: str
    message_id: str
    payload: bytes
    properties: dict[str, str]
    correlation_id: str | None
    enqueued: float
    expiry: float
    ack: str
    state: str
    delivery_count: int
    lock_token: str

    @property
    def system_properties(self) -> dict[str, str]:
        out = {"$.mid": self.message_id, "$.to": f"/devices/{self.device_id}/messages/deviceBound"}
        if self.correlation_id:
            out["$.cid"] = self.correlation_id
        return out


@dataclass
class Feedback:
    seq: int
    message_id: str
    device_id: str
    status: str         # Success | Expired | DeliveryCountExceeded | Rejected | Purged
    description: str
    enqueued: float


@dataclass
class TelemetryRecord:
    seq: int
    device_id: str
    payload: bytes = field(repr=False)
    properties: dict[str, str]          # application properties
    system_properties: dict[str, str]   # $.mid, $.ct, $.ce, ... as the device sent them
    enqueued: float
    size: int
    units: int


_HUB_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    auth_type TEXT NOT NULL,
    primary_key TEXT, secondary_key TEXT,
    primary_thumbprint TEXT, secondary_thumbprint TEXT,
    status TEXT NOT NULL DEFAULT 'enabled', status_reason TEXT NOT NULL DEFAULT '',
    etag TEXT NOT NULL, generation_id TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL,
    iot_edge INTEGER NOT NULL DEFAULT 0,
    connection_state TEXT NOT NULL DEFAULT 'Disconnected', last_activity REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS twins (
    device_id TEXT PRIMARY KEY REFERENCES devices(device_id) ON DELETE CASCADE,
    tags TEXT NOT NULL DEFAULT '{}', desired TEXT NOT NULL DEFAULT '{}', reported TEXT NOT NULL DEFAULT '{}',
    desired_version INTEGER NOT NULL DEFAULT 1, reported_version INTEGER NOT NULL DEFAULT 1,
    version INTEGER NOT NULL DEFAULT 1, etag TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS c2d (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id TEXT NOT NULL REFERENCES devices(device_id) ON DELETE CASCADE,
    message_id TEXT NOT NULL, correlation_id TEXT, payload BLOB NOT NULL, properties TEXT NOT NULL,
    enqueued REAL NOT NULL, expiry REAL NOT NULL, ack TEXT NOT NULL DEFAULT 'none',
    state TEXT NOT NULL DEFAULT 'queued', delivery_count INTEGER NOT NULL DEFAULT 0,
    lock_token TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS c2d_device ON c2d(device_id, state, seq);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL, device_id TEXT NOT NULL,
    status TEXT NOT NULL, description TEXT NOT NULL, enqueued REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS telemetry (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, device_id TEXT NOT NULL, payload BLOB NOT NULL,
    properties TEXT NOT NULL, system_properties TEXT NOT NULL,
    enqueued REAL NOT NULL, size INTEGER NOT NULL, units INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    client_id TEXT PRIMARY KEY, subscriptions TEXT NOT NULL DEFAULT '{}', updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS cas (
    name TEXT PRIMARY KEY, pem TEXT NOT NULL, added REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    day TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (day, name)
);
"""

_DEVICE_COLUMNS = ("device_id", "auth_type", "primary_key", "secondary_key", "primary_thumbprint",
                   "secondary_thumbprint", "status", "status_reason", "etag", "generation_id", "created",
                   "updated", "iot_edge", "connection_state", "last_activity")


def _etag() -> str:
    return base64.b64encode(secrets.token_bytes(6)).decode()


def normalize_thumbprint(value: str) -> str:
    """Upper-case hex without separators, the form IoT Hub compares (SHA-1 or SHA-256 of the DER)."""
    cleaned = value.replace(":", "").replace(" ", "").upper()
    if len(cleaned) not in (40, 64) or any(c not in "0123456789ABCDEF" for c in cleaned):
        raise InvalidInput(f"thumbprint {value!r} is not 40 (SHA-1) or 64 (SHA-256) hex digits")
    return cleaned


class HubState(_Database):
    """The persistent state of one IoT hub. ``telemetry_retention`` bounds stored telemetry (oldest go)."""

    SCHEMA = _HUB_SCHEMA

    def __init__(self, path: str | os.PathLike, clock: Clock = time.time, *,
                 telemetry_retention: int = 100_000) -> None:
        super().__init__(path, clock)
        self.telemetry_retention = telemetry_retention
        self._telemetry_since_trim = 0
        # A restart drops every connection: nothing is connected or in flight any more.
        with self._tx() as db:
            db.execute("UPDATE devices SET connection_state='Disconnected'")
            db.execute("UPDATE c2d SET state='queued', lock_token='' WHERE state='inflight'")

    # registry

    def create_device(self, device_id: str, *, auth_type: str = AUTH_SAS, primary_key: str | None = None,
                      secondary_key: str | None = None, primary_thumbprint: str | None = None,
                      secondary_thumbprint: str | None = None, status: str = "enabled",
                      status_reason: str = "", iot_edge: bool = False) -> Device:
        """Register a device. SAS devices get fresh keys unless given; X.509 self-signed needs a thumbprint."""
        _check_device_id(device_id)
        if auth_type not in AUTH_TYPES:
            raise InvalidInput(f"authentication type {auth_type!r} is not one of {', '.join(AUTH_TYPES)}")
        if status not in ("enabled", "disabled"):
            raise InvalidInput(f"status {status!r} must be 'enabled' or 'disabled'")
        if auth_type == AUTH_SAS:
            primary_key = _check_key(primary_key or new_key(), "primary key")
            secondary_key = _check_key(secondary_key or new_key(), "secondary key")
        elif auth_type == AUTH_SELF_SIGNED:
            if not primary_thumbprint:
                raise InvalidInput(f"device {device_id!r}: self-signed X.509 needs a primary thumbprint")
            primary_thumbprint = normalize_thumbprint(primary_thumbprint)
            secondary_thumbprint = normalize_thumbprint(secondary_thumbprint) if secondary_thumbprint else None
        now = self.clock()
        etag = _etag()
        with self._tx() as db:
            if db.execute("SELECT 1 FROM devices WHERE device_id=?", (device_id,)).fetchone():
                raise Conflict(f"device {device_id!r} already exists")
            db.execute(f"INSERT INTO devices ({','.join(_DEVICE_COLUMNS)}) VALUES ({','.join('?' * 15)})",
                       (device_id, auth_type, primary_key, secondary_key, primary_thumbprint,
                        secondary_thumbprint, status, status_reason, etag, uuid.uuid4().hex[:18], now, now,
                        int(iot_edge), "Disconnected", 0.0))
            db.execute("INSERT INTO twins (device_id, etag) VALUES (?, ?)", (device_id, _etag()))
        return self.get_device(device_id)

    def get_device(self, device_id: str) -> Device:
        rows = self._query("SELECT d.*, (SELECT COUNT(*) FROM c2d c WHERE c.device_id=d.device_id AND "
                           "c.state!='done') AS c2d_queued FROM devices d WHERE device_id=?", (device_id,))
        if not rows:
            raise NotFound(f"device {device_id!r} is not registered in this hub")
        return _device(rows[0])

    def find_device(self, device_id: str) -> Device | None:
        try:
            return self.get_device(device_id)
        except NotFound:
            return None

    def list_devices(self) -> list[Device]:
        rows = self._query("SELECT d.*, (SELECT COUNT(*) FROM c2d c WHERE c.device_id=d.device_id AND "
                           "c.state!='done') AS c2d_queued FROM devices d ORDER BY device_id")
        return [_device(r) for r in rows]

    def update_device(self, device_id: str, /, *, etag: str | None = None, **changes: Any) -> Device:
        """Change registry fields (status, status_reason, keys, thumbprints, auth_type, iot_edge).

        ``etag`` (if given and not ``*``) must match the current one, as IoT Hub's If-Match does.
        """
        allowed = {"status", "status_reason", "primary_key", "secondary_key", "primary_thumbprint",
                   "secondary_thumbprint", "auth_type", "iot_edge"}
        unknown = set(changes) - allowed
        if unknown:
            raise InvalidInput(f"cannot change {', '.join(sorted(unknown))}; changeable: {', '.join(sorted(allowed))}")
        if "status" in changes and changes["status"] not in ("enabled", "disabled"):
            raise InvalidInput(f"status {changes['status']!r} must be 'enabled' or 'disabled'")
        if "auth_type" in changes and changes["auth_type"] not in AUTH_TYPES:
            raise InvalidInput(f"authentication type {changes['auth_type']!r} is not one of {', '.join(AUTH_TYPES)}")
        for name in ("primary_key", "secondary_key"):
            if changes.get(name):
                _check_key(changes[name], name.replace("_", " "))
        for name in ("primary_thumbprint", "secondary_thumbprint"):
            if changes.get(name):
                changes[name] = normalize_thumbprint(changes[name])
        if "iot_edge" in changes:
            changes["iot_edge"] = int(bool(changes["iot_edge"]))
        with self._tx() as db:
            row = db.execute("SELECT etag FROM devices WHERE device_id=?", (device_id,)).fetchone()
            if not row:
                raise NotFound(f"device {device_id!r} is not registered in this hub")
            if etag not in (None, "*") and etag != row["etag"]:
                raise PreconditionFailed(f"device {device_id!r} changed since etag {etag!r}")
            changes.update(etag=_etag(), updated=self.clock())
            assignments = ", ".join(f"{k}=?" for k in changes)
            db.execute(f"UPDATE devices SET {assignments} WHERE device_id=?", (*changes.values(), device_id))
        return self.get_device(device_id)

    def delete_device(self, device_id: str, *, etag: str | None = None) -> None:
        """Remove a device with its twin and queued messages."""
        with self._tx() as db:
            row = db.execute("SELECT etag FROM devices WHERE device_id=?", (device_id,)).fetchone()
            if not row:
                raise NotFound(f"device {device_id!r} is not registered in this hub")
            if etag not in (None, "*") and etag != row["etag"]:
                raise PreconditionFailed(f"device {device_id!r} changed since etag {etag!r}")
            db.execute("DELETE FROM devices WHERE device_id=?", (device_id,))
            db.execute("DELETE FROM sessions WHERE client_id=?", (device_id,))

    def set_connection_state(self, device_id: str, connected: bool) -> None:
        with self._tx() as db:
            db.execute("UPDATE devices SET connection_state=?, last_activity=? WHERE device_id=?",
                       ("Connected" if connected else "Disconnected", self.clock(), device_id))

    # CA certificates trusted for certificateAuthority devices

    def add_ca(self, name: str, pem: str) -> None:
        """Trust ``pem`` (one CA certificate) for devices with ``certificateAuthority`` authentication."""
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise InvalidInput(f"CA {name!r}: expected a PEM certificate ('-----BEGIN CERTIFICATE-----')")
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO cas VALUES (?,?,?)", (name, pem, self.clock()))

    def list_cas(self) -> dict[str, str]:
        return {r["name"]: r["pem"] for r in self._query("SELECT name, pem FROM cas ORDER BY name")}

    def remove_ca(self, name: str) -> None:
        with self._tx() as db:
            if not db.execute("DELETE FROM cas WHERE name=?", (name,)).rowcount:
                raise NotFound(f"CA {name!r} is not trusted by this hub")

    # twins

    def get_twin(self, device_id: str) -> Twin:
        rows = self._query("SELECT * FROM twins WHERE device_id=?", (device_id,))
        if not rows:
            raise NotFound(f"device {device_id!r} is not registered in this hub (no twin)")
        return _twin(rows[0])

    def list_twins(self) -> list[Twin]:
        return [_twin(r) for r in self._query("SELECT * FROM twins ORDER BY device_id")]

    def update_twin(self, device_id: str, *, tags: dict | None = None, desired: dict | None = None,
                    replace: bool = False, etag: str | None = None) -> tuple[Twin, dict | None]:
        """Service-side change: merge (or with ``replace`` set) tags and desired properties.

        Returns the new twin and the desired patch to push to the device (with ``$version``), or None when
        the desired properties did not change.
        """
        if tags is not None:
            tags = _check_patch(tags, "tags")
        if desired is not None:
            desired = _check_patch(desired, "desired properties")
            if _depth(desired) > 10:
                raise InvalidInput("desired properties nest deeper than IoT Hub's limit of 10 levels")
        with self._tx() as db:
            row = db.execute("SELECT * FROM twins WHERE device_id=?", (device_id,)).fetchone()
            if not row:
                raise NotFound(f"device {device_id!r} is not registered in this hub (no twin)")
            twin = _twin(row)
            if etag not in (None, "*") and etag != twin.etag:
                raise PreconditionFailed(f"twin of {device_id!r} changed since etag {etag!r}")
            push = None
            if tags is not None:
                twin.tags = dict(tags) if replace else merge_patch(twin.tags, tags)
            if desired is not None:
                old = twin.desired
                twin.desired = merge_patch({}, desired) if replace else merge_patch(twin.desired, desired)
                if twin.desired != old:
                    twin.desired_version += 1
                    push = ({**twin.desired} if replace else dict(desired)) | {"$version": twin.desired_version}
            twin.version += 1
            twin.etag = _etag()
            db.execute("UPDATE twins SET tags=?, desired=?, desired_version=?, version=?, etag=? WHERE device_id=?",
                       (json.dumps(twin.tags), json.dumps(twin.desired), twin.desired_version, twin.version,
                        twin.etag, device_id))
        return twin, push

    def patch_reported(self, device_id: str, patch: Any) -> Twin:
        """Device-side reported-properties patch (merge). Raises InvalidInput for a bad document."""
        patch = _check_patch(patch, "reported properties patch")
        if _depth(patch) > 10:
            raise InvalidInput("reported properties nest deeper than IoT Hub's limit of 10 levels")
        with self._tx() as db:
            row = db.execute("SELECT * FROM twins WHERE device_id=?", (device_id,)).fetchone()
            if not row:
                raise NotFound(f"device {device_id!r} is not registered in this hub (no twin)")
            twin = _twin(row)
            twin.reported = merge_patch(twin.reported, patch)
            if len(json.dumps(twin.reported)) > 32 * 1024:
                raise InvalidInput("reported properties would exceed IoT Hub's 32 KB limit")
            twin.reported_version += 1
            twin.version += 1
            twin.etag = _etag()
            db.execute("UPDATE twins SET reported=?, reported_version=?, version=?, etag=? WHERE device_id=?",
                       (json.dumps(twin.reported), twin.reported_version, twin.version, twin.etag, device_id))
        return twin

    # cloud-to-device messages

    def enqueue_c2d(self, device_id: str, payload: bytes, *, properties: dict[str, str] | None = None,
                    message_id: str | None = None, correlation_id: str | None = None,
                    ttl_s: float = C2D_DEFAULT_TTL_S, ack: str = "none") -> C2DMessage:
        """Queue a message for a device; raises QuotaExceeded when 50 are already waiting (IoT Hub's limit)."""
        if ack not in ("none", "positive", "negative", "full"):
            raise InvalidInput(f"ack {ack!r} must be none, positive, negative or full")
        if len(payload) > 64 * 1024:
            raise InvalidInput(f"cloud-to-device message of {len(payload)} bytes exceeds IoT Hub's 64 KB limit")
        props = {str(k): str(v) for k, v in (properties or {}).items()}
        now = self.clock()
        with self._tx() as db:
            if not db.execute("SELECT 1 FROM devices WHERE device_id=?", (device_id,)).fetchone():
                raise NotFound(f"device {device_id!r} is not registered in this hub")
            self._expire_c2d(db, device_id, now)
            queued = db.execute("SELECT COUNT(*) FROM c2d WHERE device_id=? AND state!='done'",
                                (device_id,)).fetchone()[0]
            if queued >= C2D_MAX_QUEUE:
                raise QuotaExceeded(f"device {device_id!r} already has {queued} cloud-to-device messages queued "
                                    f"(limit {C2D_MAX_QUEUE}); wait for the device to receive them")
            mid = message_id or str(uuid.uuid4())
            cur = db.execute("INSERT INTO c2d (device_id, message_id, correlation_id, payload, properties, "
                             "enqueued, expiry, ack) VALUES (?,?,?,?,?,?,?,?)",
                             (device_id, mid, correlation_id, payload, json.dumps(props), now, now + ttl_s, ack))
            seq = cur.lastrowid
            self._count(db, "c2d_enqueued", 1)
        return self._c2d(seq)

    def next_c2d(self, device_id: str) -> C2DMessage | None:
        """The oldest queued, unexpired message for a device, marked in flight (call :meth:`complete_c2d`)."""
        now = self.clock()
        with self._tx() as db:
            self._expire_c2d(db, device_id, now)
            while True:
                row = db.execute("SELECT * FROM c2d WHERE device_id=? AND state='queued' ORDER BY seq LIMIT 1",
                                 (device_id,)).fetchone()
                if not row:
                    return None
                if row["delivery_count"] < C2D_MAX_DELIVERIES:
                    break
                self._finish_c2d(db, row, "DeliveryCountExceeded", "delivery count exceeded", "negative")
            token = uuid.uuid4().hex
            db.execute("UPDATE c2d SET state='inflight', delivery_count=delivery_count+1, lock_token=? "
                       "WHERE seq=?", (token, row["seq"]))
        return self._c2d(row["seq"])

    def complete_c2d(self, seq: int) -> None:
        """The device acknowledged (PUBACK) message ``seq``: done, with positive feedback if requested."""
        with self._tx() as db:
            row = db.execute("SELECT * FROM c2d WHERE seq=?", (seq,)).fetchone()
            if row and row["state"] != "done":
                self._finish_c2d(db, row, "Success", "Success", "positive")
                self._count(db, "c2d_delivered", 1)

    def release_c2d(self, seq: int) -> None:
        """Delivery failed (connection lost before PUBACK): queue the message again."""
        with self._tx() as db:
            db.execute("UPDATE c2d SET state='queued', lock_token='' WHERE seq=? AND state='inflight'", (seq,))

    def release_all_c2d(self, device_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE c2d SET state='queued', lock_token='' WHERE device_id=? AND state='inflight'",
                       (device_id,))

    def purge_c2d(self, device_id: str) -> int:
        """Drop every pending message of a device; returns how many."""
        with self._tx() as db:
            rows = db.execute("SELECT * FROM c2d WHERE device_id=? AND state!='done'", (device_id,)).fetchall()
            for row in rows:
                self._finish_c2d(db, row, "Purged", "purged by the service", "negative")
        return len(rows)

    def pending_c2d(self, device_id: str) -> list[C2DMessage]:
        rows = self._query("SELECT * FROM c2d WHERE device_id=? AND state!='done' ORDER BY seq", (device_id,))
        return [_c2d(r) for r in rows]

    def feedback(self, after_seq: int = 0, limit: int = 1000) -> list[Feedback]:
        """Delivery feedback records (for messages sent with ack positive/negative/full), oldest first."""
        rows = self._query("SELECT * FROM feedback WHERE seq>? ORDER BY seq LIMIT ?", (after_seq, limit))
        return [Feedback(**dict(r)) for r in rows]

    def _c2d(self, seq: int) -> C2DMessage:
        return _c2d(self._query("SELECT * FROM c2d WHERE seq=?", (seq,))[0])

    def _expire_c2d(self, db: sqlite3.Connection, device_id: str, now: float) -> None:
        for row in db.execute("SELECT * FROM c2d WHERE device_id=? AND state='queued' AND expiry<=?",
                              (device_id, now)).fetchall():
            self._finish_c2d(db, row, "Expired", "message expired before delivery", "negative")

    def _finish_c2d(self, db: sqlite3.Connection, row: sqlite3.Row, status: str, text: str, kind: str) -> None:
        db.execute("UPDATE c2d SET state='done', lock_token='' WHERE seq=?", (row["seq"],))
        if row["ack"] == "full" or row["ack"] == kind:
            db.execute("INSERT INTO feedback (message_id, device_id, status, description, enqueued) "
                       "VALUES (?,?,?,?,?)", (row["message_id"], row["device_id"], status, text, self.clock()))
        # Completed messages are history: keep the queue table small.
        db.execute("DELETE FROM c2d WHERE seq=?", (row["seq"],))

    # telemetry

    def add_telemetry(self, device_id: str, payload: bytes, properties: dict[str, str],
                      system_properties: dict[str, str]) -> TelemetryRecord:
        """Store one device-to-cloud message and meter it (messages and 4 KB units)."""
        size = len(payload) + sum(len(k) + len(v) for k, v in properties.items())
        units = message_units(size)
        now = self.clock()
        with self._tx() as db:
            cur = db.execute("INSERT INTO telemetry (device_id, payload, properties, system_properties, enqueued, "
                             "size, units) VALUES (?,?,?,?,?,?,?)",
                             (device_id, payload, json.dumps(properties), json.dumps(system_properties), now,
                              size, units))
            self._count(db, "d2c_messages", 1)
            self._count(db, "d2c_units", units)
            self._telemetry_since_trim += 1
            if self._telemetry_since_trim >= 1000:
                self._telemetry_since_trim = 0
                db.execute("DELETE FROM telemetry WHERE seq <= ?", (cur.lastrowid - self.telemetry_retention,))
        return TelemetryRecord(cur.lastrowid, device_id, payload, properties, system_properties, now, size, units)

    def telemetry(self, after_seq: int = 0, limit: int = 1000, device_id: str | None = None) -> list[TelemetryRecord]:
        """Stored device-to-cloud messages with ``seq > after_seq``, oldest first (a tail reads forward)."""
        if device_id is None:
            rows = self._query("SELECT * FROM telemetry WHERE seq>? ORDER BY seq LIMIT ?", (after_seq, limit))
        else:
            rows = self._query("SELECT * FROM telemetry WHERE seq>? AND device_id=? ORDER BY seq LIMIT ?",
                               (after_seq, device_id, limit))
        return [TelemetryRecord(r["seq"], r["device_id"], r["payload"], json.loads(r["properties"]),
                                json.loads(r["system_properties"]), r["enqueued"], r["size"], r["units"])
                for r in rows]

    def last_telemetry_seq(self) -> int:
        """The ``seq`` of the newest stored device-to-cloud message (0 if none): where a live tail starts."""
        return self._query("SELECT COALESCE(MAX(seq), 0) AS seq FROM telemetry")[0]["seq"]

    # persistent MQTT sessions (clean_session=False)

    def load_session(self, client_id: str) -> dict[str, int] | None:
        """Subscriptions (filter -> QoS) of a persisted session, or None when there is none."""
        rows = self._query("SELECT subscriptions FROM sessions WHERE client_id=?", (client_id,))
        return json.loads(rows[0]["subscriptions"]) if rows else None

    def save_session(self, client_id: str, subscriptions: dict[str, int]) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO sessions (client_id, subscriptions, updated) VALUES (?,?,?) "
                       "ON CONFLICT(client_id) DO UPDATE SET subscriptions=excluded.subscriptions, "
                       "updated=excluded.updated", (client_id, json.dumps(subscriptions), self.clock()))

    def drop_session(self, client_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE client_id=?", (client_id,))

    # metering counters

    def count(self, name: str, amount: int = 1) -> None:
        """Add to today's counter ``name`` (UTC day, like IoT Hub's daily quota)."""
        with self._tx() as db:
            self._count(db, name, amount)

    def counters(self, day: str | None = None) -> dict[str, int]:
        """Counters of one UTC day (``YYYY-MM-DD``, default today): d2c_messages, d2c_units, c2d_*, ..."""
        day = day or self.day()
        return {r["name"]: r["value"] for r in self._query("SELECT name, value FROM counters WHERE day=?", (day,))}

    def day(self) -> str:
        return time.strftime("%Y-%m-%d", time.gmtime(self.clock()))

    def _count(self, db: sqlite3.Connection, name: str, amount: int) -> None:
        db.execute("INSERT INTO counters (day, name, value) VALUES (?,?,?) "
                   "ON CONFLICT(day, name) DO UPDATE SET value=value+excluded.value", (self.day(), name, amount))


def _check_device_id(device_id: str) -> None:
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.%_*?!(),:=@$'")
    if not device_id or len(device_id) > 128 or not set(device_id) <= allowed:
        raise InvalidInput(f"device id {device_id!r} must be 1-128 characters of letters, digits and -.%_*?!(),:=@$'")


def _check_key(key: str, what: str) -> str:
    try:
        raw = base64.b64decode(key, validate=True)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{what} is not valid base64") from exc
    if not 16 <= len(raw) <= 64:
        raise InvalidInput(f"{what} must decode to 16-64 bytes, not {len(raw)}")
    return key


def _device(row: sqlite3.Row) -> Device:
    values = {k: row[k] for k in _DEVICE_COLUMNS}
    values["iot_edge"] = bool(values["iot_edge"])
    return Device(**values, c2d_queued=row["c2d_queued"])


def _twin(row: sqlite3.Row) -> Twin:
    return Twin(row["device_id"], json.loads(row["tags"]), json.loads(row["desired"]), json.loads(row["reported"]),
                row["desired_version"], row["reported_version"], row["version"], row["etag"])


def _c2d(row: sqlite3.Row) -> C2DMessage:
    return C2DMessage(row["seq"], row["device_id"], row["message_id"], row["payload"], json.loads(row["properties"]),
                      row["correlation_id"], row["enqueued"], row["expiry"], row["ack"], row["state"],
                      row["delivery_count"], row["lock_token"])


# --- DPS ------------------------------------------------------------------------------------------------

@dataclass
class Attestation:
    """How a device proves itself. ``type`` names the handler: symmetricKey, x509 or tpm.

    symmetricKey: ``primary_key``/``secondary_key`` (base64). x509: ``certificates`` (PEM, for an individual
    enrollment the device certificate or its thumbprint; for a group the signing CA). tpm: ``endorsement_key``
    (base64 TPM2B_PUBLIC) and ``storage_root_key``.
    """

    type: str
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    certificates: list[str] = field(default_factory=list)
    thumbprints: list[str] = field(default_factory=list)
    endorsement_key: str | None = None
    storage_root_key: str | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v not in (None, [])}

    @classmethod
    def from_json(cls, data: dict) -> Attestation:
        return cls(**data)


@dataclass
class Enrollment:
    """An individual enrollment (``group_id`` None) or an enrollment group."""

    enrollment_id: str              # registration id (individual) or group id (group)
    attestation: Attestation
    is_group: bool = False
    device_id: str | None = None    # individual: the device id to create (default: the registration id)
    iot_hubs: list[str] = field(default_factory=list)  # hubs this enrollment may use; empty: all
    allocation_policy: str = "hashed"  # hashed | geoLatency | static | custom (custom: allocation hook)
    initial_twin: dict = field(default_factory=dict)   # {"tags": {...}, "properties": {"desired": {...}}}
    provisioning_status: str = "enabled"
    reprovision: dict = field(default_factory=lambda: {"updateHubAssignment": True, "migrateDeviceData": True})
    iot_edge: bool = False
    etag: str = ""
    created: float = 0.0
    updated: float = 0.0


@dataclass
class Registration:
    registration_id: str
    enrollment_id: str
    is_group: bool
    device_id: str
    assigned_hub: str
    status: str             # assigned | failed | disabled | assigning
    # initialAssignment | deviceDataMigrated | deviceDataReset | reprovisionedToInitialAssignment
    substatus: str
    operation_id: str
    created: float
    updated: float
    etag: str
    error_code: int | None = None
    error_message: str | None = None
    payload: Any = None
    extra: dict = field(default_factory=dict)   # registrationState fields an attestation adds (TPM: hub key)


_DPS_SCHEMA = """
CREATE TABLE IF NOT EXISTS enrollments (
    enrollment_id TEXT NOT NULL, is_group INTEGER NOT NULL, document TEXT NOT NULL,
    PRIMARY KEY (enrollment_id, is_group)
);
CREATE TABLE IF NOT EXISTS registrations (
    registration_id TEXT PRIMARY KEY, document TEXT NOT NULL
);
"""


class DpsState(_Database):
    """Enrollments and registrations of the local Device Provisioning Service."""

    SCHEMA = _DPS_SCHEMA

    def put_enrollment(self, enrollment: Enrollment, *, etag: str | None = None) -> Enrollment:
        """Create or replace an enrollment (individual or group). Symmetric keys are generated if absent."""
        _check_device_id(enrollment.enrollment_id)
        if enrollment.provisioning_status not in ("enabled", "disabled"):
            raise InvalidInput(f"provisioning status {enrollment.provisioning_status!r} must be enabled or disabled")
        att = enrollment.attestation
        if att.type == "symmetricKey":
            att.primary_key = _check_key(att.primary_key or new_key(), "primary key")
            att.secondary_key = _check_key(att.secondary_key or new_key(), "secondary key")
        elif att.type == "x509":
            if not att.certificates and not att.thumbprints:
                raise InvalidInput(f"x509 enrollment {enrollment.enrollment_id!r} needs a certificate "
                                   "(PEM of the device certificate, or for a group the signing CA) or a thumbprint")
            att.thumbprints = [normalize_thumbprint(t) for t in att.thumbprints]
        elif att.type == "tpm":
            if enrollment.is_group:
                raise InvalidInput("TPM attestation exists only for individual enrollments (as in Azure DPS)")
            if not att.endorsement_key:
                raise InvalidInput(f"tpm enrollment {enrollment.enrollment_id!r} needs the endorsement key")
        else:
            raise InvalidInput(f"attestation type {att.type!r} is not symmetricKey, x509 or tpm")
        now = self.clock()
        with self._tx() as db:
            row = db.execute("SELECT document FROM enrollments WHERE enrollment_id=? AND is_group=?",
                             (enrollment.enrollment_id, int(enrollment.is_group))).fetchone()
            if row:
                old = json.loads(row["document"])
                if etag not in (None, "*") and etag != old["etag"]:
                    raise PreconditionFailed(f"enrollment {enrollment.enrollment_id!r} changed since etag {etag!r}")
                enrollment.created = old["created"]
            else:
                enrollment.created = now
            enrollment.updated = now
            enrollment.etag = _etag()
            db.execute("INSERT OR REPLACE INTO enrollments VALUES (?,?,?)",
                       (enrollment.enrollment_id, int(enrollment.is_group), json.dumps(_enrollment_json(enrollment))))
        return enrollment

    def get_enrollment(self, enrollment_id: str, *, group: bool = False) -> Enrollment:
        rows = self._query("SELECT document FROM enrollments WHERE enrollment_id=? AND is_group=?",
                           (enrollment_id, int(group)))
        if not rows:
            kind = "enrollment group" if group else "individual enrollment"
            raise NotFound(f"{kind} {enrollment_id!r} does not exist")
        return _enrollment(json.loads(rows[0]["document"]))

    def find_enrollment(self, enrollment_id: str, *, group: bool = False) -> Enrollment | None:
        try:
            return self.get_enrollment(enrollment_id, group=group)
        except NotFound:
            return None

    def list_enrollments(self, *, group: bool | None = None) -> list[Enrollment]:
        if group is None:
            rows = self._query("SELECT document FROM enrollments ORDER BY is_group, enrollment_id")
        else:
            rows = self._query("SELECT document FROM enrollments WHERE is_group=? ORDER BY enrollment_id",
                               (int(group),))
        return [_enrollment(json.loads(r["document"])) for r in rows]

    def delete_enrollment(self, enrollment_id: str, *, group: bool = False) -> None:
        with self._tx() as db:
            cur = db.execute("DELETE FROM enrollments WHERE enrollment_id=? AND is_group=?",
                             (enrollment_id, int(group)))
            if not cur.rowcount:
                raise NotFound(f"{'enrollment group' if group else 'individual enrollment'} {enrollment_id!r} "
                               "does not exist")

    def save_registration(self, registration: Registration) -> Registration:
        registration.etag = _etag()
        registration.updated = self.clock()
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO registrations VALUES (?,?)",
                       (registration.registration_id, json.dumps(registration.__dict__)))
        return registration

    def get_registration(self, registration_id: str) -> Registration:
        rows = self._query("SELECT document FROM registrations WHERE registration_id=?", (registration_id,))
        if not rows:
            raise NotFound(f"registration {registration_id!r} does not exist (the device has not registered)")
        return Registration(**json.loads(rows[0]["document"]))

    def find_registration(self, registration_id: str) -> Registration | None:
        try:
            return self.get_registration(registration_id)
        except NotFound:
            return None

    def find_operation(self, operation_id: str) -> Registration | None:
        for row in self._query("SELECT document FROM registrations"):
            doc = json.loads(row["document"])
            if doc["operation_id"] == operation_id:
                return Registration(**doc)
        return None

    def list_registrations(self, enrollment_id: str | None = None) -> list[Registration]:
        regs = [Registration(**json.loads(r["document"]))
                for r in self._query("SELECT document FROM registrations ORDER BY registration_id")]
        return [r for r in regs if enrollment_id is None or r.enrollment_id == enrollment_id]

    def delete_registration(self, registration_id: str) -> None:
        with self._tx() as db:
            if not db.execute("DELETE FROM registrations WHERE registration_id=?", (registration_id,)).rowcount:
                raise NotFound(f"registration {registration_id!r} does not exist")


def _enrollment_json(e: Enrollment) -> dict:
    doc = dict(e.__dict__)
    doc["attestation"] = e.attestation.to_json()
    return doc


def _enrollment(doc: dict) -> Enrollment:
    doc = dict(doc)
    doc["attestation"] = Attestation.from_json(doc["attestation"])
    return Enrollment(**doc)

"""Cloud-to-device commands: the same commands as the direct methods, delivered as C2D messages.

A command is either a JSON body ``{"command": "identify", "payload": {...}}`` or a ``command`` application
property with the payload as the JSON body. The outcome travels back as a ``c2dResult`` event (there is no
reply channel in C2D). Malformed, expired, oversized and duplicate messages are rejected with a
``c2dResult`` that says why; the handler never raises, so the message is completed (acknowledged) and the
hub does not deliver it again and again. Message ids already handled are remembered across restarts, so an
at-least-once redelivery never reboots a device twice.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from agent.identity.secure_files import write_private

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
SEEN_LIMIT = 256
_ID_KEYS = ("$.message_id", "message-id", "message_id", "messageId", "$.mid")
_EXPIRY_KEYS = ("$.expiry_time_utc", "expiry-time-utc", "expiry_time_utc", "$.exp", "absolute-expiry-time")

Dispatch = Callable[[str, Any], Awaitable[tuple[int, Any]]]
Emit = Callable[[dict, Mapping[str, str]], None]


def _first(props: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        if props.get(key):
            return str(props[key])
    return None


def _expired(value: str, now: float) -> bool:
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return float(value) / (1000 if float(value) > 1e11 else 1) < now
        except ValueError:
            return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp() < now


class C2DCommands:
    """Parses C2D messages into commands, runs them through ``dispatch`` and emits the outcome."""

    def __init__(self, dispatch: Dispatch, emit: Emit, state_file: Path, clock: Callable[[], float]) -> None:
        self.dispatch = dispatch
        self.emit = emit
        self.state_file = state_file
        self.clock = clock
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        try:
            for message_id in json.loads(state_file.read_text()):
                self.seen[str(message_id)] = None
        except (OSError, ValueError, TypeError):
            pass

    async def handle(self, body: bytes, props: Mapping[str, str]) -> None:
        message_id = _first(props, _ID_KEYS)
        try:
            outcome = await self._handle(body, props, message_id)
        except Exception as exc:   # a C2D handler must never raise: the message would come back forever
            log.exception("c2d: handling message %s failed", message_id)
            outcome = {"status": 500, "result": {"error": f"internal error: {type(exc).__name__}"}}
        self._remember(message_id)
        props_out = {"kind": "c2d-result", "roost-type": "c2d-result"}
        if message_id:
            props_out["correlation-id"] = message_id
        self.emit({"c2dResult": {"messageId": message_id, **outcome}}, props_out)

    async def _handle(self, body: bytes, props: Mapping[str, str], message_id: str | None) -> dict:
        if message_id and message_id in self.seen:
            log.info("c2d: message %s was already handled; ignored", message_id)
            return {"status": 409, "result": {"error": "duplicate message: this message id was already handled"}}
        expiry = _first(props, _EXPIRY_KEYS)
        if expiry and _expired(expiry, self.clock()):
            return {"status": 410, "result": {"error": f"message expired at {expiry}; not run"}}
        if len(body) > MAX_BODY:
            return {"status": 413, "result": {"error": f"message body is {len(body)} bytes; at most {MAX_BODY}"}}
        command, payload, problem = self._parse(body, props)
        if problem:
            log.warning("c2d: rejected message %s: %s", message_id, problem)
            return {"status": 400, "command": command, "result": {"error": problem}}
        status, result = await self.dispatch(command, payload)
        return {"status": status, "command": command, "result": result}

    @staticmethod
    def _parse(body: bytes, props: Mapping[str, str]) -> tuple[str | None, Any, str | None]:
        try:
            text = body.decode("utf-8") if body else ""
            data = json.loads(text) if text.strip() else None
        except (ValueError, UnicodeDecodeError) as exc:
            return props.get("command"), None, f"message body is not JSON ({exc})"
        if props.get("command"):
            return props["command"], data, None
        if not isinstance(data, dict) or not isinstance(data.get("command"), str):
            return None, None, ('a command message needs a JSON body {"command": "<method name>", "payload": {...}} '
                                'or a "command" application property')
        extra = sorted(set(data) - {"command", "payload"})
        if extra:
            return data["command"], None, f"unknown field(s) {', '.join(extra)}; allowed: command, payload"
        return data["command"], data.get("payload"), None

    def _remember(self, message_id: str | None) -> None:
        if not message_id:
            return
        self.seen[message_id] = None
        while len(self.seen) > SEEN_LIMIT:
            self.seen.popitem(last=False)
        try:
            write_private(self.state_file, json.dumps(list(self.seen)))
        except OSError as exc:
            log.error("c2d: cannot record handled message ids: %s", exc)

"""A small client of the hub emulator's service API (used by `roost-sim hub ...` and the dashboard).

It finds the API from ``service.json`` in the emulator's state directory (written at serve time, 0600) or
from an ``iothubowner``-style connection string, signs each request with a fresh SharedAccessSignature and
turns IoT Hub error bodies into :class:`ServiceClientError` carrying their message.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.hub.sas import make_sas
from emulator.hub.service_errors import message_of

API_VERSION = "2021-04-12"
TOKEN_TTL_S = 3600


class ServiceClientError(Exception):
    """The API refused a request (``status`` > 0) or could not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServiceTarget:
    url: str                 # https://address:port
    host: str                # HostName of the connection string (what tokens are signed for)
    key_name: str
    key: str
    ca_file: str | None


def parse_connection_string(text: str) -> dict[str, str]:
    fields = {}
    for part in text.strip().split(";"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"connection string part {name[:30]!r} has no '='")
        fields[name] = value
    missing = {"HostName", "SharedAccessKeyName", "SharedAccessKey"} - fields.keys()
    if missing:
        raise ValueError(f"the connection string lacks {', '.join(sorted(missing))}; use the iothubowner "
                         "connection string `roost-sim hub serve` prints")
    return fields


def discover(state_dir: Path | None, connection_string: str | None, ca_file: str | None) -> ServiceTarget:
    """Where the API is: an explicit connection string wins, else ``service.json`` in ``state_dir``."""
    info: dict[str, Any] = {}
    if state_dir is not None and (state_dir / "service.json").exists():
        try:
            info = json.loads((state_dir / "service.json").read_text())
        except ValueError as exc:
            raise ServiceClientError(0, f"{state_dir / 'service.json'} is not valid JSON ({exc}); restart "
                                        "`roost-sim hub serve` to rewrite it") from None
    if connection_string is None:
        if not info:
            where = state_dir / "service.json" if state_dir else "service.json"
            raise ServiceClientError(0, f"no service API found: {where} does not exist. Start `roost-sim hub "
                                        "serve`, or pass --state-dir (the one serve uses) or --connection-string")
        connection_string = info["connectionString"]
    try:
        fields = parse_connection_string(connection_string)
    except ValueError as exc:
        raise ServiceClientError(0, str(exc)) from None
    host = fields["HostName"]
    url = info.get("url") if info and info.get("connectionString", "").startswith(f"HostName={host};") else None
    return ServiceTarget(url or f"https://{host}", host, fields["SharedAccessKeyName"], fields["SharedAccessKey"],
                         ca_file or info.get("rootCa"))


class ServiceClient:
    """Signed JSON requests to one hub's service API."""

    def __init__(self, target: ServiceTarget, timeout: float = 30.0) -> None:
        self.target = target
        self.timeout = timeout
        parsed = urllib.parse.urlsplit(target.url)
        self._host = parsed.hostname or ""
        self._port = parsed.port or 443
        self._context = ssl.create_default_context(cafile=target.ca_file) if target.ca_file \
            else ssl.create_default_context()
        self._connection: http.client.HTTPSConnection | None = None

    def _token(self) -> str:
        return make_sas(self.target.host, self.target.key, int(time.time()) + TOKEN_TTL_S, self.target.key_name)

    def request(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None,
                timeout: float | None = None, headers: dict[str, str] | None = None) -> Any:
        """The decoded JSON answer (None for an empty one); raises ServiceClientError with the API's message."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        if not path.startswith("/roost/"):
            query.setdefault("api-version", API_VERSION)
        target = path + ("?" + urllib.parse.urlencode(query) if query else "")
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Authorization": self._token(), "Accept": "application/json", **(headers or {})}
        if payload is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        for attempt in (1, 2):
            connection = self._connect(timeout)
            try:
                connection.request(method, target, body=payload, headers=headers)
                response = connection.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine) as exc:
                self.close()
                if attempt == 2:
                    raise ServiceClientError(0, self._unreachable(exc)) from None
            except (OSError, ssl.SSLError) as exc:
                self.close()
                raise ServiceClientError(0, self._unreachable(exc)) from None
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        decoded: Any = None
        if data:
            try:
                decoded = json.loads(data)
            except ValueError:
                decoded = data.decode("utf-8", "replace")
        if response.status >= 400:
            raise ServiceClientError(response.status, message_of(decoded) or f"HTTP {response.status}")
        return decoded

    def _connect(self, timeout: float | None) -> http.client.HTTPSConnection:
        if self._connection is None:
            self._connection = http.client.HTTPSConnection(self._host, self._port, context=self._context,
                                                           timeout=timeout or self.timeout)
        elif self._connection.sock is not None:
            self._connection.sock.settimeout(timeout or self.timeout)
        return self._connection

    def _unreachable(self, exc: BaseException) -> str:
        return (f"cannot reach the hub service API at {self.target.url}: {exc}. Is `roost-sim hub serve` running "
                "with this state directory?")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

"""The connection to IoT Hub (or a transparent gateway) over the unmodified azure-iot-device client.

The agent, not the SDK, is in charge of the connection (the SDK's own retry loop is where its known reconnect
storms, token races and offline hangs live):

- the client is made with ``connection_retry=False`` and ``auto_connect=False``: it never reconnects or
  connects by itself, and an operation while offline fails at once instead of hanging;
- every SDK await runs under the agent's own timeout;
- one supervisor task connects, waits, and on any loss tears the client down and builds a fresh one after a
  capped, fully jittered exponential backoff (so a fleet that lost its hub does not return in lockstep);
- SAS tokens are signed by the identity's signer and renewed ``renew_before_s`` before expiry with
  ``update_sastoken``; a failed renewal becomes a reconnect with a fresh token;
- a hub that refuses the credentials makes the next attempt ask DPS again (the device may have moved hubs).

SDK callbacks arrive on the SDK's own threads; they are handed to the agent's event loop before any agent
code runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.config import HubConfig
from agent.context import C2DHandler, DesiredHandler, MethodHandler
from agent.identity.credentials import HubCredentials
from agent.logging import register_secret

log = logging.getLogger(__name__)

# (force a fresh DPS registration?) -> credentials. Blocking; called in a worker thread.
CredentialsProvider = Callable[[bool], HubCredentials]


class UplinkUnavailable(ConnectionError):
    """Not connected to the hub right now; the caller keeps its data and tries again after reconnecting."""


class SendFailed(ConnectionError):
    """A message was not acknowledged (timeout or error); it stays in the outbox and is sent again."""


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)], never below base/2."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return max(base_s / 2, rng.uniform(0, ceiling))


class SharedDeadlines:
    """Deadlines for many concurrent awaits with the same timeout, served by one timer.

    ``asyncio.timeout`` arms and cancels a timer per await; at thousands of messages a second that is a
    noticeable part of the event loop's work. Deadlines of equal timeouts expire in the order they were set,
    so one timer armed for the oldest one is enough: when it fires, every overdue task is cancelled and the
    timer moves on to the next deadline.

    Use: ``token = start(timeout)`` before the await, ``expired(token)`` when it raised CancelledError (True:
    it was this deadline, handle it as a timeout; False: a real cancellation, re-raise), ``finish(token)``
    in ``finally``.
    """

    def __init__(self) -> None:
        self._pending: dict[object, tuple[float, asyncio.Task]] = {}
        self._expired: set[object] = set()
        self._timer: asyncio.TimerHandle | None = None

    def start(self, timeout_s: float) -> object:
        loop = asyncio.get_running_loop()
        token = object()
        deadline = loop.time() + timeout_s
        self._pending[token] = (deadline, asyncio.current_task(loop))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)
        return token

    def expired(self, token: object) -> bool:
        if token not in self._expired:
            return False
        self._expired.discard(token)
        task = asyncio.current_task()
        # Cancelled by the deadline only (and not also by someone else): the caller turns it into a timeout.
        return task is None or task.uncancel() == 0

    def finish(self, token: object) -> None:
        self._pending.pop(token, None)
        self._expired.discard(token)

    def _expire(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for token, (deadline, task) in list(self._pending.items()):
            if deadline > now:
                self._timer = loop.call_at(deadline, self._expire)
                return
            del self._pending[token]
            self._expired.add(token)
            task.cancel()


@dataclass
class UplinkStats:
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    token_renewals: int = 0
    sends: int = 0
    send_failures: int = 0
    reprovisions: int = 0
    last_error: str = ""
    connected_since: float | None = None
    offline_since: float | None = field(default_factory=time.time)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class HubUplink:
    """Implements agent.context.Uplink: sends telemetry, routes twin/method/C2D traffic, owns reconnects."""

    def __init__(self, hub: HubConfig, credentials: CredentialsProvider, *, rng: random.Random | None = None,
                 clock: Callable[[], float] = time.time, client_factory: Callable[..., Any] | None = None) -> None:
        self.hub = hub
        self._credentials = credentials
        self._rng = rng or random.Random()
        self._clock = clock
        self._client_factory = client_factory
        self._client: Any = None
        self._creds: HubCredentials | None = None
        self._token_expiry = 0.0
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()
        self._renew_now = asyncio.Event()
        self._stop_event = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._force_reprovision = False
        self._answering: set[asyncio.Task] = set()   # direct methods being handled and answered right now
        self._method_handler: MethodHandler | None = None
        self._desired_handler: DesiredHandler | None = None
        self._c2d_handler: C2DHandler | None = None
        self._tasks: set[asyncio.Task] = set()
        self._send_deadlines = SharedDeadlines()
        self._message_class: Any = None          # azure.iot.device.Message, imported with the client
        self.stats = UplinkStats()
        self.device_id = ""

    # ---- Uplink protocol -------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def on_method(self, handler: MethodHandler) -> None:
        self._method_handler = handler

    def on_desired(self, handler: DesiredHandler) -> None:
        self._desired_handler = handler

    def on_c2d(self, handler: C2DHandler) -> None:
        self._c2d_handler = handler

    async def get_twin(self) -> dict:
        client = self._require_client()
        return await self._timed(client.get_twin(), "get the twin")

    async def patch_reported(self, patch: dict) -> None:
        client = self._require_client()
        await self._timed(client.patch_twin_reported_properties(patch), "patch reported properties")

    async def upload_blob(self, blob_name: str, data: bytes) -> str:
        """IoT Hub file upload: ask the hub for a SAS URL, PUT the blob, report the outcome."""
        client = self._require_client()
        info = await self._timed(client.get_storage_info_for_blob(blob_name), "get blob storage info")
        url = (f"https://{info['hostName']}/{info['containerName']}/{info['blobName']}{info['sasToken']}")
        register_secret(info["sasToken"])
        ca_pem = self._creds.ca_pem if self._creds is not None else None
        ok, status, detail = await asyncio.to_thread(_put_blob, url, data, self.hub.send_timeout_s, ca_pem)
        await self._timed(client.notify_blob_upload_status(info["correlationId"], ok, status, detail),
                          "notify blob upload status")
        if not ok:
            raise SendFailed(f"blob upload of {blob_name} failed: HTTP {status} {detail}")
        return url.split("?", 1)[0]

    # ---- telemetry -------------------------------------------------------------------------------------------

    async def send(self, body: bytes, *, message_id: str, properties: Mapping[str, str],
                   content_type: str = "application/json", content_encoding: str = "utf-8") -> None:
        """Send one message and return once IoT Hub acknowledged it (PUBACK). Raises UplinkUnavailable/SendFailed."""
        client = self._require_client()
        message = self._message_class(body, message_id=message_id, content_encoding=content_encoding,
                          content_type=content_type)
        message.custom_properties.update(properties)
        token = self._send_deadlines.start(self.hub.send_timeout_s)
        try:
            await client.send_message(message)
        except asyncio.CancelledError:
            if not self._send_deadlines.expired(token):
                raise
            self.stats.send_failures += 1
            # An acknowledgement that never comes means the session is not healthy: start a fresh one.
            self._mark_lost(client, f"no PUBACK within {self.hub.send_timeout_s:g} s")
            raise SendFailed(f"message {message_id} not acknowledged within {self.hub.send_timeout_s:g} s") from None
        except Exception as exc:
            self.stats.send_failures += 1
            self._mark_lost(client, f"send failed: {type(exc).__name__}: {exc}")
            raise SendFailed(f"message {message_id} not sent: {type(exc).__name__}: {exc}") from exc
        finally:
            self._send_deadlines.finish(token)
        self.stats.sends += 1

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
            return True
        except TimeoutError:
            return False

    # ---- the supervisor --------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, stay connected, renew tokens, reconnect with backoff; returns when ``stop`` is called."""
        self._loop = asyncio.get_running_loop()
        attempt = 0
        while not self._stopping:
            client = None
            try:
                client = await self._connect_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.connect_failures += 1
                self.stats.last_error = await self._explain(exc)
                if _is_auth_failure(exc):
                    self._force_reprovision = True
                delay = backoff_delay(attempt, self.hub.backoff_base_s, self.hub.backoff_cap_s, self._rng)
                attempt += 1
                log.warning("cannot connect to IoT Hub: %s; next attempt in %.1f s", self.stats.last_error, delay)
                if client is not None:
                    await self._teardown(client)
                await self._sleep_unless_stopping(delay)
                continue
            attempt = 0
            await self._stay_connected(client)
            if self._stopping:
                await self._answers_sent()
            await self._teardown(client)
            if not self._stopping:
                # A short, jittered pause even after a clean drop keeps a flapping link from becoming a storm.
                await self._sleep_unless_stopping(backoff_delay(0, self.hub.backoff_base_s,
                                                                self.hub.backoff_cap_s, self._rng))

    async def _explain(self, exc: BaseException) -> str:
        """What went wrong, in words that say what to fix (CA, host name, network, key) when that can be told.

        Only SDK connection errors are probed (one short TLS handshake to the hub): provisioning errors already
        say what is wrong, and the credentials must be known to probe anything.
        """
        creds = self._creds
        if creds is None or not _is_sdk_error(exc) or self._stopping:
            return _describe(exc)
        from agent.identity import describe_connect_failure

        try:
            explained = await asyncio.to_thread(describe_connect_failure, creds, exc, port=self.hub.port,
                                                timeout=min(5.0, self.hub.connect_timeout_s))
        except Exception as probe_error:   # the explanation is a courtesy; never let it break the retry loop
            log.debug("could not probe the connection failure: %s", _describe(probe_error))
            return _describe(exc)
        return str(explained)

    def reprovision(self) -> None:
        """Ask DPS for this device's hub again and reconnect (the hub moved, or refused the identity).

        Asked for by a direct method (rotateDeviceKey, reprovision), it waits until the answers in progress
        are sent: dropping the connection first would lose the answer, and the caller would see a timeout.
        """
        self._force_reprovision = True
        if self._client is not None and not self._answering:
            self._mark_lost(self._client, "re-provisioning requested")

    async def stop(self) -> None:
        """End the supervisor: the connection is closed and ``run`` returns."""
        self._stopping = True
        self._stop_event.set()

    async def _connect_once(self) -> Any:
        force, self._force_reprovision = self._force_reprovision, False
        if force:
            self.stats.reprovisions += 1
            log.info("asking the provisioning service for this device's hub again")
        creds = await asyncio.to_thread(self._credentials, force)
        self._creds = creds
        self.device_id = creds.device_id
        client = self._make_client(creds)
        self._lost.clear()
        try:
            await asyncio.wait_for(client.connect(), self.hub.connect_timeout_s)
        except BaseException:
            await self._teardown(client)
            raise
        if not client.connected:
            await self._teardown(client)
            raise ConnectionError("the client reported no connection after connect()")
        try:
            self._install_receivers(client)
        except Exception:
            await self._teardown(client)
            raise
        self._client = client
        self.stats.connects += 1
        self.stats.connected_since = self._clock()
        self.stats.offline_since = None
        self._connected.set()
        target = creds.gateway_hostname or creds.hostname
        log.info("connected to %s as %s%s", creds.hostname, creds.device_id,
                 f" through gateway {target}" if creds.gateway_hostname else "")
        return client

    async def _stay_connected(self, client: Any) -> None:
        while not self._stopping:
            if not client.connected:
                self._mark_lost(client, "connection dropped")
            if self._lost.is_set():
                break
            wait_s = 1.0   # also a poll: a disconnect the SDK did not report still ends this loop
            if self._creds is not None and self._creds.sign is not None:
                renew_in = self._token_expiry - self.hub.renew_before_s - self._clock()
                if renew_in <= 0 or self._renew_now.is_set():
                    self._renew_now.clear()
                    if not await self._renew_token(client):
                        break
                    continue
                wait_s = min(wait_s, renew_in)
            await _wait_any(self._lost, self._renew_now, self._stop_event, timeout=wait_s)
        self.stats.disconnects += 0 if self._stopping else 1
        self._connected.clear()
        self._client = None
        self.stats.connected_since = None
        self.stats.offline_since = self._clock()

    async def _renew_token(self, client: Any) -> bool:
        assert self._creds is not None
        token = self._new_token(self._creds)
        try:
            await asyncio.wait_for(client.update_sastoken(token), self.hub.connect_timeout_s)
        except Exception as exc:
            self._mark_lost(client, f"token renewal failed: {_describe(exc)}")
            return False
        self.stats.token_renewals += 1
        log.info("SAS token renewed; valid until %s", time.strftime("%H:%M:%S", time.gmtime(self._token_expiry)))
        return True

    def _new_token(self, creds: HubCredentials) -> str:
        now = self._clock()
        token = creds.sas_token(self.hub.sas_ttl_s, now=now)
        self._token_expiry = now + self.hub.sas_ttl_s
        register_secret(token.split("sig=", 1)[1].split("&", 1)[0])
        return token

    def _make_client(self, creds: HubCredentials) -> Any:
        from azure.iot.device import X509, Message
        from azure.iot.device.aio import IoTHubDeviceClient

        self._message_class = Message

        factory = self._client_factory or IoTHubDeviceClient
        options: dict[str, Any] = {
            "connection_retry": False,
            "auto_connect": False,
            "keep_alive": self.hub.keepalive_s,
            "websockets": self.hub.websockets,
        }
        if self.hub.model_id:
            options["product_info"] = self.hub.model_id
        if creds.gateway_hostname:
            options["gateway_hostname"] = creds.gateway_hostname
        if creds.ca_pem:
            options["server_verification_cert"] = creds.ca_pem
        if creds.sign is not None:
            client = factory.create_from_sastoken(self._new_token(creds), **options)
        elif creds.x509 is not None:
            x509 = X509(creds.x509.cert_file, creds.x509.key_file, creds.x509.pass_phrase)
            client = factory.create_from_x509_certificate(x509, creds.hostname, creds.device_id, **options)
        else:
            raise ValueError(f"identity {creds.source!r} has neither a SAS signer nor an X.509 certificate")
        self._install_handlers(client)
        return client

    def _install_handlers(self, client: Any) -> None:
        # The SDK calls these on its own threads; each one only hops onto the agent's loop.
        loop = self._loop or asyncio.get_running_loop()

        def on_state(*_: Any) -> None:
            loop.call_soon_threadsafe(self._check_connection, client)

        def on_token_required(*_: Any) -> None:
            loop.call_soon_threadsafe(self._renew_now.set)

        def on_background(exc: Exception) -> None:
            log.debug("SDK background exception: %s", _describe(exc))

        client.on_connection_state_change = on_state
        client.on_new_sastoken_required = on_token_required
        client.on_background_exception = on_background

    def _install_receivers(self, client: Any) -> None:
        # Setting a receive handler makes the SDK subscribe at once; with auto_connect off that only works on a
        # connected client, so these go on after connect() (clean_session=False keeps them across reconnects).
        if self._method_handler is not None:
            client.on_method_request_received = lambda req: self._spawn(self._answer_method(client, req))
        if self._desired_handler is not None:
            client.on_twin_desired_properties_patch_received = lambda patch: self._spawn(self._deliver(patch))
        if self._c2d_handler is not None:
            client.on_message_received = lambda message: self._spawn(self._deliver_c2d(message))

    def _spawn(self, coro: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            return

        def start() -> None:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(start)

    async def _answer_method(self, client: Any, request: Any) -> None:
        from azure.iot.device import MethodResponse

        assert self._method_handler is not None
        me = asyncio.current_task()
        assert me is not None
        self._answering.add(me)
        try:
            try:
                status, payload = await self._method_handler(request.name, request.payload)
            except Exception as exc:
                log.exception("method %s failed", request.name)
                status, payload = 500, {"error": f"{type(exc).__name__}: {exc}"}
            try:
                response = MethodResponse.create_from_method_request(request, status, payload)
                await self._timed(client.send_method_response(response), "answer a method")
            except Exception as exc:
                log.warning("cannot answer method %s: %s", request.name, _describe(exc))
        finally:
            self._answering.discard(me)
            if not self._answering and self._force_reprovision:   # a method asked for it: answered now
                self._mark_lost(client, "re-provisioning requested")

    async def _answers_sent(self) -> None:
        """Before closing for good, let the answers in progress go out: a reboot method's 200, for one."""
        if self._answering:
            await asyncio.wait(self._answering, timeout=self.hub.send_timeout_s)

    async def _deliver(self, patch: dict) -> None:
        assert self._desired_handler is not None
        try:
            await self._desired_handler(patch)
        except Exception:
            log.exception("desired properties handler failed")

    async def _deliver_c2d(self, message: Any) -> None:
        assert self._c2d_handler is not None
        props = dict(message.custom_properties or {})
        # expiry_time_utc lets the handler drop a command that expired while it waited in the hub's queue.
        for name in ("message_id", "correlation_id", "content_type", "content_encoding", "user_id",
                     "expiry_time_utc"):
            value = getattr(message, name, None)
            if value:
                props.setdefault(f"$.{name}", str(value))
        data = message.data if isinstance(message.data, bytes) else str(message.data).encode()
        try:
            await self._c2d_handler(data, props)
        except Exception:
            log.exception("cloud-to-device handler failed")

    def _check_connection(self, client: Any) -> None:
        if client is self._client and not client.connected:
            self._mark_lost(client, "connection dropped")

    def _mark_lost(self, client: Any, reason: str) -> None:
        if client is not self._client or self._lost.is_set():
            return
        self.stats.last_error = reason
        log.warning("IoT Hub connection lost: %s", reason)
        self._connected.clear()
        self._lost.set()

    async def _teardown(self, client: Any) -> None:
        # shutdown() can itself hang on a dead socket; the agent moves on regardless.
        try:
            await asyncio.wait_for(client.shutdown(), 10)
        except Exception as exc:
            log.debug("client shutdown: %s", _describe(exc))

    def _require_client(self) -> Any:
        client = self._client
        if client is None or not self._connected.is_set():
            raise UplinkUnavailable("not connected to IoT Hub")
        return client

    async def _timed(self, awaitable: Any, what: str) -> Any:
        client = self._client
        try:
            return await asyncio.wait_for(awaitable, self.hub.send_timeout_s)
        except TimeoutError:
            self._mark_lost(client, f"no answer within {self.hub.send_timeout_s:g} s to {what}")
            raise SendFailed(f"could not {what}: no answer within {self.hub.send_timeout_s:g} s") from None

    async def _sleep_unless_stopping(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop_event.wait(), delay)
        except TimeoutError:
            pass


async def _wait_any(*events: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, timeout), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


def _is_auth_failure(exc: BaseException) -> bool:
    try:
        from azure.iot.device import exceptions as sdk_errors
    except ImportError:
        return False
    return isinstance(exc, sdk_errors.CredentialError) or isinstance(exc.__cause__, sdk_errors.CredentialError)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause):
        text += f" ({type(cause).__name__}: {cause})"
    return text


def _is_sdk_error(exc: BaseException) -> bool:
    """An error from the IoT SDK's connect (as opposed to provisioning or credential resolution)."""
    try:
        from azure.iot.device import exceptions as sdk_errors
    except ImportError:
        return False
    return isinstance(exc, (sdk_errors.ClientError, TimeoutError))


def _put_blob(url: str, data: bytes, timeout: float, ca_pem: str | None = None) -> tuple[bool, int, str]:
    """One Put Blob to the SAS URL, trusting the identity's anchors (``ca_pem``) or else the system store."""
    import os
    import tempfile

    import requests

    ca_file = None
    # trust_env=False: REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) would otherwise replace ``verify`` for every
    # request, and proxy variables meant for people would carry the device's upload elsewhere.
    with requests.Session() as session:
        session.trust_env = False
        try:
            if ca_pem:
                with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as handle:
                    handle.write(ca_pem)
                    ca_file = handle.name
            verify: str | bool = ca_file or _system_ca_bundle() or True
            response = session.put(url, data=data, timeout=timeout, verify=verify,
                                   headers={"x-ms-blob-type": "BlockBlob", "Content-Length": str(len(data))})
        except requests.RequestException as exc:
            return False, 0, _describe_request_error(exc)
        except OSError as exc:
            return False, 0, f"cannot write the trust anchors for the upload: {exc}"
        finally:
            if ca_file:
                with contextlib.suppress(OSError):
                    os.unlink(ca_file)
    return response.ok, response.status_code, response.reason or ""


def _system_ca_bundle() -> str | None:
    """The operating system's trust store (what an empty hub.ca_file means), not requests' bundled certifi."""
    import ssl

    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath or None


def _describe_request_error(exc: BaseException) -> str:
    import requests

    if isinstance(exc, requests.exceptions.SSLError):
        return ("TLS verification of the blob endpoint failed; the hub's file upload storage must chain to "
                "hub.ca_file (or the system trust store)")
    return type(exc).__name__

"""Direct methods: name -> handler, each answering an HTTP-like status and a JSON result.

Success results are method-specific objects; every failure is ``{"error": "<what is wrong>", "fix": "..."}``
with 400 (bad payload), 403 (refused: disabled method or wrong confirmation), 404 (unknown method, sensor or
certificate), 409 (not possible on this device or in this state), 500/502 (the device or the upload failed).
A handler validates its whole payload before it changes anything, so an error status always means nothing
changed. docs/management.md lists every method.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.management import validators as v
from agent.management.system_actions import SystemActionError

if TYPE_CHECKING:
    from agent.management.manager import Management

log = logging.getLogger(__name__)

Result = tuple[int, Any]
KEEP_ON_FACTORY_RESET = ("firmware", "update", "updates", "slots")

# The fields each method's payload may carry (docs/models/roost-device.json lists the same).
PAYLOAD_FIELDS: dict[str, tuple[str, ...]] = {
    "reboot": ("delay", "reason"),
    "scheduleReboot": ("at", "cancel"),
    "factoryReset": ("confirm",),
    "identify": ("seconds",),
    "getHealth": (),
    "getDiagnostics": ("includeLogs",),
    "setTelemetryInterval": ("interval", "sensor"),
    "setTimeZone": ("timeZone",),
    "getTimeStatus": (),
    "listTrustedCertificates": (),
    "addTrustedCertificate": ("pem",),
    "removeTrustedCertificate": ("fingerprint", "force"),
    "rotateDeviceKey": ("key",),
    "reprovision": (),
}


class MethodError(Exception):
    """Ends a method with ``status`` and ``{"error": message, "fix": fix}``."""

    def __init__(self, status: int, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.fix = fix

    def result(self) -> dict:
        return {"error": str(self), **({"fix": self.fix} if self.fix else {})}


def _payload(payload: Any, method: str) -> dict:
    try:
        return v.payload_object(payload, method, PAYLOAD_FIELDS[method])
    except v.BadInput as exc:
        raise MethodError(400, str(exc)) from None


def _number(payload: dict, key: str, what: str, lo: float, hi: float, default: float | None = None) -> float:
    if key not in payload:
        if default is None:
            raise MethodError(400, f"{what} payload needs '{key}'")
        return default
    try:
        return v.number(payload[key], key, lo, hi)
    except v.BadInput as exc:
        raise MethodError(400, str(exc)) from None


class Methods:
    """The direct methods of a roost device, bound to one Management."""

    def __init__(self, mgmt: Management) -> None:
        self.mgmt = mgmt
        self.table: dict[str, Callable[[Any], Awaitable[Result]]] = {  # name -> async handler(payload)
            "reboot": self.reboot,
            "scheduleReboot": self.schedule_reboot,
            "factoryReset": self.factory_reset,
            "identify": self.identify,
            "getDiagnostics": self.get_diagnostics,
            "getHealth": self.get_health,
            "setTelemetryInterval": self.set_telemetry_interval,
            "setTimeZone": self.set_time_zone,
            "getTimeStatus": self.get_time_status,
            "listTrustedCertificates": self.list_trusted_certificates,
            "addTrustedCertificate": self.add_trusted_certificate,
            "removeTrustedCertificate": self.remove_trusted_certificate,
            "rotateDeviceKey": self.rotate_device_key,
            "reprovision": self.reprovision,
        }

    async def dispatch(self, name: str, payload: Any) -> Result:
        """Run method ``name``; never raises, whatever the cloud sent."""
        handler = self.table.get(name)
        if handler is None:
            return 404, {"error": f"unknown method {name!r}", "methods": sorted(self.table)}
        disabled = tuple(getattr(getattr(self.mgmt.context.config, "methods", None), "disabled", ()) or ())
        if name in disabled:
            return 403, {"error": f"method {name!r} is disabled on this device",
                         "fix": "remove it from methods.disabled in the device's roost.toml"}
        timeout = float(getattr(getattr(self.mgmt.context.config, "methods", None), "timeout_s", 30.0))
        try:
            status, result = await asyncio.wait_for(handler(payload), timeout)
        except MethodError as exc:
            log.warning("method %s refused (%d): %s", name, exc.status, exc)
            return exc.status, exc.result()
        except TimeoutError:
            log.error("method %s did not finish within %.0f s", name, timeout)
            return 504, {"error": f"{name} did not finish within {timeout:.0f} s"}
        except Exception as exc:
            log.exception("method %s failed", name)
            return 500, {"error": f"{name} failed on the device: {type(exc).__name__}: {exc}"}
        log.info("method %s -> %d", name, status)
        return status, result

    # -- power ---------------------------------------------------------------------------------------------
    async def reboot(self, payload: Any) -> Result:
        p = _payload(payload, "reboot")
        delay = _number(p, "delay", "reboot", 0, 86400, default=0)
        reason = p.get("reason", "reboot method")
        if not isinstance(reason, str) or len(reason) > 200:
            raise MethodError(400, "reason must be a string of at most 200 characters")
        self.mgmt.context.request_reboot(delay, reason)
        return 200, {"rebootIn": delay}

    async def schedule_reboot(self, payload: Any) -> Result:
        p = _payload(payload, "scheduleReboot")
        if p.get("cancel") is True and "at" not in p:
            return 200, {"cancelled": self.mgmt.schedule.cancel()}
        if "at" not in p:
            raise MethodError(400, "scheduleReboot payload needs 'at' (ISO 8601 time with zone) or 'cancel': true",
                              'e.g. {"at": "2026-01-31T03:00:00Z"}')
        at = p["at"]
        try:
            when = dt.datetime.fromisoformat(at.replace("Z", "+00:00")) if isinstance(at, str) else None
        except ValueError:
            when = None
        if when is None or when.tzinfo is None:
            raise MethodError(400, f"'at' must be an ISO 8601 time with a zone, like 2026-01-31T03:00:00Z; "
                                   f"got {at!r}")
        stamp = when.timestamp()
        now = self.mgmt.clock()
        if stamp <= now:
            raise MethodError(400, f"'at' ({at}) is in the past (device time "
                                   f"{dt.datetime.fromtimestamp(now, dt.UTC).isoformat()})")
        if stamp - now > 30 * 86400:
            raise MethodError(400, "'at' is more than 30 days ahead", "schedule it closer to the date")
        self.mgmt.schedule.set(stamp)
        return 200, {"scheduledAt": dt.datetime.fromtimestamp(stamp, dt.UTC).isoformat().replace("+00:00", "Z")}

    async def factory_reset(self, payload: Any) -> Result:
        p = _payload(payload, "factoryReset")
        expected = self.mgmt.context.config.management.factory_reset_confirmation
        if "confirm" not in p:
            raise MethodError(400, "factoryReset needs 'confirm' with the device's confirmation token",
                              "see management.factory_reset_confirmation in the device's roost.toml")
        if p["confirm"] != expected:
            raise MethodError(403, "the confirmation token does not match; nothing was reset")
        kept, removed = self.mgmt.wipe_state()
        self.mgmt.context.request_reboot(0, "factory reset")
        return 202, {"resetting": True, "removed": removed, "kept": kept}

    # -- local hardware ------------------------------------------------------------------------------------
    async def identify(self, payload: Any) -> Result:
        p = _payload(payload, "identify")
        seconds = _number(p, "seconds", "identify", 1, 600, default=10)
        if not self.mgmt.led.available:
            raise MethodError(409, "this board has no status LED to blink",
                              "add gpio.status_led to the board profile")
        self.mgmt.led.identify(seconds)
        return 200, {"blinking": seconds, "pin": self.mgmt.led.pin_number}

    async def get_health(self, payload: Any) -> Result:
        _payload(payload, "getHealth")
        sample, _ = self.mgmt.sample_health(evaluate=False)
        return 200, sample

    async def get_diagnostics(self, payload: Any) -> Result:
        p = _payload(payload, "getDiagnostics")
        include_logs = p.get("includeLogs", True)
        if not isinstance(include_logs, bool):
            raise MethodError(400, "includeLogs must be true or false")
        data, name = self.mgmt.diagnostics_bundle(include_logs)
        try:
            url = await self.mgmt.context.uplink.upload_blob(name, data)
        except Exception as exc:
            log.error("diagnostics upload failed: %s", exc)
            raise MethodError(502, f"the diagnostics bundle ({len(data)} bytes) could not be uploaded: {exc}",
                              "check that the hub has a storage account for file upload") from None
        from agent.management.diagnostics import digest

        return 200, {"blobName": name, "url": url, "bytes": len(data), "sha256": digest(data)}

    # -- telemetry and time --------------------------------------------------------------------------------
    async def set_telemetry_interval(self, payload: Any) -> Result:
        p = _payload(payload, "setTelemetryInterval")
        interval = _number(p, "interval", "setTelemetryInterval", 0.1, 86400)
        control = self.mgmt.context.sensors
        ids = list(control.sensor_ids())
        sensor = p.get("sensor")
        if sensor is not None:
            if sensor not in ids:
                raise MethodError(404, f"this device has no sensor {sensor!r}; it has {', '.join(ids) or 'none'}")
            ids = [sensor]
        try:
            self.mgmt.desired.apply_sensors({sid: {"interval_s": interval} for sid in ids})
        except ValueError as exc:
            raise MethodError(400, str(exc)) from None
        return 200, {"interval": interval, "sensors": ids}

    async def set_time_zone(self, payload: Any) -> Result:
        import zoneinfo

        p = _payload(payload, "setTimeZone")
        try:
            zone = v.timezone_name(p.get("timeZone"), zoneinfo.available_timezones())
        except v.BadInput as exc:
            raise MethodError(400, str(exc)) from None
        try:
            await asyncio.to_thread(self.mgmt.system.set_timezone, zone)
        except SystemActionError as exc:
            raise MethodError(500, str(exc)) from None
        return 200, {"timeZone": zone}

    async def get_time_status(self, payload: Any) -> Result:
        _payload(payload, "getTimeStatus")
        try:
            status = await asyncio.to_thread(self.mgmt.system.time_status)
        except SystemActionError as exc:
            raise MethodError(500, str(exc)) from None
        return 200, {
            "timeZone": status.get("Timezone", ""),
            "ntpEnabled": status.get("NTP") == "yes",
            "ntpSynchronized": status.get("NTPSynchronized") == "yes",
            "deviceTime": dt.datetime.fromtimestamp(self.mgmt.clock(), dt.UTC).isoformat().replace("+00:00", "Z"),
        }

    # -- trust and identity --------------------------------------------------------------------------------
    async def list_trusted_certificates(self, payload: Any) -> Result:
        _payload(payload, "listTrustedCertificates")
        return 200, {"certificates": [a.summary() for a in self.mgmt.trust.anchors()]}

    async def add_trusted_certificate(self, payload: Any) -> Result:
        from agent.identity.errors import TrustError

        p = _payload(payload, "addTrustedCertificate")
        if "pem" not in p:
            raise MethodError(400, "addTrustedCertificate needs 'pem' with the CA certificate in PEM form")
        try:
            added = self.mgmt.trust.add(p["pem"], dt.datetime.fromtimestamp(self.mgmt.clock(), dt.UTC))
        except TrustError as exc:
            raise MethodError(400, exc.problem, exc.fix) from None
        return 200, {"added": [a.summary() for a in added],
                     "certificates": [a.summary() for a in self.mgmt.trust.anchors()]}

    async def remove_trusted_certificate(self, payload: Any) -> Result:
        from agent.identity.errors import TrustError

        p = _payload(payload, "removeTrustedCertificate")
        fingerprint = p.get("fingerprint")
        if not isinstance(fingerprint, str) or not fingerprint:
            raise MethodError(400, "removeTrustedCertificate needs 'fingerprint' (SHA-256, hex)")
        force = p.get("force", False)
        if not isinstance(force, bool):
            raise MethodError(400, "force must be true or false")
        wanted = fingerprint.lower().replace(":", "")
        remaining = [a for a in self.mgmt.trust.anchors() if a.fingerprint != wanted]
        if not force and remaining and len(remaining) < len(self.mgmt.trust.anchors()):
            target = self.mgmt.connection_target()
            if target is not None:
                from agent.identity.tls_check import probe_tls

                probe = await asyncio.to_thread(probe_tls, target, 8883, "".join(a.pem for a in remaining),
                                                timeout=5.0)
                if probe.kind == "wrong-ca":
                    raise MethodError(409, f"{target} is verified by this certificate today; without it the device "
                                           "could not reconnect",
                                      "switch the gateway to its new certificate chain first, or pass "
                                      '"force": true')
        try:
            removed = self.mgmt.trust.remove(fingerprint)
        except TrustError as exc:
            raise MethodError(409 if exc.kind == "last" else 404, exc.problem, exc.fix) from None
        return 200, {"removed": removed.summary(),
                     "certificates": [a.summary() for a in self.mgmt.trust.anchors()]}

    async def rotate_device_key(self, payload: Any) -> Result:
        p = _payload(payload, "rotateDeviceKey")
        method = self.mgmt.context.config.identity.method
        if method == "tpm":
            if p:
                raise MethodError(400, "a TPM identity takes no key: the TPM imports the new hub key itself")
            self.mgmt.context.request_reprovision("rotateDeviceKey (TPM)")
            return 202, {"rotating": True, "method": "tpm"}
        if method != "symmetric":
            raise MethodError(409, f"rotateDeviceKey works for symmetric and tpm identities, not {method!r}",
                              "deploy a new certificate (x509) or a new connection string file")
        if "key" not in p:
            raise MethodError(400, "rotateDeviceKey needs 'key': the new base64 device key, already set on the "
                                   "enrollment in DPS")
        from agent.identity.errors import IdentityError

        try:
            await asyncio.to_thread(self.mgmt.rotate_symmetric_key, p["key"])
        except IdentityError as exc:
            raise MethodError(400, f"{exc.problem}; the current key stays in use", exc.fix) from None
        self.mgmt.context.request_reprovision("rotateDeviceKey")
        return 200, {"rotated": True, "method": "symmetric"}

    async def reprovision(self, payload: Any) -> Result:
        _payload(payload, "reprovision")
        self.mgmt.context.request_reprovision("reprovision method")
        return 202, {"reprovisioning": True}


def wipe_state(state_dir: Path, keep: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Delete everything in ``state_dir`` except the top-level names in ``keep``; returns (kept, removed)."""
    import shutil

    kept, removed = [], []
    if not state_dir.is_dir():
        return kept, removed
    for entry in sorted(state_dir.iterdir()):
        if entry.name in keep:
            kept.append(entry.name)
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return kept, removed

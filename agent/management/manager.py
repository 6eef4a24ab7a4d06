"""Management: the cloud-facing side of a roost device, wired to the rest of the agent through AgentContext.

``attach(context)`` registers the twin, method and C2D handlers on the uplink and returns a Management.
The daemon then runs ``Management.run()`` as a task (it reports device info and the full desired twin after
each connect, health every ``healthInterval``, and fires scheduled reboots); a daemon that knows when it
connects may also call ``on_connected()`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.identity.secure_files import write_private
from agent.management.c2d import C2DCommands
from agent.management.device_info import device_info
from agent.management.diagnostics import build_bundle
from agent.management.health import HealthMonitor, SystemProbe
from agent.management.led import StatusLed
from agent.management.log_buffer import LogBuffer
from agent.management.methods import KEEP_ON_FACTORY_RESET, Methods, wipe_state
from agent.management.system_actions import SystemActions
from agent.management.twin_config import DesiredConfig

log = logging.getLogger(__name__)

# "kind" selects the outbox record type in the daemon; "roost-type" travels as a message property for routing.
ALERT_PROPERTIES = {"kind": "alert", "roost-type": "alert"}


class RebootSchedule:
    """One pending scheduled reboot, kept in ``state_dir/management/reboot.json`` so it survives restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def at(self) -> float | None:
        try:
            return float(json.loads(self.path.read_text())["at"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def set(self, at: float) -> None:
        write_private(self.path, json.dumps({"at": at}))

    def cancel(self) -> bool:
        try:
            self.path.unlink()
            return True
        except FileNotFoundError:
            return False


class Management:
    """Twin configuration, reported properties, health, methods and C2D for one agent."""

    def __init__(self, context: Any, *, clock: Callable[[], float] = time.time, system: SystemActions | None = None,
                 probe: SystemProbe | None = None, log_buffer: LogBuffer | None = None,
                 info_root: Path = Path("/"), tick_s: float = 1.0) -> None:
        self.context = context
        self.clock = clock
        self.tick_s = tick_s
        config = context.config
        self.state_dir = Path(context.state_dir)
        self.mgmt_dir = self.state_dir / "management"
        self.system = system or SystemActions.from_config(config)
        self.led = StatusLed(context.platform)
        self.health = HealthMonitor(config.health, probe or SystemProbe(disk_path=self.state_dir))
        self.desired = DesiredConfig(context, led=self.led, health=self.health)
        self.methods = Methods(self)
        self.schedule = RebootSchedule(self.mgmt_dir / "reboot.json")
        self.c2d = C2DCommands(self.methods.dispatch, context.emit, self.mgmt_dir / "c2d-seen.json", clock)
        self.log_buffer = log_buffer or LogBuffer()
        self.info_root = info_root
        self._last_online = clock()
        self._was_connected = False
        self._next_health = 0.0
        self._task: asyncio.Task | None = None
        self._listeners: list[tuple[frozenset[str], Callable[[dict], Any]]] = []

    # -- wiring --------------------------------------------------------------------------------------------
    def attach(self) -> Management:
        uplink = self.context.uplink
        uplink.on_method(self.on_method)
        uplink.on_desired(self.on_desired)
        uplink.on_c2d(self.c2d.handle)
        if self.log_buffer not in logging.getLogger().handlers:
            logging.getLogger().addHandler(self.log_buffer)
        return self

    def claim(self, *names: str) -> None:
        """Leave these desired properties to another part of the agent (no acknowledgement from here)."""
        self.desired.claimed.update(names)

    def add_method(self, name: str, handler: Callable[[Any], Any]) -> None:
        """Serve another direct method (e.g. from the update engine): ``async handler(payload) -> (status, result)``.

        It gets the same treatment as the built-in ones: methods.disabled, the timeout, errors as statuses.
        """
        if name in self.methods.table:
            raise ValueError(f"direct method {name!r} is already served")
        self.methods.table[name] = handler

    def add_desired_listener(self, names: set[str] | frozenset[str], listener: Callable[[dict], Any]) -> None:
        """Pass the desired properties ``names`` (e.g. an ADU component) to ``async listener(patch)``.

        The listener gets them with ``$version`` from every patch and from the full twin after each connect;
        it acknowledges them itself, and this module leaves them alone.
        """
        self.claim(*names)
        self._listeners.append((frozenset(names), listener))

    async def _forward(self, desired: dict) -> None:
        for names, listener in self._listeners:
            part = {k: v for k, v in desired.items() if k in names}
            if not part:
                continue
            part.update({k: v for k, v in desired.items() if k.startswith("$")})
            try:
                await listener(part)
            except Exception:
                log.exception("twin: the listener for %s failed", ", ".join(sorted(names)))

    @property
    def trust(self) -> Any:
        from agent.identity import trust_store

        return trust_store(self.context.config, self.state_dir)

    async def on_method(self, name: str, payload: Any) -> tuple[int, Any]:
        return await self.methods.dispatch(name, payload)

    async def on_desired(self, patch: dict) -> None:
        if not isinstance(patch, dict):
            log.warning("twin: ignored a desired patch that is not an object")
            return
        reported = self.desired.process(patch)
        await self._report(reported)
        await self._forward(patch)

    async def on_connected(self) -> None:
        """After each (re)connect: apply the whole desired twin once, then report device info and health."""
        try:
            twin = await self.context.uplink.get_twin()
        except Exception as exc:
            log.warning("twin: could not read the twin after connecting: %s", exc)
            return
        desired = twin.get("desired", {}) if isinstance(twin, dict) else {}
        reported = self.desired.process(desired if isinstance(desired, dict) else {})
        reported["deviceInfo"] = self.device_info()
        await self._report(reported)
        if isinstance(desired, dict):
            await self._forward(desired)
        await self.report_health()

    async def _report(self, patch: dict) -> None:
        if not patch:
            return
        try:
            await self.context.uplink.patch_reported(patch)
        except Exception as exc:
            # Reported properties are re-sent after the next connect, so losing this one is recoverable.
            log.warning("twin: reported patch not sent (%s); it is sent again after reconnecting", exc)

    # -- reported state ------------------------------------------------------------------------------------
    def device_info(self) -> dict:
        slot = getattr(self.context, "firmware_slot", None)
        if callable(slot):
            try:
                slot = slot()
            except Exception:
                slot = None
        return device_info(self.context.config, root=self.info_root, firmware_slot=slot)

    def sample_health(self, evaluate: bool = True) -> tuple[dict, list[dict]]:
        try:
            outbox = dict(self.context.outbox_stats())
        except Exception as exc:
            log.warning("health: outbox statistics unavailable: %s", exc)
            outbox = {}
        offline_s = 0.0 if self.context.uplink.connected else self.clock() - self._last_online
        max_bytes = int(self.context.config.telemetry.outbox_max_bytes)
        if evaluate:
            return self.health.sample(outbox, max_bytes, offline_s, self.log_buffer.last_error)
        from agent.management.health import collect

        return collect(self.health.probe, outbox, max_bytes, offline_s, self.log_buffer.last_error), []

    async def report_health(self) -> dict:
        sample, alerts = self.sample_health()
        for alert in alerts:
            severity = alert["alert"]["severity"]
            self.context.emit(alert, {**ALERT_PROPERTIES, "severity": severity})
            log.warning("health: rule %s %s (%s = %s)", alert["alert"]["rule"], alert["alert"]["state"],
                        alert["alert"]["metric"], alert["alert"]["value"])
        if self.context.uplink.connected:
            await self._report({"health": sample})
        return sample

    # -- actions used by methods ---------------------------------------------------------------------------
    def wipe_state(self) -> tuple[list[str], list[str]]:
        extra = getattr(self.context.config.management, "extra", {}) or {}
        keep = extra.get("factory_reset_keep", KEEP_ON_FACTORY_RESET)
        keep = tuple(keep) if isinstance(keep, (list, tuple)) else KEEP_ON_FACTORY_RESET
        log.warning("factory reset: clearing %s (keeping %s)", self.state_dir, ", ".join(keep))
        return wipe_state(self.state_dir, keep)

    def connection_target(self) -> str | None:
        """The host the device's TLS connection goes to: the gateway, else its hub (None before provisioning)."""
        config = self.context.config
        if config.hub.gateway_hostname:
            return config.hub.gateway_hostname
        from agent.identity import assignment

        cached = assignment.load(self.state_dir)
        if cached is not None:
            return cached.hostname
        if config.identity.method == "connection-string":
            from agent.identity import IdentityError, resolve

            try:
                return resolve(config, self.state_dir, check_gateway=False).hostname
            except IdentityError:
                return None
        return None

    def rotate_symmetric_key(self, key: Any) -> None:
        from agent.identity import rotate_symmetric_key

        # DPS must answer well inside the method's own deadline: a key installed after the caller was told
        # "timed out" would break the promise that an error status means nothing changed.
        budget = float(getattr(getattr(self.context.config, "methods", None), "timeout_s", 30.0))
        rotate_symmetric_key(self.context.config, self.state_dir, key, timeout_s=max(1.0, budget * 0.75))

    def diagnostics_bundle(self, include_logs: bool = True) -> tuple[bytes, str]:
        config = self.context.config
        now = self.clock()
        try:
            anchors = [a.summary() for a in self.trust.anchors()]
        except Exception as exc:
            anchors = [{"error": str(exc)}]
        from agent.identity import assignment

        cached = assignment.load(self.state_dir)
        sections = {
            "deviceInfo": self.device_info(),
            "health": self.sample_health(evaluate=False)[0],
            "outbox": _safe(self.context.outbox_stats),
            "sensors": _safe(self.context.sensors.settings),
            "identity": {"method": config.identity.method,
                         "assignment": dataclasses.asdict(cached) if cached else None,
                         "gatewayHostname": config.hub.gateway_hostname or None,
                         "trustedCertificates": anchors},
            "twinConfig": {"telemetryInterval": self.desired.telemetry_interval, "logLevel": self.desired.log_level,
                           "statusLed": self.led.mode, "healthInterval": self.health.interval_s,
                           "healthRules": self.health.rules_value()},
            "scheduledReboot": self.schedule.at,
            "config": _config_summary(config),
        }
        include = include_logs and bool(getattr(config.management, "diagnostics_include_logs", True))
        data = build_bundle(sections, self.log_buffer.text() if include else None, now=now,
                            max_bytes=int(config.management.diagnostics_max_bytes))
        stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        return data, f"diagnostics/{stamp}.tar.gz"

    # -- the background loop -------------------------------------------------------------------------------
    async def tick(self) -> None:
        """One pass of the loop: connection edges, health due, scheduled reboot due."""
        now = self.clock()
        connected = bool(self.context.uplink.connected)
        if connected:
            self._last_online = now
        if connected and not self._was_connected:
            self._was_connected = True
            await self.on_connected()
            self._next_health = now + self.health.interval_s
        elif not connected:
            self._was_connected = False
        if now >= self._next_health:
            self._next_health = now + self.health.interval_s
            await self.report_health()
        at = self.schedule.at
        if at is not None and now >= at:
            self.schedule.cancel()
            log.warning("scheduled reboot due")
            self.context.request_reboot(0, "scheduled reboot")

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("management loop")
            await asyncio.sleep(self.tick_s)

    def start(self) -> asyncio.Task:
        if self._task is not None and not self._task.done():
            return self._task
        self._show_led()
        self._task = asyncio.get_running_loop().create_task(self.run(), name="roost-management")
        return self._task

    def _show_led(self, running: bool = True) -> None:
        # "auto": lit while the agent runs, so a dark LED on a powered board means the agent is down.
        if not self.led.available:
            return
        try:
            if running:
                self.led.set_mode(self.led.mode)
            elif self.led.mode == "auto":
                self.led.set_mode("off")
                self.led.mode = "auto"
        except Exception as exc:
            log.warning("status LED: %s", exc)

    async def stop(self) -> None:
        self._show_led(running=False)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        logging.getLogger().removeHandler(self.log_buffer)


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _config_summary(config: Any) -> Any:
    # The config holds file paths, never key material, so it can go into a bundle whole.
    try:
        return json.loads(json.dumps(dataclasses.asdict(config), default=str))
    except TypeError:
        return str(config)

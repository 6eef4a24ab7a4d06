"""`roost run`: the agent daemon. One asyncio process: sampler -> filters -> outbox -> forwarder -> uplink.

Start-up order is chosen so the device is useful as early as possible and never loses data: the outbox opens
first (a broken state directory stops the agent with a clear error), then the hardware, then systemd hears
READY=1 — before the hub is reached, because an offline device is still a working device that stores its
readings. The uplink connects in the background. Cloud management (agent.management) attaches through the
AgentContext seam that this class implements.

Shutdown (SIGTERM, SIGINT, or a requested reboot): sampling stops, open aggregation windows are flushed into
the outbox, the forwarder sends partial batches for a short grace period if connected, and the outbox is
checkpointed and closed. Anything not sent stays in the outbox for the next start.

With an ``[update]`` table the daemon also drives the A/B update engine (firmware.engine): ``boot()`` once per
start, a ``hub-connected`` trial probe, and the trial itself on an armed trial boot (commit or roll back). With
``[health] attestation_url`` and a TPM identity it attests how the device booted after connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agent import logging as agent_logging
from agent import memory, systemd
from agent.batching import Forwarder
from agent.config import Config
from agent.filters import Sample
from agent.identity.credentials import HubCredentials
from agent.outbox import Outbox
from agent.sampler import Sampler, SensorLike
from agent.uplink import HubUplink

log = logging.getLogger(__name__)

EX_CONFIG = 78          # sysexits: configuration error; the unit does not restart on it
EX_UNAVAILABLE = 69     # a required service (state directory, hardware) is unavailable
SHUTDOWN_GRACE_S = 5.0  # how long a stopping agent keeps sending before it leaves the rest in the outbox
UPLINK_CLOSE_S = 12.0   # how long the SDK client gets to shut down (the uplink bounds it at 10 s itself)
MANAGEMENT_STOP_S = 5.0  # how long cloud management gets to finish its current step at shutdown
TRIAL_PROBE_INTERVAL_S = 1.0   # how often the trial boot's probes are polled (the deadline is trial_deadline)
ATTESTATION_TIMEOUT_S = 30.0
MEMORY_POLL_S = 1.0     # how often the outbox depth is checked for a drained backlog (agent.memory)


class StartupError(RuntimeError):
    """The agent cannot start; the message says what to fix. ``exit_code`` follows sysexits."""

    def __init__(self, message: str, exit_code: int = EX_UNAVAILABLE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Daemon:
    """The running agent, and the AgentContext cloud management sees (agent.context)."""

    def __init__(self, config: Config, *, sensors: Sequence[SensorLike] | None = None, platform: Any = None,
                 credentials: Callable[[bool], HubCredentials] | None = None, uplink: Any = None,
                 clock: Callable[[], float] = time.time, attach_management: bool = True,
                 update_engine: Any = None) -> None:
        self.config = config
        self.state_dir = Path(config.device.state_dir)
        self.platform = platform
        self._sensor_list = sensors
        self._credentials = credentials or self._resolve_credentials
        self._clock = clock
        self._attach_management = attach_management
        self.outbox = Outbox(config.outbox_path, config.telemetry.outbox_max_bytes, clock=clock)
        self.uplink = uplink
        self.sensors: Sampler | None = None
        self.forwarder: Forwarder | None = None
        self.management: Any = None
        self._stop = asyncio.Event()
        self._reboot_after_stop: str | None = None
        self._background: set[asyncio.Task] = set()
        self.started_at = 0.0
        # A/B updates: the engine (None without an [update] table), this start's BootReport, the trial's outcome.
        self.updates: Any = update_engine
        self.boot_report: Any = None
        self.trial_report: Any = None
        self.firmware_slot: str | None = None   # deviceInfo.firmwareSlot (agent.management reads it)
        self.attestation: dict | None = None    # the last health attestation verdict

    # ---- AgentContext ----------------------------------------------------------------------------------------

    def outbox_stats(self) -> dict:
        stats = self.outbox.stats().as_dict()
        if self.forwarder is not None:
            stats["billed_units"] = self.forwarder.billed_units
            stats["send_retries"] = self.forwarder.retries
        if isinstance(self.uplink, HubUplink):
            stats["uplink"] = self.uplink.stats.as_dict()
        return stats

    def emit(self, body: dict, properties: Mapping[str, str]) -> None:
        """Queue an event (an alert, a health report) through the outbox: same durability as telemetry."""
        text = json.dumps(body, separators=(",", ":"), default=str)
        kind = str(properties.get("kind", "event"))
        self._spawn(self._store_event(text, kind, dict(properties)))

    def request_reboot(self, delay_s: float, reason: str) -> None:
        log.warning("reboot requested in %.0f s: %s", delay_s, reason)
        self._spawn(self._reboot_later(delay_s, reason))

    def request_reprovision(self, reason: str) -> None:
        log.warning("re-provisioning requested: %s", reason)
        if isinstance(self.uplink, HubUplink):
            self.uplink.reprovision()

    def set_log_level(self, level: str) -> None:
        agent_logging.set_level(level)

    # ---- lifecycle -------------------------------------------------------------------------------------------

    def stop(self, reason: str = "") -> None:
        if not self._stop.is_set():
            log.info("stopping%s", f": {reason}" if reason else "")
            self._stop.set()

    async def run(self) -> int:
        """Run until stopped; returns the process exit code."""
        self.started_at = self._clock()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop, signal.Signals(sig).name)
        try:
            await self._start()
        except StartupError as exc:
            log.error("%s", exc)
            systemd.notify(f"STATUS=failed: {exc}")
            self.outbox.close()
            return exc.exit_code
        tasks = [
            asyncio.create_task(self.uplink.run(), name="roost-uplink"),
            asyncio.create_task(self.forwarder.run(), name="roost-forwarder"),
            asyncio.create_task(self.sensors.run(), name="roost-sampler"),
        ]
        self._start_update_follow_up()
        if self.config.health.attestation_url and self.config.identity.method == "tpm":
            self._spawn(self._attest_after_connect())
        self._spawn(self._release_memory_after_backlogs())
        watchdog = asyncio.create_task(self._watchdog(tasks), name="roost-watchdog")
        systemd.ready(self._status_line())
        log.info("roost agent running: %d sensors, outbox %s", len(self.sensors.sensor_ids()), self.outbox.path)
        stop_wait = asyncio.create_task(self._stop.wait())
        done, _ = await asyncio.wait([stop_wait, *tasks], return_when=asyncio.FIRST_COMPLETED)
        failed = [t for t in done if t is not stop_wait and not t.cancelled() and t.exception() is not None]
        for task in failed:
            log.error("%s stopped unexpectedly: %r", task.get_name(), task.exception())
        await self._shutdown(tasks, watchdog, stop_wait)
        if self._reboot_after_stop:
            self._run_reboot(self._reboot_after_stop)
        return 1 if failed else 0

    async def _start(self) -> None:
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StartupError(f"cannot create state directory {self.state_dir}: {exc.strerror}; set "
                               "device.state_dir to a writable directory (systemd: StateDirectory=roost)") from exc
        from agent.outbox import OutboxError

        try:
            await asyncio.to_thread(self.outbox.open)
        except OutboxError as exc:
            raise StartupError(str(exc)) from exc
        stats = self.outbox.stats()
        if stats.depth:
            log.info("outbox holds %d readings from before; they are sent first", stats.depth)
        sensors = self._sensor_list if self._sensor_list is not None else self._open_hardware()
        self.sensors = Sampler(sensors, self.config, self._store, clock=self._clock)
        if self.uplink is None:
            self.uplink = HubUplink(self.config.hub, self._credentials, clock=self._clock)
        tel = self.config.telemetry
        self.forwarder = Forwarder(self.outbox, self.uplink, batch_max_bytes=tel.batch_max_bytes,
                                   batch_max_delay_s=tel.batch_max_delay_s, max_in_flight=tel.max_in_flight,
                                   clock=self._clock)
        await self._boot_updates()
        if self._attach_management:
            self._attach()
            self._register_methods()

    # ---- A/B updates -----------------------------------------------------------------------------------------

    async def _boot_updates(self) -> None:
        """Reconcile the update state with what booted. A broken update setup is logged, never fatal: the
        device keeps collecting readings, and an uncommitted trial boot falls back on the next reboot anyway."""
        if self.updates is None and self.config.update is None:
            return
        from firmware.errors import FirmwareError
        from firmware.health import connected_probe

        try:
            if self.updates is None:
                from firmware.engine import UpdateEngine

                self.updates = UpdateEngine(self.config.update)
            self.updates.health.register("hub-connected", connected_probe(self.uplink))
            self.boot_report = await asyncio.to_thread(self.updates.boot)
        except (FirmwareError, OSError, ValueError) as exc:
            log.error("A/B updates are off for this run: %s; fix the [update] table (roost config check) or the "
                      "boot loader files it names", exc)
            self.updates = None
            return
        report = self.boot_report
        self.firmware_slot = report.slot
        log.info("booted slot %s (%s): %s", report.slot, report.mode, report.detail)

    def _start_update_follow_up(self) -> None:
        report = self.boot_report
        if self.updates is None or report is None:
            return
        if report.action == "health-check":
            self._spawn(self._run_trial())
        elif report.action == "reboot":
            self._spawn(self._recovery_reboot(report.detail))

    async def _run_trial(self) -> None:
        from firmware.errors import FirmwareError

        deadline = self.updates.config.trial_deadline
        log.info("trial boot of slot %s: commit once the health probes pass (deadline %.0f s)",
                 self.boot_report.slot, deadline)
        try:
            self.trial_report = await self.updates.arun_trial(deadline, min(TRIAL_PROBE_INTERVAL_S, deadline or 1.0))
        except FirmwareError as exc:
            log.error("trial boot of slot %s: %s", self.boot_report.slot, exc)
            return
        if self.trial_report.ok:
            log.info("trial boot of slot %s passed; committed", self.boot_report.slot)
        else:
            log.error("trial boot of slot %s failed (%s); rolled back", self.boot_report.slot,
                      self.trial_report.failures())

    async def _recovery_reboot(self, why: str) -> None:
        from firmware.errors import FirmwareError

        log.warning("rebooting for the update engine: %s", why)
        try:
            await asyncio.to_thread(self.updates.reboot)
        except FirmwareError as exc:
            log.error("update engine reboot failed: %s", exc)

    # ---- health attestation ----------------------------------------------------------------------------------

    async def _attest_after_connect(self) -> None:
        """Attest once per start, after the first connection (the service writes the verdict to the twin)."""
        while not await self.uplink.wait_connected(None):
            await asyncio.sleep(1.0)
        with contextlib.suppress(Exception):   # attest_health logged it; telemetry goes on regardless
            await self.attest_health()

    async def attest_health(self) -> dict:
        """Run one TPM health attestation; returns the verdict (raises IdentityError and kin on failure)."""
        from agent.tpm.health import attest

        health = self.config.health
        ca_pem = Path(health.attestation_ca_file).read_text() if health.attestation_ca_file else None
        try:
            verdict = await asyncio.to_thread(attest, self.config.identity.tpm_tcti, health.attestation_url,
                                              ca_pem=ca_pem, timeout_s=ATTESTATION_TIMEOUT_S)
        except Exception as exc:
            log.error("health attestation against %s failed: %s", health.attestation_url, exc)
            raise
        self.attestation = verdict
        log.info("health attestation: %s", verdict.get("verdict", verdict))
        return verdict

    async def _attest_method(self, payload: Any) -> tuple[int, Any]:
        try:
            return 200, await self.attest_health()
        except OSError as exc:
            return 503, {"error": f"attestation service unreachable: {exc}",
                         "fix": "check health.attestation_url and the network"}
        except Exception as exc:
            fix = getattr(exc, "fix", "") or "check health.attestation_url and the TPM"
            return 502, {"error": f"{type(exc).__name__}: {exc}", "fix": str(fix)}

    def _register_methods(self) -> None:
        add = getattr(self.management, "add_method", None)
        if add is None:
            return
        if self.config.health.attestation_url and self.config.identity.method == "tpm":
            add("attestHealth", self._attest_method)

    def _open_hardware(self) -> list[SensorLike]:
        from hal.board import load_board
        from hal.platform import load_platform
        from hal.sensors import open_sensors

        device = self.config.device
        try:
            board = load_board(device.board)
            if self.platform is None:
                self.platform = load_platform(device.platform, board)
            return list(open_sensors(board, self.platform))
        except (KeyError, ValueError, OSError, RuntimeError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            raise StartupError(f"cannot set up board {device.board!r} on platform {device.platform!r}: {message}; "
                               "check device.board and device.platform (roost config check)", EX_CONFIG) from exc

    def _attach(self) -> None:
        try:
            from agent import management
        except ImportError:
            log.info("cloud management is not installed; telemetry only")
            return
        attach = getattr(management, "attach", None)
        if attach is None:
            log.info("cloud management has no attach(); telemetry only")
            return
        try:
            self.management = attach(self)
        except Exception:
            # Telemetry must keep flowing even when twin/method handling cannot start.
            log.exception("cloud management failed to start; telemetry continues without it")
        # Management may add log handlers of its own (a buffer for diagnostics bundles): they get the filter too.
        agent_logging.install_filter()

    def _resolve_credentials(self, force: bool) -> HubCredentials:
        from agent import identity

        return identity.resolve(self.config, self.state_dir, force=force)

    async def _shutdown(self, tasks: list[asyncio.Task], watchdog: asyncio.Task, stop_wait: asyncio.Task) -> None:
        systemd.stopping("flushing the outbox")
        self.sensors.stop()
        await self._cancel(tasks[2:])
        await self.sensors.close()
        with contextlib.suppress(Exception):
            await self.sensors.flush()
        self.forwarder.flushing = True
        self.forwarder.notify()
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while self.uplink.connected and self.outbox.stats().depth and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.forwarder.stop()
        await self._stop_management()
        await self.uplink.stop()
        # Let both finish on their own first: the forwarder hands its acknowledgements to the outbox, and the
        # uplink shuts the SDK client down (its handler tasks live on this loop). Cancel only what overstays.
        await asyncio.wait(tasks[:2], timeout=UPLINK_CLOSE_S)
        await self._cancel([tasks[1], tasks[0], watchdog, stop_wait, *self._background])
        left = self.outbox.stats()
        await asyncio.to_thread(self.outbox.close)
        if self.platform is not None and hasattr(self.platform, "close"):
            with contextlib.suppress(Exception):
                self.platform.close()
        log.info("stopped; %d readings wait in the outbox for the next start", left.depth)

    async def _stop_management(self) -> None:
        # Before the client closes: a management step in flight (a twin report) finishes or is cancelled here.
        stop = getattr(self.management, "stop", None)
        if stop is None:
            return
        try:
            await asyncio.wait_for(stop(), MANAGEMENT_STOP_S)
        except Exception:
            log.exception("cloud management did not stop cleanly")

    @staticmethod
    async def _cancel(tasks: Sequence[asyncio.Task]) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _watchdog(self, tasks: Sequence[asyncio.Task]) -> None:
        """Ping systemd's watchdog from the event loop while the pipeline's tasks are alive."""
        interval = systemd.watchdog_interval()
        status_every = 30.0
        last_status = 0.0
        while True:
            await asyncio.sleep(min(interval or status_every, status_every))
            if interval and all(not t.done() for t in tasks):
                systemd.watchdog_ping()
            now = time.monotonic()
            if now - last_status >= status_every:
                systemd.status(self._status_line())
                last_status = now

    async def _release_memory_after_backlogs(self) -> None:
        """Give memory back once a backlog has drained, so the agent returns to its idle footprint."""
        watch = memory.BacklogWatch()
        while True:
            if watch.drained(self.outbox.stats().depth):
                await self.outbox.arelease_memory()     # first, so the trim can return SQLite's pages too
                self.release_memory()
            await asyncio.sleep(MEMORY_POLL_S)

    def release_memory(self) -> bool:
        """Hand memory freed by a burst of work back to the kernel; False where the C library cannot."""
        released = memory.release_freed_memory()
        log.debug("backlog drained: %s", "freed heap pages returned to the kernel" if released
                  else "this C library cannot return freed heap pages")
        return released

    def _status_line(self) -> str:
        stats = self.outbox.stats()
        state = "connected" if self.uplink is not None and self.uplink.connected else "offline"
        return f"{state}; outbox {stats.depth} readings; sent {stats.counters['sent_readings']}"

    # ---- pipeline plumbing -----------------------------------------------------------------------------------

    async def _store(self, samples: list[Sample]) -> None:
        await self.outbox.aadd_many([s.to_json() for s in samples],
                                    sensors=[(s.sensor_id, s.units_json()) for s in samples])
        if self.forwarder is not None:
            self.forwarder.notify()

    async def _store_event(self, body: str, kind: str, properties: dict[str, str]) -> None:
        properties.pop("kind", None)
        await self.outbox.aadd_many([body], kind=kind, props=properties)
        if self.forwarder is not None:
            self.forwarder.notify()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _reboot_later(self, delay_s: float, reason: str) -> None:
        await asyncio.sleep(max(0.0, delay_s))
        self._reboot_after_stop = reason
        self.stop(f"reboot: {reason}")

    def _run_reboot(self, reason: str) -> None:
        command = shlex.split(self.config.management.reboot_command)
        log.warning("rebooting (%s): %s", reason, " ".join(command))
        try:
            subprocess.run(command, check=True, timeout=60, env={**os.environ, "ROOST_REBOOT_REASON": reason})
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("reboot command %r failed: %s; fix management.reboot_command", command, exc)

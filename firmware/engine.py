"""The update engine: install, trial boot, commit, rollback and the golden fallback, as one explicit state machine.

The daemon (and `roost update`) use only this class::

    engine = UpdateEngine(UpdateConfig.load())
    report = engine.boot()                 # once per boot: reconcile state with what the boot loader started
    if report.action == "health-check":
        engine.run_trial()                 # probes pass -> mark_good(); fail or deadline -> rollback()
    engine.install("https://.../os-1.5.bundle", reboot=True)

Write ordering is what makes power cuts safe (docs/updates.md walks through every prefix):
install   slot=writing -> payload (verified blocks) -> fsync -> slot=installed + pending armed -> boot selector
commit    boot selector -> state (a cut in between is finished by boot(): primary == booted trial slot)
rollback  state (slot bad) -> boot selector (a cut in between: the trial was one-shot, the old slot boots)
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from firmware import boot as boot_backends
from firmware import keys
from firmware.boot.base import BootBackend, Rebooter
from firmware.bundle import read_envelope, verify_envelope
from firmware.config import UpdateConfig
from firmware.durable import Storage, WriteHook
from firmware.errors import BootError, FirmwareError, PayloadError, PolicyError, StateError
from firmware.health import HealthChecks, HealthReport
from firmware.installer import InstallStats, Progress, verify_payload, write_payload
from firmware.manifest import Manifest, format_time
from firmware.source import HttpSource, open_source
from firmware.state import ARMED, BAD, GOOD, INSTALLED, TRIAL, WRITING, SlotRecord, StateStore, UpdateState

log = logging.getLogger(__name__)


def _exclusive(method):
    """Run an engine method under the update lock (see StateStore.locked)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.store.locked():
            return method(self, *args, **kwargs)

    return wrapper

HTTP_RETRIES = 5
FAILED_BUNDLES_KEPT = 16

# Engine modes reported by status() and boot()
NORMAL = "normal"          # running a committed slot, nothing pending
ARMED_MODE = "armed"       # an installed slot waits for its trial reboot
TRIAL_MODE = "trial"       # running the trial boot; health checks decide
GOLDEN = "golden"          # running the golden image: report and wait for a good bundle
RECOVERY = "recovery"      # running something state does not vouch for; a reboot to a good slot is needed


@dataclass
class BootReport:
    slot: str
    trial: bool
    mode: str
    action: str | None = None      # None, "health-check" (call run_trial) or "reboot" (call reboot now)
    detail: str = ""


@dataclass
class InstallResult:
    slot: str
    version: str
    manifest_id: str
    already_installed: bool = False
    stats: InstallStats = field(default_factory=InstallStats)
    bytes_read: int = 0


class UpdateEngine:
    def __init__(self, config: UpdateConfig, *, storage: Storage | None = None, write_hook: WriteHook | None = None,
                 backend: BootBackend | None = None, rebooter: Rebooter | None = None,
                 health: HealthChecks | None = None, now: Callable[[], datetime] | None = None,
                 http_options: dict | None = None) -> None:
        self.config = config
        self.storage = storage or Storage(write_hook)
        self.backend = backend or boot_backends.create(config.boot, config.boot_options, self.storage, rebooter)
        self.store = StateStore(config.state_dir, self.storage)
        self.health = health or HealthChecks()
        self.now = now or (lambda: datetime.now(UTC))
        self.http_options = {"timeout": config.http_timeout, "retries": HTTP_RETRIES} | (http_options or {})

    # ---- helpers -------------------------------------------------------------------------------------------

    def _load(self) -> UpdateState:
        state = self.store.load()
        if not self.store.path.exists():
            # first run on this device: the slot that booted is the factory image, and it is good
            booted = self.backend.booted().slot
            for name in {booted, "golden"} & set(self.config.slots):
                state.move(name, GOOD).version = "factory"    # the golden slot is written at the factory
            state.highest_security_version = self.config.min_security_version
        return state

    def _result(self, state: UpdateState, result: str, detail: str, **extra: object) -> None:
        state.last_result = {"result": result, "detail": detail, "time": format_time(self.now()), **extra}
        log.info("update %s: %s", result, detail)

    def _other(self, slot: str) -> str:
        return "b" if slot == "a" else "a"

    def _fail_trial(self, state: UpdateState, reason: str) -> None:
        pending = state.pending or {}
        slot = pending.get("slot", "")
        state.move(slot, BAD)
        state.failed_trials += 1
        if pending.get("manifest_id") and pending["manifest_id"] not in state.failed_bundles:
            state.failed_bundles = [*state.failed_bundles, pending["manifest_id"]][-FAILED_BUNDLES_KEPT:]
        state.pending = None
        self._result(state, "rolled-back", reason, slot=slot, version=state.slot(slot).version,
                     failed_trials=state.failed_trials)

    def _finish_commit(self, state: UpdateState) -> None:
        pending = state.pending or {}
        rec = state.move(pending["slot"], GOOD)
        state.highest_security_version = max(state.highest_security_version, rec.security_version)
        state.failed_trials = 0
        state.pending = None
        self._result(state, "committed", f"slot {pending['slot']} runs {rec.version} and passed its health checks",
                     slot=pending["slot"], version=rec.version)

    def _golden_needed(self, state: UpdateState, booted: str) -> bool:
        return (state.failed_trials >= self.config.max_failed_trials and "golden" in self.config.slots
                and booted != "golden")

    def _go_golden(self, state: UpdateState, why: str) -> BootReport:
        booted = self.backend.booted()
        self._result(state, "golden", why, failed_trials=state.failed_trials)
        self.store.save(state)
        self.backend.set_primary("golden")
        return BootReport(booted.slot, booted.trial, RECOVERY, "reboot", why)

    # ---- boot-time reconciliation -------------------------------------------------------------------------

    @_exclusive
    def boot(self) -> BootReport:
        """Reconcile the state file with what the boot loader started; call once per boot, before anything else.

        Idempotent: calling it twice in one boot gives the same report and writes nothing the second time.
        """
        info = self.backend.booted()
        if info.slot not in self.config.slots:
            raise BootError(f"the boot loader started slot {info.slot!r}, which [update.slots] does not define")
        fresh = not self.store.path.exists()
        state = self._load()
        pending = state.pending
        if pending is not None:
            if info.slot == pending["slot"] and info.trial:
                if pending["phase"] != TRIAL:
                    pending["phase"] = TRIAL
                    self.store.save(state)
                return BootReport(info.slot, True, TRIAL_MODE, "health-check",
                                  f"trial boot of {state.slot(info.slot).version}; health checks decide")
            if info.slot == pending["slot"] and not info.trial and self.backend.primary() == info.slot:
                # power was cut after mark_good() switched the boot loader but before the state file followed
                self._finish_commit(state)
                self.store.save(state)
            elif pending["phase"] == ARMED and pending.get("boot_id") == info.boot_id:
                pass   # armed during this very boot; the trial reboot has not happened yet
            else:
                self._fail_trial(state, f"the trial boot of slot {pending['slot']} did not come up (hang, watchdog "
                                        f"reset or power loss); slot {info.slot} is running again")
                self.store.save(state)
                if self._golden_needed(state, info.slot):
                    return self._go_golden(state, f"{state.failed_trials} trial boots failed in a row; booting the "
                                                  "golden image, which waits for a good bundle")
                if self.backend.primary() != info.slot:
                    self.backend.set_primary(info.slot)
        elif fresh:
            self.store.save(state)
        if state.pending is None and self._golden_needed(state, info.slot):
            # the limit was reached but power was cut before the selector switched to the golden image
            return self._go_golden(state, f"{state.failed_trials} trial boots failed in a row; booting the golden "
                                          "image, which waits for a good bundle")
        if info.trial and state.pending is None:
            return BootReport(info.slot, True, RECOVERY, "reboot",
                              "trial boot that no install armed; rebooting into the primary slot")
        rec = state.slot(info.slot)
        if info.slot == "golden":
            return BootReport(info.slot, False, GOLDEN, None, "running the golden image; install a good bundle")
        if rec.status != GOOD:
            other = self._other(info.slot)
            target = other if state.slot(other).status == GOOD else "golden"
            why = f"slot {info.slot} is {rec.status}, not a committed image; switching to slot {target}"
            if target not in self.config.slots:
                return BootReport(info.slot, False, RECOVERY, None, why + ", but no golden slot is configured")
            self._result(state, "recovery", why)
            self.store.save(state)
            self.backend.set_primary(target)
            return BootReport(info.slot, False, RECOVERY, "reboot", why)
        if state.pending is not None:
            # no automatic reboot: when to leave a running system is the operator's (or the cloud's) decision
            return BootReport(info.slot, False, ARMED_MODE, None, f"slot {state.pending['slot']} waits for its trial "
                                                                   "boot: `roost update install --reboot` or reboot()")
        return BootReport(info.slot, False, NORMAL, None, f"running {rec.version} from slot {info.slot}")

    # ---- install ------------------------------------------------------------------------------------------

    @_exclusive
    def install(self, location: str, *, reboot: bool = False, retry_failed: bool = False,
                progress: Progress | None = None, delta: bool | None = None,
                verify_first: bool | None = None) -> InstallResult:
        """Verify and install a bundle from a file path or an http(s) URL into the inactive slot, then arm a
        one-time trial boot of it (``reboot=True`` also reboots into it). Raises a FirmwareError subclass
        with a message for the user; on any error the running slot and the boot selection are unchanged.

        ``verify_first`` (default: the config's ``verify_first``) hashes the whole payload before writing
        anything, so even a bundle tampered in its last byte leaves the inactive slot exactly as it was; the
        write pass verifies every block again, so a file changed in between is still caught. It costs a second
        read (a second download for URLs)."""
        info = self.backend.booted()
        state = self._load()
        self._promote_trial(state, info)
        pending = state.pending
        if pending is not None and pending["phase"] == ARMED and pending.get("boot_id") != info.boot_id:
            self.boot()                 # a reboot happened since the trial was armed: record its outcome first
            state = self._load()
        if state.pending is not None and state.pending["phase"] == TRIAL:
            raise StateError(f"slot {state.pending['slot']} is in its trial boot; run `roost update mark-good` or "
                             "`roost update rollback` before installing another bundle")
        trusted = keys.load_trusted(self.config.keys_dir)
        source = open_source(location, **self.http_options) if str(location).startswith(("http://", "https://")) \
            else open_source(location)
        try:
            envelope = read_envelope(source.read_at)
            manifest = verify_envelope(envelope, trusted, self.config.signature_threshold)
            manifest_id, payload_offset = envelope.manifest_id, envelope.payload_offset
            del envelope    # the raw manifest is 1 MB for a 1 GiB image; the parsed digests are all we keep
            target = self._target(manifest, info.slot)
            self._check_policy(manifest, manifest_id, state, retry_failed)
            slot = self.config.slots[target]
            slot.check_fits(manifest.image_size)
            expected = payload_offset + manifest.image_size
            if source.total_size is not None and source.total_size != expected:
                kind = "truncated" if source.total_size < expected else "longer than its manifest says"
                raise PayloadError(f"bundle is {source.total_size} bytes but its signed manifest accounts for "
                                   f"{expected}: the payload is {kind}. Nothing was written")
            source.limit(expected + HTTP_RETRIES * manifest.block_size)

            running = state.slot(info.slot)
            if running.manifest_id == manifest_id and running.status == GOOD:
                return InstallResult(info.slot, manifest.version, manifest_id, already_installed=True,
                                     bytes_read=source.bytes_read)
            if self.config.verify_first if verify_first is None else verify_first:
                if isinstance(source, HttpSource):
                    source.limit(2 * expected + 2 * HTTP_RETRIES * manifest.block_size)
                verify_payload(source, payload_offset, manifest)

            if state.pending is not None:   # an earlier install armed a trial that never ran: disarm it first
                self.backend.set_primary(info.slot)
                state.pending = None
            state.move(target, WRITING)
            state.slots[target] = SlotRecord(WRITING, manifest.version, manifest.security_version,
                                             manifest_id, manifest.golden)
            self.store.save(state)
            use_delta = isinstance(source, HttpSource) if delta is None else delta
            # delta: keep what the target already holds (resume), copy what the running slot holds, fetch the rest
            reuse = [self.config.slots[info.slot].path] if use_delta else []
            try:
                stats = write_payload(source, payload_offset, manifest, slot, self.storage,
                                      reuse=reuse, progress=progress, resume=use_delta)
            except FirmwareError as exc:
                self._result(state, "install-failed", str(exc), slot=target, version=manifest.version)
                self.store.save(state)   # the slot stays "writing": never bootable
                raise
            result = InstallResult(target, manifest.version, manifest_id, stats=stats,
                                   bytes_read=source.bytes_read)
        finally:
            source.close()

        if manifest.golden:
            state.move(target, GOOD)
            self._result(state, "installed-golden", f"golden image {manifest.version} written to the golden slot",
                         slot=target, version=manifest.version)
            self.store.save(state)
            return result
        state.move(target, INSTALLED)
        state.pending = {"slot": target, "from": info.slot, "phase": ARMED, "manifest_id": manifest_id,
                         "boot_id": info.boot_id}
        self._result(state, "installed", f"{manifest.version} verified in slot {target}; trial boot armed",
                     slot=target, version=manifest.version)
        self.store.save(state)
        self.backend.arm_trial(target, info.slot)
        if reboot:
            self.backend.reboot(trial=True)
        return result

    def _target(self, manifest: Manifest, booted: str) -> str:
        if manifest.golden:
            if "golden" not in self.config.slots:
                raise PolicyError("this is a golden-image bundle but no golden slot is configured in [update.slots]")
            if booted == "golden":
                raise PolicyError("the golden image is running; it cannot overwrite itself. Install a regular "
                                  "bundle into slot a first")
            return "golden"
        return "a" if booted == "golden" else self._other(booted)

    def _check_policy(self, manifest: Manifest, manifest_id: str, state: UpdateState, retry_failed: bool) -> None:
        if self.config.board not in manifest.compatible:
            raise PolicyError(f"bundle is for {', '.join(manifest.compatible)}, this device is {self.config.board}; "
                              "build the bundle with --compatible " + self.config.board)
        floor = max(state.highest_security_version, self.config.min_security_version)
        if manifest.security_version < floor:
            raise PolicyError(f"bundle {manifest.version} has security version {manifest.security_version}, below "
                              f"this device's floor {floor} (the highest committed so far): downgrade refused")
        now = self.now()
        if manifest.expires <= now:
            raise PolicyError(f"bundle manifest expired at {format_time(manifest.expires)} (now {format_time(now)}); "
                              "stale metadata is refused. Re-sign it with a later --expires")
        if manifest_id in state.failed_bundles and not retry_failed:
            raise PolicyError(f"bundle {manifest.version} ({manifest_id}) already failed a trial boot on this device; "
                              "publish a fixed bundle, or pass --retry-failed to try the same one again")

    # ---- trial outcome ------------------------------------------------------------------------------------

    def _promote_trial(self, state: UpdateState, info) -> None:
        """In the trial boot before boot() ran (e.g. `roost update mark-good` by hand), treat the pending
        install as running its trial."""
        pending = state.pending
        if pending is not None and pending["phase"] == ARMED and info.trial and info.slot == pending["slot"]:
            pending["phase"] = TRIAL

    @_exclusive
    def mark_good(self) -> None:
        """Commit the running trial slot: the boot loader first, then the state file."""
        info = self.backend.booted()
        state = self._load()
        self._promote_trial(state, info)
        pending = state.pending
        if pending is None or pending["phase"] != TRIAL or info.slot != pending["slot"] or not info.trial:
            raise StateError(f"nothing to mark good: slot {info.slot} is running "
                             f"{'a trial boot' if info.trial else 'normally'} and no trial of it is pending")
        self.backend.commit(info.slot, pending["from"])
        self._finish_commit(state)
        self.store.save(state)

    @_exclusive
    def rollback(self, reason: str = "rollback requested", *, reboot: bool = False) -> str:
        """Leave the trial slot (or, outside a trial, the running slot) for the previous good one.

        Returns the slot that will boot next."""
        info = self.backend.booted()
        state = self._load()
        self._promote_trial(state, info)
        pending = state.pending
        if pending is not None and pending["phase"] == TRIAL and info.slot == pending["slot"]:
            back = pending["from"]
            self._fail_trial(state, reason)
            if self._golden_needed(state, back):
                back = "golden"
                self._result(state, "golden", f"{reason}; {state.failed_trials} trial boots failed in a row")
            self.store.save(state)
            self.backend.set_primary(back)
        elif pending is not None and pending["phase"] == ARMED and info.slot == pending["from"]:
            back = info.slot
            self.backend.set_primary(info.slot)
            state.pending = None
            self._result(state, "cancelled", f"{reason}; the armed trial of slot {pending['slot']} was cancelled")
            self.store.save(state)
        else:
            back = self._other(info.slot) if info.slot != "golden" else ""
            if not back or state.slot(back).status != GOOD:
                raise StateError(f"no slot to roll back to: slot {back or 'a/b'} holds no committed image")
            self.backend.set_primary(back)
            self._result(state, "rolled-back", f"{reason}; slot {back} boots next", slot=back)
            self.store.save(state)
        if reboot:
            self.backend.reboot(trial=False)
        return back

    def run_trial(self, deadline: float | None = None, interval: float = 2.0, *, reboot: bool = True) -> HealthReport:
        """Run the health probes of a trial boot: all pass -> mark_good(); otherwise rollback() (and reboot)."""
        report = self.health.run(self.config.trial_deadline if deadline is None else deadline, interval)
        if report.ok:
            self.mark_good()
        else:
            self.rollback(f"health checks failed: {report.failures()}", reboot=reboot)
        return report

    async def arun_trial(self, deadline: float | None = None, interval: float = 2.0, *,
                         reboot: bool = True) -> HealthReport:
        """run_trial() for the agent's event loop: async probes allowed; commit/rollback run in a thread."""
        import asyncio

        report = await self.health.arun(self.config.trial_deadline if deadline is None else deadline, interval)
        if report.ok:
            await asyncio.to_thread(self.mark_good)
        else:
            await asyncio.to_thread(self.rollback, f"health checks failed: {report.failures()}", reboot=reboot)
        return report

    def reboot(self, trial: bool | None = None) -> None:
        """Reboot; by default into the trial boot when one is armed, so an armed update is never skipped."""
        if trial is None:
            pending = self.store.load().pending
            trial = pending is not None and pending["phase"] == ARMED
        self.backend.reboot(trial=trial)

    # ---- reporting ----------------------------------------------------------------------------------------

    def status(self) -> dict:
        info = self.backend.booted()
        state = self._load()
        try:
            primary = self.backend.primary()
        except BootError as exc:
            primary = f"unknown ({exc})"
        pending = state.pending
        if info.slot == "golden":
            mode = GOLDEN
        elif pending is not None and info.trial and info.slot == pending["slot"]:
            mode = TRIAL_MODE
        elif pending is not None:
            mode = ARMED_MODE
        else:
            mode = NORMAL if state.slot(info.slot).status == GOOD else RECOVERY
        return {
            "mode": mode,
            "board": self.config.board,
            "boot_backend": self.backend.name,
            "booted_slot": info.slot,
            "trial_boot": info.trial,
            "primary_slot": primary,
            "slots": {name: asdict(rec) for name, rec in sorted(state.slots.items())},
            "pending": state.pending,
            "security_version_floor": max(state.highest_security_version, self.config.min_security_version),
            "failed_trials": state.failed_trials,
            "last_result": state.last_result,
        }

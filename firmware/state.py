"""The update state file (<state_dir>/update/state.json): what each slot holds and what is in progress.

The boot selector (autoboot.txt, the U-Boot environment) is the truth about *what boots*; this file is the truth
about *what each slot contains* and *what the updater is in the middle of*. Every change is one atomic replace,
and the engine orders its writes so that any prefix of them, followed by a reboot, reconciles to a consistent
state (see docs/updates.md, "state machine").
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from firmware.durable import Storage
from firmware.errors import StateError

# Slot statuses
EMPTY = "empty"          # never written by roost (or contents unknown)
WRITING = "writing"      # an install was streaming into it; contents partial, never boot it
INSTALLED = "installed"  # fully written and verified, trial not yet passed
GOOD = "good"            # booted and passed health checks (committed), or a verified golden image
BAD = "bad"              # failed its trial boot; kept for diagnostics until overwritten

# The slot state machine. Any slot that is not running may be overwritten (-> writing); everything else moves
# only along these edges. EMPTY -> GOOD is the factory image adopted on first start.
SLOT_TRANSITIONS: dict[str, frozenset[str]] = {
    EMPTY: frozenset({WRITING, GOOD}),
    WRITING: frozenset({WRITING, INSTALLED, GOOD}),   # GOOD: a golden bundle needs no trial
    INSTALLED: frozenset({WRITING, GOOD, BAD}),       # trial passed / failed
    GOOD: frozenset({WRITING}),
    BAD: frozenset({WRITING}),
}

# Pending phases
ARMED = "armed"          # the boot selector is set for one trial boot of pending["slot"]
TRIAL = "trial"          # we are running in that trial boot; health checks decide


@dataclass
class SlotRecord:
    status: str = EMPTY
    version: str = ""
    security_version: int = 0
    manifest_id: str = ""
    golden: bool = False


@dataclass
class UpdateState:
    slots: dict[str, SlotRecord] = field(default_factory=dict)
    highest_security_version: int = 0
    pending: dict | None = None          # {"slot", "from", "phase", "manifest_id"}
    failed_trials: int = 0               # consecutive, across slots; reset by a commit
    failed_bundles: list[str] = field(default_factory=list)   # manifest ids that failed a trial
    last_result: dict = field(default_factory=dict)

    def slot(self, name: str) -> SlotRecord:
        return self.slots.setdefault(name, SlotRecord())

    def move(self, name: str, status: str) -> SlotRecord:
        """Change a slot's status along SLOT_TRANSITIONS; anything else is a bug, refused before it is saved."""
        record = self.slot(name)
        if status not in SLOT_TRANSITIONS[record.status]:
            raise StateError(f"slot {name} cannot go from {record.status} to {status}; the update state is "
                             "inconsistent. `roost update status` shows it; report this as a bug")
        record.status = status
        return record

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes, where: Path) -> UpdateState:
        try:
            doc = json.loads(raw)
            slots = {name: SlotRecord(**rec) for name, rec in doc.pop("slots").items()}
            return cls(slots=slots, **doc)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StateError(f"update state {where} is unreadable ({type(exc).__name__}: {exc}); it is only written "
                             "by atomic replace, so the disk is damaged. Move it aside to start over (the security "
                             "version floor is then reset to the value in the config)") from None


class StateStore:
    def __init__(self, state_dir: Path, storage: Storage) -> None:
        self.directory = Path(state_dir) / "update"
        self.path = self.directory / "state.json"
        self.storage = storage
        self._lock_fd: int | None = None
        self._depth = 0

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the update lock: one install / commit / rollback at a time across processes (agent and CLI).

        Re-entrant within one engine. The kernel drops an flock when its holder dies, so a crash or power cut
        never leaves a stale lock behind."""
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError("another update operation is running on this device (the agent or another "
                             "`roost update`); wait for it to finish and try again") from None
        self._lock_fd, self._depth = fd, 1
        try:
            yield
        finally:
            self._depth = 0
            self._lock_fd = None
            os.close(fd)    # closing releases the flock

    def load(self) -> UpdateState:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return UpdateState()
        return UpdateState.from_json(raw, self.path)

    def save(self, state: UpdateState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.storage.atomic_write(self.path, state.to_json(), mode=0o600)

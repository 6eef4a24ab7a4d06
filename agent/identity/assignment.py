"""The cached DPS assignment: which hub this device was given and under which device id.

DPS is asked once and the answer reused on every start (DPS has per-enrollment rate limits and is one more
network dependency at boot). The cache is dropped and DPS asked again when the hub rejects the identity, on
request (``roost provision --force``, the ``reprovision`` method), or when the inputs it was derived from change
(identity method, scope, registration id, credentials) -- the ``fingerprint`` records those inputs as a hash, so
the cache file itself holds no secret. It is still written 0600: it says where the device connects.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.identity.secure_files import write_private

CACHE_NAME = "identity/assignment.json"


@dataclass(frozen=True)
class Assignment:
    hostname: str            # assigned IoT Hub
    device_id: str
    registration_id: str
    method: str              # "dps-symmetric", "dps-group", "dps-x509", ...
    fingerprint: str         # hash of the provisioning inputs
    assigned_at: float       # unix seconds
    substatus: str = ""      # DPS substatus: initialAssignment, deviceDataMigrated, reprovisionedToInitialAssignment


def fingerprint(*parts: str | bytes) -> str:
    """A stable hash of provisioning inputs; keys go in only as part of this digest."""
    digest = hashlib.sha256()
    for part in parts:
        raw = part if isinstance(part, bytes) else part.encode()
        digest.update(len(raw).to_bytes(4, "big") + raw)
    return digest.hexdigest()


def cache_path(state_dir: Path) -> Path:
    return Path(state_dir) / CACHE_NAME


def load(state_dir: Path) -> Assignment | None:
    """The cached assignment, or None when there is none or it is unreadable (then DPS is simply asked)."""
    path = cache_path(state_dir)
    try:
        data = json.loads(path.read_text())
        return Assignment(**data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        # A torn or hand-edited cache must not stop the device: DPS knows the answer.
        return None


def save(state_dir: Path, assignment: Assignment) -> None:
    write_private(cache_path(state_dir), json.dumps(asdict(assignment), indent=2, sort_keys=True) + "\n")


def forget(state_dir: Path) -> bool:
    """Drop the cache; True if there was one."""
    path = cache_path(state_dir)
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False

"""The diagnostics bundle: a tar.gz of recent logs and agent state, uploaded with IoT Hub file upload.

What goes in is listed here and nowhere else, and no file that can hold a secret (key files, the rotated
key, connection strings) is ever read: the bundle is built from state summaries, not by copying directories.
``tarfile`` (about 1 MB with its compressors) is imported only when a bundle is built.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tarfile


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_bundle(sections: Mapping[str, Any], logs: str | None, *, now: float | None = None,
                 max_bytes: int = 4 * 1024 * 1024) -> bytes:
    """``sections`` (name -> JSON-able) as ``<name>.json`` files plus ``agent.log``; trims logs to fit."""
    import tarfile

    now = time.time() if now is None else now
    log_bytes = (logs or "").encode()
    while True:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, value in sections.items():
                _add(tar, f"diagnostics/{name}.json",
                     json.dumps(value, indent=2, sort_keys=True, default=str).encode(), now)
            if logs is not None:
                _add(tar, "diagnostics/agent.log", log_bytes, now)
        data = buf.getvalue()
        if len(data) <= max_bytes or not log_bytes:
            return data
        # Keep the newest half of the log and try again: the latest lines explain the current state.
        log_bytes = log_bytes[len(log_bytes) // 2:]


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

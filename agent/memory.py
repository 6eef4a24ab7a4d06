"""Giving memory back to the operating system after a burst of work, so the agent's footprint stays flat.

Draining a backlog (readings stored while the device was offline) allocates and frees many small objects in a
few seconds. glibc's malloc keeps freed memory in its heaps for reuse instead of returning it, so without help a
long-running agent would stay at its high-water mark after every outage. ``malloc_trim(0)`` hands the free
pages of every heap back to the kernel; it takes well under a millisecond on an agent-sized heap.

Measured on the emulated rpi-4b with a 100,000-reading backlog (docs/configuration.md, "Memory"): trimming
once the backlog has drained gives back about 0.5 MB; the ``MALLOC_ARENA_MAX`` setting, often the first advice
for threaded daemons, changed nothing beyond the noise (~0.1 MB), so the agent does not set it.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

#: A backlog smaller than this is ordinary traffic, not a burst worth giving memory back after.
BACKLOG_MIN = 1_000
#: A backlog counts as drained once what is left of it is at most this fraction of its peak.
DRAINED_FRACTION = 0.01


def libc_version() -> str | None:
    """``"glibc 2.36"`` on glibc, None on any other C library (musl, macOS), where there is nothing to trim."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, looked up once; None off glibc or where the symbol is missing."""
    version = libc_version()
    if not (version and version.startswith("glibc")):
        return None
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError) as exc:
        log.debug("malloc_trim is not available (%s); freed memory stays with the allocator", exc)
        return None


def release_freed_memory() -> bool:
    """Return the C heap's free pages to the kernel; False where the C library cannot (then it does nothing)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class BacklogWatch:
    """Says when a backlog has drained: fed the outbox depth now and then, True once per drained backlog."""

    def __init__(self, backlog_min: int = BACKLOG_MIN, drained_fraction: float = DRAINED_FRACTION) -> None:
        self.backlog_min = backlog_min
        self.drained_fraction = drained_fraction
        self.peak = 0

    def drained(self, depth: int) -> bool:
        self.peak = max(self.peak, depth)
        if self.peak < self.backlog_min or depth > self.peak * self.drained_fraction:
            return False
        self.peak = 0
        return True

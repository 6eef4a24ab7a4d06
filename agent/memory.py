"""Giving memory back to the operating system after a burst of work, so the agent's footprint stays flat.

Draining a backlog (readings stored while the device was offline) allocates and frees many small objects in a
few seconds. glibc's malloc keeps freed memory in its heaps for reuse instead of returning it, so without help a
long-running agent would stay at its high-water mark after every outage. ``malloc_trim(0)`` hands the free
pages of every heap back to the kernel; it takes well under a millisecond on an agent-sized heap.

Measured on the emulated rpi-4b with a 100,000-reading backlog (docs/configuration.md, "Memory"): trimming
once the backlog has drained gives back about 0.5 MB; the ``MALLOC_ARENA_MAX`` setting, often the first advice
for threaded daemons, changed nothing beyond the noise (~0.1 MB), so the agent does not set it.

What is never loaded need not be given back: ``skip_charset_detection`` keeps the largest module the agent
would load and never use out of the process.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable

log = logging.getLogger(__name__)

#: A backlog smaller than this is ordinary traffic, not a burst worth giving memory back after.
BACKLOG_MIN = 1_000
#: A backlog counts as drained once what is left of it is at most this fraction of its peak.
DRAINED_FRACTION = 0.01


#: The character-set detectors requests looks for. Either is optional to it: without one, a response body with
#: no declared charset decodes as UTF-8 (``Response.apparent_encoding``).
CHARSET_DETECTORS = ("charset_normalizer", "chardet")


def skip_charset_detection() -> bool:
    """Keep requests' character-set detector out of the agent: about 3 MB resident for nothing it uses.

    The SDK loads requests for its HTTP calls (file upload, IoT Edge workload API), and requests imports
    charset_normalizer, which maps every CJK codec, to guess the charset of bodies that do not declare one.
    The agent reads status codes and JSON (which requests decodes without guessing), never such text. This must
    run before anything imports requests; afterwards it changes nothing and returns False. ``roost run`` calls
    it first thing, so it decides for the agent's process only, not for programs that import roost's modules.
    """
    if "requests" in sys.modules or any(sys.modules.get(name) for name in CHARSET_DETECTORS):
        return False
    for name in CHARSET_DETECTORS:
        sys.modules[name] = None   # an import of it now raises ImportError, which requests handles
    # requests reports a missing detector once, at import, as a RequestsDependencyWarning: expected here.
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection", module="requests")
    return True


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

"""agent.memory: freed heap pages go back to the kernel once a backlog has drained; nothing happens off glibc."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import memory


@pytest.fixture
def fresh_lookup():
    """Each test looks malloc_trim up again (the module caches what it found)."""
    memory._malloc_trim.cache_clear()
    yield
    memory._malloc_trim.cache_clear()


def _rss_kb() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not (memory.libc_version() or "").startswith("glibc"), reason="glibc only")
def test_on_glibc_freed_pages_go_back_to_the_kernel(fresh_lookup):
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    # Many 1 KB blocks, below the mmap threshold: they live in the heap, and free() keeps them there.
    blocks = [libc.malloc(1024) for _ in range(40_000)]
    for block in blocks:
        ctypes.memset(block, 1, 1024)
    keep = blocks[-1]          # the top block pins the heap's end: only malloc_trim can give the rest back
    for block in blocks[:-1]:
        libc.free(block)
    before = _rss_kb()
    assert memory.release_freed_memory() is True
    after = _rss_kb()
    libc.free(keep)
    assert before - after > 20_000, (before, after)    # most of the ~40 MB went back


def test_elsewhere_it_does_nothing_and_says_so(fresh_lookup, monkeypatch):
    def no_glibc(name):
        raise ValueError("unrecognized configuration name")

    monkeypatch.setattr(memory.os, "confstr", no_glibc)
    assert memory.libc_version() is None
    assert memory.release_freed_memory() is False
    assert memory.release_freed_memory() is False


def test_a_glibc_without_malloc_trim_is_harmless(fresh_lookup, monkeypatch):
    import ctypes

    class NoTrim:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, attr):
            raise AttributeError(f"{self.name}: undefined symbol: {attr}")

    monkeypatch.setattr(memory.os, "confstr", lambda name: "glibc 2.36")
    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    assert memory.release_freed_memory() is False


def test_backlog_watch_fires_once_when_a_backlog_has_drained():
    watch = memory.BacklogWatch(backlog_min=1000, drained_fraction=0.01)
    # ordinary traffic: never a burst
    assert [watch.drained(d) for d in (0, 3, 40, 999, 5, 0)] == [False] * 6
    # an outage: the backlog builds up, drains, and is reported drained once
    assert [watch.drained(d) for d in (5000, 100_000, 60_000, 2000, 1001)] == [False] * 5
    assert watch.drained(1000) is True
    assert [watch.drained(d) for d in (4, 0, 12, 0)] == [False] * 4
    # the next outage is reported again
    assert [watch.drained(d) for d in (1500, 800, 16)] == [False, False, False]
    assert watch.drained(15) is True


def test_a_backlog_found_at_start_counts():
    watch = memory.BacklogWatch()
    assert watch.drained(100_000) is False      # what the outbox held when the agent started
    assert watch.drained(0) is True


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    """Run code in a new interpreter (imports are process-wide), turning every warning into an error."""
    return subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                          cwd=Path(memory.__file__).parents[1], timeout=60)


def test_skipping_charset_detection_keeps_requests_working_without_a_warning():
    result = _fresh_python(
        "import sys\n"
        "from agent import memory\n"
        "assert memory.skip_charset_detection() is True\n"
        "import requests\n"
        "assert not any(sys.modules.get(name) for name in memory.CHARSET_DETECTORS)\n"
        "response = requests.models.Response()\n"
        "response._content = 'température 21 °C'.encode()\n"
        "print(response.apparent_encoding, response.text)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "utf-8 température 21 °C"


def test_skipping_charset_detection_after_requests_is_loaded_changes_nothing():
    result = _fresh_python(
        "import sys, requests\n"
        "from agent import memory\n"
        "assert memory.skip_charset_detection() is False\n"
        "print(requests.compat.chardet.__name__)\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in memory.CHARSET_DETECTORS

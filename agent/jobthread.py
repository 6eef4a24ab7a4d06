"""One worker thread that runs jobs in the order they were posted, for code driven by an asyncio loop.

The outbox keeps SQLite on one thread (calls stay serialized, fsyncs never block the event loop). At
thousands of messages a second, ``loop.run_in_executor`` is a noticeable share of the loop's work: a
concurrent future, a work item, a thread-count check and a chained asyncio future per call. A job thread
costs one queue put per job, plus one ``call_soon_threadsafe`` when a result has to come back.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Later(NamedTuple):
    due: float
    job: Callable[[], Any]


class JobThread:
    """Runs posted jobs one at a time, in order; started on first use, restarted after ``close``.

    ``post_later`` jobs run once their delay has passed, between the other jobs (or at ``close``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Callable[[], Any] | _Later | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def post(self, job: Callable[[], Any]) -> None:
        """Queue ``job`` and return at once. Nobody awaits it: an exception it raises is logged."""
        if self._thread is None:
            self._start()
        self._jobs.put(job)

    def post_later(self, delay_s: float, job: Callable[[], Any]) -> None:
        """Like ``post``, but ``job`` runs no sooner than ``delay_s`` from now."""
        self.post(_Later(time.monotonic() + delay_s, job))

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread and return its result (or raise its exception) in the calling loop."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:   # handed to the awaiting caller, whatever it is
                settle_threadsafe(loop, settle, done, None, exc)
            else:
                settle_threadsafe(loop, settle, done, result, None)

        self.post(job)
        return await done

    def close(self) -> None:
        """Run what is queued, then stop the thread (a later ``post`` starts a new one)."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is None:
                # A daemon thread: SQLite work is transactional, so being cut short at interpreter exit loses
                # nothing that was committed, and an outbox someone forgot to close cannot hang the exit.
                self._thread = threading.Thread(target=self._main, name=self.name, daemon=True)
                self._thread.start()

    def _main(self) -> None:
        timed: list[tuple[float, int, Callable[[], Any]]] = []    # a heap, by due time then posting order
        order = itertools.count()
        while True:
            try:
                job = self._jobs.get(timeout=max(0.0, timed[0][0] - time.monotonic()) if timed else None)
            except queue.Empty:
                pass      # a timed job fell due
            else:
                if job is None:
                    break
                if isinstance(job, _Later):
                    heapq.heappush(timed, (job.due, next(order), job.job))
                else:
                    self._run(job)
            # Checked after every job too, so a steady stream of jobs cannot hold the timed ones back.
            while timed and timed[0][0] <= time.monotonic():
                self._run(heapq.heappop(timed)[2])
        for _due, _n, job in sorted(timed):     # closing: what was put off runs now, not never
            self._run(job)

    def _run(self, job: Callable[[], Any]) -> None:
        try:
            job()
        except Exception:
            log.exception("%s: a background job failed", self.name)


class Coalescer:
    """Items handed over from any thread, handled in groups by one job at a time on a JobThread.

    ``put`` queues an item and posts a job unless one is already queued; that job takes every item queued
    by the time it runs. Items put while a group is being handled (during its fsync, say) form the next group.

    With ``linger_s``, the job for a new group is put off that long so the group grows: for work whose cost
    is mostly per group (a transaction) and that nobody waits for. A group reaching ``max_items``, or a
    ``put(..., now=True)``, is handled without waiting. ``queued`` is the total ``weight`` of what waits.
    """

    def __init__(self, jobs: JobThread, handle: Callable[[list[Any]], None], *, linger_s: float = 0.0,
                 max_items: int = 0, weight: Callable[[Any], int] = lambda item: 1) -> None:
        self._jobs = jobs
        self._handle = handle
        self.linger_s = linger_s
        self.max_items = max_items
        self._weight = weight
        self.queued = 0
        self._items: list[Any] = []
        self._posted: str = ""             # "", "later" or "now": the job already on its way, if any
        self._mutex = threading.Lock()     # put() runs on the event loop, the job on the worker thread

    def put(self, item: Any, *, now: bool = False) -> None:
        with self._mutex:
            self._items.append(item)
            self.queued += self._weight(item)
            now = now or not self.linger_s or (self.max_items > 0 and len(self._items) >= self.max_items)
            if self._posted == "now" or (self._posted == "later" and not now):
                return
            self._posted = "now" if now else "later"
        if now:
            self._jobs.post(self.run_now)
        else:
            self._jobs.post_later(self.linger_s, self.run_now)

    def run_now(self) -> None:
        """Handle what is queued, here and now (the posted job; also for a flush or a close)."""
        with self._mutex:
            items, self._items = self._items, []
            self.queued = 0
            self._posted = ""
        if items:
            self._handle(items)


def settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    """Resolve ``future`` unless its waiter gave up on it (cancelled) meanwhile."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def settle_threadsafe(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """``loop.call_soon_threadsafe`` that tolerates a loop closed meanwhile (nobody is waiting any more)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        log.debug("event loop closed before a background job's result could be handed back")

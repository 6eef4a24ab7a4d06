"""agent.jobthread: jobs run one at a time in posting order; results and errors come back to the loop."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from agent.jobthread import JobThread


def test_jobs_run_in_order_on_one_thread_and_results_come_back():
    jobs = JobThread("test-jobs")
    seen: list[tuple[int, str]] = []

    async def main() -> list[int]:
        for n in range(5):
            jobs.post(lambda n=n: seen.append((n, threading.current_thread().name)))
        return await asyncio.gather(*(jobs.call(lambda n=n: n * n) for n in range(5)))

    try:
        assert asyncio.run(main()) == [0, 1, 4, 9, 16]
    finally:
        jobs.close()
    assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
    assert {name for _, name in seen} == {"test-jobs"}


def test_an_error_reaches_the_caller_and_the_thread_keeps_working():
    jobs = JobThread("test-jobs")

    def boom() -> None:
        raise ValueError("bad row")

    async def main() -> str:
        with pytest.raises(ValueError, match="bad row"):
            await jobs.call(boom)
        return await jobs.call(lambda: "still here")

    try:
        assert asyncio.run(main()) == "still here"
    finally:
        jobs.close()


def test_a_failing_posted_job_is_logged_not_lost(caplog):
    jobs = JobThread("test-jobs")
    caplog.set_level(logging.ERROR, logger="agent.jobthread")
    jobs.post(lambda: 1 / 0)
    jobs.close()     # runs what is queued first
    assert any("background job failed" in r.getMessage() and r.exc_info for r in caplog.records)


def test_close_waits_for_queued_jobs_and_a_later_post_starts_again():
    jobs = JobThread("test-jobs")
    done: list[int] = []
    gate = threading.Event()
    jobs.post(gate.wait)
    jobs.post(lambda: done.append(1))
    gate.set()
    jobs.close()
    assert done == [1]
    jobs.post(lambda: done.append(2))
    jobs.close()
    assert done == [1, 2]


def test_a_caller_that_gives_up_does_not_break_the_result_hand_back():
    jobs = JobThread("test-jobs")
    gate = threading.Event()

    async def main() -> int:
        waiter = asyncio.ensure_future(jobs.call(lambda: gate.wait(5) and 7))
        await asyncio.sleep(0.01)
        waiter.cancel()
        gate.set()
        return await jobs.call(lambda: 8)

    try:
        assert asyncio.run(main()) == 8
    finally:
        jobs.close()


def test_a_coalescer_hands_over_everything_queued_in_groups_one_job_at_a_time():
    from agent.jobthread import Coalescer

    jobs = JobThread("test-jobs")
    groups: list[list[int]] = []
    gate, started = threading.Event(), threading.Event()

    def handle(items: list[int]) -> None:
        if not groups:
            started.set()
            gate.wait(5)      # the first group is slow: what arrives meanwhile forms the next one
        groups.append(items)

    coalescer = Coalescer(jobs, handle)
    coalescer.put(1)
    assert started.wait(5)
    for n in (2, 3, 4):
        coalescer.put(n)
    gate.set()
    jobs.close()
    assert [n for group in groups for n in group] == [1, 2, 3, 4]
    assert groups[-1] == [2, 3, 4] and len(groups) == 2


def test_a_job_put_off_runs_once_due_and_never_holds_the_others_back():
    jobs = JobThread("test-jobs")
    ran: list[str] = []
    soon, later_ran = threading.Event(), threading.Event()
    try:
        jobs.post_later(60.0, lambda: ran.append("in a minute"))
        jobs.post_later(0.01, lambda: (ran.append("due"), later_ran.set()))
        jobs.post(lambda: (ran.append("now"), soon.set()))
        assert soon.wait(5) and later_ran.wait(5)
        assert ran == ["now", "due"]
    finally:
        jobs.close()
    assert ran == ["now", "due", "in a minute"]     # closing runs what was put off instead of dropping it


def test_a_lingering_coalescer_waits_for_company_unless_full_or_told_not_to():
    from agent.jobthread import Coalescer

    jobs = JobThread("test-jobs")
    groups: list[list[int]] = []
    coalescer = Coalescer(jobs, groups.append, linger_s=60.0, max_items=3)

    def settled() -> list[list[int]]:
        """What was handled once every job posted so far has run."""
        done = threading.Event()
        jobs.post(done.set)
        assert done.wait(5)
        return list(groups)

    try:
        coalescer.put(1)
        coalescer.put(2)
        assert settled() == []
        coalescer.put(3)                   # the group is full
        assert settled() == [[1, 2, 3]]
        coalescer.put(4)
        coalescer.put(5, now=True)
        assert settled() == [[1, 2, 3], [4, 5]]
        coalescer.put(6)
    finally:
        jobs.close()
    assert groups == [[1, 2, 3], [4, 5], [6]]

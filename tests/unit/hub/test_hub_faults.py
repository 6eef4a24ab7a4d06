"""Injected reply delays: held replies are visible and released when the delay is lowered or cleared."""

from __future__ import annotations

import asyncio
import threading

import pytest

from emulator.hub.faults import Faults

LONG = 300.0   # far longer than any test runs: only a release can end the wait


async def _held(faults: Faults, device_id: str, count: int = 1) -> None:
    while faults.held_replies.get(device_id, 0) != count:
        await asyncio.sleep(0)


def test_no_delay_holds_nothing():
    faults = Faults()
    faults.delay("other", LONG)
    asyncio.run(asyncio.wait_for(faults.hold("dev1"), 30))
    assert faults.held_replies == {}


def test_clear_releases_held_replies_of_every_device():
    async def scenario() -> None:
        faults = Faults()
        faults.delay("dev1", LONG)
        faults.delay(None, LONG)
        replies = [asyncio.ensure_future(faults.hold(d)) for d in ("dev1", "dev1", "dev2")]
        await _held(faults, "dev1", 2)
        await _held(faults, "dev2", 1)
        assert not any(r.done() for r in replies)
        faults.clear()
        await asyncio.wait_for(asyncio.gather(*replies), 30)
        assert faults.held_replies == {}

    asyncio.run(scenario())


def test_lowering_a_delay_from_another_thread_releases_the_reply():
    async def scenario() -> None:
        faults = Faults()
        faults.delay("dev1", LONG)
        reply = asyncio.ensure_future(faults.hold("dev1"))
        await _held(faults, "dev1")
        # The service API and tests change faults from other threads than the hub's loop.
        changer = threading.Thread(target=faults.delay, args=("dev1", 0.001))
        changer.start()
        await asyncio.wait_for(reply, 30)
        changer.join()
        assert faults.held_replies == {}

    asyncio.run(scenario())


def test_changing_another_devices_delay_keeps_this_reply_held():
    async def scenario() -> None:
        faults = Faults()
        faults.delay("dev1", LONG)
        reply = asyncio.ensure_future(faults.hold("dev1"))
        await _held(faults, "dev1")
        faults.delay("dev2", 1.0)            # wakes every held reply; dev1's re-reads its own delay and waits on
        for _ in range(20):
            await asyncio.sleep(0)
        assert not reply.done() and faults.held_replies == {"dev1": 1}
        faults.delay("dev1", 0)
        await asyncio.wait_for(reply, 30)

    asyncio.run(scenario())


def test_a_negative_delay_is_refused():
    with pytest.raises(ValueError, match="cannot be negative"):
        Faults().delay("dev1", -1)

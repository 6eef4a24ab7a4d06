"""agent.uplink pieces that need no hub: backoff shape, offline behaviour (the hub is exercised in integration)."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.config import HubConfig
from agent.uplink import HubUplink, UplinkUnavailable, backoff_delay


def test_backoff_grows_to_the_cap_with_full_jitter():
    rng = random.Random(7)
    for attempt in range(20):
        ceiling = min(300.0, 1.0 * 2 ** attempt)
        delays = [backoff_delay(attempt, 1.0, 300.0, rng) for _ in range(200)]
        assert all(0.5 <= d <= max(ceiling, 0.5) for d in delays)
    late = [backoff_delay(30, 1.0, 300.0, rng) for _ in range(500)]
    assert max(late) <= 300 and min(late) < 100 < max(late)    # spread out, not in lockstep


def test_backoff_is_reproducible_with_a_seed():
    a = [backoff_delay(n, 0.5, 60, random.Random(1)) for n in range(10)]
    b = [backoff_delay(n, 0.5, 60, random.Random(1)) for n in range(10)]
    assert a == b


def test_operations_fail_fast_while_offline():
    uplink = HubUplink(HubConfig(), lambda force: pytest.fail("no connection attempt expected"))

    async def main():
        assert not uplink.connected
        for op in (uplink.get_twin(), uplink.patch_reported({"a": 1}),
                   uplink.send(b"{}", message_id="m", properties={})):
            with pytest.raises(UplinkUnavailable):
                await asyncio.wait_for(op, 1)
        assert await uplink.wait_connected(timeout=0.05) is False

    asyncio.run(main())


def test_unreachable_hub_backs_off_and_stops_promptly():
    from agent.identity.credentials import HubCredentials, key_signer

    calls = []

    def credentials(force: bool) -> HubCredentials:
        calls.append(force)
        # Nothing listens on 127.255.255.254:8883: every attempt is refused at once.
        return HubCredentials("127.0.0.1", "dev", sign=key_signer(b"k" * 32), gateway_hostname="127.255.255.254")

    hub = HubConfig(connect_timeout_s=1.0, backoff_base_s=0.05, backoff_cap_s=0.1)
    uplink = HubUplink(hub, credentials, rng=random.Random(3))

    async def main():
        task = asyncio.create_task(uplink.run())
        async with asyncio.timeout(20):
            while uplink.stats.connect_failures < 2:
                await asyncio.sleep(0.02)
        await uplink.stop()
        async with asyncio.timeout(15):
            await task

    asyncio.run(main())
    assert uplink.stats.connects == 0 and uplink.stats.connect_failures >= 2
    assert uplink.stats.last_error
    assert len(calls) >= 2


def test_shared_deadlines_time_out_overdue_awaits_in_order_with_one_timer():
    import asyncio

    from agent.uplink import SharedDeadlines

    deadlines = SharedDeadlines()
    outcome: dict[str, str] = {}

    async def op(name: str, timeout_s: float, takes_s: float) -> None:
        token = deadlines.start(timeout_s)
        try:
            await asyncio.sleep(takes_s)
            outcome[name] = "done"
        except asyncio.CancelledError:
            if not deadlines.expired(token):
                raise
            outcome[name] = "timed out"
        finally:
            deadlines.finish(token)

    async def main() -> None:
        await asyncio.gather(op("slow", 0.05, 5), op("quick", 0.2, 0.01), op("slow-too", 0.1, 5))
        assert deadlines._timer is None and not deadlines._pending and not deadlines._expired

    asyncio.run(main())
    assert outcome == {"quick": "done", "slow": "timed out", "slow-too": "timed out"}


def test_shared_deadlines_let_a_real_cancellation_through():
    import asyncio

    import pytest

    from agent.uplink import SharedDeadlines

    deadlines = SharedDeadlines()

    async def op() -> None:
        token = deadlines.start(60)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            assert not deadlines.expired(token)
            raise
        finally:
            deadlines.finish(token)

    async def main() -> None:
        task = asyncio.create_task(op())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not deadlines._pending

    asyncio.run(main())

"""HubUplink's cloud-to-device side against the hub emulator: methods, desired patches, C2D, twin, reconnects."""

from __future__ import annotations

import asyncio

import pytest
from agent_rig import DEVICE

from agent.config import HubConfig
from agent.uplink import HubUplink


def test_methods_twin_and_c2d_reach_their_handlers_before_and_after_a_reconnect(hub):
    calls: list[tuple[str, object]] = []
    patches: list[dict] = []
    messages: list[tuple[bytes, dict]] = []

    async def on_method(name, payload):
        calls.append((name, payload))
        if name == "fail":
            raise RuntimeError("handler broke")
        return 200, {"echo": payload}

    async def on_desired(patch):
        patches.append(patch)

    async def on_c2d(body, props):
        messages.append((body, dict(props)))

    uplink = HubUplink(HubConfig(connect_timeout_s=10, send_timeout_s=5, backoff_base_s=0.05, backoff_cap_s=0.2),
                       hub.credentials)
    uplink.on_method(on_method)
    uplink.on_desired(on_desired)
    uplink.on_c2d(on_c2d)
    emu = hub.thread

    async def until(condition, what):
        async with asyncio.timeout(30):
            while not condition():
                await asyncio.sleep(0.05)

    async def scenario():
        task = asyncio.create_task(uplink.run())
        try:
            for round_ in range(2):
                await uplink.wait_connected(30)
                await until(lambda: DEVICE in hub.hub.connected_devices(), "device connected at the hub")
                result = await asyncio.to_thread(emu.call, hub.hub.invoke_method(DEVICE, "ping", {"n": round_},
                                                                                 timeout_s=10))
                assert (result.status, result.payload) == (200, {"echo": {"n": round_}})
                failed = await asyncio.to_thread(emu.call, hub.hub.invoke_method(DEVICE, "fail", None,
                                                                                 timeout_s=10))
                assert failed.status == 500 and "handler broke" in failed.payload["error"]
                await asyncio.to_thread(emu.call, hub.hub.update_twin(DEVICE, desired={"round": round_}))
                await until(lambda r=round_: any(p.get("round") == r for p in patches), "desired patch")
                await asyncio.to_thread(emu.call, hub.hub.send_c2d(DEVICE, f"hello {round_}".encode(),
                                                                   properties={"k": "v"}))
                await until(lambda r=round_: any(b == f"hello {r}".encode() for b, _ in messages), "C2D message")
                await uplink.patch_reported({"seen": round_})
                twin = await uplink.get_twin()
                assert twin["reported"]["seen"] == round_ and twin["desired"]["round"] == round_
                await asyncio.to_thread(hub.drop)   # the next round runs on a fresh client after a reconnect
                await until(lambda r=round_: not uplink.connected or uplink.stats.connects > r + 1, "drop noticed")
        finally:
            await uplink.stop()
            await task

    asyncio.run(scenario())
    assert uplink.stats.connects >= 2
    assert all("$version" in p for p in patches)
    _, props = messages[0]
    assert props["k"] == "v" and "$.message_id" in props


@pytest.mark.parametrize("then", ["reprovision", "stop"])
def test_a_method_that_ends_the_connection_is_answered_first(hub, then):
    """rotateDeviceKey and reprovision ask for a new connection, reboot and factoryReset stop the agent."""
    uplink = HubUplink(HubConfig(connect_timeout_s=10, send_timeout_s=5, backoff_base_s=0.05, backoff_cap_s=0.2),
                       hub.credentials)
    stopping: list[asyncio.Task] = []

    async def on_method(name, payload):
        if then == "reprovision":
            uplink.reprovision()
        else:
            stopping.append(asyncio.create_task(uplink.stop()))
        await asyncio.sleep(0.3)      # the handler goes on after asking: the connection must outlive the answer
        return 200, {"done": then}

    uplink.on_method(on_method)

    async def scenario():
        task = asyncio.create_task(uplink.run())
        try:
            await uplink.wait_connected(30)
            async with asyncio.timeout(30):
                while DEVICE not in hub.hub.connected_devices():
                    await asyncio.sleep(0.05)
            result = await asyncio.to_thread(hub.thread.call, hub.hub.invoke_method(DEVICE, "bye", None,
                                                                                    timeout_s=10))
            assert (result.status, result.payload) == (200, {"done": then})
            async with asyncio.timeout(30):
                while not (task.done() if then == "stop" else uplink.stats.reprovisions >= 1 and uplink.connected):
                    await asyncio.sleep(0.05)
        finally:
            await uplink.stop()
            await task

    asyncio.run(scenario())
    assert uplink.stats.connects == (2 if then == "reprovision" else 1)

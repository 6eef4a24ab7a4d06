"""The agent against the hub emulator under faults: no reading is ever lost, duplicates carry the same id."""

from __future__ import annotations

import asyncio

from agent_rig import CountingSensor, assert_lossless, make_daemon, produce, stop_sensor, wait_for


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_steady_stream_arrives_complete_and_batched(hub, tmp_path):
    sensor = CountingSensor()
    daemon = make_daemon(hub, tmp_path / "agent", sensor)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await produce(daemon, sensor, 200)
        await stop_sensor(daemon, sensor)
        await wait_for(lambda: len({s for _, s, _ in hub.readings()}) >= len(sensor.produced), what="delivery")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    figures = assert_lossless(sensor.produced, hub.readings())
    assert figures["duplicates"] == 0
    records = hub.records()
    assert len(records) < len(sensor.produced) / 5          # packed, not one message per reading
    record = records[0]
    assert record.system_properties["$.ct"] == "application/json"
    assert record.system_properties["$.ce"] == "utf-8"
    assert record.properties["schema"] == "roost.telemetry.v1"
    assert all(r.units == 1 for r in records)


def test_hub_restarted_mid_stream(hub, tmp_path):
    sensor = CountingSensor()
    daemon = make_daemon(hub, tmp_path / "agent", sensor)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.uplink is not None and daemon.uplink.connected, what="connect")
        await produce(daemon, sensor, 100)
        await asyncio.to_thread(hub.stop)                   # the hub goes away with readings in flight
        await produce(daemon, sensor, 250)                  # the agent keeps sampling into the outbox
        assert daemon.outbox.stats().depth > 0
        await asyncio.to_thread(hub.start)
        await produce(daemon, sensor, 350)
        await stop_sensor(daemon, sensor)
        await wait_for(lambda: {n for *_, n in hub.readings()} >= set(sensor.produced), what="delivery")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    assert_lossless(sensor.produced, hub.readings())
    assert daemon.uplink.stats.connects >= 2


def test_network_drops_repeatedly(hub, tmp_path):
    sensor = CountingSensor()
    daemon = make_daemon(hub, tmp_path / "agent", sensor)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        for round_ in range(4):
            await wait_for(lambda: daemon.uplink is not None and daemon.uplink.connected, what="connect")
            await produce(daemon, sensor, 60 * (round_ + 1))
            await asyncio.to_thread(hub.drop)
        await produce(daemon, sensor, 300)
        await stop_sensor(daemon, sensor)
        await wait_for(lambda: {n for *_, n in hub.readings()} >= set(sensor.produced), what="delivery")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    assert_lossless(sensor.produced, hub.readings())
    assert daemon.uplink.stats.connects >= 5


def test_withheld_pubacks_are_resent_with_the_same_ids(hub, tmp_path):
    sensor = CountingSensor()
    daemon = make_daemon(hub, tmp_path / "agent", sensor, send_timeout_s=1.0)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.uplink is not None and daemon.uplink.connected, what="connect")
        hub.hub.faults.withhold_puback("roost-dev-1", count=3)
        await produce(daemon, sensor, 300)
        await stop_sensor(daemon, sensor)
        await wait_for(lambda: {n for *_, n in hub.readings()} >= set(sensor.produced)
                       and daemon.outbox.stats().depth == 0, what="delivery")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    figures = assert_lossless(sensor.produced, hub.readings())
    # The hub stored the unacknowledged messages once already: the resends are duplicates by id, nothing else.
    assert figures["duplicates"] > 0
    assert daemon.uplink.stats.send_failures >= 1


def test_token_expiry_mid_stream(hub, tmp_path):
    sensor = CountingSensor()
    # Tokens that live 4 s and are renewed 2 s before they expire: several renewals during the test.
    daemon = make_daemon(hub, tmp_path / "agent", sensor, sas_ttl_s=4, renew_before_s=2)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.uplink is not None and daemon.uplink.stats.token_renewals >= 2,
                       what="token renewals")
        hub.hub.faults.expire_token("roost-dev-1")           # the hub ends the session as for an expired token
        await produce(daemon, sensor, len(sensor.produced) + 100)
        await stop_sensor(daemon, sensor)
        await wait_for(lambda: {n for *_, n in hub.readings()} >= set(sensor.produced), what="delivery")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    assert_lossless(sensor.produced, hub.readings())
    assert daemon.uplink.stats.connects >= 2


def test_disk_full_holds_readings_and_stores_them_when_space_returns(hub, tmp_path):
    sensor = CountingSensor()
    daemon = make_daemon(hub, tmp_path / "agent", sensor)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await produce(daemon, sensor, 50)
        await asyncio.to_thread(hub.stop)        # offline, so the outbox has to hold everything
        db = daemon.outbox._db
        with daemon.outbox._lock:
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={pages}")   # SQLite's own "database or disk is full" path
        await produce(daemon, sensor, 400)
        assert daemon.outbox.stats().spilled > 0
        with daemon.outbox._lock:
            db.execute("PRAGMA max_page_count=1073741823")
        await asyncio.to_thread(hub.start)
        await produce(daemon, sensor, 450)
        await stop_sensor(daemon, sensor)
        await wait_for(lambda: {n for *_, n in hub.readings()} >= set(sensor.produced), what="delivery")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    assert_lossless(sensor.produced, hub.readings())
    assert daemon.outbox.stats().counters["store_errors"] >= 1

"""agent.daemon as an AgentContext: events go through the outbox, controls reach the right parts."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

from agent.config import parse_config
from agent.daemon import Daemon


class OfflineUplink:
    """An uplink that never connects (a device without network): the daemon must still run and store."""

    connected = False

    def __init__(self):
        self.stopped = asyncio.Event()

    async def run(self):
        await self.stopped.wait()

    async def stop(self):
        self.stopped.set()

    async def wait_connected(self, timeout=None):
        await asyncio.sleep(timeout or 0)
        return False


class Counter:
    id = "t1"

    def __init__(self):
        self.n = 0

    def read(self):
        self.n += 1
        return SimpleNamespace(sensor_id="t1", driver="c", values={"v": self.n}, units={}, timestamp=float(self.n),
                               error=None, error_kind=None)


def make(tmp_path, **extra):
    config, problems = parse_config({
        "device": {"state_dir": str(tmp_path / "state")},
        "identity": {"method": "connection-string", "connection_string_file": "cs"},
        "telemetry": {"interval_s": 0.01},
        **extra,
    })
    assert config is not None, problems
    return Daemon(config, sensors=[Counter()], uplink=OfflineUplink(), attach_management=False)


def test_offline_daemon_stores_readings_and_events_then_stops_cleanly(tmp_path):
    daemon = make(tmp_path)

    async def main():
        task = asyncio.create_task(daemon.run())
        async with asyncio.timeout(10):
            while daemon.outbox._db is None or daemon.outbox.stats().depth < 5:
                await asyncio.sleep(0.01)
        daemon.emit({"alert": "cpu-hot", "value": 85}, {"kind": "alert", "severity": "warning"})
        async with asyncio.timeout(10):
            while not daemon.outbox.stats().depth or not _has_event(daemon):
                await asyncio.sleep(0.01)
        stats = daemon.outbox_stats()
        daemon.stop("test")
        return await task, stats

    rc, stats = asyncio.run(main())
    assert rc == 0
    assert stats["depth"] >= 5 and stats["sent_readings"] == 0
    # the readings outlive the process: a new outbox on the same file has them
    from agent.outbox import Outbox

    with Outbox(tmp_path / "state" / "outbox.sqlite", 1 << 20) as ob:
        items = []
        while batch := ob.claim(1 << 20):
            items += batch
    kinds = {i.kind for i in items}
    assert kinds == {"telemetry", "alert"}
    alert = next(i for i in items if i.kind == "alert")
    assert json.loads(alert.body) == {"alert": "cpu-hot", "value": 85} and alert.props == {"severity": "warning"}


def _has_event(daemon) -> bool:
    with daemon.outbox._lock:
        return bool(daemon.outbox._db.execute("SELECT 1 FROM readings WHERE kind='alert'").fetchone())


def test_set_log_level_changes_the_root_logger(tmp_path):
    daemon = make(tmp_path)
    daemon.set_log_level("debug")
    assert logging.getLogger().level == logging.DEBUG
    daemon.set_log_level("warning")
    assert logging.getLogger().level == logging.WARNING


def test_requested_reboot_stops_the_agent_then_runs_the_command(tmp_path):
    marker = tmp_path / "rebooted"
    daemon = make(tmp_path, management={"reboot_command": f"touch {marker}"})

    async def main():
        task = asyncio.create_task(daemon.run())
        async with asyncio.timeout(10):
            while daemon.sensors is None:
                await asyncio.sleep(0.01)
        daemon.request_reboot(0.05, "test")
        return await asyncio.wait_for(task, 20)

    assert asyncio.run(main()) == 0
    assert marker.exists()


def test_a_broken_state_dir_is_a_clear_startup_error(tmp_path):
    (tmp_path / "state").write_text("a file, not a directory")
    daemon = make(tmp_path)
    assert asyncio.run(daemon.run()) == 69


def test_an_unknown_board_is_a_config_error_that_names_the_key(tmp_path, caplog):
    config, problems = parse_config({
        "device": {"state_dir": str(tmp_path / "state"), "board": "rpi-9", "platform": "emulated"},
        "identity": {"method": "connection-string", "connection_string_file": "cs"},
    })
    assert config is not None, problems
    daemon = Daemon(config, uplink=OfflineUplink(), attach_management=False)
    assert asyncio.run(daemon.run()) == 78
    assert "device.board" in caplog.text and "rpi-9" in caplog.text

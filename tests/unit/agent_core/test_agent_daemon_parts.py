"""agent.daemon: management stops before the uplink, the [update] table drives the engine, attestHealth."""

from __future__ import annotations

import asyncio
import json
import logging
from types import SimpleNamespace

from agent.config import parse_config
from agent.daemon import Daemon
from emulator.board.boot import EmulatedBoard


class Uplink:
    """An uplink that never connects but accepts management's handlers; records when it is stopped."""

    connected = False

    def __init__(self, events: list[str]):
        self.events = events
        self.stopped = asyncio.Event()
        self.methods = None

    async def run(self):
        await self.stopped.wait()

    async def stop(self):
        self.events.append("uplink stopped")
        self.stopped.set()

    async def wait_connected(self, timeout=None):
        await asyncio.sleep(min(timeout or 0.05, 0.05))
        return False

    def on_method(self, handler):
        self.methods = handler

    def on_desired(self, handler):
        pass

    def on_c2d(self, handler):
        pass


class Counter:
    id = "t1"

    def read(self):
        return SimpleNamespace(sensor_id="t1", driver="c", values={"v": 1}, units={}, timestamp=1.0,
                               error=None, error_kind=None)


def config_for(tmp_path, **extra):
    tables = {"device": {"state_dir": str(tmp_path / "state")},
              "identity": {"method": "connection-string", "connection_string_file": "cs"},
              "telemetry": {"interval_s": 0.05}}
    tables.update(extra)
    config, problems = parse_config(tables)
    assert config is not None, problems
    return config


def run_briefly(daemon: Daemon, until=lambda d: True):
    async def main():
        task = asyncio.create_task(daemon.run())
        async with asyncio.timeout(10):
            while daemon.sensors is None or not until(daemon):
                await asyncio.sleep(0.01)
        daemon.stop("test")
        return await task

    return asyncio.run(main())


def test_shutdown_stops_management_before_the_uplink(tmp_path):
    events: list[str] = []
    daemon = Daemon(config_for(tmp_path), sensors=[Counter()], uplink=Uplink(events))

    def watch(d):
        if d.management is None or getattr(d.management, "_watched", False):
            return d.management is not None
        original = d.management.stop

        async def stop():
            events.append("management stopped")
            await original()
        d.management.stop = stop
        d.management._watched = True
        return True

    assert run_briefly(daemon, watch) == 0
    assert events == ["management stopped", "uplink stopped"]
    assert daemon.management._task.done()


def board(tmp_path) -> EmulatedBoard:
    slots = {"a": tmp_path / "a.img", "b": tmp_path / "b.img"}
    for path in slots.values():
        path.write_bytes(b"\0" * 4096)
    emulated = EmulatedBoard(tmp_path / "board", "emulated", slots)
    emulated.install_bootloader("a")
    emulated.power_on()
    return emulated


def update_table(tmp_path, emulated: EmulatedBoard) -> dict:
    return {"board": "rpi-4b", "slots": {"a": str(tmp_path / "a.img"), "b": str(tmp_path / "b.img")},
            "boot": {"backend": "emulated", **emulated.backend_options()}}


def test_the_update_table_makes_the_daemon_reconcile_and_report_its_slot(tmp_path):
    emulated = board(tmp_path)
    daemon = Daemon(config_for(tmp_path, update=update_table(tmp_path, emulated)), sensors=[Counter()],
                    uplink=Uplink([]), attach_management=False)
    assert run_briefly(daemon) == 0
    assert daemon.firmware_slot == "a"
    assert daemon.boot_report.mode == "normal" and daemon.boot_report.action is None
    assert daemon.updates.health.names == ["hub-connected"]
    state = json.loads((tmp_path / "state" / "update" / "state.json").read_text())
    assert state["slots"]["a"]["status"] == "good"


def test_a_broken_boot_loader_setup_turns_updates_off_but_the_agent_runs(tmp_path, caplog):
    emulated = board(tmp_path)
    (emulated.boot_dir / "booted.json").unlink()        # the boot ROM never said what it booted
    daemon = Daemon(config_for(tmp_path, update=update_table(tmp_path, emulated)), sensors=[Counter()],
                    uplink=Uplink([]), attach_management=False)
    with caplog.at_level(logging.ERROR, logger="agent.daemon"):
        assert run_briefly(daemon, lambda d: d.outbox.stats().depth > 0) == 0
    assert daemon.updates is None and daemon.firmware_slot is None
    assert "A/B updates are off for this run" in caplog.text and "booted.json" in caplog.text


def test_attest_health_method_is_registered_only_with_an_attestation_url(tmp_path):
    tpm = {"identity": {"method": "tpm", "id_scope": "0ne1", "tpm_tcti": "swtpm:host=127.0.0.1,port=9"}}
    with_url = Daemon(config_for(tmp_path / "1", **tpm, health={"attestation_url": "https://127.0.0.1:9"}),
                      sensors=[Counter()], uplink=Uplink([]))
    without = Daemon(config_for(tmp_path / "2", **tpm), sensors=[Counter()], uplink=Uplink([]))
    seen = {}
    for name, daemon in (("with", with_url), ("without", without)):
        assert run_briefly(daemon, lambda d: d.management is not None) == 0
        seen[name] = "attestHealth" in daemon.management.methods.table
    assert seen == {"with": True, "without": False}

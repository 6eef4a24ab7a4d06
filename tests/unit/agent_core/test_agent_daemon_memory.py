"""agent.daemon gives memory back once an outbox backlog has drained, and leaves an agent without one alone."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agent import daemon as daemon_module
from agent import memory
from agent.config import parse_config
from agent.daemon import Daemon
from agent.outbox import Outbox

BACKLOG = 1500


class HubUplink:
    """Always connected; every send is acknowledged at once, as a PUBACK would be."""

    connected = True

    def __init__(self):
        self.stopped = asyncio.Event()
        self.sent = 0

    async def run(self):
        await self.stopped.wait()

    async def stop(self):
        self.stopped.set()

    async def wait_connected(self, timeout=None):
        return True

    async def send(self, body, *, message_id, properties, content_type="", content_encoding=""):
        self.sent += 1


class OfflineUplink(HubUplink):
    connected = False

    async def wait_connected(self, timeout=None):
        await asyncio.sleep(min(timeout or 0.05, 0.05))
        return False


class Sensor:
    id = "t1"

    def read(self):
        return SimpleNamespace(sensor_id="t1", driver="c", values={"v": 1}, units={}, timestamp=1.0,
                               error=None, error_kind=None)


def _daemon(tmp_path, uplink, backlog: int = 0) -> Daemon:
    config, problems = parse_config({
        "device": {"state_dir": str(tmp_path / "state")},
        "identity": {"method": "connection-string", "connection_string_file": "cs"},
        "telemetry": {"interval_s": 0.05, "batch_max_delay_s": 0.01},
    })
    assert config is not None, problems
    if backlog:
        with Outbox(config.outbox_path, config.telemetry.outbox_max_bytes) as outbox:
            outbox.add_many([f'{{"v":{n}}}' for n in range(backlog)])
    return Daemon(config, sensors=[Sensor()], uplink=uplink, attach_management=False)


class Recorder:
    """Wraps the real release and BacklogWatch: which depths were looked at, and when memory was released."""

    def __init__(self, monkeypatch, daemon: Daemon):
        self.depths: list[int] = []
        self.released_at: list[int] = []
        real_release = memory.release_freed_memory
        real_watch = memory.BacklogWatch
        recorder = self

        def release() -> bool:
            recorder.released_at.append(daemon.outbox.stats().depth)
            return real_release()

        class Watch(real_watch):
            def drained(self, depth: int) -> bool:
                recorder.depths.append(depth)
                return super().drained(depth)

        monkeypatch.setattr(memory, "release_freed_memory", release)
        monkeypatch.setattr(memory, "BacklogWatch", Watch)
        monkeypatch.setattr(daemon_module, "MEMORY_POLL_S", 0.01)


async def _run_until(daemon: Daemon, condition, timeout: float = 20) -> int:
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)
    daemon.stop("test")
    return await task


def test_memory_is_released_once_the_backlog_has_drained(tmp_path, monkeypatch):
    uplink = HubUplink()
    daemon = _daemon(tmp_path, uplink, backlog=BACKLOG)
    recorded = Recorder(monkeypatch, daemon)

    assert asyncio.run(_run_until(daemon, lambda: recorded.released_at)) == 0
    assert recorded.depths[0] == BACKLOG               # the backlog found at start counts
    assert len(recorded.released_at) == 1
    assert recorded.released_at[0] <= BACKLOG * memory.DRAINED_FRACTION + 5   # drained, give or take a tick
    assert uplink.sent > 0


def test_an_agent_without_a_backlog_keeps_its_allocator_alone(tmp_path, monkeypatch):
    daemon = _daemon(tmp_path, OfflineUplink())
    recorded = Recorder(monkeypatch, daemon)

    assert asyncio.run(_run_until(daemon, lambda: len(recorded.depths) >= 30)) == 0
    assert recorded.released_at == []
    assert max(recorded.depths) > 0                    # readings were stored meanwhile, just no backlog


def test_release_memory_reports_what_the_c_library_did(tmp_path, monkeypatch):
    daemon = _daemon(tmp_path, OfflineUplink())
    assert daemon.release_memory() is memory.release_freed_memory()
    monkeypatch.setattr(memory, "release_freed_memory", lambda: False)
    assert daemon.release_memory() is False

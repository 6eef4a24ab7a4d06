"""A local IoT Hub (the hub emulator) and a roost agent pipeline wired to it, for the agent core's fault tests.

The hub is the real emulator speaking MQTT over TLS; the agent side is the real Daemon with the unmodified
azure-iot-device client. The only stand-in is the sensor: a counter whose every value is remembered, so a
test can compare what was produced with what the hub stored.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

from agent.config import Config, HubConfig, parse_config
from agent.daemon import Daemon
from agent.identity.credentials import HubCredentials, key_signer
from emulator.hub.server import EmulatorConfig, EmulatorThread

DEVICE = "roost-dev-1"


class Hub:
    """The hub emulator on its own loopback address; can be stopped and started again on the same state."""

    def __init__(self, address: str, state_dir: Path) -> None:
        self.config = EmulatorConfig(state_dir=state_dir, address=address)
        self.thread: EmulatorThread | None = None
        self.start()
        state = self.emulator.hub.state
        device = state.find_device(DEVICE) or state.create_device(DEVICE)
        self.key = device.primary_key
        info = self.emulator.connection_info()
        self.hostname = info["hub"]
        self.ca_pem = Path(info["root_ca"]).read_text()
        self.seen: list[tuple[str, int, int]] = []       # accumulated across restarts: (outbox, seq, n)

    @property
    def emulator(self):
        assert self.thread is not None, "hub is stopped"
        return self.thread.emulator

    @property
    def hub(self):
        return self.emulator.hub

    def start(self) -> None:
        self.thread = EmulatorThread(self.config)
        self.thread.__enter__()

    def stop(self) -> None:
        self._collect()
        assert self.thread is not None
        self.thread.__exit__(None, None, None)
        self.thread = None

    def drop(self) -> None:
        """Close the device's connection from the hub's side (on the hub's own loop)."""
        async def drop() -> None:
            self.hub.faults.drop(DEVICE)

        self.thread.call(drop())

    def credentials(self, force: bool = False) -> HubCredentials:
        return HubCredentials(self.hostname, DEVICE, sign=key_signer(base64.b64decode(self.key)),
                              ca_pem=self.ca_pem, source="test")

    def connection_string(self) -> str:
        return f"HostName={self.hostname};DeviceId={DEVICE};SharedAccessKey={self.key}"

    def _collect(self) -> None:
        if self.thread is None:
            return
        records = self.hub.state.telemetry(after_seq=0, limit=10_000_000)
        self.seen = []
        self._records = records
        for record in records:
            body = json.loads(record.payload)
            for group in body.get("sensors", {}).values():
                for r in group["readings"]:
                    self.seen.append((body["outbox"], r["seq"], int(r.get("values", {}).get("n", -1))))

    def readings(self) -> list[tuple[str, int, int]]:
        """Every (outbox, seq, n) the hub stored, duplicates included, in arrival order."""
        self._collect()
        return list(self.seen)

    def records(self):
        self._collect()
        return self._records


class CountingSensor:
    """A sensor whose readings are 0, 1, 2, ...; remembers what it produced."""

    def __init__(self, sensor_id: str = "counter") -> None:
        self.id = sensor_id
        self.produced: list[int] = []
        self._lock = threading.Lock()

    def read(self):
        with self._lock:
            n = len(self.produced)
            self.produced.append(n)
        return SimpleNamespace(sensor_id=self.id, driver="counter", chip="counter", values={"n": n},
                               units={"n": "1"}, timestamp=time.time(), error=None, error_kind=None)


def agent_config(state_dir: Path, *, interval_s: float = 0.01, **hub: object) -> Config:
    config, problems = parse_config({
        "device": {"state_dir": str(state_dir), "platform": "emulated"},
        "identity": {"method": "connection-string", "connection_string_file": str(state_dir / "cs")},
        "telemetry": {"interval_s": interval_s, "batch_max_delay_s": 0.2, "max_in_flight": 8},
    })
    assert config is not None, problems
    # Test-speed timings below the minimums a real device is allowed (backoff of milliseconds, short tokens).
    base = dict(connect_timeout_s=5.0, send_timeout_s=2.0, backoff_base_s=0.05, backoff_cap_s=0.5)
    base.update(hub)
    return dataclasses.replace(config, hub=dataclasses.replace(HubConfig(), **base))


def make_daemon(hub: Hub, state_dir: Path, sensor: CountingSensor, **hub_settings: object) -> Daemon:
    return Daemon(agent_config(state_dir, **hub_settings), sensors=[sensor], credentials=hub.credentials,
                  attach_management=False)


async def wait_for(condition, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def produce(daemon: Daemon, sensor: CountingSensor, at_least: int) -> None:
    """Let the counter run until it produced ``at_least`` readings."""
    await wait_for(lambda: len(sensor.produced) >= at_least, what=f"{at_least} readings")


async def stop_sensor(daemon: Daemon, sensor: CountingSensor) -> None:
    assert daemon.sensors is not None
    daemon.sensors.apply(sensor.id, {"enabled": False})
    await asyncio.sleep(0.1)     # a read already in its worker thread finishes and is stored


def assert_lossless(produced: list[int], seen: list[tuple[str, int, int]]) -> dict:
    """Every produced value reached the hub; repeats are only redeliveries of the same (outbox, seq)."""
    by_id: dict[tuple[str, int], set[int]] = defaultdict(set)
    for outbox, seq, n in seen:
        by_id[(outbox, seq)].add(n)
    conflicting = {k: v for k, v in by_id.items() if len(v) > 1}
    assert not conflicting, f"one reading id carried different values: {conflicting}"
    delivered = {n for values in by_id.values() for n in values}
    missing = sorted(set(produced) - delivered)
    assert not missing, f"{len(missing)} readings never reached the hub, first {missing[:10]}"
    return {"produced": len(produced), "stored": len(seen), "duplicates": len(seen) - len(by_id)}

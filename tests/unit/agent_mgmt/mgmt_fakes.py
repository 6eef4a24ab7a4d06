"""Small stand-ins for the rest of the agent, shaped like agent.context.AgentContext."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.config import parse_config


def make_config(tmp_path: Path, **sections: dict) -> Any:
    data = {"device": {"state_dir": str(tmp_path / "state"), "board": "rpi-4b"},
            "identity": {"method": "connection-string", "connection_string_file": "conn.txt"}}
    for name, table in sections.items():
        data[name] = {**data.get(name, {}), **table}
    config, problems = parse_config(data, base_dir=tmp_path)
    assert config is not None, problems
    return config


class FakeUplink:
    def __init__(self) -> None:
        self.connected = True
        self.method_handler = self.desired_handler = self.c2d_handler = None
        self.reported: list[dict] = []
        self.twin: dict = {"desired": {"$version": 1}, "reported": {}}
        self.uploads: list[tuple[str, bytes]] = []
        self.upload_error: Exception | None = None
        self.fail_patch = False

    def on_method(self, handler):
        self.method_handler = handler

    def on_desired(self, handler):
        self.desired_handler = handler

    def on_c2d(self, handler):
        self.c2d_handler = handler

    async def get_twin(self) -> dict:
        return copy.deepcopy(self.twin)

    async def patch_reported(self, patch: dict) -> None:
        if self.fail_patch:
            raise ConnectionError("offline")
        self.reported.append(copy.deepcopy(patch))

    async def upload_blob(self, blob_name: str, data: bytes) -> str:
        if self.upload_error:
            raise self.upload_error
        self.uploads.append((blob_name, data))
        return f"https://blob.example/{blob_name}"

    def last(self, name: str) -> Any:
        for patch in reversed(self.reported):
            if name in patch:
                return patch[name]
        raise AssertionError(f"{name} was never reported")


class FakeSensors:
    """Sensor control that refuses settings the way the sampler does (ValueError, no partial change)."""

    def __init__(self, ids=("climate", "air")) -> None:
        self._settings = {sid: {"enabled": True, "interval_s": 10.0, "deadband": 0.0, "rate_limit_s": 0.0,
                                "window_s": 0.0} for sid in ids}
        self.refuse: dict[str, str] = {}
        self.applied: list[tuple[str, dict]] = []

    def sensor_ids(self) -> list[str]:
        return list(self._settings)

    def settings(self) -> dict[str, dict]:
        return copy.deepcopy(self._settings)

    def apply(self, sensor_id: str, settings: dict) -> None:
        if sensor_id in self.refuse:
            raise ValueError(self.refuse[sensor_id])
        self._settings[sensor_id] = dict(settings)
        self.applied.append((sensor_id, dict(settings)))


class FakePin:
    def __init__(self) -> None:
        self.states: list[int] = []

    def on(self) -> None:
        self.states.append(1)

    def off(self) -> None:
        self.states.append(0)


@dataclass
class FakeBoard:
    status_led: int | None = 17


class FakePlatform:
    def __init__(self, led: int | None = 17) -> None:
        self.board = FakeBoard(led)
        self.pins: dict[int, FakePin] = {}

    def pin(self, number: int, mode: int | None = None, pull: int | None = None) -> FakePin:
        return self.pins.setdefault(number, FakePin())


@dataclass
class FakeContext:
    config: Any
    state_dir: Path
    uplink: FakeUplink = field(default_factory=FakeUplink)
    sensors: FakeSensors = field(default_factory=FakeSensors)
    platform: FakePlatform = field(default_factory=FakePlatform)
    events: list = field(default_factory=list)
    reboots: list = field(default_factory=list)
    reprovisions: list = field(default_factory=list)
    log_levels: list = field(default_factory=list)
    stats: dict = field(default_factory=lambda: {"depth": 3, "bytes": 1000, "dropped": 0, "sent": 10})

    def outbox_stats(self) -> dict:
        return dict(self.stats)

    def emit(self, body: dict, properties) -> None:
        self.events.append((body, dict(properties)))

    def request_reboot(self, delay_s: float, reason: str) -> None:
        self.reboots.append((delay_s, reason))

    def request_reprovision(self, reason: str) -> None:
        self.reprovisions.append(reason)

    def set_log_level(self, level: str) -> None:
        self.log_levels.append(level)

"""The seam between the daemon core (sampling, outbox, uplink) and cloud management (twin, methods, health).

The daemon builds one object that satisfies AgentContext and hands it to ``agent.management.attach``; management
code only talks to the rest of the agent through it, so either side can be tested against a small fake.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

# on_method handler: (method name, payload) -> (HTTP-like status, JSON-able result)
MethodHandler = Callable[[str, Any], Awaitable[tuple[int, Any]]]
DesiredHandler = Callable[[dict], Awaitable[None]]          # a desired-properties patch (carries "$version")
C2DHandler = Callable[[bytes, Mapping[str, str]], Awaitable[None]]  # body, custom + system properties


class Uplink(Protocol):
    """The agent's connection to IoT Hub (or a gateway). It owns reconnects and token renewal."""

    @property
    def connected(self) -> bool: ...

    def on_method(self, handler: MethodHandler) -> None: ...
    def on_desired(self, handler: DesiredHandler) -> None: ...
    def on_c2d(self, handler: C2DHandler) -> None: ...

    async def get_twin(self) -> dict: ...                    # {"desired": {...}, "reported": {...}}
    async def patch_reported(self, patch: dict) -> None: ...
    async def upload_blob(self, blob_name: str, data: bytes) -> str: ...   # IoT Hub file upload; returns the URL


class SensorControl(Protocol):
    """Live control of sampling, applied by twin configuration and methods."""

    def sensor_ids(self) -> list[str]: ...
    def settings(self) -> dict[str, dict]: ...               # current per-sensor settings, JSON-able
    def apply(self, sensor_id: str, settings: dict) -> None: ...   # raises ValueError with a reason; no partial change


class AgentContext(Protocol):
    config: Any                 # agent.config.Config
    state_dir: Path
    uplink: Uplink
    sensors: SensorControl
    platform: Any               # hal.platform.Platform (status LED, clock)

    def outbox_stats(self) -> dict: ...                       # depth, bytes, dropped, sent, ...
    def emit(self, body: dict, properties: Mapping[str, str]) -> None: ...   # queue an event (alert) via the outbox
    def request_reboot(self, delay_s: float, reason: str) -> None: ...
    def request_reprovision(self, reason: str) -> None: ...
    def set_log_level(self, level: str) -> None: ...

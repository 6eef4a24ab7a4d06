"""hub.transport = "mqtt-ws": DPS and the hub reached over MQTT over WebSockets on 443, with 8883 closed."""

from __future__ import annotations

import asyncio

import mgmtrig
import pytest
from mgmtrig import config, enroll_symmetric, new_key, write_secret

from agent.identity import ProvisioningError, resolve
from agent.uplink import HubUplink


@pytest.fixture
def emu_443_only(tmp_path, loopback_address):
    # MQTT's own listener on a random port: the SDK, which always uses 8883 for MQTT, can only get in over 443.
    emulator = mgmtrig.start(tmp_path / "emu", loopback_address, websocket_port=443, mqtt_port=0)
    yield emulator
    emulator.stop()


def _symmetric(tmp_path, emu, transport: str):
    key = new_key()
    enroll_symmetric(emu, "pi-ws-1", key)
    return config(tmp_path, emu, {"method": "symmetric", "registration_id": "pi-ws-1",
                                  "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key))},
                  hub={"transport": transport, "connect_timeout_s": 10, "send_timeout_s": 10})


def test_provisions_and_sends_over_websockets(emu_443_only, tmp_path):
    cfg = _symmetric(tmp_path, emu_443_only, "mqtt-ws")
    creds = resolve(cfg, cfg.state_dir)
    assert creds.device_id == "pi-ws-1" and creds.hostname == emu_443_only.emulator.hub.hostname

    async def main() -> None:
        uplink = HubUplink(cfg.hub, lambda force=False: creds)
        task = asyncio.create_task(uplink.run())
        try:
            assert await uplink.wait_connected(30), uplink.stats.last_error
            await uplink.send(b'{"t": 21.5}', message_id="ws-1", properties={"schema": "roost.telemetry.v1"})
            await uplink.patch_reported({"transport": "mqtt-ws"})
        finally:
            await uplink.stop()
            await task

    asyncio.run(main())
    hub = emu_443_only.emulator.hub
    (record,) = hub.state.telemetry(device_id="pi-ws-1")
    assert record.payload == b'{"t": 21.5}' and record.system_properties["$.mid"] == "ws-1"
    assert hub.state.get_twin("pi-ws-1").reported["transport"] == "mqtt-ws"


def test_plain_mqtt_cannot_reach_a_hub_that_serves_only_443(emu_443_only, tmp_path):
    cfg = _symmetric(tmp_path, emu_443_only, "mqtt")
    with pytest.raises(ProvisioningError) as failure:
        resolve(cfg, cfg.state_dir)
    assert "8883" in f"{failure.value} {failure.value.fix}"


def test_file_upload_and_the_service_api_share_port_443_with_websockets(emu_443_only, tmp_path):
    from emulator.hub.service_api import ServiceApi, ServiceOptions

    service = ServiceApi(emu_443_only.emulator, ServiceOptions(device_port=443, write_discovery_file=False))
    emu_443_only.call(service.start())
    try:
        assert service.url().endswith(":443")   # no listener of its own: the WebSocket one answers HTTPS too
        cfg = _symmetric(tmp_path, emu_443_only, "mqtt-ws")
        creds = resolve(cfg, cfg.state_dir)

        async def main() -> str:
            uplink = HubUplink(cfg.hub, lambda force=False: creds)
            task = asyncio.create_task(uplink.run())
            try:
                assert await uplink.wait_connected(30), uplink.stats.last_error
                return await uplink.upload_blob("diagnostics/ws.txt", b"over 443")
            finally:
                await uplink.stop()
                await task

        url = asyncio.run(main())
    finally:
        emu_443_only.call(service.stop())
    assert url.endswith("diagnostics/ws.txt")
    stored = [p.read_bytes() for p in (tmp_path / "emu" / "blobs").rglob("*") if p.is_file()]
    assert b"over 443" in stored

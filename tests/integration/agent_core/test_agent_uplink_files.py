"""The uplink's edges against the hub emulator: a diagnostics bundle uploaded through IoT Hub file upload (TLS
verified against the identity's trust anchors, whatever REQUESTS_CA_BUNDLE says), C2D expiry passed on, and
connection failures explained in words that say what to fix."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl

import pytest
from agent_rig import DEVICE, CountingSensor, agent_config, wait_for
from azure.iot.device import Message

from agent.config import HubConfig
from agent.daemon import Daemon
from agent.identity.credentials import HubCredentials
from agent.uplink import HubUplink, _put_blob
from emulator.hub.service_api import ServiceApi, ServiceOptions, port_is_bindable
from emulator.pki import Pki


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


@pytest.fixture
def file_upload(hub, loopback_address):
    # The device SDK asks for storage info on port 443 of the hub's host name, always.
    if not port_is_bindable(loopback_address, 443):
        pytest.skip("the device SDK's file upload needs port 443, which this user may not bind")
    service = ServiceApi(hub.emulator, ServiceOptions(port=0, device_port=443, write_discovery_file=False))
    hub.thread.call(service.start())
    yield service
    hub.thread.call(service.stop())


def test_diagnostics_bundle_is_uploaded_and_verified(hub, file_upload, tmp_path, monkeypatch):
    # This machine points requests at the system bundle, which does not hold the emulator's root: with the
    # environment trusted, the upload would be checked against the wrong anchors.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", ssl.get_default_verify_paths().cafile or "/nonexistent")
    daemon = Daemon(agent_config(tmp_path / "agent", interval_s=1.0), sensors=[CountingSensor()],
                    credentials=hub.credentials)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.uplink is not None and daemon.uplink.connected, what="connect")
        result = await asyncio.to_thread(
            hub.thread.call, hub.hub.invoke_method(DEVICE, "getDiagnostics", {"includeLogs": False}, timeout_s=30))
        daemon.stop()
        return await task, result

    rc, result = run(scenario())
    assert rc == 0
    assert result.status == 200, result.payload
    assert result.payload["blobName"].startswith("diagnostics/")
    stored = [p for p in (hub.config.state_dir / "blobs").rglob("*") if p.is_file()]
    assert result.payload["sha256"] in {hashlib.sha256(p.read_bytes()).hexdigest() for p in stored}


def test_put_blob_refuses_an_endpoint_outside_the_trust_anchors(hub, file_upload, tmp_path):
    stranger = Pki(tmp_path / "other-pki").root().pem        # a root that never signed the blob endpoint
    url = f"{file_upload.url()}/fileupload/{DEVICE}/x"     # served with a certificate from the emulator's root
    ok, status, detail = _put_blob(url, b"data", 5.0, stranger)
    assert (ok, status) == (False, 0)
    assert "TLS verification" in detail and "hub.ca_file" in detail


def test_c2d_expiry_reaches_the_handler():
    uplink = HubUplink(HubConfig(), lambda force: None)
    seen = []

    async def handler(data, props):
        seen.append((data, props))

    uplink.on_c2d(handler)
    message = Message(b"cmd", message_id="m1")
    message.expiry_time_utc = "2026-11-23T16:00:00Z"        # what the SDK sets from the topic's $.exp
    message.custom_properties["command"] = "identify"
    asyncio.run(uplink._deliver_c2d(message))
    assert seen == [(b"cmd", {"command": "identify", "$.message_id": "m1",
                              "$.expiry_time_utc": "2026-11-23T16:00:00Z"})]


def test_a_connection_failure_is_explained(hub, tmp_path, caplog):
    # The device trusts another root than the one the hub's certificate chains to (a wrong hub.ca_file).
    wrong_root = Pki(tmp_path / "other-pki").root().pem

    def credentials(force: bool) -> HubCredentials:
        good = hub.credentials(force)
        return HubCredentials(good.hostname, good.device_id, sign=good.sign, ca_pem=wrong_root, source="test")

    config = agent_config(tmp_path / "agent")
    uplink = HubUplink(config.hub, credentials)

    async def scenario():
        task = asyncio.create_task(uplink.run())
        await wait_for(lambda: uplink.stats.connect_failures >= 1, what="a failed attempt")
        await uplink.stop()
        await asyncio.wait_for(task, 15)

    with caplog.at_level(logging.WARNING, logger="agent.uplink"):
        run(scenario())
    assert not uplink.connected
    message = uplink.stats.last_error
    # describe_connect_failure's words (it probed the TLS chain), not the SDK's bare ConnectionFailedError
    assert "root CA" in message and "hub.ca_file" in message, message
    assert "ConnectionFailedError" not in message
    assert message in caplog.text

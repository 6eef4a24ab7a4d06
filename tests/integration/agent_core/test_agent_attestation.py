"""Health attestation from the running agent: TPM identity (swtpm) through the DPS emulator, a quote checked by
the emulator's attestation service after connecting, and the attestHealth method that attests again."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import pytest
from agent_rig import CountingSensor

from agent.config import parse_config
from agent.daemon import Daemon
from agent.tpm.device import Tpm, registration_id
from emulator.board.swtpm import SwTpm
from emulator.hub.health_attestation import serve_for_emulator
from emulator.hub.server import EmulatorConfig, EmulatorThread
from emulator.hub.state import Attestation, Enrollment

pytestmark = pytest.mark.tpm


def wait_for(predicate, timeout: float = 45.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_agent_attests_after_connecting_and_on_the_method(tmp_path, loopback_address):
    emu = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "emu", address=loopback_address,
                                        dps_https_port=0)).start()
    swtpm = SwTpm.manufactured(tmp_path / "swtpm", host=loopback_address).start()
    service = serve_for_emulator(emu.emulator, loopback_address).start()
    loop_box: dict = {}
    thread = None
    daemon = None
    try:
        with Tpm(swtpm.tcti) as tpm:
            ek = tpm.ek_public()
        device_id = registration_id(ek)
        emu.emulator.dps.state.put_enrollment(
            Enrollment(device_id, Attestation("tpm", endorsement_key=base64.b64encode(ek).decode())))
        info = emu.emulator.connection_info()
        config, problems = parse_config({
            "device": {"state_dir": str(tmp_path / "state"), "platform": "emulated"},
            "identity": {"method": "tpm", "tpm_tcti": swtpm.tcti, "id_scope": info["dps"]["id_scope"],
                         "provisioning_host": info["dps"]["https"].removeprefix("https://"),
                         "provisioning_ca_file": info["root_ca"]},
            "hub": {"ca_file": info["root_ca"], "connect_timeout_s": 10.0},
            "telemetry": {"interval_s": 1.0, "batch_max_delay_s": 0.2},
            "health": {"attestation_url": service.url, "attestation_ca_file": info["root_ca"]},
        })
        assert config is not None, problems
        daemon = Daemon(config, sensors=[CountingSensor()])

        async def run() -> int:
            loop_box["loop"] = asyncio.get_running_loop()
            return await daemon.run()

        thread = threading.Thread(target=lambda: loop_box.setdefault("rc", asyncio.run(run())), daemon=True)
        thread.start()
        verdict = wait_for(lambda: daemon.attestation, what="attestation after connecting")
        assert verdict["verdict"] == "healthy", verdict
        hub = emu.emulator.hub
        twin = wait_for(lambda: hub.state.get_twin(device_id), what="the device twin")
        assert twin.tags["healthAttestation"]["verdict"] == "healthy"

        swtpm.extend_pcr(4, b"a kernel nobody signed")     # the next attestation sees a different boot
        result = emu.call(hub.invoke_method(device_id, "attestHealth", None, timeout_s=30))
        assert result.status == 200, result.payload
        assert result.payload["verdict"] == "unhealthy"
        assert any("PCR 4" in reason for reason in result.payload["reasons"])
        assert daemon.attestation["verdict"] == "unhealthy"

        service.stop()                                      # the service is gone: a clear error, not a crash
        result = emu.call(hub.invoke_method(device_id, "attestHealth", None, timeout_s=30))
        assert result.status in (502, 503), result.payload
        assert "fix" in result.payload
        assert daemon.uplink.connected
    finally:
        if thread is not None and "loop" in loop_box:
            loop_box["loop"].call_soon_threadsafe(daemon.stop, "test finished")
            thread.join(30)
        swtpm.stop()
        emu.stop()
    assert loop_box.get("rc") == 0

"""The whole agent with a TPM identity: the real daemon (emulated board) provisions through DPS TPM
attestation, streams telemetry with TPM-signed SAS tokens renewed mid-stream, and re-provisions on the
`reprovision` method."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import threading

import pytest
from roost_test_support import wait_for as _wait_for

from agent.config import parse_config
from agent.tpm.device import Tpm, registration_id
from emulator.hub.server import EmulatorConfig, EmulatorThread
from emulator.hub.state import Attestation, Enrollment


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    return _wait_for(predicate, timeout, what)


pytestmark = pytest.mark.tpm




class Agent:
    """The roost daemon on a thread with its own event loop."""

    def __init__(self, config) -> None:
        from agent.daemon import Daemon

        self.daemon = Daemon(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        ready = threading.Event()

        async def run() -> int:
            self.loop = asyncio.get_running_loop()
            ready.set()
            return await self.daemon.run()

        self.thread = threading.Thread(target=lambda: asyncio.run(run()), name="roost-agent", daemon=True)
        self.thread.start()
        ready.wait(10)

    @property
    def connected(self) -> bool:
        uplink = self.daemon.uplink
        return bool(uplink is not None and uplink.connected)

    def stop(self) -> None:
        if self.thread.is_alive() and self.loop is not None:
            self.loop.call_soon_threadsafe(self.daemon.stop, "test finished")
        self.thread.join(30)


def test_agent_provisions_with_the_tpm_streams_and_reprovisions(swtpm, tmp_path, loopback_address):
    emu = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "emu", address=loopback_address,
                                        dps_https_port=0)).start()
    agent = None
    try:
        with Tpm(swtpm.tcti) as tpm:
            ek = tpm.ek_public()
        reg_id = registration_id(ek)
        dps = emu.emulator.dps
        dps.state.put_enrollment(Enrollment(reg_id, Attestation("tpm", endorsement_key=base64.b64encode(ek).decode())))
        info = emu.emulator.connection_info()
        config, problems = parse_config({
            "device": {"state_dir": str(tmp_path / "state"), "platform": "emulated", "board": "rpi-4b"},
            "identity": {"method": "tpm", "tpm_tcti": swtpm.tcti, "id_scope": info["dps"]["id_scope"],
                         "provisioning_host": info["dps"]["https"].removeprefix("https://"),
                         "provisioning_ca_file": info["root_ca"]},
            "hub": {"ca_file": info["root_ca"], "connect_timeout_s": 10.0, "sas_ttl_s": 180, "renew_before_s": 60},
            "telemetry": {"interval_s": 1.0, "batch_max_delay_s": 0.2},
        })
        assert config is not None, problems
        # The uplink renews the token (signed in the TPM) 8 s after each connect, so renewal happens during the
        # test. Config check refuses so short a period for a real device (it would renew all day), hence the
        # replace after validation. The TTL stays above the SDK's own 120 s margin.
        config = dataclasses.replace(config, hub=dataclasses.replace(config.hub, renew_before_s=172))
        agent = Agent(config)
        wait_for(lambda: agent.connected, what="agent connected with its TPM identity")
        hub = emu.emulator.hub
        wait_for(lambda: hub.state.telemetry(device_id=reg_id), what="telemetry from the agent")
        first_operation = dps.state.get_registration(reg_id).operation_id

        result = emu.call(hub.invoke_method(reg_id, "reprovision", None, timeout_s=20))
        assert result.status == 202
        wait_for(lambda: dps.state.get_registration(reg_id).operation_id != first_operation,
                 what="a new DPS registration")
        wait_for(lambda: agent.daemon.uplink.stats.reprovisions >= 1 and agent.connected, what="reconnected")
        seen = len(hub.state.telemetry(device_id=reg_id))
        wait_for(lambda: len(hub.state.telemetry(device_id=reg_id)) > seen, what="telemetry after re-provisioning")
        wait_for(lambda: agent.daemon.uplink.stats.token_renewals >= 1, what="a TPM-signed token renewal")
        seen = len(hub.state.telemetry(device_id=reg_id))

        def readings_since_renewal() -> list[dict]:
            # The agent's own telemetry batches (it also sends events, e.g. health alerts, on the same route).
            bodies = [json.loads(r.payload) for r in hub.state.telemetry(device_id=reg_id)[seen:]]
            return [b for b in bodies if b.get("schema") == "roost.telemetry.v1"]
        wait_for(readings_since_renewal, what="sensor readings after the renewal")
    finally:
        if agent is not None:
            agent.stop()
        emu.stop()

"""The daemon drives the A/B update engine: an armed trial boot that reaches the hub emulator is committed, one
that cannot reach it before the trial deadline is rolled back (and the board told to reboot)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path

from agent_rig import DEVICE, CountingSensor, agent_config, wait_for

from agent.daemon import Daemon
from agent.management.manager import Management
from firmware.engine import UpdateEngine
from firmware.state import BAD, GOOD

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "firmware"))
from fwrig import Rig  # (the firmware tests' emulated device: slot files, boot ROM, signing keys)


def armed_trial_boot(tmp_path: Path) -> Rig:
    """A device that installed 2.0 into slot b and rebooted into its one-time trial boot."""
    rig = Rig(tmp_path / "device")
    engine = rig.engine()
    assert engine.boot().mode == "normal"
    engine.install(str(rig.bundle("2.0")), reboot=True)
    outcome = rig.power_on()
    assert (outcome.slot, outcome.trial) == ("b", True)
    return rig


def daemon_for(rig: Rig, state_dir: Path, credentials, trial_deadline: float) -> Daemon:
    update = dataclasses.replace(rig.config, trial_deadline=trial_deadline)
    config = dataclasses.replace(agent_config(state_dir), update=update)
    # The engine the daemon would build from [update], with the emulated board's reboot instead of a command.
    engine = UpdateEngine(update, rebooter=rig.board.reboot)
    return Daemon(config, sensors=[CountingSensor()], credentials=credentials, attach_management=False,
                  update_engine=engine)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def test_trial_boot_that_reaches_the_hub_is_committed(hub, tmp_path):
    rig = armed_trial_boot(tmp_path)
    daemon = daemon_for(rig, tmp_path / "agent", hub.credentials, trial_deadline=30)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.trial_report is not None, what="the trial's verdict")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    assert daemon.boot_report.action == "health-check"
    assert daemon.trial_report.ok, daemon.trial_report.failures()
    assert daemon.trial_report.results["hub-connected"] == (True, "")
    status = rig.engine().status()
    assert status["slots"]["b"]["status"] == GOOD
    assert status["primary_slot"] == "b" and status["pending"] is None
    assert rig.board.reboots == [True]                 # only the install's trial reboot: nothing rolled back
    # management's deviceInfo reports the slot the daemon booted from
    assert Management(daemon).device_info()["firmwareSlot"] == "b"
    assert hub.hub.state.find_device(DEVICE) is not None


def test_trial_boot_that_cannot_reach_the_hub_is_rolled_back(tmp_path, loopback_address):
    rig = armed_trial_boot(tmp_path)

    def no_hub(force: bool):
        raise ConnectionError(f"nothing listens on {loopback_address}")

    daemon = daemon_for(rig, tmp_path / "agent", no_hub, trial_deadline=2)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.trial_report is not None, what="the trial's verdict")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    assert not daemon.trial_report.ok
    assert "not connected to IoT Hub" in daemon.trial_report.failures()
    status = rig.engine().status()
    assert status["slots"]["b"]["status"] == BAD
    assert status["primary_slot"] == "a" and status["pending"] is None
    assert rig.board.reboots == [True, False]          # the rollback rebooted into slot a
    assert rig.power_on().slot == "a"


def test_without_an_update_table_the_boot_loader_is_left_alone(hub, tmp_path):
    daemon = Daemon(agent_config(tmp_path / "agent"), sensors=[CountingSensor()], credentials=hub.credentials,
                    attach_management=False)

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await wait_for(lambda: daemon.uplink is not None and daemon.uplink.connected, what="connect")
        daemon.stop()
        return await task

    assert run(scenario()) == 0
    assert daemon.updates is None and daemon.firmware_slot is None
    assert Management(daemon).device_info()["firmwareSlot"] == "unknown"

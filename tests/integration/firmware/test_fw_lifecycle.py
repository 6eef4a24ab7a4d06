"""Install -> trial boot -> commit or rollback -> golden, on each of the three boot backends."""

from __future__ import annotations

import json

import pytest
from fwrig import Rig

from firmware.errors import PolicyError, StateError
from firmware.state import BAD, GOOD

BACKENDS = ["emulated", "rpi-tryboot", "uboot"]


@pytest.fixture(params=BACKENDS)
def rig(request, tmp_path) -> Rig:
    return Rig(tmp_path, request.param)


def state_of(rig: Rig) -> dict:
    return json.loads((rig.config.state_dir / "update" / "state.json").read_text())


def test_healthy_update_is_committed(rig):
    bundle = rig.bundle("2.0", security_version=3)
    result = rig.engine().install(str(bundle), reboot=True)
    assert result.slot == "b"
    assert rig.board.reboots == [True]
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"]) == ("b", "2.0")
    assert report.mode == "normal"
    status = rig.engine().status()
    assert status["booted_slot"] == "b" and status["primary_slot"] == "b" and status["mode"] == "normal"
    assert status["slots"]["b"]["status"] == GOOD and status["security_version_floor"] == 3
    assert status["last_result"]["result"] == "committed"
    # later boots stay on the new slot
    assert rig.power_on().slot == "b"


def test_unhealthy_update_rolls_back_and_is_not_retried(rig):
    bundle = rig.bundle("2.0-broken", healthy=False)
    rig.engine().install(str(bundle), reboot=True)
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"]) == ("a", "1.0")
    assert report.mode == "normal"
    status = rig.engine().status()
    assert status["slots"]["b"]["status"] == BAD
    assert status["last_result"]["result"] == "rolled-back"
    assert "health checks failed" in status["last_result"]["detail"]
    # ADU issue 460: the same failed bundle must not loop
    with pytest.raises(PolicyError, match="already failed a trial boot"):
        rig.engine().install(str(bundle))


def test_hung_trial_falls_back_after_watchdog_reset(rig):
    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    trial = rig.board.power_on()
    assert trial.trial and trial.slot == "b"
    # the new system hangs before its agent runs: the watchdog resets the board
    outcome, report = rig.settle()
    assert outcome.slot == "a" and report.mode == "normal"
    assert state_of(rig)["slots"]["b"]["status"] == BAD
    assert "did not come up" in state_of(rig)["last_result"]["detail"]


def test_second_update_after_commit_uses_the_other_slot(rig):
    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    rig.settle()
    result = rig.engine().install(str(rig.bundle("3.0", security_version=2)), reboot=True)
    assert result.slot == "a"
    outcome, _ = rig.settle()
    assert (outcome.slot, outcome.image["version"]) == ("a", "3.0")


def test_repeated_failures_end_in_golden_image_which_accepts_a_good_bundle(rig):
    for n in range(3):
        rig.engine().install(str(rig.bundle(f"2.{n}-broken", healthy=False)), reboot=True)
        outcome, report = rig.settle()
    assert outcome.slot == "golden" and report.mode == "golden"
    assert state_of(rig)["failed_trials"] == 3
    assert rig.engine().status()["mode"] == "golden"
    # the golden image reports and waits; a good bundle brings the device back to slot a
    result = rig.engine().install(str(rig.bundle("3.0")), reboot=True)
    assert result.slot == "a"
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"], report.mode) == ("a", "3.0", "normal")
    assert state_of(rig)["failed_trials"] == 0


def test_installing_the_running_bundle_again_is_a_no_op(rig):
    bundle = rig.bundle("2.0")
    rig.engine().install(str(bundle), reboot=True)
    rig.settle()
    before = rig.digest("a")
    result = rig.engine().install(str(bundle))
    assert result.already_installed and result.slot == "b"
    assert rig.digest("a") == before and rig.board.reboots == [True]


def test_mark_good_outside_a_trial_is_refused(rig):
    with pytest.raises(StateError, match="nothing to mark good"):
        rig.engine().mark_good()


def test_manual_rollback_to_the_previous_committed_slot(rig):
    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    rig.settle()
    assert rig.engine().rollback("operator asked", reboot=True) == "a"
    outcome, report = rig.settle()
    assert (outcome.slot, outcome.image["version"], report.mode) == ("a", "1.0", "normal")


def test_boot_is_idempotent_while_armed(rig):
    rig.engine().install(str(rig.bundle("2.0")))          # armed, not rebooted yet
    first = rig.engine().boot()
    second = rig.engine().boot()
    assert first.mode == second.mode == rig.engine().status()["mode"] == "armed"
    assert state_of(rig)["pending"]["phase"] == "armed"


def test_cancel_an_armed_trial(rig):
    rig.engine().install(str(rig.bundle("2.0")))
    assert rig.engine().rollback("changed my mind") == "a"
    outcome, report = rig.settle()
    assert outcome.slot == "a" and report.mode == "normal" and not outcome.trial


def test_golden_bundle_goes_to_the_golden_slot_without_trial(rig):
    result = rig.engine().install(str(rig.bundle("golden-2", golden=True)))
    assert result.slot == "golden"
    assert state_of(rig)["slots"]["golden"]["status"] == GOOD and state_of(rig)["pending"] is None
    assert rig.board.reboots == []


def test_command_line_cycle(tmp_path, capsys):
    from agent.cli import main

    rig = Rig(tmp_path, "rpi-tryboot")
    config = str(rig.config_file())
    assert main(["update", "--config", config, "install", str(rig.bundle("2.0"))]) == 0
    assert "trial boot armed" in capsys.readouterr().out
    rig.board.reboot(True)
    assert rig.power_on().trial
    assert main(["update", "--config", config, "status"]) == 0
    out = capsys.readouterr().out
    assert "booted slot b (trial boot)" in out and "pending: trial of slot b (armed)" in out
    assert main(["update", "--config", config, "check", "--no-reboot"]) == 0
    assert "committed" in capsys.readouterr().out
    assert main(["update", "--config", config, "status", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["primary_slot"] == "b" and status["last_result"]["result"] == "committed"
    assert main(["update", "--config", config, "mark-good"]) == 17
    assert "nothing to mark good" in capsys.readouterr().err
    assert main(["update", "--config", config, "rollback"]) == 0
    assert rig.engine().status()["primary_slot"] == "a"


def test_configured_reboot_commands_drive_the_tryboot_flag(tmp_path, capsys):
    """The reboot command is configuration: here it sets the emulated firmware's one-shot tryboot flag."""
    from agent.cli import main

    rig = Rig(tmp_path, "rpi-tryboot")
    path = rig.config_file()
    flag = rig.board.tryboot_flag
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.startswith(("reboot_command", "trial_reboot_command")))
    path.write_text(text + f'\nreboot_command = ["true"]\ntrial_reboot_command = ["sh", "-c", "echo 1 > {flag}"]\n')
    assert main(["update", "--config", str(path), "install", "--reboot", str(rig.bundle("2.0"))]) == 0
    assert "rebooting into its trial boot" in capsys.readouterr().out
    assert flag.exists()
    outcome = rig.power_on()
    assert (outcome.slot, outcome.trial) == ("b", True) and not flag.exists()
    path.write_text(path.read_text().replace('reboot_command = ["true"]', 'reboot_command = ["false"]'))
    # rolling back by hand in the trial boot (before `check` ran) returns to slot a, even if the reboot fails
    assert main(["update", "--config", str(path), "rollback", "--reboot"]) == 16
    assert "reboot command ['false'] failed" in capsys.readouterr().err
    status = rig.engine().status()
    assert status["primary_slot"] == "a" and status["slots"]["b"]["status"] == "bad"
    assert rig.power_on().slot == "a"


def test_mark_good_by_hand_in_the_trial_boot(rig):
    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    assert rig.power_on().trial
    rig.engine().mark_good()                 # before boot() ran in this boot
    outcome, report = rig.settle()
    assert (outcome.slot, report.mode) == ("b", "normal")


def test_install_in_an_unreconciled_trial_boot_is_refused(rig):
    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    assert rig.power_on().trial
    with pytest.raises(StateError, match="is in its trial boot"):
        rig.engine().install(str(rig.bundle("3.0")))
    assert rig.engine().status()["primary_slot"] == "a"


def test_install_after_an_unrecorded_failed_trial_records_it_first(rig):
    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    rig.power_on()                                   # trial hangs
    assert rig.power_on().slot == "a"                # watchdog: back to a, boot() not run yet
    result = rig.engine().install(str(rig.bundle("3.0")), reboot=True)
    assert result.slot == "b"
    assert rig.engine().status()["failed_trials"] == 1
    outcome, _ = rig.settle()
    assert (outcome.slot, outcome.image["version"]) == ("b", "3.0")


def test_async_trial_for_the_agent_event_loop(rig):
    import asyncio

    rig.engine().install(str(rig.bundle("2.0")), reboot=True)
    rig.power_on()
    engine = rig.engine()
    assert engine.boot().action == "health-check"

    async def hub_connected():
        return True, ""

    engine.health.register("hub-connected", hub_connected)
    report = asyncio.run(engine.arun_trial(deadline=0))
    assert report.ok and set(report.results) == {"image-healthy", "hub-connected"}
    assert rig.engine().status()["last_result"]["result"] == "committed"


def test_one_update_operation_at_a_time(rig):
    holder = rig.engine()
    with holder.store.locked():
        with pytest.raises(StateError, match="another update operation is running"):
            rig.engine().install(str(rig.bundle("2.0")))
        with pytest.raises(StateError, match="another update operation is running"):
            rig.engine().rollback()
        assert rig.engine().status()["pending"] is None      # reading needs no lock
    rig.engine().install(str(rig.bundle("2.0")))              # released on exit

"""System actions: commands from the config, values substituted after splitting (never shell syntax)."""

from __future__ import annotations

import pytest
from mgmt_fakes import make_config

from agent.management.system_actions import SystemActionError, SystemActions, parse_key_values


def test_values_cannot_add_arguments_or_shell_syntax(tmp_path):
    out = tmp_path / "out"
    actions = SystemActions({"set_timezone": f"sh -c 'printf \"%s|\" \"$@\" > {out}' sh {{timezone}}"})
    actions.set_timezone("Europe/Berlin; touch /tmp/pwned $(id)")
    assert out.read_text() == "Europe/Berlin; touch /tmp/pwned $(id)|"


def test_commands_come_from_the_config(tmp_path):
    config = make_config(tmp_path, management={"reboot_command": "/sbin/reboot now",
                                               "set_timezone_command": "tz-helper {timezone}"})
    actions = SystemActions.from_config(config)
    assert actions.argv("reboot") == ["/sbin/reboot", "now"]
    assert actions.argv("set_timezone", timezone="UTC") == ["tz-helper", "UTC"]
    assert actions.argv("time_status") == ["timedatectl", "show"]


def test_failures_name_the_fix():
    with pytest.raises(SystemActionError, match=r"set management\.reboot_command"):
        SystemActions({"reboot": "/nonexistent/systemctl reboot"}).reboot()
    with pytest.raises(SystemActionError, match="exited with status 3: nope"):
        SystemActions({"reboot": "sh -c 'echo nope >&2; exit 3'"}).reboot()
    with pytest.raises(SystemActionError, match="did not finish"):
        SystemActions({"reboot": "sleep 5"}, timeout_s=0.2).reboot()


def test_parse_timedatectl_show():
    assert parse_key_values(["Timezone=UTC", "NTP=yes", "junk", "=x"]) == {"Timezone": "UTC", "NTP": "yes"}

"""agent.config: the [update] table, token lifetimes, health attestation keys and the memory alert default."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config import MIN_SAS_TTL_S, HealthConfig, parse_config

BASE = {"identity": {"method": "connection-string", "connection_string_file": "/x"}}


def _update(tmp_path: Path, **over) -> dict:
    table = {"board": "rpi-4b", "slots": {"a": str(tmp_path / "a.img"), "b": str(tmp_path / "b.img")},
             "boot": {"backend": "emulated", "directory": str(tmp_path / "boot")}}
    table.update(over)
    return table


def _errors(problems):
    return {p.key: str(p) for p in problems if not p.warning}


def test_update_table_is_accepted_and_shares_the_state_dir(tmp_path):
    config, problems = parse_config({**BASE, "device": {"state_dir": str(tmp_path / "state")},
                                     "update": _update(tmp_path, trial_deadline=45)})
    assert _errors(problems) == {}
    assert config.update.board == "rpi-4b"
    assert config.update.boot == "emulated"
    assert config.update.boot_options == {"directory": str(tmp_path / "boot")}
    assert config.update.trial_deadline == 45.0
    assert config.update.state_dir == tmp_path / "state"
    assert sorted(config.update.slots) == ["a", "b"]


def test_no_update_table_means_no_updates():
    config, problems = parse_config(BASE)
    assert _errors(problems) == {}
    assert config.update is None


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"board": None}, "update.board", "board is missing"),
    ({"slots": {"a": "/dev/x"}}, "update.slots", "needs at least slots 'a' and 'b'"),
    ({"signature_threshold": 0}, "update.signature_threshold", "cannot be turned off"),
    ({"max_failed_trials": "3"}, "update.max_failed_trials", "write max_failed_trials = 3"),
    ({"verify_frist": True}, "update.verify_frist", "did you mean 'verify_first'"),
    ({"slots": {"a": {"size": 4}, "b": "/dev/y"}}, "update.slots.a", "needs a path"),
])
def test_bad_update_tables_are_problems_with_key_paths(tmp_path, change, key, words):
    table = _update(tmp_path, **change)
    table = {k: v for k, v in table.items() if v is not None}
    config, problems = parse_config({**BASE, "update": table})
    assert config is None
    errors = _errors(problems)
    assert key in errors, errors
    assert words in errors[key]


def test_update_must_be_a_table():
    config, problems = parse_config({**BASE, "update": "yes"})
    assert config is None
    assert "must be a table" in _errors(problems)["update"]


@pytest.mark.parametrize("ttl", [60, 120, 179])
def test_short_token_lifetimes_are_refused_with_the_reason(ttl):
    config, problems = parse_config({**BASE, "hub": {"sas_ttl_s": ttl, "renew_before_s": 10}})
    assert config is None
    message = _errors(problems)["hub.sas_ttl_s"]
    assert "120 s before expiry" in message and f"at least {MIN_SAS_TTL_S}" in message


def test_renew_before_that_leaves_no_time_between_renewals_is_refused():
    config, problems = parse_config({**BASE, "hub": {"sas_ttl_s": 600, "renew_before_s": 580}})
    assert config is None
    message = _errors(problems)["hub.renew_before_s"]
    assert "renewed every 20 s" in message and "at most 540" in message


def test_the_shortest_workable_lifetime_is_accepted():
    config, problems = parse_config({**BASE, "hub": {"sas_ttl_s": 180, "renew_before_s": 120}})
    assert _errors(problems) == {}
    assert config.hub.sas_ttl_s == 180


def test_renew_before_below_the_sdk_margin_is_a_warning():
    config, problems = parse_config({**BASE, "hub": {"sas_ttl_s": 3600, "renew_before_s": 30}})
    assert config is not None
    assert [p.key for p in problems if p.warning] == ["hub.renew_before_s"]


def test_attestation_needs_https_and_a_tpm_identity():
    config, problems = parse_config({**BASE, "health": {"attestation_url": "http://attest:8443"}})
    assert config is None
    assert any("is not an https URL" in str(p) for p in problems)
    assert any("identity.method = 'tpm'" in str(p) for p in problems)
    config, problems = parse_config({"identity": {"method": "tpm", "id_scope": "0ne1"},
                                     "health": {"attestation_url": "https://attest:8443",
                                                "attestation_ca_file": "ca.pem"}}, base_dir=Path("/etc/roost"))
    assert _errors(problems) == {}
    assert config.health.attestation_ca_file == "/etc/roost/ca.pem"


def test_memory_alert_default_sits_well_above_the_agents_footprint():
    from agent.management.health import HealthMonitor

    class Probe:
        def __init__(self, rss):
            self.rss = rss

        def __getattr__(self, name):
            return lambda *a: None

        def agent_rss_mb(self):
            return self.rss

    default = HealthConfig().memory_max_mb
    assert default >= 2 * 60   # the agent runs at ~45 MB (more on some builds): the default must not fire at start
    quiet = HealthMonitor(HealthConfig(), Probe(62.0)).sample({}, 1 << 20, 0.0, None)[1]
    assert not [a for a in quiet if a["alert"]["rule"] == "memoryHigh"]
    loud = HealthMonitor(HealthConfig(), Probe(default + 1)).sample({}, 1 << 20, 0.0, None)[1]
    assert [a["alert"]["state"] for a in loud if a["alert"]["rule"] == "memoryHigh"] == ["raised"]

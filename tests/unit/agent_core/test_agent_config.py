"""agent.config: defaults, strict checking with key paths and fixes, docs kept in step."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agent.config import (
    Config,
    ConfigError,
    SensorSettings,
    check_config,
    default_path,
    describe,
    load_config,
    parse_config,
    parse_sensor_settings,
)

ROOT = Path(__file__).resolve().parents[3]

GOOD = """
[device]
board = "rpi-4b"
platform = "emulated"
state_dir = "state"

[identity]
method = "symmetric"
id_scope = "0ne00000001"
registration_id = "dev-1"
symmetric_key_file = "device.key"

[telemetry]
batch_max_delay_s = 1.5

[telemetry.sensors.bme280]
interval_s = 2
deadband = 0.1

[management]
custom_thing = "kept for agent.management"
"""


def write(tmp_path: Path, text: str, name: str = "roost.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_documented_ones():
    config, problems = parse_config({"identity": {"method": "connection-string",
                                                  "connection_string_file": "/x"}})
    assert problems == []
    assert config.telemetry.batch_max_bytes == 4096
    assert config.telemetry.batch_max_delay_s <= 5
    assert config.device.state_dir == "/var/lib/roost"
    assert config.outbox_path == Path("/var/lib/roost/outbox.sqlite")
    assert config.hub.renew_before_s < config.hub.sas_ttl_s


def test_good_file_loads_and_resolves_relative_paths(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert config.device.state_dir == str(tmp_path / "state")
    assert config.identity.symmetric_key_file == str(tmp_path / "device.key")
    assert config.telemetry.sensors["bme280"] == SensorSettings(interval_s=2.0, deadband=0.1)
    assert config.sensor("bme280").interval_s == 2.0
    assert config.sensor("other").interval_s == config.telemetry.interval_s
    assert config.management.extra == {"custom_thing": "kept for agent.management"}
    assert isinstance(config.telemetry.sensors["bme280"].interval_s, float)


def test_wrong_choice_suggests_the_close_one(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD.replace('method = "symmetric"', 'method = "tmp"')))
    assert str(err.value.problems[0]) == ("identity.method: 'tmp' is not one of symmetric, x509, tpm, "
                                          "connection-string; did you mean 'tpm'?")


def test_transport_is_mqtt_or_websockets_and_picks_the_port(tmp_path):
    assert load_config(write(tmp_path, GOOD)).hub.port == 8883
    ws = load_config(write(tmp_path, GOOD + '\n[hub]\ntransport = "mqtt-ws"\n')).hub
    assert ws.websockets and ws.port == 443
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, GOOD + '\n[hub]\ntransport = "websockets"\n'))
    assert str(err.value.problems[0]).startswith("hub.transport: 'websockets' is not one of mqtt, mqtt-ws")


@pytest.mark.parametrize("snippet, key, words", [
    ('[telemetry]\nbatch_max_byte = 4000', "telemetry.batch_max_byte", "did you mean 'batch_max_bytes'"),
    ('[hub]\nsas_ttl_s = "3600"', "hub.sas_ttl_s", "without quotes"),
    ('[hub]\nsas_ttl_s = 3600.5', "hub.sas_ttl_s", "whole number"),
    ('[telemetry]\nbatch_max_delay_s = 30', "telemetry.batch_max_delay_s", "<= 5"),
    ('[telemetry]\nbatch_max_bytes = true', "telemetry.batch_max_bytes", "must be a whole number"),
    ('[telemetry.sensors.bme280]\nenabled = "yes"', "telemetry.sensors.bme280.enabled", "true or false"),
    ('[telemetry.sensors.bme280]\nintervall_s = 3', "telemetry.sensors.bme280.intervall_s", "interval_s"),
    ('[telemetry.sensors]\nbme280 = 5', "telemetry.sensors.bme280", "must be a table"),
    ('[methods]\ndisabled = "reboot"', "methods.disabled", "list of strings"),
    ('[devise]\nboard = "x"', "devise", "did you mean 'device'"),
    ('device = 3', "device", "must be a table"),
    ('[hub]\nrenew_before_s = 4000', "hub.renew_before_s", "shorter than hub.sas_ttl_s"),
    ('[hub]\nmodel_id = "roost-1"', "hub.model_id", "dtmi:"),
])
def test_each_bad_key_is_named_with_a_fix(tmp_path, snippet, key, words):
    base = '[identity]\nmethod = "connection-string"\nconnection_string_file = "cs"\n'
    text = base + snippet if snippet.startswith("[") else snippet + "\n" + base   # top-level keys go first
    config, problems = check_config(write(tmp_path, text), check_files=False)
    assert config is None
    assert [p.key for p in problems] == [key]
    assert words in str(problems[0])
    assert problems[0].fix


def test_every_problem_is_reported_at_once(tmp_path):
    text = '[identity]\nmethod = "tmp"\n[hub]\nsas_ttl_s = "x"\n[telemetry]\nbogus = 1\n'
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert [p.key for p in err.value.problems] == ["identity.method", "hub.sas_ttl_s", "telemetry.bogus"]


@pytest.mark.parametrize("identity, key", [
    ('method = "symmetric"\nid_scope = "0ne1"', "identity.symmetric_key_file"),
    ('method = "symmetric"\nid_scope = "0ne1"\nsymmetric_key_file = "a"\ngroup_key_file = "b"',
     "identity.symmetric_key_file"),
    ('method = "tpm"', "identity.id_scope"),
    ('method = "x509"\nid_scope = "0ne1"\ncert_file = "c.pem"', "identity.key_file"),
    ('method = "connection-string"', "identity.connection_string_file"),
])
def test_identity_methods_need_their_keys(identity, key):
    import tomllib

    config, problems = parse_config({"identity": tomllib.loads(identity)})
    assert config is None
    assert key in [p.key for p in problems]


def test_missing_and_broken_files_are_clear(tmp_path):
    config, problems = check_config(tmp_path / "nope.toml")
    assert config is None and "does not exist" in problems[0].message and "--config" in problems[0].fix
    config, problems = check_config(write(tmp_path, "[device\nboard="))
    assert config is None and "not valid TOML" in problems[0].message


def test_config_path_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("ROOST_CONFIG", raising=False)
    assert default_path() == Path("/etc/roost/roost.toml")
    monkeypatch.setenv("ROOST_CONFIG", str(tmp_path / "env.toml"))
    assert default_path() == tmp_path / "env.toml"
    assert default_path(tmp_path / "cli.toml") == tmp_path / "cli.toml"


def test_secret_files_must_be_private(tmp_path):
    key = tmp_path / "device.key"
    key.write_text("c2VjcmV0c2VjcmV0c2VjcmV0\n")
    os.chmod(key, 0o644)
    config, problems = check_config(write(tmp_path, GOOD))
    assert config is not None   # a warning does not stop the agent
    assert [(p.key, p.warning) for p in problems] == [("identity.symmetric_key_file", True)]
    assert "chmod 600" in problems[0].fix
    os.chmod(key, 0o600)
    assert check_config(write(tmp_path, GOOD))[1] == []


def test_files_named_must_exist(tmp_path):
    _config, problems = check_config(write(tmp_path, GOOD))
    assert [p.key for p in problems] == ["identity.symmetric_key_file"]
    assert "does not exist" in problems[0].message and not problems[0].warning


def test_sensor_settings_from_a_patch():
    base = SensorSettings(interval_s=10.0)
    assert parse_sensor_settings({"deadband": 0.5}, base) == SensorSettings(interval_s=10.0, deadband=0.5)
    with pytest.raises(ConfigError) as err:
        parse_sensor_settings({"interval_s": -1, "colour": "red"}, base, "sensors.t")
    assert {p.key for p in err.value.problems} == {"sensors.t.interval_s", "sensors.t.colour"}


def test_config_is_frozen():
    config = Config()
    with pytest.raises(AttributeError):
        config.device.board = "x"  # type: ignore[misc]


def test_docs_list_every_key_with_its_default():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    for key, default, _ in describe():
        name = key.rsplit(".", 1)[-1]
        section = key.rsplit(".", 1)[0]
        assert re.search(rf"`{re.escape(name)}`", doc), f"docs/configuration.md misses {key}"
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif isinstance(default, tuple):
            shown = "[]"
        elif isinstance(default, str):
            shown = f'"{default}"'
        else:
            shown = str(default)
        assert f"`{name}` | `{shown}`" in doc, \
            f"docs/configuration.md shows no default {shown} for {key} (section {section})"

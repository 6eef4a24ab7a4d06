"""Twin desired properties: validated, applied live, acknowledged with ac/av/ad; bad values keep the old one."""

from __future__ import annotations

import asyncio

import pytest


def desired(mgmt, patch):
    asyncio.run(mgmt.on_desired(patch))


def test_telemetry_interval_applied_to_every_sensor_and_acknowledged(make_mgmt):
    mgmt, ctx = make_mgmt()
    desired(mgmt, {"telemetryInterval": 5, "$version": 7})
    assert ctx.uplink.last("telemetryInterval") == {"value": 5.0, "ac": 200, "av": 7, "ad": "applied"}
    assert {s["interval_s"] for s in ctx.sensors.settings().values()} == {5.0}


@pytest.mark.parametrize("bad, reason", [
    (0, "between 0.1 and 86400"), (-3, "between"), ("10", "must be a number, not a string"),
    (True, "not a boolean"), ([], "not an array"), (1e9, "between"),
])
def test_bad_interval_acked_400_and_old_value_kept(make_mgmt, bad, reason):
    mgmt, ctx = make_mgmt()
    desired(mgmt, {"telemetryInterval": 20, "$version": 2})
    desired(mgmt, {"telemetryInterval": bad, "$version": 3})
    acked = ctx.uplink.last("telemetryInterval")
    assert acked["ac"] == 400 and acked["av"] == 3 and reason in acked["ad"]
    assert acked["value"] == 20.0
    assert {s["interval_s"] for s in ctx.sensors.settings().values()} == {20.0}


def test_sensor_settings_partial_patch_and_null_reset(make_mgmt):
    mgmt, ctx = make_mgmt()
    desired(mgmt, {"sensors": {"climate": {"interval": 2, "deadband": 0.5, "enabled": False}}, "$version": 4})
    ack = ctx.uplink.last("sensors")
    assert ack["ac"] == 200
    assert ack["value"]["climate"] == {"enabled": False, "interval": 2.0, "deadband": 0.5, "rateLimit": 0.0,
                                       "window": 0.0}
    assert ack["value"]["air"]["interval"] == 10.0   # untouched sensor
    desired(mgmt, {"sensors": {"climate": {"deadband": None}}, "$version": 5})
    assert ctx.sensors.settings()["climate"]["deadband"] == 0.0     # back to the config default
    assert ctx.sensors.settings()["climate"]["interval_s"] == 2.0   # the rest kept
    desired(mgmt, {"sensors": {"climate": None}, "$version": 6})
    assert ctx.sensors.settings()["climate"]["enabled"] is True


def test_explicit_sensor_interval_survives_a_later_telemetry_interval(make_mgmt):
    mgmt, ctx = make_mgmt()
    desired(mgmt, {"sensors": {"air": {"interval": 60}}, "telemetryInterval": 3, "$version": 2})
    settings = ctx.sensors.settings()
    assert settings["air"]["interval_s"] == 60.0 and settings["climate"]["interval_s"] == 3.0
    desired(mgmt, {"telemetryInterval": 4, "$version": 3})
    assert ctx.sensors.settings()["air"]["interval_s"] == 60.0


@pytest.mark.parametrize("value, reason", [
    ({"nosuch": {"interval": 1}}, "no sensor 'nosuch'"),
    ({"climate": {"interval": 0}}, "between"),
    ({"climate": {"speed": 1}}, "unknown field(s) speed"),
    ({"climate": {"enabled": "yes"}}, "true or false"),
    ({"climate": 5}, "must be a JSON object"),
    ("all", "must be a JSON object"),
])
def test_bad_sensor_settings_rejected_without_change(make_mgmt, value, reason):
    mgmt, ctx = make_mgmt()
    before = ctx.sensors.settings()
    desired(mgmt, {"sensors": value, "$version": 9})
    ack = ctx.uplink.last("sensors")
    assert ack["ac"] == 400 and reason in ack["ad"] and ack["av"] == 9
    assert ctx.sensors.settings() == before
    assert ctx.sensors.applied == []


def test_sampler_refusal_rolls_back_sensors_already_changed(make_mgmt):
    mgmt, ctx = make_mgmt()
    ctx.sensors.refuse["air"] = "window_s must be a multiple of interval_s"
    before = ctx.sensors.settings()
    desired(mgmt, {"sensors": {"climate": {"interval": 1}, "air": {"window": 7}}, "$version": 3})
    ack = ctx.uplink.last("sensors")
    assert ack["ac"] == 400 and "multiple of interval_s" in ack["ad"]
    assert ctx.sensors.settings() == before
    assert ack["value"]["climate"]["interval"] == 10.0


def test_log_level_led_and_health_settings(make_mgmt):
    mgmt, ctx = make_mgmt()
    desired(mgmt, {"logLevel": "debug", "statusLed": "off", "healthInterval": 30, "$version": 2})
    assert ctx.log_levels == ["debug"]
    assert ctx.platform.pins[17].states[-1] == 0
    assert mgmt.health.interval_s == 30.0
    assert all(ctx.uplink.last(n)["ac"] == 200 for n in ("logLevel", "statusLed", "healthInterval"))
    desired(mgmt, {"logLevel": "verbose", "statusLed": "blue", "$version": 3})
    assert ctx.uplink.last("logLevel") == {"value": "debug", "ac": 400, "av": 3,
                                           "ad": "logLevel must be one of debug, info, warning, error, not 'verbose'"}
    assert ctx.uplink.last("statusLed")["value"] == "off"
    assert ctx.log_levels == ["debug"]


def test_status_led_without_led_is_refused(make_mgmt):
    mgmt, ctx = make_mgmt()
    ctx.platform.board.status_led = None
    desired(mgmt, {"statusLed": "on", "$version": 2})
    ack = ctx.uplink.last("statusLed")
    assert ack["ac"] == 400 and "no status LED" in ack["ad"] and ack["value"] == "auto"


def test_health_rules_merge_by_name_and_null_removes(make_mgmt):
    mgmt, ctx = make_mgmt()
    rule = {"metric": "load1", "op": ">", "threshold": 3, "severity": "critical"}
    desired(mgmt, {"healthRules": {"busy": rule, "offlineLong": None}, "$version": 2})
    ack = ctx.uplink.last("healthRules")
    assert ack["ac"] == 200
    assert ack["value"]["busy"] == {**rule, "threshold": 3.0}
    assert "offlineLong" not in ack["value"] and "cpuTemperatureHigh" in ack["value"]


@pytest.mark.parametrize("rules, reason", [
    ({"hot": {"metric": "fanSpeed", "op": ">", "threshold": 1}}, "metric must be one of"),
    ({"hot": {"metric": "load1", "op": "!=", "threshold": 1}}, "op must be one of"),
    ({"hot": {"metric": "load1", "op": ">"}}, "needs 'threshold'"),
    ({"1bad": {"metric": "load1", "op": ">", "threshold": 1}}, "must start with a letter"),
    ({f"r{i}": {"metric": "load1", "op": ">", "threshold": i} for i in range(40)}, "at most 32"),
])
def test_bad_health_rules_rejected(make_mgmt, rules, reason):
    mgmt, ctx = make_mgmt()
    before = mgmt.health.rules_value()
    desired(mgmt, {"healthRules": rules, "$version": 5})
    ack = ctx.uplink.last("healthRules")
    assert ack["ac"] == 400 and reason in ack["ad"]
    assert mgmt.health.rules_value() == before


def test_unknown_property_gets_404_and_components_are_left_alone(make_mgmt):
    mgmt, ctx = make_mgmt()
    mgmt.claim("firmwareChannel")
    desired(mgmt, {"colour": "red", "deviceUpdate": {"__t": "c", "service": {}}, "firmwareChannel": "beta",
                   "$version": 2})
    patch = ctx.uplink.reported[-1]
    assert set(patch) == {"colour"}
    assert patch["colour"]["ac"] == 404 and "telemetryInterval" in patch["colour"]["ad"]


def test_full_desired_twin_applied_once_on_connect(make_mgmt):
    mgmt, ctx = make_mgmt()
    ctx.uplink.twin = {"desired": {"telemetryInterval": 15, "logLevel": "warning", "$version": 12},
                       "reported": {}}
    ctx.uplink.connected = False
    asyncio.run(mgmt.tick())
    assert ctx.uplink.reported == []
    ctx.uplink.connected = True
    asyncio.run(mgmt.tick())
    asyncio.run(mgmt.tick())   # still connected: nothing applied twice
    first = ctx.uplink.reported[0]
    assert first["telemetryInterval"] == {"value": 15.0, "ac": 200, "av": 12, "ad": "applied"}
    assert first["logLevel"]["value"] == "warning"
    assert first["deviceInfo"]["serialNumber"] == "10000000abcdef01"
    assert sum("telemetryInterval" in p for p in ctx.uplink.reported) == 1
    assert ctx.log_levels == ["warning"]


def test_reported_patch_failure_does_not_break_the_handler(make_mgmt):
    mgmt, ctx = make_mgmt()
    ctx.uplink.fail_patch = True
    desired(mgmt, {"telemetryInterval": 5, "$version": 2})
    assert ctx.sensors.settings()["climate"]["interval_s"] == 5.0


def test_other_components_get_their_properties_and_methods(make_mgmt):
    mgmt, ctx = make_mgmt()
    seen = []

    async def listener(patch):
        seen.append(patch)

    async def apply_update(payload):
        if not isinstance(payload, dict):
            return 400, {"error": "payload must be an object"}
        return 200, {"accepted": payload.get("version")}

    mgmt.add_desired_listener({"deviceUpdate"}, listener)
    mgmt.add_method("applyUpdate", apply_update)
    desired(mgmt, {"deviceUpdate": {"service": {"workflow": {"action": 3}}}, "telemetryInterval": 9, "$version": 4})
    assert seen == [{"deviceUpdate": {"service": {"workflow": {"action": 3}}}, "$version": 4}]
    assert "deviceUpdate" not in ctx.uplink.reported[-1]
    assert asyncio.run(mgmt.on_method("applyUpdate", {"version": "1.2"})) == (200, {"accepted": "1.2"})
    assert asyncio.run(mgmt.on_method("applyUpdate", 5))[0] == 400
    with pytest.raises(ValueError, match="already served"):
        mgmt.add_method("reboot", apply_update)


@pytest.mark.parametrize("bad", [5, 100000, "60", {}])
def test_bad_health_interval_keeps_the_old_one(make_mgmt, bad):
    mgmt, ctx = make_mgmt()
    desired(mgmt, {"healthInterval": 30, "$version": 2})
    desired(mgmt, {"healthInterval": bad, "$version": 3})
    ack = ctx.uplink.last("healthInterval")
    assert ack["ac"] == 400 and ack["value"] == 30.0 and mgmt.health.interval_s == 30.0


def test_a_patch_that_is_not_an_object_is_ignored(make_mgmt):
    mgmt, ctx = make_mgmt()
    asyncio.run(mgmt.on_desired(["telemetryInterval", 5]))
    assert ctx.uplink.reported == [] and ctx.sensors.applied == []


def test_deleted_properties_return_to_the_config(make_mgmt):
    mgmt, ctx = make_mgmt(telemetry={"interval_s": 12.0}, device={"log_level": "warning"})
    desired(mgmt, {"telemetryInterval": 3, "logLevel": "debug", "healthInterval": 20, "$version": 2})
    desired(mgmt, {"telemetryInterval": None, "logLevel": None, "healthInterval": None, "$version": 3})
    assert {s["interval_s"] for s in ctx.sensors.settings().values()} == {12.0}
    assert ctx.log_levels == ["debug", "warning"] and mgmt.health.interval_s == 60.0
    assert ctx.uplink.last("telemetryInterval")["ac"] == 200


def test_telemetry_interval_leaves_sensors_with_a_configured_interval(make_mgmt):
    mgmt, ctx = make_mgmt(telemetry={"sensors": {"air": {"interval_s": 45.0}}})
    desired(mgmt, {"telemetryInterval": 6, "$version": 2})
    settings = ctx.sensors.settings()
    assert settings["climate"]["interval_s"] == 6.0 and settings["air"]["interval_s"] == 10.0
    desired(mgmt, {"sensors": {"climate": {"interval": 2}}, "$version": 3})
    desired(mgmt, {"sensors": {"climate": {"interval": None}}, "$version": 4})
    assert ctx.sensors.settings()["climate"]["interval_s"] == 6.0   # back to the twin's default, not roost.toml's

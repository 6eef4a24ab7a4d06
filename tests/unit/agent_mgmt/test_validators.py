"""Each validator: what it accepts, what it refuses, and the sentence it refuses with."""

from __future__ import annotations

import math

import pytest

from agent.management import validators as v


@pytest.mark.parametrize("value, ok", [(1, True), (2.5, True), (0.1, True), (86400, True), (0.09, False),
                                       (True, False), ("5", False), (None, False), (math.nan, False),
                                       (math.inf, False), ([5], False)])
def test_telemetry_interval(value, ok):
    if ok:
        assert v.telemetry_interval(value) == float(value)
    else:
        with pytest.raises(v.BadInput, match="telemetryInterval"):
            v.telemetry_interval(value)


def test_choices_and_booleans():
    assert v.log_level("warning") == "warning"
    assert v.status_led("auto") == "auto"
    with pytest.raises(v.BadInput, match="not 'WARNING'"):
        v.log_level("WARNING")
    with pytest.raises(v.BadInput, match="not a number"):
        v.status_led(3)
    assert v.boolean(False, "x") is False
    with pytest.raises(v.BadInput, match="true or false, not a number"):
        v.boolean(0, "x")
    assert v.health_interval(10) == 10.0
    with pytest.raises(v.BadInput, match="between 10 and 86400"):
        v.health_interval(9)


def test_sensor_fields_map_to_config_names():
    assert v.sensor_fields({"enabled": True, "interval": 2, "rateLimit": 1, "window": 60, "deadband": None},
                           "climate") == {"enabled": True, "interval_s": 2.0, "rate_limit_s": 1.0, "window_s": 60.0,
                                          "deadband": None}
    with pytest.raises(v.BadInput, match=r"sensors\.climate\.window \(seconds\) must be between 0 and 86400"):
        v.sensor_fields({"window": -1}, "climate")
    with pytest.raises(v.BadInput, match="no sensor 'x'; it has a, b"):
        v.sensors({"x": {}}, ["b", "a"])
    assert v.sensors({"a": None}, ["a"]) == {"a": None}


def test_health_rules():
    rule = v.health_rule({"metric": "load1", "op": "<=", "threshold": 2}, "r", ["load1"])
    assert rule == {"metric": "load1", "op": "<=", "threshold": 2.0, "severity": "warning"}
    with pytest.raises(v.BadInput, match="unknown field"):
        v.health_rule({"metric": "load1", "op": "<", "threshold": 1, "colour": "red"}, "r", ["load1"])
    with pytest.raises(v.BadInput, match="severity must be one of warning, critical"):
        v.health_rule({"metric": "load1", "op": "<", "threshold": 1, "severity": "meh"}, "r", ["load1"])
    assert v.health_rules({"gone": None}, ["load1"]) == {"gone": None}


def test_payload_objects_and_time_zones():
    assert v.payload_object(None, "m", ()) == {} and v.payload_object("", "m", ()) == {}
    with pytest.raises(v.BadInput, match="m payload must be a JSON object, not an array"):
        v.payload_object([], "m", ())
    with pytest.raises(v.BadInput, match="unknown field"):
        v.payload_object({"a": 1}, "m", ("b",))
    assert v.timezone_name("UTC", ["UTC"]) == "UTC"
    with pytest.raises(v.BadInput, match="not a known IANA"):
        v.timezone_name("utc", ["UTC"])

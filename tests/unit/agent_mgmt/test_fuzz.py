"""Whatever the cloud sends: handlers never raise, and an error status or ack always means nothing changed."""

from __future__ import annotations

import asyncio
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.management.twin_config import WRITABLE

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def snapshot(mgmt, ctx, actions_log):
    return (list(ctx.reboots), list(ctx.reprovisions), json.dumps(ctx.sensors.settings(), sort_keys=True),
            [a.fingerprint for a in mgmt.trust.anchors()], mgmt.schedule.at, sorted(p.name for p in
            ctx.state_dir.iterdir()), list(ctx.log_levels), actions_log.read_text() if actions_log.exists() else "",
            mgmt.led.mode, mgmt.health.interval_s, json.dumps(mgmt.health.rules_value(), sort_keys=True))


@FUZZ
@given(name=st.sampled_from(["reboot", "scheduleReboot", "factoryReset", "identify", "getHealth",
                             "setTelemetryInterval", "setTimeZone", "getTimeStatus", "listTrustedCertificates",
                             "addTrustedCertificate", "removeTrustedCertificate", "rotateDeviceKey", "reprovision",
                             "getDiagnostics", "noSuchMethod"]),
       payload=json_values)
def test_methods_error_means_unchanged(make_mgmt, recorder, name, payload):
    mgmt, ctx = make_mgmt()
    before = snapshot(mgmt, ctx, recorder[1])
    status, result = asyncio.run(mgmt.on_method(name, payload))
    assert isinstance(status, int) and json.dumps(result)
    if status >= 400:
        assert "error" in result
        assert snapshot(mgmt, ctx, recorder[1]) == before


@FUZZ
@given(patch=st.dictionaries(st.sampled_from([*WRITABLE, "other"]), json_values, max_size=4))
def test_desired_rejections_keep_the_old_value(make_mgmt, recorder, patch):
    mgmt, ctx = make_mgmt()
    before = ctx.sensors.settings(), mgmt.health.rules_value(), mgmt.led.mode, list(ctx.log_levels)
    asyncio.run(mgmt.on_desired({**patch, "$version": 3}))
    acks = ctx.uplink.reported[-1] if patch else {}
    assert set(acks) == set(patch)
    for ack in acks.values():
        assert ack["av"] == 3 and ack["ac"] in (200, 400, 404)
    if all(ack["ac"] != 200 for ack in acks.values()):
        assert (ctx.sensors.settings(), mgmt.health.rules_value(), mgmt.led.mode, list(ctx.log_levels)) == before


@FUZZ
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()),
       props=st.dictionaries(st.sampled_from(["command", "$.message_id", "$.expiry_time_utc", "x"]),
                             st.text(max_size=30), max_size=3))
def test_c2d_never_raises_and_always_answers(make_mgmt, body, props):
    mgmt, ctx = make_mgmt()
    asyncio.run(mgmt.c2d.handle(body, props))
    (result, properties), = [e for e in ctx.events if "c2dResult" in e[0]]
    assert isinstance(result["c2dResult"]["status"], int) and properties["kind"] == "c2d-result"

"""C2D commands: run like methods, malformed ones rejected with a result event, duplicates never run twice."""

from __future__ import annotations

import asyncio
import json


def send(mgmt, body, props=None):
    asyncio.run(mgmt.c2d.handle(body if isinstance(body, bytes) else json.dumps(body).encode(), props or {}))


def results(ctx):
    return [body["c2dResult"] for body, props in ctx.events if "c2dResult" in body]


def test_command_in_body_runs_and_reports(make_mgmt):
    mgmt, ctx = make_mgmt()
    send(mgmt, {"command": "setTelemetryInterval", "payload": {"interval": 4}}, {"$.message_id": "m1"})
    assert ctx.sensors.settings()["air"]["interval_s"] == 4.0
    (result,) = results(ctx)
    assert result == {"messageId": "m1", "status": 200, "command": "setTelemetryInterval",
                      "result": {"interval": 4.0, "sensors": ["climate", "air"]}}
    assert ctx.events[0][1]["kind"] == "c2d-result" and ctx.events[0][1]["correlation-id"] == "m1"


def test_command_as_property_with_payload_body(make_mgmt):
    mgmt, ctx = make_mgmt()
    send(mgmt, {"delay": 5}, {"command": "reboot", "$.message_id": "m2"})
    assert ctx.reboots == [(5.0, "reboot method")]
    assert results(ctx)[0]["status"] == 200


def test_duplicate_delivery_is_not_run_again_even_after_restart(make_mgmt, clock):
    mgmt, ctx = make_mgmt()
    send(mgmt, {"command": "reboot"}, {"$.message_id": "same"})
    send(mgmt, {"command": "reboot"}, {"$.message_id": "same"})
    from agent.management import Management

    restarted = Management(ctx, clock=clock, system=mgmt.system)
    asyncio.run(restarted.c2d.handle(b'{"command": "reboot"}', {"$.message_id": "same"}))
    assert ctx.reboots == [(0, "reboot method")]
    assert [r["status"] for r in results(ctx)] == [200, 409, 409]


def test_malformed_messages_are_rejected_and_change_nothing(make_mgmt):
    mgmt, ctx = make_mgmt()
    bad = [b"\xff\xfe not utf-8", b"{not json", b"[1, 2]", b'{"payload": {}}', b'{"command": 5}',
           b'{"command": "reboot", "extra": 1}', b""]
    for i, body in enumerate(bad):
        send(mgmt, body, {"$.message_id": f"bad{i}"})
    statuses = [r["status"] for r in results(ctx)]
    assert statuses == [400] * len(bad)
    assert all("error" in r["result"] for r in results(ctx))
    assert ctx.reboots == [] and ctx.sensors.applied == []


def test_unknown_command_oversize_and_expired(make_mgmt):
    mgmt, ctx = make_mgmt()
    send(mgmt, {"command": "launch"}, {"$.message_id": "u"})
    send(mgmt, b"{" + b" " * 70000 + b"}", {"$.message_id": "big"})
    send(mgmt, {"command": "reboot"}, {"$.message_id": "old", "$.expiry_time_utc": "2020-01-01T00:00:00Z"})
    assert [r["status"] for r in results(ctx)] == [404, 413, 410]
    assert ctx.reboots == []


def test_seen_ids_are_bounded(make_mgmt):
    from agent.management.c2d import SEEN_LIMIT

    mgmt, ctx = make_mgmt()
    for i in range(SEEN_LIMIT + 10):
        asyncio.run(mgmt.c2d.handle(b'{"command": "getHealth"}', {"$.message_id": f"id{i}"}))
    assert len(mgmt.c2d.seen) == SEEN_LIMIT
    stored = json.loads((ctx.state_dir / "management" / "c2d-seen.json").read_text())
    assert stored[0] == "id10" and len(stored) == SEEN_LIMIT

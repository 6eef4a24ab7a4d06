"""Health figures from /proc and /sys, and edge-triggered rules that emit alerts through the outbox."""

from __future__ import annotations

import asyncio

from agent.management.health import RuleEngine, SystemProbe, collect


def test_probe_reads_the_kernel_files(fake_root, tmp_path):
    probe = SystemProbe(root=fake_root, disk_path=tmp_path)
    sample = collect(probe, {"depth": 7, "bytes": 500}, 1000, 0.0, None)
    assert sample["cpuTemperature"] == 51.2
    assert (sample["load1"], sample["load5"], sample["load15"]) == (0.5, 0.4, 0.3)
    assert sample["memoryUsedPercent"] == 25.0 and sample["memoryAvailableMb"] == 2929.7
    assert sample["outboxDepth"] == 7 and sample["outboxFill"] == 0.5
    assert sample["diskFreeMb"] > 0 and sample["agentRssMb"] == 40.0


def test_missing_or_garbled_files_give_none_not_errors(tmp_path):
    root = tmp_path / "empty"
    (root / "proc").mkdir(parents=True)
    (root / "proc/loadavg").write_text("garbage\n")
    sample = collect(SystemProbe(root=root, disk_path=tmp_path / "nope"), {}, 1000, 0.0, "boom")
    assert sample["cpuTemperature"] is None and sample["load1"] is None and sample["diskFreeMb"] is None
    assert sample["outboxDepth"] is None and sample["lastError"] == "boom"


def test_rules_raise_once_and_clear_once():
    engine = RuleEngine({"hot": {"metric": "cpuTemperature", "op": ">", "threshold": 70, "severity": "warning"}})
    assert engine.evaluate({"cpuTemperature": 60}) == []
    raised = engine.evaluate({"cpuTemperature": 75})
    assert raised[0]["alert"]["state"] == "raised" and raised[0]["alert"]["value"] == 75
    assert engine.evaluate({"cpuTemperature": 80}) == []
    assert engine.evaluate({"cpuTemperature": None}) == []
    cleared = engine.evaluate({"cpuTemperature": 65})
    assert cleared[0]["alert"]["state"] == "cleared"


def test_twin_rules_raise_alerts_through_emit(make_mgmt):
    mgmt, ctx = make_mgmt()
    asyncio.run(mgmt.on_desired({"healthRules": {"busy": {"metric": "load1", "op": ">=", "threshold": 0.5,
                                                          "severity": "critical"}}, "$version": 2}))
    sample = asyncio.run(mgmt.report_health())
    alerts = [(b["alert"], p) for b, p in ctx.events if "alert" in b]
    assert [a["rule"] for a, _ in alerts] == ["busy"]
    assert alerts[0][1] == {"kind": "alert", "roost-type": "alert", "severity": "critical"}
    assert ctx.uplink.last("health") == sample
    asyncio.run(mgmt.report_health())
    assert len([b for b, _ in ctx.events if "alert" in b]) == 1


def test_configured_thresholds_are_the_default_rules(make_mgmt):
    mgmt, ctx = make_mgmt(health={"cpu_temp_max_c": 50.0})
    asyncio.run(mgmt.report_health())
    assert [b["alert"]["rule"] for b, _ in ctx.events] == ["cpuTemperatureHigh"]


def test_offline_time_counts_and_health_is_not_reported_while_offline(make_mgmt, clock):
    mgmt, ctx = make_mgmt(health={"offline_max_s": 60.0})
    asyncio.run(mgmt.tick())
    ctx.uplink.connected = False
    reported = len(ctx.uplink.reported)
    clock.now += 120
    sample = asyncio.run(mgmt.report_health())
    assert sample["offlineSeconds"] == 120.0
    assert [b["alert"]["rule"] for b, _ in ctx.events if "alert" in b] == ["offlineLong"]
    assert len(ctx.uplink.reported) == reported


def test_last_error_comes_from_the_log(make_mgmt):
    import logging

    mgmt, _ = make_mgmt()
    logging.getLogger("roost.sensor").error("bme280 NACK token=abcdefghijklmnop")
    sample, _ = mgmt.sample_health()
    assert "bme280 NACK" in sample["lastError"] and "abcdefghijklmnop" not in sample["lastError"]

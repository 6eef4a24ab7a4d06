from __future__ import annotations

import pytest

from firmware.health import HealthChecks, services_probe


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_polls_until_all_pass():
    clock = FakeClock()
    checks = HealthChecks(clock=clock, sleep=clock.sleep)
    checks.register("hub", lambda: clock.now >= 10)
    checks.register("app", lambda: (True, "fine"))
    report = checks.run(deadline=60, interval=2)
    assert report.ok and report.rounds == 6 and clock.now == 10


def test_deadline_and_failure_details():
    clock = FakeClock()
    checks = HealthChecks(clock=clock, sleep=clock.sleep)
    checks.register("hub", lambda: (False, "not connected"))

    def crash():
        raise RuntimeError("boom")

    checks.register("app", crash)
    report = checks.run(deadline=5, interval=2)
    assert not report.ok and clock.now <= 5
    assert report.failures() == "hub: not connected; app: RuntimeError: boom"


def test_duplicate_probe_name():
    checks = HealthChecks()
    checks.register("x", lambda: True)
    with pytest.raises(ValueError, match="already registered"):
        checks.register("x", lambda: True)
    checks.unregister("x")
    assert checks.names == []


def test_services_probe_uses_the_command(tmp_path):
    tool = tmp_path / "systemctl"
    tool.write_text('#!/bin/sh\n[ "$3" = "roost.service" ]\n')
    tool.chmod(0o755)
    ok, detail = services_probe(["roost.service", "other.service"], [str(tool)])()
    assert not ok and detail == "inactive: other.service"
    assert services_probe(["roost.service"], [str(tool)])() == (True, "")


def test_async_probes_in_the_event_loop():
    import asyncio

    clock = FakeClock()
    checks = HealthChecks(clock=clock, sleep=clock.sleep)
    polls = []

    async def hub():
        polls.append(clock.now)
        clock.now += 1
        return (len(polls) >= 3, "connecting")

    checks.register("hub", hub)
    checks.register("sync", lambda: True)
    report = asyncio.run(checks.arun(deadline=60, interval=0))
    assert report.ok and report.rounds == 3
    # the synchronous runner cannot await: it says so instead of passing silently
    sync_report = checks.run_once()
    assert not sync_report.ok and "arun()" in sync_report.results["hub"][1]


def test_connected_probe_follows_the_uplink():
    from firmware.health import connected_probe

    class Uplink:
        connected = False

    uplink = Uplink()
    probe = connected_probe(uplink)
    assert probe() == (False, "not connected to IoT Hub")
    uplink.connected = True
    assert probe() == (True, "")

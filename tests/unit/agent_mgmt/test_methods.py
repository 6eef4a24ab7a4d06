"""Every direct method: its result, and every bad payload answered with a status while nothing changes."""

from __future__ import annotations

import asyncio
import io
import json
import tarfile

import pytest


def call(mgmt, name, payload=None):
    return asyncio.run(mgmt.on_method(name, payload))


def test_unknown_method_is_404_with_the_list(make_mgmt):
    mgmt, _ = make_mgmt()
    status, result = call(mgmt, "selfDestruct", {})
    assert status == 404 and "selfDestruct" in result["error"] and "reboot" in result["methods"]


def test_disabled_method_is_403(make_mgmt):
    mgmt, ctx = make_mgmt(methods={"disabled": ["reboot"]})
    status, result = call(mgmt, "reboot", {})
    assert status == 403 and "methods.disabled" in result["fix"]
    assert ctx.reboots == []


@pytest.mark.parametrize("name", ["reboot", "identify", "getHealth", "setTelemetryInterval", "factoryReset",
                                  "listTrustedCertificates", "scheduleReboot", "setTimeZone", "rotateDeviceKey"])
@pytest.mark.parametrize("payload", [[1, 2], "text", 42, {"unexpected": 1}])
def test_malformed_payloads_are_400(make_mgmt, name, payload):
    mgmt, ctx = make_mgmt()
    before = ctx.sensors.settings()
    status, result = call(mgmt, name, payload)
    assert status == 400, result
    assert "error" in result
    assert ctx.reboots == [] and ctx.reprovisions == [] and ctx.sensors.settings() == before


def test_reboot_with_delay(make_mgmt):
    mgmt, ctx = make_mgmt()
    assert call(mgmt, "reboot", {"delay": 30}) == (200, {"rebootIn": 30.0})
    assert call(mgmt, "reboot", None) == (200, {"rebootIn": 0})
    assert ctx.reboots == [(30.0, "reboot method"), (0, "reboot method")]
    status, result = call(mgmt, "reboot", {"delay": -1})
    assert status == 400 and "between 0 and 86400" in result["error"]
    assert len(ctx.reboots) == 2


def test_scheduled_reboot_fires_at_its_time_and_survives_restart(make_mgmt, clock):
    mgmt, ctx = make_mgmt()
    status, result = call(mgmt, "scheduleReboot", {"at": "2027-01-15T08:00:30Z"})
    assert status == 200 and result == {"scheduledAt": "2027-01-15T08:00:30Z"}
    when = 1_800_000_030.0   # the same instant as unix time
    asyncio.run(mgmt.tick())
    assert ctx.reboots == []
    from agent.management import Management

    again = Management(ctx, clock=clock, system=mgmt.system)   # a restarted agent still knows the schedule
    assert again.schedule.at == when
    clock.now = when
    asyncio.run(again.tick())
    assert ctx.reboots == [(0, "scheduled reboot")]
    assert again.schedule.at is None


@pytest.mark.parametrize("payload, reason", [
    ({"at": "2020-01-01T00:00:00Z"}, "in the past"),
    ({"at": "2027-01-15T08:00:30"}, "with a zone"),
    ({"at": "tomorrow"}, "ISO 8601"),
    ({"at": "2030-01-01T00:00:00Z"}, "more than 30 days"),
    ({}, "needs 'at'"),
])
def test_scheduled_reboot_bad_times(make_mgmt, payload, reason):
    mgmt, _ = make_mgmt()
    status, result = call(mgmt, "scheduleReboot", payload)
    assert status == 400 and reason in result["error"] + result.get("fix", "")
    assert mgmt.schedule.at is None


def test_scheduled_reboot_cancel(make_mgmt):
    mgmt, _ = make_mgmt()
    call(mgmt, "scheduleReboot", {"at": "2027-01-15T10:00:00+01:00"})
    assert call(mgmt, "scheduleReboot", {"cancel": True}) == (200, {"cancelled": True})
    assert call(mgmt, "scheduleReboot", {"cancel": True}) == (200, {"cancelled": False})


def test_factory_reset_needs_the_token_and_keeps_firmware(make_mgmt):
    mgmt, ctx = make_mgmt(management={"factory_reset_confirmation": "wipe-it"})
    state = ctx.state_dir
    (state / "firmware").mkdir()
    (state / "firmware" / "slots.json").write_text("{}")
    (state / "outbox.sqlite").write_text("x")
    (state / "identity").mkdir()
    (state / "identity" / "assignment.json").write_text("{}")
    status, result = call(mgmt, "factoryReset", {})
    assert status == 400 and "confirm" in result["error"]
    status, result = call(mgmt, "factoryReset", {"confirm": "factory-reset"})
    assert status == 403
    assert (state / "outbox.sqlite").exists() and ctx.reboots == []
    status, result = call(mgmt, "factoryReset", {"confirm": "wipe-it"})
    assert status == 202 and result["kept"] == ["firmware"]
    assert set(result["removed"]) == {"identity", "outbox.sqlite"}
    assert sorted(p.name for p in state.iterdir()) == ["firmware"]
    assert (state / "firmware" / "slots.json").read_text() == "{}"
    assert ctx.reboots == [(0, "factory reset")]


def test_identify_blinks_the_status_led(make_mgmt):
    mgmt, ctx = make_mgmt()

    async def scenario():
        answer = await mgmt.on_method("identify", {"seconds": 1})
        mgmt.led.identify(0.2, period_s=0.05)     # a new request restarts the blinking (short, for the test)
        await mgmt.led._identify
        return answer

    assert asyncio.run(scenario()) == (200, {"blinking": 1.0, "pin": 17})
    states = "".join(map(str, ctx.platform.pins[17].states))
    assert "1010" in states and states.endswith("1")    # blinked, and ends lit: the "auto" mode


def test_identify_without_led_is_409(make_mgmt):
    mgmt, ctx = make_mgmt()
    ctx.platform.board.status_led = None
    status, result = call(mgmt, "identify", {})
    assert status == 409 and "status LED" in result["error"]


def test_set_telemetry_interval(make_mgmt):
    mgmt, ctx = make_mgmt()
    assert call(mgmt, "setTelemetryInterval", {"interval": 2, "sensor": "air"}) == \
        (200, {"interval": 2.0, "sensors": ["air"]})
    assert ctx.sensors.settings()["air"]["interval_s"] == 2.0
    assert ctx.sensors.settings()["climate"]["interval_s"] == 10.0
    status, result = call(mgmt, "setTelemetryInterval", {"interval": 2, "sensor": "nope"})
    assert status == 404 and "air" in result["error"]
    status, _ = call(mgmt, "setTelemetryInterval", {"sensor": "air"})
    assert status == 400
    ctx.sensors.refuse["climate"] = "interval below the sensor's conversion time"
    status, result = call(mgmt, "setTelemetryInterval", {"interval": 0.1})
    assert status == 400 and "conversion time" in result["error"]
    assert ctx.sensors.settings()["air"]["interval_s"] == 2.0   # rolled back


def test_time_zone_goes_through_system_actions(make_mgmt, recorder):
    mgmt, _ = make_mgmt()
    _, log = recorder
    assert call(mgmt, "setTimeZone", {"timeZone": "Europe/Berlin"}) == (200, {"timeZone": "Europe/Berlin"})
    assert log.read_text().splitlines() == ["set-timezone Europe/Berlin"]
    for bad in ("Mars/Olympus", "Europe/Berlin; reboot", 5, ""):
        status, result = call(mgmt, "setTimeZone", {"timeZone": bad})
        assert status == 400 and "timeZone" in result["error"]
    assert log.read_text().splitlines() == ["set-timezone Europe/Berlin"]


def test_time_status(make_mgmt):
    mgmt, _ = make_mgmt()
    status, result = call(mgmt, "getTimeStatus", {})
    assert status == 200
    assert result["timeZone"] == "Europe/Berlin" and result["ntpEnabled"] is True
    assert result["ntpSynchronized"] is False and result["deviceTime"] == "2027-01-15T08:00:00Z"


def test_system_action_failure_is_500_with_the_reason(make_mgmt, tmp_path):
    from agent.management.system_actions import SystemActions

    mgmt, _ = make_mgmt()
    mgmt.system = SystemActions({"set_timezone": "sh -c 'echo permission denied >&2; exit 4' {timezone}",
                                 "time_status": "/nonexistent/timedatectl show"})
    status, result = call(mgmt, "setTimeZone", {"timeZone": "UTC"})
    assert status == 500 and "status 4" in result["error"] and "permission denied" in result["error"]
    status, result = call(mgmt, "getTimeStatus", {})
    assert status == 500 and "not found" in result["error"]


def test_diagnostics_bundle_uploaded_without_secrets(make_mgmt, tmp_path):
    import logging

    mgmt, ctx = make_mgmt()
    logging.getLogger("roost.test").error("connect failed with SharedAccessSignature sr=hub&sig=abc123&se=1")
    status, result = call(mgmt, "getDiagnostics", {})
    assert status == 200 and result["url"].endswith(result["blobName"])
    name, data = ctx.uplink.uploads[0]
    assert result["bytes"] == len(data) and name.startswith("diagnostics/")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = set(tar.getnames())
        logs = tar.extractfile("diagnostics/agent.log").read().decode()
        info = json.loads(tar.extractfile("diagnostics/deviceInfo.json").read())
    assert {"diagnostics/health.json", "diagnostics/identity.json", "diagnostics/outbox.json"} <= names
    assert "connect failed" in logs and "abc123" not in logs
    assert info["osName"] == "Debian GNU/Linux 13 (trixie)"


def test_diagnostics_upload_failure_is_502(make_mgmt):
    mgmt, ctx = make_mgmt()
    ctx.uplink.upload_error = ConnectionError("no storage account linked")
    status, result = call(mgmt, "getDiagnostics", {})
    assert status == 502 and "no storage account" in result["error"]
    status, result = call(mgmt, "getDiagnostics", {"includeLogs": "yes"})
    assert status == 400


def test_get_health(make_mgmt):
    mgmt, _ = make_mgmt()
    status, result = call(mgmt, "getHealth")
    assert status == 200
    assert result["cpuTemperature"] == 51.2 and result["load1"] == 0.5 and result["outboxDepth"] == 3
    assert result["memoryUsedPercent"] == 25.0 and result["uptime"] == 12345.67


def test_reprovision_and_key_rotation_by_identity_method(make_mgmt):
    mgmt, ctx = make_mgmt()
    assert call(mgmt, "reprovision", {}) == (202, {"reprovisioning": True})
    status, result = call(mgmt, "rotateDeviceKey", {})
    assert status == 409 and "connection-string" in result["error"]
    assert ctx.reprovisions == ["reprovision method"]


def test_a_crashing_handler_is_500_not_an_exception(make_mgmt):
    mgmt, ctx = make_mgmt()

    def broken():
        raise RuntimeError("sampler gone")
    ctx.sensors.sensor_ids = broken
    status, result = call(mgmt, "setTelemetryInterval", {"interval": 5})
    assert status == 500 and "sampler gone" in result["error"]


@pytest.mark.parametrize("name, payload, message", [
    ("reboot", {"reason": 5}, "reason must be a string"),
    ("reboot", {"reason": "x" * 201}, "at most 200"),
    ("identify", {"seconds": 0}, "between 1 and 600"),
    ("identify", {"seconds": "long"}, "must be a number"),
    ("removeTrustedCertificate", {}, "needs 'fingerprint'"),
    ("addTrustedCertificate", {}, "needs 'pem'"),
    ("scheduleReboot", {"at": 12}, "ISO 8601"),
    ("getHealth", {"verbose": True}, "unknown field(s) verbose"),
])
def test_payload_errors_name_the_problem(make_mgmt, name, payload, message):
    mgmt, ctx = make_mgmt()
    status, result = call(mgmt, name, payload)
    assert status == 400 and message in result["error"]
    assert ctx.reboots == [] and ctx.platform.pins == {}


def test_rotate_key_checks_the_key_before_asking_dps(make_mgmt, tmp_path):
    import base64

    (tmp_path / "dev.key").write_text(base64.b64encode(b"k" * 32).decode())
    mgmt, ctx = make_mgmt(identity={"method": "symmetric", "symmetric_key_file": "dev.key", "id_scope": "0ne1",
                                    "connection_string_file": "", "provisioning_host": "127.0.0.1:1"})
    for bad, message in [("not base64!", "not valid base64"), ("c2hvcnQ=", "16 to 64 bytes"), (7, "base64 string"),
                         (base64.b64encode(b"k" * 32).decode(), "already in use")]:
        status, result = call(mgmt, "rotateDeviceKey", {"key": bad})
        assert status == 400 and message in result["error"] and "current key stays in use" in result["error"]
    assert call(mgmt, "rotateDeviceKey", {})[0] == 400
    assert not (ctx.state_dir / "identity" / "device.key").exists() and ctx.reprovisions == []


def test_tpm_identity_rotates_by_reattesting(make_mgmt):
    mgmt, ctx = make_mgmt(identity={"method": "tpm", "id_scope": "0ne1", "connection_string_file": ""})
    assert call(mgmt, "rotateDeviceKey", {"key": "abc"})[0] == 400
    assert ctx.reprovisions == []
    assert call(mgmt, "rotateDeviceKey", None) == (202, {"rotating": True, "method": "tpm"})
    assert ctx.reprovisions == ["rotateDeviceKey (TPM)"]


def test_led_is_lit_while_management_runs(make_mgmt):
    mgmt, ctx = make_mgmt()

    async def lifecycle():
        mgmt.start()
        await asyncio.sleep(0)
        await mgmt.stop()

    asyncio.run(lifecycle())
    assert ctx.platform.pins[17].states == [1, 0] and mgmt.led.mode == "auto"

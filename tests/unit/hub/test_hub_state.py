"""The SQLite stores: registry, twins, C2D queue and feedback, telemetry metering, DPS, errors."""

from __future__ import annotations

import base64
import os
import threading

import pytest

from emulator.hub.state import (
    C2D_MAX_DELIVERIES,
    C2D_MAX_QUEUE,
    Attestation,
    Conflict,
    DpsState,
    Enrollment,
    HubState,
    InvalidInput,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
    Registration,
    merge_patch,
    message_units,
)


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def hub(tmp_path, clock):
    state = HubState(tmp_path / "hub.sqlite", clock)
    yield state
    state.close()


def test_sas_device_gets_two_keys_and_file_is_private(hub, tmp_path):
    device = hub.create_device("d1")
    assert len(base64.b64decode(device.primary_key)) == 32 and device.primary_key != device.secondary_key
    assert device.enabled and device.connection_state == "Disconnected"
    assert "primary_key" not in repr(device)
    for name in ("hub.sqlite", "hub.sqlite-wal", "hub.sqlite-shm"):  # the journal files hold keys too
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"device_id": ""}, "device id"),
    ({"device_id": "bad/slash"}, "device id"),
    ({"device_id": "x" * 129}, "device id"),
    ({"device_id": "ok", "auth_type": "password"}, "authentication type"),
    ({"device_id": "ok", "primary_key": "not base64!"}, "not valid base64"),
    ({"device_id": "ok", "primary_key": base64.b64encode(b"short").decode()}, "16-64 bytes"),
    ({"device_id": "ok", "auth_type": "selfSigned"}, "thumbprint"),
    ({"device_id": "ok", "auth_type": "selfSigned", "primary_thumbprint": "XYZ"}, "hex digits"),
    ({"device_id": "ok", "status": "paused"}, "enabled"),
])
def test_bad_device_input_is_refused_clearly(hub, kwargs, message):
    with pytest.raises(InvalidInput, match=message):
        hub.create_device(**kwargs)
    assert hub.list_devices() == []


def test_registry_update_delete_with_etags(hub):
    device = hub.create_device("d1")
    assert hub.find_device("nope") is None
    with pytest.raises(Conflict):
        hub.create_device("d1")
    with pytest.raises(PreconditionFailed):
        hub.update_device("d1", etag="stale", status="disabled")
    changed = hub.update_device("d1", etag=device.etag, status="disabled", status_reason="stolen")
    assert (changed.status, changed.status_reason) == ("disabled", "stolen") and changed.etag != device.etag
    with pytest.raises(InvalidInput, match="cannot change device_id"):
        hub.update_device("d1", device_id="d2")
    with pytest.raises(NotFound):
        hub.update_device("ghost", status="enabled")
    thumb = "ab:cd:" + "00" * 18
    assert hub.create_device("x", auth_type="selfSigned", primary_thumbprint=thumb).primary_thumbprint == \
        "ABCD" + "00" * 18
    hub.delete_device("d1", etag="*")
    with pytest.raises(NotFound):
        hub.get_twin("d1")


def test_twin_versions_merge_and_push(hub):
    hub.create_device("d1")
    twin, push = hub.update_twin("d1", desired={"a": 1, "nested": {"x": 1, "y": 2}}, tags={"t": 1})
    assert (twin.desired_version, push) == (2, {"a": 1, "nested": {"x": 1, "y": 2}, "$version": 2})
    twin, push = hub.update_twin("d1", desired={"nested": {"y": None}})
    assert twin.desired == {"a": 1, "nested": {"x": 1}} and push == {"nested": {"y": None}, "$version": 3}
    twin, push = hub.update_twin("d1", desired={"a": 1})
    assert push is None and twin.desired_version == 3  # nothing changed: no version, no push
    twin, _ = hub.update_twin("d1", tags={"t": None, "u": 2})
    assert twin.tags == {"u": 2}
    twin, push = hub.update_twin("d1", desired={"only": True}, replace=True)
    assert twin.desired == {"only": True} and push == {"only": True, "$version": 4}
    twin = hub.patch_reported("d1", {"r": {"value": 1, "ac": 200, "av": 4}})
    assert twin.device_view() == {"desired": {"only": True, "$version": 4},
                                  "reported": {"r": {"value": 1, "ac": 200, "av": 4}, "$version": 2}}
    with pytest.raises(PreconditionFailed):
        hub.update_twin("d1", tags={"a": 1}, etag="old")


@pytest.mark.parametrize(("patch", "message"), [
    ([1, 2], "JSON object"),
    ({"$reserved": 1}, "may not start with"),
    ({"a.b": 1}, "may not contain"),
    ({"": 1}, "non-empty"),
    ({"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": 1}}}}}}}}}}}, "10 levels"),
    ({"big": "x" * 33000}, "32 KB"),
])
def test_bad_reported_patches_change_nothing(hub, patch, message):
    hub.create_device("d1")
    hub.patch_reported("d1", {"kept": 1})
    with pytest.raises(InvalidInput, match=message):
        hub.patch_reported("d1", patch)
    twin = hub.get_twin("d1")
    assert (twin.reported, twin.reported_version) == ({"kept": 1}, 2)


def test_c2d_queue_limit_expiry_and_feedback(hub, clock):
    hub.create_device("d1")
    first = hub.enqueue_c2d("d1", b"1", ttl_s=10, ack="full")
    for i in range(C2D_MAX_QUEUE - 1):
        hub.enqueue_c2d("d1", str(i).encode())
    with pytest.raises(QuotaExceeded, match="limit 50"):
        hub.enqueue_c2d("d1", b"one too many")
    clock.now += 11
    assert hub.next_c2d("d1").payload == b"0"  # the first expired
    assert [(f.message_id, f.status) for f in hub.feedback()] == [(first.message_id, "Expired")]
    with pytest.raises(InvalidInput, match="64 KB"):
        hub.enqueue_c2d("d1", b"x" * 65537)
    with pytest.raises(InvalidInput, match="ack"):
        hub.enqueue_c2d("d1", b"x", ack="maybe")
    with pytest.raises(NotFound):
        hub.enqueue_c2d("ghost", b"x")
    assert hub.purge_c2d("d1") == C2D_MAX_QUEUE - 1
    assert hub.pending_c2d("d1") == []


def test_c2d_delivery_release_and_dead_letter(hub):
    hub.create_device("d1")
    message = hub.enqueue_c2d("d1", b"x", properties={"k": 1}, ack="negative")
    assert message.properties == {"k": "1"}
    for attempt in range(1, C2D_MAX_DELIVERIES + 1):
        delivered = hub.next_c2d("d1")
        assert delivered.delivery_count == attempt and delivered.state == "inflight"
        assert hub.next_c2d("d1") is None  # one in flight at a time
        hub.release_c2d(delivered.seq)
    assert hub.next_c2d("d1") is None
    assert [f.status for f in hub.feedback()] == ["DeliveryCountExceeded"]


def test_positive_feedback_only_when_requested(hub):
    hub.create_device("d1")
    for ack in ("none", "negative", "positive"):
        hub.enqueue_c2d("d1", ack.encode(), ack=ack)
        hub.complete_c2d(hub.next_c2d("d1").seq)
    assert [f.status for f in hub.feedback()] == ["Success"]


def test_telemetry_units_counters_and_tail(hub):
    hub.create_device("d1")
    sizes = [10, 4096, 4097, 256 * 1024]
    for size in sizes:
        hub.add_telemetry("d1", b"x" * size, {}, {})
    assert [message_units(s) for s in sizes] == [1, 1, 2, 64]
    records = hub.telemetry()
    assert [r.units for r in records] == [1, 1, 2, 64]
    assert hub.telemetry(after_seq=records[1].seq)[0].seq == records[2].seq
    assert hub.counters() == {"d2c_messages": 4, "d2c_units": 68}
    assert hub.counters("2000-01-01") == {}


def test_telemetry_retention_trims_oldest(tmp_path, clock):
    state = HubState(tmp_path / "h.sqlite", clock, telemetry_retention=10)
    state.create_device("d1")
    for i in range(1000):
        state.add_telemetry("d1", str(i).encode(), {}, {})
    kept = state.telemetry(limit=2000)
    assert len(kept) == 10 and kept[-1].payload == b"999"


def test_state_survives_reopen_and_restart_resets_connections(tmp_path, clock):
    path = tmp_path / "h.sqlite"
    state = HubState(path, clock)
    state.create_device("d1")
    state.set_connection_state("d1", True)
    state.enqueue_c2d("d1", b"x")
    inflight = state.next_c2d("d1")
    state.save_session("d1", {"a/#": 1})
    state.close()
    state = HubState(path, clock)
    assert state.get_device("d1").connection_state == "Disconnected"
    assert state.next_c2d("d1").seq == inflight.seq  # in flight at the crash: queued again
    assert state.load_session("d1") == {"a/#": 1}
    state.drop_session("d1")
    assert state.load_session("d1") is None


def test_concurrent_writers_from_threads(hub):
    hub.create_device("d1")
    errors = []

    def writer(n):
        try:
            for i in range(100):
                hub.add_telemetry("d1", f"{n}-{i}".encode(), {}, {})
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and hub.counters()["d2c_messages"] == 400


def test_cas(hub):
    with pytest.raises(InvalidInput, match="PEM"):
        hub.add_ca("x", "not a cert")
    hub.add_ca("x", "-----BEGIN CERTIFICATE-----\n...")
    assert list(hub.list_cas()) == ["x"]
    hub.remove_ca("x")
    with pytest.raises(NotFound):
        hub.remove_ca("x")


def test_merge_patch():
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": None, "e": {"f": None}}, "d": None}) == \
        {"a": {"c": 2, "e": {}}}


# DPS


def test_enrollments_and_registrations(tmp_path, clock):
    dps = DpsState(tmp_path / "dps.sqlite", clock)
    individual = dps.put_enrollment(Enrollment("r1", Attestation("symmetricKey")))
    assert individual.attestation.primary_key and individual.etag
    group = dps.put_enrollment(Enrollment("r1", Attestation("symmetricKey"), is_group=True))
    assert group.attestation.primary_key != individual.attestation.primary_key  # same id, other kind
    with pytest.raises(PreconditionFailed):
        dps.put_enrollment(Enrollment("r1", Attestation("symmetricKey")), etag="stale")
    assert [e.is_group for e in dps.list_enrollments()] == [False, True]
    assert dps.list_enrollments(group=True)[0].enrollment_id == "r1"
    dps.delete_enrollment("r1", group=True)
    with pytest.raises(NotFound, match="enrollment group"):
        dps.get_enrollment("r1", group=True)
    registration = dps.save_registration(Registration("r1", "r1", False, "r1", "hub", "assigned",
                                                      "initialAssignment", "op-1", clock(), clock(), ""))
    assert dps.find_operation("op-1").registration_id == "r1"
    assert dps.get_registration("r1").etag == registration.etag
    dps.delete_registration("r1")
    with pytest.raises(NotFound, match="has not registered"):
        dps.get_registration("r1")


@pytest.mark.parametrize(("attestation", "group", "message"), [
    (Attestation("x509"), False, "needs a certificate"),
    (Attestation("tpm"), True, "only for individual"),
    (Attestation("tpm"), False, "endorsement key"),
    (Attestation("password"), False, "not symmetricKey, x509 or tpm"),
    (Attestation("symmetricKey", primary_key="!!"), False, "base64"),
])
def test_bad_enrollments_are_refused(tmp_path, attestation, group, message):
    dps = DpsState(tmp_path / "dps.sqlite")
    with pytest.raises(InvalidInput, match=message):
        dps.put_enrollment(Enrollment("e1", attestation, is_group=group))
    assert dps.list_enrollments() == []

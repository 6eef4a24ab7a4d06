"""DPS: the unmodified SDK's ProvisioningDeviceClient over MQTT, and the HTTPS REST path."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request

import hubrig
import pytest
from azure.iot.device import X509, IoTHubDeviceClient, ProvisioningDeviceClient
from azure.iot.device import exceptions as sdk_errors

from emulator.hub.sas import derive_group_key, make_sas
from emulator.hub.state import Attestation, Enrollment
from emulator.pki import Pki


@pytest.fixture
def two_hubs(tmp_path, loopback_address):
    emulator = hubrig.start(tmp_path, loopback_address, extra_hubs=[hubrig.unique_loopback()])
    yield emulator
    emulator.stop()


def _symmetric(emu, registration_id: str, key: str) -> ProvisioningDeviceClient:
    info = emu.emulator.connection_info()
    return ProvisioningDeviceClient.create_from_symmetric_key(
        info["dps"]["host"], registration_id, info["dps"]["id_scope"], key,
        server_verification_cert=hubrig.root_ca(emu))


def test_individual_symmetric_key_enrollment_then_hub_connection(emu):
    dps = emu.emulator.dps
    enrollment = dps.state.put_enrollment(Enrollment(
        "sensor-01", Attestation("symmetricKey"), device_id="pi-kitchen",
        initial_twin={"tags": {"room": "kitchen"}, "properties": {"desired": {"interval": 30}}}))
    result = _symmetric(emu, "sensor-01", enrollment.attestation.primary_key).register()
    state = result.registration_state
    assert result.status == "assigned"
    assert (state.assigned_hub, state.device_id, state.sub_status) == (emu.emulator.hub.hostname, "pi-kitchen",
                                                                       "initialAssignment")
    client = IoTHubDeviceClient.create_from_symmetric_key(enrollment.attestation.primary_key, state.assigned_hub,
                                                          state.device_id, server_verification_cert=hubrig.root_ca(emu),
                                                          connection_retry=False)
    try:
        client.connect()
        assert client.get_twin()["desired"] == {"interval": 30, "$version": 2}
    finally:
        client.shutdown()
    assert emu.emulator.hub.state.get_twin("pi-kitchen").tags == {"room": "kitchen"}


def test_group_enrollment_derived_keys_and_allocation(two_hubs):
    dps = two_hubs.emulator.dps
    group = dps.state.put_enrollment(Enrollment("fleet", Attestation("symmetricKey"), is_group=True))
    hubs = set()
    for n in range(6):
        registration_id = f"node-{n}"
        key = derive_group_key(group.attestation.primary_key, registration_id)
        state = _symmetric(two_hubs, registration_id, key).register().registration_state
        hubs.add(state.assigned_hub)
        hub = two_hubs.emulator.hubs[state.assigned_hub]
        assert hub.state.get_device(registration_id).primary_key == key
    assert hubs == set(two_hubs.emulator.hubs)  # hashed allocation spreads six devices over both hubs


def test_static_allocation_and_reprovisioning_migrates_or_resets(two_hubs):
    emulator = two_hubs.emulator
    dps = emulator.dps
    first, second = sorted(emulator.hubs)
    enrollment = dps.state.put_enrollment(Enrollment("mover", Attestation("symmetricKey"), iot_hubs=[first],
                                                     allocation_policy="static"))
    key = enrollment.attestation.primary_key
    assert _symmetric(two_hubs, "mover", key).register().registration_state.assigned_hub == first
    emulator.hubs[first].state.patch_reported("mover", {"fw": "1.0"})
    emulator.hubs[first].state.update_twin("mover", desired={"mode": "eco"})

    enrollment.iot_hubs = [second]
    dps.state.put_enrollment(enrollment)
    moved = _symmetric(two_hubs, "mover", key).register().registration_state
    assert (moved.assigned_hub, moved.sub_status) == (second, "deviceDataMigrated")
    twin = emulator.hubs[second].state.get_twin("mover")
    assert (twin.desired, twin.reported) == ({"mode": "eco"}, {"fw": "1.0"})

    enrollment.iot_hubs = [first]
    enrollment.reprovision = {"updateHubAssignment": True, "migrateDeviceData": False}
    enrollment.initial_twin = {"properties": {"desired": {"mode": "factory"}}}
    dps.state.put_enrollment(enrollment)
    back = _symmetric(two_hubs, "mover", key).register().registration_state
    assert (back.assigned_hub, back.sub_status) == (first, "deviceDataReset")
    assert emulator.hubs[first].state.get_twin("mover").desired == {"mode": "factory"}

    enrollment.iot_hubs = [second]
    enrollment.reprovision = {"updateHubAssignment": False, "migrateDeviceData": False}
    dps.state.put_enrollment(enrollment)
    assert _symmetric(two_hubs, "mover", key).register().registration_state.assigned_hub == first


def test_x509_individual_and_group_enrollments(emu):
    emulator = emu.emulator
    info = emulator.connection_info()
    ca_pem = hubrig.root_ca(emu)
    own = emulator.pki.device("cam-9", self_signed=True)
    emulator.dps.state.put_enrollment(Enrollment("cam-9", Attestation("x509", certificates=[own.pem])))
    signed = emulator.pki.device("plc-9")
    root_pem = emulator.pki.root().pem
    emulator.dps.state.put_enrollment(Enrollment("factory-ca", Attestation("x509", certificates=[root_pem]),
                                                 is_group=True))
    for cert, auth_type in ((own, "selfSigned"), (signed, "certificateAuthority")):
        registration_id = cert.certificate.subject.rfc4514_string().removeprefix("CN=")
        x509 = X509(str(cert.cert_path), str(cert.key_path))
        result = ProvisioningDeviceClient.create_from_x509_certificate(
            info["dps"]["host"], registration_id, info["dps"]["id_scope"], x509,
            server_verification_cert=ca_pem).register()
        assert result.status == "assigned"
        assert emulator.hub.state.get_device(registration_id).auth_type == auth_type
        client = IoTHubDeviceClient.create_from_x509_certificate(x509, result.registration_state.assigned_hub,
                                                                 registration_id, server_verification_cert=ca_pem,
                                                                 connection_retry=False)
        try:
            client.connect()
            client.send_message("provisioned")
        finally:
            client.shutdown()


def test_wrong_key_unknown_registration_and_disabled_enrollment_are_refused(emu):
    dps = emu.emulator.dps
    enrollment = dps.state.put_enrollment(Enrollment("valid", Attestation("symmetricKey")))
    dps.state.put_enrollment(Enrollment("off", Attestation("symmetricKey"), provisioning_status="disabled"))
    wrong = derive_group_key(enrollment.attestation.primary_key, "salt")
    for registration_id, key in (("valid", wrong), ("nobody", wrong), ("off", enrollment.attestation.primary_key)):
        with pytest.raises(sdk_errors.CredentialError):
            _symmetric(emu, registration_id, key).register()
    assert dps.state.list_registrations() == []


def test_untrusted_certificate_is_refused_by_dps(emu, tmp_path):
    emulator = emu.emulator
    root_pem = emulator.pki.root().pem
    emulator.dps.state.put_enrollment(Enrollment("factory-ca", Attestation("x509", certificates=[root_pem]),
                                                 is_group=True))
    foreign = Pki(tmp_path / "foreign").device("plc-x")
    info = emulator.connection_info()
    client = ProvisioningDeviceClient.create_from_x509_certificate(
        info["dps"]["host"], "plc-x", info["dps"]["id_scope"], X509(str(foreign.cert_path), str(foreign.key_path)),
        server_verification_cert=hubrig.root_ca(emu))
    with pytest.raises(sdk_errors.CredentialError):
        client.register()


# HTTPS REST


def _https(emu, method: str, path: str, body: dict | None = None, token: str | None = None,
           query: str = "?api-version=2021-06-01") -> tuple[int, dict, dict]:
    info = emu.emulator.connection_info()
    context = ssl.create_default_context(cadata=hubrig.root_ca(emu))
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{info['dps']['https']}{path}{query}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", token)
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}"), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}"), dict(error.headers)


def test_https_register_poll_and_status(emu):
    emulator = emu.emulator
    emulator.dps.immediate_assignment = False
    scope = emulator.dps.id_scope
    enrollment = emulator.dps.state.put_enrollment(Enrollment("rest-1", Attestation("symmetricKey")))
    token = make_sas(f"{scope}/registrations/rest-1", enrollment.attestation.primary_key, 2_000_000_000, "registration")
    base = f"/{scope}/registrations/rest-1"
    status, body, headers = _https(emu, "PUT", f"{base}/register", {"registrationId": "rest-1"}, token)
    assert (status, body["status"], headers["Retry-After"]) == (202, "assigning", "3")
    status, polled, _ = _https(emu, "GET", f"{base}/operations/{body['operationId']}", token=token)
    assert (status, polled["status"]) == (200, "assigned")
    assert polled["registrationState"]["assignedHub"] == emulator.hub.hostname
    status, lookup, _ = _https(emu, "POST", base, {"registrationId": "rest-1"}, token)
    assert (status, lookup["deviceId"], lookup["status"]) == (200, "rest-1", "assigned")

    emulator.dps.immediate_assignment = True
    status, body, _ = _https(emu, "PUT", f"{base}/register", {"registrationId": "rest-1", "payload": {"fw": 2}}, token)
    assert (status, body["status"], body["registrationState"]["payload"]) == (200, "assigned", {"fw": 2})


def test_https_errors_are_clear(emu):
    scope = emu.emulator.dps.id_scope
    enrollment = emu.emulator.dps.state.put_enrollment(Enrollment("rest-2", Attestation("symmetricKey")))
    token = make_sas(f"{scope}/registrations/rest-2", enrollment.attestation.primary_key, 2_000_000_000, "registration")
    base = f"/{scope}/registrations/rest-2"
    status, body, _ = _https(emu, "PUT", f"{base}/register", {"registrationId": "rest-2"}, token, query="")
    assert status == 400 and "api-version" in body["message"]
    status, body, _ = _https(emu, "PUT", f"{base}/register", {"registrationId": "rest-2"})
    assert status == 401 and "SharedAccessSignature" in body["message"]
    status, body, _ = _https(emu, "PUT", f"{base}/register", {"registrationId": "other"}, token)
    assert status == 400 and "differs" in body["message"]
    status, body, _ = _https(emu, "GET", f"{base}/operations/nope", token=token)
    assert status == 404
    status, body, _ = _https(emu, "GET", "/elsewhere", token=token)
    assert status == 404 and "registrations" in body["message"]
    status, body, _ = _https(emu, "PUT", "/wrongscope/registrations/rest-2/register", {}, token)
    assert status == 401 and "id scope" in body["message"]
    # The server is still serving, and nothing was registered by the refused requests.
    assert emu.emulator.dps.state.list_registrations() == []


def test_mqtt_register_202_then_poll_and_bad_requests(emu):
    from emulator.hub import codec

    dps = emu.emulator.dps
    dps.immediate_assignment = False
    enrollment = dps.state.put_enrollment(Enrollment("polled", Attestation("symmetricKey")))
    host, scope = emu.emulator.connection_info()["dps"]["host"], dps.id_scope
    raw = hubrig.RawClient(host, hubrig.root_ca(emu))
    token = make_sas(f"{scope}/registrations/polled", enrollment.attestation.primary_key, 2_000_000_000,
                     "registration")
    raw.send(codec.Connect("polled", f"{scope}/registrations/polled/api-version=2019-03-31", token.encode(), False))
    assert raw.recv() == codec.Connack(0)
    raw.send(codec.Subscribe(1, [("$dps/registrations/res/#", 1), ("$iothub/twin/res/#", 1)]))
    assert raw.recv() == codec.Suback(1, [1, codec.SUBACK_FAILURE])

    def ask(topic: str, body: bytes, rid: str) -> tuple[str, dict]:
        raw.send(codec.Publish(topic, body, qos=1, packet_id=int(rid) + 10))
        assert raw.recv() == codec.Ack(codec.PacketType.PUBACK, int(rid) + 10)
        answer = raw.recv()
        assert f"$rid={rid}" in answer.topic
        return answer.topic, json.loads(answer.payload)

    topic, body = ask("$dps/registrations/PUT/iotdps-register/?$rid=1", b'{"registrationId": "polled"}', "1")
    assert topic.startswith("$dps/registrations/res/202/") and "retry-after=3" in topic
    assert body["status"] == "assigning"
    topic, polled = ask(f"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId={body['operationId']}",
                        b"", "2")
    assert topic.startswith("$dps/registrations/res/200/") and polled["status"] == "assigned"
    topic, error = ask("$dps/registrations/PUT/iotdps-register/?$rid=3", b"{broken", "3")
    assert topic.startswith("$dps/registrations/res/400/") and "not JSON" in error["message"]
    topic, error = ask("$dps/registrations/GET/iotdps-get-operationstatus/?$rid=4&operationId=nope", b"", "4")
    assert topic.startswith("$dps/registrations/res/404/")
    raw.send(codec.Publish("$dps/elsewhere", b"", qos=0))
    assert raw.recv_until_closed() == []


def test_dps_mqtt_refuses_bad_user_names_and_client_ids(emu):
    from emulator.hub import codec

    host, scope = emu.emulator.connection_info()["dps"]["host"], emu.emulator.dps.id_scope
    enrollment = emu.emulator.dps.state.put_enrollment(Enrollment("dev-a", Attestation("symmetricKey")))
    token = make_sas(f"{scope}/registrations/dev-a", enrollment.attestation.primary_key, 2_000_000_000).encode()
    for client_id, username, code in (("dev-a", f"{scope}/registrations/dev-a", 4),
                                      ("other", f"{scope}/registrations/dev-a/api-version=2019-03-31", 5),
                                      ("dev-a", "wrong/registrations/dev-a/api-version=2019-03-31", 5)):
        raw = hubrig.RawClient(host, hubrig.root_ca(emu))
        raw.send(codec.Connect(client_id, username, token))
        assert raw.recv().return_code == code, username
        raw.close()

"""File upload with the unmodified azure-iot-device client: storage info from the hub, PUT to the local blob
endpoint, notification, and the service's listing."""

from __future__ import annotations

import hashlib
import urllib.parse

import pytest
import requests
import servicerig
from azure.iot.device import IoTHubDeviceClient
from azure.iot.device import exceptions as sdk_errors

from emulator.hub.service_api import port_is_bindable


@pytest.fixture
def upload_rig(tmp_path, loopback_address):
    # The device SDK sends its file-upload requests to port 443 of the hub's host name, always.
    if not port_is_bindable(loopback_address, 443):
        pytest.skip("the device SDK's file upload needs port 443, which this user may not bind")
    rig = servicerig.Rig(tmp_path, loopback_address, device_port=443)
    yield rig
    rig.stop()


@pytest.fixture
def device(upload_rig):
    client = IoTHubDeviceClient.create_from_connection_string(
        upload_rig.device_connection_string("cam1"), server_verification_cert=upload_rig.ca_pem,
        connection_retry=False)
    yield client
    client.shutdown()


def _blob_url(info: dict) -> str:
    return (f"https://{info['hostName']}/{info['containerName']}/{urllib.parse.quote(info['blobName'])}"
            f"{info['sasToken']}")


def test_device_sdk_uploads_a_file_round_trip(upload_rig, device):
    data = bytes(range(256)) * 1000
    info = device.get_storage_info_for_blob("logs/boot 1.bin")
    assert info["blobName"] == "cam1/logs/boot 1.bin"
    put = requests.put(_blob_url(info), data=data, headers={"x-ms-blob-type": "BlockBlob"},
                       verify=upload_rig.root_ca, timeout=30)
    assert put.status_code == 201
    device.notify_blob_upload_status(info["correlationId"], True, put.status_code, "uploaded")
    listing = upload_rig.request("GET", "/roost/files", params={"device": "cam1"}).json()
    assert [(u["blobName"], u["state"], u["statusCode"]) for u in listing["uploads"]] == \
        [("cam1/logs/boot 1.bin", "succeeded", 201)]
    [blob] = listing["blobs"]
    assert blob["size"] == len(data)
    with open(blob["path"], "rb") as stored:
        assert hashlib.sha256(stored.read()).digest() == hashlib.sha256(data).digest()
    fetched = requests.get(_blob_url(info), verify=upload_rig.root_ca, timeout=30)
    assert fetched.status_code == 200 and fetched.content == data
    assert upload_rig.hub.state.counters()["file_uploads"] == 1


def test_a_failed_upload_is_recorded_as_failed(upload_rig, device):
    info = device.get_storage_info_for_blob("never.txt")
    device.notify_blob_upload_status(info["correlationId"], False, 500, "disk full on the device")
    [upload] = upload_rig.request("GET", "/roost/files").json()["uploads"]
    assert (upload["state"], upload["isSuccess"], upload["statusDescription"]) == \
        ("failed", False, "disk full on the device")


def test_blob_endpoint_refuses_bad_sas_and_bad_requests(upload_rig, device):
    info = device.get_storage_info_for_blob("a.txt")
    url = _blob_url(info)
    forged = url.replace("sp=rw", "sp=rwd")
    assert requests.put(forged, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, verify=upload_rig.root_ca,
                        timeout=30).status_code == 403
    other = url.replace("cam1/a.txt", "cam1/b.txt")
    refused = requests.put(other, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, verify=upload_rig.root_ca,
                           timeout=30)
    assert refused.status_code == 403 and "<Code>AuthenticationFailed</Code>" in refused.text
    no_type = requests.put(url, data=b"x", verify=upload_rig.root_ca, timeout=30)
    assert no_type.status_code == 400 and "x-ms-blob-type" in no_type.text
    staged = requests.put(url + "&comp=block&blockid=AAAA", data=b"x", headers={"x-ms-blob-type": "BlockBlob"},
                          verify=upload_rig.root_ca, timeout=30)
    assert staged.status_code == 400
    unsigned = url.split("?")[0]
    assert requests.get(unsigned, verify=upload_rig.root_ca, timeout=30).status_code == 403
    assert upload_rig.request("GET", "/roost/files").json()["blobs"] == []


def _refusal(call, *args) -> str:
    """What the hub answered: the SDK reports HTTP errors as ClientError caused by a ServiceError."""
    with pytest.raises(sdk_errors.ClientError) as caught:
        call(*args)
    return str(caught.value.__cause__)


def test_hub_refuses_bad_file_upload_requests(upload_rig, device):
    assert "400" in _refusal(device.get_storage_info_for_blob, "../escape")
    assert "400" in _refusal(device.notify_blob_upload_status, "no-such-correlation", True, 201, "?")
    for i in range(10):
        device.get_storage_info_for_blob(f"f{i}")
    assert "403" in _refusal(device.get_storage_info_for_blob, "the eleventh")
    assert len(upload_rig.request("GET", "/roost/files").json()["uploads"]) == 10


def test_file_upload_needs_the_device_credentials(upload_rig):
    upload_rig.hub.state.create_device("cam1")
    policy_token = upload_rig.token()
    response = requests.post(f"https://{upload_rig.address}/devices/cam1/files?api-version=2021-04-12",
                             json={"blobName": "x"}, headers={"Authorization": policy_token},
                             verify=upload_rig.root_ca, timeout=30)
    assert response.status_code == 401
    assert response.json()["Message"].startswith("ErrorCode:IotHubUnauthorizedAccess;")
    assert upload_rig.request("GET", "/roost/files").json()["uploads"] == []


def test_x509_device_gets_storage_info_with_its_certificate(upload_rig):
    from azure.iot.device import X509

    issued = upload_rig.emu.emulator.pki.device("cam-x509", self_signed=True)
    upload_rig.hub.state.create_device("cam-x509", auth_type="selfSigned", primary_thumbprint=issued.thumbprint)
    client = IoTHubDeviceClient.create_from_x509_certificate(
        X509(str(issued.cert_path), str(issued.key_path)), upload_rig.hub.hostname, "cam-x509",
        server_verification_cert=upload_rig.ca_pem, connection_retry=False)
    try:
        info = client.get_storage_info_for_blob("snapshot.jpg")
        assert info["blobName"] == "cam-x509/snapshot.jpg"
        client.notify_blob_upload_status(info["correlationId"], False, 499, "camera busy")
    finally:
        client.shutdown()
    [upload] = upload_rig.request("GET", "/roost/files", params={"device": "cam-x509"}).json()["uploads"]
    assert (upload["state"], upload["statusCode"]) == ("failed", 499)

"""Pure parts of the TPM identity: blob parsing, registration ids, error translation, DPS responses."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tpm2_pytss import TSS2_Exception

from agent.identity.errors import IdentityError, ProvisioningError
from agent.tpm.activation import MAX_BLOB, AuthenticationKey
from agent.tpm.device import check_tcti, registration_id
from agent.tpm.dps import DpsHttpClient, DpsResponse, split_host, wait_for_assignment
from agent.tpm.errors import (
    ChallengeRejected,
    EnrollmentMissing,
    NoResourceManager,
    TpmError,
    TpmLockout,
    TpmNotFound,
    response_code,
    translate,
)
from emulator.hub import dps_tpm


def tpm2b(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


PARTS = [tpm2b(b"c" * 50), tpm2b(b"s" * 256), tpm2b(b"d" * 80), tpm2b(b"e" * 256), tpm2b(b"p" * 50)]


def test_blob_parts_round_trip_with_and_without_trailer():
    blob = b"".join(PARTS)
    parsed = AuthenticationKey.parse(blob)
    assert parsed.build() == blob
    assert parsed.duplicate == PARTS[2]
    assert AuthenticationKey.parse(blob + b"\x00\x00") == parsed


@pytest.mark.parametrize("blob, why", [
    (b"", "ends before the credential blob"),
    (b"".join(PARTS[:3]), "ends before the duplicate seed"),
    (b"".join(PARTS) + b"\x00", "1 unexpected bytes"),
    (b"".join(PARTS) + b"\x00\x00\x00", "3 unexpected bytes"),
    (b"\x00\x00" + b"".join(PARTS[1:]), "claims 0 bytes"),
    (b"\x10\x00" + b"x" * 10, "claims 4096 bytes"),
    (b"x" * (MAX_BLOB + 1), "more than a challenge can be"),
])
def test_malformed_blobs_say_what_is_wrong(blob, why):
    with pytest.raises(ChallengeRejected, match="malformed") as raised:
        AuthenticationKey.parse(blob)
    assert why in raised.value.problem
    assert "nothing was stored" in raised.value.fix


@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_are_rejected_cleanly(blob):
    try:
        parsed = AuthenticationKey.parse(blob)
    except ChallengeRejected:
        return
    assert parsed.build() == blob[: len(parsed.build())]


@given(st.binary(min_size=1, max_size=400))
def test_registration_id_agrees_with_the_service_side(ek):
    reg_id = registration_id(ek)
    assert reg_id == dps_tpm.registration_id(ek)
    assert len(reg_id) == 52 and reg_id == reg_id.lower() and "=" not in reg_id


def test_registration_id_known_vector():
    # sha256("") = e3b0c442...; its RFC 4648 base32, lower case, unpadded:
    assert registration_id(b"") == "4oymiquy7qobjgx36tejs35zeqt24qpemsnzgtfeswmrw6csxbkq"


@pytest.mark.parametrize("rc, kind", [
    (0x921, TpmLockout), (0x902, NoResourceManager), (0x903, NoResourceManager),
    (0xA000A, TpmNotFound), (0xA0005, TpmNotFound),
])
def test_tss_errors_become_operator_errors(rc, kind):
    error = translate(TSS2_Exception(rc), "swtpm:host=127.0.0.1,port=2321", "signing")
    assert type(error) is kind
    assert isinstance(error, IdentityError)
    assert error.fix and "signing" in error.problem


def test_failure_mode_and_unknown_codes_keep_the_code():
    assert "failure mode" in translate(TSS2_Exception(0x101), "t", "x").problem
    unknown = translate(TSS2_Exception(0x1C4), "t", "doing something")
    assert type(unknown) is TpmError and "rc 0x1c4" in unknown.problem


def test_response_code_strips_handle_and_parameter_numbers():
    assert response_code(TSS2_Exception(0x18B)) == 0x8B      # TPM_RC_HANDLE on handle 1
    assert response_code(TSS2_Exception(0x2D6)) == 0x96      # parameter 2
    assert response_code(TSS2_Exception(0x921)) == 0x921     # format-zero codes stay as they are


def test_non_device_tctis_pass_the_precheck():
    for tcti in ("swtpm:host=127.0.0.1,port=2321", "tabrmd", "mssim:host=localhost"):
        check_tcti(tcti)
    with pytest.raises(NoResourceManager):
        check_tcti("device")                                  # libtss2's default device is /dev/tpm0


@pytest.mark.parametrize("host, expected", [
    ("dps.example", ("dps.example", 443)), ("127.0.0.2:8443", ("127.0.0.2", 8443)),
    ("[::1]", ("[::1]", 443)),
])
def test_split_host(host, expected):
    assert split_host(host) == expected


def client() -> DpsHttpClient:
    return DpsHttpClient("dps.example", "0ne00000001", "reg1")


@pytest.mark.parametrize("status", [401, 403, 404])
def test_no_challenge_means_no_enrollment(status):
    error = client().refused(DpsResponse(status, {"message": "nope"}, None), "challenge")
    assert isinstance(error, EnrollmentMissing)
    assert "roost tpm ek" in error.fix and "nope" in error.problem


def test_refusals_after_the_challenge():
    assert client().refused(DpsResponse(401, {}, None), "register").kind == "auth"
    assert client().refused(DpsResponse(429, {}, None), "register").kind == "throttled"
    assert client().refused(DpsResponse(500, {}, None), "register").kind == "refused"


def test_assignment_outcomes_without_polling():
    state = {"assignedHub": "hub.example", "deviceId": "d1", "status": "assigned"}
    done = DpsResponse(200, {"operationId": "op", "status": "assigned", "registrationState": state}, None)
    assert wait_for_assignment(client(), done, lambda: "") == state
    failed = DpsResponse(200, {"operationId": "op", "status": "failed",
                               "registrationState": {"errorMessage": "no hub"}}, None)
    with pytest.raises(ProvisioningError, match="no hub"):
        wait_for_assignment(client(), failed, lambda: "")
    with pytest.raises(ProvisioningError, match="without an operation id"):
        wait_for_assignment(client(), DpsResponse(202, {"status": "assigning"}, None), lambda: "")

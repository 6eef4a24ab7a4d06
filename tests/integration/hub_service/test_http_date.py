"""Every HTTPS endpoint of the emulator dates its responses (RFC 7231), from the emulator's own clock.

Azure's endpoints all send ``Date``; `roost doctor` measures the device's clock skew against it, so an
emulator started with a shifted clock must show that shift, on errors as well as on successes.
"""

from __future__ import annotations

import email.utils

import requests
import servicerig

from emulator.hub import health_attestation
from emulator.hub.http import Response, http_date

HUB_NOW = 1_700_000_000.75          # 2023-11-14 22:13:20 UTC: far from the test machine's clock
EXPECTED = "Tue, 14 Nov 2023 22:13:20 GMT"


def _date(response: requests.Response) -> str:
    assert "Date" in response.headers, f"{response.url} answered {response.status_code} without a Date header"
    return response.headers["Date"]


def test_http_date_is_rfc7231_imf_fixdate():
    assert http_date(HUB_NOW) == EXPECTED
    assert email.utils.parsedate_to_datetime(EXPECTED).timestamp() == int(HUB_NOW)
    wire = Response(204).encode(keep_alive=True, now=HUB_NOW).decode("latin-1")
    assert f"\r\nDate: {EXPECTED}\r\n" in wire
    # A handler that dates its response itself is not given a second Date header.
    own = Response(200, b"", {"Date": "Wed, 01 Jan 2025 00:00:00 GMT"}).encode(True, now=HUB_NOW).decode("latin-1")
    assert own.count("Date:") == 1 and "2025" in own


def test_service_dps_blob_and_health_endpoints_date_responses_with_the_hub_clock(tmp_path, loopback_address):
    rig = servicerig.Rig(tmp_path, loopback_address, clock=lambda: HUB_NOW)
    try:
        assert _date(rig.request("GET", "/devices")) == EXPECTED                       # 200
        missing = rig.request("GET", "/devices/nobody")
        assert (missing.status_code, _date(missing)) == (404, EXPECTED)
        refused = rig.request("GET", "/devices", token="SharedAccessSignature sr=x&sig=y&se=1")
        assert (refused.status_code, _date(refused)) == (401, EXPECTED)

        dps = rig.emu.emulator.connection_info()["dps"]
        register = requests.put(f"{dps['https']}/{dps['id_scope']}/registrations/dev1/register",
                                json={"registrationId": "dev1"}, verify=rig.root_ca, timeout=30)
        assert (register.status_code, _date(register)) == (400, EXPECTED)               # no api-version

        blob = requests.get(f"{rig.service.info()['blobEndpoint']}/container/name.bin", verify=rig.root_ca,
                            timeout=30)
        assert blob.status_code == 403 and _date(blob) == EXPECTED                      # no SAS

        with health_attestation.serve_for_emulator(rig.emu.emulator, rig.address) as server:
            challenge = requests.post(f"{server.url}/attestation/challenge", json={}, verify=rig.root_ca,
                                      timeout=30)
        assert (challenge.status_code, _date(challenge)) == (400, EXPECTED)
    finally:
        rig.stop()

"""The health attestation service beside the emulator: a silent client does not stall the others."""

from __future__ import annotations

import socket

import requests
import servicerig

from emulator.hub import health_attestation


def test_a_client_that_never_handshakes_does_not_block_other_devices(tmp_path, loopback_address):
    rig = servicerig.Rig(tmp_path, loopback_address)
    try:
        with health_attestation.serve_for_emulator(rig.emu.emulator, rig.address) as server:
            # Connected, but silent: before, accept() ran the TLS handshake and waited for this client.
            with socket.create_connection((rig.address, server.port), timeout=30):
                answer = requests.post(f"{server.url}/attestation/challenge", json={"endorsementKey": "!"},
                                       verify=rig.root_ca, timeout=20)
            assert answer.status_code == 400 and "endorsementKey is not base64" in answer.json()["message"]
    finally:
        rig.stop()

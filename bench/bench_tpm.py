"""TPM identity benchmarks, against swtpm and the hub + DPS emulator on loopback.

- attestation: DPS TPM attestation from the first register to the assigned hub key stored in the TPM
  (`agent.tpm.provision(force=True)`: EK/SRK read, challenge, ActivateCredential + Import, TPM-signed SAS,
  hub key import), median of several runs. Baseline in the same run: a symmetric-key DPS registration by the
  unmodified azure-iot-device ProvisioningDeviceClient against the same emulator. ``tpm_ms`` is the TPM's share
  (the same TPM commands without HTTP), the number the goal is about: attestation under 1 s excluding the network.
- sas_signatures: SAS signatures per second with the key inside the TPM, as the uplink uses it (a connection per
  signature) and over a held connection, against software HMAC-SHA256 with the key in memory.
- health_attestation: one quote round trip (challenge, ActivateCredential, quote, verdict) over loopback HTTPS.
"""

from __future__ import annotations

import base64
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import figure

RUNS = 8


def _address() -> str:
    return f"127.{200 + os.getpid() % 50}.{os.getpid() // 50 % 250 + 1}.7"


def _median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


_IMPORT_PROBE = """
import time
def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
before = rss_kib()
started = time.perf_counter()
import tpm2_pytss, tpm2_pytss.utils
print(time.perf_counter() - started, rss_kib() - before)
"""


def _import_cost() -> dict:
    """What a `roost` process pays for the TPM stack: tpm2-pytss import time and resident memory it adds."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, check=True)
    seconds, kib = out.stdout.split()
    return {"import_ms": round(float(seconds) * 1000, 1), "rss_added_mib": round(int(kib) / 1024, 1)}


def _tpm_share(tcti: str) -> list[float]:
    """The TPM commands of one attestation, without HTTP: two challenges activated, one SAS, one import."""
    from agent.identity.credentials import sas_token
    from agent.tpm.activation import import_persistent, loaded_key
    from agent.tpm.device import HUB_KEY_HANDLE, Tpm
    from agent.tpm.signer import hmac
    from emulator.hub.dps_tpm import authentication_key

    with Tpm(tcti) as tpm:
        ek, srk = tpm.ek_public(), tpm.srk_public()
    blobs = [tuple(authentication_key(ek, srk, secrets.token_bytes(32)) for _ in range(2)) for _ in range(RUNS)]
    samples = []
    for challenge, hub_key in blobs:
        started = time.perf_counter()
        with Tpm(tcti) as tpm:
            tpm.ek_public()
            tpm.srk_public()
            with loaded_key(tpm, challenge) as key:
                sas_token("scope/registrations/r", lambda m, key=key: hmac(tpm, key, m), 2_000_000_000, "registration")
            import_persistent(tpm, hub_key, HUB_KEY_HANDLE)
        samples.append(time.perf_counter() - started)
    return samples


def run() -> dict:
    from agent.config import Config, DeviceConfig, IdentityConfig
    from agent.identity.credentials import key_signer
    from agent.tpm import provisioning
    from agent.tpm.device import HUB_KEY_HANDLE, Tpm, registration_id
    from agent.tpm.signer import TpmSigner, hmac
    from emulator.board.swtpm import SwTpm
    from emulator.hub import health_attestation
    from emulator.hub.server import EmulatorConfig, EmulatorThread
    from emulator.hub.state import Attestation, Enrollment

    results: dict = {}
    address = _address()
    with tempfile.TemporaryDirectory(prefix="roost-bench-tpm-") as tmp:
        root = Path(tmp)
        with SwTpm.manufactured(root / "swtpm", host=address) as swtpm:
            emu = EmulatorThread(EmulatorConfig(state_dir=root / "emu", address=address, dps_https_port=0)).start()
            try:
                info = emu.emulator.connection_info()
                dps = emu.emulator.dps
                with Tpm(swtpm.tcti) as tpm:
                    ek = tpm.ek_public()
                reg_id = registration_id(ek)
                dps.state.put_enrollment(Enrollment(reg_id, Attestation(
                    "tpm", endorsement_key=base64.b64encode(ek).decode())))
                config = Config(device=DeviceConfig(state_dir=str(root / "state")), identity=IdentityConfig(
                    method="tpm", provisioning_host=info["dps"]["https"].removeprefix("https://"),
                    id_scope=info["dps"]["id_scope"], tpm_tcti=swtpm.tcti, provisioning_ca_file=info["root_ca"]))

                provisioning.provision(config, config.state_dir, force=True)     # warm: imports, TLS, SRK
                attest = []
                for _ in range(RUNS):
                    started = time.perf_counter()
                    provisioning.provision(config, config.state_dir, force=True)
                    attest.append(time.perf_counter() - started)
                tpm_only = _tpm_share(swtpm.tcti)
                symmetric = _symmetric_registrations(emu, info)
                results["attestation"] = figure(
                    _median_ms(attest), "ms", baseline=_median_ms(symmetric),
                    baseline_name="symmetric-key DPS registration, azure-iot-device over MQTT, same emulator",
                    goal="tpm_ms < 1000", higher_is_better=False, tpm_ms=round(_median_ms(tpm_only), 1),
                    network_and_service_ms=round(_median_ms(attest) - _median_ms(tpm_only), 1), runs=RUNS)

                key = secrets.token_bytes(32)
                message = b"hub.example%2Fdevices%2Fdevice-1\n1900000000"
                software = key_signer(key)
                n = 20000
                started = time.perf_counter()
                for _ in range(n):
                    software(message)
                soft_rate = n / (time.perf_counter() - started)
                signer = TpmSigner(swtpm.tcti, HUB_KEY_HANDLE)
                n = 200
                started = time.perf_counter()
                for _ in range(n):
                    signer(message)
                tpm_rate = n / (time.perf_counter() - started)
                with Tpm(swtpm.tcti) as tpm:
                    handle = tpm.open_persistent(HUB_KEY_HANDLE, "hub key")
                    n = 1000
                    started = time.perf_counter()
                    for _ in range(n):
                        hmac(tpm, handle, message)
                    held_rate = n / (time.perf_counter() - started)
                    tpm.ectx.tr_close(handle)
                results["sas_signatures"] = figure(
                    tpm_rate, "signatures/s", baseline=soft_rate, baseline_name="software HMAC-SHA256, key in memory",
                    goal="> 1/s (one token per hour is needed)", held_connection_per_s=round(held_rate, 1))

                server = health_attestation.serve_for_emulator(emu.emulator, address).start()
                try:
                    from agent.tpm.health import attest as health_attest

                    ca = Path(info["root_ca"]).read_text()
                    health_attest(swtpm.tcti, server.url, ca_pem=ca)       # creates the AK once
                    quotes = []
                    for _ in range(RUNS):
                        started = time.perf_counter()
                        verdict = health_attest(swtpm.tcti, server.url, ca_pem=ca)
                        quotes.append(time.perf_counter() - started)
                        assert verdict["verdict"] == "healthy", verdict
                finally:
                    server.stop()
                results["health_attestation"] = figure(
                    _median_ms(quotes), "ms", baseline=_median_ms(attest),
                    baseline_name="DPS TPM attestation (above)", higher_is_better=False, runs=RUNS)
            finally:
                emu.stop()
    results["tpm2_pytss"] = _import_cost()
    return results


def _symmetric_registrations(emu, info: dict) -> list[float]:
    from azure.iot.device import ProvisioningDeviceClient

    from emulator.hub.state import Attestation, Enrollment

    ca_pem = Path(info["root_ca"]).read_text()
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    emu.emulator.dps.state.put_enrollment(Enrollment("bench-symmetric", Attestation("symmetricKey", primary_key=key)))
    samples = []
    for _ in range(RUNS // 2):
        started = time.perf_counter()
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=info["dps"]["host"], registration_id="bench-symmetric", id_scope=info["dps"]["id_scope"],
            symmetric_key=key, server_verification_cert=ca_pem)
        result = client.register()
        samples.append(time.perf_counter() - started)
        assert result.status == "assigned", result
    return samples


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))

"""A hub + DPS emulator per test, enrollments, and roost configs that point at it."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import roost_test_support as support

from agent.config import parse_config
from emulator.hub.server import EmulatorConfig, EmulatorThread
from emulator.hub.state import Attestation, Enrollment


def start(state_dir: Path, address: str, **options) -> EmulatorThread:
    options.setdefault("dps_https_port", 0)
    return EmulatorThread(EmulatorConfig(state_dir=state_dir, address=address, **options)).start()


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def enroll_symmetric(emu: EmulatorThread, registration_id: str, key: str, *, group: bool = False) -> None:
    emu.emulator.dps.state.put_enrollment(Enrollment(registration_id, Attestation("symmetricKey", primary_key=key),
                                                     is_group=group))


def enroll_x509(emu: EmulatorThread, registration_id: str, cert_pem: str) -> None:
    emu.emulator.dps.state.put_enrollment(Enrollment(registration_id, Attestation("x509", certificates=[cert_pem])))


def write_secret(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o600)
    return path


def config(tmp_path: Path, emu: EmulatorThread, identity: dict, *, hub: dict | None = None,
           management: dict | None = None, device: dict | None = None):
    info = emu.emulator.connection_info()
    data = {
        "device": {"state_dir": str(tmp_path / "state"), "platform": "emulated", "board": "rpi-4b",
                   **(device or {})},
        "identity": {"provisioning_host": info["dps"]["host"], "id_scope": info["dps"]["id_scope"],
                     "provisioning_ca_file": info["root_ca"], **identity},
        "hub": {"ca_file": info["root_ca"], "connect_timeout_s": 10.0, **(hub or {})},
        "telemetry": {"interval_s": 1.0, "batch_max_delay_s": 0.2},
        "health": {"interval_s": 5.0},
    }
    if management:
        data["management"] = management
    cfg, problems = parse_config(data)
    assert cfg is not None, problems
    return cfg


def wait_for(predicate, timeout: float = 20.0, what: str = "condition"):
    """Poll until ``predicate()`` is truthy: a deadline against hangs, not a timing assertion."""
    return support.wait_for(predicate, timeout, what, poll_s=0.02)


def sdk_connect(creds, timeout: float = 15.0):
    """Connect the unmodified SDK client with these credentials; returns the connected client."""
    from azure.iot.device import X509, IoTHubDeviceClient

    kwargs = {"server_verification_cert": creds.ca_pem, "connection_retry": False}
    if creds.gateway_hostname:
        kwargs["gateway_hostname"] = creds.gateway_hostname
    if creds.x509 is not None:
        client = IoTHubDeviceClient.create_from_x509_certificate(
            X509(creds.x509.cert_file, creds.x509.key_file), hostname=creds.hostname, device_id=creds.device_id,
            **kwargs)
    else:
        client = IoTHubDeviceClient.create_from_sastoken(creds.sas_token(3600), **kwargs)
    try:
        client.connect()
    except BaseException:
        client.shutdown()
        raise
    return client


class RunningAgent:
    """The real roost Daemon (emulated board, real uplink and management) on a thread of its own."""

    def __init__(self, cfg) -> None:
        import asyncio
        import threading

        from agent.daemon import Daemon

        self.daemon = Daemon(cfg)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.exit_code: int | None = None
        self._ready = threading.Event()

        def main() -> None:
            async def run() -> int:
                self.loop = asyncio.get_running_loop()
                self._ready.set()
                return await self.daemon.run()

            self.exit_code = asyncio.run(run())

        self.thread = threading.Thread(target=main, name="roost-agent", daemon=True)
        self.thread.start()
        self._ready.wait(10)

    @property
    def connected(self) -> bool:
        uplink = self.daemon.uplink
        return bool(uplink is not None and uplink.connected and self.daemon.management is not None)

    def stop(self) -> None:
        if self.thread.is_alive() and self.loop is not None:
            self.loop.call_soon_threadsafe(self.daemon.stop, "test finished")
        self.thread.join(30)


def recorder_script(tmp_path: Path) -> tuple[Path, Path]:
    """A command that appends its arguments to a log: stands in for systemctl / timedatectl."""
    log = tmp_path / "system-actions.log"
    script = tmp_path / "record-action"
    show = 'printf "Timezone=Europe/Oslo\\nNTP=yes\\nNTPSynchronized=yes\\n"'
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\nif [ "$1" = show ]; then {show}; fi\n')
    script.chmod(0o755)
    return script, log


def reported(emu: EmulatorThread, device_id: str) -> dict:
    return emu.emulator.hub.state.get_twin(device_id).reported


def events(emu: EmulatorThread, device_id: str, key: str) -> list[dict]:
    """Device-to-cloud messages whose JSON body has ``key`` (alerts, c2dResult)."""
    import json

    out = []
    for record in emu.emulator.hub.state.telemetry(after_seq=0, limit=100_000, device_id=device_id):
        try:
            body = json.loads(record.payload)
        except ValueError:
            continue
        items = body if isinstance(body, list) else [body]
        for item in items:
            if isinstance(item, dict) and key in item:
                out.append(item[key])
            elif isinstance(item, dict) and isinstance(item.get("event"), dict) and key in item["event"]:
                out.append(item["event"][key])
    return out

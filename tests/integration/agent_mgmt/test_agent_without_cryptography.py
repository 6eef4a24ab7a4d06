"""The running agent of a symmetric-key device never loads ``cryptography``: provisioned, connected, managed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap

from mgmtrig import enroll_symmetric, new_key, reported, wait_for, write_secret

from emulator.hub.state import NotFound

DEVICE = "pi-lean-1"

# `roost run` minus the command-line front end, which also loads every other command (bundle signing, ...).
AGENT = textwrap.dedent("""
    import argparse, atexit, json, sys

    def record():
        with open(sys.argv[2], "w") as out:
            json.dump(sorted(m for m in sys.modules if m.split(".")[0] == "cryptography"), out)

    atexit.register(record)
    from agent.commands import run
    sys.exit(run.run(argparse.Namespace(config=sys.argv[1], log_level="info")))
""")


def _reported(emu) -> dict:
    try:
        return reported(emu, DEVICE)
    except NotFound:   # not provisioned yet
        return {}


def _toml(data: dict) -> str:
    lines = []
    for table, values in data.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"


def test_a_symmetric_key_device_runs_without_cryptography(emu, tmp_path):
    key = new_key()
    enroll_symmetric(emu, DEVICE, key)
    info = emu.emulator.connection_info()
    config = tmp_path / "roost.toml"
    config.write_text(_toml({
        "device": {"state_dir": str(tmp_path / "state"), "platform": "emulated", "board": "rpi-4b"},
        "identity": {"method": "symmetric", "registration_id": DEVICE,
                     "symmetric_key_file": str(write_secret(tmp_path / "dev.key", key)),
                     "provisioning_host": info["dps"]["host"], "id_scope": info["dps"]["id_scope"],
                     "provisioning_ca_file": info["root_ca"]},
        "hub": {"ca_file": info["root_ca"], "connect_timeout_s": 10.0},
        "telemetry": {"interval_s": 1.0, "batch_max_delay_s": 0.2},
    }))
    modules = tmp_path / "modules.json"
    agent = subprocess.Popen([sys.executable, "-c", AGENT, str(config), str(modules)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # Provisioned through DPS, connected with the CA bundle, device info and health reported by management.
        wait_for(lambda: agent.poll() is None and {"deviceInfo", "health"} <= set(_reported(emu)),
                 timeout=60, what="the agent to report device info and health")
    finally:
        agent.send_signal(signal.SIGTERM)
        output, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, output
    assert json.loads(modules.read_text()) == []

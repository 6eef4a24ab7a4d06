"""`roost run` as a real process: systemd notify protocol, SIGKILL mid-stream, clean SIGTERM, no secrets in logs."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def write_config(tmp_path: Path, hub) -> Path:
    cs = tmp_path / "connection-string"
    cs.write_text(hub.connection_string() + "\n")
    cs.chmod(0o600)
    ca = tmp_path / "root-ca.pem"
    ca.write_text(hub.ca_pem)
    config = tmp_path / "roost.toml"
    config.write_text(f"""
[device]
board = "rpi-4b"
platform = "emulated"
state_dir = "state"
log_level = "info"

[identity]
method = "connection-string"
connection_string_file = "{cs}"

[hub]
ca_file = "{ca}"
backoff_base_s = 0.1
backoff_cap_s = 1.0

[telemetry]
interval_s = 0.05
batch_max_delay_s = 0.2

[telemetry.sensors.particles]
enabled = false
""")
    return config


def start_agent(config: Path, notify: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "1000000", "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config)], cwd=ROOT,
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def hub_seqs(hub) -> list[int]:
    return [seq for _, seq, _ in hub.readings()]


def outbox_seqs(state: Path) -> list[int]:
    db = sqlite3.connect(state / "outbox.sqlite")
    try:
        return [row[0] for row in db.execute("SELECT seq FROM readings ORDER BY seq")]
    finally:
        db.close()


def wait(condition, timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def notify_socket(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.1)
    yield path, sock
    sock.close()


def datagrams(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except (TimeoutError, BlockingIOError):
            return out


@pytest.mark.slow
def test_sigkill_loses_nothing_and_sigterm_stops_cleanly(hub, tmp_path, notify_socket):
    notify_path, sock = notify_socket
    config = write_config(tmp_path, hub)
    state = tmp_path / "state"
    log = tmp_path / "agent.log"

    agent = start_agent(config, notify_path, log)
    try:
        wait(lambda: len(set(hub_seqs(hub))) >= 60, what="first readings at the hub")
        messages = datagrams(sock)
        assert any(m.startswith("READY=1") for m in messages), messages
        wait(lambda: "WATCHDOG=1" in datagrams(sock), timeout=10, what="a watchdog ping")
        # roost run keeps requests' charset detector (compiled modules, ~3 MB) out of its process.
        assert "charset_normalizer" not in Path(f"/proc/{agent.pid}/maps").read_text()
        wait(lambda: bool(outbox_seqs(state)), timeout=10, what="readings waiting in the outbox")
        agent.send_signal(signal.SIGKILL)   # while readings wait for their batch or their PUBACK
        agent.wait(10)
    finally:
        if agent.poll() is None:
            agent.kill()
    at_kill_hub = set(hub_seqs(hub))
    at_kill_outbox = set(outbox_seqs(state))

    agent = start_agent(config, notify_path, log)
    try:
        wait(lambda: at_kill_outbox <= set(hub_seqs(hub)), what="readings from before the kill")
        before_term = len(set(hub_seqs(hub)))
        wait(lambda: len(set(hub_seqs(hub))) > before_term + 20, what="fresh readings")
        datagrams(sock)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(30) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
    assert any(m.startswith("STOPPING=1") for m in datagrams(sock))

    delivered = set(hub_seqs(hub))
    remaining = set(outbox_seqs(state))
    every = set(range(1, max(delivered | remaining) + 1))
    assert delivered | remaining == every, f"lost: {sorted(every - delivered - remaining)[:10]}"
    assert at_kill_outbox <= delivered and at_kill_hub <= delivered

    text = log.read_text()
    assert hub.key not in text
    assert "SharedAccessSignature" not in text or "sig=<redacted>" in text
    assert "stopped;" in text


def test_bad_config_exits_78_with_the_problem(tmp_path):
    config = tmp_path / "roost.toml"
    config.write_text('[identity]\nmethod = "tmp"\n')
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 78
    assert "identity.method: 'tmp' is not one of" in result.stderr and "did you mean 'tpm'" in result.stderr


def test_unusable_state_dir_exits_with_a_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "roost.toml"
    (tmp_path / "cs").write_text("HostName=h;DeviceId=d;SharedAccessKey=a2V5a2V5a2V5a2V5\n")
    config.write_text(f'[device]\nplatform = "emulated"\nstate_dir = "{blocker}/state"\n'
                      f'[identity]\nmethod = "connection-string"\nconnection_string_file = "cs"\n')
    result = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 69
    assert "device.state_dir" in result.stdout + result.stderr

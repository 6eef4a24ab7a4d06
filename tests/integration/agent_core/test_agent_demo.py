"""`roost-sim demo` (make demo): hub, DPS and the real agent process on an emulated board, driven like a user."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import shlex
import shutil
import threading
import time
from pathlib import Path

import pytest

from emulator.cli import main as roost_sim


def demo_args(tmp_path, address, **overrides) -> argparse.Namespace:
    values = {"board": "rpi-4b", "interval": 0.5, "count": None, "seed": 1, "faults": "", "identity": "symmetric",
              "state_dir": tmp_path / "demo", "address": address, "sensors_only": False, "chaos": False}
    values.update(overrides)
    return argparse.Namespace(**values)


class Running:
    """The demo on its own thread, as a user would have it in one terminal."""

    def __init__(self, args: argparse.Namespace) -> None:
        from emulator.commands.demo import FleetDemo

        self.out = io.StringIO()
        self.demo = FleetDemo(args, args.interval, self.out)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.result: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        async def main() -> int:
            self.loop = asyncio.get_running_loop()
            return await self.demo.run()

        self.result = asyncio.run(main())

    def wait_for(self, pattern: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.out.getvalue()
            if re.search(pattern, text):
                return text
            assert self.thread.is_alive(), f"the demo ended early:\n{text}"
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} in the demo's output:\n{self.out.getvalue()[-3000:]}")

    def stop(self) -> int | None:
        if self.loop is not None and self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.demo._stop.set)
        self.thread.join(60)
        return self.result


def printed_command(text: str, verb: str) -> list[str]:
    line = next(line for line in text.splitlines() if f" hub {verb} " in line)
    words = shlex.split(line.strip().split("     ")[0])
    program = words[:words.index("hub")]
    # What the demo printed must run as printed: on PATH, or a path to the installed script.
    assert len(program) == 1 and (shutil.which(program[0]) or Path(program[0]).is_file()), program
    return words[len(program):]          # without the program


@pytest.mark.slow
def test_demo_shows_readings_at_the_hub_and_its_commands_work(tmp_path, loopback_address, capsys):
    running = Running(demo_args(tmp_path, loopback_address))
    try:
        text = running.wait_for(r"IoT Hub received [1-9]\d* messages")
        assert "device roost-demo (rpi-4b, symmetric key) connected" in running.wait_for(r"\) connected")
        for sensor in ("climate", "humidity", "analog"):
            assert sensor in text
        assert "Ctrl-C stops everything" in text

        # The commands the demo prints, run as printed, from "another terminal".
        capsys.readouterr()
        assert roost_sim([*printed_command(text, "invoke"), "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["status"] == 200
        assert roost_sim(printed_command(text, "twin desired")) == 0
        capsys.readouterr()
        deadline = time.monotonic() + 30
        while True:
            assert roost_sim([*printed_command(text, "twin show"), "--json"]) == 0
            reported = json.loads(capsys.readouterr().out)["properties"]["reported"]
            if reported.get("telemetryInterval", {}).get("ac") == 200:
                break
            assert time.monotonic() < deadline, reported
            time.sleep(0.5)
        assert reported["telemetryInterval"]["value"] == 5
    finally:
        assert running.stop() == 0
    final = running.out.getvalue()
    assert "stopping the agent" in final and "state kept in" in final
    assert running.demo.agent.returncode == 0
    log = (tmp_path / "demo" / "agent" / "agent.log").read_text()
    key = (tmp_path / "demo" / "device.key").read_text().strip()
    assert key not in log


def test_printed_commands_work_without_the_venv_on_path(tmp_path):
    import sys

    from emulator.commands.demo import program

    venv_bin = Path(sys.executable).parent
    assert program("roost-sim", which=lambda name: "/usr/bin/roost-sim") == "roost-sim"
    project = venv_bin.parent.parent           # the directory that holds .venv
    relative = program("roost-sim", cwd=project, which=lambda name: None)
    assert relative == "./" + str(venv_bin.relative_to(project) / "roost-sim")     # ./.venv/bin/roost-sim
    assert (project / relative).is_file()
    elsewhere = program("roost-sim", cwd=tmp_path, which=lambda name: None)
    assert elsewhere == str(venv_bin.absolute() / "roost-sim")


def test_demo_refuses_bad_input(tmp_path, capsys):
    from emulator.commands.demo import demo

    assert demo(demo_args(tmp_path, None, interval=0)) == 2
    assert "--interval must be more than 0" in capsys.readouterr().err
    assert demo(demo_args(tmp_path, None, count=0)) == 2
    assert demo(demo_args(tmp_path, None, chaos=True)) == 2
    assert "--chaos goes with --sensors-only" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.tpm
def test_demo_provisions_with_the_tpm_when_swtpm_is_there(tmp_path, loopback_address):
    from emulator.commands.demo import _tpm_available

    if not _tpm_available():
        pytest.skip("swtpm or tpm2-pytss not installed")
    running = Running(demo_args(tmp_path, loopback_address, identity="tpm", count=None))
    try:
        running.wait_for(r"IoT Hub received [1-9]\d* messages", timeout=120)
        assert "device roost-demo (rpi-4b, TPM) connected" in running.wait_for(r"\) connected")
    finally:
        assert running.stop() == 0
    assert not running.demo.swtpm.running

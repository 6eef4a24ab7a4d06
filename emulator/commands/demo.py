"""`roost-sim demo` (and `make demo`): a whole roost fleet of one on this machine.

    roost-sim demo [--board rpi-4b] [--identity auto|tpm|symmetric] [--state-dir DIR] [--address 127.x.y.z]
                   [--interval 2] [--count N] [--seed N] [--faults SPEC]
    roost-sim demo --sensors-only [--board rpi-4b] [--interval 1] [--count N] [--seed N] [--faults SPEC] [--chaos]

It starts the local IoT Hub and DPS, enrolls a device (TPM attestation on a software TPM when swtpm is
installed, a symmetric key otherwise), starts the real agent (`roost run`) on an emulated board, and shows the
readings as IoT Hub receives them, with the commands to change the device's twin and call its methods from
another terminal. Ctrl-C stops the agent, the hub and the TPM, and keeps their state in the state directory.

``--sensors-only`` shows just the emulated board's sensors read through the HAL, without hub or agent;
``--chaos`` (with it) injects and clears sensor faults as it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from emulator.board.readings_table import LiveTable, clock_title
from emulator.hub.server import free_loopback_address

DEVICE = "roost-demo"


def program(name: str, *, cwd: Path | None = None, which: Any = shutil.which) -> str:
    """How a user in ``cwd`` runs ``name`` (roost, roost-sim): the bare name when it is on PATH, else the script
    installed beside this interpreter (``.venv/bin/roost-sim``, relative when it lies under ``cwd``), else the
    interpreter running the module."""
    if which(name):
        return name
    script = Path(sys.executable).parent / name
    if script.exists():
        base = Path.cwd() if cwd is None else Path(cwd)
        try:
            return shlex.quote(os.path.join(".", str(script.absolute().relative_to(base.absolute()))))
        except ValueError:
            return shlex.quote(str(script.absolute()))
    module = {"roost": "agent.cli", "roost-sim": "emulator.cli"}[name]
    return f"{shlex.quote(sys.executable)} -m {module}"

# Faults --chaos picks from, per driver: ones every part of that kind can show.
CHAOS_FAULTS = {
    "bme280": ("nack", "busy", "stuck"),
    "sht4x": ("nack", "bad_crc", "busy"),
    "ads1115": ("nack", "busy"),
    "pms5003": ("garbage", "bad_crc", "unplugged"),
    "nmea": ("bad_crc", "unplugged"),
}


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="hub, DPS and the agent on an emulated board, live",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--board", default="rpi-4b", help="board profile to emulate (default rpi-4b)")
    parser.add_argument("--interval", type=float, default=None, metavar="SECONDS",
                        help="seconds between readings (default 2; 1 with --sensors-only)")
    parser.add_argument("--count", type=int, default=None, metavar="N", help="stop after N screen updates")
    parser.add_argument("--seed", type=int, default=1, help="seed of the emulated signals (default 1)")
    parser.add_argument("--faults", default="", metavar="SPEC",
                        help="sensor faults from the start, e.g. climate=nack,particles=garbage")
    parser.add_argument("--identity", choices=("auto", "tpm", "symmetric"), default="auto",
                        help="how the device provisions: tpm (swtpm), symmetric, or auto (tpm when swtpm is "
                             "installed)")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="where the hub, the TPM and the agent keep their state (default: a new directory "
                             "under $TMPDIR)")
    parser.add_argument("--address", default=None,
                        help="loopback address for the hub and DPS (default: a free 127.x.y.z)")
    parser.add_argument("--sensors-only", action="store_true",
                        help="only the board's sensors read through the HAL, no hub or agent")
    parser.add_argument("--chaos", action="store_true", help="(--sensors-only) inject and clear random faults")
    parser.set_defaults(func=demo)


def demo(args: argparse.Namespace, out: Any = None) -> int:
    """The command: the whole product by default, the sensor table with --sensors-only."""
    out = out or sys.stdout
    sensors_only = getattr(args, "sensors_only", False)
    interval = args.interval if args.interval is not None else (1.0 if sensors_only else 2.0)
    if not interval > 0:
        print("roost-sim demo: --interval must be more than 0 seconds", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print("roost-sim demo: --count must be 1 or more", file=sys.stderr)
        return 2
    if sensors_only:
        return run(argparse.Namespace(**{**vars(args), "interval": interval}), out)
    if args.chaos:
        print("roost-sim demo: --chaos goes with --sensors-only; for the agent, use --faults or "
              "`roost-sim board` while the demo runs", file=sys.stderr)
        return 2
    try:
        return asyncio.run(FleetDemo(args, interval, out).run())
    except KeyboardInterrupt:
        return 0


# --- the whole product ------------------------------------------------------------------------------------------

class DemoError(RuntimeError):
    """The demo cannot start; the message says why and what to do."""


class FleetDemo:
    """Hub + DPS (+ swtpm) in this process, the agent as a real `roost run` process, a live view of the hub."""

    def __init__(self, args: argparse.Namespace, interval: float, out: Any) -> None:
        self.args = args
        self.interval = interval
        self.out = out
        self.state = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="roost-demo-"))
        self.emulator: Any = None
        self.service: Any = None
        self.swtpm: Any = None
        self.agent: subprocess.Popen | None = None
        self.device_id = DEVICE
        self.identity = ""
        self.latest: dict[str, dict] = {}        # sensor -> last reading the hub received
        self.messages = 0
        self.readings = 0
        self.units = 0
        self.first_at: float | None = None
        self.chips: dict[str, str] = {}
        self._stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):   # RuntimeError: not the main thread
                loop.add_signal_handler(sig, self._stop.set)
        try:
            try:
                await self._start()
            except DemoError as exc:
                print(f"roost-sim demo: {exc}", file=sys.stderr)
                return 1
            return await self._show()
        finally:
            await self._shutdown()

    # -- start-up ------------------------------------------------------------------------------------------------

    async def _start(self) -> None:
        from emulator.hub.server import Emulator, EmulatorConfig
        from emulator.hub.service_api import ServiceApi, ServiceOptions
        from hal.board import ProfileError, load_board
        from hal.sensors import driver_class

        try:
            board = load_board(self.args.board)
        except ProfileError as exc:
            raise DemoError(str(exc)) from exc
        self.chips = {spec.id: driver_class(spec.driver).CHIP for spec in board.sensors}
        self.state.mkdir(parents=True, exist_ok=True)
        address = self.args.address or _free_loopback()
        self._say(f"roost demo: state in {self.state}")
        self.emulator = Emulator(EmulatorConfig(state_dir=self.state / "hub", address=address, dps_https_port=0))
        try:
            await self.emulator.start()
        except OSError as exc:
            raise DemoError(f"the hub cannot listen on {address}:8883 ({exc.strerror}); pass another --address, "
                            "any 127.x.y.z works") from exc
        self.service = ServiceApi(self.emulator, ServiceOptions(port=0, device_port=None, blob_port=0))
        await self.service.start()
        self.emulator.hub.add_telemetry_listener(self._on_telemetry)
        info = self.emulator.connection_info()
        self._say(f"  IoT Hub + DPS emulator on {address} (MQTT/TLS 8883, DPS REST {info['dps']['https']})")
        identity = self._identity_section(info)
        config = self._write_config(info, identity)
        self._start_agent(config)

    def _identity_section(self, info: dict) -> dict:
        from emulator.hub.state import Attestation, Enrollment

        dps = self.emulator.dps
        choice = self.args.identity
        if choice == "auto":
            choice = "tpm" if _tpm_available() else "symmetric"
        common = {"id_scope": info["dps"]["id_scope"], "provisioning_ca_file": info["root_ca"]}
        if choice == "tpm":
            if not _tpm_available():
                raise DemoError("--identity tpm needs swtpm and tpm2-pytss (apt install swtpm swtpm-tools; "
                                "pip install tpm2-pytss), or use --identity symmetric")
            from agent.tpm.device import Tpm, registration_id
            from emulator.board.swtpm import SwTpm

            tpm_dir = self.state / "tpm"
            fresh = not (tpm_dir / "tpm2-00.permall").exists()
            self.swtpm = (SwTpm.manufactured(tpm_dir) if fresh else SwTpm(tpm_dir)).start()
            with Tpm(self.swtpm.tcti) as tpm:
                ek = tpm.ek_public()
            reg_id = registration_id(ek)
            if dps.state.find_enrollment(reg_id) is None:
                # The registration id is derived from the EK; the hub device gets a name people can type.
                dps.state.put_enrollment(Enrollment(reg_id, Attestation(
                    "tpm", endorsement_key=base64.b64encode(ek).decode()), device_id=DEVICE))
            self.identity = "TPM"
            self._say(f"  software TPM {self.swtpm.tcti}: enrolled its endorsement key with DPS "
                      f"(registration id {reg_id}, device {DEVICE})")
            return {"method": "tpm", "tpm_tcti": self.swtpm.tcti,
                    "provisioning_host": info["dps"]["https"].removeprefix("https://"), **common}
        key_file = self.state / "device.key"
        if dps.state.find_enrollment(DEVICE) is None or not key_file.exists():
            key = base64.b64encode(secrets.token_bytes(32)).decode()
            dps.state.put_enrollment(Enrollment(DEVICE, Attestation("symmetricKey", primary_key=key,
                                                                    secondary_key=key)))
            key_file.write_text(key + "\n")
            key_file.chmod(0o600)
        self.identity = "symmetric key"
        self._say(f"  enrolled {DEVICE} with DPS (symmetric key, {key_file})")
        return {"method": "symmetric", "registration_id": DEVICE, "symmetric_key_file": str(key_file),
                "provisioning_host": info["dps"]["host"], **common}

    def _write_config(self, info: dict, identity: dict) -> Path:
        agent_dir = self.state / "agent"
        agent_dir.mkdir(exist_ok=True)
        lines = ["[device]", f'board = "{self.args.board}"', 'platform = "emulated"',
                 f'state_dir = "{agent_dir / "state"}"', 'log_level = "info"', "", "[identity]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in identity.items()]
        lines += ["", "[hub]", f'ca_file = "{info["root_ca"]}"', "", "[telemetry]",
                  f"interval_s = {self.interval}", "batch_max_delay_s = 1.0", ""]
        config = agent_dir / "roost.toml"
        config.write_text("\n".join(lines))
        return config

    def _start_agent(self, config: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("NOTIFY_SOCKET", None)
        if self.args.faults:
            env["ROOST_EMULATOR_FAULTS"] = self.args.faults
        env["ROOST_EMULATOR_SEED"] = str(self.args.seed)
        self.log_path = self.state / "agent" / "agent.log"
        log = self.log_path.open("ab")
        self.agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config)],
                                      stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True)   # Ctrl-C reaches the demo, which stops it cleanly
        log.close()
        self._say(f"  agent: {program('roost')} run --config {config} (pid {self.agent.pid}, log {self.log_path})")

    # -- the live view -------------------------------------------------------------------------------------------

    def _on_telemetry(self, record: Any) -> None:
        try:
            body = json.loads(record.payload)
        except ValueError:
            return
        if record.device_id != self.device_id or body.get("schema") != "roost.telemetry.v1":
            return
        self.messages += 1
        self.units += record.units
        self.first_at = self.first_at or time.time()
        for sensor, group in body.get("sensors", {}).items():
            for reading in group.get("readings", []):
                self.readings += 1
                self.latest[sensor] = {"sensor_id": sensor, "chip": self.chips.get(sensor, ""),
                                       "values": reading.get("values", {}),
                                       "units": group.get("units", {}), "timestamp": reading.get("ts"),
                                       "error": reading.get("error"), "error_kind": reading.get("error_kind")}

    async def _show(self) -> int:
        table = LiveTable(self.out)
        updates = 0
        started = time.monotonic()
        while not self._stop.is_set():
            if self.agent is not None and self.agent.poll() is not None:
                print(f"roost-sim demo: the agent exited with status {self.agent.returncode}; its log: "
                      f"{self.log_path}\n{_tail(self.log_path)}", file=sys.stderr)
                return 1
            if self.latest:
                readings = [self.latest[k] for k in sorted(self.latest)]
                try:
                    table.show(readings, title=self._title(), footer=self._footer())
                except (OSError, ValueError):   # output closed (e.g. piped into head): stop like Ctrl-C
                    return 0
                updates += 1
                if self.args.count is not None and updates >= self.args.count:
                    return 0
            elif time.monotonic() - started > 90:
                print(f"roost-sim demo: no telemetry after 90 s; the agent's log says:\n{_tail(self.log_path)}",
                      file=sys.stderr)
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(self.interval, 1.0) if self.latest else 0.2)
        return 0

    def _title(self) -> str:
        connected = self.device_id in self.emulator.hub.connected_devices()
        state = "connected" if connected else "offline"
        stamp = time.strftime("%H:%M:%S")
        return (f"roost demo {stamp}  device {self.device_id} ({self.args.board}, {self.identity}) {state}\n"
                f"IoT Hub received {self.messages} messages, {self.readings} readings, {self.units} billed 4 KB units")

    def _footer(self) -> str:
        state = shlex.quote(str(self.state / "hub"))
        dev = self.device_id
        sim = program("roost-sim")
        return "\n".join([
            "Try, from another terminal:",
            f"  {sim} hub twin desired {dev} '{{\"telemetryInterval\": 5}}' --state-dir {state}",
            f"  {sim} hub invoke {dev} identify '{{\"seconds\": 10}}' --state-dir {state}",
            f"  {sim} hub twin show {dev} --state-dir {state}     (the device's acknowledgements)",
            f"Agent log: {self.log_path}    Ctrl-C stops everything; state stays in {self.state}",
        ])

    def _say(self, text: str) -> None:
        try:
            print(text, file=self.out, flush=True)
        except (OSError, ValueError):   # the terminal or pipe went away; the demo still shuts down cleanly
            pass

    # -- shutdown ------------------------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        # The agent and swtpm run in sessions of their own (so a terminal's Ctrl-C reaches only the demo, which
        # then stops them in order): stop them before anything else, even when printing fails (a closed pipe).
        if self.agent is not None and self.agent.poll() is None:
            self._say("\nroost demo: stopping the agent (it flushes its outbox)...")
            self.agent.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.agent.wait, 30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                await asyncio.to_thread(self.agent.wait, 10)
        if self.service is not None:
            with contextlib.suppress(Exception):
                await self.service.stop()
        if self.emulator is not None and self.emulator.started:
            await self.emulator.stop()
        if self.swtpm is not None:
            self.swtpm.stop()
        if self.emulator is not None:
            self._say(f"roost demo: stopped. {self.messages} messages, {self.readings} readings reached the hub; "
                      f"state kept in {self.state}")


def _tpm_available() -> bool:
    if shutil.which("swtpm") is None or shutil.which("swtpm_setup") is None:
        return False
    try:
        import tpm2_pytss  # noqa: F401
    except ImportError:
        return False
    return True


def _free_loopback() -> str:
    try:
        return free_loopback_address()
    except RuntimeError as exc:
        raise DemoError(f"{exc}; pass --address") from None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- the board's sensors alone ---------------------------------------------------------------------------------

def run(args: argparse.Namespace, out: Any = None) -> int:
    """The emulated board's sensors read through the HAL, in a refreshing table (``--sensors-only``)."""
    from hal.board import ProfileError, load_board
    from hal.platform import PlatformError, load_platform
    from hal.sensors import open_sensors

    out = out or sys.stdout
    interval = args.interval
    if not interval > 0:
        print("roost-sim demo: --interval must be more than 0 seconds", file=sys.stderr)
        return 2
    if args.count is not None and args.count < 1:
        print("roost-sim demo: --count must be 1 or more", file=sys.stderr)
        return 2

    try:
        board = load_board(args.board)
        platform = load_platform("emulated", board, seed=args.seed, faults=args.faults or None)
    except (ProfileError, PlatformError) as exc:
        print(f"roost-sim demo: {exc}", file=sys.stderr)
        return 2
    table = LiveTable(out)
    chaos = Chaos(platform, board, random.Random(args.seed)) if args.chaos else None
    rounds = 0
    try:
        with platform:
            sensors = open_sensors(board, platform)
            while True:
                started = time.monotonic()
                if chaos is not None:
                    chaos.step()
                readings = [sensor.read() for sensor in sensors]
                faults = platform.emulator.active_faults()
                footer = "faults: " + ", ".join(f"{k}={'+'.join(v)}" for k, v in sorted(faults.items())) \
                    if faults else "faults: none  (try --chaos, or --faults climate=nack)"
                table.show(readings, title=clock_title(board.name, platform.clock.time()), footer=footer)
                rounds += 1
                if args.count is not None and rounds >= args.count:
                    return 0
                time.sleep(max(0.0, interval - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0


class Chaos:
    """Now and then breaks one sensor for a few rounds, then mends it."""

    def __init__(self, platform: Any, board: Any, rng: random.Random, *, every: int = 4, lasts: int = 3) -> None:
        self.platform = platform
        self.sensors = [s for s in board.sensors if s.driver in CHAOS_FAULTS]
        self.rng = rng
        self.every = every
        self.lasts = lasts
        self.round = 0
        self.broken: tuple[str, int] | None = None

    def step(self) -> None:
        self.round += 1
        if self.broken is not None and self.round >= self.broken[1]:
            self.platform.clear(self.broken[0])
            self.broken = None
        if self.broken is None and self.sensors and self.round % self.every == 0:
            spec = self.rng.choice(self.sensors)
            self.platform.inject(spec.id, self.rng.choice(CHAOS_FAULTS[spec.driver]))
            self.broken = (spec.id, self.round + self.lasts)

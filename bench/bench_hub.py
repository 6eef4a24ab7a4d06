"""Hub emulator benchmark: throughput with 100 SDK clients vs one, memory per device, `serve` start-up.

Method. The emulator runs as `roost-sim hub serve` in its own process, like a user runs it. Devices are
registered beforehand straight into its SQLite state. Clients are the unmodified azure-iot-device SDK in
separate worker processes:
- one client: one process, the sync client sending sequentially (each send waits for its PUBACK);
- 100 clients: WORKERS processes with 100/WORKERS asyncio clients each, every client sending sequentially,
  all clients in a process concurrently. The rate counts messages acknowledged between "all connected" and
  "all done" across the workers.
The machine's cores are shared by server and clients, so the many-client figure is bounded by the clients'
own CPU cost as much as by the server. Memory per device is the server's RSS growth with 100 connected clients.
Start-up is the wall time from launching `roost-sim hub serve` on an empty state directory to its printed
connection details (interpreter start, imports, PKI generation, SQLite, listeners), against the bare
interpreter start of `python -c "import asyncio, ssl, sqlite3"`.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench
from emulator.hub.server import free_loopback_address

CLIENTS = 100
WORKERS = 4
MESSAGES_ONE = 1000
MESSAGES_EACH = 100




def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(state_dir: Path, address: str) -> tuple[subprocess.Popen, dict, float]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "emulator.cli", "hub", "serve", "--state-dir", str(state_dir),
                                "--address", address, "--dps-https-port", "0", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    if not line:
        raise RuntimeError(f"roost-sim hub serve did not start: {process.stderr.read()}")
    return process, json.loads(line), elapsed


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


def _register(state_dir: Path, hub: str, ids: list[str]) -> dict[str, str]:
    from emulator.hub.state import HubState

    state = HubState(state_dir / f"hub-{hub}.sqlite")
    try:
        return {i: (state.find_device(i) or state.create_device(i)).primary_key for i in ids}
    finally:
        state.close()


def _worker(args: list[str]) -> None:
    """Worker process: connect the given devices (asyncio SDK), wait for "go", send, report."""
    from azure.iot.device.aio import IoTHubDeviceClient

    spec = json.loads(sys.stdin.readline())
    ca = Path(spec["ca"]).read_text()

    async def main() -> None:
        clients = [IoTHubDeviceClient.create_from_symmetric_key(key, spec["hub"], device_id,
                                                                server_verification_cert=ca, connection_retry=False)
                   for device_id, key in spec["devices"].items()]
        await asyncio.gather(*(c.connect() for c in clients))
        print("connected", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

        async def send(client) -> int:
            for i in range(spec["messages"]):
                await client.send_message(f"{i}")
            return spec["messages"]

        sent = sum(await asyncio.gather(*(send(c) for c in clients)))
        print(json.dumps({"sent": sent}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await asyncio.gather(*(c.shutdown() for c in clients))

    asyncio.run(main())


def _raw_worker() -> None:
    """Worker process with light clients (the emulator's own codec, 20 QoS 1 messages in flight each), to show
    what the server sustains when the SDK's client-side cost is out of the way."""
    import ssl

    from emulator.hub import codec
    from emulator.hub.sas import make_sas

    spec = json.loads(sys.stdin.readline())
    context = ssl.create_default_context(cafile=spec["ca"])

    async def client(device_id: str, key: str, go: asyncio.Event) -> int:
        reader, writer = await asyncio.open_connection(spec["hub"], 8883, ssl=context)
        token = make_sas(f"{spec['hub']}/devices/{device_id}", key, int(time.time()) + 3600).encode()
        writer.write(codec.encode(codec.Connect(device_id, f"{spec['hub']}/{device_id}/?api-version=2021-04-12",
                                                token, clean_session=False)))
        assert isinstance(await codec.read_packet(reader, 1 << 16), codec.Connack)
        await go.wait()
        total, window, sent, acked = spec["messages"], 20, 0, 0
        topic = f"devices/{device_id}/messages/events/"
        while acked < total:
            while sent < total and sent - acked < window:
                sent += 1
                writer.write(codec.encode(codec.Publish(topic, str(sent).encode(), 1, sent % 65535 + 1)))
            await writer.drain()
            packet = await codec.read_packet(reader, 1 << 16)
            if isinstance(packet, codec.Ack):
                acked += 1
        writer.close()
        return acked

    async def main() -> None:
        go = asyncio.Event()
        tasks = [asyncio.ensure_future(client(d, k, go)) for d, k in spec["devices"].items()]
        await asyncio.sleep(0)
        print("connected", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        go.set()
        sent = sum(await asyncio.gather(*tasks))
        print(json.dumps({"sent": sent}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    asyncio.run(main())


def _one_client(hub: str, ca_path: str, device_id: str, key: str) -> float:
    code = (
        "import sys, time\n"
        "from azure.iot.device import IoTHubDeviceClient\n"
        f"c = IoTHubDeviceClient.create_from_symmetric_key({key!r}, {hub!r}, {device_id!r},"
        f" server_verification_cert=open({ca_path!r}).read(), connection_retry=False)\n"
        "c.connect()\n"
        "for i in range(50): c.send_message('warm')\n"
        "t = time.perf_counter()\n"
        f"for i in range({MESSAGES_ONE}): c.send_message(str(i))\n"
        "print(time.perf_counter() - t)\n"
        "c.shutdown()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return MESSAGES_ONE / float(out.stdout.strip().splitlines()[-1])


def _many_clients(hub: str, ca_path: str, keys: dict[str, str], server_pid: int, *, raw: bool = False,
                  messages: int = MESSAGES_EACH) -> tuple[float, float, float]:
    ids = list(keys)
    rss_before = _rss_kb(server_pid)
    workers = []
    for w in range(WORKERS):
        mine = {i: keys[i] for i in ids[w::WORKERS]}
        process = subprocess.Popen([sys.executable, "-m", "bench.bench_hub", "--raw-worker" if raw else "--worker"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        process.stdin.write(json.dumps({"hub": hub, "ca": ca_path, "devices": mine, "messages": messages}) + "\n")
        process.stdin.flush()
        workers.append(process)
    try:
        for process in workers:
            if process.stdout.readline().strip() != "connected":
                raise RuntimeError("a benchmark worker failed to connect its clients")
        rss_connected = _rss_kb(server_pid)
        cpu_before = _cpu_s(server_pid)
        started = time.perf_counter()
        for process in workers:
            process.stdin.write("go\n")
            process.stdin.flush()
        sent = sum(json.loads(process.stdout.readline())["sent"] for process in workers)
        elapsed = time.perf_counter() - started
        server_cpu = _cpu_s(server_pid) - cpu_before
        for process in workers:
            process.stdin.write("stop\n")
            process.stdin.flush()
        for process in workers:
            process.wait(60)
    finally:
        for process in workers:
            if process.poll() is None:
                process.kill()
    return sent / elapsed, (rss_connected - rss_before) / len(ids), server_cpu / elapsed


def _interpreter_start() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import asyncio, ssl, sqlite3"], check=True)
    return time.perf_counter() - started


def run() -> dict:
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="roost-bench-hub-") as tmp:
        state_dir = Path(tmp) / "state"
        address = free_loopback_address(second_octets=range(77, 78))
        baseline_start = min(_interpreter_start() for _ in range(3))
        starts = []
        for attempt in range(3):
            process, info, elapsed = _serve(Path(tmp) / f"start-{attempt}", address)
            _stop(process)
            starts.append(elapsed)
        results["serve_startup"] = bench.figure(
            min(starts), "s", baseline=baseline_start, baseline_name="python -c 'import asyncio, ssl, sqlite3'",
            goal="< 1.0 s", higher_is_better=False, runs=[round(s, 3) for s in starts])

        # Register the devices first (the server reads the same SQLite file), then serve.
        process, info, _ = _serve(state_dir, address)
        hub = info["hub"]
        _stop(process)
        keys = _register(state_dir, hub, [f"bench-{i:03d}" for i in range(CLIENTS)] + ["solo"])
        process, info, _ = _serve(state_dir, address)
        try:
            idle_rss = _rss_kb(process.pid)
            one = _one_client(hub, info["root_ca"], "solo", keys.pop("solo"))
            many, per_device_kb, server_load = _many_clients(hub, info["root_ca"], keys, process.pid)
            light, _, light_load = _many_clients(hub, info["root_ca"], keys, process.pid, raw=True, messages=400)
        finally:
            _stop(process)
        results["throughput_100_clients"] = bench.figure(
            many, "msg/s", baseline=one, baseline_name="one sync SDK client, same emulator",
            goal=">= 5x one client", server_cpu_cores=round(server_load, 2),
            clients=CLIENTS, worker_processes=WORKERS, cpus=os.cpu_count(),
            method="asyncio SDK clients in worker processes, each sending sequentially; server in its own process")
        results["throughput_100_light_clients"] = bench.figure(
            light, "msg/s", baseline=one, baseline_name="one sync SDK client, same emulator",
            server_cpu_cores=round(light_load, 2), clients=CLIENTS, worker_processes=WORKERS,
            method="MQTT clients built on the emulator's codec, 20 QoS 1 messages in flight each: the server's "
                   "capacity when clients cost little")
        results["memory_per_device"] = bench.figure(
            per_device_kb, "KiB RSS per connected device", baseline=float(idle_rss),
            baseline_name="idle emulator RSS (KiB)", higher_is_better=False)
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        _worker(sys.argv[2:])
    elif sys.argv[1:2] == ["--raw-worker"]:
        _raw_worker()
    else:
        json.dump(run(), sys.stdout, indent=2)
        print()

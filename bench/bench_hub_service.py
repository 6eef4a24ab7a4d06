"""Hub service API benchmarks, against the hub emulator and its service side on loopback.

- twin_reads: GET /twins/{id} per second over one kept-alive HTTPS connection (SAS check, SQLite read, JSON),
  against the same connection's round trips on a route that does no work (GET /roost/faults): the ratio is
  the share of a request's cost that is plumbing rather than twin work.
- registry_sdk: twin reads per second through Microsoft's IoTHubRegistryManager (msrest), against the raw
  requests above: what the unmodified SDK adds.
- telemetry_tail: messages per second read through GET /roost/telemetry pages of 1000, against reading the
  same store directly (HubState.telemetry).
- blob_upload: MB/s of one 32 MB Put Blob to the local blob endpoint, against writing the same bytes to a file
  on the same disk.
- long_poll_wakeup: milliseconds from a device's PUBACK to the long-polling reader's answer, median, against a
  plain round trip on the same connection.
- stop_with_idle_clients: milliseconds for ServiceApi.stop() while 8 kept-alive clients sit idle, median of 5,
  against stopping one nobody is connected to (a graceful TLS close would wait 30 s per idle client on
  Python 3.12+).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

from bench import figure

ROUNDS = 400


def _address() -> str:
    return f"127.{150 + os.getpid() % 50}.{os.getpid() // 50 % 250 + 1}.9"


def _rate(count: int, call) -> float:
    started = time.perf_counter()
    for _ in range(count):
        call()
    return count / (time.perf_counter() - started)


def run() -> dict:
    import requests

    from emulator.hub.sas import make_sas
    from emulator.hub.server import EmulatorConfig, EmulatorThread
    from emulator.hub.service_api import ServiceApi, ServiceOptions

    with tempfile.TemporaryDirectory() as tmp:
        emu = EmulatorThread(EmulatorConfig(state_dir=Path(tmp) / "state", address=_address(),
                                            dps_https_port=0)).start()
        service = ServiceApi(emu.emulator, ServiceOptions(port=0, device_port=None))
        emu.call(service.start())
        try:
            hub = emu.emulator.hub
            hub.state.create_device("dev1")
            url = service.url()
            ca = str(emu.emulator.pki.root().cert_path)
            host = service.connection_string().split(";")[0].removeprefix("HostName=")
            token = make_sas(host, service.policies["iothubowner"].primary_key, int(time.time()) + 3600,
                             "iothubowner")
            session = requests.Session()
            session.headers["Authorization"] = token
            session.verify = ca
            session.trust_env = False   # REQUESTS_CA_BUNDLE in the environment would override verify

            def twin() -> None:
                session.get(f"{url}/twins/dev1", params={"api-version": "2021-04-12"}).raise_for_status()

            def nothing() -> None:
                session.get(f"{url}/roost/faults").raise_for_status()

            twin(), nothing()   # connection and TLS handshake outside the timing
            twin_rate = _rate(ROUNDS, twin)
            plain_rate = _rate(ROUNDS, nothing)
            results = {"twin_reads": figure(twin_rate, "requests/s", baseline=plain_rate,
                                            baseline_name="no-op route on the same connection", goal=">= 0.5")}

            os.environ["REQUESTS_CA_BUNDLE"] = ca
            from azure.iot.hub import IoTHubRegistryManager

            registry = IoTHubRegistryManager.from_connection_string(service.connection_string())
            registry.get_twin("dev1")
            sdk_rate = _rate(ROUNDS // 4, lambda: registry.get_twin("dev1"))
            results["registry_sdk"] = figure(sdk_rate, "twin reads/s", baseline=twin_rate,
                                             baseline_name="raw requests, kept-alive connection")

            for i in range(20_000):
                hub.state.add_telemetry("dev1", f'{{"n": {i}}}'.encode(), {"k": "v"}, {})

            def tail_api() -> int:
                since, total = 0, 0
                while True:
                    page = session.get(f"{url}/roost/telemetry", params={"since": since, "limit": 1000}).json()
                    if not page["messages"]:
                        return total
                    total += len(page["messages"])
                    since = page["next"]

            def tail_direct() -> int:
                since, total = 0, 0
                while batch := hub.state.telemetry(since, 1000):
                    total += len(batch)
                    since = batch[-1].seq
                return total

            started = time.perf_counter()
            count = tail_api()
            api_rate = count / (time.perf_counter() - started)
            started = time.perf_counter()
            count = tail_direct()
            direct_rate = count / (time.perf_counter() - started)
            results["telemetry_tail"] = figure(api_rate, "messages/s", baseline=direct_rate,
                                               baseline_name="HubState.telemetry in process")

            results["blob_upload"] = _blob_upload(service, session, tmp)
            results["long_poll_wakeup"] = _long_poll(emu, session, url, plain_rate)
            results["stop_with_idle_clients"] = _stop_cost(emu, session)
        finally:
            emu.call(service.stop())
            emu.stop()
    return results


def _blob_upload(service, session, tmp: str) -> dict:
    from emulator.hub.service_files import CONTAINER

    data = os.urandom(32 * 1024 * 1024)
    store = service.blobs
    name = "dev1/bench.bin"
    sas = store.sas_token(CONTAINER, name, time.time() + 600)
    url = f"https://{service.files.blob_host}/{CONTAINER}/{name}{sas}"
    started = time.perf_counter()
    session.put(url, data=data, headers={"x-ms-blob-type": "BlockBlob"}).raise_for_status()
    upload_s = time.perf_counter() - started
    target = Path(tmp) / "plain.bin"
    started = time.perf_counter()
    with open(target, "wb") as out:
        out.write(data)
        out.flush()
    write_s = time.perf_counter() - started
    mb = len(data) / 1e6
    return figure(mb / upload_s, "MB/s", baseline=mb / write_s, baseline_name="write to a local file")


def _long_poll(emu, session, url: str, plain_rate: float) -> dict:
    """A reader long-polls; a message is stored and announced on the emulator loop, as the hub does on PUBACK."""
    hub = emu.emulator.hub
    poller_session = _clone(session)
    poller_session.get(f"{url}/roost/faults").raise_for_status()   # handshake outside the timing
    samples = []
    for _ in range(20):
        since = hub.state.last_telemetry_seq()
        answered: list[float] = []

        def poll(since: int = since, answered: list[float] = answered) -> None:
            poller_session.get(f"{url}/roost/telemetry", params={"since": since, "wait": 10}).raise_for_status()
            answered.append(time.perf_counter())

        poller = threading.Thread(target=poll)
        poller.start()
        while not emu.run(lambda: bool(hub._listeners)):       # the long poll is waiting
            time.sleep(0.001)

        def arrive() -> float:
            stamp = time.perf_counter()
            record = hub.state.add_telemetry("dev1", b"wake", {}, {})
            for listener in list(hub._listeners):
                listener(record)
            return stamp

        stored = emu.run(arrive)
        poller.join(15)
        samples.append(answered[0] - stored)
    return figure(statistics.median(samples) * 1000, "ms", baseline=1000 / plain_rate,
                  baseline_name="one no-op round trip", higher_is_better=False)


def _stop_cost(emu, session, clients: int = 8, rounds: int = 5) -> dict:
    from emulator.hub.sas import make_sas
    from emulator.hub.service_api import ServiceApi, ServiceOptions

    def stop_ms(idle: int) -> float:
        extra = ServiceApi(emu.emulator, ServiceOptions(port=0, device_port=None, blob_port=None,
                                                        write_discovery_file=False))
        emu.call(extra.start())
        sessions = []
        try:
            host = extra.connection_string().split(";")[0].removeprefix("HostName=")   # the token names the port
            token = make_sas(host, extra.policies["iothubowner"].primary_key, int(time.time()) + 3600, "iothubowner")
            sessions += [_clone(session) for _ in range(idle)]
            for idle_session in sessions:
                idle_session.headers["Authorization"] = token
                idle_session.get(f"{extra.url()}/roost/faults").raise_for_status()   # then idle, kept alive
            started = time.perf_counter()
            emu.call(extra.stop())
            elapsed = (time.perf_counter() - started) * 1000
        finally:
            emu.call(extra.stop())   # again after a failure; a no-op after the timed stop
        for idle_session in sessions:
            idle_session.close()
        return elapsed

    busy = statistics.median(stop_ms(clients) for _ in range(rounds))
    empty = statistics.median(stop_ms(0) for _ in range(rounds))
    return figure(busy, "ms", baseline=empty, baseline_name="stop with no client connected",
                  higher_is_better=False, goal="<= 20 x baseline")


def _clone(session):
    import requests

    clone = requests.Session()
    clone.headers.update(session.headers)
    clone.verify = session.verify
    clone.trust_env = False
    return clone

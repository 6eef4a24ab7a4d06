"""Test rig for the service API: an emulator with its service side per test, and a signed HTTP client."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import roost_test_support

from emulator.hub.sas import make_sas
from emulator.hub.server import EmulatorConfig, EmulatorThread
from emulator.hub.service_api import ServiceApi, ServiceOptions


class Rig:
    """A running emulator (hub + DPS) and its service API on free ports of one loopback address."""

    def __init__(self, tmp_path: Path, address: str, clock: Callable[[], float] = time.time,
                 **options: Any) -> None:
        options.setdefault("port", 0)
        options.setdefault("device_port", None)
        for attempt in range(5):
            # A probed address can be taken by another test process before we bind it: move to a fresh one.
            self.emu = EmulatorThread(EmulatorConfig(state_dir=tmp_path / "state", address=address,
                                                     dps_https_port=0, clock=clock))
            try:
                self.emu.start()
                self.service = ServiceApi(self.emu.emulator, ServiceOptions(**options))
                self.emu.call(self.service.start())
                break
            except OSError as exc:
                self.emu.stop()
                if exc.errno != errno.EADDRINUSE or attempt == 4:
                    raise
                address = unique_loopback(address)
            except BaseException:
                self.emu.stop()
                raise
        self.hub = self.emu.emulator.hub
        self.address = address
        self.url = self.service.url()
        self.root_ca = str(self.emu.emulator.pki.root().cert_path)
        self.ca_pem = Path(self.root_ca).read_text()
        self.state_dir = tmp_path / "state"

    @property
    def connection_string(self) -> str:
        return self.service.connection_string()

    def token(self, policy: str = "iothubowner", expiry: int | None = None, key: str | None = None,
              resource: str | None = None) -> str:
        chosen = self.service.policies[policy]
        return make_sas(resource or self.service._served[self.hub.hostname].host, key or chosen.primary_key,
                        expiry or int(time.time()) + 600, policy)

    def request(self, method: str, path: str, *, body: Any = None, raw: bytes | None = None,
                token: str | None = None, headers: dict[str, str] | None = None,
                api_version: str | None = "2021-04-12", params: dict | None = None,
                timeout: float = 30) -> requests.Response:
        query = dict(params or {})
        if api_version and not path.startswith("/roost"):
            query["api-version"] = api_version
        all_headers = {"Authorization": token if token is not None else self.token()}
        all_headers.update(headers or {})
        if body is not None:
            return requests.request(method, self.url + path, json=body, headers=all_headers, params=query,
                                    verify=self.root_ca, timeout=timeout)
        return requests.request(method, self.url + path, data=raw, headers=all_headers, params=query,
                                verify=self.root_ca, timeout=timeout)

    def device_connection_string(self, device_id: str) -> str:
        device = self.hub.state.find_device(device_id) or self.hub.state.create_device(device_id)
        return f"HostName={self.hub.hostname};DeviceId={device_id};SharedAccessKey={device.primary_key}"

    def stop(self) -> None:
        try:
            self.emu.call(self.service.stop())
        finally:
            self.emu.stop()


def unique_loopback(taken: str) -> str:
    """Another free loopback address than ``taken``, from the `loopback_address` fixture's allocator."""
    while (address := roost_test_support.unique_loopback()) == taken:
        pass
    return address


wait_for = roost_test_support.wait_for   # poll with a deadline against hangs (not a timing assertion)

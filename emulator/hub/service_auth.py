"""Shared access policies of the service API and the check of their SharedAccessSignature tokens.

IoT Hub's built-in policies are recreated with their rights: ``iothubowner`` (everything), ``service``
(ServiceConnect), ``registryRead`` and ``registryReadWrite``. Their keys are generated once and kept in
``service-policies.json`` (0600) in the state directory, so connection strings survive restarts.

A service token is ``SharedAccessSignature sr={host}&sig=...&se=...&skn={policy}``; ``sr`` names the hub
(optionally with the port the client connected to, which is what the SDK signs when the host name carries
one), or a path below it that the request lies under.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from emulator.hub.sas import SasError, parse_sas, sign
from emulator.hub.service_errors import ServiceError
from emulator.hub.state import new_key
from emulator.pki import write_secret

REGISTRY_READ = "RegistryRead"
REGISTRY_WRITE = "RegistryWrite"
SERVICE_CONNECT = "ServiceConnect"
DEVICE_CONNECT = "DeviceConnect"

# IoT Hub's default policies. RegistryWrite implies RegistryRead, as in the service.
DEFAULT_POLICIES = {
    "iothubowner": (REGISTRY_WRITE, SERVICE_CONNECT, DEVICE_CONNECT),
    "service": (SERVICE_CONNECT,),
    "registryRead": (REGISTRY_READ,),
    "registryReadWrite": (REGISTRY_WRITE,),
}
OWNER = "iothubowner"


@dataclass
class Policy:
    name: str
    rights: tuple[str, ...]
    primary_key: str = field(repr=False)
    secondary_key: str = field(repr=False)

    def grants(self, right: str) -> bool:
        return right in self.rights or (right == REGISTRY_READ and REGISTRY_WRITE in self.rights)


def load_policies(path: Path) -> dict[str, Policy]:
    """The policies kept in ``path``, created with fresh keys (and written 0600) when absent or incomplete."""
    stored: dict = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc}); delete it to generate new service keys") from None
    policies = {}
    changed = False
    for name, rights in DEFAULT_POLICIES.items():
        entry = stored.get(name)
        if not isinstance(entry, dict) or not entry.get("primaryKey") or not entry.get("secondaryKey"):
            entry = {"primaryKey": new_key(), "secondaryKey": new_key()}
            changed = True
        policies[name] = Policy(name, rights, entry["primaryKey"], entry["secondaryKey"])
    if changed or not path.exists():
        document = {p.name: {"primaryKey": p.primary_key, "secondaryKey": p.secondary_key, "rights": list(p.rights)}
                    for p in policies.values()}
        path.parent.mkdir(parents=True, exist_ok=True)
        write_secret(path, json.dumps(document, indent=2).encode())
    return policies


def connection_string(host: str, policy: Policy) -> str:
    return f"HostName={host};SharedAccessKeyName={policy.name};SharedAccessKey={policy.primary_key}"


class ServiceAuth:
    """Checks ``Authorization`` headers of service requests against the policies."""

    def __init__(self, policies: dict[str, Policy], clock: Callable[[], float]) -> None:
        self.policies = policies
        self.clock = clock

    def check(self, header: str | None, hosts: Iterable[str], path: str, right: str) -> Policy:
        """The policy that signed ``header`` if it is valid for one of ``hosts`` and grants ``right``.

        Raises ServiceError 401 saying what is wrong; the token itself never appears in the message.
        """
        if not header:
            raise ServiceError(401, "the request has no Authorization header; sign a SharedAccessSignature with "
                                    "a shared access policy key (e.g. iothubowner)", "IotHubUnauthorizedAccess")
        try:
            token = parse_sas(header)
        except SasError as exc:
            raise ServiceError(401, f"the Authorization header is not a valid SharedAccessSignature: {exc}",
                               "IotHubUnauthorizedAccess") from None
        if not token.key_name:
            raise ServiceError(401, "the token names no shared access policy (skn=); service requests must be "
                                    "signed with a policy key such as iothubowner", "IotHubUnauthorizedAccess")
        policy = self.policies.get(token.key_name)
        if policy is None:
            raise ServiceError(401, f"shared access policy {token.key_name!r} does not exist; policies: "
                                    f"{', '.join(sorted(self.policies))}", "IotHubUnauthorizedAccess")
        if not _resource_covers(token.resource, hosts, path):
            raise ServiceError(401, f"the token is for {token.resource!r}, not this hub "
                                    f"({' or '.join(sorted(set(hosts)))})", "IotHubUnauthorizedAccess")
        if token.expiry <= self.clock():
            raise ServiceError(401, f"the token expired {int(self.clock() - token.expiry)} s ago; sign a new one",
                               "IotHubUnauthorizedAccess")
        expected = [sign(key, token.signed_text) for key in (policy.primary_key, policy.secondary_key)]
        if not any(hmac.compare_digest(e, token.signature) for e in expected):
            raise ServiceError(401, f"the token's signature does not match policy {policy.name!r}'s keys",
                               "IotHubUnauthorizedAccess")
        if not policy.grants(right):
            raise ServiceError(401, f"policy {policy.name!r} lacks the {right} permission this operation needs; "
                                    "use iothubowner or a policy with that right", "IotHubUnauthorizedAccess")
        return policy


def _resource_covers(resource: str, hosts: Iterable[str], path: str) -> bool:
    resource = resource.lower().removeprefix("https://").rstrip("/")
    host, _, sub = resource.partition("/")
    if host not in {h.lower() for h in hosts}:
        return False
    return not sub or path.lower().strip("/").startswith(sub)

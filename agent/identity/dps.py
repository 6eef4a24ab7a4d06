"""Registration with the Device Provisioning Service through azure-iot-device's ProvisioningDeviceClient.

The SDK's ``register()`` blocks without a deadline of its own, so it runs in a worker thread that the caller
stops waiting for after ``timeout_s``. Failures are turned into ProvisioningError with the likely fix; a
failed TLS handshake is probed again with the standard library to say whether the CA or the name is wrong.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from agent.config import MQTT_PORT, WEBSOCKET_PORT
from agent.identity.errors import ProvisioningError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registration:
    hostname: str
    device_id: str
    substatus: str


def split_host(host: str, default_port: int = MQTT_PORT) -> tuple[str, int]:
    """(name, port) of ``host`` or ``host:port`` (an IPv6 literal in brackets keeps its colons)."""
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit() and name and not name.endswith("]"):
        return name, int(port)
    return host, default_port


def register(*, provisioning_host: str, id_scope: str, registration_id: str, symmetric_key: str | None = None,
             x509: tuple[str, str, str | None] | None = None, ca_pem: str | None = None,
             timeout_s: float = 60.0, websockets: bool = False) -> Registration:
    """Register with DPS using a base64 symmetric key or X.509 files (cert, key, pass phrase); ``websockets``:
    MQTT over WebSockets on port 443 rather than MQTT on 8883."""
    from azure.iot.device import X509, ProvisioningDeviceClient
    from azure.iot.device import exceptions as sdk_errors

    port = WEBSOCKET_PORT if websockets else MQTT_PORT
    kwargs: dict = {"websockets": websockets}
    if ca_pem:
        kwargs["server_verification_cert"] = ca_pem
    if symmetric_key is not None:
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host=provisioning_host, registration_id=registration_id, id_scope=id_scope,
            symmetric_key=symmetric_key, **kwargs)
    elif x509 is not None:
        cert_file, key_file, pass_phrase = x509
        client = ProvisioningDeviceClient.create_from_x509_certificate(
            provisioning_host=provisioning_host, registration_id=registration_id, id_scope=id_scope,
            x509=X509(cert_file, key_file, pass_phrase), **kwargs)
    else:
        raise ValueError("register() needs symmetric_key or x509")

    outcome: dict = {}

    def work() -> None:
        try:
            outcome["result"] = client.register()
        except BaseException as exc:   # handed to the waiting thread, never lost
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="dps-register", daemon=True)
    worker.start()
    worker.join(timeout_s)
    where = f"DPS {provisioning_host} (scope {id_scope}, registration {registration_id!r})"
    if worker.is_alive():
        try:
            client.shutdown()
        except Exception:
            pass
        raise ProvisioningError(f"{where} did not answer within {timeout_s:.0f} s",
                                f"check network access to the provisioning host on port {port} (roost doctor)",
                                kind="timeout")
    error = outcome.get("error")
    if isinstance(error, sdk_errors.CredentialError):
        what = "certificate" if x509 else "key"
        raise ProvisioningError(f"{where} rejected the device {what}",
                                "check that an enrollment exists for this registration id (or its group) and "
                                f"that the {what} matches it", kind="auth") from None
    if isinstance(error, sdk_errors.ClientError) and isinstance(error.__cause__, Exception) and \
            "ServiceError" in type(error.__cause__).__name__:
        raise ProvisioningError(f"{where} refused the registration ({error.__cause__})",
                                "check the enrollment: it may be disabled, or the ID scope may be wrong",
                                kind="refused") from None
    if error is not None:
        # The SDK wraps TLS failures in generic connection errors: ask the TLS layer what it was.
        raise _explain_connection_failure(provisioning_host, ca_pem, where, error, port) from None
    result = outcome["result"]
    state = result.registration_state
    if result.status != "assigned" or state is None or not state.assigned_hub:
        status = result.status or "unknown"
        detail = f"; {state.response_payload}" if state is not None and state.response_payload else ""
        raise ProvisioningError(f"{where} answered '{status}' instead of an assignment{detail}",
                                "check the enrollment in DPS: 'disabled' means it was turned off, 'failed' that no "
                                "linked hub accepted the device", kind="refused")
    log.info("DPS assigned %s as %s (%s)", state.assigned_hub, state.device_id, state.sub_status)
    return Registration(state.assigned_hub, state.device_id or registration_id, state.sub_status or "")


def _explain_connection_failure(host: str, ca_pem: str | None, where: str, error: Exception,
                                port: int) -> ProvisioningError:
    from agent.identity.tls_check import probe_tls

    name, port = split_host(host, port)
    probe = probe_tls(name, port, ca_pem, timeout=5.0)
    if probe.ok:
        return ProvisioningError(f"{where} failed: {error} ({type(error).__name__})",
                                 "run roost doctor for the network and TLS checks", kind="failed")
    return ProvisioningError(f"{where}: {probe.detail}",
                             probe.fix.replace("hub.ca_file", "identity.provisioning_ca_file"), kind=probe.kind)

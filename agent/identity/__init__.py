"""Device identity: how the agent proves who it is to DPS and IoT Hub (symmetric key, X.509, TPM, connection string).

    creds = agent.identity.resolve(config, state_dir)            # cached DPS assignment reused
    creds = agent.identity.resolve(config, state_dir, force=True) # DPS asked again (after the hub said 401)

Every method ends in a HubCredentials carrying the hub (or gateway) to connect to and the trust anchors
(``hub.ca_file`` plus the anchors managed from the cloud, see agent.identity.trust).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from agent.config import MQTT_PORT
from agent.identity import assignment as cache
from agent.identity.credentials import HubCredentials, X509Files, key_signer
from agent.identity.errors import ConfigurationError, IdentityError, ProvisioningError, TrustError
from agent.identity.keys import device_key, registration_id
from agent.identity.secure_files import read_text
from agent.identity.trust import TrustStore

__all__ = ["ConfigurationError", "HubCredentials", "IdentityError", "ProvisioningError", "TrustError",
           "describe_connect_failure", "is_auth_failure", "resolve", "rotate_symmetric_key", "trust_store"]


def trust_store(config: Any, state_dir: Path) -> TrustStore:
    return TrustStore(Path(state_dir), config.hub.ca_file or None)


def resolve(config: Any, state_dir: str | Path, force: bool = False, *, check_gateway: bool = True) -> HubCredentials:
    """Credentials for the hub this device belongs to; ``force`` drops the cached DPS assignment first.

    With a gateway configured, its TLS certificate is checked here against the trust anchors (``check_gateway``):
    a wrong CA or a gateway name missing from the certificate raises TrustError saying which, instead of the
    SDK's opaque connection failure later. An unreachable gateway is not an error here (the uplink retries).
    """
    state_dir = Path(state_dir)
    method = config.identity.method
    if method == "tpm":
        creds = _resolve_tpm(config, state_dir, force)
    elif method == "connection-string":
        creds = _resolve_connection_string(config)
    elif method in ("symmetric", "x509"):
        creds = _resolve_dps(config, state_dir, force)
    else:
        raise ConfigurationError(f"identity.method {method!r} is not supported",
                                 "use symmetric, x509, tpm or connection-string")
    creds = _with_route_and_trust(creds, config, state_dir)
    if check_gateway and creds.gateway_hostname:
        _check_gateway(creds, config.hub.port, timeout=min(5.0, float(config.hub.connect_timeout_s)))
    return creds


def _check_gateway(creds: HubCredentials, port: int, timeout: float) -> None:
    import threading

    from agent.identity.tls_check import probe_tls

    outcome: list = []
    # A worker thread bounds the name lookup too, which socket timeouts do not cover.
    worker = threading.Thread(target=lambda: outcome.append(probe_tls(creds.gateway_hostname, port, creds.ca_pem,
                                                                      timeout=timeout)),
                              name="gateway-tls-check", daemon=True)
    worker.start()
    worker.join(timeout * 2)
    if outcome and outcome[0].kind in ("wrong-ca", "hostname-mismatch", "expired"):
        raise TrustError(outcome[0].detail, outcome[0].fix, kind=outcome[0].kind)


def _resolve_tpm(config: Any, state_dir: Path, force: bool) -> HubCredentials:
    from agent import tpm  # the TPM stack (tpm2-pytss) is loaded only by devices that use it

    return tpm.provision(config, state_dir, force=force)


def _resolve_connection_string(config: Any) -> HubCredentials:
    from agent.identity.connection_string import credentials_from_connection_string

    ident = config.identity
    text = read_text(ident.connection_string_file, "identity.connection_string_file",
                     "write the device connection string from the IoT Hub portal into it (mode 0600)")
    x509 = X509Files(ident.cert_file, ident.key_file) if ident.cert_file and ident.key_file else None
    return credentials_from_connection_string(text, x509)


def _x509_files(config: Any) -> X509Files:
    ident = config.identity
    for key in ("cert_file", "key_file"):
        path = getattr(ident, key)
        if not path or not Path(path).is_file():
            raise ConfigurationError(f"identity.{key} {path!r} is not a file",
                                     "point it at the device's PEM certificate and private key")
    return X509Files(ident.cert_file, ident.key_file)


def _x509_registration_id(config: Any, files: X509Files) -> str:
    # DPS takes the registration id of an X.509 device from its certificate's common name.
    if config.identity.registration_id:
        return config.identity.registration_id
    from cryptography import x509

    certs = x509.load_pem_x509_certificates(Path(files.cert_file).read_bytes())
    names = certs[0].subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
    if not names:
        raise ConfigurationError(f"certificate {files.cert_file} has no common name",
                                 "set identity.registration_id to the name the enrollment expects")
    return str(names[0].value)


def _provisioning_ca_pem(config: Any) -> str | None:
    """The PEM root CA the provisioning service is checked against (None: the system store)."""
    path = config.identity.provisioning_ca_file
    if not path:
        return None
    return read_text(path, "identity.provisioning_ca_file",
                     "point it at the PEM root CA of the provisioning service, or leave it empty")


def _dps_timeout(config: Any) -> float:
    # A registration is several round trips (register, then polls while DPS assigns), so a connect timeout is
    # not enough; a minute at least.
    return max(60.0, 2 * float(config.hub.connect_timeout_s))


def _resolve_dps(config: Any, state_dir: Path, force: bool) -> HubCredentials:
    from agent.identity import dps

    ident = config.identity
    ca_pem = _provisioning_ca_pem(config)
    if ident.method == "symmetric":
        reg_id = registration_id(config)
        key_b64, key_source = device_key(config, state_dir)
        method = "dps-group" if key_source == "group" else "dps-symmetric"
        inputs = cache.fingerprint(method, ident.provisioning_host, ident.id_scope, reg_id, key_b64)
    else:
        files = _x509_files(config)
        reg_id = _x509_registration_id(config, files)
        method = "dps-x509"
        inputs = cache.fingerprint(method, ident.provisioning_host, ident.id_scope, reg_id,
                                   Path(files.cert_file).read_bytes())

    cached = None if force else cache.load(state_dir)
    if cached is None or cached.fingerprint != inputs:
        timeout = _dps_timeout(config)
        if ident.method == "symmetric":
            reg = dps.register(provisioning_host=ident.provisioning_host, id_scope=ident.id_scope,
                               registration_id=reg_id, symmetric_key=key_b64, ca_pem=ca_pem, timeout_s=timeout,
                               websockets=config.hub.websockets)
        else:
            reg = dps.register(provisioning_host=ident.provisioning_host, id_scope=ident.id_scope,
                               registration_id=reg_id, x509=(files.cert_file, files.key_file, None),
                               ca_pem=ca_pem, timeout_s=timeout, websockets=config.hub.websockets)
        cached = cache.Assignment(reg.hostname, reg.device_id, reg_id, method, inputs, time.time(), reg.substatus)
        cache.save(state_dir, cached)

    if ident.method == "symmetric":
        import base64

        return HubCredentials(cached.hostname, cached.device_id, sign=key_signer(base64.b64decode(key_b64)),
                              source=method)
    return HubCredentials(cached.hostname, cached.device_id, x509=files, source=method)


def rotate_symmetric_key(config: Any, state_dir: str | Path, new_key_b64: str,
                         timeout_s: float | None = None) -> None:
    """Switch a symmetric identity to ``new_key_b64`` once DPS has accepted it; the old key is kept aside.

    DPS answers only if the enrollment already carries the new key, so a wrong or premature key is refused
    here (ProvisioningError) and the current key stays in use.
    """
    from agent.identity import dps
    from agent.identity.keys import check_key_b64, install_rotated_key

    state_dir = Path(state_dir)
    ident = config.identity
    if ident.method != "symmetric":
        raise ConfigurationError(f"key rotation with a new key needs a symmetric identity, not {ident.method!r}")
    if not isinstance(new_key_b64, str):
        raise ConfigurationError("the new device key must be a base64 string")
    check_key_b64(new_key_b64, "the new device key")
    current, _ = device_key(config, state_dir)
    if new_key_b64.strip() == current:
        raise ConfigurationError("the new device key is the key already in use", "send the enrollment's new key")
    dps.register(provisioning_host=ident.provisioning_host, id_scope=ident.id_scope,
                 registration_id=registration_id(config), symmetric_key=new_key_b64.strip(),
                 ca_pem=_provisioning_ca_pem(config), timeout_s=timeout_s or _dps_timeout(config),
                 websockets=config.hub.websockets)
    install_rotated_key(state_dir, new_key_b64, current)
    cache.forget(state_dir)


def _with_route_and_trust(creds: HubCredentials, config: Any, state_dir: Path) -> HubCredentials:
    gateway = config.hub.gateway_hostname or creds.gateway_hostname
    ca_pem = trust_store(config, state_dir).bundle()
    return dataclasses.replace(creds, gateway_hostname=gateway or None, ca_pem=ca_pem or creds.ca_pem)


def is_auth_failure(error: BaseException) -> bool:
    """True when the hub refused the identity itself (then DPS should be asked again: ``resolve(force=True)``)."""
    from azure.iot.device import exceptions as sdk_errors

    return isinstance(error, sdk_errors.CredentialError)


def describe_connect_failure(creds: HubCredentials, error: BaseException, *, address: str | None = None,
                             port: int = MQTT_PORT, timeout: float = 5.0) -> IdentityError:
    """Turn the SDK's opaque connection error into one that says what is wrong (CA, hostname, network, key)."""
    from agent.identity.tls_check import probe_tls

    target = creds.gateway_hostname or creds.hostname
    if is_auth_failure(error):
        return IdentityError(f"{target} refused the credentials of device {creds.device_id!r}",
                             "the device may have been deleted, disabled or moved; the agent asks DPS again "
                             "(roost provision --force)", kind="auth")
    probe = probe_tls(target, port, creds.ca_pem, address=address, timeout=timeout)
    if probe.ok:
        return IdentityError(f"connection to {target} failed ({type(error).__name__}: {error})",
                             "run roost doctor for the full list of checks", kind="connection")
    return TrustError(probe.detail, probe.fix, kind=probe.kind)

"""TPM identity end to end: DPS TPM attestation, the hub key imported into the TPM, the cached assignment.

The assignment is cached like every other identity method's (agent.identity.assignment, 0600). It is reused
while the hub key it belongs to is still in the TPM: the cache fingerprint covers the provisioning inputs and
that key's public area, so a cleared TPM or a key replaced by someone else sends the device back to DPS.
The new hub key replaces the old one only after DPS assigned: a failed re-provisioning leaves the device with
the identity it had.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.identity import assignment as cache
from agent.identity.credentials import HubCredentials, sas_token
from agent.identity.errors import ConfigurationError, ProvisioningError
from agent.identity.secure_files import read_text
from agent.tpm.activation import import_persistent, loaded_key
from agent.tpm.device import HUB_KEY_HANDLE, Tpm, registration_id
from agent.tpm.dps import DpsHttpClient, wait_for_assignment
from agent.tpm.signer import TpmSigner, hmac

log = logging.getLogger(__name__)

METHOD = "tpm"
REGISTRATION_SAS_TTL_S = 3600


def _fingerprint(config: Any, reg_id: str, ek_public: bytes, hub_key_public: bytes) -> str:
    ident = config.identity
    return cache.fingerprint(METHOD, ident.provisioning_host, ident.id_scope, reg_id, ek_public, hub_key_public)


def _hub_key_public(tpm: Tpm) -> bytes | None:
    if not tpm.has(HUB_KEY_HANDLE):
        return None
    return bytes(tpm.public(HUB_KEY_HANDLE, "IoT Hub identity key").marshal())


def _credentials(config: Any, assignment: cache.Assignment) -> HubCredentials:
    return HubCredentials(assignment.hostname, assignment.device_id, sign=TpmSigner(config.identity.tpm_tcti),
                          source=METHOD)


def provision(config: Any, state_dir: str | Path, *, force: bool = False, timeout_s: float = 60.0,
              clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep) -> HubCredentials:
    """HubCredentials for this device's TPM identity; DPS is asked when nothing valid is cached or ``force``."""
    state_dir = Path(state_dir)
    ident = config.identity
    if not ident.id_scope:
        raise ConfigurationError("identity.id_scope is empty", "set it to the ID scope of your DPS (0ne...)")
    with Tpm(ident.tpm_tcti) as tpm:
        ek_public = tpm.ek_public()
        reg_id = ident.registration_id or registration_id(ek_public)
        cached = None if force else cache.load(state_dir)
        hub_key = _hub_key_public(tpm)
        if (cached is not None and cached.method == METHOD and hub_key is not None
                and cached.fingerprint == _fingerprint(config, reg_id, ek_public, hub_key)):
            log.info("TPM identity: cached assignment %s on %s", cached.device_id, cached.hostname)
            return _credentials(config, cached)
        state = _register(tpm, config, reg_id, ek_public, timeout_s=timeout_s, clock=clock, sleep=sleep)
        blob_b64 = (state.get("tpm") or {}).get("authenticationKey")
        where = f"DPS {ident.provisioning_host} (registration {reg_id!r})"
        if not blob_b64:
            raise ProvisioningError(f"{where} assigned {state.get('assignedHub')} without a TPM-wrapped hub key",
                                    "the enrollment must use TPM attestation", kind="refused")
        hub_key = import_persistent(tpm, _b64(blob_b64, where), HUB_KEY_HANDLE)
    assignment = cache.Assignment(
        hostname=str(state["assignedHub"]), device_id=str(state.get("deviceId") or reg_id), registration_id=reg_id,
        method=METHOD, fingerprint=_fingerprint(config, reg_id, ek_public, hub_key), assigned_at=clock(),
        substatus=str(state.get("substatus") or ""))
    cache.save(state_dir, assignment)
    log.info("TPM identity: DPS assigned %s on %s", assignment.device_id, assignment.hostname)
    return _credentials(config, assignment)


def reprovision(config: Any, state_dir: str | Path, reason: str = "") -> HubCredentials:
    """Ask DPS again (the `reprovision` direct method, or after the hub rejected the identity)."""
    log.info("TPM identity: re-provisioning%s", f" ({reason})" if reason else "")
    return provision(config, state_dir, force=True)


def _b64(text: Any, where: str) -> bytes:
    try:
        return base64.b64decode(str(text), validate=True)
    except ValueError:
        raise ProvisioningError(f"{where} sent an authenticationKey that is not base64",
                                "nothing was stored; is identity.provisioning_host really DPS?",
                                kind="refused") from None


def _register(tpm: Tpm, config: Any, reg_id: str, ek_public: bytes, *, timeout_s: float,
              clock: Callable[[], float], sleep: Callable[[float], None]) -> dict:
    """The DPS exchange; the registration key lives in the TPM only while this runs (then it is flushed)."""
    ident = config.identity
    ca_pem = None
    if ident.provisioning_ca_file:
        ca_pem = read_text(ident.provisioning_ca_file, "identity.provisioning_ca_file",
                           "point it at the PEM root CA of the provisioning service, or leave it empty")
    client = DpsHttpClient(ident.provisioning_host, ident.id_scope, reg_id, ca_pem=ca_pem,
                           timeout_s=min(timeout_s, 30.0))
    body = {"registrationId": reg_id,
            "tpm": {"endorsementKey": base64.b64encode(ek_public).decode(),
                    "storageRootKey": base64.b64encode(tpm.srk_public()).decode()}}
    first = client.register(body)
    challenge = first.body.get("authenticationKey") if first.status == 401 else None
    if not challenge:
        raise client.refused(first, "challenge")
    with loaded_key(tpm, _b64(challenge, client.where)) as registration_key:
        def authorization() -> str:
            expiry = int(clock()) + REGISTRATION_SAS_TTL_S
            return sas_token(client.resource, lambda m: hmac(tpm, registration_key, m), expiry, "registration")

        second = client.register(body, authorization())
        return wait_for_assignment(client, second, authorization, timeout_s=timeout_s, sleep=sleep)

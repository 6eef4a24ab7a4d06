"""TPM 2.0 identity: DPS endorsement-key attestation, TPM-signed SAS tokens, health attestation quotes.

    creds = agent.tpm.provision(config, state_dir)        # cached assignment, or DPS TPM attestation
    creds = agent.tpm.reprovision(config, state_dir)      # ask DPS again (direct method, hub said 401)
    creds.sas_token(3600)                                 # HMAC computed inside the TPM

Modules: device (connection, persistent handles, EK/SRK, info), activation (the authenticationKey challenge),
dps (HTTPS registration), signer (HMAC in the TPM), provisioning (the flow and its cache), health (quotes),
errors (what went wrong and what to do). tpm2-pytss is imported lazily: importing this package is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.tpm.errors import (
    ChallengeRejected,
    EkNotProvisioned,
    EnrollmentMissing,
    NoResourceManager,
    TpmError,
    TpmLockout,
    TpmNotFound,
    TpmPermissionDenied,
)

__all__ = ["ChallengeRejected", "EkNotProvisioned", "EnrollmentMissing", "NoResourceManager", "TpmError",
           "TpmLockout", "TpmNotFound", "TpmPermissionDenied", "provision", "reprovision"]


def provision(config: Any, state_dir: str | Path, *, force: bool = False) -> Any:
    """HubCredentials of the TPM identity (see agent.tpm.provisioning.provision)."""
    from agent.tpm import provisioning

    return provisioning.provision(config, state_dir, force=force)


def reprovision(config: Any, state_dir: str | Path, reason: str = "") -> Any:
    """Provision again through DPS, replacing the hub key in the TPM only once DPS assigned."""
    from agent.tpm import provisioning

    return provisioning.reprovision(config, state_dir, reason)

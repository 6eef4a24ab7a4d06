"""DPS attestation handlers, keyed by attestation type ("symmetricKey", "x509", later "tpm").

A handler proves that a registration request comes from an enrolled device and says which hub identity the
device gets. Adding a mechanism is one module with a handler class plus ``register(Handler())``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from emulator.hub import tls
from emulator.hub.sas import SasError, derive_group_key, verify_sas
from emulator.hub.state import AUTH_CA, AUTH_SAS, AUTH_SELF_SIGNED, Enrollment, normalize_thumbprint
from emulator.pki import thumbprint

if TYPE_CHECKING:
    from emulator.hub.dps import Dps


class AttestationError(Exception):
    """Refusal with DPS's HTTP status, error code and message; ``body`` adds fields (e.g. a TPM challenge)."""

    def __init__(self, status: int, error_code: int, message: str, body: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message
        self.body = body or {}

    def to_json(self) -> dict:
        return {"errorCode": self.error_code, "message": self.message, "trackingId": "", **self.body}


@dataclass
class AttestationRequest:
    registration_id: str
    id_scope: str
    transport: str                                   # "mqtt" or "https"
    sas_token: str | None = field(default=None, repr=False)
    client_chain: list[x509.Certificate] = field(default_factory=list)
    body: dict = field(default_factory=dict)         # the register request JSON (HTTPS; MQTT: the publish)

    @property
    def client_cert(self) -> x509.Certificate | None:
        return self.client_chain[0] if self.client_chain else None


@dataclass
class Attested:
    """A proven device: its enrollment and the identity DPS creates in the assigned hub."""

    enrollment: Enrollment
    auth_type: str
    primary_key: str | None = field(default=None, repr=False)
    secondary_key: str | None = field(default=None, repr=False)
    thumbprint: str | None = None
    trusted_ca_pems: list[str] = field(default_factory=list)     # CAs the hub must trust for this device
    registration_state: dict[str, Any] = field(default_factory=dict)  # extra registrationState fields


class AttestationHandler(Protocol):
    type: str

    async def attest(self, dps: Dps, request: AttestationRequest) -> Attested: ...


HANDLERS: dict[str, AttestationHandler] = {}


def register(handler: AttestationHandler) -> None:
    """Make ``handler`` responsible for enrollments whose attestation type is ``handler.type``."""
    HANDLERS[handler.type] = handler


def handler_for(request: AttestationRequest) -> AttestationHandler:
    """Choose by what the device presents: a TPM body, a client certificate, else a SAS token."""
    kind = "tpm" if "tpm" in request.body else "x509" if request.client_chain else "symmetricKey"
    if kind == "tpm" and "tpm" not in HANDLERS:
        try:
            from emulator.hub import dps_tpm  # noqa: F401 -- registers the tpm handler; needs tpm2-pytss
        except ImportError:
            pass
    tpm = HANDLERS.get("tpm")
    if kind == "symmetricKey" and tpm is not None and tpm.claims(request):   # a TPM device's operation polls
        kind = "tpm"
    handler = HANDLERS.get(kind)
    if handler is None:
        raise AttestationError(400, 400004, f"attestation type {kind!r} is not available in this emulator")
    return handler


def _usable(enrollment: Enrollment | None, kind: str) -> Enrollment | None:
    if enrollment is None or enrollment.attestation.type != kind:
        return None
    if enrollment.provisioning_status != "enabled":
        raise AttestationError(401, 401002, f"enrollment {enrollment.enrollment_id!r} is disabled")
    return enrollment


class SymmetricKeyHandler:
    """Individual enrollments sign with their own key; group members with HMAC(group key, registration id)."""

    type = "symmetricKey"

    async def attest(self, dps: Dps, request: AttestationRequest) -> Attested:
        if not request.sas_token:
            raise AttestationError(401, 401002, "no SharedAccessSignature presented")
        resource = f"{request.id_scope}/registrations/{request.registration_id}"
        now = dps.clock()
        individual = _usable(dps.state.find_enrollment(request.registration_id), self.type)
        if individual is not None:
            keys = [individual.attestation.primary_key, individual.attestation.secondary_key]
            try:
                verify_sas(request.sas_token, resource, keys, now)
            except SasError as exc:
                raise AttestationError(401, 401002, f"registration {request.registration_id!r}: {exc}") from None
            return Attested(individual, AUTH_SAS, keys[0], keys[1])
        last_error = "no enrollment (individual or group) for this registration id"
        for group in dps.state.list_enrollments(group=True):
            if group.attestation.type != self.type or group.provisioning_status != "enabled":
                continue
            keys = [derive_group_key(k, request.registration_id)
                    for k in (group.attestation.primary_key, group.attestation.secondary_key) if k]
            try:
                verify_sas(request.sas_token, resource, keys, now)
            except SasError as exc:
                last_error = str(exc)
                continue
            return Attested(group, AUTH_SAS, keys[0], keys[1] if len(keys) > 1 else None)
        raise AttestationError(401, 401002, f"registration {request.registration_id!r}: {last_error}")


class X509Handler:
    """Individual: the device certificate (or its thumbprint) is enrolled. Group: it chains to the group's CA."""

    type = "x509"

    async def attest(self, dps: Dps, request: AttestationRequest) -> Attested:
        leaf = request.client_cert
        if leaf is None:
            raise AttestationError(401, 401002, "no client certificate presented")
        now = datetime.datetime.fromtimestamp(dps.clock(), datetime.UTC)
        cns = [a.value for a in leaf.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        if request.registration_id not in cns:
            raise AttestationError(401, 401002, f"certificate CN {cns} must equal the registration id "
                                                f"{request.registration_id!r}")
        problem = tls.check_validity(leaf, now)
        if problem:
            raise AttestationError(401, 401002, problem)
        prints = {thumbprint(leaf), thumbprint(leaf, "sha256")}
        der = leaf.public_bytes(serialization.Encoding.DER)
        individual = _usable(dps.state.find_enrollment(request.registration_id), self.type)
        if individual is not None:
            att = individual.attestation
            enrolled = {normalize_thumbprint(t) for t in att.thumbprints}
            certs = [x509.load_pem_x509_certificate(p.encode()) for p in att.certificates]
            if prints & enrolled or any(c.public_bytes(serialization.Encoding.DER) == der for c in certs):
                return Attested(individual, AUTH_SELF_SIGNED, thumbprint=thumbprint(leaf))
            issuers = [c for c in certs if c.public_bytes(serialization.Encoding.DER) != der]
            if issuers and tls.check_client_chain(request.client_chain, issuers, now) is None:
                return Attested(individual, AUTH_SELF_SIGNED, thumbprint=thumbprint(leaf))
            raise AttestationError(401, 401002, f"certificate does not match enrollment {individual.enrollment_id!r}")
        for group in dps.state.list_enrollments(group=True):
            if group.attestation.type != self.type or group.provisioning_status != "enabled":
                continue
            cas = [x509.load_pem_x509_certificate(p.encode()) for p in group.attestation.certificates]
            if tls.check_client_chain(request.client_chain, cas, now) is None:
                return Attested(group, AUTH_CA, trusted_ca_pems=list(group.attestation.certificates))
        raise AttestationError(401, 401002, f"no X.509 enrollment for {request.registration_id!r} and no enrollment "
                                            "group whose CA signed the certificate")


register(SymmetricKeyHandler())
register(X509Handler())

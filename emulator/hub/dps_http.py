"""DPS over HTTPS REST, the path TPM attestation needs (and any device without MQTT).

    PUT  /{idScope}/registrations/{registrationId}/register?api-version=...
    GET  /{idScope}/registrations/{registrationId}/operations/{operationId}?api-version=...
    GET|POST /{idScope}/registrations/{registrationId}?api-version=...      (registration status)

Authentication: ``Authorization: SharedAccessSignature ...`` (symmetric key, TPM's second round) or the TLS
client certificate (X.509). A TPM's first register carries no token and is answered 401 with the
authenticationKey challenge by the tpm attestation handler.
"""

from __future__ import annotations

import logging

from emulator.hub.attestation import AttestationError, AttestationRequest
from emulator.hub.dps import RETRY_AFTER_S, Dps
from emulator.hub.http import HttpError, Request, Response
from emulator.hub.state import StateError

log = logging.getLogger(__name__)


class DpsHttpApi:
    def __init__(self, dps: Dps) -> None:
        self.dps = dps

    async def __call__(self, request: Request) -> Response:
        parts = request.path.strip("/").split("/")
        if len(parts) < 3 or parts[1] != "registrations":
            raise HttpError(404, f"no DPS resource at {request.path!r}; expected "
                                 "/{idScope}/registrations/{registrationId}/...", 404000)
        if "api-version" not in request.query:
            raise HttpError(400, "the api-version query parameter is required (e.g. ?api-version=2021-06-01)",
                            400002)
        id_scope, registration_id, rest = parts[0], parts[2], parts[3:]
        body = request.json() if request.body else {}
        if body is not None and not isinstance(body, dict):
            raise HttpError(400, "request body must be a JSON object", 400001)
        try:
            if rest == ["register"] and request.method == "PUT":
                return await self._register(request, id_scope, registration_id, body or {})
            if len(rest) == 2 and rest[0] == "operations" and request.method == "GET":
                await self._attest(request, id_scope, registration_id, {})
                registration = self.dps.operation(registration_id, rest[1])
                return Response(200, self.dps.operation_document(registration))
            if not rest and request.method in ("GET", "POST"):
                await self._attest(request, id_scope, registration_id, body or {})
                registration = self.dps.state.get_registration(registration_id)
                return Response(200, self.dps.status_document(registration))
        except AttestationError as exc:
            raise HttpError(exc.status, exc.message, exc.error_code, exc.body) from None
        except StateError as exc:
            raise HttpError(exc.status, str(exc)) from None
        raise HttpError(405 if rest in (["register"], []) else 404,
                        f"{request.method} {request.path} is not a DPS operation", 405000)

    async def _attest(self, request: Request, id_scope: str, registration_id: str, body: dict):
        token = request.headers.get("authorization")
        attestation_request = AttestationRequest(registration_id, id_scope, "https", sas_token=token,
                                                 client_chain=request.client_chain, body=body)
        return await self.dps.attest(attestation_request)

    async def _register(self, request: Request, id_scope: str, registration_id: str, body: dict) -> Response:
        if body.get("registrationId", registration_id) != registration_id:
            raise HttpError(400, f"body registrationId {body.get('registrationId')!r} differs from the URL's "
                                 f"{registration_id!r}", 400003)
        attested = await self._attest(request, id_scope, registration_id, body)
        registration = self.dps.register(attested, registration_id, body.get("payload"))
        if self.dps.immediate_assignment:
            return Response(200, self.dps.operation_document(registration))
        return Response(202, self.dps.operation_document(registration, assigning=True),
                        {"Retry-After": str(RETRY_AFTER_S)})

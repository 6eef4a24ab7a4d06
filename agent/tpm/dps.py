"""DPS registration with TPM attestation, over HTTPS (the Python SDK has no TPM support; this is roost's own).

    PUT  https://{host}/{idScope}/registrations/{regId}/register?api-version=2021-06-01
         {"registrationId": regId, "tpm": {"endorsementKey": b64, "storageRootKey": b64}}
         -> 401 {"authenticationKey": b64}           the challenge (see agent.tpm.activation)
    PUT  (same) + Authorization: SharedAccessSignature sr={idScope}%2fregistrations%2f{regId}&...&skn=registration
         -> 202 {"operationId", "status": "assigning"}  or 200 with the registrationState
    GET  .../registrations/{regId}/operations/{operationId}   until status is "assigned" (or failed/disabled)

Only the standard library: http.client over an ssl context holding the configured trust anchor.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.identity import dps as identity_dps
from agent.identity.errors import ProvisioningError, TrustError
from agent.tpm.errors import EnrollmentMissing

API_VERSION = "2021-06-01"
USER_AGENT = "roost-tpm/1"


@dataclass(frozen=True)
class DpsResponse:
    status: int
    body: dict
    retry_after_s: float | None


def split_host(host: str) -> tuple[str, int]:
    """"name[:port]" -> (name, port); DPS's REST API is on 443."""
    return identity_dps.split_host(host, 443)


class DpsHttpClient:
    """One registration's requests to DPS (keeps no secret: the caller passes each Authorization header)."""

    def __init__(self, provisioning_host: str, id_scope: str, registration_id: str, *, ca_pem: str | None = None,
                 timeout_s: float = 30.0) -> None:
        self.host, self.port = split_host(provisioning_host)
        self.id_scope = id_scope
        self.registration_id = registration_id
        self.timeout_s = timeout_s
        self._tls = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
        self.where = f"DPS {provisioning_host} (scope {id_scope}, registration {registration_id!r})"

    @property
    def resource(self) -> str:
        """What the registration SAS token is for (``sr``)."""
        return f"{self.id_scope}/registrations/{self.registration_id}"

    def _path(self, tail: str) -> str:
        quoted = "/".join(urllib.parse.quote(p, safe="") for p in (self.id_scope, "registrations",
                                                                       self.registration_id))
        return f"/{quoted}/{tail}?api-version={API_VERSION}"

    def register(self, body: dict, authorization: str | None = None) -> DpsResponse:
        return self._request("PUT", self._path("register"), body, authorization)

    def operation(self, operation_id: str, authorization: str) -> DpsResponse:
        tail = f"operations/{urllib.parse.quote(operation_id, safe='')}"
        return self._request("GET", self._path(tail), None, authorization)

    def _request(self, method: str, path: str, body: dict | None, authorization: str | None) -> DpsResponse:
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json; charset=utf-8"
        if authorization:
            headers["Authorization"] = authorization
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self._tls)
        try:
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            retry = response.getheader("Retry-After")
        except ssl.SSLCertVerificationError as exc:
            raise TrustError(f"{self.where}: the server certificate is not trusted ({exc.verify_message})",
                             "set identity.provisioning_ca_file to the PEM root CA that issued the DPS "
                             "certificate (or leave it empty for Azure)", kind="trust") from None
        except TimeoutError:
            raise ProvisioningError(f"{self.where} did not answer within {self.timeout_s:.0f} s",
                                    "check network access to the provisioning host on port 443 (roost doctor)",
                                    kind="timeout") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ProvisioningError(f"{self.where}: connection failed ({exc})",
                                    "check identity.provisioning_host and network access to it on port 443",
                                    kind="connection") from None
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"message": raw[:200].decode(errors="replace")}
        if not isinstance(parsed, dict):
            parsed = {"message": str(parsed)[:200]}
        try:
            retry_s = float(retry) if retry else None
        except ValueError:
            retry_s = None
        return DpsResponse(response.status, parsed, retry_s)

    def refused(self, response: DpsResponse, stage: str) -> ProvisioningError:
        """The error for a response that is neither the challenge nor progress."""
        message = response.body.get("message") or response.body.get("errorMessage") or ""
        detail = f" ({message})" if message else ""
        if response.status in (401, 403, 404) and stage == "challenge":
            return EnrollmentMissing(
                f"{self.where} has no enrollment for this TPM (HTTP {response.status}){detail}",
                "create an individual enrollment with TPM attestation from `roost tpm ek` (endorsement key "
                "and registration id), or check identity.id_scope")
        if response.status == 401:
            return ProvisioningError(
                f"{self.where} did not accept the TPM-signed token (HTTP 401){detail}",
                "the challenge may have expired or the enrollment changed meanwhile; provision again", kind="auth")
        if response.status == 429:
            return ProvisioningError(f"{self.where} is throttling this device (HTTP 429){detail}",
                                     "wait and retry; DPS limits registrations per enrollment", kind="throttled")
        return ProvisioningError(f"{self.where} refused the registration (HTTP {response.status}){detail}",
                                 "check the enrollment in DPS: it may be disabled", kind="refused")


def wait_for_assignment(client: DpsHttpClient, first: DpsResponse, authorization: Callable[[], str], *,
                        timeout_s: float = 60.0, sleep: Callable[[float], None] = time.sleep,
                        clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """Poll the operation until DPS says assigned; returns the registrationState."""
    response = first
    deadline = clock() + timeout_s
    while True:
        if response.status not in (200, 202):
            raise client.refused(response, "register")
        body = response.body
        state = body.get("registrationState") if "registrationState" in body else (
            body if "assignedHub" in body else None)
        status = str(body.get("status") or (state or {}).get("status") or "")
        if status == "assigned" and isinstance(state, dict) and state.get("assignedHub"):
            return state
        if status in ("failed", "disabled"):
            why = (state or {}).get("errorMessage") or body.get("errorMessage") or ""
            raise ProvisioningError(f"{client.where} answered '{status}'{': ' + why if why else ''}",
                                    "check the enrollment in DPS: 'disabled' means it was turned off, 'failed' "
                                    "that no linked hub accepted the device", kind="refused")
        operation_id = body.get("operationId")
        if not operation_id:
            raise ProvisioningError(f"{client.where} answered HTTP {response.status} without an operation id",
                                    "is identity.provisioning_host a DPS endpoint?", kind="refused")
        if clock() >= deadline:
            raise ProvisioningError(f"{client.where} did not assign a hub within {timeout_s:.0f} s",
                                    "try again later; check the enrollment's allocation", kind="timeout")
        sleep(min(max(response.retry_after_s or 1.0, 0.0), 5.0))
        response = client.operation(operation_id, authorization())

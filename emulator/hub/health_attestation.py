"""The health attestation service (after Windows IoT Device Health Attestation), the verifier side.

A device proves how it booted with a TPM2_Quote over its boot PCRs (agent.tpm.health is the other half):

    POST /attestation/challenge  {"endorsementKey", "attestationKey"}     (base64 TPM2B_PUBLIC each)
         -> {"session", "nonce", "credentialBlob", "encryptedSecret", "pcrs": [0..7], "bank": "sha256"}
    POST /attestation/quote      {"session", "secret", "quoted", "signature", "bank", "pcrs": {"0": hex, ...}}
         -> {"verdict": "healthy" | "unhealthy", "reasons": [...], "deviceId", ...}

The challenge binds the AK to the enrolled EK (make_credential(EK, secret, AK name): only that TPM can
return the secret). The quote must be signed by that AK, carry the nonce (one use, expires), and its PCR digest
must equal the hash of the reported PCR values, which must equal the device's reference values. The verdict
goes into the device twin's tags (``healthAttestation``), where the device itself cannot write.

A device that cannot prove its AK gets HTTP 403 and its twin is not touched: anyone can send someone's EK.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from tpm2_pytss import TPM2_ALG, TPM2B_ATTEST, TPM2B_PUBLIC, TPMA_OBJECT, TPMS_ATTEST, TPMT_SIGNATURE
from tpm2_pytss.utils import make_credential

BOOT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)
SESSION_TTL_S = 120.0
TPM_GENERATED = 0xFF544347
ST_ATTEST_QUOTE = 0x8018
AK_REQUIRED = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
               | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT)
MAX_BODY = 64 * 1024
HANDSHAKE_TIMEOUT_S = 30.0


class AttestationRefused(ValueError):
    """The request cannot be judged at all; ``status`` is the HTTP status and nothing is written."""

    def __init__(self, status: int, message: str, fix: str = "") -> None:
        self.status = status
        self.fix = fix
        super().__init__(message)


def expected_pcrs(measurements: Mapping[int, Iterable[bytes]], pcrs: Iterable[int] = BOOT_PCRS) -> dict[int, bytes]:
    """sha256 PCR values after TPM2_Startup(CLEAR) and extending each PCR with the given event data in order."""
    values = {}
    for index in pcrs:
        value = bytes(32)
        for event in measurements.get(index, ()):
            value = hashlib.sha256(value + hashlib.sha256(event).digest()).digest()
        values[index] = value
    return values


@dataclass
class _Session:
    device_id: str
    ek: bytes
    ak: TPM2B_PUBLIC
    ak_name: bytes
    nonce: bytes
    secret: bytes
    pcrs: tuple[int, ...]
    issued: float


def _decode(body: Mapping[str, Any], key: str) -> bytes:
    value = body.get(key)
    if not isinstance(value, str):
        raise AttestationRefused(400, f"{key} is missing (base64 string expected)")
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        raise AttestationRefused(400, f"{key} is not base64") from None


def _public(raw: bytes, what: str) -> TPM2B_PUBLIC:
    try:
        public, used = TPM2B_PUBLIC.unmarshal(raw)
    except Exception:      # the binding raises several types for garbage
        raise AttestationRefused(400, f"{what} is not a marshalled TPM2B_PUBLIC") from None
    if used != len(raw):
        raise AttestationRefused(400, f"{what} has trailing bytes")
    return public


class HealthAttestationService:
    """Issues quote challenges and judges quotes; transport-free (see HealthAttestationServer for HTTPS).

    ``lookup_device(ek_public) -> device id or None`` says whom an EK belongs to (the DPS enrollments);
    ``write_verdict(device_id, verdict)`` stores it (the hub's twin tags); ``reference`` holds the expected PCR
    values per device, and ``default_reference`` those of a device without its own (by default: nothing
    measured since power-on, which is what an emulated board's swtpm shows).
    """

    def __init__(self, lookup_device: Callable[[bytes], str | None],
                 write_verdict: Callable[[str, dict], None] | None = None, *,
                 default_reference: Mapping[int, bytes] | None = None, pcrs: tuple[int, ...] = BOOT_PCRS,
                 clock: Callable[[], float] = time.time) -> None:
        self.lookup_device = lookup_device
        self.write_verdict = write_verdict
        self.pcrs = pcrs
        self.default_reference = dict(default_reference or expected_pcrs({}, pcrs))
        self.reference: dict[str, dict[int, bytes]] = {}
        self.verdicts: dict[str, dict] = {}
        self._clock = clock
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def set_reference(self, device_id: str, values: Mapping[int, bytes]) -> None:
        self.reference[device_id] = dict(values)

    def challenge(self, body: Mapping[str, Any]) -> dict:
        ek_raw = _decode(body, "endorsementKey")
        ak_raw = _decode(body, "attestationKey")
        ek = _public(ek_raw, "endorsementKey")
        ak = _public(ak_raw, "attestationKey")
        device_id = self.lookup_device(ek_raw)
        if device_id is None:
            raise AttestationRefused(404, "no device is enrolled with this endorsement key",
                                     "enroll the device's EK (roost tpm ek) in DPS first")
        attrs = ak.publicArea.objectAttributes
        if (attrs & AK_REQUIRED) != AK_REQUIRED or attrs & TPMA_OBJECT.DECRYPT:
            raise AttestationRefused(400, "attestationKey is not a restricted signing key that never left its TPM")
        secret = secrets.token_bytes(32)
        ak_name = bytes(ak.get_name())
        credential, encrypted_secret = make_credential(ek, secret, ak.get_name())
        session = secrets.token_urlsafe(16)
        nonce = secrets.token_bytes(32)
        with self._lock:
            now = self._clock()
            for key in [k for k, s in self._sessions.items() if now - s.issued > SESSION_TTL_S]:
                del self._sessions[key]
            self._sessions[session] = _Session(device_id, ek_raw, ak, ak_name, nonce, secret, self.pcrs, now)
        return {"session": session, "nonce": base64.b64encode(nonce).decode(),
                "credentialBlob": base64.b64encode(bytes(credential.marshal())).decode(),
                "encryptedSecret": base64.b64encode(bytes(encrypted_secret.marshal())).decode(),
                "pcrs": list(self.pcrs), "bank": "sha256"}

    def verify(self, body: Mapping[str, Any]) -> dict:
        """Judge a quote; returns the verdict (also written to the twin) or raises AttestationRefused."""
        with self._lock:
            session = self._sessions.pop(str(body.get("session")), None)   # a nonce is good for one try
        if session is None or self._clock() - session.issued > SESSION_TTL_S:
            raise AttestationRefused(400, "unknown, used or expired attestation session",
                                     "ask for a new challenge")
        if not hmac.compare_digest(_decode(body, "secret"), session.secret):
            raise AttestationRefused(403, "the attestation key is not proven to live in the enrolled TPM")
        reasons = self._judge(session, body)
        verdict = {
            "verdict": "unhealthy" if reasons else "healthy",
            "reasons": reasons,
            "deviceId": session.device_id,
            "attestedAt": datetime.fromtimestamp(self._clock(), UTC).isoformat(timespec="seconds"),
            "pcrs": list(session.pcrs),
            "akName": session.ak_name.hex(),
        }
        self.verdicts[session.device_id] = verdict
        if self.write_verdict is not None:
            self.write_verdict(session.device_id, verdict)
        return verdict

    def _judge(self, session: _Session, body: Mapping[str, Any]) -> list[str]:
        quoted_raw = _decode(body, "quoted")
        signature_raw = _decode(body, "signature")
        try:
            quoted, _ = TPM2B_ATTEST.unmarshal(quoted_raw)
            attest_bytes = bytes(quoted)
            attest, _ = TPMS_ATTEST.unmarshal(attest_bytes)
            signature, _ = TPMT_SIGNATURE.unmarshal(signature_raw)
        except Exception:     # the binding raises several types for garbage
            return ["the quote or its signature does not decode"]
        try:
            signature.verify_signature(session.ak, attest_bytes)
        except (InvalidSignature, ValueError, TypeError):
            return ["the quote's signature does not verify against the attestation key"]
        reasons = []
        if attest.magic != TPM_GENERATED or attest.type != ST_ATTEST_QUOTE:
            reasons.append("the signed structure is not a TPM-generated quote")
        if not hmac.compare_digest(bytes(attest.extraData), session.nonce):
            reasons.append("the quote does not carry this session's nonce (replayed?)")
        quoted_pcrs = _selection(attest.attested.quote.pcrSelect)
        if quoted_pcrs != set(session.pcrs):
            reasons.append(f"the quote covers PCRs {sorted(quoted_pcrs)}, not {list(session.pcrs)}")
        values = body.get("pcrs")
        if not isinstance(values, dict):
            return [*reasons, "pcrs must map PCR index to hex value"]
        try:
            reported = {int(k): bytes.fromhex(v) for k, v in values.items()}
        except (TypeError, ValueError):
            return [*reasons, "pcrs values must be hex strings"]
        if set(reported) != set(session.pcrs):
            return [*reasons, "pcrs does not list exactly the requested PCRs"]
        digest = hashlib.sha256(b"".join(reported[i] for i in sorted(reported))).digest()
        if not hmac.compare_digest(digest, bytes(attest.attested.quote.pcrDigest)):
            reasons.append("the reported PCR values do not match the quoted digest")
        reference = self.reference.get(session.device_id, self.default_reference)
        changed = [i for i in sorted(reported) if reference.get(i) != reported[i]]
        if changed:
            which = f"PCR {changed[0]} differs" if len(changed) == 1 else \
                f"PCRs {', '.join(map(str, changed))} differ"
            reasons.append(f"{which} from the reference boot: the boot chain measured something else")
        return reasons


def _selection(selection: Any) -> set[int]:
    out: set[int] = set()
    for sel in selection:
        if sel.hash != TPM2_ALG.SHA256:
            continue
        raw = bytes(sel.pcrSelect)[: sel.sizeofSelect]
        out |= {8 * i + bit for i, byte in enumerate(raw) for bit in range(8) if byte & (1 << bit)}
    return out


class HealthAttestationServer:
    """The service over HTTPS on its own thread: ``with HealthAttestationServer(service, host, ctx) as s: s.url``."""

    def __init__(self, service: HealthAttestationService, host: str, tls: ssl.SSLContext, port: int = 0) -> None:
        self.service = service
        handler = _handler(service)
        self._server = _QuietServer((host, port), handler)
        self._server.daemon_threads = True
        # The handshake runs in each connection's thread (Handler.setup), not in accept(): a client that
        # connects and stays silent must not stall everyone else's attestation.
        self._server.socket = tls.wrap_socket(self._server.socket, server_side=True, do_handshake_on_connect=False)
        self.host = host
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-attestation", daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> HealthAttestationServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> HealthAttestationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that fails its TLS handshake or goes away is its own problem; no traceback on stderr.
        pass


def _handler(service: HealthAttestationService) -> type[BaseHTTPRequestHandler]:
    routes = {"/attestation/challenge": service.challenge, "/attestation/quote": service.verify}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = HANDSHAKE_TIMEOUT_S   # per socket operation: a silent client's thread ends

        def setup(self) -> None:
            super().setup()
            self.connection.do_handshake()

        def do_POST(self) -> None:
            route = routes.get(self.path.split("?")[0])
            if route is None:
                return self._send(404, {"message": f"no such endpoint {self.path}"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 < length <= MAX_BODY:
                return self._send(400, {"message": "a JSON body of at most 64 KiB is required"})
            try:
                body = json.loads(self.rfile.read(length))
            except ValueError:
                return self._send(400, {"message": "the body is not JSON"})
            if not isinstance(body, dict):
                return self._send(400, {"message": "the body must be a JSON object"})
            try:
                self._send(200, route(body))
            except AttestationRefused as exc:
                self._send(exc.status, {"message": str(exc), "fix": exc.fix})

        def _send(self, status: int, doc: dict) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def date_time_string(self, timestamp: float | None = None) -> str:
            # The Date header follows the service's clock, like the emulator's other endpoints.
            return super().date_time_string(service._clock() if timestamp is None else timestamp)

        def log_message(self, format: str, *args: Any) -> None:   # tests and the demo stay quiet
            pass

    return Handler


def for_emulator(emulator: Any) -> HealthAttestationService:
    """A service that knows the emulator's devices: an EK belongs to the device its TPM enrollment registered
    as, and the verdict goes into that device's twin tags (``healthAttestation``) in its assigned hub."""
    dps = emulator.dps

    def registration_of(ek_public: bytes) -> Any:
        encoded = base64.b64encode(ek_public).decode()
        for enrollment in dps.state.list_enrollments(group=False):
            enrolled = enrollment.attestation.endorsement_key or ""
            if enrollment.attestation.type == "tpm" and hmac.compare_digest(enrolled, encoded):
                for registration in dps.state.list_registrations(enrollment.enrollment_id):
                    if registration.status == "assigned":
                        return registration
        return None

    def lookup(ek_public: bytes) -> str | None:
        registration = registration_of(ek_public)
        return None if registration is None else registration.device_id

    def write(device_id: str, verdict: dict) -> None:
        for registration in dps.state.list_registrations():
            if registration.device_id == device_id and registration.status == "assigned":
                hub = emulator.hubs[registration.assigned_hub]
                hub.state.update_twin(device_id, tags={"healthAttestation": verdict})

    return HealthAttestationService(lookup, write, clock=emulator.config.clock)


def serve_for_emulator(emulator: Any, host: str, port: int = 0) -> HealthAttestationServer:
    """The service for ``emulator`` over HTTPS with a certificate from the emulator's PKI (not started)."""
    issued = emulator.pki.server("health-attestation", [host])
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(issued.chain_path, issued.key_path)
    return HealthAttestationServer(for_emulator(emulator), host, tls, port)

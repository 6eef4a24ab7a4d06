"""Device health attestation (after Windows IoT Device Health Attestation): a TPM2_Quote over the boot PCRs.

    verdict = attest(tcti, "https://attest.example:8443", ca_pem=root_pem)   # {"verdict": "healthy", ...}

1. The device sends its EK and attestation key (AK) public areas; the service answers with a nonce and a
   credential made for (EK, AK name): only a TPM holding both can activate it, which proves the AK lives in the
   enrolled TPM ("certified under the EK") without an AK certificate authority.
2. The device activates the credential, quotes PCRs 0-7 (sha256) with the nonce as qualifying data and sends
   quote, signature, PCR values and the activated secret back.
3. The service checks the secret, the signature, the nonce, that the PCR values hash to the quoted digest and
   that they equal the reference values for this device, and writes the verdict to the device twin.

The AK is an ECC P-256 restricted signing key under the SRK, kept at 0x81000101 and reused. It is created noDA:
a TPM in dictionary-attack lockout can still say how it booted.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.parse
from typing import Any

from agent.identity.errors import IdentityError, TrustError
from agent.tpm.activation import credential_rejected
from agent.tpm.device import AK_HANDLE, Tpm
from agent.tpm.errors import ChallengeRejected, translate

BOOT_PCRS = (0, 1, 2, 3, 4, 5, 6, 7)
PCR_BANK = "sha256"


def attestation_key(tpm: Tpm) -> bytes:
    """The AK's marshalled TPM2B_PUBLIC, creating and persisting the AK on first use."""
    if tpm.has(AK_HANDLE):
        return bytes(tpm.public(AK_HANDLE, "attestation key").marshal())
    t = tpm.t
    attrs = (t.TPMA_OBJECT.FIXEDTPM | t.TPMA_OBJECT.FIXEDPARENT | t.TPMA_OBJECT.SENSITIVEDATAORIGIN
             | t.TPMA_OBJECT.USERWITHAUTH | t.TPMA_OBJECT.NODA | t.TPMA_OBJECT.RESTRICTED | t.TPMA_OBJECT.SIGN_ENCRYPT)
    template = t.TPM2B_PUBLIC(publicArea=t.TPMT_PUBLIC.parse("ecc256:ecdsa-sha256:null", attrs))
    srk = tpm.srk()
    try:
        with tpm.guard("creating the attestation key"):
            private, public, _, _, _ = tpm.ectx.create(srk, t.TPM2B_SENSITIVE_CREATE(), template, t.TPM2B_DATA(),
                                                       t.TPML_PCR_SELECTION())
            handle = tpm.ectx.load(srk, private, public)
    finally:
        tpm.ectx.tr_close(srk)
    with tpm.transient(handle):
        tpm.persist(handle, AK_HANDLE)
    return bytes(public.marshal())


def activate(tpm: Tpm, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
    """ActivateCredential(AK, EK): the secret the service bound to this TPM's EK and AK."""
    t = tpm.t
    try:
        blob, _ = t.TPM2B_ID_OBJECT.unmarshal(credential_blob)
        secret, _ = t.TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
    except Exception as exc:   # the binding raises several types for garbage
        raise ChallengeRejected(f"the attestation service's credential does not decode ({exc})",
                                "check the attestation service URL") from None
    ek = tpm.ek()
    ak = tpm.open_persistent(AK_HANDLE, "attestation key")
    try:
        session = tpm.endorsement_policy_session()
        with tpm.transient(session), tpm.lock:
            try:
                return bytes(tpm.ectx.activate_credential(ak, ek, blob, secret, session1=t.ESYS_TR.PASSWORD,
                                                          session2=session))
            except t.TSS2_Exception as exc:
                if credential_rejected(tpm, exc):
                    raise ChallengeRejected(
                        f"the attestation credential is not for this TPM's EK and AK ({exc})",
                        "check that the service knows this device's endorsement key") from None
                raise translate(exc, tpm.tcti, "activating the attestation credential") from None
    finally:
        tpm.ectx.tr_close(ak)
        tpm.ectx.tr_close(ek)


def quote(tpm: Tpm, nonce: bytes, pcrs: tuple[int, ...] = BOOT_PCRS) -> dict[str, Any]:
    """A quote over ``pcrs`` (sha256) with ``nonce``: quoted attestation, signature and the PCR values."""
    t = tpm.t
    selection = f"{PCR_BANK}:{','.join(str(p) for p in pcrs)}"
    ak = tpm.open_persistent(AK_HANDLE, "attestation key")
    try:
        with tpm.guard("quoting the boot PCRs"):
            quoted, signature = tpm.ectx.quote(ak, selection, nonce, t.TPMT_SIG_SCHEME(scheme=t.TPM2_ALG.NULL))
            values: dict[str, str] = {}
            # PCR_Read returns at most 8 digests per call and says which it returned.
            pending = list(pcrs)
            while pending:
                _, returned, digests = tpm.ectx.pcr_read(f"{PCR_BANK}:{','.join(str(p) for p in pending)}")
                got = [p for p in pending if _selected(returned, p)]
                if not got:
                    break
                for index, digest in zip(got, digests, strict=False):
                    values[str(index)] = bytes(digest).hex()
                pending = [p for p in pending if p not in got]
    finally:
        tpm.ectx.tr_close(ak)
    return {"quoted": base64.b64encode(bytes(quoted.marshal())).decode(),
            "signature": base64.b64encode(bytes(signature.marshal())).decode(),
            "bank": PCR_BANK, "pcrs": values}


def _selected(selection: Any, index: int) -> bool:
    for sel in selection:
        raw = bytes(sel.pcrSelect)[: sel.sizeofSelect]
        if index // 8 < len(raw) and raw[index // 8] & (1 << (index % 8)):
            return True
    return False


def attest(tcti: str, url: str, *, ca_pem: str | None = None, timeout_s: float = 30.0) -> dict[str, Any]:
    """Run one health attestation against the service at ``url``; returns its verdict document."""
    service = _Service(url, ca_pem, timeout_s)
    with Tpm(tcti) as tpm:
        ek = tpm.ek_public()
        ak = attestation_key(tpm)
        challenge = service.post("/attestation/challenge", {"endorsementKey": base64.b64encode(ek).decode(),
                                                            "attestationKey": base64.b64encode(ak).decode()})
        try:
            session = str(challenge["session"])
            nonce = base64.b64decode(challenge["nonce"], validate=True)
            credential = base64.b64decode(challenge["credentialBlob"], validate=True)
            secret = base64.b64decode(challenge["encryptedSecret"], validate=True)
            pcrs = tuple(int(p) for p in challenge.get("pcrs", BOOT_PCRS))
        except (KeyError, TypeError, ValueError):
            raise IdentityError(f"attestation service {url} sent a malformed challenge",
                                "check the URL: it must be a roost attestation service", kind="attestation") from None
        if not pcrs or any(not 0 <= p <= 23 for p in pcrs):
            raise IdentityError(f"attestation service {url} asked for PCRs {pcrs}", "PCR indexes are 0..23",
                                kind="attestation")
        proof = activate(tpm, credential, secret)
        evidence = quote(tpm, nonce, pcrs)
    evidence.update(session=session, secret=base64.b64encode(proof).decode())
    return service.post("/attestation/quote", evidence)


class _Service:
    def __init__(self, url: str, ca_pem: str | None, timeout_s: float) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise IdentityError(f"attestation service URL {url!r} is not https://host[:port]",
                                "use the https URL the attestation service prints", kind="configuration")
        self.url, self.host, self.port = url, parts.hostname, parts.port or 443
        self.base = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.tls = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()

    def post(self, path: str, body: dict) -> dict:
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=self.timeout_s, context=self.tls)
        try:
            conn.request("POST", self.base + path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            raw = response.read()
        except ssl.SSLCertVerificationError as exc:
            raise TrustError(f"attestation service {self.url}: certificate not trusted ({exc.verify_message})",
                             "pass the service's root CA (--ca-file)") from None
        except (OSError, http.client.HTTPException) as exc:
            raise IdentityError(f"attestation service {self.url} is unreachable ({exc})",
                                "check the URL and that the service runs", kind="connection") from None
        finally:
            conn.close()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise IdentityError(f"attestation service {self.url} answered HTTP {response.status} without JSON",
                                "check the URL", kind="attestation")
        if response.status != 200:
            raise IdentityError(f"attestation service {self.url} refused: {doc.get('message', response.status)}",
                                str(doc.get("fix") or "see the service's log"), kind="attestation")
        return doc


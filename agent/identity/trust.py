"""Trust anchors: the root CAs the device accepts for its hub or gateway (``ca_pem`` of HubCredentials).

The configured ``hub.ca_file`` is the base set. Gateway CA rotation adds and removes anchors at run time
(the ``addTrustedCertificate`` / ``removeTrustedCertificate`` methods); those changes live in
``state_dir/trust/`` so that ``/etc`` can stay read-only:

- ``trust/added/<sha256>.pem``: anchors added from the cloud;
- ``trust/removed.json``: fingerprints of configured anchors the cloud withdrew.

Every change is validated first and the old set is kept on any error. The last anchor is never removed:
a device without an anchor could not connect to receive the next fix.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from agent.identity.errors import TrustError
from agent.identity.secure_files import write_private

MAX_PEM_BYTES = 64 * 1024


@dataclass(frozen=True)
class Anchor:
    fingerprint: str          # SHA-256 of the DER certificate, lower-case hex
    subject: str
    not_after: str            # ISO 8601 UTC
    origin: str               # "config" or "added"
    pem: str

    def summary(self) -> dict:
        return {"fingerprint": self.fingerprint, "subject": self.subject, "notAfter": self.not_after,
                "origin": self.origin}


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _not_after(cert: x509.Certificate) -> dt.datetime:
    return cert.not_valid_after_utc


def parse_ca_pem(pem: str, now: dt.datetime | None = None) -> list[x509.Certificate]:
    """Parse and validate PEM text holding one or more CA certificates; raise TrustError saying why not."""
    if not isinstance(pem, str) or "-----BEGIN CERTIFICATE-----" not in pem:
        raise TrustError("the text is not a PEM certificate",
                         "send the CA certificate in PEM form (-----BEGIN CERTIFICATE----- ...)", kind="bad-pem")
    if len(pem.encode()) > MAX_PEM_BYTES:
        raise TrustError(f"the PEM text is larger than {MAX_PEM_BYTES} bytes",
                         "send only the root CA certificate(s)", kind="bad-pem")
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise TrustError(f"the PEM certificate does not parse ({exc})",
                         "send the complete PEM text, headers included", kind="bad-pem") from None
    now = now or dt.datetime.now(dt.UTC)
    for cert in certs:
        name = cert.subject.rfc4514_string() or "(empty subject)"
        try:
            ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if not ca:
            raise TrustError(f"certificate {name!r} is not a CA certificate",
                             "send the root CA that issued the gateway's chain, not the server certificate",
                             kind="not-ca")
        if _not_after(cert) <= now:
            raise TrustError(f"CA certificate {name!r} expired on {_not_after(cert).isoformat()}",
                             "send the renewed root CA", kind="expired")
        if cert.not_valid_before_utc > now:
            raise TrustError(f"CA certificate {name!r} is not valid before {cert.not_valid_before_utc.isoformat()}",
                             "check the device clock (roost doctor) or the certificate dates", kind="not-yet-valid")
    return certs


def _anchor(cert: x509.Certificate, origin: str) -> Anchor:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Anchor(_fingerprint(cert), cert.subject.rfc4514_string(), _not_after(cert).isoformat(), origin,
                  cert.public_bytes(Encoding.PEM).decode())


class TrustStore:
    """The device's trust anchors: configured file plus cloud-managed additions and removals."""

    def __init__(self, state_dir: Path, ca_file: str | Path | None) -> None:
        self.dir = Path(state_dir) / "trust"
        self.ca_file = Path(ca_file) if ca_file else None

    # -- reading ---------------------------------------------------------------------------------------
    def _removed(self) -> set[str]:
        path = self.dir / "removed.json"
        if not path.exists():
            return set()
        return set(json.loads(path.read_text()))

    def _configured(self) -> list[Anchor]:
        if self.ca_file is None:
            return []
        try:
            text = self.ca_file.read_text()
        except OSError as exc:
            raise TrustError(f"hub.ca_file {self.ca_file} cannot be read ({exc.strerror})",
                             "point hub.ca_file at the PEM root CA of your hub or gateway",
                             kind="config") from None
        try:
            certs = x509.load_pem_x509_certificates(text.encode())
        except ValueError:
            raise TrustError(f"hub.ca_file {self.ca_file} holds no PEM certificate",
                             "point hub.ca_file at the PEM root CA of your hub or gateway", kind="config") from None
        return [_anchor(c, "config") for c in certs]

    def _added(self) -> list[Anchor]:
        folder = self.dir / "added"
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.pem")):
            out.extend(_anchor(c, "added") for c in x509.load_pem_x509_certificates(path.read_bytes()))
        return out

    def anchors(self) -> list[Anchor]:
        """Every anchor in force, configured first, without duplicates or withdrawn ones."""
        removed = self._removed()
        seen: set[str] = set()
        out = []
        for anchor in self._configured() + self._added():
            if anchor.fingerprint in removed or anchor.fingerprint in seen:
                continue
            seen.add(anchor.fingerprint)
            out.append(anchor)
        return out

    def bundle(self) -> str | None:
        """PEM text of all anchors (the SDK's ``server_verification_cert``), or None for the system store."""
        anchors = self.anchors()
        if not anchors and self.ca_file is None:
            return None
        return "".join(a.pem for a in anchors)

    # -- changing --------------------------------------------------------------------------------------
    def add(self, pem: str, now: dt.datetime | None = None) -> list[Anchor]:
        """Validate and add the CA certificate(s) in ``pem``; nothing changes if any of them is invalid."""
        certs = parse_ca_pem(pem, now)
        added = [_anchor(c, "added") for c in certs]
        removed = self._removed()
        for anchor in added:
            write_private(self.dir / "added" / f"{anchor.fingerprint}.pem", anchor.pem)
            removed.discard(anchor.fingerprint)
        self._write_removed(removed)
        return added

    def remove(self, fingerprint: str) -> Anchor:
        """Withdraw the anchor with this SHA-256 fingerprint; refuses to remove the last one."""
        wanted = fingerprint.lower().replace(":", "")
        anchors = self.anchors()
        match = [a for a in anchors if a.fingerprint == wanted]
        if not match:
            raise TrustError(f"no trusted certificate has the fingerprint {fingerprint!r}",
                             "call listTrustedCertificates for the SHA-256 fingerprints in force", kind="unknown")
        if len(anchors) == 1:
            raise TrustError("that is the last trusted certificate; removing it would cut the device off",
                             "add the new CA first (addTrustedCertificate), then remove the old one", kind="last")
        anchor = match[0]
        if anchor.origin == "added":
            (self.dir / "added" / f"{anchor.fingerprint}.pem").unlink(missing_ok=True)
        else:
            self._write_removed(self._removed() | {anchor.fingerprint})
        return anchor

    def _write_removed(self, removed: set[str]) -> None:
        if removed or (self.dir / "removed.json").exists():
            write_private(self.dir / "removed.json", json.dumps(sorted(removed)))

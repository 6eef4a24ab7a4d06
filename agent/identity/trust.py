"""Trust anchors: the root CAs the device accepts for its hub or gateway (``ca_pem`` of HubCredentials).

The configured ``hub.ca_file`` is the base set. Gateway CA rotation adds and removes anchors at run time
(the ``addTrustedCertificate`` / ``removeTrustedCertificate`` methods); those changes live in
``state_dir/trust/`` so that ``/etc`` can stay read-only:

- ``trust/added/<sha256>.pem``: anchors added from the cloud;
- ``trust/removed.json``: fingerprints of configured anchors the cloud withdrew.

Every change is validated first and the old set is kept on any error. The last anchor is never removed:
a device without an anchor could not connect to receive the next fix.

Connecting needs only the PEM bundle, which the standard library's ``ssl`` checks; ``cryptography`` (about
8 MB resident) is imported only where a certificate's fields are read: listing, adding and removing anchors.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.identity.errors import TrustError
from agent.identity.secure_files import write_private

if TYPE_CHECKING:
    from cryptography import x509

MAX_PEM_BYTES = 64 * 1024
_PEM_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.S)


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


def _fingerprint(der: bytes) -> str:
    # Equal to cryptography's cert.fingerprint(SHA256()): both hash the DER encoding.
    return hashlib.sha256(der).hexdigest()


def certificates_der(text: str) -> list[bytes]:
    """The DER bytes of every PEM certificate in ``text``; ValueError when a block is not base64."""
    ders = []
    for body in _PEM_CERTIFICATE.findall(text):
        try:
            ders.append(base64.b64decode("".join(body.split()), validate=True))
        except binascii.Error:
            raise ValueError("a PEM certificate block is not valid base64") from None
    return ders


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
    from cryptography import x509

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


def _anchor(der: bytes, origin: str) -> Anchor:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    return Anchor(_fingerprint(der), cert.subject.rfc4514_string(), _not_after(cert).isoformat(), origin,
                  ssl.DER_cert_to_PEM_cert(der))


def _der(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return cert.public_bytes(Encoding.DER)


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

    def _configured(self) -> list[bytes]:
        if self.ca_file is None:
            return []
        fix = "point hub.ca_file at the PEM root CA of your hub or gateway"
        try:
            text = self.ca_file.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not text"
            raise TrustError(f"hub.ca_file {self.ca_file} cannot be read ({reason})", fix, kind="config") from None
        try:
            ders = certificates_der(text)
            if ders:
                # OpenSSL parses each certificate here, so a damaged file is named now, not by the SDK later.
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=b"".join(ders))
        except (ValueError, ssl.SSLError):
            ders = []
        if not ders:
            raise TrustError(f"hub.ca_file {self.ca_file} holds no PEM certificate", fix, kind="config")
        return ders

    def _added(self) -> list[bytes]:
        folder = self.dir / "added"
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.pem")):
            out.extend(certificates_der(path.read_text()))
        return out

    def _in_force(self) -> list[tuple[bytes, str]]:
        """DER and origin of every anchor in force, configured first, without duplicates or withdrawn ones."""
        removed = self._removed()
        seen: set[str] = set()
        out = []
        for der, origin in [(d, "config") for d in self._configured()] + [(d, "added") for d in self._added()]:
            fingerprint = _fingerprint(der)
            if fingerprint in removed or fingerprint in seen:
                continue
            seen.add(fingerprint)
            out.append((der, origin))
        return out

    def anchors(self) -> list[Anchor]:
        """Every anchor in force, configured first, without duplicates or withdrawn ones."""
        return [_anchor(der, origin) for der, origin in self._in_force()]

    def bundle(self) -> str | None:
        """PEM text of all anchors (the SDK's ``server_verification_cert``), or None for the system store."""
        in_force = self._in_force()
        if not in_force and self.ca_file is None:
            return None
        return "".join(ssl.DER_cert_to_PEM_cert(der) for der, _ in in_force)

    # -- changing --------------------------------------------------------------------------------------
    def add(self, pem: str, now: dt.datetime | None = None) -> list[Anchor]:
        """Validate and add the CA certificate(s) in ``pem``; nothing changes if any of them is invalid."""
        certs = parse_ca_pem(pem, now)
        added = [_anchor(_der(c), "added") for c in certs]
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

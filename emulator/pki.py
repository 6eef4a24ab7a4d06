"""A private PKI in a directory: root CA, intermediates, server and device certificates.

The hub emulator's TLS, the transparent gateway chain (root -> gateway CA -> gateway server certificate, the
shape of IoT Edge's device CA chain) and X.509 device identities all come from here. Keys are EC P-256
(fast to generate, so a first start stays well under a second) and written 0600; an existing certificate is
reused while it still names the same hosts and has more than a day left.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = "root-ca"
VALIDITY_DAYS = 365
_RENEW_BEFORE = datetime.timedelta(days=1)


def thumbprint(cert: x509.Certificate, algorithm: str = "sha1") -> str:
    """Upper-case hex fingerprint of the DER certificate, as IoT Hub's registry stores it."""
    algo = hashes.SHA1() if algorithm == "sha1" else hashes.SHA256()
    return cert.fingerprint(algo).hex().upper()


def write_secret(path: Path, data: bytes) -> None:
    """Write a file readable only by its owner (created 0600, never briefly world-readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


@dataclass
class Issued:
    """A certificate with its key and chain files."""

    name: str
    cert_path: Path          # the certificate alone
    key_path: Path           # its private key (0600)
    chain_path: Path         # the certificate followed by its intermediates (what a TLS server presents)
    certificate: x509.Certificate

    @property
    def pem(self) -> str:
        return self.cert_path.read_text()

    @property
    def thumbprint(self) -> str:
        return thumbprint(self.certificate)

    @property
    def thumbprint_sha256(self) -> str:
        return thumbprint(self.certificate, "sha256")


def _host_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


class Pki:
    """Certificates under ``directory``; ``now`` is injectable so tests can issue expired certificates."""

    def __init__(self, directory: str | os.PathLike, now: datetime.datetime | None = None) -> None:
        self.directory = Path(directory)
        self._now = now

    def now(self) -> datetime.datetime:
        return self._now or datetime.datetime.now(datetime.UTC)

    # files

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        return (self.directory / f"{name}.pem", self.directory / f"{name}.key.pem",
                self.directory / f"{name}.chain.pem")

    def load(self, name: str) -> Issued | None:
        cert_path, key_path, chain_path = self._paths(name)
        if not (cert_path.exists() and key_path.exists()):
            return None
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return Issued(name, cert_path, key_path, chain_path if chain_path.exists() else cert_path, cert)

    def _key(self, issued: Issued) -> ec.EllipticCurvePrivateKey:
        key = serialization.load_pem_private_key(issued.key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{issued.key_path}: expected an EC private key")
        return key

    def is_fresh(self, issued: Issued) -> bool:
        """The certificate is valid for more than another day."""
        return self._fresh(issued)

    def _fresh(self, issued: Issued | None, hosts: list[str] | None = None) -> bool:
        if issued is None or issued.certificate.not_valid_after_utc - self.now() < _RENEW_BEFORE:
            return False
        if hosts is not None:
            try:
                san = issued.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            except x509.ExtensionNotFound:
                return False
            if set(san) != set(_host_names(hosts)):
                return False
        return True

    def _issue(self, name: str, subject_cn: str, issuer: Issued | None, *, ca: bool, path_length: int | None = None,
               hosts: list[str] | None = None, client: bool = False, days: int = VALIDITY_DAYS,
               not_before: datetime.datetime | None = None) -> Issued:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
        signing_key = self._key(issuer) if issuer else key
        start = not_before or self.now() - datetime.timedelta(minutes=5)
        builder = (x509.CertificateBuilder()
                   .subject_name(subject)
                   .issuer_name(issuer.certificate.subject if issuer else subject)
                   .public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(start)
                   .not_valid_after(start + datetime.timedelta(days=days))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if issuer:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing_key.public_key()), critical=False)
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True)
        else:
            usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if hosts:
            builder = builder.add_extension(x509.SubjectAlternativeName(_host_names(hosts)), critical=False)
        cert = builder.sign(signing_key, hashes.SHA256())
        cert_path, key_path, chain_path = self._paths(name)
        write_secret(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
        pem = cert.public_bytes(serialization.Encoding.PEM)
        cert_path.write_bytes(pem)
        chain = pem
        if issuer and issuer.name != ROOT:
            chain += issuer.chain_path.read_bytes()
        chain_path.write_bytes(chain)
        return Issued(name, cert_path, key_path, chain_path, cert)

    # what callers ask for

    def root(self, common_name: str = "roost local root CA") -> Issued:
        """The root CA, created on first use."""
        existing = self.load(ROOT)
        if self._fresh(existing):
            return existing  # type: ignore[return-value]
        return self._issue(ROOT, common_name, None, ca=True, days=10 * VALIDITY_DAYS)

    def intermediate(self, name: str, common_name: str | None = None) -> Issued:
        """A CA issued by the root that may issue end-entity certificates only (path length 0)."""
        existing = self.load(name)
        if self._fresh(existing):
            return existing  # type: ignore[return-value]
        return self._issue(name, common_name or f"roost {name}", self.root(), ca=True, path_length=0)

    def server(self, name: str, hosts: list[str], issuer: Issued | None = None) -> Issued:
        """A TLS server certificate naming ``hosts`` (IP addresses or DNS names) in its SAN."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or IP address")
        existing = self.load(name)
        if self._fresh(existing, hosts):
            return existing  # type: ignore[return-value]
        return self._issue(name, hosts[0], issuer or self.root(), ca=False, hosts=hosts)

    def gateway(self, hosts: list[str]) -> Issued:
        """The transparent gateway's server certificate: root -> gateway CA -> gateway, naming ``hosts``."""
        return self.server("gateway", hosts, issuer=self.intermediate("gateway-ca", "roost gateway device CA"))

    def device(self, device_id: str, *, self_signed: bool = False, issuer: Issued | None = None,
               days: int = VALIDITY_DAYS, not_before: datetime.datetime | None = None) -> Issued:
        """An X.509 device identity (subject CN = device id), CA-signed by default, always newly issued."""
        name = f"device-{device_id}"
        if self_signed:
            return self._issue(name, device_id, None, ca=False, client=True, days=days, not_before=not_before)
        return self._issue(name, device_id, issuer or self.root(), ca=False, client=True, days=days,
                           not_before=not_before)

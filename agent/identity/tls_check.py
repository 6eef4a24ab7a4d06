"""Find out *why* a TLS connection to the hub or gateway is not trusted.

The SDK reports a failed handshake as an opaque connection error. This probe repeats the handshake with
the standard library and tells apart: unreachable, a chain that does not lead to the configured root CA
(wrong CA), a certificate valid for other names (hostname mismatch), an expired or not-yet-valid certificate.

A trusted certificate is described from what ``ssl`` already decoded; ``cryptography`` is imported only to
describe one the handshake rejected, so a gateway device that connects fine never loads it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

# OpenSSL X509_V_ERR_* codes the probe distinguishes.
_EXPIRED = 10
_NOT_YET_VALID = 9
_HOSTNAME_MISMATCH = 62


@dataclass(frozen=True)
class TlsProbe:
    """The outcome of one probe. ``kind`` is ok | unreachable | wrong-ca | hostname-mismatch | expired | tls."""

    host: str
    port: int
    kind: str
    detail: str
    fix: str = ""
    server_names: list[str] = field(default_factory=list)
    issuer: str = ""
    not_after: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"


def tcp_error(address: str, port: int, timeout: float) -> OSError | None:
    """None when a TCP connection to ``address:port`` opens within ``timeout``, else the reason it did not."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc


def _handshake(ctx: ssl.SSLContext, host: str, address: str, port: int, timeout: float, *,
               binary_form: bool = False) -> dict | bytes | None:
    """One TLS handshake with ``address:port`` presenting ``host`` (SNI); returns the peer certificate."""
    with socket.create_connection((address, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        return tls.getpeercert(binary_form=binary_form)


def _presented_certificate(host: str, port: int, address: str, timeout: float) -> x509.Certificate | None:
    """The server's certificate fetched without verification, only to describe it in errors."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        der = _handshake(ctx, host, address, port, timeout, binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    if not der:
        return None
    from cryptography import x509

    return x509.load_der_x509_certificate(der)


def _names(cert: x509.Certificate | None) -> list[str]:
    if cert is None:
        return []
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)]
    return [str(n) for n in san.get_values_for_type(x509.DNSName)] + \
        [str(n) for n in san.get_values_for_type(x509.IPAddress)]


# The attribute names ``ssl.getpeercert()`` uses, and their RFC 4514 short forms (as cryptography prints them).
_RFC4514_KEYS = {"commonName": "CN", "localityName": "L", "stateOrProvinceName": "ST", "organizationName": "O",
                 "organizationalUnitName": "OU", "countryName": "C", "streetAddress": "STREET",
                 "domainComponent": "DC", "userId": "UID"}


def _rfc4514_value(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if escaped.startswith(("#", " ")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and len(escaped) > 1:
        escaped = escaped[:-1] + "\\ "
    return escaped


def _decoded_issuer(decoded: dict) -> str:
    # getpeercert() lists the RDNs in certificate order; RFC 4514 writes them last first.
    rdns = ["+".join(f"{_RFC4514_KEYS.get(key, key)}={_rfc4514_value(value)}" for key, value in rdn)
            for rdn in decoded.get("issuer", ())]
    return ",".join(reversed(rdns))


def _decoded_names(decoded: dict) -> list[str]:
    san = decoded.get("subjectAltName", ())
    if not san:
        return [value for rdn in decoded.get("subject", ()) for key, value in rdn if key == "commonName"]
    # Same order as _names: DNS names first, then addresses (normalised: ssl spells IPv6 out in full).
    return [value for kind, value in san if kind == "DNS"] + \
        [str(ipaddress.ip_address(value.strip())) for kind, value in san if kind == "IP Address"]


def _decoded_not_after(decoded: dict) -> str:
    return dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(decoded["notAfter"]), dt.UTC).isoformat()


def probe_tls(host: str, port: int = 8883, ca_pem: str | None = None, *, address: str | None = None,
              timeout: float = 5.0) -> TlsProbe:
    """Handshake with ``host:port`` trusting only ``ca_pem`` (system store if None) and classify the result.

    ``address`` connects somewhere other than what ``host`` resolves to while still checking ``host``
    against the certificate (tests, and devices whose gateway name is not in DNS).
    """
    address = address or host
    if (exc := tcp_error(address, port, timeout)) is not None:
        return TlsProbe(host, port, "unreachable", f"cannot open TCP {address}:{port} ({exc})",
                        f"check that {host} resolves, is up, and that port {port} is open in every firewall between")

    ctx = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
    ctx.check_hostname = False   # first: only the chain, so a wrong CA and a wrong name are told apart
    where = "the configured root CA (hub.ca_file)" if ca_pem else "the system CA store"
    try:
        decoded = _handshake(ctx, host, address, port, timeout)
    except ssl.SSLCertVerificationError as exc:
        cert = _presented_certificate(host, port, address, timeout)
        issuer = cert.issuer.rfc4514_string() if cert else "unknown"
        if exc.verify_code == _EXPIRED:
            return TlsProbe(host, port, "expired", f"the certificate of {host} has expired",
                            "renew the gateway/hub server certificate, and check the device clock (roost doctor)",
                            _names(cert), issuer)
        if exc.verify_code == _NOT_YET_VALID:
            return TlsProbe(host, port, "expired", f"the certificate of {host} is not valid yet",
                            "the device clock is probably behind: enable time sync (timedatectl set-ntp true)",
                            _names(cert), issuer)
        return TlsProbe(host, port, "wrong-ca",
                        f"the certificate chain of {host}:{port} (issued by {issuer}) does not lead to {where}: "
                        f"{exc.verify_message}",
                        "set hub.ca_file to the root CA that issued the gateway's certificate chain "
                        "(IoT Edge: the 'trust_bundle_cert' / root CA of the edge device)",
                        _names(cert), issuer)
    except (ssl.SSLError, OSError) as exc:
        return TlsProbe(host, port, "tls", f"TLS handshake with {host}:{port} failed ({exc})",
                        f"check that {host}:{port} speaks TLS (MQTT over TLS on 8883)")

    names = _decoded_names(decoded)
    issuer = _decoded_issuer(decoded)
    not_after = _decoded_not_after(decoded)
    ctx.check_hostname = True
    try:
        _handshake(ctx, host, address, port, timeout)
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code == _HOSTNAME_MISMATCH or "match" in str(exc):
            return TlsProbe(host, port, "hostname-mismatch",
                            f"the certificate of {address}:{port} is for {', '.join(names) or 'no names'}, "
                            f"not {host!r}",
                            "set hub.gateway_hostname to a name in the certificate (IoT Edge: the 'hostname' in "
                            "its config.toml), or reissue the server certificate for this name",
                            names, issuer, not_after)
        return TlsProbe(host, port, "tls", f"{host}:{port} certificate rejected: {exc.verify_message}", "",
                        names, issuer, not_after)
    except (ssl.SSLError, OSError) as exc:
        return TlsProbe(host, port, "tls", f"TLS handshake with {host}:{port} failed ({exc})", "", names, issuer)
    return TlsProbe(host, port, "ok", f"{host}:{port} presents a chain to {where} valid for {host}", "",
                    names, issuer, not_after)

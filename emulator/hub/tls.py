"""Server TLS for the emulator: present a certificate chain, ask for (but do not judge) client certificates.

IoT Hub accepts any client certificate during the TLS handshake and decides afterwards, per device, whether
its thumbprint is registered (self-signed) or it chains to a trusted CA. Python's ``ssl`` module can only
require certificates that chain to its trust store, which would refuse every self-signed device before the
hub sees it. So the context gets an OpenSSL verify callback that accepts every presented certificate
(installed through ctypes on the context's ``SSL_CTX``), and :func:`check_client_chain` does the real check.
The callback is the only place that touches OpenSSL directly; :func:`accept_any_client_certificate` proves
it found the right ``SSL_CTX`` before installing anything and raises otherwise.
"""

from __future__ import annotations

import ctypes
import datetime
import ssl
import sys

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

_SSL_VERIFY_PEER = 0x01
_VERIFY_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)


@_VERIFY_CB
def _accept(preverify_ok: int, store_ctx: int) -> int:
    return 1


def _libssl() -> ctypes.CDLL:
    # dlsym on the _ssl extension's handle searches its dependencies: the very libssl Python uses.
    import _ssl

    return ctypes.CDLL(_ssl.__file__)


def accept_any_client_certificate(context: ssl.SSLContext) -> None:
    """Request a client certificate and accept whatever is presented (the hub checks it afterwards)."""
    lib = _libssl()
    lib.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
    lib.SSL_CTX_get_verify_mode.restype = ctypes.c_int
    lib.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VERIFY_CB]
    lib.SSL_CTX_set_verify.restype = None
    # PySSLContext starts with PyObject_HEAD, then the SSL_CTX pointer.
    head = sys.getsizeof(object())
    pointer = ctypes.c_void_p.from_address(id(context) + head).value
    context.verify_mode = ssl.CERT_OPTIONAL
    if not pointer or lib.SSL_CTX_get_verify_mode(pointer) != _SSL_VERIFY_PEER:
        raise RuntimeError("cannot locate OpenSSL's SSL_CTX in this Python build; X.509 device authentication "
                           "is unavailable (use SAS devices, or report the Python version)")
    context.verify_mode = ssl.CERT_NONE
    if lib.SSL_CTX_get_verify_mode(pointer) != 0:
        raise RuntimeError("SSL_CTX verify mode did not follow the Python context; refusing to patch it")
    lib.SSL_CTX_set_verify(pointer, _SSL_VERIFY_PEER, _accept)


def server_context(chain_path: str, key_path: str, *, client_certificates: bool = True) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``chain_path``; optionally asking for client certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(chain_path, key_path)
    if client_certificates:
        accept_any_client_certificate(context)
    return context


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> list[x509.Certificate]:
    """The client's certificate chain, leaf first (only the leaf before Python 3.13)."""
    if ssl_object is None:
        return []
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return []
    leaf = x509.load_der_x509_certificate(der)
    unverified = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    if unverified is None:
        return [leaf]
    try:
        chain = [x509.load_der_x509_certificate(c if isinstance(c, bytes) else c.public_bytes(ssl.ENCODING_DER))
                 for c in unverified() or [] if c is not None]
    except (AttributeError, ValueError):
        return [leaf]
    return chain if chain and chain[0] == leaf else [leaf, *chain]


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)  # type: ignore[arg-type]
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes,
                       ec.ECDSA(cert.signature_hash_algorithm))  # type: ignore[arg-type]
        else:
            cert.verify_directly_issued_by(issuer)
    except Exception:
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False


def check_validity(cert: x509.Certificate, now: datetime.datetime) -> str | None:
    if now < cert.not_valid_before_utc:
        return f"certificate {cert.subject.rfc4514_string()} is not valid before {cert.not_valid_before_utc}"
    if now > cert.not_valid_after_utc:
        return f"certificate {cert.subject.rfc4514_string()} expired at {cert.not_valid_after_utc}"
    return None


def check_client_chain(chain: list[x509.Certificate], trusted: list[x509.Certificate],
                       now: datetime.datetime) -> str | None:
    """None when ``chain[0]`` chains to one of ``trusted`` (through ``chain[1:]``); otherwise why not."""
    if not chain:
        return "no client certificate presented"
    for cert in chain:
        problem = check_validity(cert, now)
        if problem:
            return problem
    current = chain[0]
    pool = list(chain[1:])
    for _ in range(len(pool) + 1):
        for anchor in trusted:
            if _signed_by(current, anchor) and check_validity(anchor, now) is None:
                return None
        parent = next((c for c in pool if _is_ca(c) and _signed_by(current, c)), None)
        if parent is None:
            break
        pool.remove(parent)
        current = parent
    return f"certificate {chain[0].subject.rfc4514_string()} does not chain to a CA this hub trusts"

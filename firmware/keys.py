"""Signing keys: Ed25519 (default) and ECDSA P-256, PEM files, key ids and the trusted-key directory.

A key id is the first 16 bytes (hex) of SHA-256 over the public key's DER SubjectPublicKeyInfo, so the same key
has the same id on the build machine and on every device, whatever the file is called.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from firmware.errors import KeyFileError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    PublicKey = ed25519.Ed25519PublicKey | ec.EllipticCurvePublicKey

ALGORITHMS = ("ed25519", "ecdsa-p256")


def _asymmetric():
    """cryptography's key modules, loaded on first use.

    The daemon and every `roost` command import this module, but only signing and verifying need the
    library (about 8 MB resident): an agent that never installs an update never loads it.
    """
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    return ec, ed25519


def generate(algorithm: str = "ed25519") -> PrivateKey:
    """A new private key of ``algorithm`` ("ed25519" or "ecdsa-p256")."""
    ec, ed25519 = _asymmetric()
    if algorithm == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ecdsa-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise KeyFileError(f"unknown key algorithm {algorithm!r}; use one of: {', '.join(ALGORITHMS)}")


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    ec, ed25519 = _asymmetric()
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ecdsa-p256"
    raise KeyFileError(f"unsupported key type {type(key).__name__}; roost signs with Ed25519 or ECDSA P-256")


# The DER SubjectPublicKeyInfo of the two key types is a fixed prefix followed by the raw key. Decoding them
# here keeps cryptography's serialization package (about 2.5 MB resident) out of the device's install process;
# it is only loaded on the build machine, for private keys.
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")
_SPKI_P256 = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def key_id_of_der(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()[:32]


def public_der(key: PrivateKey | PublicKey) -> bytes:
    _, ed25519 = _asymmetric()
    public = key.public_key() if hasattr(key, "private_bytes") else key
    if isinstance(public, ed25519.Ed25519PublicKey):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        return _SPKI_ED25519 + public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    return public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def key_id(key: PrivateKey | PublicKey) -> str:
    return key_id_of_der(public_der(key))


def public_from_der(der: bytes, where: object) -> PublicKey:
    ec, ed25519 = _asymmetric()
    try:
        if len(der) == len(_SPKI_ED25519) + 32 and der.startswith(_SPKI_ED25519):
            return ed25519.Ed25519PublicKey.from_public_bytes(der[len(_SPKI_ED25519):])
        if len(der) == len(_SPKI_P256) + 65 and der.startswith(_SPKI_P256):
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), der[len(_SPKI_P256):])
    except ValueError as exc:
        raise KeyFileError(f"{where} holds a damaged public key ({exc})") from None
    raise KeyFileError(f"{where} is not an Ed25519 or ECDSA P-256 public key; roost verifies only those")


def _pem_body(data: bytes, label: bytes, where: object) -> bytes | None:
    begin, end = b"-----BEGIN " + label + b"-----", b"-----END " + label + b"-----"
    start = data.find(begin)
    stop = data.find(end, start + 1)
    if start < 0 or stop < 0:
        return None
    try:
        return base64.b64decode(b"".join(data[start + len(begin):stop].split()), validate=True)
    except binascii.Error:
        raise KeyFileError(f"{where} has a damaged PEM body") from None


def write_private(key: PrivateKey, path: Path) -> None:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, refusing to overwrite an existing file."""
    from cryptography.hazmat.primitives import serialization

    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    try:
        # O_EXCL: never clobber a key; the mode is set at creation so the secret is never world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; move it away or choose another name") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(path, 0o600)  # in case the umask or an ACL widened it


def write_public(key: PrivateKey | PublicKey, path: Path) -> None:
    body = base64.encodebytes(public_der(key)).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    pem = b"-----BEGIN PUBLIC KEY-----\n" + b"\n".join(lines) + b"\n-----END PUBLIC KEY-----\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise KeyFileError(f"{path} already exists; move it away or choose another name") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def load_private(path: Path) -> PrivateKey:
    from cryptography.hazmat.primitives import serialization

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read private key {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({exc}); "
                           "create one with `roost keys generate`") from None
    algorithm_of(key)
    return key  # type: ignore[return-value]


def load_public(path: Path) -> PublicKey:
    return _load_public_der(path)[0]


def _load_public_der(path: Path) -> tuple[PublicKey, bytes]:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    der = _pem_body(data, b"PUBLIC KEY", path)
    if der is None:
        raise KeyFileError(f"{path} is not a PEM public key (no BEGIN PUBLIC KEY block); export one with "
                           "`roost keys generate`")
    return public_from_der(der, path), der


def sign(key: PrivateKey, data: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    ec, ed25519 = _asymmetric()
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def verify(key: PublicKey, signature: bytes, data: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes

    ec, ed25519 = _asymmetric()
    try:
        if isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(signature, data)
        else:
            key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    algorithm: str
    public_key: PublicKey
    path: Path


def load_trusted(directory: Path) -> dict[str, TrustedKey]:
    """Every ``*.pem`` / ``*.pub`` public key in ``directory``, by key id.

    Rotation is a file operation: drop the new key's public half in, ship bundles signed by both keys, then
    remove the old one. A private key found here is an error, because it would mean the signing secret is
    sitting on the device.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise KeyFileError(f"trusted key directory {directory} does not exist; create it and copy the release "
                           "public keys (from `roost keys generate`) into it")
    trusted: dict[str, TrustedKey] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".pem", ".pub") or not path.is_file():
            continue
        if b"PRIVATE KEY" in path.read_bytes()[:200]:
            raise KeyFileError(f"{path} is a private key; only public keys belong in the trusted key directory")
        key, der = _load_public_der(path)
        kid = key_id_of_der(der)
        trusted[kid] = TrustedKey(kid, algorithm_of(key), key, path)
    return trusted

"""The bundle file: a fixed header, the signed manifest, a signature area, then the payload (docs/bundle-format.md).

    offset 0        8   magic b"ROOSTBDL"
    offset 8        4   manifest length M, big-endian (at most MAX_MANIFEST)
    offset 12       4   signature area length S, big-endian (at most MAX_SIGNATURE_AREA)
    offset 16       M   manifest, canonical JSON
    offset 16+M     S   signatures, JSON, padded with spaces; S is chosen so the payload starts 4 KiB aligned
    offset 16+M+S       payload: exactly image_size bytes, nothing after it

The signature area has a fixed size so that signing (on another machine, from the manifest alone) rewrites a
few KiB in place and never moves the payload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from firmware import keys
from firmware.errors import BundleFormatError, SignatureError
from firmware.manifest import DEFAULT_BLOCK_SIZE, Manifest, manifest_id

MAGIC = b"ROOSTBDL"
HEADER = struct.Struct(">8sII")
MAX_MANIFEST = 4 * 1024 * 1024          # 64 KiB blocks of a 16 GiB image fit; anything larger is an attack
MAX_SIGNATURE_AREA = 64 * 1024
MIN_SIGNATURE_AREA = 4096
ALIGN = 4096


@dataclass(frozen=True)
class Signature:
    key_id: str
    algorithm: str
    value: bytes

    def to_dict(self) -> dict:
        return {"keyid": self.key_id, "alg": self.algorithm, "sig": base64.b64encode(self.value).decode()}


@dataclass(frozen=True)
class Envelope:
    """What precedes the payload: the manifest bytes exactly as signed, and the signatures over them."""

    manifest_raw: bytes
    signatures: tuple[Signature, ...]
    signature_area: int

    @property
    def payload_offset(self) -> int:
        return HEADER.size + len(self.manifest_raw) + self.signature_area

    @property
    def manifest_id(self) -> str:
        return manifest_id(self.manifest_raw)


def signature_area_for(manifest_len: int) -> int:
    start = HEADER.size + manifest_len
    end = -(-(start + MIN_SIGNATURE_AREA) // ALIGN) * ALIGN
    return end - start


def encode_signatures(signatures: Iterable[Signature], area: int) -> bytes:
    body = json.dumps({"signatures": [s.to_dict() for s in signatures]}, sort_keys=True,
                      separators=(",", ":")).encode()
    if len(body) > area:
        raise SignatureError(f"{len(body)} bytes of signatures do not fit the bundle's {area}-byte signature area; "
                             "sign with fewer keys")
    return body.ljust(area, b" ")


def decode_signatures(raw: bytes) -> tuple[Signature, ...]:
    try:
        doc = json.loads(raw.rstrip(b" ") or b'{"signatures":[]}')
        entries = doc["signatures"]
        return tuple(Signature(str(e["keyid"]), str(e["alg"]), base64.b64decode(e["sig"], validate=True))
                     for e in entries)
    except (ValueError, KeyError, TypeError) as exc:
        raise BundleFormatError(f"the bundle's signature area is damaged ({type(exc).__name__}: {exc}); "
                                "re-sign it with `roost bundle sign`") from None


def read_envelope(read_at: Callable[[int, int], bytes]) -> Envelope:
    """Parse the header with ``read_at(offset, length)``, which must return exactly ``length`` bytes or fewer at EOF.

    Lengths are checked against the caps before anything that large is read, so a hostile header cannot make
    the device allocate or download more than MAX_MANIFEST + MAX_SIGNATURE_AREA bytes.
    """
    head = read_at(0, HEADER.size)
    if len(head) < HEADER.size:
        raise BundleFormatError(f"file is {len(head)} bytes long, too short for a roost bundle header")
    magic, m_len, s_len = HEADER.unpack(head)
    if magic != MAGIC:
        raise BundleFormatError("not a roost bundle (bad magic); build one with `roost bundle create`")
    if not 0 < m_len <= MAX_MANIFEST:
        raise BundleFormatError(f"manifest length {m_len} is outside 1..{MAX_MANIFEST} bytes; "
                                "the bundle is damaged or hostile")
    if not 0 <= s_len <= MAX_SIGNATURE_AREA:
        raise BundleFormatError(f"signature area length {s_len} exceeds {MAX_SIGNATURE_AREA} bytes; "
                                "the bundle is damaged or hostile")
    manifest_raw = read_at(HEADER.size, m_len)
    signatures = read_at(HEADER.size + m_len, s_len) if s_len else b""
    if len(manifest_raw) < m_len or len(signatures) < s_len:
        raise BundleFormatError("bundle ends inside its manifest or signature area (truncated)")
    return Envelope(manifest_raw, decode_signatures(signatures), s_len)


def verify_envelope(envelope: Envelope, trusted: dict[str, keys.TrustedKey], threshold: int = 1) -> Manifest:
    """Check that at least ``threshold`` distinct trusted keys signed the manifest, then parse it."""
    if threshold < 1:
        raise SignatureError("signature threshold must be at least 1; signature checks cannot be disabled")
    if not envelope.signatures:
        raise SignatureError("bundle is unsigned; sign it with `roost bundle sign BUNDLE --key KEY`")
    good: set[str] = set()
    unknown: list[str] = []
    bad: list[str] = []
    for sig in envelope.signatures:
        key = trusted.get(sig.key_id)
        if key is None:
            unknown.append(sig.key_id)
            continue
        if key.algorithm != sig.algorithm or not keys.verify(key.public_key, sig.value, envelope.manifest_raw):
            bad.append(sig.key_id)
            continue
        good.add(sig.key_id)
    if len(good) < threshold:
        parts = []
        if bad:
            parts.append(f"invalid signature from trusted key(s) {', '.join(bad)} (manifest altered after signing?)")
        if unknown:
            parts.append(f"signed by unknown key(s) {', '.join(unknown)}")
        parts.append(f"{len(good)} valid trusted signature(s), {threshold} required")
        hint = ("; trusted keys: " + ", ".join(sorted(trusted))) if trusted else "; the trusted key directory is empty"
        raise SignatureError("; ".join(parts) + hint)
    return Manifest.from_json(envelope.manifest_raw)


def build_manifest(image: Path, *, compatible: Iterable[str], version: str, security_version: int,
                   expires: datetime, block_size: int = DEFAULT_BLOCK_SIZE, golden: bool = False,
                   created: datetime | None = None, description: str = "") -> Manifest:
    """Hash ``image`` block by block into a manifest (one pass, constant memory)."""
    digests = bytearray()
    size = 0
    with open(image, "rb") as fh:
        while block := fh.read(block_size):
            digests += hashlib.sha256(block).digest()
            size += len(block)
    if size == 0:
        raise BundleFormatError(f"image {image} is empty")
    manifest = Manifest(compatible=tuple(compatible), version=version, security_version=security_version,
                        expires=expires, image_size=size, block_size=block_size, digests=bytes(digests),
                        golden=golden, created=created, description=description)
    Manifest.from_json(manifest.to_json())  # the same validation a device applies, at build time
    return manifest


def write_bundle(image: Path, manifest: Manifest, output: Path,
                 signers: Iterable[keys.PrivateKey] = ()) -> Envelope:
    """Write ``output`` = header + manifest + signatures (possibly none yet) + a copy of ``image``."""
    raw = manifest.to_json()
    if len(raw) > MAX_MANIFEST:
        raise BundleFormatError(f"manifest is {len(raw)} bytes, over the {MAX_MANIFEST}-byte limit; "
                                "use a larger --block-size")
    area = signature_area_for(len(raw))
    signatures = tuple(sign_manifest(raw, key) for key in signers)
    tmp = output.with_name(output.name + ".tmp")
    with open(image, "rb") as src, open(tmp, "wb") as dst:
        dst.write(HEADER.pack(MAGIC, len(raw), area))
        dst.write(raw)
        dst.write(encode_signatures(signatures, area))
        copied = 0
        while chunk := src.read(1024 * 1024):
            dst.write(chunk)
            copied += len(chunk)
        if copied != manifest.image_size:
            raise BundleFormatError(f"image {image} changed while the bundle was built; build it again")
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, output)
    return Envelope(raw, signatures, area)


def sign_manifest(manifest_raw: bytes, key: keys.PrivateKey) -> Signature:
    return Signature(keys.key_id(key), keys.algorithm_of(key), keys.sign(key, manifest_raw))


def read_bundle_envelope(path: Path) -> Envelope:
    with open(path, "rb") as fh:
        def read_at(offset: int, length: int) -> bytes:
            fh.seek(offset)
            return fh.read(length)
        return read_envelope(read_at)


def add_signatures(path: Path, new: Iterable[Signature]) -> Envelope:
    """Add signatures to a bundle in place (replacing any earlier one by the same key); the payload is untouched."""
    envelope = read_bundle_envelope(path)
    merged = {s.key_id: s for s in envelope.signatures}
    merged.update({s.key_id: s for s in new})
    area = encode_signatures(merged.values(), envelope.signature_area)
    with open(path, "r+b") as fh:
        fh.seek(HEADER.size + len(envelope.manifest_raw))
        fh.write(area)
        fh.flush()
        os.fsync(fh.fileno())
    return Envelope(envelope.manifest_raw, tuple(merged.values()), envelope.signature_area)


def signature_file(signature: Signature, manifest_raw: bytes) -> bytes:
    """A detached signature, as `roost bundle sign --manifest` writes it on the signing machine."""
    doc = signature.to_dict() | {"manifest_sha256": hashlib.sha256(manifest_raw).hexdigest()}
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


def read_signature_file(data: bytes, manifest_raw: bytes) -> Signature:
    try:
        doc = json.loads(data)
        sig = Signature(str(doc["keyid"]), str(doc["alg"]), base64.b64decode(doc["sig"], validate=True))
        digest = doc["manifest_sha256"]
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureError(f"not a roost detached signature file ({type(exc).__name__}: {exc})") from None
    if digest != hashlib.sha256(manifest_raw).hexdigest():
        raise SignatureError("this signature was made over a different manifest than the bundle's; export the "
                             "bundle's manifest with `roost bundle inspect --manifest-out` and sign that")
    return sig

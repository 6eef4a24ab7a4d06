"""The signed manifest: what an image is, which boards take it, and the SHA-256 of every block of it.

It travels as canonical JSON (sorted keys, no spaces) and is signed as the exact bytes stored in the bundle.
It is parsed only after a trusted signature over those bytes has been checked.
"""

from __future__ import annotations

import binascii
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from firmware.errors import BundleFormatError

FORMAT_VERSION = 1
MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 16 * 1024 * 1024
DEFAULT_BLOCK_SIZE = 64 * 1024
_HEX = re.compile(r"\A[0-9a-f]*\Z")
_HEX_BYTES = re.compile(rb"\A[0-9a-f]*\Z")
_BLOCKS_KEY = b'"blocks":"'


def _load_json(raw: bytes) -> dict:
    """json.loads, except that the block list (most of a large manifest) is cut out of the text first and kept
    as bytes: parsing it as a JSON string would hold two more copies of it at once on the device."""
    start = raw.find(_BLOCKS_KEY)
    end = raw.find(b'"', start + len(_BLOCKS_KEY)) if start >= 0 else -1
    carved = None
    if end > 0:
        carved = memoryview(raw)[start + len(_BLOCKS_KEY):end]     # a view: no copy of the block list
        text = raw[:start] + b'"blocks":""' + raw[end + 1:]
    else:
        text = raw
    try:
        doc = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleFormatError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BundleFormatError("manifest must be a JSON object")
    if carved is not None:
        if doc.get("blocks") != "" or not _HEX_BYTES.match(carved):
            return _load_json_plain(raw)   # the key was not where a canonical manifest has it: parse normally
        doc["blocks"] = carved
    return doc


def _load_json_plain(raw: bytes) -> dict:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleFormatError(f"manifest is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BundleFormatError("manifest must be a JSON object")
    return doc
_BOARD = re.compile(r"\A[a-z0-9][a-z0-9._-]{0,63}\Z")


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str, what: str) -> datetime:
    try:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        raise BundleFormatError(f"manifest field {what!r} must be a UTC time like 2027-01-31T00:00:00Z, "
                                f"got {text!r}") from None
    return moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Manifest:
    compatible: tuple[str, ...]
    version: str
    security_version: int
    expires: datetime
    image_size: int
    block_size: int
    digests: bytes = field(repr=False)     # SHA-256 of block i at digests[32*i:32*i+32]
    golden: bool = False
    created: datetime | None = None
    description: str = ""
    format: int = FORMAT_VERSION

    @property
    def block_count(self) -> int:
        return -(-self.image_size // self.block_size)

    def digest(self, index: int) -> bytes:
        return self.digests[32 * index:32 * index + 32]

    def block_length(self, index: int) -> int:
        return min(self.block_size, self.image_size - index * self.block_size)

    def to_json(self) -> bytes:
        """Canonical bytes: the same manifest always serialises to the same bytes, so it can be re-signed."""
        doc = {
            "format": self.format,
            "compatible": list(self.compatible),
            "version": self.version,
            "security_version": self.security_version,
            "expires": format_time(self.expires),
            "image_size": self.image_size,
            "block_size": self.block_size,
            "blocks": self.digests.hex(),
            "golden": self.golden,
            "description": self.description,
        }
        if self.created is not None:
            doc["created"] = format_time(self.created)
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    def summary(self) -> dict:
        """The manifest without its block list, for `inspect` and status output."""
        return {
            "format": self.format, "compatible": list(self.compatible), "version": self.version,
            "security_version": self.security_version, "expires": format_time(self.expires),
            "image_size": self.image_size, "block_size": self.block_size, "blocks": self.block_count,
            "golden": self.golden, "description": self.description,
            "created": format_time(self.created) if self.created else None,
        }

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        doc = _load_json(raw)
        fmt = doc.get("format")
        if fmt != FORMAT_VERSION:
            raise BundleFormatError(f"manifest format {fmt!r} is not supported by this roost (it reads format "
                                    f"{FORMAT_VERSION}); update roost first")
        compatible = doc.get("compatible")
        if (not isinstance(compatible, list) or not compatible
                or not all(isinstance(b, str) and _BOARD.match(b) for b in compatible)):
            raise BundleFormatError("manifest 'compatible' must be a non-empty list of board names like 'rpi-4b'")
        version = doc.get("version")
        if not isinstance(version, str) or not 0 < len(version) <= 64:
            raise BundleFormatError("manifest 'version' must be a string of 1 to 64 characters")
        sv = doc.get("security_version")
        if not isinstance(sv, int) or isinstance(sv, bool) or not 0 <= sv < 2**31:
            raise BundleFormatError("manifest 'security_version' must be an integer from 0 to 2^31-1")
        size = doc.get("image_size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise BundleFormatError("manifest 'image_size' must be a positive integer")
        block = doc.get("block_size")
        if (not isinstance(block, int) or isinstance(block, bool) or not MIN_BLOCK_SIZE <= block <= MAX_BLOCK_SIZE
                or block & (block - 1)):
            raise BundleFormatError(f"manifest 'block_size' must be a power of two from {MIN_BLOCK_SIZE} to "
                                    f"{MAX_BLOCK_SIZE}")
        # one hex string of 64 characters per block: a list of 16384 strings (a 1 GiB image) would cost the
        # device several MB of Python objects while parsing
        blocks = doc.get("blocks")
        expected = -(-size // block)
        if not isinstance(blocks, str | memoryview) or len(blocks) != 64 * expected:
            held = len(blocks) // 64 if isinstance(blocks, str | memoryview) else "no"
            raise BundleFormatError(f"manifest 'blocks' holds {held} block hashes but image_size/block_size needs "
                                    f"{expected}")
        if not (_HEX_BYTES if isinstance(blocks, memoryview) else _HEX).match(blocks):
            raise BundleFormatError("manifest 'blocks' must be lowercase hex: the SHA-256 of each block, concatenated")
        golden = doc.get("golden", False)
        description = doc.get("description", "")
        if not isinstance(golden, bool) or not isinstance(description, str):
            raise BundleFormatError("manifest 'golden' must be true/false and 'description' a string")
        created = doc.get("created")
        digests = binascii.unhexlify(blocks)
        del doc["blocks"], blocks
        return cls(
            compatible=tuple(compatible), version=version, security_version=sv,
            expires=parse_time(doc.get("expires"), "expires"), image_size=size, block_size=block,
            digests=digests, golden=golden,
            created=parse_time(created, "created") if created is not None else None, description=description,
        )


def manifest_id(raw: bytes) -> str:
    """A short stable name for a manifest (what the state file remembers about installed and failed bundles)."""
    return hashlib.sha256(raw).hexdigest()[:32]

"""Slot disks for the emulated board: preallocated files, and self-describing test images.

An emulated image starts with a 512-byte header (magic, version, size, SHA-256 of the body, a "healthy" flag)
so the emulated boot ROM can tell a complete image from a torn one, and the emulated system inside it knows
whether its health checks should pass. Bodies are deterministic pseudo-random bytes, seeded by the version.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

IMAGE_MAGIC = b"ROOSTIMG"
HEADER_SIZE = 512
SLOT_NAMES = ("a", "b", "golden")


def make_image(version: str, size: int, *, healthy: bool = True, seed: int | None = None) -> bytes:
    """An image of exactly ``size`` bytes that the emulated ROM will boot (``healthy`` drives its health probe)."""
    if size <= HEADER_SIZE:
        raise ValueError(f"an emulated image needs more than {HEADER_SIZE} bytes")
    body = random.Random(seed if seed is not None else version).randbytes(size - HEADER_SIZE)
    return image_header(version, body, healthy) + body


def image_header(version: str, body: bytes, healthy: bool = True) -> bytes:
    doc = {"version": version, "size": len(body), "sha256": hashlib.sha256(body).hexdigest(), "healthy": healthy}
    return (IMAGE_MAGIC + json.dumps(doc, sort_keys=True).encode()).ljust(HEADER_SIZE, b"\0")


def with_changed_blocks(image: bytes, block_size: int, fraction: float, version: str, seed: int = 1) -> bytes:
    """A new version of ``image`` in which ``fraction`` of the blocks after the header differ (for delta tests)."""
    body = bytearray(image[HEADER_SIZE:])
    rng = random.Random(seed)
    first = -(-HEADER_SIZE // block_size)
    blocks = range(first, -(-len(image) // block_size))
    for index in rng.sample(list(blocks), max(1, int(len(blocks) * fraction))):
        start = index * block_size - HEADER_SIZE
        end = min(start + block_size, len(body))
        body[start:end] = rng.randbytes(end - start)
    old = json.loads(image[len(IMAGE_MAGIC):HEADER_SIZE].rstrip(b"\0"))
    return image_header(version, bytes(body), old["healthy"]) + bytes(body)


def image_info(path: Path) -> dict | None:
    """The header of a complete, intact image in ``path``; None for garbage or a torn write."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(HEADER_SIZE)
            if not head.startswith(IMAGE_MAGIC):
                return None
            doc = json.loads(head[len(IMAGE_MAGIC):].rstrip(b"\0"))
            digest = hashlib.sha256()
            remaining = int(doc["size"])
            while remaining:
                chunk = fh.read(min(1 << 20, remaining))
                if not chunk:
                    return None
                digest.update(chunk)
                remaining -= len(chunk)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc if digest.hexdigest() == doc["sha256"] else None


def create_slot_file(path: Path, size: int, content: bytes = b"") -> Path:
    """A slot file of ``size`` bytes, allocated up front like a partition, starting with ``content``."""
    with open(path, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, size)
        if content:
            fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def create_slot_disks(directory: Path, size: int, images: dict[str, bytes]) -> dict[str, Path]:
    """Slot files a, b and golden in ``directory``; ``images`` gives the initial content of some of them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    return {name: create_slot_file(directory / f"slot-{name}.img", size, images.get(name, b""))
            for name in SLOT_NAMES}

"""Stream a payload into a slot, verifying every block against the signed manifest before it is written.

No unverified byte reaches a slot: a block is read into a buffer, hashed, compared with the manifest, and only
then written. With ``reuse`` (URL installs) a block the target slot already holds is skipped (this is what makes
an interrupted download resume after a reboot), a block the active slot holds is copied locally, and only the
rest is fetched, in runs of consecutive blocks, with HTTP Range.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from firmware.durable import Storage
from firmware.errors import PayloadError
from firmware.manifest import Manifest
from firmware.slots import Slot

Progress = Callable[[int, int], None]    # (bytes done, image size)
CHUNK = 1024 * 1024                      # read and write size; verification stays per block
sha256 = hashlib.sha256


@dataclass
class InstallStats:
    blocks_fetched: int = 0
    blocks_copied: int = 0
    blocks_present: int = 0
    bytes_written: int = 0


def _tampered(index: int, manifest: Manifest, written: bool = True) -> PayloadError:
    start = index * manifest.block_size
    outcome = ("Nothing was written" if not written else
               "The block was not written; the running slot and the boot selection are untouched")
    return PayloadError(f"block {index} (bytes {start}..{start + manifest.block_length(index) - 1} of the image) does "
                        "not match the signed manifest: the payload was tampered with, or a manifest was paired with "
                        f"another bundle's payload. {outcome}")


def _index_slot(path: Path, manifest: Manifest, limit: int, wanted: set[bytes]) -> dict[bytes, int]:
    """Map digest -> offset for the blocks of a local slot that the new image needs (same block size)."""
    index: dict[bytes, int] = {}
    bs = manifest.block_size
    try:
        with open(path, "rb", buffering=0) as fh:
            offset = 0
            while offset < limit:
                block = fh.read(min(bs, limit - offset))
                if not block:
                    break
                digest = sha256(block).digest()
                if digest in wanted:
                    index.setdefault(digest, offset)
                offset += len(block)
    except OSError:
        return {}   # an unreadable active slot only costs download volume
    return index


def verify_payload(source, payload_offset: int, manifest: Manifest) -> None:
    """Hash every block of the payload against the manifest without writing anything (verify_first)."""
    hasher = BlockHasher()
    bs = manifest.block_size
    index = 0
    try:
        for chunk in source.chunks(payload_offset, manifest.image_size, max(1, CHUNK // bs) * bs):
            for digest in hasher.digests(chunk, bs):
                if digest != manifest.digest(index):
                    raise _tampered(index, manifest, written=False)
                index += 1
    finally:
        hasher.close()


def write_payload(source, payload_offset: int, manifest: Manifest, slot: Slot, storage: Storage, *,
                  reuse: Iterable[Path] = (), resume: bool = False, progress: Progress | None = None) -> InstallStats:
    """Fill ``slot`` with the image described by ``manifest``; raise PayloadError at the first bad block."""
    stats = InstallStats()
    bs = manifest.block_size
    label = f"slot {slot.name}"
    fd = slot.open_for_write()
    hasher = BlockHasher()
    try:
        reuse = list(reuse)
        missing = list(range(manifest.block_count))
        if reuse or resume:
            missing = _fill_locally(fd, manifest, reuse, storage, label, stats)
        # read what is left in runs of consecutive blocks (one Range request per run over HTTP), in chunks of
        # whole blocks: every block of a chunk is verified before the chunk is written
        done = manifest.block_count - len(missing)
        per_chunk = max(1, CHUNK // bs)
        run_start = 0
        while run_start < len(missing):
            run_end = run_start
            while run_end + 1 < len(missing) and missing[run_end + 1] == missing[run_end] + 1:
                run_end += 1
            first, last = missing[run_start], missing[run_end]
            length = (last - first) * bs + manifest.block_length(last)
            index = first
            for chunk in source.chunks(payload_offset + first * bs, length, per_chunk * bs):
                chunk_first = index
                for offset, digest in enumerate(hasher.digests(chunk, bs)):
                    if digest != manifest.digest(chunk_first + offset):
                        raise _tampered(chunk_first + offset, manifest)
                index = chunk_first + -(-len(chunk) // bs)
                storage.pwrite_blocks(fd, chunk, chunk_first * bs, bs, label)
                count = index - chunk_first
                stats.blocks_fetched += count
                stats.bytes_written += len(chunk)
                done += count
                if progress is not None:
                    progress(min(done * bs, manifest.image_size), manifest.image_size)
            run_start = run_end + 1
        storage.fsync(fd, label)
    finally:
        hasher.close()
        os.close(fd)
    return stats


class BlockHasher:
    """SHA-256 of each block of a chunk. hashlib releases the GIL on large buffers, so the second half of a
    chunk is hashed on a helper thread while this thread hashes the first: on two or more cores the check that
    makes verify-before-write safe costs about half of its single-core time."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="roost-hash") if (os.cpu_count() or 1) > 1 else None

    @staticmethod
    def _hash(chunk: memoryview, block_size: int) -> list[bytes]:
        return [sha256(chunk[start:start + block_size]).digest() for start in range(0, len(chunk), block_size)]

    def digests(self, chunk: memoryview, block_size: int) -> list[bytes]:
        blocks = -(-len(chunk) // block_size)
        if self._pool is None or blocks < 4:
            return self._hash(chunk, block_size)
        split = (blocks // 2) * block_size
        second = self._pool.submit(self._hash, chunk[split:], block_size)
        return self._hash(chunk[:split], block_size) + second.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)


def _fill_locally(fd: int, manifest: Manifest, reuse: list[Path], storage: Storage, label: str,
                  stats: InstallStats) -> list[int]:
    """Skip blocks the target already holds, copy those another local slot holds; return the indices left."""
    bs = manifest.block_size
    wanted = {manifest.digest(i) for i in range(manifest.block_count)}
    sources: list[tuple[Path, dict[bytes, int]]] = []
    for path in reuse:
        found = _index_slot(path, manifest, manifest.image_size + bs * 16, wanted)
        if found:
            sources.append((path, found))
    missing = []
    handles = {path: os.open(path, os.O_RDONLY) for path, _ in sources}
    try:
        for i in range(manifest.block_count):
            digest, length, offset = manifest.digest(i), manifest.block_length(i), i * bs
            current = os.pread(fd, length, offset)
            if hashlib.sha256(current).digest() == digest:
                stats.blocks_present += 1
                continue
            for path, found in sources:
                if digest in found:
                    block = os.pread(handles[path], length, found[digest])
                    if hashlib.sha256(block).digest() == digest:   # re-check: the index may be stale
                        storage.pwrite(fd, block, offset, label)
                        stats.blocks_copied += 1
                        stats.bytes_written += length
                        break
            else:
                missing.append(i)
    finally:
        for handle in handles.values():
            os.close(handle)
    return missing

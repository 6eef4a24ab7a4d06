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
from dataclasses import dataclass
from pathlib import Path

from firmware.durable import Storage
from firmware.errors import PayloadError
from firmware.manifest import Manifest
from firmware.slots import Slot

Progress = Callable[[int, int], None]    # (bytes done, image size)


@dataclass
class InstallStats:
    blocks_fetched: int = 0
    blocks_copied: int = 0
    blocks_present: int = 0
    bytes_written: int = 0


def _tampered(index: int, manifest: Manifest) -> PayloadError:
    start = index * manifest.block_size
    return PayloadError(f"block {index} (bytes {start}..{start + manifest.block_length(index) - 1} of the image) does "
                        "not match the signed manifest: the payload was tampered with, or a manifest was paired with "
                        "another bundle's payload. The block was not written; the running slot is untouched")


def _index_slot(path: Path, manifest: Manifest, limit: int) -> dict[bytes, int]:
    """Map block digest -> offset for the blocks of a local slot (same block size as the manifest)."""
    index: dict[bytes, int] = {}
    bs = manifest.block_size
    try:
        with open(path, "rb", buffering=0) as fh:
            offset = 0
            while offset < limit:
                block = fh.read(min(bs, limit - offset))
                if not block:
                    break
                index.setdefault(hashlib.sha256(block).digest(), offset)
                offset += len(block)
    except OSError:
        return {}   # an unreadable active slot only costs download volume
    return index


def write_payload(source, payload_offset: int, manifest: Manifest, slot: Slot, storage: Storage, *,
                  reuse: Iterable[Path] = (), resume: bool = False, progress: Progress | None = None) -> InstallStats:
    """Fill ``slot`` with the image described by ``manifest``; raise PayloadError at the first bad block."""
    stats = InstallStats()
    bs = manifest.block_size
    label = f"slot {slot.name}"
    fd = slot.open_for_write()
    try:
        reuse = list(reuse)
        missing = list(range(manifest.block_count))
        if reuse or resume:
            missing = _fill_locally(fd, manifest, reuse, storage, label, stats)
        # fetch what is left in runs of consecutive blocks: one Range request per run
        done = (manifest.block_count - len(missing))
        run_start = 0
        while run_start < len(missing):
            run_end = run_start
            while run_end + 1 < len(missing) and missing[run_end + 1] == missing[run_end] + 1:
                run_end += 1
            first, last = missing[run_start], missing[run_end]
            length = (last - first) * bs + manifest.block_length(last)
            index = first
            for block in source.blocks(payload_offset + first * bs, length, bs):
                if hashlib.sha256(block).digest() != manifest.digest(index):
                    raise _tampered(index, manifest)
                storage.pwrite(fd, block, index * bs, label)
                stats.blocks_fetched += 1
                stats.bytes_written += len(block)
                index += 1
                done += 1
                if progress is not None:
                    progress(min(done * bs, manifest.image_size), manifest.image_size)
            run_start = run_end + 1
        storage.fsync(fd, label)
    finally:
        os.close(fd)
    return stats


def _fill_locally(fd: int, manifest: Manifest, reuse: list[Path], storage: Storage, label: str,
                  stats: InstallStats) -> list[int]:
    """Skip blocks the target already holds, copy those another local slot holds; return the indices left."""
    bs = manifest.block_size
    wanted = {manifest.digest(i) for i in range(manifest.block_count)}
    sources: list[tuple[Path, dict[bytes, int]]] = []
    for path in reuse:
        found = {d: off for d, off in _index_slot(path, manifest, manifest.image_size + bs * 16).items() if d in wanted}
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

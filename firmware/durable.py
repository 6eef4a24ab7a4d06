"""Every write the updater makes to persistent storage goes through :class:`Storage`.

One place means one rule (write, fsync, atomic rename, fsync the directory) and one seam: an optional write
hook is called before each durable operation with its kind and target. The power-cut tests install a hook that
stops the process at the k-th operation, for every k, and then boot the emulated board from what is on disk.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from firmware.errors import BootError, SlotError

WriteHook = Callable[[str, str], None]   # (operation, target) -> None; may raise to simulate a power cut


class Storage:
    def __init__(self, hook: WriteHook | None = None) -> None:
        self.hook = hook

    def _point(self, operation: str, target: object) -> None:
        if self.hook is not None:
            self.hook(operation, str(target))

    def atomic_write(self, path: Path, data: bytes, mode: int = 0o644) -> None:
        """Replace ``path`` with ``data`` so that after a power cut it holds either the old or the new bytes."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        self._point("write", tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self._point("fsync", tmp)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._point("rename", path)
        os.replace(tmp, path)
        self.fsync_dir(path.parent)

    def fsync_dir(self, directory: Path) -> None:
        self._point("fsync", directory)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        except OSError as exc:
            # vfat and some FUSE file systems refuse fsync on a directory; the rename is as durable as they allow
            if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
                raise
        finally:
            os.close(fd)

    def pwrite(self, fd: int, data: bytes | memoryview, offset: int, target: str) -> None:
        self._point("write", f"{target}@{offset}")
        self._write_all(fd, memoryview(data), offset, target)

    def pwrite_blocks(self, fd: int, data: memoryview, offset: int, block_size: int, target: str) -> None:
        """Write whole blocks with one system call, yet with one write point per block: if the hook stops the
        process before block j, blocks before j are written and nothing from j on, exactly as block writes."""
        if self.hook is not None:
            for start in range(0, len(data), block_size):
                try:
                    self._point("write", f"{target}@{offset + start}")
                except BaseException:
                    if start:
                        self._write_all(fd, data[:start], offset, target)
                    raise
        self._write_all(fd, data, offset, target)

    def _write_all(self, fd: int, data: memoryview, offset: int, target: str) -> None:
        view = memoryview(data)
        while view:
            try:
                done = os.pwrite(fd, view, offset)
            except OSError as exc:
                raise slot_error(exc, target) from None
            view = view[done:]
            offset += done

    def fsync(self, fd: int, target: str) -> None:
        self._point("fsync", target)
        try:
            os.fsync(fd)
        except OSError as exc:
            raise slot_error(exc, target) from None

    def run(self, argv: Sequence[str], target: str, timeout: float = 30.0) -> str:
        """Run a tool that writes persistent state (fw_setenv); a non-zero exit is a BootError with its stderr."""
        self._point("exec", target)
        try:
            done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BootError(f"could not run {argv[0]}: {exc}") from None
        if done.returncode != 0:
            raise BootError(f"{' '.join(argv)} failed with exit code {done.returncode}: {done.stderr.strip()}")
        return done.stdout


def slot_error(exc: OSError, target: str) -> SlotError:
    if exc.errno == errno.ENOSPC:
        return SlotError(f"no space left while writing {target}; the slot (or the disk holding the slot file) "
                         "is full. Free space or give the slot its full size; nothing was switched")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return SlotError(f"cannot write {target}: {exc.strerror}; the slot is read-only or not writable by this "
                         "user. Nothing was switched")
    return SlotError(f"writing {target} failed: {exc.strerror} (errno {exc.errno}); nothing was switched")

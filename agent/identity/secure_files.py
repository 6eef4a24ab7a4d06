"""Small file helpers for secrets and state: atomic writes, 0600 from the first byte."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` atomically with mode 0600 (never world-readable, not even briefly)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    raw = data.encode() if isinstance(data, str) else data
    # O_EXCL with a random name is what tempfile.mkstemp does; done here because tempfile pulls in shutil,
    # bz2 and lzma, which the running agent otherwise never needs.
    tmp = path.parent / f".{path.name}.{os.urandom(6).hex()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)   # whatever the umask
        with os.fdopen(fd, "wb") as out:
            out.write(raw)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename is durable only once the directory entry is on disk.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_text(path: str | Path, what: str, fix: str) -> str:
    """Read a configured file, turning OS errors into one sentence with the path and a fix."""
    from agent.identity.errors import ConfigurationError

    try:
        return Path(path).read_text()
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path} does not exist", fix) from None
    except PermissionError:
        raise ConfigurationError(
            f"{what} {path} is not readable by this user",
            "make it owned by the agent user (roost) with mode 0600",
        ) from None
    except IsADirectoryError:
        raise ConfigurationError(f"{what} {path} is a directory, not a file", fix) from None

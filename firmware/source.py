"""Where a bundle comes from: a local file or an HTTP(S) URL read with Range requests.

Both give the installer the same three things: ``read_at`` for the bounded header, ``total_size`` for the
up-front length check, and ``blocks`` to stream part of the payload one block at a time into a reused buffer.
The HTTP source adds what peers lack: every request has a timeout, the total number of bytes read is capped by
what the signed manifest accounts for, a dropped connection resumes with Range from the last byte received,
and a server that ignores Range, sends more than asked or trickles below a minimum rate is refused.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from firmware.errors import BundleFormatError, DownloadError

MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"\Abytes (\d+)-(\d+)/(\d+|\*)\Z")


class FileSource:
    def __init__(self, path: Path) -> None:
        self.location = str(path)
        try:
            self._fh = open(path, "rb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise BundleFormatError(f"cannot open bundle {path}: {exc.strerror}") from None
        self.total_size: int | None = os.fstat(self._fh.fileno()).st_size
        self.bytes_read = 0

    def limit(self, cap: int) -> None:
        """Files are bounded by their size, checked up front; nothing to cap."""

    def read_at(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fh.fileno(), length, offset)
        self.bytes_read += len(data)
        return data

    def blocks(self, offset: int, length: int, block_size: int) -> Iterator[memoryview]:
        buf = bytearray(block_size)
        view = memoryview(buf)
        self._fh.seek(offset)
        remaining = length
        while remaining:
            want = min(block_size, remaining)
            got = self._fh.readinto(view[:want])
            while got and got < want:          # a short read is not EOF; keep filling the block
                more = self._fh.readinto(view[got:want])
                if not more:
                    break
                got += more
            if got < want:
                raise BundleFormatError(f"bundle {self.location} ends {remaining - got} bytes early (truncated)")
            self.bytes_read += got
            remaining -= got
            yield view[:want]

    def chunks(self, offset: int, length: int, chunk_size: int, buffers: int = 1) -> Iterator[memoryview]:
        """Like blocks() with bigger reads: each view stays valid until ``buffers`` more have been taken."""
        pool = [memoryview(bytearray(chunk_size)) for _ in range(buffers)]
        self._fh.seek(offset)
        remaining, turn = length, 0
        while remaining:
            view = pool[turn % buffers]
            turn += 1
            want = min(chunk_size, remaining)
            got = 0
            while got < want:
                n = self._fh.readinto(view[got:want])
                if not n:
                    raise BundleFormatError(f"bundle {self.location} ends {remaining - got} bytes early (truncated)")
                got += n
            self.bytes_read += got
            remaining -= got
            yield view[:want]

    def close(self) -> None:
        self._fh.close()


class HttpSource:
    def __init__(self, url: str, *, timeout: float = 30.0, retries: int = 5, min_rate: float = 4096.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 ssl_context: object | None = None) -> None:
        # imported here: http.client pulls in ssl (about 5 MB resident), which file installs never need
        import http.client
        import urllib.parse

        self._http = http.client
        self._urllib = urllib.parse
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DownloadError(f"{url!r} is not an http(s) URL")
        self.location = url
        self._parts = parts
        self.ssl_context = ssl_context     # None: the system trust store; pass one for a private CA
        self.timeout = timeout
        self.retries = retries
        self.min_rate = min_rate
        self.clock = clock
        self.sleep = sleep
        self.cap: int | None = None
        self.bytes_read = 0
        self.requests = 0
        self.total_size: int | None = None

    def limit(self, cap: int) -> None:
        """Never read more than ``cap`` bytes in total (header, manifest, payload and any resumed parts)."""
        self.cap = cap

    def _connect(self):
        host, port = self._parts.hostname, self._parts.port
        if self._parts.scheme == "https":
            return self._http.HTTPSConnection(host, port, timeout=self.timeout, context=self.ssl_context)
        return self._http.HTTPConnection(host, port, timeout=self.timeout)

    def _open(self, start: int, end: int):
        for _ in range(MAX_REDIRECTS + 1):
            path = self._parts.path or "/"
            if self._parts.query:
                path += "?" + self._parts.query
            conn = self._connect()
            self.requests += 1
            conn.request("GET", path, headers={"Range": f"bytes={start}-{end}", "Accept-Encoding": "identity"})
            resp = conn.getresponse()
            if resp.status not in (301, 302, 303, 307, 308):
                break
            # storage services hand out redirects to signed URLs; follow them, but never from https to http
            target = self._urllib.urljoin(self._parts.geturl(), resp.getheader("Location", ""))
            conn.close()
            parts = self._urllib.urlsplit(target)
            if parts.scheme not in ("http", "https") or not parts.hostname or \
                    (self._parts.scheme == "https" and parts.scheme != "https"):
                raise DownloadError(f"{self.location}: refusing redirect to {target!r}")
            self._parts = parts
        else:
            conn.close()
            raise DownloadError(f"{self.location}: more than {MAX_REDIRECTS} redirects")
        if resp.status == 416:
            conn.close()
            raise BundleFormatError(f"{self.location} is shorter than {start + 1} bytes (truncated bundle)")
        if resp.status == 200:
            conn.close()
            raise DownloadError(f"{self.location}: the server ignored the Range request (HTTP 200); roost needs "
                                "Range support to cap and resume downloads. Serve the bundle from a server that "
                                "supports byte ranges")
        if resp.status != 206:
            conn.close()
            raise DownloadError(f"{self.location}: HTTP {resp.status} {resp.reason}")
        match = _CONTENT_RANGE.match(resp.getheader("Content-Range", ""))
        if not match or int(match.group(1)) != start:
            conn.close()
            raise DownloadError(f"{self.location}: bad Content-Range {resp.getheader('Content-Range')!r} for "
                                f"bytes {start}-{end}")
        if match.group(3) != "*":
            self.total_size = int(match.group(3))
        served = int(match.group(2)) - start + 1
        length = resp.getheader("Content-Length")
        if served > end - start + 1 or (length is not None and int(length) != served):
            conn.close()
            raise DownloadError(f"{self.location}: the server sends more than the {end - start + 1} bytes asked for")
        return conn, resp

    def _count(self, n: int) -> None:
        self.bytes_read += n
        if self.cap is not None and self.bytes_read > self.cap:
            raise DownloadError(f"{self.location}: read {self.bytes_read} bytes, more than the {self.cap} the signed "
                                "manifest accounts for; refusing an endless or padded download")

    def _chunks(self, start: int, length: int, chunk: int) -> Iterator[memoryview]:
        """Yield bytes start..start+length-1 in order, in pieces of at most ``chunk``, resuming after drops."""
        position, end = start, start + length - 1
        failures = 0
        buf = bytearray(chunk)
        view = memoryview(buf)
        while position <= end:
            try:
                conn, resp = self._open(position, end)
            except (OSError, self._http.HTTPException) as exc:
                failures += 1
                if failures > self.retries:
                    raise DownloadError(f"{self.location}: {exc}; gave up after {self.retries} retries") from None
                self.sleep(min(2.0 ** failures, 60.0))
                continue
            started, got_here = self.clock(), 0
            try:
                while position <= end:
                    want = min(len(buf), end - position + 1)
                    try:
                        n = resp.readinto(view[:want])
                    except (OSError, self._http.HTTPException):
                        break   # dropped mid-body: resume from `position` with a new Range request
                    if not n:
                        break
                    self._count(n)
                    position += n
                    got_here += n
                    failures = 0
                    yield view[:n]
                    elapsed = self.clock() - started
                    if elapsed > self.timeout and got_here / elapsed < self.min_rate:
                        raise DownloadError(f"{self.location}: {got_here / elapsed:.0f} B/s is below the minimum "
                                            f"of {self.min_rate:.0f} B/s (slow retrieval)")
            finally:
                conn.close()
            if position <= end:
                failures += 1
                if failures > self.retries:
                    raise DownloadError(f"{self.location}: connection kept dropping at byte {position}; gave up after "
                                        f"{self.retries} retries. Run the install again to resume")
                self.sleep(min(2.0 ** failures, 60.0))

    def read_at(self, offset: int, length: int) -> bytes:
        out = bytearray()
        try:
            for piece in self._chunks(offset, length, 64 * 1024):
                out += piece
        except BundleFormatError:
            pass   # 416: the caller sees a short read and reports the truncation with context
        return bytes(out)

    def chunks(self, offset: int, length: int, chunk_size: int, buffers: int = 1) -> Iterator[memoryview]:
        """The range in pieces of ``chunk_size`` (the last may be shorter), rotating over ``buffers`` buffers."""
        pool = [memoryview(bytearray(chunk_size)) for _ in range(buffers)]
        turn, filled, remaining = 0, 0, length
        want = min(chunk_size, remaining)
        for piece in self._chunks(offset, length, chunk_size):
            while piece:
                view = pool[turn % buffers]
                take = min(len(piece), want - filled)
                view[filled:filled + take] = piece[:take]
                filled += take
                piece = piece[take:]
                if filled == want:
                    turn += 1
                    yield view[:want]
                    remaining -= want
                    filled = 0
                    want = min(chunk_size, remaining)

    def close(self) -> None:
        """Connections are closed after each range."""


def open_source(location: str | Path, **http_options: object) -> FileSource | HttpSource:
    text = str(location)
    if text.startswith(("http://", "https://")):
        return HttpSource(text, **http_options)  # type: ignore[arg-type]
    if "://" in text:
        raise DownloadError(f"unsupported location {text!r}; give a file path or an http(s) URL")
    return FileSource(Path(text))

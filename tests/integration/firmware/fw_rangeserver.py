"""A small HTTP server with byte-range support and faults, standing in for a bundle CDN in tests."""

from __future__ import annotations

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class RangeServer:
    def __init__(self, address: str, directory: Path) -> None:
        self.directory = Path(directory)
        self.bytes_sent = 0
        self.requests: list[str] = []
        self.drop_after: int | None = None     # close the connection after this many body bytes (once per arming)
        self.ignore_range = False
        self.send_extra = 0                    # append this many bytes beyond the requested range
        self.stall = 0.0                       # sleep before the body
        self.endless = False                   # 200 without length, bytes forever
        self.redirects: dict[str, str] = {}    # path -> Location
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.headers.get("Range", ""))
                if self.path in outer.redirects:
                    self.send_response(302)
                    self.send_header("Location", outer.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if outer.endless:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes 0-{10**12}/*")
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(b"\0" * 65536)
                            outer.bytes_sent += 65536
                    except OSError:
                        return
                path = outer.directory / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if outer.ignore_range or not match:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self._body(data)
                    return
                start = int(match.group(1))
                end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data[start:end + 1] + b"\xee" * outer.send_extra
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end + outer.send_extra}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.stall:
                    time.sleep(outer.stall)
                self._body(body)

            def _body(self, body: bytes) -> None:
                if outer.drop_after is not None and len(body) > outer.drop_after:
                    cut, outer.drop_after = outer.drop_after, None
                    self.wfile.write(body[:cut])
                    outer.bytes_sent += cut
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)
                outer.bytes_sent += len(body)

        self.server = ThreadingHTTPServer((address, 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, client_address: None   # dropped connections are the point
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

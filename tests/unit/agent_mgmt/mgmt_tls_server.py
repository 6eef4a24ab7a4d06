"""A TLS listener that only completes handshakes: enough to test what the device trusts."""

from __future__ import annotations

import socket
import ssl
import threading


class HandshakeServer:
    def __init__(self, address: str, chain_path, key_path, port: int = 8883) -> None:
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(chain_path, key_path)
        self.sock = socket.create_server((address, port))
        self.sock.settimeout(0.2)
        self.address, self.port = address, port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                conn.settimeout(2)
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def __enter__(self) -> HandshakeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

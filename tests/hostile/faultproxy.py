"""A fault-injecting HTTP proxy for S3 tests: a thread on 127.0.0.1 that forwards every request to
an upstream endpoint (the moto server) and fails every ``every``-th one instead, with an S3-style
500 / 503 error or by dropping the connection without an answer."""

from __future__ import annotations

import http.client
import itertools
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class FaultProxy:
    """``with FaultProxy(upstream, every=7, faults=("500", "503")) as p: p.url``.

    ``faults`` cycles over the failed requests: ``"500"``, ``"503"`` (an S3 error body) or
    ``"drop"`` (the connection is closed after the request was read, nothing is answered).
    ``counts`` tells how many requests were forwarded and how many failed, by method.
    """

    def __init__(self, upstream: str, every: int, faults: tuple[str, ...] = ("500", "503")) -> None:
        self.upstream = urlsplit(upstream)
        self.every = every
        self.faults = itertools.cycle(faults)
        self.lock = threading.Lock()
        self.n = 0
        self.failed: dict[str, int] = {}
        self.forwarded: dict[str, int] = {}
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._next_fault(self.command)
                if fault == "drop":
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                if fault:
                    code = int(fault)
                    text = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>'
                        f"{'SlowDown' if code == 503 else 'InternalError'}</Code>"
                        f"<Message>injected fault</Message></Error>"
                    ).encode()
                    self.send_response(code)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(text)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body or None, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    self.send_response(resp.status, resp.reason)
                    for k, v in resp.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                    self.send_header("Content-Length", length or "0")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next_fault(self, method: str) -> str | None:
        with self.lock:
            self.n += 1
            if self.n % self.every == 0:
                self.failed[method] = self.failed.get(method, 0) + 1
                return next(self.faults)
            self.forwarded[method] = self.forwarded.get(method, 0) + 1
            return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

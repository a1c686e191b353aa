"""``cng-datasets preview``: serve a destination over HTTP with Range requests, for the map page."""

from __future__ import annotations

import http.server
import posixpath
import re
import threading
import urllib.parse
from typing import Any

from cng_datasets import storage
from cng_datasets.errors import StorageError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
    ".pmtiles": "application/vnd.pmtiles",
    ".parquet": "application/vnd.apache.parquet",
}
_BLOCK = 1 << 20


def make_server(root: str, host: str = "127.0.0.1", port: int = 0) -> http.server.ThreadingHTTPServer:
    """An HTTP server of everything below ``root`` (a local directory or s3:// prefix), read-only,
    answering ``Range: bytes=a-b`` with 206 as PMTiles readers need."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # quiet: the CLI prints the URL only
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            rel = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)).lstrip("/")
            if rel.startswith("..") or rel in ("", "."):
                self.send_error(404)
                return
            url = storage.join(root, rel)
            try:
                size = storage.size(url)
            except (StorageError, OSError):
                self.send_error(404)
                return
            start, end = 0, size - 1
            m = _RANGE.match(self.headers.get("Range", ""))
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
                else:  # the last N bytes
                    start = max(0, size - int(m.group(2)))
                if start > end:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", _TYPES.get(posixpath.splitext(rel)[1], "application/octet-stream"))
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Access-Control-Allow-Origin", "*")
            self.end_headers()
            if not body:
                return
            with storage.open_input(url) as f:
                f.seek(start)
                left = end - start + 1
                while left > 0:
                    chunk = f.read(min(_BLOCK, left))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)

    return http.server.ThreadingHTTPServer((host, port), Handler)


def start(root: str, host: str = "127.0.0.1", port: int = 0) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``root`` in a background thread; returns the server and its base URL."""
    server = make_server(root, host, port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"

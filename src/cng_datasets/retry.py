"""Retries with exponential backoff for reads whose client does not retry them itself.

boto3 (``retries={"mode": "standard"}``), pyarrow's S3 client (``retry_strategy``) and GDAL
(``GDAL_HTTP_MAX_RETRY``) retry failed requests; what they miss is retried here: a pyarrow S3 read
that fails while its body is streamed (:class:`RetryingInput`) and plain HTTP range reads.
"""

from __future__ import annotations

import http.client
import io
import random
import time
import urllib.error
from typing import Any

#: Attempts per S3 request (boto3, pyarrow, and the retries here), with exponential backoff.
MAX_ATTEMPTS = 8
#: First delay of :func:`with_retries`, doubled after each failed attempt (with jitter), capped.
RETRY_DELAY = 0.2
RETRY_DELAY_MAX = 8.0


def with_retries(fn: Any, transient: Any, attempts: int = MAX_ATTEMPTS) -> Any:
    """``fn()``, attempted up to ``attempts`` times while ``transient(exc)`` says the error may go
    away, sleeping with exponential backoff and jitter in between."""
    delay = RETRY_DELAY
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == attempts or not transient(exc):
                raise
            time.sleep(min(RETRY_DELAY_MAX, delay) * (0.5 + random.random()))
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


#: Words of pyarrow / AWS SDK errors that retrying cannot fix.
_PERMANENT = (
    "ACCESS_DENIED",
    "AccessDenied",
    "NO_SUCH",
    "NoSuch",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "[code 403]",
    "[code 404]",
    "does not exist",
    "Forbidden",
    "INVALID_ACCESS_KEY_ID",
)


def s3_read_transient(exc: BaseException) -> bool:
    if not isinstance(exc, OSError) or isinstance(exc, (FileNotFoundError, PermissionError)):
        return False
    text = str(exc)
    return not any(word in text for word in _PERMANENT)


def http_transient(exc: BaseException) -> bool:
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code in (408, 429, 500, 502, 503, 504)
    return isinstance(exc, (OSError, http.client.HTTPException))


class RetryingInput(io.RawIOBase):
    """A read-only, seekable file of a pyarrow filesystem (S3) whose reads are retried.

    pyarrow's S3 retry strategy retries a request that fails before its body is streamed; a 5xx
    answer to a range GET or a connection dropped mid-body surfaces instead as an ``OSError``
    ("AWS Error INTERNAL_FAILURE during GetObject operation: Failed to flush response stream",
    "curlCode: 52, Server returned nothing"). Each read is therefore retried here, on a freshly
    opened file, with backoff; errors that retrying cannot fix (access denied, missing) are raised
    at once (a missing object as ``FileNotFoundError``, when opening).
    """

    def __init__(self, filesystem: Any, path: str) -> None:
        self._fs, self._path = filesystem, path
        self._file: Any = with_retries(lambda: self._fs.open_input_file(self._path), s3_read_transient)
        self._size = int(self._file.size())
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def size(self) -> int:
        return self._size

    def _read_at(self, n: int, pos: int) -> bytes:
        if self._file is None:
            self._file = self._fs.open_input_file(self._path)
        try:
            return bytes(self._file.read_at(n, pos))
        except OSError:
            # the failed stream may have left the file unusable: the next attempt opens a new one
            failed, self._file = self._file, None
            try:
                failed.close()
            except Exception:  # noqa: BLE001 - already failing; the read's error is the one to report
                pass
            raise

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        data = with_retries(lambda: self._read_at(want, self._pos), s3_read_transient)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def close(self) -> None:
        f = getattr(self, "_file", None)  # absent when opening failed
        if f is not None and not self.closed:
            f.close()
        super().close()

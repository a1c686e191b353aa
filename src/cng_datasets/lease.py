"""A lease on one dataset's destination, so that two local runs never write into it at once.

The lease is ``<root>/<dataset>/_cng/lease.json``: who holds it (``host``, ``pid``, process start
time, command), when it was taken (``started``) and a ``heartbeat`` refreshed every
:data:`HEARTBEAT_SECONDS` while the run lasts. It is removed when the run ends, also on failure
or Ctrl-C.

Taking it is atomic:

- locally, the file is created if absent and locked with ``flock`` for the whole run. The kernel
  drops the lock when the holder dies (even by ``kill -9``), so a lock that can be taken while the
  file names another holder is a stale lease: it is taken over, with a log line. Unlike
  ``O_EXCL`` alone this needs no guess about whether a pid is still the holder. A filesystem
  that cannot lock (some FUSE mounts) gets a warning and no protection.
- on S3, a conditional PUT (``If-None-Match: *``) creates it; the heartbeat and the release are
  conditional on the ETag we wrote (``If-Match``), so a run whose lease was taken over notices and
  stops instead of overwriting. The holder is gone when it ran on this host and its process no
  longer exists, or when its heartbeat is older than :data:`STALE_SECONDS` (measured with the S3
  server's own clock: its ``Last-Modified`` against its ``Date``). A stale lease is replaced with
  a PUT conditional on its ETag, so of two runs taking over the same stale lease only one wins.
  An S3 server that ignores conditional headers is caught by reading the lease back.
"""

from __future__ import annotations

import email.utils
import errno
import json
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cng_datasets import storage
from cng_datasets.children import pid_alive
from cng_datasets.errors import LeaseHeldError, LeaseLostError, StorageError

log = logging.getLogger(__name__)

#: Seconds between two heartbeats of the holder.
HEARTBEAT_SECONDS = 30.0
#: A lease whose heartbeat is older than this is stale (S3; a local one is stale when unlocked).
STALE_SECONDS = 300.0
#: Seconds between two attempts while waiting (``--wait``).
WAIT_POLL_SECONDS = 2.0


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host h, started 2026-…Z, heartbeat 5 s ago`` (what is known of it)."""
    if not holder:
        return "holder unknown: the lease file is being written or unreadable"
    parts = [f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"]
    if holder.get("started"):
        parts.append(f"started {holder['started']}")
    age = holder.get("_age")
    if isinstance(age, (int, float)):
        parts.append(f"heartbeat {age:.0f} s ago")
    return ", ".join(parts)


def _proc_start(pid: int) -> str | None:
    """The start time of ``pid`` in clock ticks since boot: tells a reused pid apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _now_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _body(token: str, started: str) -> dict[str, Any]:
    return {
        "token": token,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": _proc_start(os.getpid()),
        "command": " ".join(sys.argv[:3]) if sys.argv else "",
        "started": started,
        "heartbeat": _now_iso(),
    }


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _holder_gone_on_this_host(holder: dict[str, Any]) -> bool:
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    pid = int(holder["pid"])
    if not pid_alive(pid):
        return True
    recorded = holder.get("pid_start")
    return recorded is not None and _proc_start(pid) not in (None, recorded)


# --------------------------------------------------------------------------------------------


class Lease:
    """A held lease; :meth:`release` (idempotent) gives it back. Use :func:`acquire` to get one."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = uuid.uuid4().hex
        self.started = _now_iso()
        self.lost: str | None = None  # why we lost it, set by the heartbeat
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # subclasses: _try() -> (held by us, holder if not), _beat(), _release()
    def _try(self) -> tuple[bool, dict[str, Any]]:
        raise NotImplementedError

    def _beat(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self._beat()
            except LeaseLostError as exc:
                self.lost = str(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried; staleness takes minutes
                log.debug("lease heartbeat failed: %s", exc)

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._heartbeat_loop, name="cng-lease-heartbeat", daemon=True)
        self._thread.start()

    def check(self) -> None:
        """Raise :class:`LeaseLostError` when the heartbeat found the lease taken over."""
        if self.lost:
            raise LeaseLostError(self.lost)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            self._release()
        except Exception as exc:  # noqa: BLE001 - releasing must not hide the run's own outcome
            log.warning("could not remove the lease %s: %s", self.url, exc)


class _LocalLease(Lease):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = storage.parse(url).path
        self.fd: int | None = None

    def _write(self, fd: int) -> None:
        data = json.dumps(_body(self.token, self.started), indent=1).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

    def _read_holder(self) -> dict[str, Any]:
        for _ in range(5):  # a holder rewriting its heartbeat may be caught mid-write
            try:
                holder = _parse(Path(self.path).read_bytes())
            except OSError:
                return {}
            if holder:
                try:
                    holder["_age"] = max(0.0, time.time() - os.stat(self.path).st_mtime)
                except OSError:
                    pass
                return holder
            time.sleep(0.05)
        return {}

    def _try(self) -> tuple[bool, dict[str, Any]]:
        import fcntl

        while True:
            try:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise StorageError(self.path, f"cannot create the lease ({exc.strerror or exc})") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False, self._read_holder()
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    os.close(fd)
                    raise
                log.warning(
                    "cannot lock %s (%s): another run into this destination at the same time would not be noticed",
                    self.path,
                    exc.strerror or exc,
                )
            # the holder may have released (unlinked) the file between our open and our lock:
            # then we locked a file nobody will look at again; start over on the current one
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = _parse(os.pread(fd, 1 << 16, 0))
            if previous:
                log.warning("taking over the lease %s of a run that is gone (%s)", self.url, describe(previous))
            self._write(fd)
            self.fd = fd
            return True, {}

    def _beat(self) -> None:
        if self.fd is not None:
            self._write(self.fd)

    def _release(self) -> None:
        if self.fd is None:
            return
        # unlink while still locked: a waiter that opens the path now creates a new file (and
        # checks it locked the file at the path); closing then drops our lock
        try:
            os.unlink(self.path)
        finally:
            os.close(self.fd)
            self.fd = None


def _s3_code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", "")) or str(
        response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )


_PRECONDITION = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
#: What an S3 server without conditional writes (older MinIO / Ceph) answers to If-None-Match.
_UNSUPPORTED = ("NotImplemented", "501")


class _S3Lease(Lease):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        loc = storage.parse(url)
        self.bucket, self.key = loc.bucket, loc.key
        self.etag: str | None = None
        self.conditional = True  # False on a server that refuses conditional requests

    def _put(self, **cond: Any) -> str:
        data = json.dumps(_body(self.token, self.started), indent=1).encode()
        if not self.conditional:
            cond = {}
        answer = storage.s3_client().put_object(
            Bucket=self.bucket, Key=self.key, Body=data, ContentType="application/json", **cond
        )
        return str(answer.get("ETag", ""))

    def _get(self) -> tuple[dict[str, Any], str | None]:
        from botocore.exceptions import ClientError

        try:
            obj = storage.s3_client().get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if _s3_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return {}, None
            raise storage._s3_error(self.url, exc) from exc
        holder = _parse(obj["Body"].read())
        server_now = obj.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        modified = obj.get("LastModified")
        if holder and modified is not None and server_now:
            try:
                age = email.utils.parsedate_to_datetime(server_now).timestamp() - modified.timestamp()
                holder["_age"] = max(0.0, age)  # both in whole seconds
            except (TypeError, ValueError):
                pass
        return holder, str(obj.get("ETag", ""))

    @staticmethod
    def _stale(holder: dict[str, Any]) -> bool:
        return not holder or _holder_gone_on_this_host(holder) or holder.get("_age", 0) > STALE_SECONDS

    def _try(self) -> tuple[bool, dict[str, Any]]:
        from botocore.exceptions import ClientError

        if not self.conditional:  # look, then write, then read back: a narrow race remains
            holder, etag = self._get()
            if etag is not None and not self._stale(holder):
                return False, holder
            self.etag = self._put()
            mine, _ = self._get()
            return (True, {}) if mine.get("token") == self.token else (False, mine)
        try:
            self.etag = self._put(IfNoneMatch="*")
        except ClientError as exc:
            if _s3_code(exc) in _UNSUPPORTED and self.conditional:
                log.warning(
                    "%s: this S3 server does not support conditional writes; another run into this "
                    "dataset at the same time is only noticed when the lease is read back",
                    self.url,
                )
                self.conditional = False
                return self._try()
            if _s3_code(exc) not in _PRECONDITION:
                raise storage._s3_error(self.url, exc) from exc
            holder, etag = self._get()
            if etag is None:  # released meanwhile
                return self._try()
            if not self._stale(holder):
                return False, holder
            try:
                self.etag = self._put(IfMatch=etag)
            except ClientError as exc2:
                if _s3_code(exc2) in _PRECONDITION + ("NoSuchKey", "404"):
                    return False, self._get()[0]  # another run took it over first
                raise storage._s3_error(self.url, exc2) from exc2
            log.warning("taking over the lease %s of a run that is gone (%s)", self.url, describe(holder))
        # a server that ignores If-None-Match would let two runs both "create" the lease
        mine, _ = self._get()
        if mine.get("token") != self.token:
            self.etag = None
            return False, mine
        return True, {}

    def _beat(self) -> None:
        from botocore.exceptions import ClientError

        if not self.conditional:
            holder, _ = self._get()
            if holder.get("token") != self.token:
                raise LeaseLostError(f"the lease {self.url} was taken over by another run ({describe(holder)})")
        try:
            self.etag = self._put(IfMatch=self.etag or "*")
        except ClientError as exc:
            if _s3_code(exc) in _PRECONDITION + ("NoSuchKey", "404"):
                holder, _ = self._get()
                raise LeaseLostError(
                    f"the lease {self.url} was taken over by another run ({describe(holder)})"
                ) from exc
            raise

    def _release(self) -> None:
        from botocore.exceptions import ClientError

        if self.etag is None:
            return
        try:
            cond: dict[str, Any] = {"IfMatch": self.etag} if self.conditional else {}
            storage.s3_client().delete_object(Bucket=self.bucket, Key=self.key, **cond)
        except ClientError as exc:
            if _s3_code(exc) not in _PRECONDITION + ("NoSuchKey", "404"):
                raise
        self.etag = None


def acquire(
    url: str,
    *,
    wait: bool = False,
    label: str | None = None,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
    poll: float = WAIT_POLL_SECONDS,
) -> Lease:
    """Take the lease at ``url`` (a local path or ``s3://`` URL) and start its heartbeat.

    When another live run holds it: raise :class:`LeaseHeldError` naming ``label`` (default
    ``url``) and the holder, or with
    ``wait`` call ``on_wait(holder)`` once and try again every ``poll`` seconds until it is free.
    """
    loc = storage.parse(url)
    if loc.scheme not in ("file", "s3"):
        raise StorageError(url, "a lease needs a local directory or s3://")
    lease: Lease = _LocalLease(url) if loc.is_local else _S3Lease(url)
    told = False
    while True:
        held, holder = lease._try()
        if held:
            lease.start_heartbeat()
            return lease
        if not wait:
            raise LeaseHeldError(label or url, holder, describe(holder))
        if not told and on_wait is not None:
            on_wait(holder)
            told = True
        time.sleep(poll)

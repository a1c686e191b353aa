"""``receive-yamls``: the upload pod's side of ``submit``.

The upload Job's container runs ``cng-datasets receive-yamls --dir /yamls --expect a.yaml,b.yaml
--timeout 3600`` with the workflow PVC mounted at ``/yamls``. It first writes a ``.receiving``
token (``<hostname>/<pid>/<ns>``: the hostname is the pod's name), then waits until

- a ``.complete`` marker holding *its* token appears (written by ``submit`` after the last file)
  and every expected file is present, or
- every expected file exists, was written after the receiver started, and has kept its size for
  ``stable_seconds`` (so a plain ``kubectl cp`` works too).

A marker or files left on the PVC by an earlier upload pod therefore never count.

``submit`` writes the files through the Kubernetes exec API by running, in the same pod,
``receive-yamls --dir /yamls --put NAME --content-b64 B64 [--part K --parts N --sha256 HEX]``
(long files go in several parts so no exec URL grows large) and finally
``receive-yamls --dir /yamls --complete``. Each put waits until this pod's receiver is ready and
writes atomically (temporary file, then rename); every put is idempotent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from cng_datasets import storage
from cng_datasets.errors import ClusterError, UsageError, WaitTimeoutError
from cng_datasets.k8s.jobs import poll_until

log = logging.getLogger("cng_datasets")

RECEIVING = ".receiving"
COMPLETE = ".complete"
#: Base64 characters per exec call: keeps each exec request URL well below proxy limits.
PART_CHARS = 3000


def _atomic_write(path: Path, data: bytes) -> None:
    storage.write_bytes(str(path), data)


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise UsageError(f"--put {name!r}: a plain file name is required (no path, not hidden)")
    return name


def make_token() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{time.time_ns()}"


class Receiver:
    """The waiting side, one poll at a time (the CLI loops; the test fake ticks it)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        expect: Iterable[str],
        stable_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
        token: str | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.expect = [_check_name(n) for n in expect]
        self.stable_seconds = stable_seconds
        self.clock = clock
        self.token = token or make_token()
        self.started: float | None = None
        self._wall_start = 0.0
        self._sizes: dict[str, int] = {}
        self._stable_since: float | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = self.clock()
        self._wall_start = time.time()
        _atomic_write(self.dir / RECEIVING, self.token.encode())
        log.info("receiving %s in %s", ", ".join(self.expect), self.dir)

    def missing(self) -> list[str]:
        return [n for n in self.expect if not (self.dir / n).is_file()]

    def _marker_ok(self) -> bool:
        try:
            return (self.dir / COMPLETE).read_text().strip() == self.token
        except OSError:
            return False

    def poll(self) -> bool:
        """``True`` when the upload is complete."""
        assert self.started is not None, "start() first"
        missing = self.missing()
        if self._marker_ok():
            if missing:
                raise ClusterError(f"upload marked complete but missing: {', '.join(missing)}")
            return True
        if missing:
            self._stable_since = None
            return False
        sizes = {}
        for n in self.expect:
            st = (self.dir / n).stat()
            if st.st_mtime < self._wall_start - 1:  # left by an earlier upload
                self._stable_since = None
                return False
            sizes[n] = st.st_size
        now = self.clock()
        if sizes != self._sizes or self._stable_since is None:
            self._sizes = sizes
            self._stable_since = now
            return False
        return now - self._stable_since >= self.stable_seconds


def receive(
    directory: str | os.PathLike[str],
    expect: Iterable[str],
    timeout: float = 3600,
    stable_seconds: float = 5.0,
    poll_interval: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait for the upload; raise :class:`ClusterError` on timeout."""
    receiver = Receiver(directory, expect, stable_seconds=stable_seconds, clock=clock)
    receiver.start()
    if poll_until(receiver.poll, timeout, sleep, poll_interval, clock).timed_out:
        raise WaitTimeoutError(
            f"timed out after {timeout:g} s waiting for {', '.join(receiver.missing()) or 'the .complete marker'}"
        )
    log.info("received %d files", len(receiver.expect))


def _wait_ready(directory: Path, wait: float, sleep: Callable[[float], None]) -> str:
    """The token of this pod's receiver, waiting up to ``wait`` seconds for it to start."""
    host = socket.gethostname()
    deadline = time.monotonic() + wait
    while True:
        try:
            token = (directory / RECEIVING).read_text().strip()
            if token.split("/", 1)[0] == host:
                return token
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"no receive-yamls is running in this pod on {directory} (waited {wait:.0f} s)")
        sleep(0.2)


def put(
    directory: str | os.PathLike[str],
    name: str,
    content_b64: str,
    part: int = 1,
    parts: int = 1,
    sha256: str | None = None,
    wait: float = 60,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Store part ``part`` of ``parts`` of file ``name``; when all parts are there, assemble the file
    atomically and check ``sha256``. Returns ``True`` when the file is complete."""
    d = Path(directory)
    _check_name(name)
    if not 1 <= part <= parts:
        raise UsageError(f"--part {part} is outside 1..{parts}")
    try:
        data = base64.b64decode(content_b64.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
        raise UsageError(f"--content-b64 is not valid base64: {exc}") from None
    _wait_ready(d, wait, sleep)
    if parts == 1:
        whole = data
    else:
        _atomic_write(d / f".{name}.part{part}of{parts}", data)
        paths = [d / f".{name}.part{k}of{parts}" for k in range(1, parts + 1)]
        if not all(p.exists() for p in paths):
            return False
        whole = b"".join(p.read_bytes() for p in paths)
    if sha256 and hashlib.sha256(whole).hexdigest() != sha256.lower():
        raise ClusterError(f"{name}: content does not match its sha256 (a part is missing or corrupt)")
    _atomic_write(d / name, whole)
    if parts > 1:
        for k in range(1, parts + 1):
            (d / f".{name}.part{k}of{parts}").unlink(missing_ok=True)
    return True


def complete(directory: str | os.PathLike[str], wait: float = 60, sleep: Callable[[float], None] = time.sleep) -> None:
    """Write the ``.complete`` marker for this pod's receiver."""
    d = Path(directory)
    token = _wait_ready(d, wait, sleep)
    _atomic_write(d / COMPLETE, token.encode())


def put_commands(directory: str, name: str, data: bytes, program: str = "cng-datasets") -> list[list[str]]:
    """The exec argvs that store ``data`` as ``name`` (several parts when it is long)."""
    b64 = base64.b64encode(data).decode("ascii")
    # Parts must decode on their own: cut at multiples of 4 characters.
    size = PART_CHARS - PART_CHARS % 4
    chunks = [b64[i : i + size] for i in range(0, len(b64), size)] or [""]
    digest = hashlib.sha256(data).hexdigest()
    cmds = []
    for k, chunk in enumerate(chunks, start=1):
        cmd = [program, "receive-yamls", "--dir", directory, "--put", name, "--content-b64", chunk]
        if len(chunks) > 1:
            cmd += ["--part", str(k), "--parts", str(len(chunks))]
        cmd += ["--sha256", digest]
        cmds.append(cmd)
    return cmds


def complete_command(directory: str, program: str = "cng-datasets") -> list[str]:
    return [program, "receive-yamls", "--dir", directory, "--complete"]

"""The local runner's child processes (:class:`Task`): they die with their parent, and work in a
private temporary directory.

``kill -9`` of ``cng-datasets run`` must not leave its steps (and their tippecanoe) running and
writing into the destination, where a re-run would race them. On Linux a child asks the kernel for
``SIGKILL`` when its parent goes (``prctl(PR_SET_PDEATHSIG)``), set between ``fork`` and ``exec`` by
:func:`die_with_parent`. Elsewhere nothing is set (Ctrl-C and ``kill`` are still handled by the
runner's process groups).

Caveat: the kernel sends the signal when the parent *thread* that forked the child exits, not the
process. Start children from the main thread or another thread that lives as long as they should.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cng_datasets.plan import PROGRAM, Step

#: linux/prctl.h
PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child is SIGKILLed when this thread ends.

    Returns None where the kernel offers no such thing (not Linux). Everything the child runs is
    resolved here, before ``fork``: between ``fork`` and ``exec`` only the ``prctl`` call and a
    parent check remain (no import, no lock), which is what ``preexec_fn`` tolerates in a process
    with threads.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    sig = int(signal.SIGKILL)
    getppid, exit_now = os.getppid, os._exit

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, sig)
        if getppid() != parent:  # the parent died between fork and prctl: nobody will signal us
            exit_now(1)

    return preexec


# --------------------------------------------------------------------------------------------
# The runner's step processes


def resolve_argv(argv: Sequence[str]) -> list[str]:
    """``cng-datasets …`` → ``<this python> -m cng_datasets …``; anything else unchanged."""
    if argv and argv[0] == PROGRAM:
        return [sys.executable, "-m", "cng_datasets", *argv[1:]]
    return list(argv)


@dataclass
class Task:
    """One step process (or hex chunk) of a local run, its logs and how to stop it."""

    step: Step
    chunk: int | None
    argv: list[str]
    log_base: Path
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    out: Any = None
    err: Any = None

    @property
    def label(self) -> str:
        return self.step.name if self.chunk is None else f"{self.step.name}.{self.chunk:05d}"

    def start(self, env: Mapping[str, str]) -> None:
        self.log_base.parent.mkdir(parents=True, exist_ok=True)
        self.out = open(f"{self.log_base}.out", "wb")
        self.err = open(f"{self.log_base}.err", "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.out,
            stderr=self.err,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,  # our Ctrl-C handling decides when children stop
            preexec_fn=die_with_parent(),  # and the kernel when we die (kill -9)
        )

    def close(self) -> None:
        for f in (self.out, self.err):
            if f is not None:
                f.close()

    def last_line(self, which: str) -> str:
        try:
            text = Path(f"{self.log_base}.{which}").read_text(errors="replace")
        except OSError:
            return ""
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        return lines[-1] if lines else ""

    def warning_lines(self) -> list[str]:
        """The ``warning: …`` lines the step wrote to stderr (the CLI's format), without the prefix."""
        try:
            text = Path(f"{self.log_base}.err").read_text(errors="replace")
        except OSError:
            return []
        return [ln[len("warning:") :].strip() for ln in text.splitlines() if ln.startswith("warning:")]

    def terminate(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass

    def kill(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------------------------
# A private temporary directory per run


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:40] or "host"


_RUN_TMP_RE = re.compile(r"^cng-run-(?P<host>[A-Za-z0-9.-]+)-(?P<pid>\d+)-[a-z0-9_]+$")


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def private_tempdir() -> str:
    """A new directory in the system temp dir for one run's children (their ``TMPDIR``).

    Named ``cng-run-<host>-<pid>-…`` so that :func:`remove_stale_tempdirs` can tell, after a
    ``kill -9``, which ones belong to runs that are gone.
    """
    return tempfile.mkdtemp(prefix=f"cng-run-{_host()}-{os.getpid()}-")


def remove_stale_tempdirs(base: str | None = None) -> list[str]:
    """Remove the private temp dirs of runs on this host whose process is gone; return them.

    Only names of :func:`private_tempdir`'s pattern, of this host name, whose pid does not exist
    (a reused pid keeps its directory: leaking one beats deleting a live run's files).
    """
    root = Path(base or tempfile.gettempdir())
    host = _host()
    removed: list[str] = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _RUN_TMP_RE.match(p.name)
        if not m or m.group("host") != host or int(m.group("pid")) == os.getpid():
            continue
        if pid_alive(int(m.group("pid"))) or not p.is_dir() or p.is_symlink():
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(str(p))
    return removed

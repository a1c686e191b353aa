"""A test hook: ``kill -9`` this process at a named point, to test recovery from real kills.

Set ``CNG_DATASETS_TEST_KILL_AT=<point>[:<n>]`` and the process sends itself ``SIGKILL`` the
``n``-th time (default 1) it reaches :func:`kill_point` ``(<point>)``. No ``finally`` block, no
``atexit`` and no temporary-file cleanup runs: exactly what an OOM kill or a node loss leaves.
Without the variable the call is one dictionary lookup. Only tests set it; the points are named
where they are called: ``hex.part-staged`` and ``repartition.file-staged`` (a part / partition
file is written to its temporary name at the destination, not yet renamed), and
``repartition.chunks-deleting`` (after each group of chunk files is deleted).
"""

from __future__ import annotations

import os
import signal

ENV = "CNG_DATASETS_TEST_KILL_AT"
_seen: dict[str, int] = {}


def kill_point(point: str) -> None:
    """SIGKILL this process here if ``CNG_DATASETS_TEST_KILL_AT`` names ``point`` (see module doc)."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    name, _, nth = spec.partition(":")
    if name != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)

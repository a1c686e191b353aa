"""Resource limits of the container we run in (cgroup v2 / v1), not of the host.

Thread pools, tippecanoe threads and memory budgets are sized from these so a pod with a 2-CPU,
8 GiB limit on a 64-core node does not start 64 workers and get OOM-killed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

_CGROUP = Path("/sys/fs/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def cpu_count(cgroup_root: Path = _CGROUP) -> int:
    """CPUs this process may use: the smaller of the affinity mask and the cgroup CPU quota (≥ 1)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        n = os.cpu_count() or 1
    quota = None
    v2 = _read(cgroup_root / "cpu.max")
    if v2:
        q, _, period = v2.partition(" ")
        if q != "max" and period:
            quota = int(q) / int(period)
    else:
        q1 = _read(cgroup_root / "cpu" / "cpu.cfs_quota_us")
        p1 = _read(cgroup_root / "cpu" / "cpu.cfs_period_us")
        if q1 and p1 and int(q1) > 0:
            quota = int(q1) / int(p1)
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new soft limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft

"""A Job's state and the report of a failed one, in the terms the orchestrator and ``submit`` /
``status`` / ``logs`` use; and the waits, which return typed outcomes (as lightkube's and kr8s's
waits do) instead of raising errors that callers would have to recognise by their text.

- :func:`job_state` reads a Job's status (``Complete`` / ``SuccessCriteriaMet`` → complete,
  ``Failed`` / ``FailureTarget`` → failed, indexes, times);
- :func:`failure_report` explains a failed Job: reason, hint, failed indexes, each failing pod's
  termination (OOMKilled, exit code), its last log lines and the ``kubectl logs`` command;
- :func:`poll_until` (:class:`Polled`) and :func:`wait_for_jobs` (:class:`WaitOutcome`: the Jobs
  that succeeded, those that failed, whether the time ran out);
- :func:`stuck_pods`: a pod that stays Pending because no Node can take it (``Unschedulable``),
  its image cannot be pulled or its container cannot be created, past a grace period
  (:class:`Graces`) — the Job itself would wait out its ``activeDeadlineSeconds``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from cng_datasets.k8s.api import KubeApi
from cng_datasets.k8s.labels import COMPLETION_INDEX, job_pods

SUCCESS_CONDITIONS = ("Complete", "SuccessCriteriaMet")
FAILURE_CONDITIONS = ("Failed", "FailureTarget")

HINTS = {
    "OOMKilled": "out of memory: raise this step's memory limit and submit again",
    "DeadlineExceeded": "the Job ran longer than its activeDeadlineSeconds",
    "BackoffLimitExceeded": "the pod failed more often than the Job's backoffLimit allows",
    "FailedIndexes": "some indexes failed more often than backoffLimitPerIndex allows",
    "MaxFailedIndexesExceeded": "more indexes failed than maxFailedIndexes allows",
    "PodFailurePolicy": "a pod failure matched the Job's podFailurePolicy",
}

T = TypeVar("T")


def parse_indexes(text: str | None) -> list[int]:
    """``"1-3,7"`` → ``[1, 2, 3, 7]`` (the format of ``completedIndexes`` / ``failedIndexes``)."""
    out: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class JobState:
    """What a Job's status says, in the terms the orchestrator and ``status`` use."""

    phase: str  # "absent", "pending", "running", "suspended", "complete", "failed"
    reason: str = ""
    message: str = ""
    indexed: bool = False
    completions: int = 1
    succeeded: int = 0
    failed: int = 0
    active: int = 0
    completed_indexes: str = ""
    failed_indexes: str = ""
    start: datetime | None = None
    end: datetime | None = None

    def progress(self) -> str:
        if self.phase == "absent":
            return "not created"
        if self.indexed:
            done = len(parse_indexes(self.completed_indexes))
            bad = len(parse_indexes(self.failed_indexes))
            text = f"{done}/{self.completions} indexes complete, {bad} failed"
            if self.failed_indexes:
                text += f" ({self.failed_indexes})"
        else:
            text = f"{self.succeeded}/{self.completions} pods complete, {self.failed} failed"
        if self.phase in ("complete", "failed"):
            text += f" — {self.phase.upper()}{' (' + self.reason + ')' if self.reason else ''}"
        else:
            text += f", {self.active} running"
            if self.phase != "running":
                text += f" [{self.phase}]"
        return text

    def duration(self, now: datetime | None = None) -> float | None:
        if self.start is None:
            return None
        end = self.end or now
        return (end - self.start).total_seconds() if end else None


def job_state(job: dict[str, Any] | None) -> JobState:
    if job is None:
        return JobState("absent")
    spec = job.get("spec") or {}
    st = job.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or [] if str(c.get("status")) == "True"}
    state = JobState(
        "pending",
        indexed=spec.get("completionMode") == "Indexed",
        completions=int(spec.get("completions") or 1),
        succeeded=int(st.get("succeeded") or 0),
        failed=int(st.get("failed") or 0),
        active=int(st.get("active") or 0),
        completed_indexes=str(st.get("completedIndexes") or ""),
        failed_indexes=str(st.get("failedIndexes") or ""),
        start=parse_time(st.get("startTime")),
        end=parse_time(st.get("completionTime")),
    )
    for kind, phase in ((FAILURE_CONDITIONS, "failed"), (SUCCESS_CONDITIONS, "complete")):
        for t in kind:
            if t in conds:
                state.phase = phase
                state.reason = str(conds[t].get("reason") or "")
                state.message = str(conds[t].get("message") or "")
                if state.end is None:
                    state.end = parse_time(conds[t].get("lastTransitionTime"))
                return state
    if "Suspended" in conds:
        state.phase = "suspended"
    elif state.active or state.succeeded or state.failed:
        state.phase = "running"
    return state


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# ---- failures ----------------------------------------------------------------------------------


def pod_index(pod: dict[str, Any]) -> int | None:
    md = pod.get("metadata") or {}
    value = (md.get("annotations") or {}).get(COMPLETION_INDEX) or (md.get("labels") or {}).get(COMPLETION_INDEX)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def pod_termination(pod: dict[str, Any]) -> tuple[str, int | None]:
    """(reason, exit code) of the pod's first terminated container (``OOMKilled``, 137)."""
    st = pod.get("status") or {}
    for cs in st.get("containerStatuses") or []:
        for key in ("state", "lastState"):
            term = (cs.get(key) or {}).get("terminated")
            if term:
                return str(term.get("reason") or ""), term.get("exitCode")
    return str(st.get("reason") or ""), None


def termination_text(pod: dict[str, Any]) -> str:
    """``OOMKilled (exit 137)``: how the pod's container ended, in one phrase."""
    reason, code = pod_termination(pod)
    return f"{reason or 'failed'}" + (f" (exit {code})" if code is not None else "")


def describe_pod_failure(pod: dict[str, Any]) -> str:
    reason, code = pod_termination(pod)
    text = reason or "failed"
    if code is not None:
        text += f" (exit {code})"
    if reason == "OOMKilled":
        text += f" — {HINTS['OOMKilled']}"
    elif code == 65:
        text += " — deterministic bad input: retrying cannot help, read the log"
    elif code == 137:
        text += " — killed (OOM or eviction)"
    return text


def sort_pods_failing_first(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {"Failed": 0, "Running": 1, "Pending": 2, "Unknown": 3, "Succeeded": 4}

    def key(p: dict[str, Any]) -> tuple[int, int, str]:
        phase = (p.get("status") or {}).get("phase", "Unknown")
        idx = pod_index(p)
        return (rank.get(phase, 3), idx if idx is not None else -1, p["metadata"]["name"])

    return sorted(pods, key=key)


def failure_report(
    api: KubeApi, namespace: str, step: str, job_name: str, state: JobState, max_pods: int = 5, tail: int = 15
) -> tuple[list[str], str]:
    """(lines for the log, one-line summary) of a failed Job."""
    lines = [f"{step}: FAILED — {state.reason or 'Failed'}{': ' + state.message if state.message else ''}"]
    if state.reason in HINTS:
        lines.append(f"  {HINTS[state.reason]}")
    if state.failed_indexes:
        lines.append(f"  failed indexes: {state.failed_indexes}")
    pods = [
        p
        for p in api.list("Pod", namespace, label_selector=job_pods(job_name))
        if (p.get("status") or {}).get("phase") == "Failed"
    ]
    pods = sort_pods_failing_first(pods)
    summary = f"step {step} failed ({state.reason or 'Failed'})"
    if state.failed_indexes:
        summary += f", failed indexes {state.failed_indexes}"
    if not pods:
        lines.append(f"  no failed pod is left to inspect; try: kubectl describe job/{job_name} -n {namespace}")
        return lines, summary + f"; see kubectl describe job/{job_name} -n {namespace}"
    for p in pods[:max_pods]:
        idx = pod_index(p)
        where = f" (index {idx})" if idx is not None else ""
        lines.append(f"  pod {p['metadata']['name']}{where}: {describe_pod_failure(p)}")
    if len(pods) > max_pods:
        lines.append(f"  … and {len(pods) - max_pods} more failed pods")
    first = pods[0]["metadata"]["name"]
    lines.append(f"  logs: kubectl logs {first} -n {namespace}")
    text = api.pod_log(namespace, first, tail_lines=tail).rstrip()
    if text:
        lines.append(f"  last lines of {first}:")
        lines.extend("    | " + line for line in text.splitlines()[-tail:])
    summary += f"; pod {first}: {termination_text(pods[0])}"
    summary += f"; kubectl logs {first} -n {namespace}"
    return lines, summary


# ---- waits -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Polled(Generic[T]):
    """How :func:`poll_until` ended: ``value`` is the check's first truthy answer, ``None`` when
    the time ran out first (``timed_out``)."""

    value: T | None
    timed_out: bool


def poll_until(
    check: Callable[[], T | None],
    timeout: float,
    sleep: Callable[[float], None],
    poll: float,
    clock: Callable[[], float],
) -> Polled[T]:
    """Call ``check`` every ``poll`` seconds until it answers something truthy or ``timeout``
    seconds have passed. Exceptions of ``check`` propagate."""
    deadline = clock() + timeout
    while True:
        result = check()
        if result:
            return Polled(result, False)
        if clock() >= deadline:
            return Polled(None, True)
        sleep(poll)


@dataclass(frozen=True)
class WaitOutcome:
    """How a wait for Jobs ended: the Jobs that succeeded, those that failed (each with its last
    state), and whether the time ran out before every Job finished."""

    succeeded: frozenset[str]
    failed: dict[str, JobState]
    timed_out: bool


def wait_for_jobs(
    api: KubeApi,
    namespace: str,
    jobs: Iterable[str],
    timeout: float,
    sleep: Callable[[float], None],
    poll: float,
    clock: Callable[[], float],
) -> WaitOutcome:
    """Wait until each of ``jobs`` is complete or failed (a missing Job counts as not finished)."""
    names = list(jobs)
    states: dict[str, JobState] = {}

    def finished() -> bool:
        for name in names:
            if states.get(name, JobState("absent")).phase not in ("complete", "failed"):
                states[name] = job_state(api.get("Job", namespace, name))
        return all(states[n].phase in ("complete", "failed") for n in names)

    polled = poll_until(finished, timeout, sleep, poll, clock)
    return WaitOutcome(
        succeeded=frozenset(n for n in names if states[n].phase == "complete"),
        failed={n: states[n] for n in names if states[n].phase == "failed"},
        timed_out=polled.timed_out,
    )


# ---- pods that cannot start --------------------------------------------------------------------

#: Waiting reasons of a container whose image cannot be pulled (retrying rarely helps).
IMAGE_PULL_REASONS = ("ErrImagePull", "ImagePullBackOff")
#: Waiting reasons that never resolve by themselves: fail at once.
HOPELESS_REASONS = ("InvalidImageName", "ErrImageNeverPull")
#: A container that cannot be created (a Secret or key it reads is missing): may be fixed by
#: creating the Secret, so it gets the image-pull grace.
CONFIG_REASONS = ("CreateContainerConfigError",)

HINT_UNSCHEDULABLE = (
    "no Node can take the pod: lower the step's --<step>-cpu/--<step>-memory/--<step>-ephemeral-storage, "
    "check --node-selector/--toleration, or add Nodes (cng-datasets preflight DIR checks this)"
)
HINT_IMAGE = (
    "the image cannot be pulled: check --image (is it published? `docker pull` it) and, for a private "
    "registry, --image-pull-secret"
)
HINT_CONFIG = "the container cannot be created: a Secret or key it reads is missing (cng-datasets preflight DIR)"


@dataclass(frozen=True)
class Graces:
    """How long a pod may stay Pending for each cause before its step is failed: a cluster
    autoscaler may add a Node within minutes; a registry's rate limit may clear."""

    unschedulable: float = 900.0
    image: float = 300.0


def waiting_state(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of the pod's first container that is waiting to run, else ``None``."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting")
        if waiting:
            return str(waiting.get("reason") or ""), str(waiting.get("message") or "")
    return None


def _unscheduled(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "PodScheduled" and str(c.get("status")) == "False" and c.get("reason") == "Unschedulable":
            return dict(c)
    return None


def pending_cause(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when a Pending pod is stuck: ``Unschedulable``, an image pull or a
    container that cannot be created; ``None`` for a pod that is merely starting."""
    if (pod.get("status") or {}).get("phase") != "Pending":
        return None
    cond = _unscheduled(pod)
    if cond is not None:
        return "Unschedulable", str(cond.get("message") or "")
    waiting = waiting_state(pod)
    if waiting is not None and waiting[0] in (*IMAGE_PULL_REASONS, *HOPELESS_REASONS, *CONFIG_REASONS):
        return waiting
    return None


def stuck_pods(
    pods: Iterable[dict[str, Any]], now: float, first_seen: dict[tuple[str, str], float], graces: Graces
) -> str | None:
    """The one-line reason when a pod of a step has been stuck Pending past its grace, else
    ``None``. ``first_seen`` remembers, across calls, since when each (pod, reason) was seen
    (an Unschedulable condition carries its own time)."""
    for pod in pods:
        cause = pending_cause(pod)
        if cause is None:
            continue
        reason, message = cause
        name = pod["metadata"]["name"]
        since = first_seen.setdefault((name, reason), now)
        if reason == "Unschedulable":
            cond = _unscheduled(pod) or {}
            stamp = parse_time(cond.get("lastTransitionTime"))
            since = min(since, stamp.timestamp()) if stamp else since
            grace, hint = graces.unschedulable, HINT_UNSCHEDULABLE
        elif reason in CONFIG_REASONS:
            grace, hint = graces.image, HINT_CONFIG
        else:
            grace = 0.0 if reason in HOPELESS_REASONS else graces.image
            hint = HINT_IMAGE
        if now - since >= grace:
            first = message.strip().splitlines()[0] if message.strip() else reason
            waited = f" for {fmt_duration(now - since)}" if grace else ""
            return f"pod {name} {reason}{waited}: {first} — {hint}"
    return None

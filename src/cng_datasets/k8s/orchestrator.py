"""The in-cluster orchestrator: what ``workflow.yaml``'s Job runs.

``cng-datasets orchestrate --yamls /yamls --namespace NS`` reads the step Jobs from ``/yamls``,
orders them by their ``cng-datasets/depends-on`` annotations, creates each one when all its
dependencies are Complete (independent ones — pmtiles and hex — run side by side) and waits until
every Job is Complete or one has Failed.

- Restart-safe: a Job that already exists is never recreated. Complete → skipped; still running →
  awaited; Failed → reported (delete it, e.g. with ``cng-datasets submit DIR --retry-failed``, to
  run it again). Finished work is therefore never recomputed.
- …but only work of the same settings: every Job carries ``cng-datasets/spec-hash``
  (:mod:`cng_datasets.k8s.spechash`, covering the steps it depends on). An existing Job whose
  annotation differs from the hash recomputed from its YAML (or has none) comes from an earlier run
  with other settings: it is neither skipped nor awaited — :class:`StaleJobError` names it, before
  any Job is created, and says how to replace it (``cng-datasets submit DIR --replace-stale``, or
  ``cng-datasets cleanup DIR``, which keeps the outputs). The orchestrator deletes nothing.
- Never hangs on a failed Job: ``Failed`` / ``FailureTarget`` end the wait, with the reason
  (BackoffLimitExceeded, DeadlineExceeded, FailedIndexes, PodFailurePolicy, …), the failed
  indexes, each failing pod's container termination (OOMKilled, exit code), the last lines of its
  log and the exact ``kubectl logs`` command; then :class:`ClusterError` (exit 1).
- Its API calls are exactly :data:`cng_datasets.k8s.rbac.RULES`: get/create Jobs, list Pods, get
  pod logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cng_datasets.errors import EXIT_BAD_INPUT, ClusterError, UsageError
from cng_datasets.k8s import spechash
from cng_datasets.k8s.api import AlreadyExists, KubeApi

log = logging.getLogger("cng_datasets")

LABEL_STEP = "cng-datasets/step"
LABEL_DATASET = "cng-datasets/dataset"
ANN_DEPENDS = "cng-datasets/depends-on"
ANN_DATASET_PATH = "cng-datasets/dataset-path"
#: Sub-commands of the infrastructure Jobs, which the orchestrator never applies.
INFRA_COMMANDS = ("receive-yamls", "orchestrate")

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


class StaleJobError(ClusterError):
    """A Job of the workflow's name exists but runs other settings than the YAML (spec-hash).

    Exit 65: running the orchestrator again cannot help until the Job is replaced.
    """

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class Stale:
    """One existing Job whose spec-hash is not the YAML's."""

    job: str
    source: str  # the YAML file (or step) it should match
    want: str
    live: str | None


def find_stale(live: dict[str, Any] | None, job: str, source: str, want: str) -> Stale | None:
    """A :class:`Stale` when the live Job exists and its spec-hash annotation is not ``want``."""
    if live is None:
        return None
    have = spechash.annotated(live)
    return None if have == want else Stale(job, source, want, have)


def stale_error(namespace: str, stale: list[Stale], directory: str = "DIR") -> StaleJobError:
    """The one-line error naming the stale Jobs and the two ways to replace them."""
    what = ", ".join(
        f"{s.job} ({'spec-hash ' + s.live if s.live else 'no spec-hash'}; {s.source} has {s.want})" for s in stale
    )
    plural = "these Jobs" if len(stale) > 1 else "this Job"
    return StaleJobError(
        f"Job{'s' if len(stale) > 1 else ''} in namespace {namespace} from an earlier run with other settings: {what}"
        f" — {plural} would be taken for this run's (skipped when complete), so the workflow stops here; "
        f"replace {'them' if len(stale) > 1 else 'it'} with `cng-datasets submit {directory} --replace-stale` "
        f"(deletes only the stale Jobs, keeps the others and the outputs) or delete the workflow's Jobs with "
        f"`cng-datasets cleanup {directory}` (keeps the outputs) and submit again"
    )


# ---- reading the workflow's Jobs ------------------------------------------------------------


def read_yaml_docs(path: Path) -> list[dict[str, Any]]:
    import yaml

    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: not readable YAML ({exc})") from None


def container_argv(job: dict[str, Any]) -> list[str]:
    containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    c = containers[0]
    return [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]


def is_infra_job(job: dict[str, Any]) -> bool:
    argv = container_argv(job)
    return len(argv) > 1 and argv[1] in INFRA_COMMANDS


@dataclass
class StepJob:
    """One step Job of the workflow, as read from its YAML."""

    step: str
    manifest: dict[str, Any]
    depends_on: tuple[str, ...]
    source: str = ""

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def step_of(job: dict[str, Any]) -> str:
    md = job.get("metadata", {})
    return str((md.get("labels") or {}).get(LABEL_STEP) or md.get("name"))


def load_step_jobs(directory: str | Path) -> list[StepJob]:
    """The step Jobs in ``directory`` (``*.yaml`` / ``*.yml``; other kinds and infra Jobs ignored)."""
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"{d} is not a directory")
    jobs: list[StepJob] = []
    for path in sorted(list(d.glob("*.yaml")) + list(d.glob("*.yml"))):
        if path.name.startswith("."):
            continue
        for doc in read_yaml_docs(path):
            if doc.get("kind") != "Job" or is_infra_job(doc):
                continue
            ann = doc.get("metadata", {}).get("annotations") or {}
            deps = tuple(s.strip() for s in str(ann.get(ANN_DEPENDS) or "").split(",") if s.strip())
            jobs.append(StepJob(step_of(doc), doc, deps, path.name))
    if not jobs:
        raise UsageError(f"no step Jobs found in {d}")
    return jobs


def topological_order(jobs: Iterable[StepJob]) -> list[StepJob]:
    """``jobs`` ordered so every Job comes after its dependencies; errors on unknown steps or cycles."""
    by_step: dict[str, StepJob] = {}
    for j in jobs:
        if j.step in by_step:
            raise UsageError(f"two Jobs for step {j.step!r} ({by_step[j.step].source}, {j.source})")
        by_step[j.step] = j
    for j in by_step.values():
        for dep in j.depends_on:
            if dep not in by_step:
                raise UsageError(f"step {j.step!r} depends on {dep!r}, which is not among the Jobs")
    order: list[StepJob] = []
    done: set[str] = set()
    remaining = dict(by_step)
    while remaining:
        ready = [s for s, j in remaining.items() if all(d in done for d in j.depends_on)]
        if not ready:
            raise UsageError(f"the dependencies of {', '.join(sorted(remaining))} form a cycle")
        for s in ready:  # keep file order among peers
            order.append(remaining.pop(s))
            done.add(s)
    return order


# ---- reading a Job's status ------------------------------------------------------------------


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
    value = (md.get("annotations") or {}).get("batch.kubernetes.io/job-completion-index") or (
        md.get("labels") or {}
    ).get("batch.kubernetes.io/job-completion-index")
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
        p for p in api.list("Pod", namespace, label_selector=f"job-name={job_name}")
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
    reason, code = pod_termination(pods[0])
    summary += f"; pod {first}: {reason or 'failed'}" + (f" (exit {code})" if code is not None else "")
    summary += f"; kubectl logs {first} -n {namespace}"
    return lines, summary


# ---- the loop ----------------------------------------------------------------------------------


@dataclass
class _Tracked:
    job: StepJob
    spec_hash: str = ""
    state: JobState = field(default_factory=lambda: JobState("absent"))
    started: bool = False
    last_line: str = ""
    last_logged: float = 0.0


def orchestrate(
    api: KubeApi,
    yamls: str | Path,
    namespace: str,
    poll_interval: float = 10.0,
    heartbeat: float = 300.0,
    sleep: Callable[[float], None] | None = None,
    now: Callable[[], float] | None = None,
) -> dict[str, JobState]:
    """Run the workflow's Jobs to completion; return each step's final state.

    Raises :class:`ClusterError` when a Job fails (after logging the full report).
    """
    sleep = sleep or time.sleep
    now = now or time.time
    steps = topological_order(load_step_jobs(yamls))

    def say(msg: str) -> None:
        log.info("[%s] %s", time.strftime("%H:%M:%S", time.localtime(now())), msg)

    say(
        f"workflow in namespace {namespace}: "
        + ", ".join(f"{s.step}" + (f" (after {'+'.join(s.depends_on)})" if s.depends_on else "") for s in steps)
    )
    hashes = spechash.step_hashes((s.step, s.manifest, s.depends_on) for s in steps)
    tracked = {s.step: _Tracked(s, hashes[s.step]) for s in steps}

    def check_fresh(t: _Tracked, live: dict[str, Any] | None) -> None:
        stale = find_stale(live, t.job.name, t.job.source or t.job.step, t.spec_hash)
        if stale is not None:
            raise stale_error(namespace, [stale])

    # Before creating anything: a Job left by a run with other settings must not be skipped.
    stale = [
        s for s in (
            find_stale(api.get("Job", namespace, t.job.name), t.job.name, t.job.source or t.job.step, t.spec_hash)
            for t in tracked.values()
        ) if s is not None
    ]
    if stale:
        raise stale_error(namespace, stale)
    while True:
        # Start every Job whose dependencies are complete (or adopt the one that exists).
        for t in tracked.values():
            if t.started or not all(tracked[d].state.phase == "complete" for d in t.job.depends_on):
                continue
            existing = api.get("Job", namespace, t.job.name)
            if existing is None:
                body = spechash.with_hash(t.job.manifest, t.spec_hash)
                body["metadata"] = dict(body["metadata"], namespace=namespace)
                try:
                    existing = api.create(namespace, body)
                    say(f"{t.job.step}: created Job {t.job.name}")
                except AlreadyExists:  # another orchestrator pod was quicker
                    existing = api.get("Job", namespace, t.job.name)
                    check_fresh(t, existing)
                    say(f"{t.job.step}: Job {t.job.name} was created meanwhile — waiting for it")
            else:
                check_fresh(t, existing)
                phase = job_state(existing).phase
                if phase == "complete":
                    say(f"{t.job.step}: Job {t.job.name} is already complete — skipped")
                else:
                    say(f"{t.job.step}: Job {t.job.name} already exists ({phase}) — waiting for it")
            t.started = True
            t.state = job_state(existing)
        # Refresh the running ones.
        for t in tracked.values():
            if not t.started or t.state.phase in ("complete", "failed"):
                continue
            job = api.get("Job", namespace, t.job.name)
            if job is None:
                raise ClusterError(f"step {t.job.step}: Job {t.job.name} disappeared (deleted while running?)")
            t.state = job_state(job)
            line = t.state.progress()
            if line != t.last_line or now() - t.last_logged >= heartbeat:
                say(f"{t.job.step}: {line}")
                t.last_line, t.last_logged = line, now()
        failed = [t for t in tracked.values() if t.state.phase == "failed"]
        if failed:
            summaries = []
            for t in failed:
                lines, summary = failure_report(api, namespace, t.job.step, t.job.name, t.state)
                for line in lines:
                    say(line)
                summaries.append(summary)
            still = [t.job.step for t in tracked.values() if t.started and t.state.phase not in ("complete", "failed")]
            if still:
                say(f"still running in the cluster (not stopped): {', '.join(still)}")
            raise ClusterError("; ".join(summaries))
        if all(t.state.phase == "complete" for t in tracked.values()):
            say(
                "workflow complete: "
                + ", ".join(f"{t.job.step} {fmt_duration(t.state.duration())}" for t in tracked.values())
            )
            return {s: t.state for s, t in tracked.items()}
        sleep(poll_interval)

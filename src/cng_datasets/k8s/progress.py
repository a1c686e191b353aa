"""Progress of a workflow on a cluster, as ``status`` shows it and the orchestrator records it.

The orchestrator writes, while it runs, one ConfigMap ``<ds>-progress`` (key ``progress.json``):
per step its state, chunk counts, start and end, the failed chunks with the first line of their
error, why its pods are stuck, and the features and cells the finished hex chunks' markers count
(read from the bucket while they exist: repartition deletes them). ``status`` reads it with the
live Jobs, so a laptop that reconnects hours later sees what happened, even after the Jobs'
pods are gone.

:class:`StepReport` is one row of ``status``: done / failed / running of total, elapsed, an ETA
from the pace so far, and the notes below the table.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from cng_datasets.errors import ClusterError, StorageError
from cng_datasets.k8s import names
from cng_datasets.k8s.api import AlreadyExists, KubeApi
from cng_datasets.k8s.jobs import JobState, fmt_duration, parse_indexes, pod_index, termination_text
from cng_datasets.k8s.labels import APP, LABEL_COMPONENT, LABEL_DATASET, LABEL_NAME

log = logging.getLogger("cng_datasets")

PROGRESS_KEY = "progress.json"
#: Lines of a failed pod's log searched for its error line.
ERROR_TAIL = 30


@dataclass
class StepReport:
    """What ``status`` shows of one step (JSON-able: the orchestrator stores these)."""

    step: str
    job: str
    phase: str
    reason: str = ""
    indexed: bool = False
    completions: int = 1
    done: int = 0
    failed: int = 0
    running: int = 0
    start: float | None = None  # epoch seconds
    end: float | None = None
    #: chunk index (as text, for JSON) → first line of its error
    failed_chunks: dict[str, str] = field(default_factory=dict)
    stuck: str = ""
    features: int | None = None
    cells: int | None = None

    def elapsed(self, now: float) -> float | None:
        if self.start is None:
            return None
        return (self.end or now) - self.start

    def eta(self, now: float) -> float | None:
        """Seconds left at the pace so far (chunks done per second since the start)."""
        elapsed = self.elapsed(now)
        if self.phase != "running" or not elapsed or self.done <= 0:
            return None
        return elapsed * (self.completions - self.done - self.failed) / self.done

    def progress(self) -> str:
        unit = "chunks" if self.indexed else "pods"
        text = f"{self.done}/{self.completions} {unit} done, {self.failed} failed, {self.running} running"
        counts = []
        if self.features is not None:
            counts.append(f"{self.features:,} features")
        if self.cells is not None:
            counts.append(f"{self.cells:,} cells")
        return text + (" · " + ", ".join(counts) if counts else "")


def from_state(step: str, job: str, state: JobState) -> StepReport:
    """The report of a step from its Job's status alone."""
    if state.indexed:
        done, failed = len(parse_indexes(state.completed_indexes)), len(parse_indexes(state.failed_indexes))
    else:
        done, failed = state.succeeded, state.failed
    return StepReport(
        step,
        job,
        state.phase,
        state.reason,
        state.indexed,
        state.completions,
        done,
        failed,
        state.active,
        state.start.timestamp() if state.start else None,
        state.end.timestamp() if state.end else None,
    )


# ---- failed chunks -----------------------------------------------------------------------------


def error_line(log_text: str) -> str:
    """The line a failed step printed as its error (``error: …``, our commands' last word), else
    the last line of the log."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("error:"):
            return line
    return lines[-1] if lines else ""


def failed_chunk_errors(
    api: KubeApi, namespace: str, pods: list[dict[str, Any]], known: dict[str, str], state: JobState
) -> dict[str, str]:
    """Chunk index → first line of its error, for the chunks that failed for good (an Indexed Job's
    ``failedIndexes``; a plain Job's pod once the Job failed), from its ``pods``: a chunk in
    ``known`` keeps its line, so each pod's log is read once, and a chunk that failed once and then
    succeeded is not listed."""
    if state.indexed:
        wanted = {str(i) for i in parse_indexes(state.failed_indexes)}
    else:
        wanted = {"0"} if state.phase == "failed" else set()
    out = {k: v for k, v in known.items() if k in wanted}
    for pod in pods:
        if len(out) == len(wanted):
            break
        if (pod.get("status") or {}).get("phase") != "Failed":
            continue
        idx = pod_index(pod)
        key = str(idx if idx is not None else 0)
        if key in out or key not in wanted:
            continue
        line = error_line(api.pod_log(namespace, pod["metadata"]["name"], tail_lines=ERROR_TAIL))
        what = termination_text(pod)
        out[key] = f"{what}: {line}" if line else what
    return out


# ---- counts from the hex chunk markers --------------------------------------------------------


class ChunkCounts:
    """Features and cells of the finished hex chunks, from their markers in the bucket; each
    marker is read once. Totals are kept after repartition removes the markers."""

    def __init__(self, chunks_url: str) -> None:
        self.chunks_url = chunks_url
        self.seen: dict[int, dict[str, int]] = {}
        self.failed = False

    def update(self) -> tuple[int | None, int | None]:
        from cng_datasets import markers

        if not self.failed:
            try:
                for index, url in markers.chunk_done_markers(self.chunks_url).items():
                    if index not in self.seen:
                        self.seen[index] = markers.chunk_stats(url)
            except StorageError as exc:  # counts are a nicety: the workflow goes on without them
                log.warning("progress: cannot read the hex chunk markers (%s); counts are left out", exc)
                self.failed = True
        if not self.seen:
            return None, None
        features = [s["features"] for s in self.seen.values() if "features" in s]
        cells = [s["cells"] for s in self.seen.values() if "cells" in s]
        return (sum(features) if features else None), (sum(cells) if cells else None)


# ---- the ConfigMap -----------------------------------------------------------------------------


def configmap_name(dataset_k8s_name: str) -> str:
    return f"{dataset_k8s_name}-{names.PROGRESS_SUFFIX}"


def read_progress(api: KubeApi, namespace: str, name: str) -> dict[str, Any] | None:
    """The recorded progress (``{"updated", "state", "message", "steps": {step: report}}``), or
    ``None`` when there is none (or it cannot be read: ``status`` then shows the Jobs only)."""
    try:
        cm = api.get("ConfigMap", namespace, name)
    except ClusterError:
        return None
    if not cm:
        return None
    try:
        doc = json.loads((cm.get("data") or {}).get(PROGRESS_KEY) or "null")
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def reports_of(doc: dict[str, Any] | None) -> dict[str, StepReport]:
    out: dict[str, StepReport] = {}
    for step, data in ((doc or {}).get("steps") or {}).items():
        try:
            out[step] = StepReport(**data)
        except TypeError:  # written by another version: ignore rather than fail status
            continue
    return out


class ProgressWriter:
    """Writes the orchestrator's progress ConfigMap when it changed (create, then replace)."""

    def __init__(self, api: KubeApi, namespace: str, dataset_k8s_name: str, now: Callable[[], float]) -> None:
        self.api = api
        self.namespace = namespace
        self.dataset = dataset_k8s_name
        self.name = configmap_name(dataset_k8s_name)
        self.now = now
        self.last = ""
        self.exists = False

    @staticmethod
    def _text(reports: dict[str, StepReport], state: str, message: str) -> str:
        body = {"state": state, "message": message, "steps": {s: asdict(r) for s, r in reports.items()}}
        return json.dumps(body, sort_keys=True)

    def seed(self, doc: dict[str, Any] | None) -> None:
        """What an earlier orchestrator wrote: rewritten only when something changed."""
        if doc is not None:
            self.exists = True
            self.last = self._text(reports_of(doc), str(doc.get("state", "")), str(doc.get("message", "")))

    def write(self, reports: dict[str, StepReport], state: str, message: str = "") -> None:
        text = self._text(reports, state, message)
        if text == self.last:
            return
        doc = {**json.loads(text), "updated": datetime.fromtimestamp(self.now(), tz=UTC).isoformat()}
        cm = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {LABEL_NAME: APP, LABEL_DATASET: self.dataset, LABEL_COMPONENT: "progress"},
            },
            "data": {PROGRESS_KEY: json.dumps(doc, indent=1, sort_keys=True)},
        }
        if not self.exists:
            try:
                self.api.create(self.namespace, cm)
            except AlreadyExists:
                self.api.replace(self.namespace, cm)
            self.exists = True
        else:
            self.api.replace(self.namespace, cm)
        self.last = text


# ---- status ------------------------------------------------------------------------------------


def merge(live: StepReport, recorded: StepReport | None) -> StepReport:
    """The live Job's report, completed by what the orchestrator recorded (counts, errors of
    chunks whose pods are gone, why it was stopped) — or the record alone when the Job is gone."""
    if recorded is None:
        return live
    if live.phase == "absent":
        return recorded
    live.features = live.features if live.features is not None else recorded.features
    live.cells = live.cells if live.cells is not None else recorded.cells
    live.failed_chunks = {**recorded.failed_chunks, **live.failed_chunks}
    live.stuck = live.stuck or recorded.stuck
    return live


def format_reports(reports: list[StepReport], now: float) -> str:
    """The ``status`` table and, below it, one line per failed chunk and stuck step."""
    header = ("STEP", "JOB", "STATE", "ELAPSED", "ETA", "PROGRESS")
    rows = [header]
    for r in reports:
        eta = r.eta(now)
        rows.append(
            (
                r.step,
                r.job,
                r.phase + (f" ({r.reason})" if r.reason else ""),
                fmt_duration(r.elapsed(now)),
                f"~{fmt_duration(eta)}" if eta is not None else "-",
                "not created" if r.phase == "absent" else r.progress(),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5] for row in rows]
    for r in reports:
        if r.stuck:
            lines.append(f"{r.step}: stuck: {r.stuck}")
        for idx, err in sorted(r.failed_chunks.items(), key=lambda kv: int(kv[0])):
            lines.append(f"{r.step}: chunk {idx} failed: {err}" if r.indexed else f"{r.step}: failed: {err}")
    return "\n".join(lines)

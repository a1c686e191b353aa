"""The in-cluster orchestrator: what ``workflow.yaml``'s Job runs.

``cng-datasets orchestrate --yamls /yamls --namespace NS`` reads the plan from ``/yamls/plan.json``
and each step's Job from ``/yamls/<step>-job.yaml`` (:mod:`cng_datasets.k8s.folder`), creates
each Job when every step it depends on (in the plan) is Complete — independent ones, pmtiles and
hex, run side by side — and waits until every Job is Complete or one has Failed. The Jobs' labels
and annotations are for people and ``kubectl``; the order is the plan's.

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
  log and the exact ``kubectl logs`` command (:func:`cng_datasets.k8s.jobs.failure_report`); then
  :class:`ClusterError` (exit 1).
- Never waits on pods that cannot start: a running step's pods are checked every poll; one that
  stays Pending because no Node can take it (``Unschedulable``, 15 min grace for an autoscaler),
  its image cannot be pulled (``ErrImagePull`` / ``ImagePullBackOff``, 5 min; ``InvalidImageName``
  at once) or its container cannot be created (a missing Secret key) fails the step: its Job is
  deleted and :class:`~cng_datasets.errors.PodsStuckError` names the pod, the reason and what to do.
- Records its progress in the ConfigMap ``<ds>-progress`` (:mod:`cng_datasets.k8s.progress`):
  chunks done / failed / running, the first error line of each failed chunk, the features and
  cells of the finished hex chunks (from their markers in the bucket, when ``counts`` is given),
  and how the workflow ended — what ``cng-datasets status`` shows after the laptop reconnects.
- Sizes the hex Job when the sources could not be counted while the manifests were written (its
  Job carries ``cng-datasets/sized-after-convert``): once convert is complete, the plan is built
  again from the converted GeoParquet — its exact feature count and the hex rows estimated from
  a sample (:func:`cng_datasets.estimate.plan_from_geoparquet`, what ``run`` does) — and the hex
  Job is created with those chunks instead of the folder's blind 200 × 10,000. When the
  GeoParquet cannot be read, the folder's Job runs as written (its last chunk reads to the end:
  nothing is lost). The spec hash leaves this chunking out, so a restarted orchestrator adopts
  the Job it sized.
- Its API calls are exactly :data:`cng_datasets.k8s.rbac.RULES`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cng_datasets.errors import ClusterError, PodsStuckError, StaleJobError, first_line
from cng_datasets.k8s import manifests, names, progress, spechash
from cng_datasets.k8s.api import AlreadyExists, KubeApi
from cng_datasets.k8s.folder import StepJob, load_plan, load_step_jobs
from cng_datasets.k8s.jobs import Graces, JobState, failure_report, fmt_duration, job_state, stuck_pods
from cng_datasets.k8s.labels import job_pods
from cng_datasets.plan import Plan

__all__ = ["StaleJobError", "orchestrate"]

log = logging.getLogger("cng_datasets")


@dataclass
class _Tracked:
    job: StepJob
    spec_hash: str = ""
    state: JobState = field(default_factory=lambda: JobState("absent"))
    started: bool = False
    last_line: str = ""
    last_logged: float = 0.0

    @property
    def finished(self) -> bool:
        return self.state.phase in ("complete", "failed")


class _Orchestrator:
    """One pass of the workflow over the steps of the plan (in its order)."""

    def __init__(
        self,
        api: KubeApi,
        namespace: str,
        plan: Plan,
        steps: list[StepJob],
        heartbeat: float,
        now: Callable[[], float],
        graces: Graces,
        counts: progress.ChunkCounts | None,
    ) -> None:
        self.api = api
        self.plan = plan
        self.namespace = namespace
        self.heartbeat = heartbeat
        self.now = now
        self.graces = graces
        self.counts = counts
        self.first_seen: dict[tuple[str, str], float] = {}
        hashes = spechash.step_hashes((s.step, s.manifest, s.depends_on) for s in steps)
        self.tracked = {s.step: _Tracked(s, hashes[s.step]) for s in steps}
        base = names.dataset_k8s_name(plan.config.dataset)
        self.writer = progress.ProgressWriter(api, namespace, base, now)
        # what an earlier orchestrator of this workflow recorded (counts of chunks since merged)
        doc = progress.read_progress(api, namespace, self.writer.name)
        self.writer.seed(doc)
        self.recorded = progress.reports_of(doc)
        self.reports: dict[str, progress.StepReport] = {}

    def record(self, state: str, message: str = "") -> None:
        """Write the progress ConfigMap (when it changed)."""
        for step, t in self.tracked.items():
            live = progress.from_state(step, t.job.name, t.state)
            old = self.reports.get(step) or self.recorded.get(step)
            if old is not None and old.phase == live.phase and live.phase in ("complete", "failed"):
                # a finished step's record stays as first written (its end time may be read from
                # SuccessCriteriaMet first and from completionTime a moment later)
                self.reports[step] = old
                continue
            if old is not None:
                live.failed_chunks, live.stuck = old.failed_chunks, old.stuck
                live.features, live.cells = old.features, old.cells
            self.reports[step] = live
        self.writer.write(self.reports, state, message)

    def observe(self, t: _Tracked) -> None:
        """Beyond the Job's status: failed chunks' errors, stuck pods, counts of the hex chunks."""
        report = self.reports.get(t.job.step) or progress.from_state(t.job.step, t.job.name, t.state)
        self.reports[t.job.step] = report
        if t.job.step == "hex" and self.counts is not None:
            report.features, report.cells = self.counts.update()
        chunks_failed = bool(t.state.failed_indexes) or t.state.phase == "failed"
        if t.finished and not chunks_failed:
            return
        pods = self.api.list("Pod", self.namespace, label_selector=job_pods(t.job.name))
        if chunks_failed:
            report.failed_chunks = progress.failed_chunk_errors(
                self.api, self.namespace, pods, report.failed_chunks, t.state
            )
        if t.finished:
            return
        stuck = stuck_pods(pods, self.now(), self.first_seen, self.graces)
        if stuck is not None:
            report.stuck = stuck
            self.say(f"{t.job.step}: {stuck}")
            self.api.delete("Job", self.namespace, t.job.name)
            self.say(f"{t.job.step}: deleted Job {t.job.name} (its pods cannot start)")
            message = f"step {t.job.step} cannot start: {stuck}"
            self.record("failed", message)
            raise PodsStuckError(message)

    def say(self, msg: str) -> None:
        log.info("[%s] %s", time.strftime("%H:%M:%S", time.localtime(self.now())), msg)

    def _stale(self, t: _Tracked, live: dict[str, Any] | None) -> spechash.Stale | None:
        return spechash.find_stale(live, t.job.name, t.job.source or t.job.step, t.spec_hash)

    def check_none_stale(self) -> None:
        """Before creating anything: a Job left by a run with other settings must not be skipped."""
        stale = [
            s
            for t in self.tracked.values()
            if (s := self._stale(t, self.api.get("Job", self.namespace, t.job.name))) is not None
        ]
        if stale:
            raise spechash.stale_error(self.namespace, stale)

    def start_ready(self) -> None:
        """Start every Job whose dependencies are complete, or adopt the one that exists; a stale
        one among them stops the workflow before any of them is created."""
        while True:  # an adopted complete Job makes its dependents ready at once
            ready = [
                t
                for t in self.tracked.values()
                if not t.started and all(self.tracked[d].state.phase == "complete" for d in t.job.depends_on)
            ]
            if not ready:
                return
            existing = {t.job.step: self.api.get("Job", self.namespace, t.job.name) for t in ready}
            for t in ready:
                self._check_fresh(t, existing[t.job.step])
            for t in ready:
                t.state = job_state(self._create_or_adopt(t, existing[t.job.step]))
                t.started = True

    def _create_or_adopt(self, t: _Tracked, existing: dict[str, Any] | None) -> dict[str, Any] | None:
        name, step = t.job.name, t.job.step
        if existing is None:
            manifest = self.sized(t) if spechash.sized_at_run(t.job.manifest) else t.job.manifest
            body = spechash.with_hash(manifest, t.spec_hash)
            body["metadata"] = dict(body["metadata"], namespace=self.namespace)
            try:
                created = self.api.create(self.namespace, body)
                self.say(f"{step}: created Job {name}")
                return created
            except AlreadyExists:  # another orchestrator pod was quicker
                existing = self.api.get("Job", self.namespace, name)
                self._check_fresh(t, existing)
                self.say(f"{step}: Job {name} was created meanwhile — waiting for it")
                return existing
        phase = job_state(existing).phase
        if phase == "complete":
            self.say(f"{step}: Job {name} is already complete — skipped")
        else:
            self.say(f"{step}: Job {name} already exists ({phase}) — waiting for it")
        return existing

    def sized(self, t: _Tracked) -> dict[str, Any]:
        """The Job of a step whose chunks the plan could not size, sized from its input (the
        converted GeoParquet) as ``run`` sizes them; the folder's Job when that cannot be done."""
        from cng_datasets.estimate import plan_from_geoparquet

        folder = t.job.manifest
        spec = folder.get("spec") or {}
        as_written = f"{spec.get('completions')} chunks as written in {t.job.source or 'the folder'}"
        source = self.plan.step(t.job.step).inputs[0]
        try:
            plan = plan_from_geoparquet(self.plan.config, source)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the folder's Job is a safe fallback
            self.say(f"{t.job.step}: cannot size the chunks from {source} ({first_line(exc)}); {as_written}")
            return folder
        sized = manifests.step_job(plan, plan.step(t.job.step), sized_at_run=True)
        if spechash.spec_content(sized) != spechash.spec_content(folder):  # e.g. the YAML was edited by hand
            self.say(f"{t.job.step}: its Job differs from the plan's beyond the chunking; {as_written}")
            return folder
        ch = plan.chunking
        rows = f", ~{ch.hex_rows:,} hex rows" if ch.hex_rows is not None else ""
        self.say(
            f"{t.job.step}: sized from {source}: {ch.feature_count:,} features{rows} → {ch.describe()}, "
            f"{ch.parallelism} in parallel (was {as_written})"
        )
        return sized

    def _check_fresh(self, t: _Tracked, live: dict[str, Any] | None) -> None:
        stale = self._stale(t, live)
        if stale is not None:
            raise spechash.stale_error(self.namespace, [stale])

    def refresh(self) -> None:
        """Read the state of every started, unfinished Job; log what changed (and a heartbeat)."""
        for t in self.tracked.values():
            if not t.started or t.finished:
                continue
            job = self.api.get("Job", self.namespace, t.job.name)
            if job is None:
                raise ClusterError(f"step {t.job.step}: Job {t.job.name} disappeared (deleted while running?)")
            t.state = job_state(job)
            self.observe(t)
            line = t.state.progress()
            if line != t.last_line or self.now() - t.last_logged >= self.heartbeat:
                self.say(f"{t.job.step}: {line}")
                t.last_line, t.last_logged = line, self.now()

    def failure(self, failed: list[_Tracked]) -> ClusterError:
        """Log the full report of each failed Job; the one-line error naming them all."""
        summaries = []
        for t in failed:
            lines, summary = failure_report(self.api, self.namespace, t.job.step, t.job.name, t.state)
            for line in lines:
                self.say(line)
            summaries.append(summary)
        still = [t.job.step for t in self.tracked.values() if t.started and not t.finished]
        if still:
            self.say(f"still running in the cluster (not stopped): {', '.join(still)}")
        return ClusterError("; ".join(summaries))


def orchestrate(
    api: KubeApi,
    yamls: str | Path,
    namespace: str,
    poll_interval: float = 10.0,
    heartbeat: float = 300.0,
    sleep: Callable[[float], None] | None = None,
    now: Callable[[], float] | None = None,
    graces: Graces | None = None,
    counts: bool = False,
) -> dict[str, JobState]:
    """Run the workflow's Jobs to completion in the order of ``yamls/plan.json``; return each
    step's final state. ``counts``: read the hex chunk markers from the bucket for the progress
    record (needs the S3 credentials in the environment).

    Raises :class:`ClusterError` when a Job fails (after logging the full report),
    :class:`PodsStuckError` when a step's pods cannot start, :class:`StaleJobError` for a Job of
    other settings, :class:`~cng_datasets.errors.UsageError` for a folder without a valid plan or
    with a step's Job missing.
    """
    sleep = sleep or time.sleep
    plan = load_plan(yamls)
    config = plan.config
    run = _Orchestrator(
        api,
        namespace,
        plan,
        load_step_jobs(yamls),
        heartbeat,
        now or time.time,
        graces or Graces(),
        progress.ChunkCounts(config.chunks_url) if counts else None,
    )
    run.say(
        f"workflow in namespace {namespace}: "
        + ", ".join(
            t.job.step + (f" (after {'+'.join(t.job.depends_on)})" if t.job.depends_on else "")
            for t in run.tracked.values()
        )
    )
    run.check_none_stale()
    while True:
        run.start_ready()
        run.refresh()
        failed = [t for t in run.tracked.values() if t.state.phase == "failed"]
        if failed:
            error = run.failure(failed)
            run.record("failed", str(error))
            raise error
        if all(t.state.phase == "complete" for t in run.tracked.values()):
            run.record("complete")
            run.say(
                "workflow complete: "
                + ", ".join(f"{s} {fmt_duration(t.state.duration())}" for s, t in run.tracked.items())
            )
            return {s: t.state for s, t in run.tracked.items()}
        run.record("running")
        sleep(poll_interval)

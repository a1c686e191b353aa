"""``submit``, ``status``, ``logs`` and ``cleanup`` of a generated workflow folder, from a laptop.

These run with the user's own credentials (kubeconfig), not the workflow's ServiceAccount.

``submit DIR`` first runs the checks of :mod:`cng_datasets.k8s.preflight` (unless told not to),
then does in one command what the manual recipe does in eight:

0. if a Job of the workflow's name exists with another ``cng-datasets/spec-hash`` than DIR's (an
   earlier run with other settings, see :mod:`cng_datasets.k8s.spechash`): stop with an error
   naming it — or, with ``--replace-stale``, delete exactly those Jobs (orchestrator first) and go
   on; Jobs that match DIR are kept, so unchanged finished steps are still skipped;
1. if ``<ds>-workflow`` already exists: report it and stop (idempotent; ``--retry-failed`` deletes
   the failed Jobs first so the orchestrator runs them again, keeping every completed step);
2. apply ``workflow-rbac.yaml`` (create, or update the Role / RoleBinding if they exist);
3. create the PVC (kept if it exists);
4. create the upload Job (a finished one from an earlier submit is replaced) and wait for its pod;
5. copy every YAML of DIR into ``/yamls`` through the exec API (``receive-yamls --put``; no
   kubectl needed), then the ``.complete`` marker;
6. wait for the upload Job to complete, create the orchestrator Job and print how to follow it.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cng_datasets.errors import ClusterError, UsageError, WaitTimeoutError
from cng_datasets.k8s import names, progress, receive, spechash
from cng_datasets.k8s.api import AlreadyExists, KubeApi
from cng_datasets.k8s.folder import (
    StepJob,
    container_argv,
    load_step_jobs,
    read_yaml_docs,
)
from cng_datasets.k8s.jobs import (
    Graces,
    Polled,
    failure_report,
    job_state,
    parse_indexes,
    pod_index,
    pod_termination,
    poll_until,
    sort_pods_failing_first,
    stuck_pods,
    wait_for_jobs,
    waiting_state,
)
from cng_datasets.k8s.labels import LABEL_DATASET, job_pods
from cng_datasets.k8s.progress import StepReport
from cng_datasets.k8s.spechash import Stale, find_stale, stale_error

log = logging.getLogger("cng_datasets")

T = TypeVar("T")

RBAC_KINDS = ("ServiceAccount", "Role", "RoleBinding")


@dataclass
class Workflow:
    """The documents of a folder written by ``cng-datasets workflow``."""

    dir: Path
    namespace: str
    steps: list[StepJob]
    upload: dict[str, Any]
    orchestrator: dict[str, Any]
    pvc: dict[str, Any]
    rbac: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    @property
    def upload_name(self) -> str:
        return str(self.upload["metadata"]["name"])

    @property
    def workflow_name(self) -> str:
        return str(self.orchestrator["metadata"]["name"])

    def job_names(self) -> dict[str, str]:
        """step (or ``upload`` / ``workflow``) → Job name, in running order."""
        out = {"upload": self.upload_name, "workflow": self.workflow_name}
        out.update({s.step: s.name for s in self.steps})
        return out

    def spec_hashes(self) -> dict[str, str]:
        """step (or ``upload`` / ``workflow``) → the spec hash its Job must carry (recomputed
        from the YAMLs, as the orchestrator does; the orchestrator's covers every step's)."""
        steps = spechash.step_hashes((s.step, s.manifest, s.depends_on) for s in self.steps)
        return {
            "upload": spechash.spec_hash(self.upload),
            "workflow": spechash.workflow_hash(self.orchestrator, steps),
            **steps,
        }

    def sources(self) -> dict[str, str]:
        """step (or ``upload`` / ``workflow``) → the file its Job comes from, for messages."""
        return {
            "upload": "workflow-upload.yaml",
            "workflow": "workflow.yaml",
            **{s.step: s.source or s.step for s in self.steps},
        }


def _mount_dir(job: dict[str, Any]) -> str:
    argv = container_argv(job)
    for flag in ("--dir", "--yamls"):
        if flag in argv:
            return argv[argv.index(flag) + 1]
    return "/yamls"


def load_workflow(directory: str | Path) -> Workflow:
    """Read DIR (its steps in the order of its plan.json); raise :class:`UsageError` naming what is
    missing."""
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"{d} is not a directory (write one with `cng-datasets workflow --output-dir {d}`)")
    files = sorted(p for p in list(d.glob("*.yaml")) + list(d.glob("*.yml")) if not p.name.startswith("."))
    steps = load_step_jobs(d)
    upload = orchestrator = pvc = None
    rbac: list[dict[str, Any]] = []
    for path in files:
        for doc in read_yaml_docs(path):
            kind = doc.get("kind")
            if kind in RBAC_KINDS:
                rbac.append(doc)
            elif kind == "PersistentVolumeClaim":
                pvc = doc
            elif kind == "Job":
                argv = container_argv(doc)
                sub = argv[1] if len(argv) > 1 else ""
                if sub == "receive-yamls":
                    upload = doc
                elif sub == "orchestrate":
                    orchestrator = doc
    missing = [
        what
        for what, doc in (
            ("the upload Job (workflow-upload.yaml)", upload),
            ("the orchestrator Job (workflow.yaml)", orchestrator),
            ("the PVC (workflow-pvc.yaml)", pvc),
        )
        if doc is None
    ]
    if missing:
        raise UsageError(f"{d} has no {', no '.join(missing)}; write the folder with `cng-datasets workflow`")
    assert upload is not None and orchestrator is not None and pvc is not None
    namespace = str(orchestrator["metadata"].get("namespace") or "default")
    for doc in [upload, pvc, *rbac, *(s.manifest for s in steps)]:
        ns = doc["metadata"].get("namespace")
        if ns and ns != namespace:
            raise UsageError(
                f"{doc['kind']} {doc['metadata']['name']} is in namespace {ns}, the workflow in {namespace}"
            )
    # the plan goes to the PVC with the Jobs: the orchestrator's order
    return Workflow(d, namespace, steps, upload, orchestrator, pvc, rbac, [*files, d / names.PLAN_FILE])


def _body(doc: dict[str, Any], namespace: str, spec_hash: str | None = None) -> dict[str, Any]:
    body = spechash.with_hash(doc, spec_hash) if spec_hash else dict(doc)
    body["metadata"] = dict(body["metadata"], namespace=namespace)
    return body


def stale_jobs(api: KubeApi, wf: Workflow) -> list[Stale]:
    """The workflow's Jobs in the cluster whose spec-hash is not DIR's, orchestrator first (a
    finished upload Job does not count: submit replaces it anyway)."""
    hashes, names, sources = wf.spec_hashes(), wf.job_names(), wf.sources()
    out = []
    for key in ["workflow", *(s.step for s in reversed(wf.steps)), "upload"]:
        live = api.get("Job", wf.namespace, names[key])
        if key == "upload" and job_state(live).phase in ("complete", "failed"):
            continue
        stale = find_stale(live, names[key], sources[key], hashes[key])
        if stale is not None:
            out.append(stale)
    return out


# ---- submit ----------------------------------------------------------------------------------

#: Seconds to wait for a deleted Job to be gone.
DELETE_TIMEOUT = 120.0


@dataclass(frozen=True)
class _Waits:
    """How ``submit`` waits: ``timeout`` for the upload, every ``poll`` seconds, on this clock."""

    timeout: float
    poll: float
    sleep: Callable[[float], None]
    clock: Callable[[], float]

    def until(self, check: Callable[[], T | None], timeout: float | None = None) -> Polled[T]:
        return poll_until(check, self.timeout if timeout is None else timeout, self.sleep, self.poll, self.clock)


def _upload_pod(api: KubeApi, wf: Workflow) -> dict[str, Any] | None:
    """The Running upload pod, ``None`` while it is starting; raises if it failed."""
    pods = api.list("Pod", wf.namespace, label_selector=job_pods(wf.upload_name))
    for p in pods:
        st = p.get("status") or {}
        if st.get("phase") == "Running" and all(
            "running" in (cs.get("state") or {}) for cs in st.get("containerStatuses") or []
        ):
            return p
    state = job_state(api.get("Job", wf.namespace, wf.upload_name))
    if state.phase == "failed":
        raise ClusterError(f"the upload Job {wf.upload_name} failed ({state.reason}): {state.message}")
    return None


def _pod_waiting_reason(api: KubeApi, wf: Workflow) -> str:
    for p in api.list("Pod", wf.namespace, label_selector=job_pods(wf.upload_name)):
        waiting = waiting_state(p)
        if waiting is not None:
            return f" (pod {p['metadata']['name']}: {waiting[0]} {waiting[1]})".rstrip()
        for c in (p.get("status") or {}).get("conditions") or []:
            if c.get("type") == "PodScheduled" and c.get("status") != "True":
                return f" (pod {p['metadata']['name']} not scheduled: {c.get('message') or c.get('reason')})"
    return ""


def _delete_and_wait(api: KubeApi, wf: Workflow, name: str, waits: _Waits) -> None:
    if not api.delete("Job", wf.namespace, name):
        return
    if waits.until(lambda: api.get("Job", wf.namespace, name) is None, DELETE_TIMEOUT).timed_out:
        raise WaitTimeoutError(f"timed out after {DELETE_TIMEOUT:.0f} s waiting for Job {name} to be deleted")


def _replace_stale_and_failed(
    api: KubeApi,
    wf: Workflow,
    retry_failed: bool,
    replace_stale: bool,
    waits: _Waits,
    echo: Callable[[str], None],
) -> str | None:
    """Step 0: Jobs of an earlier run with other settings are never taken for this run's; an
    existing workflow is reported (``"complete"`` / ``"running"``), a failed one retried on request."""
    ns = wf.namespace
    stale = stale_jobs(api, wf)
    if stale and not replace_stale:
        raise stale_error(ns, stale, shlex.quote(str(wf.dir)))
    for s in stale:  # the orchestrator first, so it cannot recreate a step meanwhile
        echo(f"deleting Job {s.job}: it ran other settings than {s.source}")
        _delete_and_wait(api, wf, s.job, waits)

    existing = api.get("Job", ns, wf.workflow_name)
    if existing is not None:
        state = job_state(existing)
        status_cmd = f"cng-datasets status {wf.dir}"
        if state.phase == "complete":
            echo(f"workflow {wf.workflow_name} has already completed; nothing to do ({status_cmd})")
            return "complete"
        if state.phase != "failed":
            echo(f"workflow {wf.workflow_name} is already running; follow it with: {_follow(wf)}")
            return "running"
        if not retry_failed:
            raise ClusterError(
                f"workflow {wf.workflow_name} failed earlier ({state.reason}); see `{status_cmd}` and "
                f"`cng-datasets logs {wf.dir}`, then run `cng-datasets submit {wf.dir} --retry-failed` "
                "(completed steps are kept)"
            )
    if retry_failed:
        for name in [s.name for s in wf.steps] + [wf.workflow_name]:
            if job_state(api.get("Job", ns, name)).phase == "failed":
                echo(f"deleting failed Job {name}")
                _delete_and_wait(api, wf, name, waits)
    return None


def _apply_rbac_and_pvc(api: KubeApi, wf: Workflow, echo: Callable[[str], None]) -> None:
    """Steps 1 and 2: the RBAC (shared by every dataset of the namespace: created, or its rules
    brought up to date) and the PVC (kept if it exists)."""
    ns = wf.namespace
    for doc in wf.rbac:
        body = _body(doc, ns)
        try:
            api.create(ns, body)
            echo(f"created {doc['kind']} {doc['metadata']['name']}")
        except AlreadyExists:
            if doc["kind"] in ("Role", "RoleBinding"):
                api.replace(ns, body)
    try:
        api.create(ns, _body(wf.pvc, ns))
        echo(f"created PersistentVolumeClaim {wf.pvc['metadata']['name']}")
    except AlreadyExists:
        pass


def _start_upload(api: KubeApi, wf: Workflow, waits: _Waits, echo: Callable[[str], None]) -> dict[str, Any]:
    """Step 3: the upload Job (a finished one, from an earlier submit, cannot receive again);
    returns its Running pod."""
    ns = wf.namespace
    upload_state = job_state(api.get("Job", ns, wf.upload_name))
    if upload_state.phase in ("complete", "failed"):
        _delete_and_wait(api, wf, wf.upload_name, waits)
        upload_state = job_state(None)
    if upload_state.phase == "absent":
        want = wf.spec_hashes()["upload"]
        try:
            api.create(ns, _body(wf.upload, ns, want))
            echo(f"created Job {wf.upload_name}")
        except AlreadyExists:  # another submit was quicker: use its receiver only if it is ours
            other = find_stale(api.get("Job", ns, wf.upload_name), wf.upload_name, "workflow-upload.yaml", want)
            if other is not None:
                raise stale_error(ns, [other], shlex.quote(str(wf.dir))) from None
    echo(f"waiting for the upload pod of {wf.upload_name} …")
    polled = waits.until(lambda: _upload_pod(api, wf))
    if polled.value is None:
        raise WaitTimeoutError(
            f"timed out after {waits.timeout:.0f} s waiting for the upload pod of {wf.upload_name} to run"
            f"{_pod_waiting_reason(api, wf)}"
        )
    return polled.value


def _copy_files(api: KubeApi, wf: Workflow, pod: dict[str, Any], echo: Callable[[str], None]) -> None:
    """Step 4: every file of DIR (the YAMLs and plan.json) into the PVC through the exec API,
    then the ``.complete`` marker."""
    pod_name = pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]["name"]
    target = _mount_dir(wf.upload)
    for path in wf.files:
        for cmd in receive.put_commands(target, path.name, path.read_bytes()):
            api.exec(wf.namespace, pod_name, cmd, container=container)
    api.exec(wf.namespace, pod_name, receive.complete_command(target), container=container)
    echo(f"copied {len(wf.files)} files to {pod_name}:{target}")


def _start_orchestrator(api: KubeApi, wf: Workflow, waits: _Waits) -> None:
    """Step 5: let the upload pod finish (the PVC is ReadWriteOnce), then start the orchestrator."""
    ns = wf.namespace
    outcome = wait_for_jobs(api, ns, [wf.upload_name], waits.timeout, waits.sleep, waits.poll, waits.clock)
    if wf.upload_name in outcome.failed:
        _, summary = failure_report(api, ns, "upload", wf.upload_name, outcome.failed[wf.upload_name])
        raise ClusterError(summary)
    if outcome.timed_out:
        raise WaitTimeoutError(f"timed out after {waits.timeout:.0f} s waiting for Job {wf.upload_name} to complete")
    want = wf.spec_hashes()["workflow"]
    try:
        api.create(ns, _body(wf.orchestrator, ns, want))
    except AlreadyExists:  # another submit was quicker: fine if it runs the same workflow
        other = find_stale(api.get("Job", ns, wf.workflow_name), wf.workflow_name, "workflow.yaml", want)
        if other is not None:
            raise stale_error(ns, [other], shlex.quote(str(wf.dir))) from None


def _will_start(api: KubeApi, wf: Workflow) -> bool:
    """Whether submit is going to start the workflow (not only report a live one of DIR's settings)."""
    live = api.get("Job", wf.namespace, wf.workflow_name)
    if live is None or job_state(live).phase == "failed":
        return True
    return find_stale(live, wf.workflow_name, "workflow.yaml", wf.spec_hashes()["workflow"]) is not None


def _follow(wf: Workflow) -> str:
    return f"kubectl logs -f job/{wf.workflow_name} -n {wf.namespace}"


@dataclass(frozen=True)
class SubmitOptions:
    """``--retry-failed``, ``--replace-stale``, how long (``timeout``, every ``poll_interval``
    seconds) to wait for the upload, and whether to run the preflight checks first."""

    retry_failed: bool = False
    replace_stale: bool = False
    timeout: float = 600
    poll_interval: float = 2.0
    preflight: bool = True


def submit(
    api: KubeApi,
    wf: Workflow,
    options: SubmitOptions | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    echo: Callable[[str], None] = print,
) -> str:
    """Start the workflow; returns ``"submitted"``, ``"running"`` or ``"complete"``."""
    opts = options or SubmitOptions()
    if opts.preflight and _will_start(api, wf):
        from cng_datasets.k8s.preflight import preflight

        preflight(api, wf, echo)
    waits = _Waits(opts.timeout, opts.poll_interval, sleep, clock)
    already = _replace_stale_and_failed(api, wf, opts.retry_failed, opts.replace_stale, waits, echo)
    if already is not None:
        return already
    _apply_rbac_and_pvc(api, wf, echo)
    pod = _start_upload(api, wf, waits, echo)
    _copy_files(api, wf, pod, echo)
    _start_orchestrator(api, wf, waits)
    echo(f"started Job {wf.workflow_name}; the laptop may disconnect now.")
    echo(f"follow it with: {_follow(wf)}")
    echo(f"or check on it with: cng-datasets status {wf.dir}")
    return "submitted"


# ---- status ------------------------------------------------------------------------------------


@dataclass
class WorkflowStatus:
    """What ``status`` shows: a report per Job (upload, orchestrator, then the steps in plan
    order) and how the orchestrator's record says the workflow ended, if it did."""

    reports: list[StepReport]
    state: str = ""  # "running", "complete", "failed" (from the record), "" when none
    message: str = ""
    updated: str = ""

    @property
    def finished(self) -> bool:
        """Nothing more will happen without the user: complete, failed, or an orchestrator that is gone."""
        by = {r.step: r for r in self.reports}
        orchestrator = by.get("workflow")
        if orchestrator is None or orchestrator.phase in ("absent", "complete", "failed"):
            return True
        return all(r.phase in ("complete", "failed") for r in self.reports if r.step not in ("upload", "workflow"))


def status(
    api: KubeApi,
    wf: Workflow,
    now: float | None = None,
    graces: Graces | None = None,
) -> WorkflowStatus:
    """Each Job's state, from the live Jobs and their pods (stuck Pending ones, the error line of
    each failed chunk), completed by the orchestrator's progress record (counts of features and
    cells, errors of chunks whose pods are gone, how it ended)."""
    now = time.time() if now is None else now
    dataset = (wf.orchestrator["metadata"].get("labels") or {}).get(LABEL_DATASET, "")
    doc = progress.read_progress(api, wf.namespace, progress.configmap_name(dataset)) if dataset else None
    recorded = progress.reports_of(doc)
    reports = []
    for step, name in wf.job_names().items():
        state = job_state(api.get("Job", wf.namespace, name))
        report = progress.from_state(step, name, state)
        if state.phase not in ("absent", "complete"):
            pods = api.list("Pod", wf.namespace, label_selector=job_pods(name))
            if state.phase != "failed":
                report.stuck = stuck_pods(pods, now, {}, graces or Graces(unschedulable=0, image=0)) or ""
            report.failed_chunks = progress.failed_chunk_errors(api, wf.namespace, pods, {}, state)
        reports.append(progress.merge(report, recorded.get(step)))
    record = doc or {}
    return WorkflowStatus(
        reports, str(record.get("state", "")), str(record.get("message", "")), str(record.get("updated", ""))
    )


def format_status(st: WorkflowStatus, now: float | None = None) -> str:
    """The table of :func:`status`, the notes below it and the orchestrator's last word."""
    text = progress.format_reports(st.reports, time.time() if now is None else now)
    if st.state in ("failed", "complete") and st.message:
        text += f"\nworkflow {st.state}: {st.message}"
    if st.updated:
        text += f"\n(progress recorded by the orchestrator at {st.updated})"
    return text


# ---- logs --------------------------------------------------------------------------------------


def logs(
    api: KubeApi,
    wf: Workflow,
    step: str | None = None,
    tail: int | None = 200,
    max_pods: int = 5,
    chunk: int | None = None,
) -> str:
    """The logs of a step's pods, failing ones first; with ``chunk``, only the pods (every attempt)
    of that completion index of an Indexed Job. Default step: the first failed step, else the
    orchestrator (``workflow``)."""
    names = wf.job_names()
    if step is None:
        step = next(
            (s.step for s in wf.steps if job_state(api.get("Job", wf.namespace, s.name)).phase == "failed"), "workflow"
        )
    if step not in names:
        raise UsageError(f"unknown step {step!r}; one of {', '.join(names)}")
    job = names[step]
    pods = sort_pods_failing_first(api.list("Pod", wf.namespace, label_selector=job_pods(job)))
    if chunk is not None:
        indexed = next((s.manifest for s in wf.steps if s.step == step), {}).get("spec", {})
        if indexed.get("completionMode") != "Indexed":
            raise UsageError(f"--chunk: step {step} has no chunks (only the hex step is an Indexed Job)")
        if chunk >= int(indexed.get("completions") or 0):
            raise UsageError(f"--chunk {chunk}: step {step} has chunks 0..{int(indexed['completions']) - 1}")
        pods = [p for p in pods if pod_index(p) == chunk]
        if not pods:
            return f"{step}: no pods of chunk {chunk} of Job {job} (not started yet, or removed)"
    if not pods:
        return f"{step}: no pods of Job {job} (not started yet, or removed)"
    out = []
    for p in pods[:max_pods]:
        st = p.get("status") or {}
        idx = pod_index(p)
        reason, code = pod_termination(p)
        head = f"==> {p['metadata']['name']}" + (f" (index {idx})" if idx is not None else "")
        head += (
            f" {st.get('phase', '?')}"
            + (f" {reason}" if reason else "")
            + (f" exit {code}" if code is not None else "")
        )
        out.append(head + " <==")
        out.append(api.pod_log(wf.namespace, p["metadata"]["name"], tail_lines=tail).rstrip())
    if len(pods) > max_pods:
        out.append(f"… {len(pods) - max_pods} more pods (kubectl get pods -l job-name={job} -n {wf.namespace})")
    return "\n".join(out)


# ---- cleanup -----------------------------------------------------------------------------------


def output_urls(wf: Workflow) -> tuple[list[str], list[str]]:
    """(objects, prefixes) the workflow writes, read from the step Jobs' argv."""
    objects: list[str] = []
    prefixes: list[str] = []
    for s in wf.steps:
        argv = container_argv(s.manifest)
        urls = []
        if "--output" in argv:
            urls.append(argv[argv.index("--output") + 1])
        if len(argv) > 1 and argv[1] == "convert" and "--" in argv:
            urls.append(argv[-1])
        for url in urls:
            target = objects if url.endswith((".parquet", ".pmtiles")) else prefixes
            if url not in target:
                target.append(url)
    for url in prefixes:
        from cng_datasets import storage

        loc = storage.parse(url)
        if not loc.is_local and not loc.key.strip("/"):
            raise UsageError(f"refusing to delete the whole bucket {url}")
    return objects, prefixes


def cleanup(
    api: KubeApi,
    wf: Workflow,
    data: bool = False,
    confirm: Callable[[list[str]], bool] = lambda urls: False,
    echo: Callable[[str], None] = print,
) -> dict[str, int]:
    """Delete the dataset's Jobs (orchestrator first, so nothing recreates them) and its PVC; the
    shared RBAC stays. With ``data``, also the outputs, if ``confirm(urls)`` agrees."""
    ns = wf.namespace
    deleted_jobs = 0
    for name in [wf.workflow_name, wf.upload_name, *(s.name for s in reversed(wf.steps))]:
        if api.delete("Job", ns, name):
            echo(f"deleted Job {name}")
            deleted_jobs += 1
    pvc_name = wf.pvc["metadata"]["name"]
    deleted_pvc = int(api.delete("PersistentVolumeClaim", ns, pvc_name))
    if deleted_pvc:
        echo(f"deleted PersistentVolumeClaim {pvc_name}")
    if deleted_jobs + deleted_pvc == 0:
        echo(f"nothing of {wf.workflow_name} left in namespace {ns}")
    deleted_objects = 0
    if data:
        from cng_datasets import storage

        objects, prefixes = output_urls(wf)
        listing = objects + [p.rstrip("/") + "/" for p in prefixes]
        if not confirm(listing):
            echo("outputs kept")
        else:
            for url in objects:
                if storage.exists(url):
                    storage.delete(url)
                    deleted_objects += 1
                    echo(f"deleted {url}")
            for url in prefixes:
                n = storage.delete_prefix(url)
                deleted_objects += n
                echo(f"deleted {n} objects below {url}/")
    return {"jobs": deleted_jobs, "pvc": deleted_pvc, "objects": deleted_objects}


__all__ = [
    "Workflow",
    "load_workflow",
    "submit",
    "status",
    "format_status",
    "logs",
    "cleanup",
    "output_urls",
    "parse_indexes",
]

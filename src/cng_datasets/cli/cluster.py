"""Cluster commands: ``orchestrate`` (in the cluster), ``preflight``, ``submit``, ``status``, ``logs``, ``cleanup``
(from a laptop) and ``receive-yamls`` (the upload pod).

The Kubernetes client is imported inside the command functions, so ``--help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import click

from cng_datasets.cli.common import LOGGER_NAME, handle_errors

if TYPE_CHECKING:  # imported in the commands only, so --help stays fast
    from cng_datasets.k8s.api import KubeApi

log = logging.getLogger(LOGGER_NAME)

_DIR = click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, exists=True))
_CONTEXT = click.option("--context", default=None, help="kubeconfig context (default: the current one).")


def _connect(context: str | None = None) -> KubeApi:
    from cng_datasets.k8s import api

    return api.connect(context)


@click.command("orchestrate")
@click.option(
    "--yamls", required=True, type=click.Path(file_okay=False), help="Folder with plan.json and the step Job YAMLs."
)
@click.option("--namespace", default=None, help="Namespace of the Jobs (default: this pod's namespace).")
@click.option(
    "--poll-interval",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between status checks.",
)
@click.option(
    "--heartbeat",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Repeat an unchanged progress line after this many seconds.",
)
@click.option(
    "--unschedulable-grace",
    default=900.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a pod may stay Unschedulable (e.g. while an autoscaler adds a Node) before its step fails.",
)
@click.option(
    "--image-grace",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a pod may fail to pull its image (or create its container) before its step fails.",
)
@click.option(
    "--counts/--no-counts",
    default=None,
    help="Read the hex chunk markers for feature and cell counts.  [default: when S3 keys are set]",
)
@handle_errors
def orchestrate(
    yamls: str,
    namespace: str | None,
    poll_interval: float,
    heartbeat: float,
    unschedulable_grace: float,
    image_grace: float,
    counts: bool | None,
) -> None:
    """Create the workflow's Jobs in the order of plan.json and wait for them (runs in the cluster).

    Jobs that already exist are not recreated: Complete ones are skipped, running ones awaited, a
    Failed one is reported (reason, failed indexes, pod termination, log command) with exit 1; a
    step whose pods cannot start (Unschedulable, image pull) is failed and its Job deleted. Progress
    goes to the ConfigMap <dataset>-progress, which `cng-datasets status` reads. A
    Job left by a run with other settings (its cng-datasets/spec-hash annotation differs from the
    YAML's) is neither: the command stops at once naming it (exit 65); replace it with
    `cng-datasets submit DIR --replace-stale`.
    """
    import os

    from cng_datasets.errors import UsageError
    from cng_datasets.k8s import api as k8s_api
    from cng_datasets.k8s.jobs import Graces
    from cng_datasets.k8s.orchestrator import orchestrate as run

    ns = namespace or k8s_api.in_cluster_namespace()
    if not ns:
        raise UsageError("--namespace is required outside a cluster")
    if counts is None:
        counts = bool(os.environ.get("AWS_ACCESS_KEY_ID"))
    graces = Graces(unschedulable=unschedulable_grace, image=image_grace)
    run(_connect(), yamls, ns, poll_interval=poll_interval, heartbeat=heartbeat, graces=graces, counts=counts)


@click.command("submit")
@_DIR
@_CONTEXT
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Delete the failed Jobs of an earlier run and run them again (completed steps are kept).",
)
@click.option(
    "--replace-stale",
    is_flag=True,
    help="Delete the Jobs an earlier run with other settings left (spec-hash differs from DIR's) "
    "and run them again; Jobs that match DIR are kept.",
)
@click.option(
    "--timeout",
    default=600.0,
    show_default=True,
    type=click.FloatRange(min=1),
    help="Seconds to wait for the upload pod.",
)
@click.option("--skip-preflight", is_flag=True, help="Do not run the preflight checks first.")
@handle_errors
def submit(
    directory: str, context: str | None, retry_failed: bool, replace_stale: bool, timeout: float, skip_preflight: bool
) -> None:
    """Start the workflow written to DIR by `cng-datasets workflow` on the cluster.

    Applies the RBAC, the PVC and the upload Job, copies the YAMLs into the PVC through the
    Kubernetes API (no kubectl needed) and starts the orchestrator Job. Safe to run twice.
    Jobs of an earlier run with other settings stop it with an error (exit 65) unless
    --replace-stale; the outputs are never deleted.
    """
    from cng_datasets.k8s.submit import SubmitOptions, load_workflow
    from cng_datasets.k8s.submit import submit as run

    wf = load_workflow(directory)
    options = SubmitOptions(retry_failed, replace_stale, timeout, preflight=not skip_preflight)
    run(_connect(context), wf, options, echo=click.echo)


@click.command("preflight")
@_DIR
@_CONTEXT
@handle_errors
def preflight(directory: str, context: str | None) -> None:
    """Check that the cluster can run the workflow in DIR (submit runs this first).

    One line per check: the namespace exists; you may do what submit and the orchestrator do; the
    S3 Secret has its keys; the image reference is valid and its pull Secrets exist; the
    PriorityClass exists; a StorageClass can bind the PVC; every pod fits on some Node. A failed
    check says what to do (exit 1); one your credentials may not run is skipped.
    """
    from cng_datasets.k8s.preflight import preflight as run
    from cng_datasets.k8s.submit import load_workflow

    wf = load_workflow(directory)
    run(_connect(context), wf, echo=click.echo)
    click.echo(f"preflight: the cluster can run {wf.workflow_name}")


@click.command("status")
@_DIR
@_CONTEXT
@click.option("--watch", "-w", is_flag=True, help="Refresh until the workflow has finished (Ctrl-C to stop).")
@click.option(
    "--interval", default=10.0, show_default=True, type=click.FloatRange(min=1), help="Seconds between refreshes."
)
@handle_errors
def status(directory: str, context: str | None, watch: bool, interval: float) -> None:
    """Show each step's chunks done / failed / running of total, elapsed time and ETA, the failed
    chunks with the first line of their error, and pods stuck Pending (Unschedulable, image pull).

    Counts of features and cells, and what happened while you were away, come from the progress
    the orchestrator records in the ConfigMap <dataset>-progress.
    """
    import time

    from cng_datasets.k8s.submit import format_status, load_workflow
    from cng_datasets.k8s.submit import status as run

    wf = load_workflow(directory)
    api = _connect(context)
    live = watch and sys.stdout.isatty()
    while True:
        st = run(api, wf)
        text = f"namespace {wf.namespace}  {time.strftime('%H:%M:%S')}\n{format_status(st)}"
        if live:
            click.clear()
        click.echo(text)
        if not watch or st.finished:
            return
        if not live:
            click.echo("")
        time.sleep(interval)


@click.command("logs")
@_DIR
@click.argument("step", required=False)
@_CONTEXT
@click.option(
    "--tail", default=200, show_default=True, type=click.IntRange(min=0), help="Last lines per pod (0: everything)."
)
@click.option("--max-pods", default=5, show_default=True, type=click.IntRange(min=1), help="Pods to show.")
@click.option(
    "--chunk",
    type=click.IntRange(min=0),
    default=None,
    help="Only the pods of this hex chunk (its completion index); STEP defaults to hex.",
)
@handle_errors
def logs(directory: str, step: str | None, context: str | None, tail: int, max_pods: int, chunk: int | None) -> None:
    """Show the pod logs of STEP (convert, pmtiles, hex, repartition, catalog, upload, workflow), failing
    pods first. Without STEP: the first failed step, else the orchestrator."""
    from cng_datasets.k8s.submit import load_workflow
    from cng_datasets.k8s.submit import logs as run

    wf = load_workflow(directory)
    if chunk is not None and step is None:
        step = "hex"
    click.echo(run(_connect(context), wf, step, tail=tail or None, max_pods=max_pods, chunk=chunk))


@click.command("cleanup")
@_DIR
@_CONTEXT
@click.option("--data", is_flag=True, help="Also delete the dataset's outputs (parquet, pmtiles, hex/, chunks/).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting outputs.")
@handle_errors
def cleanup(directory: str, context: str | None, data: bool, yes: bool) -> None:
    """Delete the dataset's Jobs and PVC (never the shared RBAC); with --data, its outputs too."""
    from cng_datasets.k8s.submit import cleanup as run
    from cng_datasets.k8s.submit import load_workflow

    wf = load_workflow(directory)

    def confirm(urls: list[str]) -> bool:
        if yes:
            return True
        click.echo("This deletes:\n" + "\n".join(f"  {u}" for u in urls), err=True)
        if not sys.stdin.isatty():
            click.echo("not a terminal: pass --yes to delete the outputs", err=True)
            return False
        return click.confirm("Delete these outputs?", default=False, err=True)

    run(_connect(context), wf, data=data, confirm=confirm, echo=click.echo)


@click.command("receive-yamls")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False), help="Where the files go.")
@click.option("--expect", default="", help="Comma-separated file names to wait for.")
@click.option(
    "--timeout", default=3600.0, show_default=True, type=click.FloatRange(min=0), help="Seconds to wait before failing."
)
@click.option(
    "--stable-seconds",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Without a .complete marker: how long every file must keep its size.",
)
@click.option("--put", "put_name", default=None, help="Store one file (used by `submit` through exec).")
@click.option("--content-b64", default=None, help="Base64 content for --put.")
@click.option("--part", default=1, type=click.IntRange(min=1), help="Part number for --put.")
@click.option("--parts", default=1, type=click.IntRange(min=1), help="Number of parts for --put.")
@click.option("--sha256", default=None, help="SHA-256 of the whole file for --put.")
@click.option("--complete", "mark_complete", is_flag=True, help="Mark the upload complete (used by `submit`).")
@handle_errors
def receive_yamls(
    directory: str,
    expect: str,
    timeout: float,
    stable_seconds: float,
    put_name: str | None,
    content_b64: str | None,
    part: int,
    parts: int,
    sha256: str | None,
    mark_complete: bool,
) -> None:
    """Wait until the workflow YAMLs have arrived in --dir (the upload pod's command)."""
    from cng_datasets.errors import UsageError
    from cng_datasets.k8s import receive

    if put_name is not None:
        if content_b64 is None:
            raise UsageError("--put needs --content-b64")
        receive.put(directory, put_name, content_b64, part=part, parts=parts, sha256=sha256)
        return
    if mark_complete:
        receive.complete(directory)
        return
    names = [n.strip() for n in expect.split(",") if n.strip()]
    if not names:
        raise UsageError("--expect needs at least one file name")
    receive.receive(directory, names, timeout=timeout, stable_seconds=stable_seconds)

"""Honest progress on a cluster: pods that cannot start fail their step instead of waiting out the
deadline; the orchestrator's progress record (ConfigMap ``<ds>-progress``, counts read from real
chunk markers in a real S3 endpoint); ``status`` (ETA, failed chunks' errors, ``--watch``) and
``logs --chunk``. All against the fake cluster of tests/k8s/fake.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cng_datasets.config import DEFAULT_IMAGE, DEFAULT_RESOURCES, Resources
from cng_datasets.errors import PodsStuckError
from cng_datasets.k8s import rbac
from cng_datasets.k8s.folder import load_plan
from cng_datasets.k8s.jobs import Graces
from cng_datasets.k8s.orchestrator import orchestrate
from cng_datasets.k8s.progress import StepReport, error_line
from cng_datasets.k8s.submit import format_status, load_workflow, logs, status

from .fake import BAD_INPUT, HANG, OK, FakeCluster, Outcome, step_yamls, write_workflow

NS = "geo"
PROGRESS = ("ConfigMap", NS, "demo-places-progress")
GRACES = Graces(unschedulable=60, image=30)


@pytest.fixture
def cluster(tmp_path: Path) -> FakeCluster:
    c = FakeCluster(tmp_path / "cluster", user="system:serviceaccount:geo:cng-datasets-workflow")
    c.allow_only(rbac.RULES)
    return c


def run(cluster: FakeCluster, yamls: Path, **kw: Any) -> Any:
    return orchestrate(
        cluster.api(), yamls, NS, poll_interval=10, sleep=cluster.sleep, now=lambda: cluster.now, graces=GRACES, **kw
    )


def recorded(cluster: FakeCluster) -> dict[str, Any]:
    return json.loads(cluster.objects[PROGRESS]["data"]["progress.json"])


# ---- pods that cannot start --------------------------------------------------------------------


def test_a_pod_no_node_can_take_fails_its_step_after_the_grace(cluster: FakeCluster, tmp_path: Path) -> None:
    big = Resources(cpu="1", memory="100Gi", ephemeral_storage="20Gi")  # the one Node has 64Gi
    yamls = step_yamls(write_workflow(tmp_path / "wf", resources={**DEFAULT_RESOURCES, "hex": big}))
    with pytest.raises(PodsStuckError) as err:
        run(cluster, yamls)
    msg = str(err.value)
    assert msg.startswith("step hex cannot start: pod demo-places-hex-0-")
    assert " Unschedulable for 1m00s: 0/1 nodes are available: 1 Insufficient memory." in msg
    assert "lower the step's --<step>-cpu/--<step>-memory" in msg and "\n" not in msg
    assert "demo-places-hex" not in cluster.jobs()  # failed by deleting it: no Pending pods left behind
    assert cluster.now - 1_700_000_000 < 200  # not the Job's 24 h deadline
    doc = recorded(cluster)
    assert doc["state"] == "failed" and doc["message"] == msg
    assert doc["steps"]["hex"]["stuck"].startswith("pod demo-places-hex-0-")
    assert doc["steps"]["convert"]["phase"] == "complete"


def test_an_image_that_cannot_be_pulled_fails_the_first_step(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.unpullable.add(DEFAULT_IMAGE)
    yamls = step_yamls(write_workflow(tmp_path / "wf"))
    with pytest.raises(PodsStuckError) as err:
        run(cluster, yamls)
    msg = str(err.value)
    assert msg.startswith("step convert cannot start: pod demo-places-convert-")
    assert "ImagePullBackOff for " in msg and f'Back-off pulling image "{DEFAULT_IMAGE}"' in msg
    assert "--image-pull-secret" in msg


def test_a_pod_that_starts_within_the_grace_is_not_failed(cluster: FakeCluster, tmp_path: Path) -> None:
    """An autoscaler adds a Node after 30 s: the workflow goes on."""
    big = Resources(cpu="1", memory="100Gi", ephemeral_storage="20Gi")
    yamls = step_yamls(write_workflow(tmp_path / "wf", resources={**DEFAULT_RESOURCES, "hex": big}))
    ticks = 0

    def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        if cluster.pods(NS, "demo-places-hex") and ("Node", "", "big") not in cluster.objects:
            cluster.add_node("big", cpu="32", memory="256Gi")  # scaled up while the pods wait
        cluster.sleep(seconds)

    states = orchestrate(
        cluster.api(), yamls, NS, poll_interval=10, sleep=sleep, now=lambda: cluster.now, graces=GRACES
    )
    assert all(s.phase == "complete" for s in states.values())


def test_stuck_reasons_and_graces() -> None:
    from cng_datasets.k8s.jobs import stuck_pods

    def pod(reason: str) -> dict[str, Any]:
        waiting = {"reason": reason, "message": f"{reason}: details"}
        return {
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "containerStatuses": [{"state": {"waiting": waiting}}]},
        }

    graces = Graces(unschedulable=900, image=300)
    assert stuck_pods([pod("ContainerCreating")], 0, {}, graces) is None  # merely starting
    seen: dict[tuple[str, str], float] = {}
    assert stuck_pods([pod("ErrImagePull")], 0, seen, graces) is None
    assert stuck_pods([pod("ImagePullBackOff")], 100, seen, graces) is None
    # the reason changed from ErrImagePull to ImagePullBackOff: the grace runs from each first sight
    assert stuck_pods([pod("ImagePullBackOff")], 400, seen, graces) is not None
    hopeless = stuck_pods([pod("InvalidImageName")], 0, {}, graces)
    assert hopeless is not None and hopeless.startswith("pod p InvalidImageName: InvalidImageName: details")
    secret = stuck_pods([pod("CreateContainerConfigError")], 300, {("p", "CreateContainerConfigError"): 0}, graces)
    assert secret is not None and "a Secret or key it reads is missing" in secret
    running = {"metadata": {"name": "r"}, "status": {"phase": "Running"}}
    assert stuck_pods([running], 10**6, {}, graces) is None


# ---- the progress record -----------------------------------------------------------------------


def test_the_progress_record_follows_the_workflow(cluster: FakeCluster, tmp_path: Path) -> None:
    cluster.script["hex"] = {1: [BAD_INPUT], None: [Outcome(ticks=3)]}
    yamls = step_yamls(write_workflow(tmp_path / "wf", max_failed_indexes=5))
    seen = []

    def sleep(seconds: float) -> None:
        if PROGRESS in cluster.objects:
            seen.append(recorded(cluster)["steps"]["hex"])
        cluster.sleep(seconds)

    with pytest.raises(Exception, match="step hex failed"):
        orchestrate(cluster.api(), yamls, NS, poll_interval=10, sleep=sleep, now=lambda: cluster.now)
    running = [s for s in seen if s["phase"] == "running"]
    assert running and running[0]["completions"] == 5
    assert any(s["failed"] == 1 and s["running"] == 4 for s in running)  # the others go on
    doc = recorded(cluster)
    assert doc["state"] == "failed"
    assert (doc["steps"]["hex"]["done"], doc["steps"]["hex"]["failed"]) == (4, 1)  # --max-failed-indexes 5
    assert doc["steps"]["hex"]["failed_chunks"] == {
        "1": "Error (exit 65): error: source 'x.gpkg': layer has broken geometries"
    }
    assert doc["steps"]["repartition"]["phase"] == "absent"


def test_counts_come_from_the_chunk_markers_in_the_bucket(cluster: FakeCluster, tmp_path: Path, s3: str) -> None:
    from cng_datasets import storage

    bucket = s3.removeprefix("s3://").split("/")[0]
    yamls = step_yamls(write_workflow(tmp_path / "wf", bucket=bucket))
    chunks = load_plan(yamls).config.chunks_url
    assert chunks == f"{s3}/demo/places/chunks"
    for i in range(5):  # what the five hex pods would leave behind
        marker = {"chunk_id": i, "features": 900, "cells": 1000 + i}
        storage.write_bytes(f"{chunks}/_done/chunk-{i:05d}.json", json.dumps(marker).encode())
    run(cluster, yamls, counts=True)
    hex_report = recorded(cluster)["steps"]["hex"]
    assert (hex_report["features"], hex_report["cells"]) == (4500, 5010)
    assert recorded(cluster)["state"] == "complete"


def test_counts_that_cannot_be_read_leave_the_workflow_alone(
    cluster: FakeCluster, tmp_path: Path, s3: str, caplog: pytest.LogCaptureFixture
) -> None:
    yamls = step_yamls(write_workflow(tmp_path / "wf", bucket="no-such-bucket"))
    states = run(cluster, yamls, counts=True)
    assert all(s.phase == "complete" for s in states.values())
    assert recorded(cluster)["steps"]["hex"]["features"] is None
    assert "cannot read the hex chunk markers" in caplog.text


def test_a_restarted_orchestrator_keeps_the_recorded_counts(cluster: FakeCluster, tmp_path: Path) -> None:
    yamls = step_yamls(write_workflow(tmp_path / "wf"))
    run(cluster, yamls)
    doc = recorded(cluster)
    doc["steps"]["hex"]["features"], doc["steps"]["hex"]["cells"] = 4500, 99
    cluster.objects[PROGRESS]["data"]["progress.json"] = json.dumps(doc)
    run(cluster, yamls)  # after completion: adopts every Job
    assert (recorded(cluster)["steps"]["hex"]["features"], recorded(cluster)["steps"]["hex"]["cells"]) == (4500, 99)


# ---- status and logs ---------------------------------------------------------------------------


def test_eta_from_the_pace_so_far() -> None:
    r = StepReport("hex", "j", "running", indexed=True, completions=200, done=50, failed=0, running=50, start=0.0)
    assert r.eta(600.0) == pytest.approx(1800.0)  # 50 chunks in 10 min: 150 more take 30 min
    assert StepReport("hex", "j", "running", completions=4, start=0.0).eta(60) is None  # no pace yet
    assert StepReport("hex", "j", "complete", completions=4, done=4, start=0.0, end=9.0).eta(60) is None


def test_error_line_is_the_commands_last_word() -> None:
    assert error_line("reading\nerror: source 'a.gpkg': no layer\n") == "error: source 'a.gpkg': no layer"
    assert error_line("Traceback…\nKilled\n") == "Killed"
    assert error_line("") == ""


def test_status_while_running_and_after_the_pods_are_gone(cluster: FakeCluster, tmp_path: Path) -> None:
    wf_dir = write_workflow(tmp_path / "wf")
    yamls = step_yamls(wf_dir)
    cluster.script["hex"] = {3: [HANG], None: [OK]}
    ticks = 0

    def sleep(seconds: float) -> None:
        nonlocal ticks
        ticks += 1
        if ticks > 12:
            raise KeyboardInterrupt  # the laptop closes; the cluster goes on
        cluster.sleep(seconds)

    with pytest.raises(KeyboardInterrupt):
        orchestrate(cluster.api(), yamls, NS, poll_interval=10, sleep=sleep, now=lambda: cluster.now)
    cluster.allowed = None  # status runs with the user's credentials
    st = status(cluster.api(), load_workflow(wf_dir), now=cluster.now)
    hex_report = {r.step: r for r in st.reports}["hex"]
    assert (hex_report.done, hex_report.failed, hex_report.running) == (4, 0, 1)
    assert hex_report.eta(cluster.now) is not None
    text = format_status(st, now=cluster.now)
    assert "4/5 chunks done, 0 failed, 1 running" in text and "~" in text  # an ETA
    assert "(progress recorded by the orchestrator at " in text


def test_status_watch_refreshes_until_the_workflow_ends(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_logging
) -> None:
    import time

    from cng_datasets.cli import cli
    from cng_datasets.k8s import api as k8s_api
    from cng_datasets.k8s.submit import SubmitOptions, submit

    cluster.allowed = None  # the user's credentials
    cluster.script["demo-places-workflow"] = {None: [Outcome(ticks=4)]}  # the orchestrator's pod ends after 4 ticks
    wf_dir = write_workflow(tmp_path / "wf")
    submit(cluster.api(), load_workflow(wf_dir), SubmitOptions(), sleep=cluster.sleep, clock=lambda: cluster.now)
    refreshes = []
    monkeypatch.setattr(k8s_api, "connect", lambda context=None: cluster.api())
    monkeypatch.setattr(time, "sleep", lambda seconds: (refreshes.append(seconds), cluster.tick()))
    result = CliRunner().invoke(cli, ["status", "--watch", "--interval", "7", str(wf_dir)])
    assert result.exit_code == 0, result.output
    screens = result.output.split("namespace geo ")[1:]
    assert len(screens) == len(refreshes) + 1 and 3 <= len(refreshes) <= 6 and set(refreshes) == {7}
    assert "running" in screens[0].splitlines()[2]  # the orchestrator's row
    assert "complete" in screens[-1].splitlines()[2]
    # without --watch: one screen
    result = CliRunner().invoke(cli, ["status", str(wf_dir)])
    assert result.output.count("namespace geo ") == 1


def test_logs_of_one_chunk(cluster: FakeCluster, tmp_path: Path) -> None:
    wf_dir = write_workflow(tmp_path / "wf")
    cluster.script["hex"] = {2: [Outcome(exit_code=1, log="error: chunk 2: S3 timed out\n"), OK]}
    run(cluster, step_yamls(wf_dir))
    # chunk 2 failed once and then succeeded: it is not a failed chunk, in the record or in status
    assert recorded(cluster)["steps"]["hex"]["failed_chunks"] == {}
    cluster.allowed = None
    assert "failed:" not in format_status(status(cluster.api(), load_workflow(wf_dir), now=cluster.now))
    wf = load_workflow(wf_dir)
    text = logs(cluster.api(), wf, "hex", chunk=2)
    heads = [line for line in text.splitlines() if line.startswith("==> ")]
    assert len(heads) == 2 and all(h.startswith("==> demo-places-hex-2-") for h in heads)  # both attempts
    assert heads[0].endswith("Failed Error exit 1 <==") and "error: chunk 2: S3 timed out" in text
    from cng_datasets.errors import UsageError

    with pytest.raises(UsageError, match="has chunks 0..4"):
        logs(cluster.api(), wf, "hex", chunk=5)
    with pytest.raises(UsageError, match="only the hex step"):
        logs(cluster.api(), wf, "convert", chunk=0)

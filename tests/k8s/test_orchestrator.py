"""``orchestrate`` against the in-memory fake cluster (tests/k8s/fake.py), with the workflow
ServiceAccount's RBAC enforced: success, an OOMKilled index, deterministic failures, a restart
half-way, a missing namespace, a forbidden call, an unreachable API; the order read from plan.json
(not from the Jobs' annotations); and the two contracts: the argv in workflow.yaml is what the
``orchestrate`` command accepts, and ``rbac.RULES`` is exactly the set of calls ``orchestrate``
makes."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from cng_datasets.config import DEFAULT_IMAGE, Resources, WorkflowConfig
from cng_datasets.errors import ClusterError, StaleJobError, UsageError
from cng_datasets.k8s import rbac
from cng_datasets.k8s.folder import load_plan, load_step_jobs
from cng_datasets.k8s.jobs import job_state, parse_indexes
from cng_datasets.k8s.orchestrator import orchestrate
from cng_datasets.plan import Plan, Step, choose_chunking
from tests.k8s.fake import (
    BAD_INPUT,
    HANG,
    OOM,
    FakeCluster,
    Outcome,
    compress,
    step_yamls,
    write_workflow,
)

IMAGE = DEFAULT_IMAGE
GRANTED = {(g, r, v) for g, r, verbs in rbac.RULES for v in verbs}
JOB = {s: f"demo-places-{s}" for s in ("convert", "pmtiles", "hex", "repartition", "catalog")}


class Crash(Exception):
    """The orchestrator's pod dying."""


@pytest.fixture
def yamls(tmp_path: Path) -> Path:
    return step_yamls(write_workflow(tmp_path / "wf"))


@pytest.fixture
def cluster(tmp_path: Path) -> FakeCluster:
    c = FakeCluster(tmp_path, user="system:serviceaccount:geo:cng-datasets-workflow")
    c.allow_only(rbac.RULES)
    return c


def run(cluster: FakeCluster, yamls: Path, namespace: str = "geo", sleep=None):
    return orchestrate(
        cluster.api(), yamls, namespace, poll_interval=10, sleep=sleep or cluster.sleep, now=lambda: cluster.now
    )


def test_success_runs_in_dependency_order_with_pmtiles_parallel_and_awaited(
    cluster: FakeCluster, yamls: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.script["pmtiles"] = {None: [Outcome(ticks=15)]}  # the slowest step
    created_at: dict[str, int] = {}
    real_create = cluster._create

    def spy(kind, namespace, body):
        created_at[body["metadata"]["name"]] = cluster.ticks
        return real_create(kind, namespace, body)

    cluster._create = spy
    with caplog.at_level(logging.INFO, logger="cng_datasets"):
        states = run(cluster, yamls)
    assert {s: st.phase for s, st in states.items()} == dict.fromkeys(JOB, "complete")
    assert cluster.created_jobs[0] == JOB["convert"]
    assert created_at[JOB["hex"]] == created_at[JOB["pmtiles"]] > created_at[JOB["convert"]]  # parallel
    assert created_at[JOB["repartition"]] > created_at[JOB["hex"]]
    jobs = cluster.jobs()
    conds = {c["type"] for c in jobs[JOB["pmtiles"]]["status"]["conditions"]}
    assert "SuccessCriteriaMet" in conds  # pmtiles was awaited: returned only once it succeeded
    convert_done = [c for c in jobs[JOB["convert"]]["status"]["conditions"] if c["type"] == "SuccessCriteriaMet"][0]
    hex_created = jobs[JOB["hex"]]["metadata"]["creationTimestamp"]
    assert hex_created >= convert_done["lastTransitionTime"]
    assert jobs[JOB["hex"]]["status"]["completedIndexes"] == "0-4"
    text = caplog.text
    assert "hex: 5/5 indexes complete, 0 failed" in text
    assert "] convert: created Job demo-places-convert" in text
    assert "workflow complete:" in text
    assert cluster.used_rules() <= GRANTED


def test_oomkilled_index_fails_the_workflow_with_reason_pod_and_log_command(
    cluster: FakeCluster, yamls: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.script["hex"] = {3: [OOM]}
    cluster.script["pmtiles"] = {None: [HANG]}  # a Job still running must not delay the report
    with caplog.at_level(logging.INFO, logger="cng_datasets"), pytest.raises(ClusterError) as err:
        run(cluster, yamls)
    msg = str(err.value)
    assert "\n" not in msg
    assert "step hex failed (MaxFailedIndexesExceeded)" in msg and "failed indexes 3" in msg
    assert "OOMKilled (exit 137)" in msg
    assert "kubectl logs demo-places-hex-3-" in msg and "-n geo" in msg
    hex_pods = cluster.pods(job=JOB["hex"])
    assert sum(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == "3" for p in hex_pods) == 3
    assert JOB["repartition"] not in cluster.created_jobs
    assert "failed indexes: 3" in caplog.text
    assert "out of memory" in caplog.text
    assert "| MemoryError-ish: killed" in caplog.text  # the failing pod's last log lines
    assert "still running in the cluster (not stopped): pmtiles" in caplog.text
    assert cluster.used_rules() <= GRANTED


def test_deterministic_failure_fails_the_index_at_once(cluster: FakeCluster, yamls: Path) -> None:
    cluster.script["hex"] = {1: [BAD_INPUT]}
    with pytest.raises(ClusterError) as err:
        run(cluster, yamls)
    assert "failed indexes 1" in str(err.value) and "(exit 65)" in str(err.value)
    index1 = [p for p in cluster.pods(job=JOB["hex"]) if p["_index"] == 1]
    assert len(index1) == 1  # podFailurePolicy FailIndex: no retry
    assert cluster.jobs()[JOB["hex"]]["status"]["failedIndexes"] == "1"


def test_deterministic_failure_of_a_plain_job_is_pod_failure_policy(
    cluster: FakeCluster, yamls: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.script["convert"] = {None: [BAD_INPUT]}
    with caplog.at_level(logging.INFO, logger="cng_datasets"), pytest.raises(ClusterError) as err:
        run(cluster, yamls)
    assert "step convert failed (PodFailurePolicy)" in str(err.value)
    assert "retrying cannot help" in caplog.text
    assert cluster.created_jobs == [JOB["convert"]]


def test_backoff_limit_and_deadline_end_the_wait(cluster: FakeCluster, yamls: Path) -> None:
    cluster.script["convert"] = {None: [Outcome(exit_code=1, log="boom\n")]}
    with pytest.raises(ClusterError, match=r"convert failed \(BackoffLimitExceeded\)"):
        run(cluster, yamls)
    assert len(cluster.pods(job=JOB["convert"])) == 3  # backoffLimit 2 → 3 attempts

    other = FakeCluster(cluster.tmp / "2")
    (cluster.tmp / "2").mkdir()
    other.tick_seconds = 3600
    other.script["convert"] = {None: [HANG]}
    with pytest.raises(ClusterError, match=r"convert failed \(DeadlineExceeded\)"):
        run(other, yamls)


def test_restart_half_way_never_recreates_finished_work(
    cluster: FakeCluster, yamls: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cluster.script["pmtiles"] = {None: [Outcome(ticks=8)]}

    def crashing_sleep(seconds: float) -> None:
        cluster.sleep(seconds)
        if JOB["hex"] in cluster.created_jobs:
            raise Crash()

    with pytest.raises(Crash):
        run(cluster, yamls, sleep=crashing_sleep)
    assert cluster.created_jobs == [JOB["convert"], JOB["pmtiles"], JOB["hex"]]  # peers in plan order
    for _ in range(3):  # the cluster goes on while the orchestrator's pod restarts
        cluster.tick()
    with caplog.at_level(logging.INFO, logger="cng_datasets"):
        states = run(cluster, yamls)
    assert all(st.phase == "complete" for st in states.values())
    assert sorted(cluster.created_jobs) == sorted(JOB.values())  # each created exactly once
    assert "convert: Job demo-places-convert is already complete — skipped" in caplog.text
    assert "pmtiles: Job demo-places-pmtiles already exists (running) — waiting for it" in caplog.text
    # A third run after completion does nothing but look.
    caplog.clear()
    cluster.calls.clear()
    run(cluster, yamls)
    assert sorted(cluster.created_jobs) == sorted(JOB.values())
    assert {c for c in cluster.calls} == {("batch", "jobs", "get"), ("", "configmaps", "get")}


def test_rerun_after_a_failure_reports_it_at_once(cluster: FakeCluster, yamls: Path) -> None:
    cluster.script["hex"] = {0: [OOM]}
    with pytest.raises(ClusterError):
        run(cluster, yamls)
    ticks = cluster.ticks

    def no_sleep(seconds: float) -> None:
        raise AssertionError("must not wait on a Failed Job")

    with pytest.raises(ClusterError, match="step hex failed"):
        run(cluster, yamls, sleep=no_sleep)
    assert cluster.ticks == ticks
    assert cluster.created_jobs.count(JOB["hex"]) == 1


def test_rerun_with_other_settings_fails_naming_the_stale_jobs_instead_of_skipping_them(
    tmp_path: Path, cluster: FakeCluster, yamls: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run(cluster, yamls)  # h3 resolution 10: every Job Complete, kept for a week
    created = list(cluster.created_jobs)
    other = step_yamls(write_workflow(tmp_path / "wf-r11", h3_resolution=11))
    cluster.calls.clear()
    caplog.clear()  # the first run's lines may be captured when an earlier test left the level at INFO
    with caplog.at_level(logging.INFO, logger="cng_datasets"), pytest.raises(StaleJobError) as err:
        run(cluster, other)
    msg = str(err.value)
    assert "\n" not in msg and err.value.exit_code == 65
    assert msg.startswith("Jobs in namespace geo from an earlier run with other settings: ")
    for step in ("hex", "repartition"):
        assert f"{JOB[step]} (spec-hash " in msg and f"; {step}-job.yaml has " in msg
    assert JOB["convert"] not in msg  # convert's settings did not change
    assert (
        "`cng-datasets submit DIR --replace-stale`" in msg and "`cng-datasets cleanup DIR` (keeps the outputs)" in msg
    )
    assert cluster.created_jobs == created  # nothing created …
    assert "skipped" not in caplog.text and "workflow complete" not in caplog.text  # … nothing skipped silently
    assert cluster.used_rules() == {("batch", "jobs", "get"), ("", "configmaps", "get")}
    # the identical YAMLs still skip the finished Jobs (restart semantics)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cng_datasets"):
        states = run(cluster, yamls)
    assert all(st.phase == "complete" for st in states.values()) and cluster.created_jobs == created
    assert caplog.text.count("is already complete — skipped") == 5


def test_a_job_without_spec_hash_is_stale_and_created_jobs_carry_the_recomputed_hash(
    tmp_path: Path, cluster: FakeCluster, yamls: Path
) -> None:
    from cng_datasets.k8s import spechash

    # a hand-edited YAML whose annotation is out of date: the Job gets the hash of what it runs
    text = (yamls / "hex-job.yaml").read_text()
    assert text.count("- '10'") == 1  # --resolution 10
    (yamls / "hex-job.yaml").write_text(text.replace("- '10'", "- '11'"))
    run(cluster, yamls)
    jobs = cluster.jobs()
    manifests = {s.step: s for s in load_step_jobs(yamls)}
    want = spechash.step_hashes((s.step, s.manifest, s.depends_on) for s in manifests.values())
    for step, name in JOB.items():
        assert spechash.annotated(jobs[name]) == want[step]
    assert spechash.annotated(manifests["hex"].manifest) != want["hex"]
    # a Job from before spec hashes (or applied by hand without one) is not taken for this run's
    del cluster.objects[("Job", "geo", JOB["convert"])]["metadata"]["annotations"]["cng-datasets/spec-hash"]
    with pytest.raises(
        StaleJobError,
        match=r"^Job in namespace geo from an earlier run with other settings: "
        r"demo-places-convert \(no spec-hash; convert-job.yaml has [0-9a-f]{16}\)",
    ):
        run(cluster, yamls)


def test_a_stale_job_appearing_while_the_workflow_runs_is_not_awaited(cluster: FakeCluster, yamls: Path) -> None:
    """Between the first check and hex's turn, someone applies a hex Job of other settings."""
    import copy

    cluster.script["convert"] = {None: [Outcome(ticks=3)]}
    intruder = copy.deepcopy(yaml.safe_load((yamls / "hex-job.yaml").read_text()))
    intruder["metadata"]["annotations"]["cng-datasets/spec-hash"] = "0" * 16

    def sleep(seconds: float) -> None:
        cluster.sleep(seconds)
        if ("Job", "geo", JOB["hex"]) not in cluster.objects:
            cluster.api().create("geo", intruder)

    with pytest.raises(StaleJobError, match=r"demo-places-hex \(spec-hash 0000000000000000; hex-job.yaml has "):
        run(cluster, yamls, sleep=sleep)
    assert cluster.created_jobs == [JOB["convert"], JOB["hex"]]  # the intruder; pmtiles/repartition not started


def test_missing_namespace(cluster: FakeCluster, yamls: Path) -> None:
    with pytest.raises(ClusterError) as err:
        run(cluster, yamls, namespace="nope")
    assert str(err.value) == "namespace 'nope' does not exist (create it, or pass the right --namespace)"


def test_forbidden(cluster: FakeCluster, yamls: Path) -> None:
    cluster.allow_only([("batch", "jobs", ("get",)), ("", "pods", ("list",))])
    with pytest.raises(ClusterError) as err:
        run(cluster, yamls)
    msg = str(err.value)
    assert msg.startswith("permission denied: cannot create jobs in namespace 'geo'")
    assert "system:serviceaccount:geo:cng-datasets-workflow" in msg and "\n" not in msg


def test_unreachable_api(cluster: FakeCluster, yamls: Path) -> None:
    cluster.unreachable = True
    with pytest.raises(ClusterError, match=r"^cannot reach the Kubernetes API at https://fake:6443"):
        run(cluster, yamls)


def test_rbac_rules_are_exactly_the_calls_of_orchestrate(tmp_path: Path, yamls: Path) -> None:
    """Every code path of orchestrate, with only RULES allowed: the union of the calls is RULES."""
    used: set[tuple[str, str, str]] = set()
    scenarios = [{}, {"hex": {3: [OOM]}}, {"hex": {1: [BAD_INPUT]}}, {"convert": {None: [BAD_INPUT]}}, "stuck"]
    for i, script in enumerate(scenarios):
        c = FakeCluster(tmp_path / f"s{i}")
        c.allow_only(rbac.RULES)
        if script == "stuck":
            c.unpullable.add(IMAGE)
        else:
            c.script.update(script)
        try:
            run(c, yamls)
        except ClusterError as exc:
            assert "permission denied" not in str(exc)
        used |= c.used_rules()
        if i == 0:  # a restart over finished work, then a re-run with other settings
            run(c, yamls)
            used |= c.used_rules()
            with pytest.raises(ClusterError, match="earlier run with other settings"):
                run(c, step_yamls(write_workflow(tmp_path / "wf-other", h3_resolution=11)))
            used |= c.used_rules()
    assert used == GRANTED
    # …and the Role that `cng-datasets workflow` renders grants exactly these.
    role = [d for d in yaml.safe_load_all((tmp_path / "wf" / "workflow-rbac.yaml").read_text()) if d["kind"] == "Role"][
        0
    ]
    rendered = {
        (g, r, v) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]
    }
    assert rendered == used


def test_workflow_yaml_runs_exactly_the_orchestrate_command(
    tmp_path: Path, yamls: Path, monkeypatch, restore_logging
) -> None:
    """workflow.yaml's argv, given to the real CLI (with /yamls standing for the PVC), runs the
    orchestrator to completion with the ServiceAccount's rules."""
    from click.testing import CliRunner

    from cng_datasets.cli import COMMANDS, cli
    from cng_datasets.k8s import api as k8s_api
    from cng_datasets.k8s import orchestrator

    doc = yaml.safe_load((tmp_path / "wf" / "workflow.yaml").read_text())
    pod = doc["spec"]["template"]["spec"]
    argv = pod["containers"][0]["command"] + pod["containers"][0].get("args", [])
    assert argv == ["cng-datasets", "orchestrate", "--yamls", "/yamls", "--namespace", "geo"]
    assert pod["serviceAccountName"] == rbac.SERVICE_ACCOUNT
    assert {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v} == {
        "demo-places-workflow-yamls"
    }
    assert COMMANDS["orchestrate"][:2] == ("cng_datasets.cli.cluster", "orchestrate")

    cluster = FakeCluster(tmp_path / "c")
    cluster.allow_only(rbac.RULES)
    monkeypatch.setattr(k8s_api, "connect", lambda context=None: cluster.api())
    monkeypatch.setattr(orchestrator.time, "sleep", cluster.sleep)
    args = [str(yamls) if a == "/yamls" else a for a in argv[1:]]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(cluster.created_jobs) == sorted(JOB.values())
    assert "workflow complete" in result.output

    cluster.script["hex"] = {2: [OOM]}
    cluster.clear_jobs()
    cluster.created_jobs.clear()
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1].startswith("error: step hex failed")


# ---- pure pieces --------------------------------------------------------------------------------


def _job(name: str, deps: str, argv: list[str] | None = None) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"x-{name}",
            "namespace": "geo",
            "labels": {
                "app.kubernetes.io/name": "cng-datasets",
                "cng-datasets/dataset": "x",
                "cng-datasets/step": name,
            },
            "annotations": {"cng-datasets/depends-on": deps, "cng-datasets/dataset-path": "x"},
        },
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "step", "image": "i", "command": argv or ["cng-datasets", name]}],
                }
            }
        },
    }


def _write_folder(d: Path, plan_deps: dict[str, tuple[str, ...]], annotated: dict[str, str]) -> None:
    """A folder whose plan.json says ``plan_deps`` and whose Jobs' annotations say ``annotated``."""
    d.mkdir(exist_ok=True)
    cfg = WorkflowConfig(dataset="x", source_urls=("s3://b/x.gpkg",), bucket="b")
    steps = tuple(Step(n, ("cng-datasets", n), Resources(), depends_on=deps) for n, deps in plan_deps.items())
    (d / "plan.json").write_text(Plan(cfg, choose_chunking(10), steps).to_json())
    for name, deps in annotated.items():
        (d / f"{name}-job.yaml").write_text(yaml.safe_dump(_job(name, deps)))


def test_order_comes_from_the_plan_not_from_the_annotations_or_the_names(tmp_path: Path, cluster: FakeCluster) -> None:
    d = tmp_path / "custom"
    # the annotations (and the file names' order) say the opposite of the plan
    _write_folder(
        d,
        {"omega": ("alpha", "beta"), "beta": ("zeta",), "alpha": ("zeta",), "zeta": ()},
        {"zeta": "omega", "alpha": "", "beta": "", "omega": ""},
    )
    (d / "other.yaml").write_text(
        yaml.safe_dump_all([_job("stray", ""), {"kind": "ConfigMap", "metadata": {"name": "c"}}])
    )
    jobs = load_step_jobs(d)
    assert [(j.step, j.depends_on, j.source) for j in jobs] == [
        ("zeta", (), "zeta-job.yaml"),
        ("beta", ("zeta",), "beta-job.yaml"),
        ("alpha", ("zeta",), "alpha-job.yaml"),
        ("omega", ("alpha", "beta"), "omega-job.yaml"),
    ]
    run(cluster, d)
    assert cluster.created_jobs == ["x-zeta", "x-beta", "x-alpha", "x-omega"]  # no stray Job


@pytest.mark.parametrize(
    ("plan_deps", "match"),
    [
        ({"a": ("b",), "b": ("a",)}, "plan.json: the dependencies of a, b form a cycle"),
        ({"a": ("missing",)}, "step 'a' depends on 'missing', which is not a step of the plan"),
    ],
)
def test_an_invalid_plan_stops_before_any_call(
    tmp_path: Path, cluster: FakeCluster, plan_deps: dict[str, tuple[str, ...]], match: str
) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "plan.json").write_text(
        json.dumps(
            {
                "format": 1,
                "config": {"dataset": "x", "source_urls": ["s3://b/x"], "bucket": "b"},
                "chunking": {"chunk_size": 1, "completions": 1, "parallelism": 1, "feature_count": 1},
                "steps": [
                    {"name": n, "argv": ["cng-datasets", n], "resources": {}, "depends_on": list(deps)}
                    for n, deps in plan_deps.items()
                ],
            }
        )
    )
    with pytest.raises(UsageError, match=re.escape(match)):
        run(cluster, d)
    assert cluster.calls == []


def test_a_folder_without_plan_or_with_a_step_job_missing(tmp_path: Path, cluster: FakeCluster, yamls: Path) -> None:
    hex_job = (yamls / "hex-job.yaml").read_text()
    (yamls / "hex-job.yaml").write_text(hex_job + "---\n" + hex_job)
    with pytest.raises(UsageError, match=r"hex-job.yaml: expected the one Job of step 'hex', found 2 Jobs"):
        run(cluster, yamls)
    (yamls / "hex-job.yaml").unlink()
    with pytest.raises(UsageError, match="the plan has a step 'hex' but there is no hex-job.yaml"):
        run(cluster, yamls)
    (yamls / "plan.json").unlink()
    with pytest.raises(UsageError, match=r"has no plan.json \(the order of the steps\); write the folder with"):
        run(cluster, yamls)
    assert cluster.calls == []


def test_index_ranges_and_conditions() -> None:
    assert parse_indexes("0-2,5,7-8") == [0, 1, 2, 5, 7, 8]
    assert parse_indexes("") == []
    assert compress({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"

    def job(*conds: tuple[str, str]) -> dict:
        return {"spec": {}, "status": {"conditions": [{"type": t, "status": s, "reason": "R"} for t, s in conds]}}

    assert job_state(job(("SuccessCriteriaMet", "True"))).phase == "complete"
    assert job_state(job(("FailureTarget", "True"))).phase == "failed"
    assert job_state(job(("Failed", "False"))).phase == "pending"
    assert job_state(None).phase == "absent"


def test_waits_return_typed_outcomes(cluster: FakeCluster, yamls: Path) -> None:
    from cng_datasets.k8s.jobs import poll_until, wait_for_jobs

    answers = iter([None, None, "pod"])
    polled = poll_until(lambda: next(answers), 100, cluster.sleep, 10, lambda: cluster.now)
    assert (polled.value, polled.timed_out) == ("pod", False)
    start = cluster.now
    polled = poll_until(lambda: None, 30, cluster.sleep, 10, lambda: cluster.now)
    assert (polled.value, polled.timed_out) == (None, True) and cluster.now - start >= 30

    api = cluster.api()
    cluster.script["hex"] = {0: [BAD_INPUT]}
    cluster.script["pmtiles"] = {None: [HANG]}
    for step in ("convert", "hex", "pmtiles"):
        api.create("geo", yaml.safe_load((yamls / f"{step}-job.yaml").read_text()))
    outcome = wait_for_jobs(api, "geo", [JOB["convert"], JOB["hex"]], 10_000, cluster.sleep, 10, lambda: cluster.now)
    assert outcome.succeeded == {JOB["convert"]} and set(outcome.failed) == {JOB["hex"]}
    assert outcome.failed[JOB["hex"]].failed_indexes == "0" and not outcome.timed_out
    outcome = wait_for_jobs(
        api, "geo", [JOB["convert"], JOB["pmtiles"], "absent"], 60, cluster.sleep, 10, lambda: cluster.now
    )
    assert outcome.timed_out and outcome.succeeded == {JOB["convert"]} and not outcome.failed


# ---- the hex Job of sources that could not be counted ---------------------------------------


@pytest.mark.parametrize(("chunk_size", "chunks", "size"), [(None, 1, 177), (50, 4, 50)])
def test_an_uncounted_workflow_sizes_the_hex_job_from_the_converted_geoparquet(
    tmp_path: Path,
    cluster: FakeCluster,
    s3: str,
    parquets: Any,
    caplog: pytest.LogCaptureFixture,
    chunk_size: int | None,
    chunks: int,
    size: int,
) -> None:
    from cng_datasets import storage
    from cng_datasets.k8s.submit import load_workflow, stale_jobs

    bucket = s3.removeprefix("s3://")
    folder = write_workflow(tmp_path / "wf", bucket=bucket, feature_count=None, chunk_size=chunk_size, h3_resolution=4)
    yamls = step_yamls(folder)
    as_written = yaml.safe_load((yamls / "hex-job.yaml").read_text())
    assert as_written["spec"]["completions"] == 200  # the blind default of an uncounted source
    assert as_written["metadata"]["annotations"]["cng-datasets/sized-after-convert"] == "true"
    config = load_plan(yamls).config
    # what convert leaves in the bucket: the real GeoParquet of the 177 countries
    storage.write_bytes(config.parquet_url, parquets("naturalearth_lowres").read_bytes())

    with caplog.at_level(logging.INFO, logger="cng_datasets"):
        states = run(cluster, yamls)
    assert all(s.phase == "complete" for s in states.values())
    job = cluster.jobs()[JOB["hex"]]
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (chunks, chunks)
    assert job["spec"]["maxFailedIndexes"] <= chunks
    argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[argv.index("--chunk-size") + 1 :][:3] == [str(size), "--chunk-count", str(chunks)]
    assert len(cluster.pods(job=JOB["hex"])) == chunks
    assert f"hex: sized from {config.parquet_url}: 177 features" in caplog.text
    # the hash leaves the chunking out: the sized Job is the folder's to submit and to a restart
    wf = load_workflow(folder)
    assert job["metadata"]["annotations"]["cng-datasets/spec-hash"] == wf.spec_hashes()["hex"]
    assert stale_jobs(cluster.api(), wf) == []
    created = list(cluster.created_jobs)
    run(cluster, yamls)
    assert cluster.created_jobs == created


def test_an_unreadable_geoparquet_leaves_the_hex_job_as_written(
    tmp_path: Path, cluster: FakeCluster, s3: str, caplog: pytest.LogCaptureFixture
) -> None:
    yamls = step_yamls(write_workflow(tmp_path / "wf", bucket="no-such-bucket", feature_count=None))
    with caplog.at_level(logging.INFO, logger="cng_datasets"):
        states = run(cluster, yamls)
    assert all(s.phase == "complete" for s in states.values())
    assert cluster.jobs()[JOB["hex"]]["spec"]["completions"] == 200  # last chunk reads to the end
    assert "hex: cannot size the chunks from s3://no-such-bucket/demo/places.parquet" in caplog.text


def test_a_counted_workflow_is_applied_as_written(tmp_path: Path, cluster: FakeCluster, yamls: Path) -> None:
    doc = yaml.safe_load((yamls / "hex-job.yaml").read_text())
    assert "cng-datasets/sized-after-convert" not in doc["metadata"]["annotations"]
    run(cluster, yamls)  # no bucket to read: nothing is sized
    assert cluster.jobs()[JOB["hex"]]["spec"]["completions"] == doc["spec"]["completions"] == 5

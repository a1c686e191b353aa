"""``submit``, ``status``, ``logs`` and ``cleanup`` against the fake cluster (tests/k8s/fake.py),
on a workflow folder written by the real manifest builders."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from cng_datasets import storage
from cng_datasets.errors import ClusterError, PreflightError, StaleJobError
from cng_datasets.k8s import rbac, spechash
from cng_datasets.k8s.jobs import job_state
from cng_datasets.k8s.orchestrator import orchestrate
from cng_datasets.k8s.submit import (
    SubmitOptions,
    cleanup,
    format_status,
    load_workflow,
    logs,
    output_urls,
    status,
    submit,
)
from tests.k8s.fake import HANG, OOM, FakeCluster, Outcome, write_workflow

NS = "geo"
PVC = "demo-places-workflow-yamls"
STEP_JOBS = [f"demo-places-{s}" for s in ("convert", "pmtiles", "hex", "repartition", "catalog")]


@pytest.fixture
def wf_dir(tmp_path: Path) -> Path:
    return write_workflow(tmp_path / "wf")


@pytest.fixture
def cluster(tmp_path: Path) -> FakeCluster:
    return FakeCluster(tmp_path / "cluster")


def do_submit(cluster: FakeCluster, wf_dir: Path, **kw):
    lines: list[str] = []
    options = SubmitOptions(**kw)
    result = submit(
        cluster.api(), load_workflow(wf_dir), options, sleep=cluster.sleep, clock=lambda: cluster.now, echo=lines.append
    )
    return result, lines


def run_orchestrator(cluster: FakeCluster, namespace: str = NS) -> None:
    """What the orchestrator Job's pod does: orchestrate on the PVC, as the ServiceAccount."""
    saved = cluster.allowed
    cluster.allow_only(rbac.RULES)
    try:
        orchestrate(
            cluster.api(), cluster.pvc_dir(namespace, PVC), namespace, sleep=cluster.sleep, now=lambda: cluster.now
        )
    finally:
        cluster.allowed = saved


def test_submit_does_the_eight_steps_in_one(cluster: FakeCluster, wf_dir: Path) -> None:
    result, lines = do_submit(cluster, wf_dir)
    assert result == "submitted"
    kinds = {(k, n) for (k, ns, n) in cluster.objects if ns == NS and k != "Pod"}
    assert {
        ("ServiceAccount", "cng-datasets-workflow"),
        ("Role", "cng-datasets-workflow"),
        ("RoleBinding", "cng-datasets-workflow"),
        ("PersistentVolumeClaim", PVC),
        ("Job", "demo-places-upload-yamls"),
        ("Job", "demo-places-workflow"),
    } <= kinds
    # every YAML of DIR arrived byte for byte on the PVC, through exec (long ones in parts)
    pvc = cluster.pvc_dir(NS, PVC)
    for path in [*wf_dir.glob("*.yaml"), wf_dir / "plan.json"]:
        assert (pvc / path.name).read_bytes() == path.read_bytes()
    assert not list(pvc.glob(".*.part*"))
    assert all(cmd[:4] == ["cng-datasets", "receive-yamls", "--dir", "/yamls"] for cmd in cluster.execs)
    assert any("--parts" in cmd for cmd in cluster.execs)
    assert cluster.execs[-1][-1] == "--complete"
    upload = cluster.jobs()["demo-places-upload-yamls"]
    assert any(c["type"] == "SuccessCriteriaMet" for c in upload["status"]["conditions"])
    # the orchestrator starts only after the upload pod finished (the PVC is ReadWriteOnce)
    assert cluster.created_jobs[-1] == "demo-places-workflow"
    assert "follow it with: kubectl logs -f job/demo-places-workflow -n geo" in lines
    # and the orchestrator, with the ServiceAccount's rules, finds what it needs on the PVC
    run_orchestrator(cluster)
    assert set(STEP_JOBS) <= set(cluster.created_jobs)


def test_submit_twice_is_idempotent(cluster: FakeCluster, wf_dir: Path) -> None:
    do_submit(cluster, wf_dir)
    created, execs = list(cluster.created_jobs), len(cluster.execs)
    result, lines = do_submit(cluster, wf_dir)
    assert result == "running"
    assert cluster.created_jobs == created and len(cluster.execs) == execs
    assert lines == [
        "workflow demo-places-workflow is already running; follow it with: "
        "kubectl logs -f job/demo-places-workflow -n geo"
    ]
    for _ in range(4):
        cluster.tick()  # the orchestrator Job completes
    result, _ = do_submit(cluster, wf_dir)
    assert result == "complete"


def test_submit_again_after_a_crash_between_upload_and_orchestrator(cluster: FakeCluster, wf_dir: Path) -> None:
    do_submit(cluster, wf_dir)
    cluster.objects.pop(("Job", NS, "demo-places-workflow"))  # as if submit died before creating it
    (wf_dir / "hex-job.yaml").write_text((wf_dir / "hex-job.yaml").read_text().replace("'5'", "'6'"))
    result, _ = do_submit(cluster, wf_dir)
    assert result == "submitted"
    assert cluster.created_jobs.count("demo-places-upload-yamls") == 2  # a fresh receiver
    assert (cluster.pvc_dir(NS, PVC) / "hex-job.yaml").read_bytes() == (wf_dir / "hex-job.yaml").read_bytes()


def _run_to_completion(cluster: FakeCluster, wf_dir: Path) -> None:
    do_submit(cluster, wf_dir)
    run_orchestrator(cluster)
    for _ in range(4):
        cluster.tick()  # the orchestrator Job's pod exits 0
    assert job_state(cluster.jobs()["demo-places-workflow"]).phase == "complete"


def test_submit_after_regenerating_with_other_settings_stops_naming_the_stale_jobs(
    cluster: FakeCluster, wf_dir: Path
) -> None:
    _run_to_completion(cluster, wf_dir)  # h3 resolution 10
    created, execs = list(cluster.created_jobs), len(cluster.execs)
    write_workflow(wf_dir, h3_resolution=11)  # the same folder, regenerated
    with pytest.raises(StaleJobError) as err:
        do_submit(cluster, wf_dir)
    msg = str(err.value)
    assert "\n" not in msg and "already completed" not in msg
    assert msg.startswith(
        "Jobs in namespace geo from an earlier run with other settings: demo-places-workflow (spec-hash "
    )
    assert "; workflow.yaml has " in msg and "demo-places-hex (spec-hash " in msg and "demo-places-repartition" in msg
    assert "demo-places-convert" not in msg and "demo-places-upload-yamls" not in msg  # unchanged / replaced anyway
    assert f"`cng-datasets submit {wf_dir} --replace-stale`" in msg and f"`cng-datasets cleanup {wf_dir}`" in msg
    assert cluster.created_jobs == created and len(cluster.execs) == execs  # nothing touched

    convert_uid = cluster.jobs()["demo-places-convert"]["metadata"]["uid"]
    result, lines = do_submit(cluster, wf_dir, replace_stale=True)
    assert result == "submitted"
    deleted = [line for line in lines if line.startswith("deleting Job ")]
    assert deleted[0] == "deleting Job demo-places-workflow: it ran other settings than workflow.yaml"  # first
    assert "deleting Job demo-places-hex: it ran other settings than hex-job.yaml" in deleted
    assert not any("convert" in line for line in deleted)
    assert (cluster.pvc_dir(NS, PVC) / "hex-job.yaml").read_bytes() == (wf_dir / "hex-job.yaml").read_bytes()
    run_orchestrator(cluster)
    assert cluster.jobs()["demo-places-convert"]["metadata"]["uid"] == convert_uid  # finished, same settings: kept
    assert cluster.created_jobs.count("demo-places-convert") == 1
    assert cluster.created_jobs.count("demo-places-hex") == cluster.created_jobs.count("demo-places-repartition") == 2
    want = load_workflow(wf_dir).spec_hashes()
    for step, name in load_workflow(wf_dir).job_names().items():
        assert spechash.annotated(cluster.jobs()[name]) == want[step], step
    for _ in range(4):
        cluster.tick()
    assert do_submit(cluster, wf_dir)[0] == "complete"  # identical YAMLs: nothing to do


def test_a_running_workflow_or_upload_of_other_settings_is_not_reused(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.script["demo-places-workflow"] = {None: [HANG]}
    do_submit(cluster, wf_dir)
    write_workflow(wf_dir, image="ghcr.io/example/cng-datasets:2")
    with pytest.raises(
        StaleJobError,
        match=r"^Job in namespace geo from an earlier run with other settings: "
        r"demo-places-workflow \(spec-hash [0-9a-f]{16}; workflow.yaml has",
    ):
        do_submit(cluster, wf_dir)  # was: "already running"
    result, lines = do_submit(cluster, wf_dir, replace_stale=True)
    assert lines[0].startswith("ok    namespace")  # the preflight checks come first
    actions = [line for line in lines if line[:4] not in ("ok  ", "skip", "FAIL")]
    assert result == "submitted" and actions[0].startswith("deleting Job demo-places-workflow")
    assert cluster.created_jobs.count("demo-places-workflow") == 2
    image = cluster.jobs()["demo-places-workflow"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "ghcr.io/example/cng-datasets:2"

    # an upload Job still waiting for files, from a submit of other settings
    cluster.objects.pop(("Job", NS, "demo-places-workflow"))
    upload = cluster.objects[("Job", NS, "demo-places-upload-yamls")]
    upload["metadata"]["annotations"]["cng-datasets/spec-hash"] = "0" * 16
    upload["status"] = {"active": 1}
    with pytest.raises(
        StaleJobError,
        match=r"demo-places-upload-yamls \(spec-hash 0000000000000000; "
        r"workflow-upload.yaml has ",
    ):
        do_submit(cluster, wf_dir)


MISSING_NAMESPACE = (
    "preflight: namespace: namespace 'geo' does not exist: create it (kubectl create namespace geo) "
    "or write the workflow with --namespace of one that does"
)


def test_submit_into_a_missing_namespace(tmp_path: Path, wf_dir: Path) -> None:
    cluster = FakeCluster(tmp_path / "c", namespaces=("other",))
    with pytest.raises(PreflightError) as err:
        do_submit(cluster, wf_dir)
    assert str(err.value) == MISSING_NAMESPACE
    assert cluster.created_jobs == []
    # without the preflight, submit's own first call says it as clearly
    with pytest.raises(ClusterError) as err:
        do_submit(cluster, wf_dir, preflight=False)
    assert str(err.value) == "namespace 'geo' does not exist (create it, or pass the right --namespace)"


def test_submit_without_permission(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.user = "alice"
    cluster.allow_only([("batch", "jobs", ("get", "create", "list")), ("", "pods", ("list",))])
    with pytest.raises(PreflightError) as err:
        do_submit(cluster, wf_dir)
    msg = str(err.value)
    assert msg.startswith("preflight: permissions: in namespace geo you may not get/create serviceaccounts, ")
    assert "delete jobs.batch, create pods/exec, get pods/log, get/create/update configmaps: ask" in msg
    assert "\n" not in msg
    assert cluster.created_jobs == []
    with pytest.raises(ClusterError) as err:
        do_submit(cluster, wf_dir, preflight=False)
    msg = str(err.value)
    assert msg.startswith("permission denied: cannot create serviceaccounts in namespace 'geo'")
    assert 'User "alice"' in msg and "\n" not in msg


def test_submit_with_an_unreachable_cluster(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.unreachable = True
    with pytest.raises(ClusterError, match=r"^cannot reach the Kubernetes API at https://fake:6443: "):
        do_submit(cluster, wf_dir)


def test_cli_errors_are_one_line(cluster: FakeCluster, wf_dir: Path, monkeypatch, restore_logging) -> None:
    from cng_datasets.cli import cli
    from cng_datasets.k8s import api as k8s_api

    cluster.namespaces = set()
    monkeypatch.setattr(k8s_api, "connect", lambda context=None: cluster.api())
    result = CliRunner().invoke(cli, ["submit", str(wf_dir)])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == f"error: {MISSING_NAMESPACE}"


def test_failed_run_status_logs_and_retry_failed(cluster: FakeCluster, wf_dir: Path) -> None:
    do_submit(cluster, wf_dir)
    cluster.script["hex"] = {2: [OOM]}
    with pytest.raises(ClusterError, match="step hex failed"):
        run_orchestrator(cluster)
    # the orchestrator's pod failed too (it exits 1): mark its Job failed as the controller would
    job = cluster.objects[("Job", NS, "demo-places-workflow")]
    job["status"]["conditions"] = [
        {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
    ]

    wf = load_workflow(wf_dir)
    st = status(cluster.api(), wf, now=cluster.now)
    rows = {r.step: r for r in st.reports}
    assert rows["convert"].phase == "complete" and rows["convert"].elapsed(cluster.now) == 30  # start → completion
    assert rows["hex"].phase == "failed" and (rows["hex"].done, rows["hex"].failed) == (4, 1)
    assert rows["hex"].failed_chunks == {"2": "OOMKilled (exit 137): MemoryError-ish: killed"}
    assert rows["repartition"].phase == "absent"
    assert st.state == "failed" and st.message.startswith("step hex failed (MaxFailedIndexesExceeded)")
    table = format_status(st, now=cluster.now)
    assert "4/5 chunks done, 1 failed, 0 running" in table and "MaxFailedIndexesExceeded" in table
    assert "hex: chunk 2 failed: OOMKilled (exit 137): MemoryError-ish: killed" in table
    assert "workflow failed: step hex failed (MaxFailedIndexesExceeded)" in table

    text = logs(cluster.api(), wf)  # default: the first failed step, failing pods first
    first = text.splitlines()[0]
    assert first.startswith("==> demo-places-hex-2-") and "Failed OOMKilled exit 137" in first
    assert "MemoryError-ish" in text
    assert logs(cluster.api(), wf, "convert").startswith("==> demo-places-convert-")

    with pytest.raises(ClusterError, match="--retry-failed"):
        do_submit(cluster, wf_dir)
    cluster.script.clear()
    result, lines = do_submit(cluster, wf_dir, retry_failed=True)
    assert result == "submitted"
    assert "deleting failed Job demo-places-hex" in lines and "deleting failed Job demo-places-workflow" in lines
    run_orchestrator(cluster)
    assert cluster.created_jobs.count("demo-places-convert") == 1  # finished work is kept
    assert cluster.created_jobs.count("demo-places-hex") == 2
    assert cluster.created_jobs.count("demo-places-repartition") == 1


def test_status_before_submit(cluster: FakeCluster, wf_dir: Path) -> None:
    st = status(cluster.api(), load_workflow(wf_dir))
    # plan order
    assert [r.step for r in st.reports] == ["upload", "workflow", "convert", "pmtiles", "hex", "repartition", "catalog"]
    assert {r.phase for r in st.reports} == {"absent"}
    assert "not created" in format_status(st) and st.finished


def test_upload_pod_that_never_starts_times_out_with_a_reason(cluster: FakeCluster, wf_dir: Path) -> None:
    real = cluster._advance_pod
    cluster._advance_pod = lambda pod: None  # stuck in ContainerCreating
    with pytest.raises(ClusterError, match=r"timed out after 60 s .*ContainerCreating"):
        do_submit(cluster, wf_dir, timeout=60)
    cluster._advance_pod = real


def test_cleanup_deletes_jobs_and_pvc_but_not_rbac(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.script["pmtiles"] = {None: [HANG]}
    do_submit(cluster, wf_dir)
    with pytest.raises(Exception):  # noqa: B017 - stop the orchestrator half-way
        orchestrate(
            cluster.api(),
            cluster.pvc_dir(NS, PVC),
            NS,
            sleep=lambda s: (_ for _ in ()).throw(RuntimeError()),
            now=lambda: cluster.now,
        )
    lines: list[str] = []
    counts = cleanup(cluster.api(), load_workflow(wf_dir), echo=lines.append)
    assert counts["pvc"] == 1 and counts["jobs"] >= 3 and counts["objects"] == 0
    assert not cluster.jobs() and not cluster.pods()
    assert ("PersistentVolumeClaim", NS, PVC) not in cluster.objects
    for kind in ("ServiceAccount", "Role", "RoleBinding"):
        assert (kind, NS, "cng-datasets-workflow") in cluster.objects
    assert lines[0] == "deleted Job demo-places-workflow"  # first, so nothing recreates the steps
    assert cleanup(cluster.api(), load_workflow(wf_dir), echo=lines.append) == {"jobs": 0, "pvc": 0, "objects": 0}


@pytest.mark.s3
def test_cleanup_data_deletes_exactly_the_outputs_after_confirmation(
    tmp_path: Path, cluster: FakeCluster, s3: str
) -> None:
    bucket = s3.removeprefix("s3://")
    wf_dir = write_workflow(tmp_path / "wf-s3", bucket=bucket)
    wf = load_workflow(wf_dir)
    objects, prefixes = output_urls(wf)
    assert objects == [f"{s3}/demo/places.parquet", f"{s3}/demo/places.pmtiles"]
    assert sorted(prefixes) == [f"{s3}/demo/places/chunks", f"{s3}/demo/places/hex"]
    outputs = [
        f"{s3}/demo/places.parquet",
        f"{s3}/demo/places.pmtiles",
        f"{s3}/demo/places/hex/h0=1/a.parquet",
        f"{s3}/demo/places/hex/h0=2/b.parquet",
        f"{s3}/demo/places/chunks/chunk-0.parquet",
    ]
    keep = [f"{s3}/demo/other.parquet", f"{s3}/demo/places-v2/hex/x.parquet", f"{s3}/demo/placesX.pmtiles"]
    for url in outputs + keep:
        storage.write_bytes(url, b"x")

    asked: list[list[str]] = []
    cleanup(cluster.api(), wf, data=True, confirm=lambda urls: asked.append(urls) or False, echo=lambda s: None)
    assert asked and f"{s3}/demo/places/hex/" in asked[0]
    assert all(storage.exists(u) for u in outputs)  # declined: nothing deleted

    counts = cleanup(cluster.api(), wf, data=True, confirm=lambda urls: True, echo=lambda s: None)
    assert counts["objects"] == 5
    assert not any(storage.exists(u) for u in outputs)
    assert all(storage.exists(u) for u in keep)


def test_cleanup_cli_without_yes_on_a_pipe_keeps_data(
    cluster: FakeCluster, wf_dir: Path, monkeypatch, restore_logging
) -> None:
    from cng_datasets.cli import cli
    from cng_datasets.k8s import api as k8s_api
    from cng_datasets.k8s import submit as submit_mod

    monkeypatch.setattr(k8s_api, "connect", lambda context=None: cluster.api())
    deleted: list[str] = []
    monkeypatch.setattr(storage, "delete_prefix", lambda url: deleted.append(url) or 0)
    monkeypatch.setattr(storage, "delete", lambda url: deleted.append(url))
    result = CliRunner().invoke(cli, ["cleanup", str(wf_dir), "--data"])
    assert result.exit_code == 0, result.output
    assert "pass --yes" in result.output and "outputs kept" in result.output and not deleted
    assert submit_mod.output_urls(load_workflow(wf_dir))[0][0] in result.output


def test_submit_cli_stale_jobs_exit_65_in_one_line(
    cluster: FakeCluster, wf_dir: Path, monkeypatch, restore_logging
) -> None:
    import functools

    from cng_datasets.cli import cli
    from cng_datasets.k8s import api as k8s_api
    from cng_datasets.k8s import submit as submit_mod

    monkeypatch.setattr(k8s_api, "connect", lambda context=None: cluster.api())
    monkeypatch.setattr(
        submit_mod, "submit", functools.partial(submit_mod.submit, sleep=cluster.sleep, clock=lambda: cluster.now)
    )
    _run_to_completion(cluster, wf_dir)
    write_workflow(wf_dir, h3_resolution=11)
    result = CliRunner().invoke(cli, ["submit", str(wf_dir)])
    assert result.exit_code == 65
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: Jobs in namespace geo from an earlier run with other settings: demo-places-workflow")
    result = CliRunner().invoke(cli, ["submit", str(wf_dir), "--replace-stale"])
    assert result.exit_code == 0, result.output
    assert "deleting Job demo-places-hex: it ran other settings than hex-job.yaml" in result.output


def test_status_and_logs_cli(cluster: FakeCluster, wf_dir: Path, monkeypatch, restore_logging) -> None:
    from cng_datasets.cli import cli
    from cng_datasets.k8s import api as k8s_api

    monkeypatch.setattr(k8s_api, "connect", lambda context=None: cluster.api())
    do_submit(cluster, wf_dir)
    cluster.script["convert"] = {None: [Outcome(exit_code=1, log="Traceback: boom\n")]}
    with pytest.raises(ClusterError):
        run_orchestrator(cluster)
    result = CliRunner().invoke(cli, ["status", str(wf_dir)])
    assert result.exit_code == 0, result.output
    assert "namespace geo" in result.output and "failed (BackoffLimitExceeded)" in result.output
    result = CliRunner().invoke(cli, ["logs", str(wf_dir), "convert", "--tail", "5"])
    assert result.exit_code == 0, result.output
    assert "Traceback: boom" in result.output
    result = CliRunner().invoke(cli, ["logs", str(wf_dir), "nope"])
    assert result.exit_code == 65 and "unknown step 'nope'" in result.output


# ---- the real client, over HTTP ----------------------------------------------------------------


@pytest.fixture
def api_server(tmp_path: Path, wf_dir: Path):
    """A tiny HTTP server speaking a few Kubernetes API answers, and a kubeconfig pointing at it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    spec_hash = load_workflow(wf_dir).spec_hashes()["hex"]  # the running hex Job is this run's
    hex_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "demo-places-hex", "namespace": NS, "annotations": {"cng-datasets/spec-hash": spec_hash}},
        "spec": {"completionMode": "Indexed", "completions": 5},
        "status": {"active": 2, "completedIndexes": "0,2-3", "startTime": "2024-05-01T10:00:00Z"},
    }
    stuck_pod = {  # one of its pods cannot pull its image, as the kubelet reports it
        "metadata": {
            "name": "demo-places-hex-1-x7k2p",
            "labels": {"job-name": "demo-places-hex"},
            "annotations": {"batch.kubernetes.io/job-completion-index": "1"},
        },
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "step",
                    "ready": False,
                    "restartCount": 0,
                    "image": "ghcr.io/me/img:9",
                    "imageID": "",
                    "state": {
                        "waiting": {
                            "reason": "ImagePullBackOff",
                            "message": 'Back-off pulling image "ghcr.io/me/img:9"',
                        }
                    },
                }
            ],
        },
    }

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.startswith("/apis/batch/v1/namespaces/geo/jobs/demo-places-hex"):
                return self._send(200, hex_job)
            if self.path.startswith("/api/v1/namespaces/geo/pods?") and "demo-places-hex" in self.path:
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [stuck_pod]})
            if self.path.startswith("/api/v1/namespaces/geo/pods?"):
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})
            name = self.path.rsplit("/", 1)[-1]
            return self._send(
                404,
                {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": f'jobs.batch "{name}" not found',
                    "details": {"name": name, "group": "batch", "kind": "jobs"},
                },
            )

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            return self._send(
                404,
                {
                    "kind": "Status",
                    "status": "Failure",
                    "reason": "NotFound",
                    "code": 404,
                    "message": 'namespaces "geo" not found',
                    "details": {"name": "geo", "kind": "namespaces"},
                },
            )

        def log_message(self, *a: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    url = f"http://127.0.0.1:{server.server_address[1]}"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        f"clusters: [{{name: t, cluster: {{server: '{url}'}}}}]\n"
        "users: [{name: t, user: {token: abc}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: t}}]\n"
    )
    yield kubeconfig
    server.shutdown()
    server.server_close()


def test_real_client_status_and_missing_namespace(api_server: Path, wf_dir: Path, cli_run) -> None:
    env = {"KUBECONFIG": str(api_server)}
    proc = cli_run("status", str(wf_dir), env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    hex_line = [line for line in proc.stdout.splitlines() if line.startswith("hex ")][0]
    assert "running" in hex_line and "3/5 chunks done, 0 failed, 2 running" in hex_line
    assert "hex: stuck: pod demo-places-hex-1-x7k2p ImagePullBackOff: Back-off pulling image" in proc.stdout
    proc = cli_run("submit", str(wf_dir), env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: {MISSING_NAMESPACE}"  # the real client's 404
    proc = cli_run("submit", "--skip-preflight", str(wf_dir), env=env, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: namespace 'geo' does not exist (create it, or pass the right --namespace)"
    )


def test_real_client_without_config_or_server(tmp_path: Path, wf_dir: Path, cli_run) -> None:
    proc = cli_run("status", str(wf_dir), env={"KUBECONFIG": str(tmp_path / "none"), "HOME": str(tmp_path)}, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("error: no usable Kubernetes configuration")
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\nclusters: [{name: t, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: t, user: {token: abc}}]\ncontexts: [{name: t, context: {cluster: t, user: t}}]\n"
    )
    proc = cli_run("status", str(wf_dir), env={"KUBECONFIG": str(kubeconfig)}, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the Kubernetes API at http://127.0.0.1:9"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

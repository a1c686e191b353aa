"""``cng-datasets preflight``: every check against the fake cluster (tests/k8s/fake.py), which
answers SelfSubjectAccessReviews from its RBAC and schedules pods against its Nodes the way the
kube-scheduler reports it — so a pod that preflight says cannot fit is also one the fake leaves
Pending."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cng_datasets.config import DEFAULT_RESOURCES, Resources, Toleration
from cng_datasets.k8s import rbac
from cng_datasets.k8s.preflight import SUBMIT_RULES, Check, preflight, run_checks
from cng_datasets.k8s.submit import SubmitOptions, load_workflow, submit

from .fake import FakeCluster, write_workflow

NS = "geo"


@pytest.fixture
def cluster(tmp_path: Path) -> FakeCluster:
    return FakeCluster(tmp_path / "cluster")


@pytest.fixture
def wf_dir(tmp_path: Path) -> Path:
    return write_workflow(tmp_path / "wf")


def run(cluster: FakeCluster, wf_dir: Path) -> dict[str, Check]:
    """The checks by name, failed ones included."""
    return {c.name: c for c in run_checks(cluster.api(), load_workflow(wf_dir))}


def test_a_ready_cluster_passes_every_check(cluster: FakeCluster, wf_dir: Path) -> None:
    lines: list[str] = []
    results = preflight(cluster.api(), load_workflow(wf_dir), echo=lines.append)
    assert [r.name for r in results] == [
        "namespace",
        "permissions",
        "s3-secret",
        "image",
        "priority-class",
        "storage",
        "node-fit",
    ]
    assert all(r.ok for r in results), lines
    assert lines[0] == "ok    namespace       namespace geo exists"
    assert "default StorageClass standard can bind the ReadWriteOnce PVC" in lines[5]
    assert cluster.created_jobs == []  # preflight changes nothing


def test_the_cli_prints_one_line_per_check_and_fails_with_one_line(
    cluster: FakeCluster, wf_dir: Path, monkeypatch, restore_logging
) -> None:
    from cng_datasets.cli import cli
    from cng_datasets.k8s import api as k8s_api

    monkeypatch.setattr(k8s_api, "connect", lambda context=None: cluster.api())
    result = CliRunner().invoke(cli, ["preflight", str(wf_dir)])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 8
    assert result.output.splitlines()[-1] == "preflight: the cluster can run demo-places-workflow"
    cluster.remove("Secret", NS, "aws")
    result = CliRunner().invoke(cli, ["preflight", str(wf_dir)])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: preflight: s3-secret: Secret 'aws' does not exist in geo: create it with ")
    assert "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=..." in last


def test_missing_namespace_stops_the_checks(tmp_path: Path, wf_dir: Path) -> None:
    cluster = FakeCluster(tmp_path / "c", namespaces=("other",))
    checks = run(cluster, wf_dir)
    assert list(checks) == ["namespace"]
    assert checks["namespace"].ok is False and "kubectl create namespace geo" in checks["namespace"].message


def test_permissions_are_asked_by_access_review(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.allow_only([*SUBMIT_RULES, *rbac.RULES])
    checks = run(cluster, wf_dir)
    assert checks["permissions"].ok is True
    # reads the user may not do are skipped, not failed
    for name in ("namespace", "s3-secret", "storage", "node-fit"):
        assert checks[name].ok is None and "not checked: your credentials may not" in checks[name].message, name
    # and exactly these permissions are enough for submit itself
    out = submit(
        cluster.api(),
        load_workflow(wf_dir),
        SubmitOptions(),
        sleep=cluster.sleep,
        clock=lambda: cluster.now,
        echo=print,
    )
    assert out == "submitted"

    cluster.allow_only([r for r in SUBMIT_RULES if r[1] != "pods/exec"] + list(rbac.RULES))
    check = run(cluster, wf_dir)["permissions"]
    assert check.ok is False
    assert check.message.startswith("in namespace geo you may not create pods/exec: ask the cluster's admin")


def test_the_orchestrators_rules_must_be_held_to_be_granted(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.allow_only([r for r in SUBMIT_RULES if r[1] != "pods/log"] + [("batch", "jobs", ("get", "create"))])
    check = run(cluster, wf_dir)["permissions"]
    assert check.ok is False and "get pods/log" in check.message and "grant the orchestrator" in check.message


def test_s3_secret_without_the_expected_keys(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.add_secret(NS, "aws", {"access_key": "eA==", "secret_key": "eQ=="})
    check = run(cluster, wf_dir)["s3-secret"]
    assert check.ok is False
    assert (
        "Secret 'aws' in geo has no key AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (it has: access_key, secret_key)"
        in (check.message)
    )
    assert "--s3-access-key-key" in check.message
    write_workflow(wf_dir, s3_access_key_key="access_key", s3_secret_key_key="secret_key")
    assert run(cluster, wf_dir)["s3-secret"].ok is True


def _set_image(wf_dir: Path, image: str) -> None:
    for path in wf_dir.glob("*.yaml"):
        docs = list(yaml.safe_load_all(path.read_text()))
        for doc in docs:
            if doc.get("kind") == "Job":
                doc["spec"]["template"]["spec"]["containers"][0]["image"] = image
        path.write_text("---\n".join(yaml.safe_dump(d, sort_keys=False) for d in docs))


def test_image_reference_and_pull_secret(cluster: FakeCluster, wf_dir: Path) -> None:
    _set_image(wf_dir, "GHCR.io/Team/Img:1")  # a folder edited by hand
    check = run(cluster, wf_dir)["image"]
    assert check.ok is False and "not a valid image reference" in check.message and "lowercase" in check.message
    write_workflow(wf_dir, image="registry.example.org/team/cng:1.0", image_pull_secrets=("regcred",))
    check = run(cluster, wf_dir)["image"]
    assert check.ok is False
    assert check.message.startswith("image pull Secret 'regcred' does not exist in geo: create it with kubectl create")
    cluster.add_secret(NS, "regcred", {".dockerconfigjson": "e30="})
    check = run(cluster, wf_dir)["image"]
    assert check.ok is True and check.message == "registry.example.org/team/cng:1.0 (pulled with regcred)"


def test_priority_class_must_exist(cluster: FakeCluster, wf_dir: Path) -> None:
    write_workflow(wf_dir, priority_class="research-batch")
    check = run(cluster, wf_dir)["priority-class"]
    assert check.ok is False and "PriorityClass 'research-batch' does not exist" in check.message
    cluster.add_cluster_object("PriorityClass", "research-batch")
    assert run(cluster, wf_dir)["priority-class"].ok is True


def test_storage_class(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.remove("StorageClass", "", "standard")
    cluster.add_cluster_object("StorageClass", "ceph-block")
    check = run(cluster, wf_dir)["storage"]
    assert check.ok is False
    assert check.message.startswith("the cluster has no default StorageClass, so the PVC would stay Pending forever")
    assert check.message.endswith("--storage-class of one of: ceph-block")
    write_workflow(wf_dir, storage_class="ceph-rbd")
    check = run(cluster, wf_dir)["storage"]
    assert check.ok is False and "StorageClass 'ceph-rbd' does not exist (there are: ceph-block)" in check.message
    write_workflow(wf_dir, storage_class="ceph-block")
    assert run(cluster, wf_dir)["storage"].ok is True


def test_a_bound_pvc_needs_no_storage_class(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.remove("StorageClass", "", "standard")
    pvc = load_workflow(wf_dir).pvc
    cluster.objects[("PersistentVolumeClaim", NS, pvc["metadata"]["name"])] = {**pvc, "status": {"phase": "Bound"}}
    check = run(cluster, wf_dir)["storage"]
    assert check.ok is True and check.message.endswith("exists and is Bound")


def test_pods_that_no_node_can_take(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.remove("Node", "", "node-1")
    cluster.add_node("small-1", cpu="8", memory="15Gi")
    cluster.add_node("small-2", cpu="8", memory="12Gi")
    check = run(cluster, wf_dir)["node-fit"]
    assert check.ok is False
    assert check.message == (
        "the pmtiles pod asks for cpu 4, memory 16.0Gi, ephemeral-storage 100.0Gi but no Node can give it "
        "(the largest, small-1, has cpu 8, memory 15.0Gi, ephemeral-storage 200.0Gi allocatable): lower "
        "--pmtiles-cpu / --pmtiles-memory / --pmtiles-ephemeral-storage, or it stays Pending forever"
    )
    write_workflow(wf_dir, resources={**DEFAULT_RESOURCES, "pmtiles": Resources("4", "12Gi", "100Gi")})
    assert run(cluster, wf_dir)["node-fit"].ok is True


def test_node_selector_and_taints(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.remove("Node", "", "node-1")
    cluster.add_node("gpu-1", cpu="32", memory="128Gi", labels={"pool": "batch"}, taints=[_taint("dedicated", "geo")])
    write_workflow(wf_dir, node_selector=(("pool", "general"),))
    check = run(cluster, wf_dir)["node-fit"]
    assert check.ok is False and "no Node matches the convert pod's node selector and tolerations" in check.message
    write_workflow(wf_dir, node_selector=(("pool", "batch"),))
    assert run(cluster, wf_dir)["node-fit"].ok is False  # the taint is not tolerated
    write_workflow(wf_dir, node_selector=(("pool", "batch"),), tolerations=(Toleration("dedicated", "geo"),))
    assert run(cluster, wf_dir)["node-fit"].ok is True
    write_workflow(wf_dir, node_selector=(("pool", "batch"),), tolerations=(Toleration("dedicated"),))
    assert run(cluster, wf_dir)["node-fit"].ok is True  # Exists: any value


def _taint(key: str, value: str) -> dict[str, str]:
    return {"key": key, "value": value, "effect": "NoSchedule"}


def test_what_preflight_calls_unschedulable_the_scheduler_leaves_pending(cluster: FakeCluster, wf_dir: Path) -> None:
    cluster.remove("Node", "", "node-1")
    cluster.add_node("tiny", cpu="1", memory="2Gi")
    assert run(cluster, wf_dir)["node-fit"].ok is False
    small = Resources("100m", "256Mi", "1Gi")
    write_workflow(
        wf_dir, resources={**DEFAULT_RESOURCES, **{s: small for s in ("convert", "pmtiles", "hex", "catalog")}}
    )
    checks = run(cluster, wf_dir)
    assert checks["node-fit"].ok is False and "the repartition pod" in checks["node-fit"].message
    assert "the convert pod" not in checks["node-fit"].message
    # the same pods in the fake: the upload pod (small) starts, a repartition pod would not
    api = cluster.api()
    wf = load_workflow(wf_dir)
    job = dict(next(s.manifest for s in wf.steps if s.step == "repartition"))
    api.create(NS, job)
    for _ in range(3):
        cluster.tick()
    (pod,) = cluster.pods(NS, job["metadata"]["name"])
    assert pod["status"]["phase"] == "Pending"
    assert pod["status"]["conditions"][0]["reason"] == "Unschedulable"
    assert pod["status"]["conditions"][0]["message"].startswith("0/1 nodes are available: 1 Insufficient")

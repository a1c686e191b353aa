"""`cng-datasets workflow`: files, counting, errors, shared options, fast --help."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from cng_datasets.cli import cli
from cng_datasets.cli.options import config_from_options
from cng_datasets.config import DEFAULT_RESOURCES, Resources
from cng_datasets.errors import UsageError
from cng_datasets.k8s import manifests
from tests.conftest import DATA

HOSTILE_URL = "https://example.com/a b&c='d\"e.gpkg?x=1&y=2"
FILES = sorted([*manifests.FILES, "README.md"])


@pytest.fixture(autouse=True)
def _reset_logger() -> Any:
    yield
    logging.getLogger("cng_datasets").handlers.clear()


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["workflow", *args], catch_exceptions=False)


def _base(out: Path, *extra: str) -> list[str]:
    return [
        "--dataset",
        "my-dataset",
        "--source-url",
        "https://example.com/data.gpkg",
        "--bucket",
        "public-my-dataset",
        "--namespace",
        "biodiversity",
        "--output-dir",
        str(out),
        *extra,
    ]


def _load(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def test_writes_exactly_the_described_files(tmp_path: Path) -> None:
    out = tmp_path / "my-dataset"
    r = _invoke(*_base(out, "--feature-count", "1000000", "--h3-resolution", "10", "--parent-resolutions", "9,8,0"))
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == FILES
    (hex_job,) = _load(out / "hex-job.yaml")
    assert hex_job["spec"]["completions"] == 200 and hex_job["spec"]["parallelism"] == 50
    readme = (out / "README.md").read_text()
    assert f"kubectl apply -f {out}/workflow-rbac.yaml" in readme
    assert "job/my-dataset-workflow -n biodiversity" in readme
    (sa, role, binding) = _load(out / "workflow-rbac.yaml")
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "biodiversity"


def test_flags_reach_the_manifests(tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = _invoke(
        *_base(
            out,
            "--feature-count",
            "5000",
            "--source-url",
            HOSTILE_URL,
            "--layer",
            "lyr",
            "--image",
            "reg.io/x:1",
            "--s3-endpoint",
            "http://minio:9000",
            "--s3-secret",
            "keys",
            "--s3-access-key-key",
            "id",
            "--s3-secret-key-key",
            "secret",
            "--s3-region",
            "eu",
            "--hex-cpu",
            "500m",
            "--hex-memory",
            "2Gi",
            "--hex-ephemeral-storage",
            "3Gi",
            "--max-completions",
            "3",
            "--max-parallelism",
            "2",
            "--containment",
            "full",
            "--max-zoom",
            "9",
            "--k8s-version",
            "1.31",
        )
    )
    assert r.exit_code == 0, r.output
    (conv,) = _load(out / "convert-job.yaml")
    c = conv["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "reg.io/x:1"
    assert c["command"][c["command"].index("--") + 1 :] == [
        "https://example.com/data.gpkg",
        HOSTILE_URL,
        "s3://public-my-dataset/my-dataset.parquet",
    ]
    env = {e["name"]: e for e in c["env"]}
    assert env["AWS_ENDPOINT_URL"]["value"] == "http://minio:9000"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "keys", "key": "secret"}
    assert env["AWS_REGION"]["value"] == "eu"
    (hx,) = _load(out / "hex-job.yaml")
    assert (hx["spec"]["completions"], hx["spec"]["parallelism"]) == (3, 2)
    hc = hx["spec"]["template"]["spec"]["containers"][0]
    assert hc["resources"]["limits"] == {"cpu": "500m", "memory": "2Gi", "ephemeral-storage": "3Gi"}
    assert hc["command"][hc["command"].index("--containment") + 1] == "full"
    assert hc["command"][hc["command"].index("--chunk-size") + 1] == "1667"  # 5000 features in ≤ 3 chunks
    (pm,) = _load(out / "pmtiles-job.yaml")
    cmd = pm["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--max-zoom") + 1] == "9"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "___"], "cannot derive a Kubernetes name"),
        (["--namespace", "Not_Valid"], "namespace"),
        (["--k8s-version", "1.27"], "1.29 or newer"),
        (["--bucket", "./local"], "S3 bucket"),
        (["--source-url", "/home/me/x.gpkg"], "local file"),
        (["--s3-endpoint", "minio:9000"], "s3-endpoint"),
        (["--hex-memory", "lots"], "not a Kubernetes quantity"),
        (["--dataset", "../up"], "--dataset"),
    ],
)
def test_impossible_options_give_one_line_and_exit_65(tmp_path: Path, extra: list[str], message: str) -> None:
    r = _invoke(*_base(tmp_path / "o", "--feature-count", "10"), *extra)
    assert r.exit_code == 65, r.output
    assert message in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "o").exists()


def test_counts_features_on_s3(s3: str, cli_run: Any, tmp_path: Path) -> None:
    from cng_datasets import storage

    storage.upload_file(DATA / "earthquakes.json", f"{s3}/src/quakes.json")
    out = tmp_path / "o"
    proc = cli_run("workflow", *_base(out)[:2], "--source-url", f"{s3}/src/quakes.json", *_base(out)[4:], check=True)
    (hx,) = _load(out / "hex-job.yaml")
    assert hx["spec"]["completions"] == 1  # 1,707 points: ~1,707 hex rows are one chunk's work
    assert "estimate: 1,707 features → ~1,707 hex rows at H3 resolution" in proc.stderr


def test_count_failure_falls_back_with_a_warning(cli_run: Any, tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = _base(out, "--count-timeout", "20")
    args[3] = "https://127.0.0.1:9/unreachable.gpkg"
    proc = cli_run("workflow", *args, check=True)
    assert "warning: could not count the features" in proc.stderr
    (hx,) = _load(out / "hex-job.yaml")
    assert hx["spec"]["completions"] == 200
    cmd = hx["spec"]["template"]["spec"]["containers"][0]["command"]
    assert cmd[cmd.index("--chunk-size") + 1] == "10000"


def test_config_from_options_ignores_unknown_and_fills_resources() -> None:
    cfg = config_from_options(
        dataset="a/b",
        source_urls=("s3://x/y.gpkg",),
        bucket="bkt",
        output_dir="ignored",
        parent_resolutions=(8, 0),
        hex_cpu="3",
        hex_memory=None,
        hex_ephemeral_storage="1Gi",
        quiet=True,
    )
    assert cfg.parent_resolutions == (8, 0)
    assert cfg.resources["hex"] == Resources(cpu="3", memory=DEFAULT_RESOURCES["hex"].memory, ephemeral_storage="1Gi")
    assert cfg.resources["convert"] == DEFAULT_RESOURCES["convert"]
    minimal = config_from_options(dataset="a", source_urls=("s3://x/y.gpkg",), bucket="bkt")
    assert minimal.resources == DEFAULT_RESOURCES and minimal.namespace == "default"
    with pytest.raises(UsageError):
        config_from_options(dataset="a", source_urls=(), bucket="bkt")

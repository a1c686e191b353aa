"""Dataset names that are not Kubernetes names, through `cng-datasets workflow`: either a valid,
stable derived name on every object (checked against the API schema and RFC 1123), or one clear
line and no manifests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from cng_datasets.config import DEFAULT_K8S_VERSION
from cng_datasets.k8s.names import MAX_LABEL, is_dns_label, is_label_value

pytestmark = pytest.mark.xdist_group("hostile")

SOURCE = "https://example.com/data/x.geojson"
LONG = "Long_Name-" * 30  # 300 characters


def _workflow(cli_run, tmp_path: Path, dataset: str):
    out = tmp_path / "manifests"
    proc = cli_run(
        "workflow",
        "--dataset",
        dataset,
        "--source-url",
        SOURCE,
        "--bucket",
        "bucket",
        "--output-dir",
        out,
        "--feature-count",
        "10",
        "-q",
    )
    return proc, out


@pytest.mark.parametrize(
    ("dataset", "base"),
    [
        ("My_Data!", "my-data"),
        ("2024data", "2024data"),  # a leading digit is fine in RFC 1123 labels
        ("_private/2024", "private-2024"),
        ("données/été", "donn-es-t"),
        (LONG, None),
    ],
    ids=["punctuation", "leading-digit", "leading-underscore", "non-ascii", "300-chars"],
)
def test_names_that_can_be_derived(cli_run, tmp_path: Path, dataset: str, base: str | None) -> None:
    proc, out = _workflow(cli_run, tmp_path, dataset)
    assert proc.returncode == 0, proc.stderr
    docs = [d for f in sorted(out.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert len(docs) >= 6
    bases = set()
    for doc in docs:
        kubernetes_validate.validate(doc, DEFAULT_K8S_VERSION, strict=True)
        meta = doc["metadata"]
        assert is_dns_label(meta["name"]), meta["name"]
        for value in meta.get("labels", {}).values():
            assert is_label_value(value), value
        if "cng-datasets/dataset" in meta.get("labels", {}):
            bases.add(meta["labels"]["cng-datasets/dataset"])
        if doc["kind"] == "Job":  # the controller copies the Job name into a pod label
            assert len(meta["name"]) <= MAX_LABEL
            # the pods still get the dataset's real path, not the derived name
            assert doc["metadata"]["annotations"]["cng-datasets/dataset-path"] == dataset
    assert len(bases) == 1
    (derived,) = bases
    if base is not None:
        assert derived == base
    else:  # a readable prefix and a stable hash of the full name
        digest = hashlib.sha256(dataset.encode()).hexdigest()[:8]
        assert derived.startswith("long-name-long-name") and derived.endswith(digest)


@pytest.mark.parametrize(
    ("dataset", "words"),
    [
        ("My Data!", ["My Data!", "spaces"]),
        ("!!!", ["!!!", "cannot derive a Kubernetes name"]),
        ("a/../b", ["a/../b", ".."]),
        ("语言", ["语言", "cannot derive a Kubernetes name"]),
    ],
    ids=["space", "only-punctuation", "dot-dot", "no-ascii-at-all"],
)
def test_names_that_cannot_be_derived(cli_run, tmp_path: Path, dataset: str, words: list[str]) -> None:
    proc, out = _workflow(cli_run, tmp_path, dataset)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 65, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --dataset "), proc.stderr
    for w in words:
        assert w in lines[0]
    assert not out.exists() or not any(out.iterdir())

"""RFC 1123 names derived from dataset names: readable, valid, bounded, stable; clear errors."""

from __future__ import annotations

import re

import pytest

from cng_datasets.errors import UsageError
from cng_datasets.k8s import names

LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        ("my-dataset", "my-dataset"),
        ("wdpa/2024", "wdpa-2024"),
        ("WDPA/2024_v2", "wdpa-2024-v2"),
        ("/nested/path/", "nested-path"),
        ("a__b//c", "a-b-c"),
        ("-leading-and-trailing-", "leading-and-trailing"),
        ("dots.in.name", "dots-in-name"),
        ("données/été", "donn-es-t"),
        ("x", "x"),
        ("123", "123"),
    ],
)
def test_readable_names(dataset: str, expected: str) -> None:
    assert names.dataset_k8s_name(dataset) == expected


HOSTILE = [
    "a" * 300,
    "Very/Long/Nested/" + "Dataset_Name_" * 10,
    "x" * 48,
    "x" * 49,
    "&;$(rm -rf)`|'\"<>" + "z",
    "ÜÑÎÇØÐÉ-ünïcode/データ1",
    "..a..",
    "a" + "-" * 100 + "b",
]


@pytest.mark.parametrize("dataset", HOSTILE)
def test_every_derived_name_is_a_valid_label_of_at_most_63_characters(dataset: str) -> None:
    base = names.dataset_k8s_name(dataset)
    assert LABEL.match(base) and len(base) <= names.MAX_BASE
    for step in names.JOB_SUFFIXES:
        job = names.job_name(dataset, step)
        assert LABEL.match(job) and len(job) <= 63, job
        assert names.is_label_value(job)  # the job-name label of its pods
    pvc = names.pvc_name(dataset)
    assert names.is_dns_subdomain(pvc) and len(pvc) <= 63


def test_long_names_keep_a_readable_prefix_and_a_stable_distinct_hash() -> None:
    a = "global/" + "protected_areas_" * 6 + "a"
    b = "global/" + "protected_areas_" * 6 + "b"
    na, nb = names.dataset_k8s_name(a), names.dataset_k8s_name(b)
    assert na.startswith("global-protected-areas-")
    assert na != nb
    assert na == names.dataset_k8s_name(a)  # stable
    assert len(na) <= names.MAX_BASE
    assert re.search(r"-[0-9a-f]{8}$", na)
    assert len(names.pvc_name(a)) <= 63


def test_max_length_name_without_hash() -> None:
    ds = "d" * names.MAX_BASE
    assert names.MAX_BASE == 48
    assert names.dataset_k8s_name(ds) == ds
    assert names.pvc_name(ds) == ds + "-workflow-yamls"
    assert len(names.pvc_name(ds)) == 63
    assert names.dataset_k8s_name(ds + "d") != ds + "d"


@pytest.mark.parametrize("dataset", ["___", "///", "---", "データ", "é"])
def test_impossible_names_give_a_clear_error(dataset: str) -> None:
    with pytest.raises(UsageError, match="cannot derive a Kubernetes name"):
        names.dataset_k8s_name(dataset)


def test_job_and_pvc_names() -> None:
    assert [names.job_name("my-dataset", s) for s in names.JOB_SUFFIXES] == [
        "my-dataset-convert",
        "my-dataset-pmtiles",
        "my-dataset-hex",
        "my-dataset-repartition",
        "my-dataset-catalog",
        "my-dataset-upload-yamls",
        "my-dataset-workflow",
    ]
    assert names.pvc_name("my-dataset") == "my-dataset-workflow-yamls"
    assert names.service_account_name() == "cng-datasets-workflow"
    with pytest.raises(UsageError):
        names.job_name("my-dataset", "bogus")


@pytest.mark.parametrize("ns", ["", "Bio", "bio_div", "-bio", "a" * 64, "a.b", "bio diversity"])
def test_bad_namespaces_are_refused(ns: str) -> None:
    with pytest.raises(UsageError, match="namespace"):
        names.check_namespace(ns)


def test_good_namespace_secret_and_keys() -> None:
    assert names.check_namespace("biodiversity") == "biodiversity"
    assert names.check_secret_name("aws.s3-keys") == "aws.s3-keys"
    assert names.check_secret_key("AWS_ACCESS_KEY_ID", "--k") == "AWS_ACCESS_KEY_ID"
    with pytest.raises(UsageError):
        names.check_secret_name("AWS Keys")
    with pytest.raises(UsageError):
        names.check_secret_key("bad key", "--s3-access-key-key")


@pytest.mark.parametrize(
    ("image", "ok", "floating"),
    [
        ("ghcr.io/cng-datasets/cng-datasets:0.1.0", True, False),
        ("registry.example.org:5000/team/img:v1.2", True, False),
        ("python:3.12-slim", True, False),
        ("localhost/img", True, True),
        ("img:latest", True, True),
        ("img@sha256:" + "a" * 64, True, False),
        ("img:latest@sha256:" + "a" * 64, True, False),
        ("Img:1", False, False),
        ("img:", False, False),
        ("img:bad tag", False, False),
        ("", False, False),
        ("img@sha256:short", False, False),
    ],
)
def test_image_references(image: str, ok: bool, floating: bool) -> None:
    from cng_datasets.k8s.names import check_image, is_floating_image

    if ok:
        assert check_image(image) == image
    else:
        with pytest.raises(UsageError, match="--image"):
            check_image(image)
    assert is_floating_image(image) is floating


def test_a_floating_image_is_always_pulled() -> None:
    from cng_datasets.config import WorkflowConfig
    from cng_datasets.k8s import manifests
    from cng_datasets.plan import build_plan

    def policy(image: str) -> str:
        cfg = WorkflowConfig(dataset="d", source_urls=("https://x/y.gpkg",), bucket="b", image=image)
        return str(
            manifests.build_documents(build_plan(cfg, 10))["hex-job.yaml"][0]["spec"]["template"]["spec"]["containers"][
                0
            ]["imagePullPolicy"]
        )

    assert policy("me/img:latest") == "Always"
    assert policy("me/img:1.0") == "IfNotPresent"

"""Kubernetes names of a dataset's objects, derived from the dataset name by RFC 1123 rules, and
the file names of its workflow folder (:data:`PLAN_FILE`, :func:`job_file`).

A dataset name such as ``WDPA/2024_v2`` becomes the readable base ``wdpa-2024-v2``: lowercase,
every character outside ``[a-z0-9]`` becomes ``-``, runs of ``-`` collapse and the ends are
trimmed. Every object name is ``<base>-<suffix>`` and stays within 63 characters: a Job name
is copied by the Job controller into the ``job-name`` label of its pods (a label value is at most
63 characters), and the longest name, the PVC ``<base>-workflow-yamls``, is held to the same
bound. A longer base keeps a readable prefix and ends with a short stable hash of the full dataset
name, so two long names that share a prefix still get distinct objects.

Example:
    >>> dataset_k8s_name("WDPA/2024_v2")
    'wdpa-2024-v2'
    >>> job_name("wdpa/2024", "hex")
    'wdpa-2024-hex'
"""

from __future__ import annotations

import hashlib
import re

from cng_datasets.errors import UsageError
from cng_datasets.k8s.rbac import SERVICE_ACCOUNT

#: Suffix of each Job name, by step (processing steps and the two infrastructure Jobs).
JOB_SUFFIXES: dict[str, str] = {
    "convert": "convert",
    "pmtiles": "pmtiles",
    "hex": "hex",
    "repartition": "repartition",
    "catalog": "catalog",
    "upload": "upload-yamls",
    "workflow": "workflow",
}
PVC_SUFFIX = "workflow-yamls"
#: The orchestrator's progress ConfigMap ``<base>-progress`` (:mod:`cng_datasets.k8s.progress`).
PROGRESS_SUFFIX = "progress"

#: The plan (:meth:`cng_datasets.plan.Plan.to_json`) beside the Job files: the orchestrator's
#: order and dependencies.
PLAN_FILE = "plan.json"


def job_file(step: str) -> str:
    """The file of the Job of plan step ``step`` in a workflow folder (and on the PVC)."""
    return f"{step}-job.yaml"


#: Longest label value / DNS label (RFC 1123).
MAX_LABEL = 63
#: Longest base name so that every Job name (a label value of its pods) and the PVC name
#: (``<base>-workflow-yamls``, the longest) stay within 63 characters.
MAX_BASE = MAX_LABEL - 1 - max(len(s) for s in (*JOB_SUFFIXES.values(), PVC_SUFFIX, PROGRESS_SUFFIX))
HASH_LEN = 8

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_QUALIFIED_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")

# The image reference grammar of the distribution project (docker/distribution reference.go).
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_DOMAIN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?"
)
_IMAGE = re.compile(
    rf"^(?:(?P<domain>{_IMAGE_DOMAIN})/)?(?P<path>{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?"
    r"(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)


def is_dns_label(name: str) -> bool:
    """True for an RFC 1123 label: ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, at most 63 characters."""
    return len(name) <= MAX_LABEL and bool(_LABEL.match(name))


def is_dns_subdomain(name: str) -> bool:
    """True for an RFC 1123 subdomain (dot-separated labels), at most 253 characters."""
    return len(name) <= 253 and bool(_SUBDOMAIN.match(name))


def is_label_value(value: str) -> bool:
    """True for a valid Kubernetes label value (at most 63 characters)."""
    return len(value) <= MAX_LABEL and bool(_LABEL_VALUE.match(value))


def dataset_k8s_name(dataset: str) -> str:
    """The RFC 1123 base name of ``dataset`` (at most :data:`MAX_BASE` characters).

    Raises :class:`UsageError` when the name has no letter or digit to build a name from.
    """
    base = re.sub(r"[^a-z0-9]+", "-", dataset.strip("/").lower()).strip("-")
    if not base:
        raise UsageError(
            f"--dataset {dataset!r}: cannot derive a Kubernetes name from it "
            "(it needs at least one ASCII letter or digit)"
        )
    if len(base) > MAX_BASE:
        digest = hashlib.sha256(dataset.strip("/").encode("utf-8")).hexdigest()[:HASH_LEN]
        prefix = base[: MAX_BASE - HASH_LEN - 1].rstrip("-")
        base = f"{prefix}-{digest}"
    if not is_dns_label(base):  # pragma: no cover - guaranteed by construction
        raise UsageError(f"--dataset {dataset!r}: derived name {base!r} is not a valid Kubernetes name")
    return base


def job_name(dataset: str, step: str) -> str:
    """Name of the Job of ``step`` (a processing step, ``upload`` or ``workflow``)."""
    try:
        suffix = JOB_SUFFIXES[step]
    except KeyError:
        raise UsageError(f"no Job for step {step!r}") from None
    name = f"{dataset_k8s_name(dataset)}-{suffix}"
    if not is_dns_label(name):  # pragma: no cover - guaranteed by MAX_BASE
        raise UsageError(f"Job name {name!r} is longer than {MAX_LABEL} characters")
    return name


def pvc_name(dataset: str) -> str:
    """Name of the PVC that holds the workflow's Job YAMLs."""
    return f"{dataset_k8s_name(dataset)}-{PVC_SUFFIX}"


def service_account_name() -> str:
    """The ServiceAccount, Role and RoleBinding shared by every dataset of a namespace."""
    return SERVICE_ACCOUNT


def check_namespace(namespace: str) -> str:
    """Return ``namespace`` if it is a valid namespace name, else raise :class:`UsageError`."""
    if not is_dns_label(namespace):
        raise UsageError(
            f"--namespace {namespace!r} is not a valid Kubernetes namespace "
            "(lowercase letters, digits and '-', at most 63 characters)"
        )
    return namespace


def check_secret_name(name: str) -> str:
    """Return ``name`` if it is a valid Secret name, else raise :class:`UsageError`."""
    if not is_dns_subdomain(name):
        raise UsageError(f"--s3-secret {name!r} is not a valid Kubernetes Secret name")
    return name


def is_qualified_name(name: str) -> bool:
    """True for a label key / toleration key: ``[prefix/]name``, the prefix a DNS subdomain."""
    prefix, slash, rest = name.rpartition("/")
    if slash and not is_dns_subdomain(prefix):
        return False
    return len(rest) <= MAX_LABEL and bool(_QUALIFIED_NAME.match(rest))


def check_image(image: str) -> str:
    """Return ``image`` if it is a well-formed image reference (``[registry/]path[:tag][@digest]``),
    else raise :class:`UsageError` saying what is wrong."""
    match = _IMAGE.match(image)
    if not match or len(match.group("path")) + len(match.group("domain") or "") > 255:
        hint = " (repository names are lowercase)" if image != image.lower() and "@" not in image else ""
        raise UsageError(f"--image {image!r} is not a valid image reference [registry/]name[:tag][@digest]{hint}")
    return image


def is_floating_image(image: str) -> bool:
    """True when ``image`` names no fixed version (no tag, or ``:latest``, and no digest): nodes
    must then pull it every time, as Kubernetes itself defaults to for such images."""
    match = _IMAGE.match(image)
    return match is not None and not match.group("digest") and match.group("tag") in (None, "latest")


def check_scheduling(
    pull_secrets: tuple[str, ...],
    priority_class: str | None,
    node_selector: tuple[tuple[str, str], ...],
    tolerations: tuple[tuple[str, str | None], ...],
) -> None:
    """Raise :class:`UsageError` for a shared-cluster setting that the API server would reject."""
    for name in pull_secrets:
        if not is_dns_subdomain(name):
            raise UsageError(f"--image-pull-secret {name!r} is not a valid Kubernetes Secret name")
    if priority_class is not None and not is_dns_subdomain(priority_class):
        raise UsageError(f"--priority-class {priority_class!r} is not a valid PriorityClass name")
    for key, value in node_selector:
        if not is_qualified_name(key) or not is_label_value(value):
            raise UsageError(f"--node-selector {key}={value}: not a valid label key and value")
    for key, tvalue in tolerations:
        if not is_qualified_name(key) or (tvalue is not None and not is_label_value(tvalue)):
            raise UsageError(f"--toleration {key}: not a valid taint key and value")


def check_secret_key(key: str, flag: str) -> str:
    """Return ``key`` if it is a valid key of a Secret's data, else raise :class:`UsageError`."""
    if len(key) > 253 or not _SECRET_KEY.match(key):
        raise UsageError(f"{flag} {key!r} is not a valid Secret key (letters, digits, '-', '_', '.')")
    return key

"""Typed configuration of a dataset workflow: every flag of ``workflow`` and ``run``.

Parameters travel as frozen dataclasses; the CLI parses strings at the edge and the library
receives ints, tuples and :class:`Resources`. Nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from cng_datasets import __version__, contract
from cng_datasets.contract import CONTAINMENT_MODES
from cng_datasets.errors import UsageError

STEPS = ("convert", "pmtiles", "hex", "repartition", "catalog")
#: Parent resolutions when none are given, each kept only when coarser than the H3 resolution
#: (resolution 4 keeps 0), so that every resolution has a working default.
DEFAULT_PARENT_RESOLUTIONS = (9, 8, 0)

#: Default Kubernetes version whose schemas the manifests are validated against. 1.33 is the
#: first release where ``backoffLimitPerIndex`` / ``maxFailedIndexes`` are GA (and
#: ``podFailurePolicy`` has been GA since 1.31), so every field we emit is stable there.
DEFAULT_K8S_VERSION = "1.33"

#: Where the release workflow (.github/workflows/release.yml) pushes the image, tagged with the
#: package version: the default image is the one built from this very version.
IMAGE_REPOSITORY = "ghcr.io/cng-datasets/cng-datasets"
DEFAULT_IMAGE = f"{IMAGE_REPOSITORY}:{__version__}"

#: Per-index retries of the hex Job (``backoffLimitPerIndex``) and how many indexes may fail for
#: good before the Job stops the rest (``maxFailedIndexes``; 0: stop at the first, since hex
#: output with a chunk missing is useless).
DEFAULT_HEX_RETRIES = 2
DEFAULT_MAX_FAILED_INDEXES = 0

TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

_QUANTITY = re.compile(r"^([0-9]+(\.[0-9]+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def check_quantity(value: str, what: str) -> str:
    """Validate a Kubernetes quantity such as ``"500m"``, ``"2"``, ``"8Gi"``; return it unchanged."""
    if not _QUANTITY.match(str(value)):
        raise UsageError(f"{what}: {value!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
    return str(value)


@dataclass(frozen=True)
class Resources:
    """CPU, memory and ephemeral storage of one step's container (requests = limits for memory).

    CPU is requested and limited at the same value so a pod's cgroup quota, which the steps read
    to size their thread pools, is what was asked for.
    """

    cpu: str = "1"
    memory: str = "4Gi"
    ephemeral_storage: str = "10Gi"

    def __post_init__(self) -> None:
        check_quantity(self.cpu, "cpu")
        check_quantity(self.memory, "memory")
        check_quantity(self.ephemeral_storage, "ephemeral-storage")


@dataclass(frozen=True)
class Toleration:
    """A pod toleration, written ``KEY[=VALUE][:EFFECT]`` as ``kubectl taint`` writes a taint.

    Without ``=VALUE`` it tolerates the key with any value (operator ``Exists``); without
    ``:EFFECT`` every effect.

    Example:
        >>> Toleration.parse("gpu=true:NoSchedule").to_k8s()
        {'key': 'gpu', 'operator': 'Equal', 'value': 'true', 'effect': 'NoSchedule'}
    """

    key: str
    value: str | None = None
    effect: str = ""

    @classmethod
    def parse(cls, text: str) -> Toleration:
        body, _, effect = text.partition(":")
        key, eq, value = body.partition("=")
        if not key or (effect and effect not in TAINT_EFFECTS) or (":" in text and not effect):
            raise UsageError(
                f"--toleration {text!r}: expected KEY[=VALUE][:EFFECT] with EFFECT one of {', '.join(TAINT_EFFECTS)}"
            )
        return cls(key, value if eq else None, effect)

    def __str__(self) -> str:
        return (
            self.key + (f"={self.value}" if self.value is not None else "") + (f":{self.effect}" if self.effect else "")
        )

    def to_k8s(self) -> dict[str, str]:
        out = {"key": self.key, "operator": "Exists" if self.value is None else "Equal"}
        if self.value is not None:
            out["value"] = self.value
        if self.effect:
            out["effect"] = self.effect
        return out


def parse_node_selector(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` → ``(KEY, VALUE)``."""
    key, eq, value = text.partition("=")
    if not key or not eq:
        raise UsageError(f"--node-selector {text!r}: expected KEY=VALUE")
    return key, value


#: Defaults per step: convert and pmtiles hold a whole-file temp copy on disk; hex is many small pods.
DEFAULT_RESOURCES: dict[str, Resources] = {
    "convert": Resources(cpu="2", memory="8Gi", ephemeral_storage="50Gi"),
    "pmtiles": Resources(cpu="4", memory="16Gi", ephemeral_storage="100Gi"),
    "hex": Resources(cpu="1", memory="8Gi", ephemeral_storage="20Gi"),
    "repartition": Resources(cpu="2", memory="8Gi", ephemeral_storage="50Gi"),
    # reads footers and headers only
    "catalog": Resources(cpu="500m", memory="1Gi", ephemeral_storage="1Gi"),
}


def default_resources() -> dict[str, Resources]:
    """A fresh copy of :data:`DEFAULT_RESOURCES`."""
    return dict(DEFAULT_RESOURCES)


@dataclass(frozen=True)
class WorkflowConfig:
    """Everything that decides what the workflow of one dataset does.

    ``bucket`` is an S3 bucket name (``my-bucket``), an ``s3://bucket/prefix`` URL, or — for local
    runs — a local directory. ``dataset`` may contain ``/`` for nested output paths.

    Example:
        >>> cfg = WorkflowConfig(dataset="wdpa/2024", source_urls=("https://x/wdpa.gpkg",), bucket="public-wdpa")
        >>> cfg.parquet_url
        's3://public-wdpa/wdpa/2024.parquet'
    """

    dataset: str
    source_urls: tuple[str, ...]
    bucket: str
    layer: str | None = None
    h3_resolution: int = 10
    #: ``None``: :data:`DEFAULT_PARENT_RESOLUTIONS` coarser than ``h3_resolution`` (set on creation)
    parent_resolutions: tuple[int, ...] | None = None
    containment: str = "center"
    max_zoom: int | None = None
    min_zoom: int | None = None
    id_column: str | None = None
    namespace: str = "default"
    image: str = DEFAULT_IMAGE
    s3_endpoint: str | None = None
    s3_secret: str = "aws"
    #: keys inside the ``s3_secret`` Secret that hold the access key id and the secret key
    s3_access_key_key: str = "AWS_ACCESS_KEY_ID"
    s3_secret_key_key: str = "AWS_SECRET_ACCESS_KEY"
    s3_region: str | None = None
    resources: dict[str, Resources] = field(default_factory=default_resources)
    max_completions: int = 200
    max_parallelism: int = 50
    chunk_size: int | None = None
    k8s_version: str = DEFAULT_K8S_VERSION
    #: shared-cluster settings, written into every pod spec (and the hex Job) of the manifests
    image_pull_secrets: tuple[str, ...] = ()
    priority_class: str | None = None
    #: StorageClass of the PVC that holds the YAMLs (``None``: the cluster's default one)
    storage_class: str | None = None
    node_selector: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    hex_retries: int = DEFAULT_HEX_RETRIES
    max_failed_indexes: int = DEFAULT_MAX_FAILED_INDEXES
    #: convert's read options (passed on to ``cng-datasets convert`` only when set)
    lat_column: str | None = None
    lon_column: str | None = None
    encoding: str | None = None
    source_crs: str | None = None
    #: ``fail`` or ``skip`` features whose geometry is unusable
    on_invalid: str = "fail"
    #: fail convert unless the sources hold exactly this many features
    expect_features: int | None = None
    #: what the STAC collection and the dataset card say of the data (SPDX licence id)
    license: str = "other"
    description: str | None = None
    #: let browsers read the outputs (a CORS rule on the s3:// bucket, set by the catalog step)
    cors: bool = False

    def __post_init__(self) -> None:
        if not self.source_urls:
            raise UsageError("at least one --source-url is needed")
        if self.on_invalid not in ("fail", "skip"):
            raise UsageError("--on-invalid must be fail or skip")
        if (self.lat_column is None) != (self.lon_column is None):
            raise UsageError("--lat-column and --lon-column go together")
        if self.cors and self.is_local:
            raise UsageError("--cors applies to an s3:// --bucket (a local directory has no CORS)")
        if self.expect_features is not None and self.expect_features < 0:
            raise UsageError("--expect-features must not be negative")
        ds = self.dataset.strip("/")
        if not ds or any(part in ("", ".", "..") for part in ds.split("/")):
            raise UsageError(f"--dataset {self.dataset!r} must be a non-empty path without '.', '..' or '//'")
        if any(c.isspace() for c in self.dataset) or "\\" in self.dataset:
            raise UsageError(f"--dataset {self.dataset!r} must not contain spaces or backslashes")
        if not 0 <= self.h3_resolution <= 15:
            raise UsageError(f"--h3-resolution {self.h3_resolution} is outside 0..15")
        if self.parent_resolutions is None:
            defaults = tuple(r for r in DEFAULT_PARENT_RESOLUTIONS if r < self.h3_resolution)
            object.__setattr__(self, "parent_resolutions", defaults)
        for r in self.parents:
            if not 0 <= r < self.h3_resolution:
                raise UsageError(f"--parent-resolutions: {r} must be coarser than --h3-resolution {self.h3_resolution}")
        if self.containment not in CONTAINMENT_MODES:
            raise UsageError(f"--containment must be one of {', '.join(CONTAINMENT_MODES)}")
        if self.max_completions < 1 or self.max_parallelism < 1:
            raise UsageError("--max-completions and --max-parallelism must be at least 1")
        if self.hex_retries < 0 or self.max_failed_indexes < 0:
            raise UsageError("--hex-retries and --max-failed-indexes must not be negative")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise UsageError("--chunk-size must be at least 1")
        for z in (self.max_zoom, self.min_zoom):
            if z is not None and not 0 <= z <= 24:
                raise UsageError(f"zoom {z} is outside 0..24")
        if self.min_zoom is not None and self.max_zoom is not None and self.min_zoom > self.max_zoom:
            raise UsageError("--min-zoom is larger than --max-zoom")
        unknown = set(self.resources) - set(STEPS)
        if unknown:
            raise UsageError(f"resources given for unknown steps: {', '.join(sorted(unknown))}")
        if self.s3_endpoint is not None and not re.match(r"^https?://[^/\s]+", self.s3_endpoint):
            raise UsageError(
                f"--s3-endpoint {self.s3_endpoint!r} must be a URL such as http://host:port or https://host"
            )
        if not re.fullmatch(r"1\.[0-9]{2}", self.k8s_version):
            raise UsageError(f"--k8s-version {self.k8s_version!r} must look like 1.33")

    # ---- derived values -----------------------------------------------------------------

    @property
    def parents(self) -> tuple[int, ...]:
        """The parent resolutions (the defaults already applied)."""
        assert self.parent_resolutions is not None  # set in __post_init__
        return self.parent_resolutions

    @property
    def dataset_path(self) -> str:
        """The dataset name as a path below the bucket (no leading / trailing slash)."""
        return self.dataset.strip("/")

    @property
    def base_name(self) -> str:
        """The last component of the dataset name (PMTiles layer name)."""
        return self.dataset_path.rsplit("/", 1)[-1]

    @property
    def root_url(self) -> str:
        """Where outputs go: ``s3://bucket[/prefix]`` or a local directory."""
        b = self.bucket
        if "://" in b or b.startswith(("/", ".", "~")):
            return b.rstrip("/") if "://" in b else b
        return f"s3://{b.strip('/')}"

    @property
    def is_local(self) -> bool:
        return "://" not in self.root_url

    @property
    def parquet_url(self) -> str:
        return contract.parquet_url(self.root_url, self.dataset_path)

    @property
    def pmtiles_url(self) -> str:
        return contract.pmtiles_url(self.root_url, self.dataset_path)

    @property
    def hex_url(self) -> str:
        return contract.hex_url(self.root_url, self.dataset_path)

    @property
    def catalog_url(self) -> str:
        """The STAC collection (``<dataset>/collection.json``), written last by the catalog step."""
        return contract.catalog_url(self.root_url, self.dataset_path)

    @property
    def chunks_url(self) -> str:
        return contract.chunks_url(self.root_url, self.dataset_path)

    def resources_for(self, step: str) -> Resources:
        return self.resources.get(step, DEFAULT_RESOURCES[step])

"""Options shared by ``workflow`` and ``run``, and their conversion to a :class:`WorkflowConfig`.

- :func:`workflow_options`: what the dataset is and how it is processed (both commands).
- :func:`kubernetes_options`: namespace, image, S3 Secret, resources, schema version and the
  shared-cluster settings (``workflow``; ``run`` accepts and ignores them), and ``--profile FILE``:
  a YAML file of any of these options, whose values become the defaults (see :func:`load_profile`).
- :func:`config_from_options`: the keyword arguments click passes → a validated ``WorkflowConfig``
  (arguments it does not know, such as ``output_dir``, are ignored).

This module imports only click and the config module, so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from cng_datasets.cli.common import INT_LIST
from cng_datasets.config import (
    DEFAULT_PARENT_RESOLUTIONS,
    DEFAULT_RESOURCES,
    STEPS,
    Resources,
    Toleration,
    WorkflowConfig,
    parse_node_selector,
)
from cng_datasets.contract import CONTAINMENT_MODES
from cng_datasets.errors import first_line

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_COUNT_TIMEOUT = 120.0


def _default(name: str) -> Any:
    """The default of a :class:`WorkflowConfig` field: defaults live in the config only."""
    return next(f.default for f in dataclasses.fields(WorkflowConfig) if f.name == name)


def _apply(func: F, options: Sequence[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def workflow_options(func: F) -> F:
    """Dataset, sources, outputs and processing options (shared by ``workflow`` and ``run``)."""
    options = [
        click.option("--dataset", required=True, help="Dataset name; may contain '/' for nested output paths."),
        click.option(
            "--source-url",
            "source_urls",
            required=True,
            multiple=True,
            help="Source file or URL (local, s3://, https://); repeat for several sources.",
        ),
        click.option("--bucket", required=True, help="Output bucket (name or s3://bucket/prefix)."),
        click.option("--layer", default=None, help="Layer of multi-layer sources."),
        click.option("--id-column", default=None, help="Name of the feature id column (default _cng_fid)."),
        click.option("--lat-column", default=None, help="CSV latitude column (auto-detected otherwise)."),
        click.option("--lon-column", default=None, help="CSV longitude column (auto-detected otherwise)."),
        click.option("--encoding", default=None, help="Text encoding of Shapefiles without .cpg (detected otherwise)."),
        click.option("--source-crs", default=None, help="CRS of the sources, overriding their metadata."),
        click.option(
            "--on-invalid",
            type=click.Choice(["fail", "skip"]),
            default=_default("on_invalid"),
            show_default=True,
            help="Features whose geometry is unusable: fail, or skip and list them (convert).",
        ),
        click.option(
            "--expect-features",
            type=click.IntRange(min=0),
            default=None,
            help="Fail convert unless the sources hold exactly this many features.",
        ),
        click.option(
            "--license",
            default=_default("license"),
            show_default=True,
            help="SPDX licence id of the data, for the STAC collection and the dataset card.",
        ),
        click.option("--description", default=None, help="What the dataset is, for the STAC collection and card."),
        click.option(
            "--cors",
            is_flag=True,
            default=False,
            help="Let browsers read the outputs: add a CORS rule (GET/HEAD with Range, any origin) to the S3 bucket.",
        ),
        click.option(
            "--h3-resolution", type=click.IntRange(0, 15), default=_default("h3_resolution"), show_default=True
        ),
        click.option(
            "--parent-resolutions",
            type=INT_LIST,
            default=None,
            help="Comma-separated parent H3 resolutions.  [default: "
            + ",".join(map(str, DEFAULT_PARENT_RESOLUTIONS))
            + ", those coarser than --h3-resolution]",
        ),
        click.option(
            "--containment",
            type=click.Choice(CONTAINMENT_MODES),
            default=_default("containment"),
            show_default=True,
        ),
        click.option(
            "--max-zoom",
            type=click.IntRange(0, 24),
            default=None,
            help="Max tile zoom.  [default: chosen from the data, at most h3-resolution + 3]",
        ),
        click.option("--min-zoom", type=click.IntRange(0, 24), default=None),
        click.option(
            "--max-completions",
            type=click.IntRange(min=1),
            default=_default("max_completions"),
            show_default=True,
            help="Most hex chunks.",
        ),
        click.option(
            "--max-parallelism",
            type=click.IntRange(min=1),
            default=_default("max_parallelism"),
            show_default=True,
            help="Most hex chunks at once.",
        ),
        click.option(
            "--chunk-size",
            type=click.IntRange(min=1),
            default=None,
            help="Features per hex chunk (default: chosen from the feature count).",
        ),
        click.option(
            "--count-timeout",
            type=click.FloatRange(min=0),
            default=DEFAULT_COUNT_TIMEOUT,
            show_default=True,
            help="Seconds to spend counting the source features.",
        ),
        click.option(
            "--s3-endpoint",
            default=None,
            help="S3 endpoint URL of the outputs, e.g. http://rook-ceph-rgw:80 (path-style); default AWS.",
        ),
        click.option("--s3-region", default=None, help="S3 region (AWS_REGION)."),
    ]
    return _apply(func, options)


def load_profile(ctx: click.Context, param: click.Parameter, path: str | None) -> str | None:
    """``--profile FILE``: a YAML mapping of option names (``node-selector`` or ``node_selector``)
    to values, which become the command's defaults; the command line still wins. Options given
    several times take a list (``node-selector`` also a mapping of key to value)."""
    if path is None:
        return None
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise click.BadParameter(f"{path}: cannot read it as YAML ({first_line(exc)})", ctx, param) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a mapping of option names to values", ctx, param)
    params = {
        key: p
        for p in ctx.command.params
        if isinstance(p, click.Option) and p.name and p is not param
        for key in (p.name, *(o.lstrip("-").replace("-", "_") for o in p.opts if o.startswith("--")))
    }
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).lstrip("-").replace("-", "_")
        option = params.get(name)
        if option is None:
            raise click.BadParameter(f"{path}: {key!r} is not an option of `{ctx.command.name}`", ctx, param)
        if option.multiple:
            if isinstance(value, dict):
                value = [f"{k}={v}" for k, v in value.items()]
            value = [str(v) for v in (value if isinstance(value, list) else [value])]
        elif isinstance(value, (list, dict)):
            raise click.BadParameter(f"{path}: {key!r} takes one value, not a list", ctx, param)
        assert option.name is not None
        defaults[option.name] = value
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    return path


def kubernetes_options(func: F) -> F:
    """Options of the generated Kubernetes objects (``workflow``)."""
    options: list[Callable[[F], F]] = [
        click.option(
            "--profile",
            type=click.Path(dir_okay=False, exists=True),
            default=None,
            is_eager=True,
            expose_value=False,
            callback=load_profile,
            help="YAML file of options (e.g. a team's namespace, image, node selector, tolerations); "
            "the command line overrides it.",
        ),
        click.option(
            "--namespace", default=_default("namespace"), show_default=True, help="Kubernetes namespace (must exist)."
        ),
        click.option("--image", default=_default("image"), show_default=True, help="Container image of the Jobs."),
        click.option(
            "--s3-secret", default=_default("s3_secret"), show_default=True, help="Secret that holds the S3 keys."
        ),
        click.option(
            "--s3-access-key-key",
            default=_default("s3_access_key_key"),
            show_default=True,
            help="Key of the access key id in --s3-secret.",
        ),
        click.option(
            "--s3-secret-key-key",
            default=_default("s3_secret_key_key"),
            show_default=True,
            help="Key of the secret access key in --s3-secret.",
        ),
        click.option(
            "--k8s-version",
            default=_default("k8s_version"),
            show_default=True,
            help="Kubernetes version whose API the manifests target.",
        ),
        click.option(
            "--image-pull-secret",
            "image_pull_secrets",
            multiple=True,
            help="Secret of a private registry, for every pod (repeatable).",
        ),
        click.option("--priority-class", default=None, help="PriorityClass of every pod."),
        click.option(
            "--storage-class",
            default=None,
            help="StorageClass of the small PVC that holds the YAMLs  [default: the cluster's default class]",
        ),
        click.option(
            "--node-selector",
            "node_selector",
            multiple=True,
            metavar="KEY=VALUE",
            help="Run the pods only on nodes with this label (repeatable).",
        ),
        click.option(
            "--toleration",
            "tolerations",
            multiple=True,
            metavar="KEY[=VALUE][:EFFECT]",
            help="Let the pods run on nodes with this taint (repeatable).",
        ),
        click.option(
            "--hex-retries",
            type=click.IntRange(min=0),
            default=_default("hex_retries"),
            show_default=True,
            help="Retries of each hex chunk (backoffLimitPerIndex).",
        ),
        click.option(
            "--max-failed-indexes",
            type=click.IntRange(min=0),
            default=_default("max_failed_indexes"),
            show_default=True,
            help="Hex chunks that may fail for good before the rest are stopped (the step fails either way; "
            "more lets one run show every bad chunk).",
        ),
    ]
    for step in STEPS:
        d = DEFAULT_RESOURCES[step]
        options += [
            click.option(f"--{step}-cpu", default=d.cpu, show_default=True, help=f"CPU of each {step} pod."),
            click.option(f"--{step}-memory", default=d.memory, show_default=True, help=f"Memory of each {step} pod."),
            click.option(
                f"--{step}-ephemeral-storage",
                default=d.ephemeral_storage,
                show_default=True,
                help=f"Local disk of each {step} pod.",
            ),
        ]
    return _apply(func, options)


#: WorkflowConfig fields filled directly from same-named options.
_DIRECT = (
    "dataset",
    "bucket",
    "layer",
    "id_column",
    "h3_resolution",
    "containment",
    "max_zoom",
    "min_zoom",
    "max_completions",
    "max_parallelism",
    "chunk_size",
    "s3_endpoint",
    "s3_region",
    "namespace",
    "image",
    "s3_secret",
    "s3_access_key_key",
    "s3_secret_key_key",
    "k8s_version",
    "lat_column",
    "lon_column",
    "encoding",
    "source_crs",
    "on_invalid",
    "expect_features",
    "license",
    "description",
    "cors",
    "priority_class",
    "storage_class",
    "hex_retries",
    "max_failed_indexes",
)


def config_from_options(**kwargs: Any) -> WorkflowConfig:
    """Build a :class:`WorkflowConfig` from click keyword arguments (unknown names are ignored;
    options that were not declared keep the config's defaults). Raises ``UsageError``."""
    fields: dict[str, Any] = {k: kwargs[k] for k in _DIRECT if k in kwargs and kwargs[k] is not None}
    fields["source_urls"] = tuple(kwargs.get("source_urls") or ())
    if kwargs.get("image_pull_secrets"):
        fields["image_pull_secrets"] = tuple(kwargs["image_pull_secrets"])
    if kwargs.get("node_selector"):
        fields["node_selector"] = tuple(parse_node_selector(s) for s in kwargs["node_selector"])
    if kwargs.get("tolerations"):
        fields["tolerations"] = tuple(Toleration.parse(t) for t in kwargs["tolerations"])
    if kwargs.get("parent_resolutions") is not None:
        fields["parent_resolutions"] = tuple(kwargs["parent_resolutions"])
    resources: dict[str, Resources] = {}
    for step in STEPS:
        keys = (f"{step}_cpu", f"{step}_memory", f"{step}_ephemeral_storage")
        if any(k in kwargs for k in keys):
            d = DEFAULT_RESOURCES[step]
            resources[step] = Resources(
                cpu=str(kwargs.get(keys[0]) or d.cpu),
                memory=str(kwargs.get(keys[1]) or d.memory),
                ephemeral_storage=str(kwargs.get(keys[2]) or d.ephemeral_storage),
            )
    if resources:
        fields["resources"] = {**DEFAULT_RESOURCES, **resources}
    return WorkflowConfig(**fields)

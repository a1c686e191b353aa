"""One plan of steps, consumed by every runner.

:func:`build_plan` turns a :class:`~cng_datasets.config.WorkflowConfig` and a feature count (or
``None`` when counting failed) into a :class:`Plan`: the exact ``cng-datasets <step>`` argv of each
step, its resources, its dependencies and its fan-out. The Kubernetes manifest writer, the local
runner and the in-cluster orchestrator all read this one plan, so what runs on a laptop is what
runs in a pod. Building a plan does no I/O.

    convert ──┬── pmtiles ──────────────┐
              └── hex (indexed) ── repartition
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cng_datasets.config import Resources, WorkflowConfig

PROGRAM = "cng-datasets"

#: Fewest features per hex chunk: a small dataset must not start hundreds of pods.
MIN_CHUNK_SIZE = 1000
#: Chunk size when the features could not be counted (the last chunk reads to the end anyway).
FALLBACK_CHUNK_SIZE = 10_000
#: Seconds ``pmtiles`` waits for convert's output to appear (applied by hand it starts beside
#: convert): as long as convert may run (its Job's activeDeadlineSeconds).
PMTILES_WAIT_FOR_INPUT = 24 * 3600


@dataclass(frozen=True)
class Chunking:
    """How hex work is split: ``completions`` chunks of ``chunk_size`` features.

    The last chunk always reads to the end of the file, so a count that was too low can never drop
    features; ``chunk_size * completions >= feature_count`` whenever the count is known.
    """

    chunk_size: int
    completions: int
    parallelism: int
    feature_count: int | None


def choose_chunking(
    feature_count: int | None,
    max_completions: int = 200,
    max_parallelism: int = 50,
    chunk_size: int | None = None,
    min_chunk_size: int = MIN_CHUNK_SIZE,
) -> Chunking:
    """Choose the hex chunking for ``feature_count`` features.

    - explicit ``chunk_size``: ``ceil(N / chunk_size)`` chunks; when that exceeds
      ``max_completions`` the chunk size is raised to ``ceil(N / max_completions)`` so that the
      chunks still cover every feature without one oversized last chunk;
    - otherwise the smallest chunk size ≥ ``min_chunk_size`` that needs at most ``max_completions``
      chunks;
    - unknown count: ``max_completions`` chunks of :data:`FALLBACK_CHUNK_SIZE` (or ``chunk_size``).

    Example:
        >>> choose_chunking(1_000_000).chunk_size, choose_chunking(1_000_000).completions
        (5000, 200)
        >>> choose_chunking(250).completions
        1
    """
    if feature_count is None:
        size = chunk_size or FALLBACK_CHUNK_SIZE
        completions = max_completions
    else:
        n = max(0, feature_count)
        if chunk_size:
            size = max(chunk_size, math.ceil(n / max_completions))
        else:
            size = max(min_chunk_size, math.ceil(n / max_completions))
        completions = max(1, min(max_completions, math.ceil(n / size)))
    return Chunking(
        chunk_size=size,
        completions=completions,
        parallelism=max(1, min(max_parallelism, completions)),
        feature_count=feature_count,
    )


@dataclass(frozen=True)
class Step:
    """One step of the plan.

    ``argv`` is the complete command (``cng-datasets <step> …``). For an indexed step
    (``completions > 1`` or ``indexed``), each index ``i`` runs :meth:`argv_for_index`; in a
    Kubernetes Indexed Job the index arrives as ``JOB_COMPLETION_INDEX`` instead, which the hex
    command reads when ``--chunk-id`` is absent.
    """

    name: str
    argv: tuple[str, ...]
    resources: Resources
    depends_on: tuple[str, ...] = ()
    indexed: bool = False
    completions: int = 1
    parallelism: int = 1
    outputs: tuple[str, ...] = ()

    def argv_for_index(self, index: int) -> tuple[str, ...]:
        """The argv for index ``index`` of an indexed step (plain argv otherwise)."""
        if not self.indexed:
            return self.argv
        return self.argv + ("--chunk-id", str(index))


@dataclass(frozen=True)
class Plan:
    """The steps of one dataset's workflow, in a valid execution order."""

    config: WorkflowConfig
    chunking: Chunking
    steps: tuple[Step, ...]

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)


def build_plan(config: WorkflowConfig, feature_count: int | None) -> Plan:
    """Build the plan of ``config`` for a source of ``feature_count`` features (``None``: unknown)."""
    c = config
    chunking = choose_chunking(feature_count, c.max_completions, c.max_parallelism, c.chunk_size)

    convert: tuple[str, ...] = (PROGRAM, "convert")
    if c.layer:
        convert += ("--layer", c.layer)
    if c.id_column:
        convert += ("--id-column", c.id_column)
    for flag, value in (("--lat-column", c.lat_column), ("--lon-column", c.lon_column),
                        ("--encoding", c.encoding), ("--source-crs", c.source_crs)):
        if value:
            convert += (flag, value)
    if c.on_invalid != "fail":
        convert += ("--on-invalid", c.on_invalid)
    if c.expect_features is not None:
        convert += ("--expect-features", str(c.expect_features))
    # "--" ends the options: a source URL that starts with "-" stays a source.
    convert += ("--", *c.source_urls, c.parquet_url)

    pmtiles = (
        PROGRAM, "pmtiles", "--input", c.parquet_url, "--output", c.pmtiles_url,
        "--layer-name", c.base_name, "--max-zoom", str(c.resolved_max_zoom),
        # Applied right after convert in the manual flow: wait (up to 24 h) for convert's atomic output.
        "--wait-for-input", str(PMTILES_WAIT_FOR_INPUT),
    )
    if c.min_zoom is not None:
        pmtiles += ("--min-zoom", str(c.min_zoom))

    parents = ",".join(str(r) for r in c.parent_resolutions)
    hex_argv = (
        PROGRAM, "hex", "--input", c.parquet_url, "--output", c.chunks_url,
        "--chunk-size", str(chunking.chunk_size), "--chunk-count", str(chunking.completions),
        "--resolution", str(c.h3_resolution), "--parent-resolutions", parents,
        "--containment", c.containment,
    )
    repartition = (PROGRAM, "repartition", "--chunks", c.chunks_url, "--output", c.hex_url, "--source", c.parquet_url)

    steps = (
        Step("convert", convert, c.resources_for("convert"), outputs=(c.parquet_url,)),
        Step("pmtiles", pmtiles, c.resources_for("pmtiles"), depends_on=("convert",), outputs=(c.pmtiles_url,)),
        Step(
            "hex", hex_argv, c.resources_for("hex"), depends_on=("convert",), indexed=True,
            completions=chunking.completions, parallelism=chunking.parallelism, outputs=(c.chunks_url,),
        ),
        Step("repartition", repartition, c.resources_for("repartition"), depends_on=("hex",), outputs=(c.hex_url,)),
    )
    return Plan(config=c, chunking=chunking, steps=steps)

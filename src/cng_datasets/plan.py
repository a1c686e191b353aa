"""One plan of steps, consumed by every runner.

:func:`build_plan` turns a :class:`~cng_datasets.config.WorkflowConfig` and a feature count (or
``None`` when counting failed) into a :class:`Plan`: the exact ``cng-datasets <step>`` argv of each
step, its resources, its dependencies and its fan-out. The Kubernetes manifest writer, the local
runner and the in-cluster orchestrator all read this one plan, so what runs on a laptop is what
runs in a pod. Building a plan does no I/O. A plan is a DAG (:meth:`Plan.order`, :meth:`Plan.ready`)
and travels as JSON (:meth:`Plan.to_json`: the ``plan.json`` beside the Kubernetes manifests).

    convert ──┬── pmtiles ─────────────────────────┬── catalog
              └── hex (indexed) ── repartition ───┘
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from cng_datasets.config import Resources, WorkflowConfig
from cng_datasets.errors import UsageError

PROGRAM = "cng-datasets"

#: Fewest features per hex chunk when the work is not estimated: a small dataset must not start
#: hundreds of pods.
MIN_CHUNK_SIZE = 1000
#: Estimated hex rows a chunk is given (~5-10 s of one core): far more than a process's or pod's
#: start-up, far less than the hours one chunk of a fixed feature count can take.
ROWS_PER_CHUNK = 2_000_000
#: Chunk size when the features could not be counted (the last chunk reads to the end anyway).
FALLBACK_CHUNK_SIZE = 10_000
#: Seconds ``pmtiles`` waits for convert's output to appear (applied by hand it starts beside
#: convert): as long as convert may run (its Job's activeDeadlineSeconds).
PMTILES_WAIT_FOR_INPUT = 24 * 3600
#: The options of ``hex`` that carry the chunking (the rest of its argv does not depend on it).
CHUNKING_OPTIONS = ("--chunk-size", "--chunk-count", "--shares")


@dataclass(frozen=True)
class Chunking:
    """How hex work is split: ``completions`` chunks, ``shares`` of them per row chunk of
    ``chunk_size`` features (``hex --shares``: features too big for one chunk have their tiles
    spread over the shares); ``hex_rows``: the estimated rows they write, when estimated
    (:mod:`cng_datasets.estimate`).

    The last row chunk always reads to the end of the file, so a count that was too low can never
    drop features; ``chunk_size * row_chunks >= feature_count`` whenever the count is known.
    """

    chunk_size: int
    completions: int
    parallelism: int
    feature_count: int | None
    hex_rows: int | None = None
    shares: int = 1

    @property
    def row_chunks(self) -> int:
        return self.completions // self.shares

    def describe(self) -> str:
        """For people: ``5 chunks of 1,000 features``, or, shared, ``198 chunks: 3 row chunks of 1
        feature, each shared by 66 chunks``."""

        def n(count: int, noun: str) -> str:
            return f"{count:,} {noun}{'' if count == 1 else 's'}"

        chunks, size = n(self.completions, "chunk"), n(self.chunk_size, "feature")
        if self.shares == 1:
            return f"{chunks} of {size}"
        return f"{chunks}: {n(self.row_chunks, 'row chunk')} of {size}, each shared by {n(self.shares, 'chunk')}"


def choose_chunking(
    feature_count: int | None,
    max_completions: int = 200,
    max_parallelism: int = 50,
    chunk_size: int | None = None,
    min_chunk_size: int = MIN_CHUNK_SIZE,
    hex_rows: int | None = None,
) -> Chunking:
    """Choose the hex chunking for ``feature_count`` features (``hex_rows``: the rows they are
    estimated to write).

    - explicit ``chunk_size``: ``ceil(N / chunk_size)`` chunks; when that exceeds
      ``max_completions`` the chunk size is raised to ``ceil(N / max_completions)`` so that the
      chunks still cover every feature without one oversized last chunk;
    - estimated work: one chunk per :data:`ROWS_PER_CHUNK` estimated rows (at least one, at most
      ``max_completions``), the features split evenly among them — 42,000 points are one chunk;
      when that is more chunks than features (a few continent-sized polygons), one feature per
      row chunk, each shared by ``shares`` chunks that split its tiles;
    - otherwise the smallest chunk size ≥ ``min_chunk_size`` that needs at most ``max_completions``
      chunks;
    - unknown count: ``max_completions`` chunks of :data:`FALLBACK_CHUNK_SIZE` (or ``chunk_size``).

    Example:
        >>> choose_chunking(1_000_000).chunk_size, choose_chunking(1_000_000).completions
        (5000, 200)
        >>> choose_chunking(250).completions
        1
        >>> choose_chunking(42_000, hex_rows=42_000).completions
        1
        >>> choose_chunking(250, hex_rows=30_000_000).completions
        15
        >>> c = choose_chunking(3, hex_rows=600_000_000)  # three continents at resolution 10
        >>> c.chunk_size, c.shares, c.completions
        (1, 66, 198)
    """
    shares = 1
    if feature_count is None:
        size = chunk_size or FALLBACK_CHUNK_SIZE
        completions = max_completions
    else:
        n = max(0, feature_count)
        if chunk_size:
            size = max(chunk_size, math.ceil(n / max_completions))
        elif hex_rows is not None:
            wanted = min(max_completions, max(1, math.ceil(hex_rows / ROWS_PER_CHUNK)))
            size = max(1, math.ceil(n / wanted))
            if wanted > n > 0:
                shares = wanted // n
        else:
            size = max(min_chunk_size, math.ceil(n / max_completions))
        completions = max(1, min(max_completions, math.ceil(n / size))) * shares
    return Chunking(
        chunk_size=size,
        completions=completions,
        parallelism=max(1, min(max_parallelism, completions)),
        feature_count=feature_count,
        hex_rows=hex_rows,
        shares=shares,
    )


@dataclass(frozen=True)
class Step:
    """One step of the plan: a node of the DAG.

    ``argv`` is the complete command (``cng-datasets <step> …``). ``inputs`` are the durable data
    the step reads (what a completion marker records the identity of) and ``outputs`` what it
    writes; an intermediate product a later step consumes and deletes (hex chunks) reaches that
    step through ``depends_on`` only, and its producer is ``consumed``: once every step that
    depends on it is done, it is not needed. For an indexed step (fan-out), each index ``i`` of
    ``completions`` (``parallelism`` at once) runs :meth:`argv_for_index`; in a Kubernetes Indexed
    Job the index arrives as ``JOB_COMPLETION_INDEX`` instead, which the hex command reads when
    ``--chunk-id`` is absent.
    """

    name: str
    argv: tuple[str, ...]
    resources: Resources
    depends_on: tuple[str, ...] = ()
    indexed: bool = False
    completions: int = 1
    parallelism: int = 1
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    consumed: bool = False

    def argv_for_index(self, index: int) -> tuple[str, ...]:
        """The argv for index ``index`` of an indexed step (plain argv otherwise)."""
        if not self.indexed:
            return self.argv
        return self.argv + ("--chunk-id", str(index))


@dataclass(frozen=True)
class Plan:
    """The steps of one dataset's workflow: a DAG through ``depends_on``, checked on creation
    (unique names, known dependencies, no cycle). ``steps`` may come in any order; :meth:`order`
    and :meth:`ready` give what a scheduler needs."""

    config: WorkflowConfig
    chunking: Chunking
    steps: tuple[Step, ...]

    def __post_init__(self) -> None:
        self.order()  # raises UsageError for an invalid DAG

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.steps)

    def dependents(self, name: str) -> tuple[Step, ...]:
        """The steps that depend on ``name`` directly."""
        return tuple(s for s in self.steps if name in s.depends_on)

    def ready(self, done: AbstractSet[str]) -> tuple[Step, ...]:
        """The steps not in ``done`` whose dependencies all are, in declaration order."""
        return tuple(s for s in self.steps if s.name not in done and all(d in done for d in s.depends_on))

    def order(self) -> tuple[Step, ...]:
        """Every step after its dependencies (peers in declaration order).

        Raises :class:`~cng_datasets.errors.UsageError` on a duplicate name, a dependency that is
        not a step, or a cycle.
        """
        seen: set[str] = set()
        for s in self.steps:
            if s.name in seen:
                raise UsageError(f"the plan has two steps named {s.name!r}")
            seen.add(s.name)
        for s in self.steps:
            for dep in s.depends_on:
                if dep not in seen:
                    raise UsageError(f"step {s.name!r} depends on {dep!r}, which is not a step of the plan")
        out: list[Step] = []
        done: set[str] = set()
        while len(out) < len(self.steps):
            ready = self.ready(done)
            if not ready:
                left = sorted(seen - done)
                raise UsageError(f"the dependencies of {', '.join(left)} form a cycle")
            out.extend(ready)
            done.update(s.name for s in ready)
        return tuple(out)

    # ---- serialisation --------------------------------------------------------------------

    def to_json(self) -> str:
        """The plan as JSON (``{"format": PLAN_FORMAT, "config", "chunking", "steps"}``): what
        ``workflow`` writes as ``plan.json`` for the in-cluster orchestrator."""
        doc = {
            "format": PLAN_FORMAT,
            "config": _jsonable(self.config),
            "chunking": _jsonable(self.chunking),
            "steps": [_jsonable(s) for s in self.steps],
        }
        return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        """The plan of :meth:`to_json`; :class:`~cng_datasets.errors.UsageError` when ``text`` is
        not one (not JSON, another format version, missing or wrong fields)."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"not a plan: not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            found = doc.get("format") if isinstance(doc, dict) else None
            raise UsageError(
                f"not a plan of format {PLAN_FORMAT} (format: {found!r}); write it again with this version"
            )
        try:
            return cls(
                config=_from_jsonable(WorkflowConfig, doc["config"]),
                chunking=_from_jsonable(Chunking, doc["chunking"]),
                steps=tuple(_from_jsonable(Step, s) for s in doc["steps"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"not a valid plan: {type(exc).__name__}: {exc}") from None


#: Version of :meth:`Plan.to_json`'s layout; a reader refuses any other.
PLAN_FORMAT = 1


def _jsonable(value: Any) -> Any:
    """Dataclasses as objects of their fields, tuples as lists (``from_json`` turns them back)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def _from_jsonable(tp: Any, value: Any) -> Any:
    """``value`` (from :func:`_jsonable`) as type ``tp``, led by the type hints of the dataclasses."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            raise TypeError(f"{tp.__name__}: expected an object, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        unknown = set(value) - names
        if unknown:
            raise TypeError(f"{tp.__name__}: unknown field(s) {', '.join(sorted(unknown))}")
        return tp(**{k: _from_jsonable(hints[k], v) for k, v in value.items()})
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return _from_jsonable(non_none[0], value) if len(non_none) == 1 else value
    if origin is tuple:
        inner = args[0] if args else Any
        return tuple(_from_jsonable(inner, v) for v in value)
    if origin is dict:
        inner = args[1] if len(args) == 2 else Any
        return {k: _from_jsonable(inner, v) for k, v in value.items()}
    return value


def _convert_argv(c: WorkflowConfig) -> tuple[str, ...]:
    """``cng-datasets convert``: read options only when given, so the argv of the defaults stays put."""
    convert: tuple[str, ...] = (PROGRAM, "convert")
    if c.layer:
        convert += ("--layer", c.layer)
    if c.id_column:
        convert += ("--id-column", c.id_column)
    for flag, value in (
        ("--lat-column", c.lat_column),
        ("--lon-column", c.lon_column),
        ("--encoding", c.encoding),
        ("--source-crs", c.source_crs),
    ):
        if value:
            convert += (flag, value)
    if c.on_invalid != "fail":
        convert += ("--on-invalid", c.on_invalid)
    if c.expect_features is not None:
        convert += ("--expect-features", str(c.expect_features))
    # "--" ends the options: a source URL that starts with "-" stays a source.
    convert += ("--", *c.source_urls, c.parquet_url)
    return convert


def _pmtiles_argv(c: WorkflowConfig) -> tuple[str, ...]:
    """``cng-datasets pmtiles`` of the plan's GeoParquet."""
    pmtiles: tuple[str, ...] = (
        PROGRAM,
        "pmtiles",
        "--input",
        c.parquet_url,
        "--output",
        c.pmtiles_url,
        "--layer-name",
        c.base_name,
        # without --max-zoom the step chooses it from the data, at most resolution + 3
        *(("--max-zoom", str(c.max_zoom)) if c.max_zoom is not None else ("--resolution", str(c.h3_resolution))),
        # Applied right after convert in the manual flow: wait (up to 24 h) for convert's atomic output.
        "--wait-for-input",
        str(PMTILES_WAIT_FOR_INPUT),
    )
    if c.min_zoom is not None:
        pmtiles += ("--min-zoom", str(c.min_zoom))
    return pmtiles


def _hex_argv(c: WorkflowConfig, chunking: Chunking) -> tuple[str, ...]:
    """``cng-datasets hex`` without ``--chunk-id`` (each index adds it, or a pod reads it from
    ``JOB_COMPLETION_INDEX``)."""
    parents = ",".join(str(r) for r in c.parents)
    return (
        PROGRAM,
        "hex",
        "--input",
        c.parquet_url,
        "--output",
        c.chunks_url,
        CHUNKING_OPTIONS[0],
        str(chunking.chunk_size),
        CHUNKING_OPTIONS[1],
        str(chunking.row_chunks),
        *((CHUNKING_OPTIONS[2], str(chunking.shares)) if chunking.shares > 1 else ()),
        "--resolution",
        str(c.h3_resolution),
        "--parent-resolutions",
        parents,
        "--containment",
        c.containment,
    )


def _catalog_argv(c: WorkflowConfig) -> tuple[str, ...]:
    """``cng-datasets catalog``: the STAC collection and card, once every output is finished."""
    argv: tuple[str, ...] = (PROGRAM, "catalog", "--root", c.root_url, "--dataset", c.dataset_path)
    for url in c.source_urls:
        argv += ("--source-url", url)
    argv += ("--license", c.license)
    if c.description:
        argv += ("--description", c.description)
    if c.cors:
        argv += ("--cors",)
    return argv


def build_plan(config: WorkflowConfig, feature_count: int | None, hex_rows: int | None = None) -> Plan:
    """Build the plan of ``config`` for a source of ``feature_count`` features (``None``: unknown)
    estimated to write ``hex_rows`` hex rows (``None``: not estimated)."""
    c = config
    chunking = choose_chunking(feature_count, c.max_completions, c.max_parallelism, c.chunk_size, hex_rows=hex_rows)
    convert = _convert_argv(c)
    pmtiles = _pmtiles_argv(c)
    hex_argv = _hex_argv(c, chunking)
    repartition = (PROGRAM, "repartition", "--chunks", c.chunks_url, "--output", c.hex_url, "--source", c.parquet_url)
    catalog = _catalog_argv(c)

    src = (c.parquet_url,)
    steps = (
        Step("convert", convert, c.resources_for("convert"), inputs=c.source_urls, outputs=src),
        Step(
            "pmtiles",
            pmtiles,
            c.resources_for("pmtiles"),
            depends_on=("convert",),
            inputs=src,
            outputs=(c.pmtiles_url,),
        ),
        Step(
            "hex",
            hex_argv,
            c.resources_for("hex"),
            depends_on=("convert",),
            indexed=True,
            completions=chunking.completions,
            parallelism=chunking.parallelism,
            inputs=src,
            outputs=(c.chunks_url,),
            consumed=True,  # repartition deletes the chunks once the hex output is published
        ),
        # the chunks arrive through depends_on; the GeoParquet is the input their provenance is checked against
        Step(
            "repartition",
            repartition,
            c.resources_for("repartition"),
            depends_on=("hex",),
            inputs=src,
            outputs=(c.hex_url,),
        ),
        # describes the finished outputs: their identities are its inputs
        Step(
            "catalog",
            catalog,
            c.resources_for("catalog"),
            depends_on=("pmtiles", "repartition"),
            inputs=(c.parquet_url, c.pmtiles_url, c.hex_url),
            outputs=(c.catalog_url,),
        ),
    )
    return Plan(config=c, chunking=chunking, steps=steps)

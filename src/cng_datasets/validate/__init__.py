"""Independent checks of a dataset's three outputs: ``cng-datasets validate``.

The checks re-derive every property from the files themselves with general-purpose readers
(pyarrow, shapely, h3-py, the ``pmtiles`` reader); they share no code with the steps that wrote
the outputs, so a bug in a step cannot hide itself.

- GeoParquet (``<root>/<dataset>.parquet``): the ``geo`` metadata follows GeoParquet 1.1 —
  ``version`` 1.1.x, ``primary_column`` present, ``encoding`` WKB, ``geometry_types`` valid and
  covering the geometries found, ``bbox`` containing them, ``crs`` omitted / null / PROJJSON,
  ``edges`` planar or spherical, a ``covering.bbox`` declared and its struct column equal (to float
  precision) to each geometry's bounds; every geometry parses as WKB; the row count matches the
  ``cng_datasets`` metadata.
- PMTiles (``<root>/<dataset>.pmtiles``): spec version 3 header, MVT tiles, at least one tile,
  bounds inside the world and min ≤ max, zooms ordered, sections inside the file (a truncated file
  is caught), directories readable and their tile count equal to the header's, metadata with
  ``vector_layers`` each having an ``id`` and ``fields``, first tile decompressible.
- Hex partitions (``<root>/<dataset>/hex/h0=<cell>/…parquet``): every row's ``h0`` equals its
  partition value, every cell column ``hN`` holds valid cells of resolution N, every parent column
  equals the parent of the finest column (bit arithmetic checked against h3-py's
  ``cell_to_parent`` on a sample), no duplicate (id, finest cell) row, and every source feature
  with a non-null geometry appears (and no unknown id). The output must be published: its
  completion marker ``hex/_SUCCESS.json`` exists, every file it lists is there with the row count
  it states, and no other ``.parquet`` file is below ``hex/`` (a stale or half-written partition).
- Against the source (:mod:`cng_datasets.accounting`): each step's recorded read / written /
  dropped must balance and agree with the output before it, and with independent counts: the
  source's features re-counted from the URLs the GeoParquet records (when reachable; otherwise the
  report says "source not re-counted: <why>"), the Parquet rows and rows without a geometry, the
  distinct ids in the hex partitions, the distinct ids in the PMTiles tiles of the maximum zoom
  (decoded with mapbox-vector-tile's protobuf classes) and the geometries wholly beyond Web
  Mercator's latitudes. Any difference that no recorded reason explains is a problem.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cng_datasets import storage
from cng_datasets.errors import ValidationError
from cng_datasets.validate.geoparquet import GEOMETRY_TYPES, check_geoparquet
from cng_datasets.validate.hex import H3PY_SAMPLE, HEX_SUCCESS, check_hex, parents
from cng_datasets.validate.pmtiles import check_pmtiles

__all__ = [
    "GEOMETRY_TYPES",
    "H3PY_SAMPLE",
    "HEX_SUCCESS",
    "Check",
    "Report",
    "ValidationError",
    "check_geoparquet",
    "check_hex",
    "check_pmtiles",
    "dataset_urls",
    "parents",
    "validate_dataset",
]


@dataclass
class Check:
    """One check: ``name`` (``geoparquet``, ``pmtiles``, ``hex``), pass / fail and what it found."""

    name: str
    ok: bool
    detail: str


@dataclass
class Report:
    """All checks of one dataset."""

    checks: list[Check] = field(default_factory=list)
    chain: Any = None  # cng_datasets.accounting.Chain, when the GeoParquet could be read

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`ValidationError` (exit 65) when any check failed."""
        if self.problems:
            raise ValidationError(self.problems)


# --------------------------------------------------------------------------------------------
# All three


def dataset_urls(root: str, dataset: str) -> dict[str, str]:
    """The three outputs of ``dataset`` below ``root`` (a local directory or ``s3://bucket/prefix``)."""
    ds = dataset.strip("/")
    return {
        "geoparquet": storage.join(root, f"{ds}.parquet"),
        "pmtiles": storage.join(root, f"{ds}.pmtiles"),
        "hex": storage.join(root, ds, "hex"),
    }


def _summary(name: str, stats: dict[str, Any]) -> str:
    text = _counts_summary(name, stats)
    text += f"; recorded: {stats['dropped_note']}" if stats.get("dropped_note") else ""
    return text + (f"; provenance: {stats['provenance']}" if stats.get("provenance") else "")


def _counts_summary(name: str, stats: dict[str, Any]) -> str:
    if name == "geoparquet":
        types = ", ".join(stats.get("types", []))
        text = f"{stats.get('rows', 0):,} rows, {stats.get('geometries', 0):,} geometries ({types})"
        return text + (f"; {stats['source_note']}" if stats.get("source_note") else "")
    if name == "pmtiles":
        text = (
            f"{stats.get('tiles', 0):,} tiles, zoom {stats.get('min_zoom')}..{stats.get('max_zoom')}, "
            f"layers {stats.get('layers')}"
        )
        if "features" in stats:
            return text + f", {stats['features']:,} features at zoom {stats.get('features_zoom')}"
        return text + (f"; features not counted: {stats['not_counted']}" if stats.get("not_counted") else "")
    return (
        f"{stats.get('rows', 0):,} rows of {stats.get('features', 0):,} features at resolution "
        f"{stats.get('resolution')} in {stats.get('partitions', 0)} partition(s)"
    )


def recount_source(parquet_url: str) -> tuple[int | None, str]:
    """The features of the sources the GeoParquet records, counted again (None when they cannot
    be: the note says why), and a note for the report."""
    from cng_datasets.accounting import geoparquet_info, source_entries
    from cng_datasets.errors import CngError, first_line
    from cng_datasets.sources import count_features

    try:
        info, _ = geoparquet_info(parquet_url)
    except Exception:  # noqa: BLE001 - the GeoParquet check says why
        return None, "source not re-counted: the GeoParquet is unreadable"
    entries = source_entries(info)
    if not entries:
        return None, "source not re-counted: the GeoParquet records no source"
    total = 0
    for url, layer, _ in entries:
        try:
            total += count_features(url, layer)
        except (CngError, OSError, ValueError) as exc:
            return None, f"source not re-counted: {url}: {first_line(exc)}"
    return total, f"source re-counted: {total:,} features"


def validate_dataset(
    root: str, dataset: str, on_check: Callable[[Check], None] | None = None, source_count: bool = True
) -> Report:
    """Check the GeoParquet, PMTiles and hex outputs of ``dataset`` below ``root``, each on its
    own and against the source: the accounting chain (:func:`cng_datasets.accounting.read_chain`)
    with independent counts (the source re-counted unless ``source_count`` is False, Parquet rows,
    distinct ids in hex, distinct ids at the PMTiles' maximum zoom). Any difference no recorded
    reason explains is a problem of the output it concerns.

    Every check runs even when an earlier one fails; ``on_check`` is called for each result.
    Call :meth:`Report.raise_for_problems` to turn failures into a :class:`ValidationError`.

    Example:
        >>> report = validate_dataset("/data/out", "countries")  # doctest: +SKIP
        >>> report.raise_for_problems()  # doctest: +SKIP
    """
    from cng_datasets.accounting import Counts, describe_drops, read_chain

    urls = dataset_urls(root, dataset)
    layer = dataset.strip("/").rsplit("/", 1)[-1]
    report = Report()
    runs: list[tuple[str, Callable[[], tuple[list[str], dict[str, Any]]]]] = [
        ("geoparquet", lambda: check_geoparquet(urls["geoparquet"])),
        ("pmtiles", lambda: check_pmtiles(urls["pmtiles"], layer)),
        ("hex", lambda: check_hex(urls["hex"], urls["geoparquet"])),
    ]
    results: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for name, fn in runs:
        url = urls[name]
        if name != "hex" and not storage.exists(url):
            results[name] = ([f"{url}: missing"], {})
        else:
            results[name] = fn()
    gp_stats, pm_stats, hx_stats = (results[n][1] for n in ("geoparquet", "pmtiles", "hex"))
    chain_problems: dict[str, list[str]] = {}
    if "rows" in gp_stats:
        source: int | None = None
        if source_count:
            source, gp_stats["source_note"] = recount_source(urls["geoparquet"])
        else:
            gp_stats["source_note"] = "source not re-counted: not asked to"
        counts = Counts(
            source=source,
            geoparquet_rows=gp_stats.get("rows"),
            no_geometry=gp_stats.get("no_geometry"),
            beyond_mercator=gp_stats.get("beyond_mercator"),
            hex_features=hx_stats.get("features"),
            pmtiles_features=pm_stats.get("features"),
        )
        report.chain = read_chain(urls["geoparquet"], urls["hex"], urls["pmtiles"], counts)
        for name, text in report.chain.problems:
            chain_problems.setdefault(name, []).append(text)
        for stage in report.chain.stages:
            if stage.record is not None and stage.record.dropped_total:
                results[stage.name][1]["dropped_note"] = describe_drops(stage.record.dropped)
    for name, _ in runs:
        problems, stats = results[name]
        problems = problems + [p for p in chain_problems.get(name, []) if p not in problems]
        found = [Check(name, False, p) for p in problems] or [
            Check(name, True, f"{urls[name]}: {_summary(name, stats)}")
        ]
        for c in found:
            report.checks.append(c)
            if on_check is not None:
                on_check(c)
    return report

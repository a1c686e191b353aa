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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cng_datasets import storage
from cng_datasets.errors import DataError
from cng_datasets.validate.geoparquet import GEOMETRY_TYPES, check_geoparquet
from cng_datasets.validate.hex import H3PY_SAMPLE, HEX_SUCCESS, check_hex, parents
from cng_datasets.validate.pmtiles import check_pmtiles

__all__ = [
    "GEOMETRY_TYPES", "H3PY_SAMPLE", "HEX_SUCCESS", "Check", "Report", "ValidationError", "check_geoparquet",
    "check_hex", "check_pmtiles", "dataset_urls", "parents", "validate_dataset",
]


class ValidationError(DataError):
    """One or more checks failed; ``problems`` lists them (one precise line each)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems; first: {problems[0]}"
        super().__init__(f"validation failed: {head}")


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
    if name == "geoparquet":
        return f"{stats.get('rows', 0):,} rows, {stats.get('geometries', 0):,} geometries ({', '.join(stats.get('types', []))})"
    if name == "pmtiles":
        return (
            f"{stats.get('tiles', 0):,} tiles, zoom {stats.get('min_zoom')}..{stats.get('max_zoom')}, "
            f"layers {stats.get('layers')}"
        )
    return (
        f"{stats.get('rows', 0):,} rows of {stats.get('features', 0):,} features at resolution "
        f"{stats.get('resolution')} in {stats.get('partitions', 0)} partition(s)"
    )


def validate_dataset(root: str, dataset: str, on_check: Callable[[Check], None] | None = None) -> Report:
    """Check the GeoParquet, PMTiles and hex outputs of ``dataset`` below ``root``.

    Every check runs even when an earlier one fails; ``on_check`` is called after each.
    Call :meth:`Report.raise_for_problems` to turn failures into a :class:`ValidationError`.

    Example:
        >>> report = validate_dataset("/data/out", "countries")  # doctest: +SKIP
        >>> report.raise_for_problems()  # doctest: +SKIP
    """
    urls = dataset_urls(root, dataset)
    layer = dataset.strip("/").rsplit("/", 1)[-1]
    report = Report()
    runs: list[tuple[str, Callable[[], tuple[list[str], dict[str, Any]]]]] = [
        ("geoparquet", lambda: check_geoparquet(urls["geoparquet"])),
        ("pmtiles", lambda: check_pmtiles(urls["pmtiles"], layer)),
        ("hex", lambda: check_hex(urls["hex"], urls["geoparquet"])),
    ]
    for name, fn in runs:
        url = urls[name]
        if name != "hex" and not storage.exists(url):
            found: list[Check] = [Check(name, False, f"{url}: missing")]
        else:
            problems, stats = fn()
            found = [Check(name, False, p) for p in problems] or [Check(name, True, f"{url}: {_summary(name, stats)}")]
        for c in found:
            report.checks.append(c)
            if on_check is not None:
                on_check(c)
    return report

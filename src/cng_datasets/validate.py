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

import gzip
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cng_datasets import storage
from cng_datasets.errors import DataError, first_line

GEOMETRY_TYPES = {
    "Point", "LineString", "Polygon", "MultiPoint", "MultiLineString", "MultiPolygon", "GeometryCollection",
}
_TYPE_IDS = {
    0: "Point", 1: "LineString", 2: "LinearRing", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString",
    6: "MultiPolygon", 7: "GeometryCollection",
}
_PARTITION = re.compile(r"(?:^|/)h0=([^/]+)/[^/]+$")
_CELL_COLUMN = re.compile(r"^h(\d{1,2})$")
#: The hex output's completion marker (written last by repartition; part of the hex contract in
#: docs/architecture.md, spelled out here rather than imported from the step that writes it).
HEX_SUCCESS = "_SUCCESS.json"
#: Rows whose parents are re-computed with h3-py (the rest is checked with numpy bit arithmetic).
H3PY_SAMPLE = 2000


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


class _Problems:
    """Collects problems, with a cap per kind so a broken column gives one line, not a million."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, text: str) -> None:
        if text not in self.items:
            self.items.append(text)


# --------------------------------------------------------------------------------------------
# GeoParquet


def _open_parquet(url: str) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetFile(storage.open_random_access(url))


def _type_name(t: str) -> str:
    return t[:-2] if t.endswith(" Z") else t


def check_geoparquet(url: str) -> tuple[list[str], dict[str, Any]]:
    """Problems of the GeoParquet file at ``url`` (empty when valid) and what was found."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import shapely

    problems = _Problems()
    stats: dict[str, Any] = {}
    try:
        pf = _open_parquet(url)
    except Exception as exc:  # noqa: BLE001 - any reader error is the finding
        return [f"{url}: not a readable Parquet file ({first_line(exc)})"], stats
    kv = pf.metadata.metadata or {}
    names = pf.schema_arrow.names
    stats["rows"] = pf.metadata.num_rows
    if b"geo" not in kv:
        return [f"{url}: no 'geo' key in the Parquet metadata (not GeoParquet)"], stats
    try:
        geo = json.loads(kv[b"geo"])
    except ValueError as exc:
        return [f"{url}: 'geo' metadata is not JSON ({exc})"], stats
    version = str(geo.get("version", ""))
    if not re.fullmatch(r"1\.1\.\d+(-[\w.]+)?", version):
        problems.add(f"{url}: geo version is {version!r}, expected 1.1.x")
    primary = geo.get("primary_column")
    columns = geo.get("columns") or {}
    if not primary or primary not in columns:
        return problems.items + [f"{url}: primary_column {primary!r} is not described in geo.columns"], stats
    if primary not in names:
        return problems.items + [f"{url}: primary_column {primary!r} is not a column of the file"], stats
    meta = columns[primary]
    if meta.get("encoding") != "WKB":
        problems.add(f"{url}: encoding of {primary!r} is {meta.get('encoding')!r}, expected 'WKB'")
    declared = meta.get("geometry_types")
    if not isinstance(declared, list):
        problems.add(f"{url}: geometry_types of {primary!r} is missing or not a list")
        declared = []
    bad = [t for t in declared if _type_name(str(t)) not in GEOMETRY_TYPES]
    if bad:
        problems.add(f"{url}: geometry_types has invalid entries {bad}")
    crs = meta.get("crs", None)
    if crs is not None and not (isinstance(crs, dict) and "type" in crs):
        problems.add(f"{url}: crs of {primary!r} must be omitted, null or a PROJJSON object, got {str(crs)[:60]!r}")
    if meta.get("edges", "planar") not in ("planar", "spherical"):
        problems.add(f"{url}: edges is {meta.get('edges')!r}, expected planar or spherical")
    decl_bbox = meta.get("bbox")
    if decl_bbox is not None and (not isinstance(decl_bbox, list) or len(decl_bbox) not in (4, 6)):
        problems.add(f"{url}: bbox must be a list of 4 or 6 numbers, got {decl_bbox!r}")
        decl_bbox = None

    cover = (meta.get("covering") or {}).get("bbox")
    cover_col: str | None = None
    if not cover:
        problems.add(f"{url}: no covering.bbox declared for {primary!r}")
    else:
        paths = [cover.get(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        if not all(isinstance(p, list) and len(p) == 2 for p in paths) or len({p[0] for p in paths}) != 1:
            problems.add(f"{url}: covering.bbox must give [column, field] for xmin, ymin, xmax, ymax, got {cover!r}")
        else:
            cover_col = paths[0][0]
            fields = [p[1] for p in paths]
            if cover_col not in names:
                problems.add(f"{url}: covering column {cover_col!r} is not a column of the file")
                cover_col = None
            else:
                t = pf.schema_arrow.field(cover_col).type
                if not pa.types.is_struct(t) or any(t.get_field_index(f) < 0 for f in fields) or any(
                    not pa.types.is_floating(t.field(f).type) for f in fields if t.get_field_index(f) >= 0
                ):
                    problems.add(f"{url}: covering column {cover_col!r} must be a struct of float fields {fields}")
                    cover_col = None

    # Data: stream row groups; bounded memory.
    found_types: set[str] = set()
    total = [math.inf, math.inf, -math.inf, -math.inf]
    non_null = 0
    read_cols = [primary] + ([cover_col] if cover_col else [])
    row0 = 0
    for batch in pf.iter_batches(batch_size=65536, columns=read_cols):
        wkb = batch.column(0)
        valid = np.asarray(pc.is_valid(wkb).to_numpy(zero_copy_only=False), dtype=bool)
        try:
            geoms = shapely.from_wkb(np.asarray(wkb.to_numpy(zero_copy_only=False), dtype=object))
        except Exception as exc:  # noqa: BLE001
            problems.add(f"{url}: rows {row0}..{row0 + len(batch) - 1}: geometry is not valid WKB ({exc})")
            row0 += len(batch)
            continue
        present = valid & ~shapely.is_missing(geoms)
        non_null += int(present.sum())
        g = geoms[present]
        found_types.update(_TYPE_IDS[int(i)] for i in np.unique(shapely.get_type_id(g)))
        if len(g):
            b = shapely.bounds(g)
            nonempty = ~np.isnan(b[:, 0])
            if nonempty.any():
                bb = b[nonempty]
                total = [min(total[0], bb[:, 0].min()), min(total[1], bb[:, 1].min()),
                         max(total[2], bb[:, 2].max()), max(total[3], bb[:, 3].max())]
        if cover_col:
            st = batch.column(1)
            fields = [cover[k][1] for k in ("xmin", "ymin", "xmax", "ymax")]
            cb = np.column_stack([
                np.asarray(pc.fill_null(pc.struct_field(st, [st.type.get_field_index(f)]), np.nan).to_numpy(zero_copy_only=False), dtype=float)
                for f in fields
            ])
            gb = np.full((len(batch), 4), np.nan)
            gb[present] = shapely.bounds(geoms[present])
            check = present & ~np.isnan(gb[:, 0])
            tol = 1e-6 * np.maximum(1.0, np.abs(gb))
            # the covering must contain the geometry and be tight to float32 precision
            low_ok = (cb[:, :2] <= gb[:, :2] + 1e-9) & (cb[:, :2] >= gb[:, :2] - tol[:, :2])
            high_ok = (cb[:, 2:] >= gb[:, 2:] - 1e-9) & (cb[:, 2:] <= gb[:, 2:] + tol[:, 2:])
            bad_rows = np.flatnonzero(check & ~(low_ok.all(axis=1) & high_ok.all(axis=1)))
            if len(bad_rows):
                r = int(bad_rows[0])
                problems.add(
                    f"{url}: covering column {cover_col!r} disagrees with the geometry bounds in "
                    f"{len(bad_rows)} row(s); first row {row0 + r}: {cb[r].tolist()} vs {gb[r].tolist()}"
                )
        row0 += len(batch)
    stats.update(geometries=non_null, types=sorted(found_types))
    if declared:
        decl = {_type_name(str(t)) for t in declared}
        undeclared = found_types - decl
        if undeclared:
            problems.add(f"{url}: geometry types {sorted(undeclared)} found but geometry_types declares {sorted(decl)}")
    if decl_bbox is not None and non_null and math.isfinite(total[0]):
        d = decl_bbox if len(decl_bbox) == 4 else [decl_bbox[0], decl_bbox[1], decl_bbox[3], decl_bbox[4]]
        eps = 1e-6
        if d[0] > total[0] + eps or d[1] > total[1] + eps or d[2] < total[2] - eps or d[3] < total[3] - eps:
            problems.add(f"{url}: declared bbox {d} does not contain the data's bounds {[round(v, 6) for v in total]}")
    info = kv.get(b"cng_datasets")
    if info:
        try:
            expected = int(json.loads(info).get("feature_count"))
            if expected != pf.metadata.num_rows:
                problems.add(f"{url}: {pf.metadata.num_rows} rows but cng_datasets metadata says {expected} features")
        except (ValueError, TypeError):
            problems.add(f"{url}: cng_datasets metadata is not valid JSON with a feature_count")
    return problems.items, stats


# --------------------------------------------------------------------------------------------
# PMTiles


def _bytes_source(url: str) -> tuple[Callable[[int, int], bytes], int, Callable[[], None]]:
    """A ``get_bytes(offset, length)`` over ``url`` (range reads), the file size, and a closer."""
    f = storage.open_input(url)
    size = storage.size(url)

    def get_bytes(offset: int, length: int) -> bytes:
        f.seek(offset)
        return f.read(length)  # type: ignore[no-any-return]

    return get_bytes, size, f.close


def _decompress(data: bytes, compression: Any) -> bytes:
    from pmtiles.tile import Compression

    if compression == Compression.GZIP:
        return gzip.decompress(data)
    if compression in (Compression.NONE, Compression.UNKNOWN):
        return data
    raise ValueError(f"unsupported compression {compression.name}")


def check_pmtiles(url: str, layer: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """Problems of the PMTiles archive at ``url`` (``layer``: a vector layer that must exist)."""
    from pmtiles.tile import Compression, TileType, deserialize_directory, deserialize_header

    problems = _Problems()
    stats: dict[str, Any] = {}
    try:
        get_bytes, size, close = _bytes_source(url)
    except Exception as exc:  # noqa: BLE001
        return [f"{url}: cannot be opened ({exc})"], stats
    try:
        head = get_bytes(0, 127)
        if len(head) < 127:
            return [f"{url}: {len(head)} bytes, shorter than the 127-byte PMTiles header (truncated)"], stats
        if head[:7] != b"PMTiles":
            return [f"{url}: no PMTiles magic number"], stats
        if head[7] != 3:
            return [f"{url}: PMTiles spec version {head[7]}, expected 3"], stats
        h = deserialize_header(head)
        stats.update(tiles=h["addressed_tiles_count"], min_zoom=h["min_zoom"], max_zoom=h["max_zoom"], bytes=size)
        for name in ("root", "metadata", "leaf_directory", "tile_data"):
            end = h[f"{name}_offset"] + h[f"{name}_length"]  # type: ignore[literal-required]
            if end > size:
                problems.add(f"{url}: {name} section ends at byte {end} but the file has {size} bytes (truncated)")
        if h["tile_type"] != TileType.MVT:
            problems.add(f"{url}: tile type {h['tile_type'].name}, expected MVT")
        if h["addressed_tiles_count"] <= 0:
            problems.add(f"{url}: the header counts no tiles")
        if h["min_zoom"] > h["max_zoom"]:
            problems.add(f"{url}: min zoom {h['min_zoom']} > max zoom {h['max_zoom']}")
        b = [h["min_lon_e7"] / 1e7, h["min_lat_e7"] / 1e7, h["max_lon_e7"] / 1e7, h["max_lat_e7"] / 1e7]
        stats["bounds"] = b
        if not (-180 <= b[0] <= b[2] <= 180 and -90 <= b[1] <= b[3] <= 90):
            problems.add(f"{url}: bounds {b} are not a box inside [-180, 180] x [-90, 90]")
        if problems.items:
            return problems.items, stats

        # metadata and vector layers
        try:
            meta = json.loads(_decompress(get_bytes(h["metadata_offset"], h["metadata_length"]), h["internal_compression"]))
        except Exception as exc:  # noqa: BLE001
            return [f"{url}: metadata is unreadable ({exc})"], stats
        layers = meta.get("vector_layers") if isinstance(meta, dict) else None
        if not isinstance(layers, list) or not layers:
            problems.add(f"{url}: metadata has no vector_layers")
        else:
            stats["layers"] = [lyr.get("id") for lyr in layers if isinstance(lyr, dict)]
            for lyr in layers:
                if not isinstance(lyr, dict) or not lyr.get("id") or not isinstance(lyr.get("fields"), dict):
                    problems.add(f"{url}: vector layer {lyr!r:.80} lacks an id or a fields object")
            if layer is not None and layer not in stats["layers"]:
                problems.add(f"{url}: no vector layer {layer!r} (layers: {stats['layers']})")

        # directories: every entry inside the tile data, and as many tiles as the header says
        counted = 0
        first: tuple[int, int] | None = None
        stack = [(h["root_offset"], h["root_length"])]
        visited = 0
        while stack:
            off, length = stack.pop()
            visited += 1
            if visited > 1_000_000:
                problems.add(f"{url}: directory structure does not terminate")
                break
            try:
                entries = deserialize_directory(get_bytes(off, length))
            except Exception as exc:  # noqa: BLE001
                problems.add(f"{url}: directory at byte {off} is unreadable ({exc})")
                break
            for e in entries:
                if e.run_length == 0:
                    stack.append((h["leaf_directory_offset"] + e.offset, e.length))
                    continue
                if e.offset + e.length > h["tile_data_length"]:
                    problems.add(f"{url}: tile {e.tile_id} points past the end of the tile data")
                    break
                counted += e.run_length
                if first is None:
                    first = (h["tile_data_offset"] + e.offset, e.length)
        if counted != h["addressed_tiles_count"] and not problems.items:
            problems.add(f"{url}: directories address {counted} tiles, the header says {h['addressed_tiles_count']}")
        if first is not None and not problems.items:
            try:
                data = _decompress(get_bytes(*first), h["tile_compression"])
                if not data:
                    problems.add(f"{url}: the first tile is empty")
            except Exception as exc:  # noqa: BLE001
                problems.add(f"{url}: the first tile does not decompress ({exc})")
        if h["tile_compression"] not in (Compression.GZIP, Compression.NONE, Compression.UNKNOWN):
            stats["tile_compression"] = h["tile_compression"].name
    finally:
        close()
    return problems.items, stats


# --------------------------------------------------------------------------------------------
# Hex partitions

_RES_SHIFT = np.uint64(52)
_RES_MASK = np.uint64(0xF) << _RES_SHIFT
_MODE_SHIFT = np.uint64(59)


def _as_cells(arr: Any) -> np.ndarray:
    """A cell column (uint64 / int64 / hex string) as uint64 numbers (nulls → 0, never valid)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return np.array([int(s, 16) if s else 0 for s in arr.to_pylist()], dtype=np.uint64)
    if pa.types.is_integer(arr.type):
        return np.asarray(pc.fill_null(arr, 0).to_numpy(zero_copy_only=False)).astype(np.uint64)
    raise ValueError(f"cell column of type {arr.type}")


def _partition_cell(value: str) -> int:
    return int(value) if value.isdigit() and len(value) > 15 else int(value, 16)


def parents(cells: np.ndarray, res: int) -> np.ndarray:
    """Parents at ``res`` of valid uint64 H3 cells (H3 index layout: resolution field, digits 7)."""
    unused = np.uint64((1 << (3 * (15 - res))) - 1)
    return (cells & ~_RES_MASK) | (np.uint64(res) << _RES_SHIFT) | unused


def _h3_str(c: int) -> str:
    return format(int(c), "x")


def check_hex(hex_url: str, parquet_url: str) -> tuple[list[str], dict[str, Any]]:
    """Problems of the hex partitions below ``hex_url`` against the source GeoParquet ``parquet_url``."""
    import h3
    import pyarrow as pa
    import pyarrow.compute as pc

    problems = _Problems()
    files = [u for u in storage.list_prefix(hex_url) if u.endswith(".parquet")]
    stats: dict[str, Any] = {"files": len(files), "rows": 0}
    if not files:
        return [f"{hex_url}: no .parquet files below it"], stats
    listed = _read_hex_success(hex_url, problems)
    file_rows: dict[str, int] = {}
    try:
        src = _open_parquet(parquet_url)
    except Exception as exc:  # noqa: BLE001
        return [f"{parquet_url}: source GeoParquet unreadable, cannot check the hex partitions ({exc})"], stats
    info = json.loads((src.metadata.metadata or {}).get(b"cng_datasets", b"{}"))
    id_col = info.get("id_column") or "_cng_fid"
    geo = json.loads((src.metadata.metadata or {}).get(b"geo", b"{}"))
    geom_col = geo.get("primary_column", "geometry")

    ids_seen: list[Any] = []
    partitions: set[str] = set()
    finest_res: int | None = None
    rng = np.random.default_rng(0)
    for url in files:
        rel = url[len(hex_url.rstrip("/")):].replace("\\", "/")
        m = _PARTITION.search(rel)
        if not m:
            problems.add(f"{url}: not inside an h0=<cell> partition directory")
            continue
        part = m.group(1)
        partitions.add(part)
        try:
            part_cell = _partition_cell(part)
        except ValueError:
            problems.add(f"{url}: partition value {part!r} is not an H3 cell")
            continue
        try:
            pf = _open_parquet(url)
            wanted = [n for n in pf.schema_arrow.names if n == id_col or _CELL_COLUMN.match(n)]
            table = pf.read(columns=wanted)  # attributes are not checked: skip reading them
        except Exception as exc:  # noqa: BLE001
            problems.add(f"{url}: unreadable ({first_line(exc)})")
            continue
        stats["rows"] += table.num_rows
        file_rows[rel.lstrip("/")] = table.num_rows
        cell_cols = {int(mm.group(1)): n for n in table.column_names if (mm := _CELL_COLUMN.match(n))}
        if id_col not in table.column_names:
            problems.add(f"{url}: no id column {id_col!r}")
            continue
        fine_cols = [r for r in cell_cols if r > 0]
        if not fine_cols:
            problems.add(f"{url}: no H3 cell column hN (N > 0) among {table.column_names}")
            continue
        res = max(fine_cols)
        if finest_res is None:
            finest_res = res
        elif res != finest_res:
            problems.add(f"{url}: finest cell column h{res} differs from other partitions' h{finest_res}")
        if table.num_rows == 0:
            problems.add(f"{url}: empty partition file")
            continue
        try:
            cells = {r: _as_cells(table.column(n)) for r, n in cell_cols.items()}
        except ValueError as exc:
            problems.add(f"{url}: {exc}")
            continue
        fine = cells[res]
        # every column holds cells (mode 1) of its own resolution
        for r, col in cells.items():
            bad = np.flatnonzero((((col & _RES_MASK) >> _RES_SHIFT) != np.uint64(r)) | ((col >> _MODE_SHIFT) != np.uint64(1)))
            if len(bad):
                problems.add(
                    f"{url}: column h{r} has {len(bad)} value(s) that are not resolution-{r} cells "
                    f"(first: {_h3_str(col[bad[0]])} in row {bad[0]})"
                )
        sample = rng.choice(len(fine), size=min(len(fine), H3PY_SAMPLE // max(1, len(files)) + 1), replace=False)
        for i in sample:
            if not h3.is_valid_cell(_h3_str(fine[i])):
                problems.add(f"{url}: row {i}: h{res} {_h3_str(fine[i])} is not a valid H3 cell")
                break
        # the partition value is each row's h0, and the parents follow from the finest cell
        h0_rows = cells[0] if 0 in cells else parents(fine, 0)
        bad = np.flatnonzero(h0_rows != np.uint64(part_cell))
        if len(bad):
            problems.add(
                f"{url}: {len(bad)} row(s) have h0 {_h3_str(h0_rows[bad[0]])} in partition h0={part} "
                f"(first: row {bad[0]}, id {table.column(id_col)[int(bad[0])].as_py()!r})"
            )
        for r, col in cells.items():
            if r == res:
                continue
            expect = parents(fine, r)
            bad = np.flatnonzero(col != expect)
            if len(bad):
                i = int(bad[0])
                problems.add(
                    f"{url}: column h{r} is not the parent of h{res} in {len(bad)} row(s) "
                    f"(first: row {i}, h{res} {_h3_str(fine[i])} has parent {_h3_str(expect[i])}, column holds {_h3_str(col[i])})"
                )
            for i in sample[:50]:
                if h3.cell_to_parent(_h3_str(fine[i]), r) != _h3_str(expect[i]):
                    problems.add(f"{url}: internal: parent arithmetic disagrees with h3-py for {_h3_str(fine[i])}")
                    break
        # no duplicate (id, cell) rows
        pairs = pa.table({"id": table.column(id_col), "cell": pa.array(fine)})
        counts = pairs.group_by(["id", "cell"]).aggregate([([], "count_all")])
        dup = counts.filter(pc.greater(counts.column("count_all"), 1))
        if dup.num_rows:
            problems.add(
                f"{url}: {dup.num_rows} duplicate (id, h{res}) pair(s) "
                f"(first: id {dup.column('id')[0].as_py()!r}, cell {_h3_str(dup.column('cell')[0].as_py())})"
            )
        ids_seen.append(pc.unique(table.column(id_col)))
    stats.update(partitions=len(partitions), resolution=finest_res)
    if listed is not None:
        _compare_hex_success(hex_url, listed, files, file_rows, problems)

    # every source feature with a geometry is present, and nothing else
    if ids_seen:
        seen = pc.unique(pa.chunked_array(ids_seen).combine_chunks())
        expected_parts = []
        for batch in src.iter_batches(batch_size=65536, columns=[id_col, geom_col]):
            expected_parts.append(batch.column(0).filter(pc.is_valid(batch.column(1))))
        expected = pa.chunked_array(expected_parts, type=src.schema_arrow.field(id_col).type).combine_chunks()
        if seen.type != expected.type:
            try:
                seen = seen.cast(expected.type)
            except pa.ArrowInvalid:
                problems.add(f"{hex_url}: id column type {seen.type} differs from the source's {expected.type}")
                return problems.items, stats
        missing = expected.filter(pc.invert(pc.is_in(expected, value_set=seen)))
        if len(missing):
            problems.add(
                f"{hex_url}: {len(missing)} of {len(expected)} source feature(s) with a geometry have no hex row "
                f"(first ids: {missing.slice(0, 5).to_pylist()})"
            )
        extra = seen.filter(pc.invert(pc.is_in(seen, value_set=expected)))
        if len(extra):
            problems.add(
                f"{hex_url}: {len(extra)} id(s) in the hex partitions are not source features with a geometry "
                f"(first: {extra.slice(0, 5).to_pylist()})"
            )
        stats["features"] = len(seen)
    return problems.items, stats


def _read_hex_success(hex_url: str, problems: _Problems) -> dict[str, int] | None:
    """The files and row counts the completion marker lists (None, with a problem, when unusable)."""
    url = storage.join(hex_url, HEX_SUCCESS)
    if not storage.exists(url):
        problems.add(
            f"{url}: missing: the hex output is not published (repartition has not finished, failed, "
            "or is running); its partitions may be incomplete or stale"
        )
        return None
    try:
        marker = json.loads(storage.read_bytes(url))
        files = marker["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
        return {str(k).lstrip("/"): int(v) for k, v in files.items()}
    except Exception as exc:  # noqa: BLE001 - any reader error is the finding
        problems.add(f"{url}: not a readable completion marker with a 'files' object ({exc})")
        return None


def _compare_hex_success(
    hex_url: str, listed: dict[str, int], files: list[str], file_rows: dict[str, int], problems: _Problems
) -> None:
    """The marker's file list equals the .parquet files present, with the same row counts."""
    base = hex_url.rstrip("/")
    present = {u[len(base):].replace("\\", "/").lstrip("/") for u in files}
    missing = sorted(set(listed) - present)
    if missing:
        problems.add(
            f"{hex_url}: {len(missing)} file(s) listed in {HEX_SUCCESS} are missing (first: {missing[0]})"
        )
    extra = sorted(present - set(listed))
    if extra:
        problems.add(
            f"{hex_url}: {len(extra)} .parquet file(s) not listed in {HEX_SUCCESS} (stale or partial; first: {extra[0]})"
        )
    for rel in sorted(set(listed) & set(file_rows)):
        if listed[rel] != file_rows[rel]:
            problems.add(f"{hex_url}/{rel}: {file_rows[rel]} rows, {HEX_SUCCESS} lists {listed[rel]}")


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

"""``cng-datasets hex``: H3 cells of one chunk of a GeoParquet file, already split by h0.

Chunk ``N`` of size ``M`` covers rows ``N·M .. (N+1)·M−1`` (rows are in id order). Two ways of
calling it are equally good, and repartition decides completeness from the row ranges the markers
record, not from how the chunks were called:

- planned: ``--chunk-count C``; chunk ``C−1`` (or ``--last-chunk``) reads from its start to the end
  of the file, so an under-estimated feature count never drops features; a chunk with
  ``chunk_id >= chunk_count`` does nothing (it only removes a stale marker of its own);
- seed-style (an Indexed Job with ``--chunk-id $JOB_COMPLETION_INDEX --chunk-size M`` only): every
  chunk reads its ``M`` rows; a chunk that starts at or past the end of the data writes an empty
  but valid marker (range ``[N, N)``, 0 features) and exits 0.

Output below ``output`` (a local directory or ``s3://`` prefix)::

    h0=<h0 cell, unsigned decimal>/part-<chunk id, 5 digits>.parquet   one per h0 the chunk touches
    _done/chunk-<chunk id, 5 digits>.json                               completion marker, written last

A chunk's private work files live in the system temporary directory (``$TMPDIR``; a pod's
``emptyDir``), never at the destination; directories left there by a killed run of the same
chunk (its process is gone) are removed when the chunk starts again.

Each part file holds the id column (int64), ``h<R>`` (uint64), one uint64 column per parent
resolution (descending, ``h0`` always present) and the feature's attributes (every source column
except the geometry and its ``bbox`` covering); rows are ordered by id, then by tile and cell
(a share of a row chunk, ``--shares``, writes the features it owns and its tiles of the big
ones, in id order).
Parts are written to local temporary files and published atomically; a re-run of a chunk rewrites
byte-identical parts (no timestamps, deterministic order), so a chunk killed mid-write is simply run
again. The marker is removed when a chunk starts and written only after all its parts are
published; repartition reads exactly the parts a marker lists.

Marker (JSON)::

    {"format": 1, "chunk_id", "chunk_size", "chunk_count", "last", "start_row", "end_row",
     "source_rows", "source_footer_sha256", "features", "features_with_cells", "null_geometries", "empty_geometries",
     "cells", "rows", "resolution", "parent_resolutions", "containment", "id_column",
     "id_min", "id_max", "parts": {"h0=<cell>/part-00003.parquet": <rows>, ...},
     "part_sha256": {"h0=<cell>/part-00003.parquet": "<hex>", ...},
     "accounting": {"unit": "features", "read": <rows start..end>, "written": <features with cells>,
                    "dropped": {"null geometry": k, "empty geometry": e}}}

``[start_row, end_row)`` is the range of source rows the chunk covered, ``source_rows`` the
source's row count and ``source_footer_sha256`` a digest of its Parquet footer (:func:`footer_digest`:
which version of the source it was). ``accounting`` follows the shared contract: ``read − Σ dropped == written``,
checked before the marker is written (:class:`IncompleteOutputError` otherwise). Every feature
with a non-empty geometry gets at least one cell (:mod:`cng_datasets.h3cells` gives a polygon
smaller than a cell, a zero-length line or a degenerate ring the cell of a point on it), and a
chunk in which one did not fails naming it: only null and empty geometries are dropped. Dropped
reasons with a zero count are omitted. ``part_sha256`` makes the marker identify the parts' bytes:
repartition's ``_SUCCESS.json`` records a digest of each marker it was made from.

``id_min`` / ``id_max`` are the smallest and largest id of the chunk for an integer id column, and
``null`` for any other id type (a text ``--id-column``) or an empty chunk.

The input must be in lon/lat degrees: its GeoParquet ``geo`` metadata must omit the CRS (OGC:CRS84)
or give one equal to OGC:CRS84 up to axis order (e.g. EPSG:4326). Anything else (a file written
with ``convert --target-crs EPSG:3857``) is refused with a :class:`DataError` naming the CRS, and a
feature with coordinates outside [-180, 180] × [-90, 90] fails the chunk naming its id.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cng_datasets import contract, h3cells, storage
from cng_datasets.errors import (
    DataError,
    IncompleteOutputError,
    OutOfRangeError,
    RecordError,
    RenamedColumnWarning,
    UsageError,
    first_line,
)
from cng_datasets.geometry import is_lonlat_crs84
from cng_datasets.steps.testhook import kill_point

log = logging.getLogger("cng_datasets")

MARKER_FORMAT = 1
#: Row groups × columns the open part files of a chunk may hold: a writer keeps every row group's
#: footer entry in memory (~0.8 KB per column chunk) until it is closed, so at res 10 a continent
#: with 171 attributes grew by ~500 MB; past this the fullest file is closed and a next one begun.
MAX_OPEN_COLUMN_CHUNKS = 1 << 15
#: Rows of a row group of a part file.
PART_ROW_GROUP = 1 << 20
#: Features handed to the H3 engine together (before the cell budget splits them further).
FEATURE_BATCH = 8192
#: Bytes of output rows buffered in memory before they are written out as row groups.
BUFFER_BYTES = 128 << 20
#: Prefix of a chunk's private work directory in the system temporary directory; the process id
#: in the name tells a later run whether its owner is gone.
WORK_PREFIX = "cng-hex-chunk-"
#: Accounting reasons of the features a chunk drops (the only ones: see the module docstring).
NULL_GEOMETRY = "null geometry"
EMPTY_GEOMETRY = "empty geometry"


def part_name(h0: int, chunk_id: int, seq: int = 0) -> str:
    """A chunk's part file of base cell ``h0``; ``seq`` ≥ 1: the next files of that part, once
    one file holds :data:`MAX_OPEN_COLUMN_CHUNKS` worth of row groups."""
    more = f"-{seq:04d}" if seq else ""
    return f"h0={h0}/part-{chunk_id:05d}{more}.parquet"


def part_seq(rel: str) -> int:
    """``seq`` of a :func:`part_name` (the order of a chunk's files of one h0)."""
    stem = rel.rsplit("/", 1)[-1].removesuffix(".parquet")
    return int(stem.split("-")[2]) if stem.count("-") >= 2 else 0


cell_column = contract.cell_column


def parent_list(resolution: int, parents: tuple[int, ...] | list[int]) -> list[int]:
    """Validated parent resolutions, descending, with 0 always present and ``resolution`` excluded."""
    if not 0 <= resolution <= 15:
        raise DataError(f"H3 resolution must be 0..15, not {resolution}")
    out = set()
    for p in parents:
        if not 0 <= p <= 15:
            raise DataError(f"parent resolution must be 0..15, not {p}")
        if p > resolution:
            raise DataError(f"parent resolution {p} is finer than the resolution {resolution}")
        if p != resolution:
            out.add(p)
    if resolution != 0:
        out.add(0)
    return sorted(out, reverse=True)


# --------------------------------------------------------------------------------------------
# Reading the source


def footer_digest(url: str) -> str:
    """A digest of the Parquet footer of ``url``: it names every column chunk's offset, sizes and
    statistics, so another version of the file (same row count, other values) has another one.
    Two small range reads, whatever the file size."""
    import pyarrow as pa

    try:
        with storage.open_random_access(url) as f:
            size = f.size() if hasattr(f, "size") else f.seek(0, os.SEEK_END)
            f.seek(size - 8)
            tail = f.read(8)
            n = int.from_bytes(tail[:4], "little")
            if tail[4:] != b"PAR1" or n + 8 > size:
                raise DataError(f"{url}: not a readable Parquet file (no footer)")
            f.seek(size - 8 - n)
            return hashlib.sha256(f.read(n)).hexdigest()[:32]
    except FileNotFoundError as exc:
        raise DataError(f"{url}: not found") from exc
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"{url}: not a readable Parquet file ({first_line(exc)})") from exc


@dataclass(frozen=True)
class SourceInfo:
    id_column: str
    geometry_column: str
    num_rows: int
    metadata: dict[str, Any]


def source_info(pf: Any, url: str) -> SourceInfo:
    kv = pf.metadata.metadata or {}
    meta = contract.dataset_metadata(kv, url)
    geom = contract.geometry_column_of(contract.footer_json(kv, contract.GEO_KEY, url) or {})
    id_col = meta.get("id_column") or contract.ID_COLUMN
    names = pf.schema_arrow.names
    for col, what in ((id_col, "id"), (geom, "geometry")):
        if col not in names:
            raise DataError(f"{url}: no {what} column {col!r} (columns: {', '.join(names)})")
    return SourceInfo(id_col, geom, pf.metadata.num_rows, meta)


def check_lonlat(pf: Any, url: str, geometry_column: str) -> None:
    """Refuse a GeoParquet whose geometry CRS is not lon/lat (OGC:CRS84, axis order ignored).

    An omitted ``crs`` means OGC:CRS84 (GeoParquet); an explicit ``null`` (CRS unknown) is taken
    as lon/lat with a warning, the coordinate range check of :mod:`cng_datasets.h3cells` still
    stops anything that is not degrees. A file without ``geo`` metadata is taken as lon/lat.
    """
    geo = contract.footer_json(pf.metadata.metadata, contract.GEO_KEY, url)
    if geo is None:
        return
    meta = (geo.get("columns") or {}).get(geometry_column) or {}
    if not isinstance(meta, dict) or "crs" not in meta:
        return
    crs = meta["crs"]
    if crs is None:
        log.warning("%s: the geometry CRS is null (unknown); taking the coordinates as lon/lat degrees", url)
        return
    import pyproj

    try:
        parsed = pyproj.CRS.from_user_input(crs)
    except pyproj.exceptions.CRSError as exc:
        raise DataError(f"{url}: the geometry CRS in the geo metadata is not readable ({first_line(exc)})") from exc
    if is_lonlat_crs84(parsed):
        return
    auth = parsed.to_authority()
    name = f"{auth[0]}:{auth[1]} ({parsed.name})" if auth else parsed.name
    raise DataError(
        f"{url}: the geometry CRS is {name}, not lon/lat (OGC:CRS84 / EPSG:4326); H3 needs lon/lat "
        f"degrees: convert the source without --target-crs (or with --target-crs EPSG:4326)"
    )


def _covering_columns(pf: Any) -> set[str]:
    out = {"bbox"}
    try:
        geo = contract.footer_json(pf.metadata.metadata, contract.GEO_KEY) or {}
        for col in geo.get("columns", {}).values():
            bbox = (col.get("covering") or {}).get("bbox") or {}
            for v in bbox.values():
                if isinstance(v, list) and v:
                    out.add(v[0])
    except (RecordError, AttributeError):
        pass
    return out


def iter_rows(pf: Any, start: int, end: int, columns: list[str], batch: int = FEATURE_BATCH) -> Any:
    """Record batches of rows ``start .. end−1``, reading only the row groups that hold them."""
    md = pf.metadata
    offset = 0
    for rg in range(md.num_row_groups):
        n = md.row_group(rg).num_rows
        lo, hi = max(start, offset), min(end, offset + n)
        if lo < hi:
            table = pf.read_row_group(rg, columns=columns).slice(lo - offset, hi - lo)
            yield from table.to_batches(max_chunksize=batch)
        offset += n
        if offset >= end:
            break


# --------------------------------------------------------------------------------------------
# Writing parts


class PartWriter:
    """Per-h0 Parquet part files of one chunk, buffered in bounded memory, published at the end."""

    def __init__(self, output: str, chunk_id: int, schema: Any) -> None:
        self.output = output
        self.chunk_id = chunk_id
        self.schema = schema
        # system temp, not the destination: a kill must leave nothing private there
        self.tmpdir = tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{chunk_id:05d}-{os.getpid()}-")
        self.buffers: dict[int, list[Any]] = {}
        self.buffered = 0
        self.writers: dict[int, Any] = {}  # h0 -> the writer of its open file
        self.groups: dict[int, int] = {}  # h0 -> row groups in its open file
        self.seq: dict[int, int] = {}  # h0 -> seq of its open (or next) file
        self.rows: dict[str, int] = {}  # part name -> rows
        self.sha256: dict[str, str] = {}

    def add(self, h0s: np.ndarray, table: Any) -> None:
        """Rows of ``table``, already ordered by their h0 cells ``h0s`` (the caller sorts them on
        its numpy arrays, so no column is reordered here), into the part of their h0."""
        if table.num_rows == 0:
            return
        bounds = np.flatnonzero(np.r_[True, h0s[1:] != h0s[:-1], True])
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            piece = table.slice(int(a), int(b - a))
            self.buffers.setdefault(int(h0s[a]), []).append(piece)
        self.buffered += table.nbytes
        if self.buffered > BUFFER_BYTES:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for h0 in sorted(self.buffers):
            # one dictionary per column and row group, in first-seen order: the writer then writes
            # each dictionary once, and the same rows always give the same bytes
            table = pa.concat_tables(self.buffers[h0]).unify_dictionaries()
            rel = part_name(h0, self.chunk_id, self.seq.get(h0, 0))
            w = self.writers.get(h0)
            if w is None:
                w = pq.ParquetWriter(
                    self._local(rel),
                    self.schema,
                    compression="zstd",
                    # the id and the cells: what readers prune row groups by (and repartition reads)
                    write_statistics=[f.name for f in self.schema if not pa.types.is_dictionary(f.type)],
                    # not for the id and the finest cell (nearly unique: a dictionary only costs)
                    use_dictionary=[f.name for f in list(self.schema)[2:]],
                    # readers see the plain types of the dictionary columns
                    store_schema=False,
                )
                self.writers[h0] = w
            w.write_table(table, row_group_size=PART_ROW_GROUP)
            self.rows[rel] = self.rows.get(rel, 0) + table.num_rows
            self.groups[h0] = self.groups.get(h0, 0) + -(-table.num_rows // PART_ROW_GROUP)
        self.buffers.clear()
        self.buffered = 0
        while self.groups and sum(self.groups.values()) * len(self.schema) > MAX_OPEN_COLUMN_CHUNKS:
            fullest = max(sorted(self.groups), key=lambda h: self.groups[h])
            self.writers.pop(fullest).close()  # its footer leaves memory; the next rows go to a next file
            del self.groups[fullest]
            self.seq[fullest] = self.seq.get(fullest, 0) + 1

    def _local(self, rel: str) -> str:
        return os.path.join(self.tmpdir, rel.replace("/", "_"))

    def publish(self) -> dict[str, int]:
        """Close the files and publish each at its final name; returns {relative name: rows}."""
        self.flush()
        for w in self.writers.values():
            w.close()
        self.writers.clear()
        out = {}
        for rel in sorted(self.rows, key=lambda r: (r.split("/", 1)[0], part_seq(r))):
            local = self._local(rel)
            self.sha256[rel] = _file_sha256(local)
            with storage.atomic_output(storage.join(self.output, rel), suffix=".parquet") as tmp:
                shutil.move(local, tmp)
                kill_point("hex.part-staged")  # test hook: a kill here leaves a temp file at the destination
            out[rel] = self.rows[rel]
        return out

    def cleanup(self) -> None:
        for w in self.writers.values():
            try:
                w.close()
            except Exception:  # noqa: BLE001 - already failing
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, another user's
        return True
    return True


def clean_leftovers(output: str, chunk_id: int) -> None:
    """Remove what a killed earlier run of this chunk left behind.

    - its work directories in the system temp (``cng-hex-chunk-<id>-<pid>-*``) whose process is gone;
    - for a local output, its half-published parts (``h0=*/.part-<id>.parquet.<hex>.tmp.parquet``,
      the temporary names of :func:`storage.atomic_output`) and the work directories earlier versions
      kept at the destination (``<output>/_tmp/chunk-<id>-*``). S3 uploads leave no partial object.
    """
    pattern = os.path.join(tempfile.gettempdir(), f"{WORK_PREFIX}{chunk_id:05d}-*")
    for path in glob.glob(pattern):
        fields = os.path.basename(path)[len(WORK_PREFIX) :].split("-")  # <id>-<pid>-<random>
        pid = fields[1] if len(fields) > 2 else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
    loc = storage.parse(output)
    if not loc.is_local:
        return
    stem = part_name(0, chunk_id).split("/", 1)[1].removesuffix(".parquet")
    for pattern in (f".{stem}.parquet.*.tmp*", f".{stem}-[0-9][0-9][0-9][0-9].parquet.*.tmp*"):
        for path in glob.glob(os.path.join(glob.escape(loc.path), "h0=*", pattern)):
            try:
                os.remove(path)
            except OSError:
                pass
    legacy = os.path.join(loc.path, "_tmp")
    for path in glob.glob(os.path.join(glob.escape(legacy), f"chunk-{chunk_id:05d}-*")):
        shutil.rmtree(path, ignore_errors=True)
    try:
        os.rmdir(legacy)  # only when empty; chunks no longer create it
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# The step


def owned_rows(start: int, end: int, share: int, shares: int) -> tuple[int, int]:
    """The rows of ``[start, end)`` that share ``share`` of ``shares`` owns (reads, accounts for
    and computes whole): the ``share``-th of ``shares`` contiguous, near-equal slices."""
    n = end - start
    return start + share * n // shares, start + (share + 1) * n // shares


@dataclass(frozen=True)
class ChunkSpec:
    """Which rows a chunk covers: rows ``r·chunk_size`` .. ``+chunk_size−1`` of row chunk
    ``r = chunk_id // shares``; the last row chunk (``last_chunk``, or ``r == chunk_count − 1``)
    reads to the end of the file, and row chunks at or past ``chunk_count`` do nothing.

    ``shares`` > 1: that many chunks (ids ``r·shares`` .. ``+shares−1``) share the work
    of one row chunk — share ``chunk_id % shares`` owns a slice of its rows (:func:`owned_rows`)
    and computes every ``shares``-th tile of its features too big for one H3 call: a continent at
    resolution 10 is spread over many pods instead of taking hours in one."""

    chunk_id: int
    chunk_size: int
    chunk_count: int | None = None
    last_chunk: bool = False
    shares: int = 1

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise UsageError(f"--chunk-size must be at least 1, not {self.chunk_size}")
        if self.chunk_id < 0:
            raise UsageError(f"chunk id must be >= 0, not {self.chunk_id}")
        if self.chunk_count is not None and self.chunk_count < 1:
            raise UsageError(f"--chunk-count must be at least 1, not {self.chunk_count}")
        if self.shares < 1:
            raise UsageError(f"--shares must be at least 1, not {self.shares}")

    @property
    def row_chunk(self) -> int:
        return self.chunk_id // self.shares

    @property
    def share(self) -> int:
        return self.chunk_id % self.shares

    @property
    def beyond_count(self) -> bool:
        return self.chunk_count is not None and self.row_chunk >= self.chunk_count

    @property
    def reads_to_end(self) -> bool:
        return self.last_chunk or (self.chunk_count is not None and self.row_chunk == self.chunk_count - 1)

    def rows(self, num_rows: int) -> tuple[int, int]:
        """``[start, end)`` of this chunk's row chunk in a file of ``num_rows`` rows (empty past
        the end)."""
        start = self.row_chunk * self.chunk_size
        end = num_rows if self.reads_to_end else min(num_rows, start + self.chunk_size)
        return min(start, num_rows), max(end, min(start, num_rows))


@dataclass(frozen=True)
class CellOptions:
    """What cells a chunk computes: ``h<resolution>``, its parents (0 always added), the polygon
    fill mode, and ``budget``, the cells computed per H3 call (memory)."""

    resolution: int
    parent_resolutions: tuple[int, ...] = (0,)
    containment: str = "center"
    budget: int = h3cells.DEFAULT_BUDGET

    def __post_init__(self) -> None:
        if self.containment not in contract.CONTAINMENT_MODES:
            modes = ", ".join(contract.CONTAINMENT_MODES)
            raise DataError(f"containment must be one of {modes}, not {self.containment!r}")
        object.__setattr__(self, "parent_resolutions", tuple(parent_list(self.resolution, self.parent_resolutions)))


@dataclass
class _ChunkStats:
    """What a chunk counted while it ran (the marker's numbers)."""

    features: int = 0
    features_with_cells: int = 0
    null_geometries: int = 0
    empty_geometries: int = 0
    cells: int = 0
    id_min: Any = None
    id_max: Any = None
    split_cells: dict[int, int] = field(default_factory=dict)  # source row → cells, of split features

    def see_ids(self, ids: Any) -> None:
        import pyarrow.compute as pc

        mm = pc.min_max(ids)
        lo, hi = mm["min"].as_py(), mm["max"].as_py()
        if lo is not None:
            self.id_min = lo if self.id_min is None else min(self.id_min, lo)
            self.id_max = hi if self.id_max is None else max(self.id_max, hi)


@dataclass(frozen=True)
class _ChunkInput:
    """The opened source of a chunk and the output layout derived from it."""

    url: str
    pf: Any
    info: SourceInfo
    attrs: list[str]  # attribute columns of the source, in order
    renamed: dict[str, str]  # attribute -> output name
    schema: Any  # output schema: id, h<res>, parents, attributes
    digest: str  # of the source's Parquet footer: which version of the source


def hex_chunk(input_url: str, output: str, chunk: ChunkSpec, cells: CellOptions) -> dict[str, Any] | None:
    """Compute the H3 cells of one chunk; returns the completion marker (``None`` if skipped)."""
    marker_url = storage.join(output, contract.CHUNK_MARKER_DIR, contract.chunk_marker_name(chunk.chunk_id))
    # a stale marker must not claim this chunk while it is rewritten, nor (past --chunk-count) the
    # rows of an earlier run with other chunking: repartition would count them twice
    storage.delete(marker_url)
    if chunk.beyond_count:
        log.info("chunk %d: beyond --chunk-count %d, nothing to do", chunk.chunk_id, chunk.chunk_count)
        return None
    clean_leftovers(output, chunk.chunk_id)

    src = _open_chunk_input(input_url, cells)
    start, end = chunk.rows(src.info.num_rows)
    own = owned_rows(start, end, chunk.share, chunk.shares)
    stats = _ChunkStats()
    t0 = time.monotonic()
    log.info(
        "chunk %d: rows %d..%d of %d (%s)%s, resolution %d, parents %s, %s containment",
        chunk.chunk_id,
        start,
        end - 1,
        src.info.num_rows,
        input_url,
        f", share {chunk.share} of {chunk.shares} (owns rows {own[0]}..{own[1] - 1})" if chunk.shares > 1 else "",
        cells.resolution,
        ",".join(map(str, cells.parent_resolutions)),
        cells.containment,
    )
    writer = PartWriter(output, chunk.chunk_id, src.schema)
    share = h3cells.Share(chunk.share, chunk.shares)
    try:
        cols = [src.info.id_column, *src.attrs, src.info.geometry_column]
        row = start
        for rb in iter_rows(src.pf, start, end, cols):
            rows = np.arange(row, row + rb.num_rows)
            _hex_batch(rb, src, cells, writer, stats, share, rows, own)
            row += rb.num_rows
            log.info("chunk %d: %d features, %d cells so far", chunk.chunk_id, stats.features, stats.cells)
        parts = writer.publish()
    finally:
        writer.cleanup()

    marker = _chunk_marker(chunk, cells, src, stats, (start, end), own, parts, writer.sha256)
    storage.write_bytes(marker_url, (json.dumps(marker, indent=1, sort_keys=True) + "\n").encode())
    secs = time.monotonic() - t0
    log.info(
        "chunk %d: done, %d features, %d cells in %d part files, %.1f s (%.0f cells/s)",
        chunk.chunk_id,
        stats.features,
        stats.cells,
        len(parts),
        secs,
        stats.cells / max(secs, 1e-9),
    )
    return marker


def _open_chunk_input(input_url: str, cells: CellOptions) -> _ChunkInput:
    """Open the GeoParquet, check it is lon/lat, and lay out the chunk's output columns."""
    import pyarrow as pa

    pf = storage.open_parquet(input_url)
    info = source_info(pf, input_url)
    check_lonlat(pf, input_url, info.geometry_column)
    skip = {info.geometry_column} | _covering_columns(pf)
    attrs = [n for n in pf.schema_arrow.names if n not in skip and n != info.id_column]
    fields = [
        pf.schema_arrow.field(info.id_column),
        pa.field(cell_column(cells.resolution), pa.uint64(), nullable=False),
    ]
    fields += [pa.field(cell_column(p), pa.uint64(), nullable=False) for p in cells.parent_resolutions]
    renamed = _rename_clashes(input_url, attrs, {f.name for f in fields})
    fields += [_as_written(pf.schema_arrow.field(a).with_name(renamed[a])) for a in attrs]
    return _ChunkInput(input_url, pf, info, attrs, renamed, pa.schema(fields), footer_digest(input_url))


def _as_written(field: Any) -> Any:
    """An attribute as the parts are written: a dictionary over the batch's feature values for the
    types Parquet dictionary-encodes (every cell row of a feature repeats its values: the rows
    carry only an index, the values are written once, never copied per row). The files store no
    Arrow schema, so readers see the plain type."""
    import pyarrow as pa

    t = field.type
    plain = (
        pa.types.is_string,
        pa.types.is_large_string,
        pa.types.is_binary,
        pa.types.is_integer,
        pa.types.is_floating,
    )
    if any(test(t) for test in plain):
        return field.with_type(pa.dictionary(pa.int32(), t))
    return field


def _decode_geometries(wkb: np.ndarray, src: _ChunkInput, idn: np.ndarray) -> np.ndarray:
    """Shapely geometries of a batch's WKB; a value GEOS cannot read fails naming its feature."""
    import shapely

    try:
        return shapely.from_wkb(wkb)
    except shapely.errors.GEOSException:
        geoms = np.empty(len(wkb), dtype=object)
        for i, w in enumerate(wkb):
            try:
                geoms[i] = shapely.from_wkb(w)
            except shapely.errors.GEOSException as exc:
                raise DataError(f"{src.url}: feature {src.info.id_column}={idn[i]}: invalid WKB ({exc})") from exc
        return geoms


def _hex_batch(
    rb: Any,
    src: _ChunkInput,
    cells: CellOptions,
    writer: PartWriter,
    stats: _ChunkStats,
    share: h3cells.Share,
    rows: np.ndarray,
    own: tuple[int, int],
) -> None:
    """Cells of one record batch of features (source rows ``rows``), emitted to ``writer``; this
    share counts the features of its rows ``own``, every one with a geometry must get at least one
    cell — except a feature split among the shares, whose cells are counted per share and checked
    over all of them by ``repartition``."""
    import pyarrow as pa
    import shapely

    id_column = src.info.id_column
    n = rb.num_rows
    owned = (rows >= own[0]) & (rows < own[1])
    ids = rb.column(id_column)
    idn = ids.to_numpy(zero_copy_only=False)
    if owned.any() and pa.types.is_integer(src.schema.field(0).type):  # min / max only mean something for these
        stats.see_ids(ids.filter(pa.array(owned)))
    geoms = _decode_geometries(rb.column(src.info.geometry_column).to_numpy(zero_copy_only=False), src, idn)
    null = np.array([g is None for g in geoms], dtype=bool)
    empty = np.zeros(n, dtype=bool)
    if (~null).any():
        empty[~null] = shapely.is_empty(geoms[~null])
    stats.features += int(owned.sum())
    stats.null_geometries += int((null & owned).sum())
    stats.empty_geometries += int((empty & owned).sum())
    attr_table = pa.Table.from_batches([rb.select(src.attrs)]) if src.attrs else None
    parents = list(cells.parent_resolutions)
    dictionary = _dictionary_values(attr_table, src.renamed, src.schema)
    plain_bytes = (
        sum(attr_table.column(a).nbytes for a, o in src.renamed.items() if o not in dictionary) if attr_table else 0
    )
    # a row holds its cells, an index into each dictionary column, and copies of the other attributes
    row_bytes = 8 * (2 + len(parents)) + 4 * len(dictionary) + plain_bytes / max(1, n)
    max_rows = int(min(cells.budget, max(1024, (BUFFER_BYTES // 4) / max(1.0, row_bytes))))
    had = np.zeros(n, dtype=bool)
    batch = _Batch(
        ids,
        attr_table,
        src.renamed,
        src.schema,
        cell_column(cells.resolution),
        parents,
        dictionary,
    )
    split: set[int] = set()
    split_cells = np.zeros(n, dtype=np.int64)
    try:
        for idx, found in h3cells.feature_cells(
            geoms, cells.resolution, cells.containment, cells.budget, share, owned, split
        ):
            had[idx] = True
            if split:
                split_cells += np.bincount(idx, minlength=n)
            for a in range(0, len(idx), max_rows):
                _emit(writer, batch, idx[a : a + max_rows], found[a : a + max_rows])
            stats.cells += len(idx)
    except OutOfRangeError as exc:
        where = f"feature {id_column}={idn[exc.index]}" if exc.index is not None else "a feature"
        raise DataError(f"{src.url}: {where}: {exc.detail}") from exc
    except BaseException as exc:  # h3ronpy panics are BaseException
        if isinstance(exc, (KeyboardInterrupt, SystemExit, DataError, MemoryError)):
            raise
        raise DataError(
            f"{src.url}: H3 failed on the features {id_column}={idn[0]}..{idn[-1]}: "
            f"{type(exc).__name__}: {first_line(exc, '')}"
        ) from exc
    shared = np.zeros(n, dtype=bool)
    shared[list(split)] = True
    for i in np.flatnonzero(shared):
        stats.split_cells[int(rows[i])] = int(split_cells[i])
    missing = np.flatnonzero(owned & ~shared & ~null & ~empty & ~had)
    if len(missing):  # cannot happen by construction; never let it pass silently
        raise DataError(f"{src.url}: feature {id_column}={idn[missing[0]]} got no H3 cell")
    # a split feature it owns is counted as written here; repartition checks it got a cell at all
    stats.features_with_cells += int((owned & (had | shared)).sum())


def _chunk_marker(
    chunk: ChunkSpec,
    cells: CellOptions,
    src: _ChunkInput,
    stats: _ChunkStats,
    rows: tuple[int, int],
    own: tuple[int, int],
    parts: Any,
    part_sha256: Any,
) -> dict[str, Any]:
    """The completion marker of a chunk, after its accounting has been checked."""
    start, end = rows
    dropped = {NULL_GEOMETRY: stats.null_geometries, EMPTY_GEOMETRY: stats.empty_geometries}
    accounting = {
        "unit": "features",
        "read": own[1] - own[0],
        "written": stats.features_with_cells,
        "dropped": {k: v for k, v in dropped.items() if v},
    }
    check_accounting(accounting, f"chunk {chunk.chunk_id}")
    if stats.features != own[1] - own[0]:
        raise IncompleteOutputError(
            f"chunk {chunk.chunk_id}: read {stats.features} features of rows {own[0]}..{own[1] - 1}"
        )
    shared: dict[str, Any] = {"share": chunk.share, "shares": chunk.shares} if chunk.shares > 1 else {}
    if stats.split_cells:
        shared["split_cells"] = {str(r): c for r, c in sorted(stats.split_cells.items())}
    return {
        "format": MARKER_FORMAT,
        "chunk_id": chunk.chunk_id,
        "chunk_size": chunk.chunk_size,
        "chunk_count": chunk.chunk_count,
        "last": bool(chunk.reads_to_end),
        "start_row": start,
        "end_row": end,
        "source_rows": src.info.num_rows,
        "source_footer_sha256": src.digest,
        "features": stats.features,
        "features_with_cells": stats.features_with_cells,
        "null_geometries": stats.null_geometries,
        "empty_geometries": stats.empty_geometries,
        "cells": stats.cells,
        "rows": stats.cells,
        "resolution": cells.resolution,
        "parent_resolutions": list(cells.parent_resolutions),
        "containment": cells.containment,
        "id_column": src.info.id_column,
        "id_min": stats.id_min,
        "id_max": stats.id_max,
        "parts": parts,
        "part_sha256": part_sha256,
        "accounting": accounting,
        **shared,
    }


def _rename_clashes(input_url: str, attrs: list[str], cell_columns: set[str]) -> dict[str, str]:
    """Output name of each attribute: its own, or ``<name>_1`` (``_2``, …; with a warning) where a
    source attribute is called like one of this run's cell columns (``h0``, ``h<res>``, a parent)."""
    out: dict[str, str] = {}
    taken = cell_columns | set(attrs)
    for a in attrs:
        if a in cell_columns:
            n = 1
            while f"{a}_{n}" in taken:
                n += 1
            new = out[a] = f"{a}_{n}"
            taken.add(new)
            warnings.warn(
                f"{input_url}: column {a!r} clashes with the H3 cell column of that name; renamed to {new!r}",
                RenamedColumnWarning,
                stacklevel=2,
            )
        else:
            out[a] = a
    return out


def check_accounting(accounting: dict[str, Any], where: str) -> None:
    """``read − Σ dropped == written`` (the shared accounting contract), else IncompleteOutputError."""
    read, written = int(accounting["read"]), int(accounting["written"])
    dropped = sum(int(v) for v in accounting["dropped"].values())
    if read - dropped != written:
        reasons = ", ".join(f"{v} {k}" for k, v in sorted(accounting["dropped"].items())) or "none dropped"
        raise IncompleteOutputError(
            f"{where}: {read} features read, {written} written and {dropped} dropped ({reasons}): "
            f"{read - dropped - written} unaccounted for"
        )


@dataclass(frozen=True)
class _Batch:
    """One record batch's columns that output rows are taken from."""

    ids: Any
    attr_table: Any
    attrs: dict[str, str]  # source attribute -> output name
    schema: Any
    res_col: str
    parents: list[int]
    #: output name -> (distinct values, each feature's code, each feature's null mask) of the
    #: dictionary columns
    values: dict[str, tuple[Any, np.ndarray, np.ndarray]]


def _dictionary_values(
    attr_table: Any, renamed: dict[str, str], schema: Any
) -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    """Each dictionary column of a batch, encoded once: its distinct values (Parquet's writer needs
    them distinct: with a repeated value it writes nondeterministic bytes), each feature's code
    into them, and each feature's null mask."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: dict[str, tuple[Any, np.ndarray, np.ndarray]] = {}
    if attr_table is None:
        return out
    for a, name in renamed.items():
        if not pa.types.is_dictionary(schema.field(name).type):
            continue
        encoded = attr_table.column(a).combine_chunks().dictionary_encode()
        codes = pc.fill_null(encoded.indices, 0).to_numpy(zero_copy_only=False).astype(np.int32)
        out[name] = (encoded.dictionary, codes, encoded.indices.is_null().to_numpy(zero_copy_only=False))
    return out


def _emit(writer: PartWriter, batch: _Batch, idx: np.ndarray, cells: np.ndarray) -> None:
    """Rows (feature ``idx[i]``, ``cells[i]``) with their parents and attributes, to ``writer``."""
    import pyarrow as pa

    # rows ordered by h0 here, on the numpy arrays, so no column is reordered afterwards
    h0 = h3cells.parent_cells(cells, 0) if batch.parents else cells  # resolution 0: its own h0
    order = np.argsort(h0, kind="stable")
    idx, cells, h0 = idx[order], cells[order], h0[order]
    take = pa.array(idx)
    cols: dict[str, Any] = {
        batch.schema.names[0]: batch.ids.take(take),
        batch.res_col: pa.array(cells, type=pa.uint64()),
    }
    for p in batch.parents:
        cols[cell_column(p)] = pa.array(h0 if p == 0 else h3cells.parent_cells(cells, p), type=pa.uint64())
    if batch.attr_table is not None:
        plain = [a for a, out in batch.attrs.items() if out not in batch.values]
        sub = batch.attr_table.select(plain).take(take) if plain else None
        for a, out in batch.attrs.items():
            if out in batch.values:
                values, codes, null = batch.values[out]
                cols[out] = pa.DictionaryArray.from_arrays(pa.array(codes[idx], mask=null[idx]), values)
            else:
                assert sub is not None
                cols[out] = sub.column(a)
    table = pa.table(cols, schema=batch.schema)
    writer.add(np.asarray(h0, dtype=np.uint64), table)

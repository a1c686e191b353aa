"""Writing convert's GeoParquet: bounded row groups, the ``geo`` footer, the bbox covering, and
the uniqueness check of a source id column (moved out of :mod:`cng_datasets.steps.convert`)."""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

from cng_datasets import contract
from cng_datasets.errors import DataError
from cng_datasets.geometry import is_lonlat_crs84

GEOMETRY_COLUMN = contract.GEOMETRY_COLUMN
BBOX_COLUMN = "bbox"
#: The fields of the bbox covering, in GeoParquet's order.
BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")
GEOPARQUET_VERSION = "1.1.0"


class _RowGroupWriter:
    """Buffers batches and writes a row group when rows or bytes reach the bound.

    Encodings per column: dictionaries for the attributes only (never for the WKB, which they
    cannot shrink); no statistics on the WKB (min/max of binary blobs help no reader); the bbox
    covering's float32 fields with ``BYTE_STREAM_SPLIT``. Row groups are encoded and compressed
    in a background thread (pyarrow releases the GIL) while the next batches are read and their
    geometries checked: at most two row groups wait for it, so memory stays bounded.
    """

    def __init__(
        self, path: Path, schema: pa.Schema, compression_level: int, row_group_size: int, row_group_bytes: int
    ) -> None:
        attributes = [f.name for f in schema if f.name not in (GEOMETRY_COLUMN, BBOX_COLUMN)]
        bbox = [f"{BBOX_COLUMN}.{k}" for k in BBOX_FIELDS]
        encodings = dict.fromkeys(bbox, "BYTE_STREAM_SPLIT")
        # the id numbered here (1..N) is unique and ascending: deltas, not a dictionary
        first = schema.field(0)
        if first.name == contract.ID_COLUMN and pa.types.is_int64(first.type):
            encodings[first.name] = "DELTA_BINARY_PACKED"
        self.writer = pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            compression_level=compression_level,
            write_statistics=[*attributes, *bbox],
            use_dictionary=[a for a in attributes if a not in encodings],
            # no ARROW:schema: its (empty) metadata would hide the footer "geo" key from pyarrow readers
            store_schema=False,
            column_encoding=encodings,
        )
        self.max_rows = row_group_size
        self.max_bytes = row_group_bytes
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0
        self.bytes = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parquet-writer")
        self._queued: deque[Future[None]] = deque()

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
            while len(self._queued) >= 2:  # bounded: wait for the oldest row group
                self._queued.popleft().result()
            self._queued.append(self._pool.submit(self.writer.write_table, table, max(table.num_rows, 1)))
        self.pending, self.rows, self.bytes = [], 0, 0

    def _drain(self) -> None:
        while self._queued:
            self._queued.popleft().result()  # an error of the writer thread is raised here

    def close(self, metadata: dict[str, str]) -> None:
        try:
            self.flush()
            self._drain()
        finally:
            self._pool.shutdown(wait=True)
        self.writer.add_key_value_metadata(metadata)
        self.writer.close()


def _geo_metadata(types: set[str], bbox: list[float] | None, target_crs: Any) -> dict[str, Any]:
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted(types),
        "covering": {
            "bbox": {k: [BBOX_COLUMN, k] for k in BBOX_FIELDS},
        },
    }
    if bbox is not None:
        column["bbox"] = bbox
    if not is_lonlat_crs84(target_crs):
        column["crs"] = target_crs.to_json_dict()
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}


def outward_float32(bounds: np.ndarray) -> np.ndarray:
    """``(xmin, ymin, xmax, ymax)`` rows as float32 rounded outward (the minima down, the maxima up),
    so each box still contains its geometry, as GeoParquet allows a covering to do."""
    b32 = bounds.astype(np.float32)
    wide = b32.astype(np.float64)
    with np.errstate(invalid="ignore"):
        low = wide[:, :2] > bounds[:, :2]
        high = wide[:, 2:] < bounds[:, 2:]
    b32[:, :2] = np.where(low, np.nextafter(b32[:, :2], np.float32(-np.inf)), b32[:, :2])
    b32[:, 2:] = np.where(high, np.nextafter(b32[:, 2:], np.float32(np.inf)), b32[:, 2:])
    return b32


def _bbox_array(geoms: np.ndarray) -> pa.StructArray:
    b = outward_float32(shapely.bounds(geoms))
    mask = pa.array(np.isnan(b[:, 0]))
    return pa.StructArray.from_arrays(
        [pa.array(b[:, i], mask=np.isnan(b[:, i])) for i in range(4)],
        names=list(BBOX_FIELDS),
        mask=mask,
    )


def iso_wkb_size(geoms: np.ndarray) -> np.ndarray:
    """The length of each geometry's 2D ISO WKB (-1 for a type not sized here: collections)."""
    size = np.full(len(geoms), -1, dtype=np.int64)
    kind = shapely.get_type_id(geoms)
    coords = shapely.get_num_coordinates(geoms)
    size[kind == 0] = 21
    size[kind == 1] = 9 + 16 * coords[kind == 1]
    poly = kind == 3
    size[poly] = 9 + 4 * (1 + shapely.get_num_interior_rings(geoms[poly])) + 16 * coords[poly]
    size[kind == 4] = 9 + 21 * shapely.get_num_geometries(geoms[kind == 4])
    multi_line = kind == 5
    size[multi_line] = 9 + 9 * shapely.get_num_geometries(geoms[multi_line]) + 16 * coords[multi_line]
    multi_poly = np.flatnonzero(kind == 6)
    if len(multi_poly):
        parts, owner = shapely.get_parts(geoms[multi_poly], return_index=True)
        rings = np.bincount(owner, weights=1 + shapely.get_num_interior_rings(parts), minlength=len(multi_poly))
        n_parts = shapely.get_num_geometries(geoms[multi_poly])
        size[multi_poly] = 9 + 9 * n_parts + 4 * rings.astype(np.int64) + 16 * coords[multi_poly]
    return size


def encode_wkb(geoms: np.ndarray, source: np.ndarray, changed: np.ndarray) -> np.ndarray:
    """The WKB column: the source's own bytes where the geometry is unchanged and they already are
    little-endian 2D ISO WKB of exactly its size (what GEOS would write, without the round trip);
    newly written WKB everywhere else. ``None`` where there is no geometry."""
    out = np.full(len(geoms), None, dtype=object)
    present = ~shapely.is_missing(geoms)
    reuse = present & ~changed
    if reuse.any():
        idx = np.flatnonzero(reuse)
        src = source[idx]
        size = iso_wkb_size(geoms[idx])
        fits = np.fromiter(
            (
                isinstance(b, bytes) and len(b) == n and b[0] == 1 and 1 <= int.from_bytes(b[1:5], "little") <= 6
                for b, n in zip(src, size.tolist(), strict=True)
            ),
            bool,
            len(idx),
        )
        out[idx[fits]] = src[fits]
        reuse[idx[~fits]] = False
    todo = present & ~reuse
    if todo.any():
        out[todo] = shapely.to_wkb(geoms[todo], output_dimension=2, flavor="iso")
    return out


def _id_keys(col: pa.Array) -> np.ndarray:
    """64-bit keys of non-null ids: the integers themselves, or a hash of the text."""
    values = col.drop_null()
    if pa.types.is_integer(col.type):
        return np.asarray(values.to_numpy(), dtype=np.int64).view(np.uint64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") for v in values.to_pylist()),
        dtype=np.uint64,
        count=len(values),
    )


def _check_unique(path: Path, column: str) -> None:
    """Raise DataError if ``column`` of the written file has duplicates or nulls.

    Memory: 8 bytes per feature (the ids, or 64-bit hashes of text ids, sorted once); a hash
    collision is confirmed against the text itself before it is reported.
    """
    pf = pq.ParquetFile(path)
    keys: list[np.ndarray] = []
    nulls = 0
    for batch in pf.iter_batches(columns=[column], batch_size=1 << 16):
        nulls += batch.column(0).null_count
        keys.append(_id_keys(batch.column(0)))
    if nulls:
        raise DataError(f"--id-column {column!r} has {nulls} null values")
    if not keys:
        return
    ids = np.sort(np.concatenate(keys))
    dup_keys = np.unique(ids[1:][ids[1:] == ids[:-1]])
    if not len(dup_keys):
        return
    text = not pa.types.is_integer(pf.schema_arrow.field(column).type)
    if not text:
        raise DataError(f"--id-column {column!r} is not unique (e.g. {int(dup_keys[0].view(np.int64))} appears twice)")
    suspects = set(dup_keys.tolist())
    seen: set[str] = set()
    for batch in pf.iter_batches(columns=[column], batch_size=1 << 16):
        col = batch.column(0).drop_null()
        for value, key in zip(col.to_pylist(), _id_keys(col).tolist(), strict=True):
            if key in suspects:
                if value in seen:
                    raise DataError(f"--id-column {column!r} is not unique (e.g. {value!r} appears twice)")
                seen.add(value)

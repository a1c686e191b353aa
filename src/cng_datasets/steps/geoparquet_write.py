"""Writing convert's GeoParquet: bounded row groups, the ``geo`` footer, the bbox covering, and
the uniqueness check of a source id column (moved out of :mod:`cng_datasets.steps.convert`)."""

from __future__ import annotations

import hashlib
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
GEOPARQUET_VERSION = "1.1.0"


class _RowGroupWriter:
    """Buffers batches and writes a row group when rows or bytes reach the bound."""

    def __init__(
        self, path: Path, schema: pa.Schema, compression_level: int, row_group_size: int, row_group_bytes: int
    ) -> None:
        self.writer = pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            compression_level=compression_level,
            write_statistics=True,
            use_dictionary=True,
            # no ARROW:schema: its (empty) metadata would hide the footer "geo" key from pyarrow readers
            store_schema=False,
            # the geometry is incompressible by dictionary; skip it there
            column_encoding=None,
        )
        self.max_rows = row_group_size
        self.max_bytes = row_group_bytes
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
    if not is_lonlat_crs84(target_crs):
        column["crs"] = target_crs.to_json_dict()
    return {"version": GEOPARQUET_VERSION, "primary_column": GEOMETRY_COLUMN, "columns": {GEOMETRY_COLUMN: column}}


def _bbox_array(geoms: np.ndarray) -> pa.StructArray:
    b = shapely.bounds(geoms)
    mask = pa.array(np.isnan(b[:, 0]))
    return pa.StructArray.from_arrays(
        [pa.array(b[:, i], mask=np.isnan(b[:, i])) for i in range(4)],
        names=["xmin", "ymin", "xmax", "ymax"],
        mask=mask,
    )


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

"""Hex partition checks of ``cng-datasets validate`` (see the package docstring)."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from cng_datasets import contract, provenance, storage
from cng_datasets.errors import RecordError, first_line
from cng_datasets.validate.common import _Problems

_PARTITION = re.compile(r"(?:^|/)h0=([^/]+)/[^/]+$")
_CELL_COLUMN = re.compile(r"^h(\d{1,2})$")
#: The hex output's completion marker (written last by repartition; part of the hex contract in
#: docs/architecture.md, spelled out here rather than imported from the step that writes it).
HEX_SUCCESS = contract.HEX_SUCCESS
#: Rows whose parents are re-computed with h3-py (the rest is checked with numpy bit arithmetic).
H3PY_SAMPLE = 2000

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
    problems = _Problems()
    files = [u for u in storage.list_prefix(hex_url) if u.endswith(".parquet")]
    stats: dict[str, Any] = {"files": len(files), "rows": 0}
    if not files:
        return [f"{hex_url}: no .parquet files below it"], stats
    listed, layout, hive = _read_hex_success(hex_url, problems)
    try:
        src = storage.open_parquet(parquet_url)
    except Exception as exc:  # noqa: BLE001 - any reader error is the finding
        return [f"{parquet_url}: source GeoParquet unreadable, cannot check the hex partitions ({exc})"], stats
    try:
        id_col = contract.id_column_of(src.metadata.metadata)
        geo = contract.footer_json(src.metadata.metadata, contract.GEO_KEY) or {}
    except RecordError as exc:
        return [f"{parquet_url}: {exc}"], stats
    geom_col = contract.geometry_column_of(geo)

    scan = _HexScan(hex_url, id_col, layout, len(files), problems)
    scan.hive = hive
    for url in files:
        scan.file(url)
    stats.update(rows=scan.rows, partitions=len(scan.partitions), resolution=scan.finest_res)
    if scan.provenance is not None:
        stats["provenance"] = scan.provenance
    if listed is not None:
        _compare_hex_success(hex_url, listed, files, scan.file_rows, problems)
    if scan.ids_seen:
        features = _check_ids_against_source(hex_url, src, id_col, geom_col, scan.ids_seen, problems)
        if features is not None:
            stats["features"] = features
    return problems.items, stats


class _HexScan:
    """The checks of each partition file, and what they collect across files."""

    def __init__(
        self, hex_url: str, id_col: str, layout: dict[int, str] | None, n_files: int, problems: _Problems
    ) -> None:
        self.hex_url, self.id_col, self.layout, self.problems = hex_url, id_col, layout, problems
        self.sample_size = H3PY_SAMPLE // max(1, n_files) + 1
        self.rng = np.random.default_rng(0)
        self.ids_seen: list[Any] = []
        self.partitions: set[str] = set()
        self.file_rows: dict[str, int] = {}
        self.finest_res: int | None = None
        self.rows = 0
        #: the marker promises the hive layout: h0 in the folder names only, int64 cells
        self.hive = False
        self.provenance: str | None = None  # of the first file

    def file(self, url: str) -> None:
        problems = self.problems
        rel = url[len(self.hex_url.rstrip("/")) :].replace("\\", "/")
        m = _PARTITION.search(rel)
        if not m:
            problems.add(f"{url}: not inside an h0=<cell> partition directory")
            return
        part = m.group(1)
        self.partitions.add(part)
        try:
            part_cell = _partition_cell(part)
        except ValueError:
            problems.add(f"{url}: partition value {part!r} is not an H3 cell")
            return
        try:
            pf = storage.open_parquet(url)
            wanted = [n for n in pf.schema_arrow.names if n == self.id_col or _is_cell_column(n, self.layout)]
            table = pf.read(columns=wanted)  # attributes are not checked: skip reading them
        except Exception as exc:  # noqa: BLE001 - any reader error is the finding
            problems.add(f"{url}: unreadable ({first_line(exc)})")
            return
        self.rows += table.num_rows
        if self.provenance is None:
            try:
                self.provenance = provenance.summary(provenance.of_parquet(pf.metadata.metadata))
            except RecordError as exc:
                problems.add(f"{url}: {exc}")
        self.file_rows[rel.lstrip("/")] = table.num_rows
        cells = self._cell_columns(url, table)
        if cells is None:
            return
        res = max(cells)
        self._check_cells(url, table, cells, res, part, part_cell)

    def _cell_columns(self, url: str, table: Any) -> dict[int, np.ndarray] | None:
        """The file's cell columns by resolution, after the layout checks (None: reported)."""
        problems = self.problems
        cell_cols = {int(n[1:]): n for n in table.column_names if _is_cell_column(n, self.layout)}
        if self.id_col not in table.column_names:
            problems.add(f"{url}: no id column {self.id_col!r}")
            return None
        key = contract.HEX_PARTITION_KEY
        if self.hive and key in table.column_names:
            problems.add(f"{url}: holds a {key} column; in the hive layout {key} is only in the folder names")
            return None
        if self.layout is not None:
            # h0 is in the folder name: in the file only in an output of the earlier layout
            absent = sorted(set(self.layout.values()) - set(cell_cols.values()) - {key})
            if absent:
                problems.add(f"{url}: no cell column {', '.join(absent)} (listed in {HEX_SUCCESS})")
                return None
        if self.hive:
            typed = [n for n in cell_cols.values() if str(table.schema.field(n).type) != contract.HEX_CELL_TYPE]
            if typed:
                problems.add(f"{url}: cell column(s) {', '.join(typed)} are not {contract.HEX_CELL_TYPE}")
        fine_cols = [r for r in cell_cols if r > 0]
        if not fine_cols and self.layout is not None and max(self.layout) == 0:
            # resolution 0: the cell is the partition key itself; only the ids are checked
            import pyarrow.compute as pc

            self.ids_seen.append(pc.unique(table.column(self.id_col)))
            return None
        if not fine_cols:
            problems.add(f"{url}: no H3 cell column hN (N > 0) among {table.column_names}")
            return None
        res = max(fine_cols)
        if self.finest_res is None:
            self.finest_res = res
        elif res != self.finest_res:
            problems.add(f"{url}: finest cell column h{res} differs from other partitions' h{self.finest_res}")
        if table.num_rows == 0:
            problems.add(f"{url}: empty partition file")
            return None
        try:
            return {r: _as_cells(table.column(n)) for r, n in cell_cols.items()}
        except ValueError as exc:
            problems.add(f"{url}: {exc}")
            return None

    def _check_cells(
        self, url: str, table: Any, cells: dict[int, np.ndarray], res: int, part: str, part_cell: int
    ) -> None:
        """Valid cells of each column's resolution, h0 = the partition, parents of the finest
        cell, no duplicate (id, cell) rows."""
        import h3
        import pyarrow as pa
        import pyarrow.compute as pc

        problems, id_col = self.problems, self.id_col
        fine = cells[res]
        # every column holds cells (mode 1) of its own resolution
        for r, col in cells.items():
            bad = np.flatnonzero(
                (((col & _RES_MASK) >> _RES_SHIFT) != np.uint64(r)) | ((col >> _MODE_SHIFT) != np.uint64(1))
            )
            if len(bad):
                problems.add(
                    f"{url}: column h{r} has {len(bad)} value(s) that are not resolution-{r} cells "
                    f"(first: {_h3_str(col[bad[0]])} in row {bad[0]})"
                )
        sample = self.rng.choice(len(fine), size=min(len(fine), self.sample_size), replace=False)
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
                    f"(first: row {i}, h{res} {_h3_str(fine[i])} has parent {_h3_str(expect[i])}, "
                    f"column holds {_h3_str(col[i])})"
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
        self.ids_seen.append(pc.unique(table.column(id_col)))


def _check_ids_against_source(
    hex_url: str, src: Any, id_col: str, geom_col: str, ids_seen: list[Any], problems: _Problems
) -> int | None:
    """Every source feature with a geometry is present, and nothing else; the features seen
    (None when the id types cannot be compared)."""
    import pyarrow as pa
    import pyarrow.compute as pc

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
            return None
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
    return len(seen)


def _is_cell_column(name: str, layout: dict[int, str] | None) -> bool:
    """Whether ``name`` holds H3 cells: the marker's columns when known (a source attribute may be
    called ``h10``), else any ``h<N>``."""
    return name in layout.values() if layout is not None else bool(_CELL_COLUMN.match(name))


def _read_hex_success(hex_url: str, problems: _Problems) -> tuple[dict[str, int] | None, dict[int, str] | None, bool]:
    """The files and row counts the completion marker lists, its cell columns by resolution (None,
    with a problem, when unusable; the layout is None for a marker that does not name it), and
    whether it promises the hive layout (format 2 and later)."""
    url = storage.join(hex_url, HEX_SUCCESS)
    if not storage.exists(url):
        problems.add(
            f"{url}: missing: the hex output is not published (repartition has not finished, failed, "
            "or is running); its partitions may be incomplete or stale"
        )
        return None, None, False
    try:
        marker = json.loads(storage.read_bytes(url))
        files = marker["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not an object")
        listed = {str(k).lstrip("/"): int(v) for k, v in files.items()}
    except Exception as exc:  # noqa: BLE001 - any reader error is the finding
        problems.add(f"{url}: not a readable completion marker with a 'files' object ({exc})")
        return None, None, False
    hive = isinstance(marker.get("format"), int) and marker["format"] >= 2
    res, parents = marker.get("resolution"), marker.get("parent_resolutions")
    if not isinstance(res, int) or not isinstance(parents, list):
        return listed, None, hive
    return listed, {r: f"h{r}" for r in {res, 0, *(int(p) for p in parents)}}, hive


def _compare_hex_success(
    hex_url: str, listed: dict[str, int], files: list[str], file_rows: dict[str, int], problems: _Problems
) -> None:
    """The marker's file list equals the .parquet files present, with the same row counts."""
    base = hex_url.rstrip("/")
    present = {u[len(base) :].replace("\\", "/").lstrip("/") for u in files}
    missing = sorted(set(listed) - present)
    if missing:
        problems.add(f"{hex_url}: {len(missing)} file(s) listed in {HEX_SUCCESS} are missing (first: {missing[0]})")
    extra = sorted(present - set(listed))
    if extra:
        problems.add(
            f"{hex_url}: {len(extra)} .parquet file(s) not listed in {HEX_SUCCESS} "
            f"(stale or partial; first: {extra[0]})"
        )
    for rel in sorted(set(listed) & set(file_rows)):
        if listed[rel] != file_rows[rel]:
            problems.add(f"{hex_url}/{rel}: {file_rows[rel]} rows, {HEX_SUCCESS} lists {listed[rel]}")

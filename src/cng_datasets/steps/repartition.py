"""``cng-datasets repartition``: merge hex chunk parts into one directory per h0 cell.

Input: the chunk output of :mod:`cng_datasets.steps.hex` (``<chunks>/h0=<cell>/part-*.parquet``
plus the completion markers ``<chunks>/_done/chunk-*.json``). Output::

    <output>/h0=<h0 cell as unsigned decimal>/data_0.parquet   (data_1, … for huge partitions)

Rows are ordered by id (chunks are concatenated in chunk order, each part is id-ordered), ZSTD.

Completeness is checked before anything is written and again before the chunks are deleted:

- every chunk 0..L has its marker (L is the chunk that read to the end of the source), the
  chunks' row ranges tile the source's rows exactly, all with the same H3 settings;
- every source feature with a non-empty geometry is accounted for (the markers' counts of features
  with cells, null and empty geometries add up to the source's rows; the source's null-geometry count
  comes from its ``cng_datasets`` metadata or Parquet statistics);
- every part a marker lists exists with the row count the marker states (checked while reading it);
- at the end, the distinct ids found in the output equal the number of features with cells.

Failures raise :class:`~cng_datasets.errors.IncompleteOutputError` naming what is missing; the
chunks are kept.

Publication (atomic at the dataset level): the output is complete only when its marker
``<output>/_SUCCESS.json`` exists. A repartition removes that marker first, writes the partitions
(overwriting files of an earlier run in place), checks them, removes every file of the output it
did not write (stale partitions, leftovers of an interrupted run) only after all new files are
written, and writes the marker last::

    {"format": 1, "id_column": "_cng_fid", "features": <features with cells>, "rows": <all rows>,
     "resolution": R, "parent_resolutions": [...], "containment": "center", "partitions": <n>,
     "files": {"h0=<cell>/data_0.parquet": <rows>, ...}}

A reader (and ``cng-datasets validate``) must check the marker exists and read the files it lists;
without it the output is being written, or its writing failed.

Parallel use: ``h0_index=I`` removes the marker, writes only the partition of the I-th of the 122
base cells (sorted by index) and then a manifest ``<output>/_partitions/h0=<cell>.json`` of the
files it wrote (tagged with a digest of the chunk markers); it deletes nothing. ``finalize=True``
then checks the whole output against the markers and those manifests, deletes stale files and the
manifests, writes ``_SUCCESS.json`` (only the finalize step does) and deletes the chunks. Without
either, one process does everything. Each chunk part is read exactly once, in bounded memory (row
group by row group).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cng_datasets import storage
from cng_datasets.errors import DataError, IncompleteOutputError, StorageError
from cng_datasets.steps.hex import CHUNK_MARKER_RE, MARKER_DIR, open_parquet, source_info

log = logging.getLogger("cng_datasets")

#: Rows per output file before a partition rolls over to the next ``data_<k>.parquet``.
MAX_FILE_ROWS = 50_000_000
#: Rows per output row group.
ROW_GROUP_ROWS = 1 << 20
#: The output's completion marker: written last, removed first (see the module docstring).
SUCCESS_NAME = "_SUCCESS.json"
SUCCESS_FORMAT = 1
#: Per-partition manifests of ``--h0-index`` runs, read by ``--finalize``, then removed.
PARTITIONS_DIR = "_partitions"
_DATA_RE = re.compile(r"(?:^|[/\\])h0=(\d+)[/\\]data_\d+\.parquet$")


def success_url(output: str) -> str:
    """Where the completion marker of the hex output ``output`` lives."""
    return storage.join(output, SUCCESS_NAME)


def read_success(output: str) -> dict[str, Any] | None:
    """The completion marker of ``output`` (None when absent or not a marker of this format)."""
    try:
        data = json.loads(storage.read_bytes(success_url(output)))
    except (StorageError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != SUCCESS_FORMAT or not isinstance(data.get("files"), dict):
        return None
    return data


def base_cells() -> list[int]:
    """The 122 resolution-0 cells, sorted: ``h0_index`` I means the I-th of them."""
    import h3

    return sorted(int(c, 16) for c in h3.get_res0_cells())


@dataclass
class ChunkSet:
    """The markers of a complete chunk set and what they promise."""

    markers: list[dict[str, Any]]
    partitions: dict[int, list[tuple[int, str, int]]] = field(default_factory=dict)  # h0 -> [(chunk, rel, rows)]
    id_column: str = "_cng_fid"
    features_with_cells: int = 0
    source_rows: int = 0

    def digest(self) -> str:
        """Identifies this chunk set: the same for every process of one parallel repartition."""
        body = json.dumps(self.markers, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(body).hexdigest()[:32]


def _read_markers(chunks: str) -> list[dict[str, Any]]:
    out = []
    for url in storage.list_prefix(storage.join(chunks, MARKER_DIR)):
        if not CHUNK_MARKER_RE.match(storage.parse(url).name):
            continue
        try:
            out.append(json.loads(storage.read_bytes(url)))
        except ValueError as exc:
            raise IncompleteOutputError(f"{url}: unreadable chunk marker ({exc})") from exc
    return sorted(out, key=lambda m: int(m["chunk_id"]))


def _source_null_count(pf: Any, geometry_column: str, meta: dict[str, Any]) -> int | None:
    """Null geometries of the source: metadata, else Parquet statistics, else None."""
    if "null_geometries" in meta:
        return int(meta["null_geometries"])
    md = pf.metadata
    idx = pf.schema_arrow.names.index(geometry_column)
    total = 0
    for rg in range(md.num_row_groups):
        col = md.row_group(rg).column(idx)
        st = col.statistics
        if st is None or st.null_count is None:
            return None
        total += st.null_count
    return total


def check_chunks(chunks: str, source: str) -> ChunkSet:
    """Completeness of the chunk set against the source; raises IncompleteOutputError."""
    markers = _read_markers(chunks)
    if not markers:
        raise IncompleteOutputError(f"{chunks}: no completed hex chunks (no markers in {MARKER_DIR}/)")
    pf = open_parquet(source)
    info = source_info(pf, source)
    rows = info.num_rows
    by_id = {int(m["chunk_id"]): m for m in markers}
    lasts = sorted(i for i, m in by_id.items() if m.get("last"))
    problems: list[str] = []
    if not lasts:
        top = max(by_id)
        problems.append(
            f"the last chunk (the one that reads to the end) is missing; chunks present: {_ranges(sorted(by_id))}"
            + (f", highest {top}" if top is not None else "")
        )
        last = max(max(by_id), int(markers[0].get("chunk_count") or 0) - 1)
    else:
        last = lasts[0]
    expected_count = markers[0].get("chunk_count")
    if expected_count:
        last = max(last, int(expected_count) - 1)
    missing = [i for i in range(last + 1) if i not in by_id]
    if missing:
        names = ", ".join(f"chunk {i} ({MARKER_DIR}/chunk-{i:05d}.json)" for i in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        problems.append(f"missing {len(missing)} hex chunk(s): {names}{more}")
    keys = ("resolution", "parent_resolutions", "containment", "id_column", "chunk_size")
    ref = markers[0]
    for m in markers[1:]:
        for k in keys:
            if m.get(k) != ref.get(k):
                problems.append(f"chunk {m['chunk_id']} has {k}={m.get(k)!r} but chunk {ref['chunk_id']} has {ref.get(k)!r}")
                break
    for m in markers:
        if int(m.get("source_rows", rows)) != rows:
            problems.append(f"chunk {m['chunk_id']} was made from a source of {m['source_rows']} rows, {source} has {rows}")
    if not problems:
        # row ranges tile [0, rows)
        pos = 0
        for i in range(last + 1):
            m = by_id[i]
            s, e = int(m["start_row"]), int(m["end_row"])
            if s > pos:
                problems.append(f"source rows {pos}..{s - 1} are in no chunk (before chunk {i})")
            pos = max(pos, e)
        if pos < rows:
            problems.append(f"source rows {pos}..{rows - 1} are in no chunk (the last chunk {last} ends at row {pos})")
    if problems:
        raise IncompleteOutputError(f"{chunks}: incomplete hex chunks: " + "; ".join(problems))

    used = [by_id[i] for i in range(last + 1)]
    with_cells = sum(int(m["features_with_cells"]) for m in used)
    nulls = sum(int(m["null_geometries"]) for m in used)
    empties = sum(int(m["empty_geometries"]) for m in used)
    if with_cells + nulls + empties != rows:
        raise IncompleteOutputError(
            f"{chunks}: the chunks account for {with_cells + nulls + empties} of {rows} source features "
            f"({with_cells} with cells, {nulls} null and {empties} empty geometries)"
        )
    src_nulls = _source_null_count(pf, info.geometry_column, info.metadata)
    if src_nulls is not None and src_nulls != nulls:
        raise IncompleteOutputError(
            f"{chunks}: {source} has {src_nulls} null geometries but the chunks saw {nulls}"
        )
    cs = ChunkSet(used, id_column=info.id_column, features_with_cells=with_cells, source_rows=rows)
    for m in used:
        for rel, n in sorted(m["parts"].items()):
            h0 = int(rel.split("/", 1)[0].split("=", 1)[1])
            cs.partitions.setdefault(h0, []).append((int(m["chunk_id"]), rel, int(n)))
    for parts in cs.partitions.values():
        parts.sort()
    return cs


def _ranges(ids: list[int]) -> str:
    if not ids:
        return "none"
    out, a, b = [], ids[0], ids[0]
    for i in ids[1:]:
        if i == b + 1:
            b = i
            continue
        out.append(f"{a}" if a == b else f"{a}-{b}")
        a = b = i
    out.append(f"{a}" if a == b else f"{a}-{b}")
    return ",".join(out)


def write_partition(chunks: str, output: str, h0: int, parts: list[tuple[int, str, int]]) -> dict[str, int]:
    """Merge the parts of one h0 into ``<output>/h0=<h0>/data_<k>.parquet``; returns {url: rows}.

    Deletes nothing: stale files of the partition go in the final step (see :func:`repartition`).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    pdir = storage.join(output, f"h0={h0}")
    written: dict[str, int] = {}
    schema = None
    state: dict[str, Any] = {"writer": None, "tmp": None, "rows": 0, "k": 0, "buf": [], "buf_rows": 0}
    tmpdir = tempfile.mkdtemp(prefix="cng-repartition-")

    def open_next() -> None:
        path = os.path.join(tmpdir, f"data_{state['k']}.parquet")
        state["writer"] = pq.ParquetWriter(path, schema, compression="zstd")
        state["tmp"] = path
        state["rows"] = 0

    def flush_buf() -> None:
        if not state["buf"]:
            return
        table = pa.concat_tables(state["buf"])
        state["buf"], state["buf_rows"] = [], 0
        if state["writer"] is None:
            open_next()
        state["writer"].write_table(table, row_group_size=ROW_GROUP_ROWS)
        state["rows"] += table.num_rows

    def close_file() -> None:
        flush_buf()
        if state["writer"] is None:
            return
        state["writer"].close()
        url = storage.join(pdir, f"data_{state['k']}.parquet")
        with storage.atomic_output(url, suffix=".parquet") as tmp:
            shutil.move(state["tmp"], tmp)
        written[url] = state["rows"]
        state["writer"] = None
        state["k"] += 1

    try:
        for chunk_id, rel, expect in parts:
            url = storage.join(chunks, rel)
            try:
                pf = open_parquet(url)
            except DataError as exc:
                raise IncompleteOutputError(f"chunk {chunk_id}: part {url} listed in its marker is missing or unreadable") from exc
            if pf.metadata.num_rows != expect:
                raise IncompleteOutputError(
                    f"chunk {chunk_id}: part {url} has {pf.metadata.num_rows} rows, its marker says {expect}"
                )
            if schema is None:
                schema = pf.schema_arrow
            for rg in range(pf.metadata.num_row_groups):
                table = pf.read_row_group(rg)
                if table.schema != schema:
                    table = table.cast(schema)
                if state["rows"] + state["buf_rows"] + table.num_rows > MAX_FILE_ROWS and (state["rows"] + state["buf_rows"]) > 0:
                    close_file()
                state["buf"].append(table)
                state["buf_rows"] += table.num_rows
                if state["buf_rows"] >= ROW_GROUP_ROWS:
                    flush_buf()
        close_file()
    finally:
        if state["writer"] is not None:
            try:
                state["writer"].close()
            except Exception:  # noqa: BLE001
                pass
        shutil.rmtree(tmpdir, ignore_errors=True)
    # files of an earlier run this one did not overwrite (a data_1 of a partition that shrank) are
    # removed by the final step, after every new file is written
    return written


def _prune_empty_dirs(root: str) -> None:
    """Remove empty directories below a local ``root`` (S3 has none)."""
    loc = storage.parse(root)
    if not loc.is_local or not os.path.isdir(loc.path):
        return
    for dirpath, _dirs, _files in sorted(os.walk(loc.path), key=lambda t: -len(t[0])):
        if dirpath != loc.path:
            try:
                os.rmdir(dirpath)
            except OSError:
                pass


def _norm(url: str) -> str:
    return os.path.normpath(url) if storage.parse(url).is_local else url


def _output_ids_check(output: str, cs: ChunkSet, files: list[str]) -> None:
    """The distinct ids in the output equal the features with cells the markers promise.

    Integer ids 1..N (the default ``_cng_fid``) are counted in a bitmap; any other id (a text
    ``--id-column``, integers outside 1..N) is counted with ``pyarrow.compute``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n = cs.source_rows
    seen = np.zeros(n + 2, dtype=bool)
    other: list[Any] = []
    for url in files:
        pf = open_parquet(url)
        for rg in range(pf.metadata.num_row_groups):
            ids = pf.read_row_group(rg, columns=[cs.id_column]).column(0)
            uniq = pc.unique(ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
            if pa.types.is_integer(uniq.type) and uniq.null_count == 0:
                arr = np.asarray(uniq.to_numpy(zero_copy_only=False))
                inside = (arr >= 1) & (arr <= n)
                seen[arr[inside].astype(np.int64)] = True
                if not inside.all():
                    other.append(uniq.filter(pa.array(~inside)))
            else:
                other.append(uniq)
    count = int(seen.sum())
    if other:
        typ = other[0].type
        count += int(pc.count_distinct(pa.chunked_array([o.cast(typ) for o in other], type=typ), mode="all").as_py())
    if count != cs.features_with_cells:
        raise IncompleteOutputError(
            f"{output}: holds {count} distinct features, the chunks promised {cs.features_with_cells}"
        )


def _rel(output: str, url: str) -> str:
    """``url`` relative to ``output``, with ``/`` separators."""
    base = _norm(output).rstrip("/\\")
    return _norm(url)[len(base) + 1:].replace("\\", "/")


def _partition_manifest_url(output: str, h0: int) -> str:
    return storage.join(output, PARTITIONS_DIR, f"h0={h0}.json")


def _read_partition_manifests(output: str, cs: ChunkSet, problems: list[str]) -> dict[str, int]:
    """{url: rows} of the partitions ``--h0-index`` runs wrote from this chunk set."""
    files: dict[str, int] = {}
    digest = cs.digest()
    for h0 in sorted(cs.partitions):
        url = _partition_manifest_url(output, h0)
        try:
            man = json.loads(storage.read_bytes(url))
        except (StorageError, ValueError):
            problems.append(f"partition h0={h0} is missing (no --h0-index run wrote {PARTITIONS_DIR}/h0={h0}.json)")
            continue
        if man.get("chunks") != digest:
            problems.append(f"partition h0={h0} was written from other chunks than these ({url})")
            continue
        for rel, rows in sorted((man.get("files") or {}).items()):
            files[_norm(storage.join(output, rel))] = int(rows)
    return files


def _write_success(output: str, cs: ChunkSet, files: dict[str, int]) -> dict[str, Any]:
    ref = cs.markers[0]
    body = {
        "format": SUCCESS_FORMAT,
        "id_column": cs.id_column,
        "features": cs.features_with_cells,
        "rows": sum(files.values()),
        "resolution": ref.get("resolution"),
        "parent_resolutions": ref.get("parent_resolutions"),
        "containment": ref.get("containment"),
        "partitions": len({_rel(output, u).split("/", 1)[0] for u in files}),
        "files": {_rel(output, u): int(n) for u, n in sorted(files.items(), key=lambda t: _rel(output, t[0]))},
    }
    storage.write_bytes(success_url(output), (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    return body


def repartition(
    chunks: str,
    output: str,
    source: str,
    h0_index: int | None = None,
    finalize: bool = False,
    keep_chunks: bool = False,
) -> dict[str, Any]:
    """Repartition hex chunks by h0 (see module docstring). Returns a summary dict."""
    t0 = time.monotonic()
    if h0_index is not None and finalize:
        raise DataError("--h0-index and --finalize exclude each other")
    cells = base_cells()
    if h0_index is not None and not 0 <= h0_index < len(cells):
        raise DataError(f"--h0-index must be 0..{len(cells) - 1}, not {h0_index}")
    # un-publish first: from here until the marker is written again the output is not complete
    storage.delete(success_url(output))
    cs = check_chunks(chunks, source)
    if h0_index is not None:
        h0 = cells[h0_index]
        parts = cs.partitions.get(h0, [])
        written = write_partition(chunks, output, h0, parts) if parts else {}
        manifest = {
            "format": SUCCESS_FORMAT,
            "chunks": cs.digest(),
            "h0": h0,
            "files": {_rel(output, u): n for u, n in sorted(written.items())},
        }
        if parts:
            storage.write_bytes(_partition_manifest_url(output, h0), json.dumps(manifest, sort_keys=True).encode())
        rows = sum(written.values())
        log.info("h0=%d (index %d): %d rows in %d file(s), %.1f s", h0, h0_index, rows, len(written), time.monotonic() - t0)
        return {"partitions": 1 if parts else 0, "rows": rows, "files": written}

    files: dict[str, int] = {}
    problems: list[str] = []
    if finalize:
        files = _read_partition_manifests(output, cs, problems)
    else:
        for i, (h0, parts) in enumerate(sorted(cs.partitions.items())):
            written = write_partition(chunks, output, h0, parts)
            files.update({_norm(u): n for u, n in written.items()})
            log.info("partition %d/%d h0=%d: %d rows", i + 1, len(cs.partitions), h0, sum(written.values()))
    # check the whole output against the markers: every file exists with its row count, and the
    # partitions hold what the chunks hold
    expected_rows = {h0: sum(n for _, _, n in parts) for h0, parts in cs.partitions.items()}
    present = {_norm(u) for u in storage.list_prefix(output)}
    by_part: dict[int, list[str]] = {}
    for url, rows in sorted(files.items()):
        m = _DATA_RE.search(url)
        if not m or int(m.group(1)) not in expected_rows:
            problems.append(f"{url} is not a data file of an expected partition")
            continue
        if url not in present:
            problems.append(f"{url} (partition h0={m.group(1)}) is missing")
            continue
        if finalize:
            got = open_parquet(url).metadata.num_rows
            if got != rows:
                problems.append(f"{url} has {got} rows, its partition manifest says {rows}")
        by_part.setdefault(int(m.group(1)), []).append(url)
    for h0, rows in sorted(expected_rows.items()):
        urls = by_part.get(h0, [])
        if not urls:
            if not any(f"h0={h0} " in p for p in problems):
                problems.append(f"partition h0={h0} is missing")
            continue
        got = sum(files[u] for u in urls)
        if got != rows:
            problems.append(f"partition h0={h0} has {got} rows, the chunks hold {rows}")
    if problems:
        raise IncompleteOutputError(
            f"{output}: " + "; ".join(problems[:10]) + ("" if len(problems) <= 10 else f" (+{len(problems) - 10} more)")
        )
    kept = sorted(u for urls in by_part.values() for u in urls)
    _output_ids_check(output, cs, kept)
    # only now, with every new file written and checked: remove what this run did not write
    stale = sorted(present - set(kept) - {_norm(success_url(output))})
    for url in stale:
        storage.delete(url)
    _prune_empty_dirs(output)
    if stale:
        log.info("removed %d stale file(s) from %s", len(stale), output)
    _write_success(output, cs, {u: files[u] for u in kept})  # last: publishes the output
    if not keep_chunks:
        n = storage.delete_prefix(chunks)
        log.info("completeness check passed; deleted %d chunk file(s) below %s", n, chunks)
    total = sum(expected_rows.values())
    log.info(
        "repartition: %d rows in %d partitions, %d features, %.1f s",
        total, len(expected_rows), cs.features_with_cells, time.monotonic() - t0,
    )
    return {"partitions": len(expected_rows), "rows": total, "features": cs.features_with_cells, "files": len(kept)}

"""``cng-datasets repartition``: merge hex chunk parts into one directory per h0 cell.

Input: the chunk output of :mod:`cng_datasets.steps.hex` (``<chunks>/h0=<cell>/part-*.parquet``
plus the completion markers ``<chunks>/_done/chunk-*.json``). Output::

    <output>/h0=<h0 cell as unsigned decimal>/data_0.parquet   (data_1, … for huge partitions)

Rows are ordered by id (chunks are concatenated in row order, each part is id-ordered; not within
a row chunk of several features shared by ``hex --shares`` chunks, which the plan never makes), ZSTD.

Completeness (:func:`cng_datasets.steps.hexchunks.check_chunks`) is checked before anything is
written or removed, and again before the chunks are deleted:

- the markers' row ranges tile the source's rows ``[0, N)`` exactly (a gap names the rows and the
  chunks missing, an overlap the two chunks; planned ``--chunk-count`` chunks and seed-style
  ``--chunk-id``/``--chunk-size`` chunks both work), all with the same H3 settings;
- every chunk's accounting holds (``read − Σ dropped == written``) and so do the sums; the
  chunks read exactly ``N`` features and dropped as many null geometries as the source holds (its
  ``cng_datasets`` metadata or Parquet statistics);
- every part a marker lists exists (one listing, before the output is touched) and has the row
  count the marker states (checked while reading it);
- at the end, the distinct ids found in the output equal the features written.

Failures raise :class:`~cng_datasets.errors.IncompleteOutputError` naming what is missing; the
chunks are kept.

Publication (atomic at the dataset level): the output is complete only when its marker
``<output>/_SUCCESS.json`` exists. Only once the chunks passed the check (there is new work to
publish), a repartition removes that marker, writes the partitions (overwriting files of an earlier
run in place), checks them, removes every file of the output it did not write (stale partitions,
temporary files of a killed run) only after all new files are written, writes the marker, and
then deletes the chunks: every other file first, the markers ``_done/`` last::

    {"format": 2, "cell_type": "int64", "id_column": "_cng_fid", "features": <features with cells>, "rows": <all rows>,
     "resolution": R, "parent_resolutions": [...], "containment": "center", "partitions": <n>,
     "files": {"h0=<cell>/data_0.parquet": <rows>, ...}, "source_rows": N,
     "source_footer_sha256": "<digest of the source's Parquet footer>",
     "accounting": {"unit": "features", "read": N, "written": <features with cells>,
                    "dropped": {"null geometry": k, ...}},
     "chunks": {"count": <markers>, "digest": "<digest of the chunk set>",
                "markers": {"<chunk id>": "<digest of its marker>", ...}}}

A reader (and ``cng-datasets validate``) must check the marker exists and read the files it lists;
without it the output is being written, or its writing failed.

Running again (a retried pod, a second ``kubectl apply``) is safe: when ``_SUCCESS.json`` exists
and every chunk marker still present is one it was made from (none left, or some left by a run
killed while deleting the chunks), the output is published already: repartition checks that the
files it lists are present (else, with the chunks still there, it writes the output again) and the
source is the version recorded (its footer digest), finishes deleting the
chunks, logs that there was nothing to do and exits 0, never touching the output.

Parallel use: ``h0_index=I`` removes the marker (after the check), writes only the partition of the I-th of the 122
base cells (sorted by index) and then a manifest ``<output>/_partitions/h0=<cell>.json`` of the
files it wrote (tagged with a digest of the chunk markers); it deletes nothing. ``finalize=True``
then checks the whole output against the markers and those manifests, deletes stale files and the
manifests, writes ``_SUCCESS.json`` (only the finalize step does) and deletes the chunks. Without
either, one process does everything. Each chunk part is read exactly once, in bounded memory (row
group by row group); per chunk only its marker (a few KB) is held, whatever the data size.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from cng_datasets import contract, provenance, storage
from cng_datasets.contract import CHUNK_MARKER_DIR, CHUNK_MARKER_RE, HEX_SUCCESS
from cng_datasets.errors import DataError, IncompleteOutputError, StorageError
from cng_datasets.steps.hex import check_accounting, footer_digest
from cng_datasets.steps.hexchunks import ChunkSet, check_chunks, marker_digest, read_markers
from cng_datasets.steps.testhook import kill_point

__all__ = ["CHUNK_MARKER_RE", "ChunkSet", "base_cells", "check_chunks", "read_success", "repartition", "success_url"]

log = logging.getLogger("cng_datasets")

#: Rows per output file before a partition rolls over to the next ``data_<k>.parquet``.
MAX_FILE_ROWS = 50_000_000
#: Rows per output row group.
ROW_GROUP_ROWS = 1 << 20
#: The output's completion marker: written last, removed first (see the module docstring).
SUCCESS_NAME = HEX_SUCCESS
#: 2: hive layout (``h0`` in the folder names only) and int64 cell columns; 1: ``h0`` also in the
#: files and uint64 cells (still read, so an output of the earlier version stays published).
SUCCESS_FORMAT = 2
SUCCESS_FORMATS = (1, 2)
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
    if (
        not isinstance(data, dict)
        or data.get("format") not in SUCCESS_FORMATS
        or not isinstance(data.get("files"), dict)
    ):
        return None
    return data


def base_cells() -> list[int]:
    """The 122 resolution-0 cells, sorted: ``h0_index`` I means the I-th of them."""
    import h3

    return sorted(int(c, 16) for c in h3.get_res0_cells())


def write_partition(
    chunks: str, output: str, h0: int, parts: list[tuple[int, str, int]], cells: list[str], prov: bytes = b""
) -> dict[str, int]:
    """Merge the parts of one h0 into ``<output>/h0=<h0>/data_<k>.parquet``; returns {url: rows}.

    The files follow the hive convention: ``h0`` is in the folder name only, and the cell columns
    ``cells`` are int64 (:data:`~cng_datasets.contract.HEX_CELL_TYPE`); ``prov`` is the provenance
    record each file's footer carries. Deletes nothing: stale files of the partition go in the
    final step (see :func:`repartition`).
    """
    out = _PartitionFiles(storage.join(output, f"h0={h0}"), cells, prov)
    try:
        for chunk_id, rel, expect in parts:
            url = storage.join(chunks, rel)
            try:
                pf = storage.open_parquet(url)
            except (DataError, StorageError) as exc:
                raise IncompleteOutputError(
                    f"chunk {chunk_id}: part {url} listed in its marker is missing or unreadable"
                ) from exc
            if pf.metadata.num_rows != expect:
                raise IncompleteOutputError(
                    f"chunk {chunk_id}: part {url} has {pf.metadata.num_rows} rows, its marker says {expect}"
                )
            for rg in range(pf.metadata.num_row_groups):
                out.add(pf.read_row_group(rg), pf.schema_arrow)
        out.close_file()
    finally:
        out.cleanup()
    # files of an earlier run this one did not overwrite (a data_1 of a partition that shrank) are
    # removed by the final step, after every new file is written
    return out.written


class _PartitionFiles:
    """The data files of one partition, written row group by row group in a private temp dir and
    each published atomically when full (:data:`MAX_FILE_ROWS`) or at the end."""

    def __init__(self, pdir: str, cells: list[str], prov: bytes) -> None:
        self.pdir = pdir
        self.cells = set(cells)
        self.metadata = {contract.PROVENANCE_KEY: prov} if prov else None
        self.written: dict[str, int] = {}
        self.schema: Any = None
        self.writer: Any = None
        self.tmp = ""
        self.rows = 0  # in the open file
        self.k = 0  # number of the open file
        self.buf: list[Any] = []
        self.buf_rows = 0
        self.tmpdir = tempfile.mkdtemp(prefix="cng-repartition-")

    def add(self, table: Any, schema: Any) -> None:
        import pyarrow as pa

        if self.schema is None:
            self.schema = pa.schema(
                [
                    f.with_type(pa.int64()) if f.name in self.cells else f
                    for f in schema
                    if f.name != contract.HEX_PARTITION_KEY
                ],
                metadata=self.metadata,
            )
        if contract.HEX_PARTITION_KEY in table.column_names:
            table = table.drop_columns([contract.HEX_PARTITION_KEY])
        if table.schema != self.schema:
            table = table.cast(self.schema)  # uint64 cells < 2**63: the safe cast never fails
        if self.rows + self.buf_rows + table.num_rows > MAX_FILE_ROWS and (self.rows + self.buf_rows) > 0:
            self.close_file()
        self.buf.append(table)
        self.buf_rows += table.num_rows
        if self.buf_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.buf:
            return
        table = pa.concat_tables(self.buf)
        self.buf, self.buf_rows = [], 0
        if self.writer is None:
            self.tmp = os.path.join(self.tmpdir, f"data_{self.k}.parquet")
            self.writer = pq.ParquetWriter(self.tmp, self.schema, compression="zstd")
            self.rows = 0
        self.writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        self.rows += table.num_rows

    def close_file(self) -> None:
        self._flush()
        if self.writer is None:
            return
        self.writer.close()
        url = storage.join(self.pdir, f"data_{self.k}.parquet")
        with storage.atomic_output(url, suffix=".parquet") as tmp:
            shutil.move(self.tmp, tmp)
            kill_point("repartition.file-staged")  # test hook: a kill here leaves a temp file at the destination
        self.written[url] = self.rows
        self.writer = None
        self.k += 1

    def cleanup(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # noqa: BLE001 - only after a failure; that error propagates
                pass
        shutil.rmtree(self.tmpdir, ignore_errors=True)


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
        pf = storage.open_parquet(url)
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
    return _norm(url)[len(base) + 1 :].replace("\\", "/")


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
    check_accounting(cs.accounting, output)  # never publish what does not add up
    body = {
        "format": SUCCESS_FORMAT,
        "cell_type": contract.HEX_CELL_TYPE,
        "id_column": cs.id_column,
        "features": cs.features_with_cells,
        "rows": sum(files.values()),
        "resolution": ref.get("resolution"),
        "parent_resolutions": ref.get("parent_resolutions"),
        "containment": ref.get("containment"),
        "partitions": len({_rel(output, u).split("/", 1)[0] for u in files}),
        "files": {_rel(output, u): int(n) for u, n in sorted(files.items(), key=lambda t: _rel(output, t[0]))},
        "source_rows": cs.source_rows,
        "source_footer_sha256": cs.source_digest,
        "accounting": cs.accounting,
        "chunks": {"count": len(cs.markers), "digest": cs.digest(), "markers": cs.marker_digests()},
    }
    storage.write_bytes(success_url(output), (json.dumps(body, indent=1, sort_keys=True) + "\n").encode())
    return body


def published_from(success: dict[str, Any], markers: list[dict[str, Any]]) -> bool:
    """Whether the published output (its ``_SUCCESS.json``) was made from these chunk markers.

    True when no marker is left (the chunks were deleted after publication) or when every marker
    present is one the success record lists with the same digest (all of them: ``--keep-chunks``,
    or a run killed while deleting the chunks). A marker it does not list (a chunk re-run on a
    changed source) means there is new work.
    """
    if not markers:
        return True
    recorded = (success.get("chunks") or {}).get("markers")
    if not isinstance(recorded, dict):
        return False
    return all(recorded.get(str(int(m["chunk_id"]))) == marker_digest(m) for m in markers)


def delete_chunks(chunks: str) -> int:
    """Delete the chunks below ``chunks``: every other file first, the markers ``_done/`` last.

    So a run killed half-way leaves markers that the published ``_SUCCESS.json`` lists, and the
    next run recognises the output as published and finishes the deletion.
    """
    base = _norm(chunks).rstrip("/\\")
    tops: dict[str, list[str]] = {}
    for url in storage.list_prefix(chunks):
        rel = _norm(url)[len(base) + 1 :].replace("\\", "/")
        tops.setdefault(rel.split("/", 1)[0], []).append(url)
    n = 0
    for top in sorted(set(tops) - {CHUNK_MARKER_DIR}) + ([CHUNK_MARKER_DIR] if CHUNK_MARKER_DIR in tops else []):
        urls = tops[top]
        if len(urls) == 1 and _rel(chunks, urls[0]) == top:  # a file right below the prefix
            storage.delete(urls[0])
        else:
            storage.delete_prefix(storage.join(chunks, top))
        n += len(urls)
        kill_point("repartition.chunks-deleting")  # test hook: a kill between two groups
    loc = storage.parse(chunks)
    if loc.is_local:
        _prune_empty_dirs(chunks)
        try:
            os.rmdir(loc.path)
        except OSError:
            pass
    return n


def _output_damage(output: str, success: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Files ``_SUCCESS.json`` lists that are missing, and ``.parquet`` files it does not list."""
    present = {_rel(output, u) for u in storage.list_prefix(output)}
    listed = set(success["files"])
    missing = sorted(listed - present)
    extra = sorted(p for p in present - listed if p.endswith(".parquet"))
    return missing, extra


def _already_published(
    chunks: str, output: str, source: str, success: dict[str, Any], markers: list[dict[str, Any]], delete: bool
) -> dict[str, Any]:
    """The no-op of a repartition run again after it finished (see the module docstring)."""
    recorded = success.get("source_footer_sha256")
    if recorded is not None and recorded != footer_digest(source):
        raise IncompleteOutputError(
            f"{output}: published from another version of {source} (its Parquet footer differs): "
            "run hex and repartition again"
        )
    n = delete_chunks(chunks) if delete and markers else 0
    leftovers = 0 if markers else len(storage.list_prefix(chunks))
    log.info(
        "%s: already published (%s made from these chunks%s): nothing to do%s",
        output,
        SUCCESS_NAME,
        "" if markers else ", which are deleted",
        f"; deleted the {n} remaining chunk file(s)" if n else "",
    )
    if leftovers:
        log.warning("%s: %d file(s) without a completion marker left alone (a hex run in progress?)", chunks, leftovers)
    return {
        "partitions": success.get("partitions"),
        "rows": success.get("rows"),
        "features": success.get("features"),
        "files": len(success["files"]),
        "skipped": True,
    }


def _check_parts_present(chunks: str, cs: ChunkSet, h0s: set[int] | None = None) -> None:
    """Every part the markers list (of the partitions ``h0s``, default all) exists: one listing
    (of the partitions' own prefixes only, for an ``--h0-index`` run)."""
    prefixes = [chunks] if h0s is None else [storage.join(chunks, f"h0={h0}") for h0 in sorted(h0s)]
    present = {_norm(u) for p in prefixes for u in storage.list_prefix(p)}
    for h0, parts in sorted(cs.partitions.items()):
        if h0s is not None and h0 not in h0s:
            continue
        for chunk_id, rel, _rows in parts:
            url = storage.join(chunks, rel)
            if _norm(url) not in present:
                raise IncompleteOutputError(f"chunk {chunk_id}: part {url} listed in its marker is missing")


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
    markers = read_markers(chunks)
    done = _if_published(chunks, output, source, markers, delete=h0_index is None and not keep_chunks)
    if done is not None:
        return done
    cs = check_chunks(chunks, source, markers)
    _check_parts_present(chunks, cs, None if h0_index is None else {cells[h0_index]})
    # there is new work to publish: un-publish, from here until the marker is written again the
    # output is not complete
    storage.delete(success_url(output))
    prov = _provenance(source, cs)
    if h0_index is not None:
        return _one_partition(chunks, output, cs, (h0_index, cells[h0_index]), prov, t0)

    files: dict[str, int] = {}
    problems: list[str] = []
    if finalize:
        files = _read_partition_manifests(output, cs, problems)
    else:
        for i, (h0, parts) in enumerate(sorted(cs.partitions.items())):
            written = write_partition(chunks, output, h0, parts, cs.cell_columns, prov)
            files.update({_norm(u): n for u, n in written.items()})
            log.info("partition %d/%d h0=%d: %d rows", i + 1, len(cs.partitions), h0, sum(written.values()))
    present = {_norm(u) for u in storage.list_prefix(output)}
    kept = _check_written(output, cs, files, present, finalize, problems)
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
        n = delete_chunks(chunks)
        log.info("completeness check passed; deleted %d chunk file(s) below %s", n, chunks)
    total = sum(n for parts in cs.partitions.values() for _, _, n in parts)
    log.info(
        "repartition: %d rows in %d partitions, %d features (%s), %.1f s",
        total,
        len(cs.partitions),
        cs.features_with_cells,
        _accounting_text(cs.accounting),
        time.monotonic() - t0,
    )
    return {
        "partitions": len(cs.partitions),
        "rows": total,
        "features": cs.features_with_cells,
        "files": len(kept),
        "accounting": cs.accounting,
    }


def _provenance(source: str, cs: ChunkSet) -> bytes:
    """The hex files' provenance: the cell settings and the record of the GeoParquet they index
    (no time or command line of their own: the same chunks give the same bytes)."""
    src = storage.open_parquet(source)
    ref = cs.markers[0]
    rec = provenance.record(
        "repartition",
        timed=False,
        resolution=ref.get("resolution"),
        parent_resolutions=ref.get("parent_resolutions"),
        containment=ref.get("containment"),
        source={"footer_sha256": cs.source_digest, "provenance": provenance.of_parquet(src.metadata.metadata)},
    )
    return provenance.encode(rec)


def _if_published(
    chunks: str, output: str, source: str, markers: list[dict[str, Any]], delete: bool
) -> dict[str, Any] | None:
    """The summary of an output these chunks were already published to (a re-run is a no-op;
    ``delete``: finish deleting the chunks); None when there is work to do."""
    success = read_success(output)
    if success is None or not published_from(success, markers):
        return None
    missing, extra = _output_damage(output, success)
    if not missing and not (extra and markers):
        if extra:
            log.warning(
                "%s: %d .parquet file(s) not listed in %s (not part of the output; first: %s)",
                output,
                len(extra),
                SUCCESS_NAME,
                extra[0],
            )
        # only the process that publishes deletes chunks: not an --h0-index one
        return _already_published(chunks, output, source, success, markers, delete=delete)
    what = (
        f"{len(missing)} file(s) it lists are missing (first: {missing[0]})"
        if missing
        else (f"{len(extra)} .parquet file(s) it does not list are present (first: {extra[0]})")
    )
    if not markers:
        raise IncompleteOutputError(
            f"{output}: published, but {what}; the chunks are gone: run hex and repartition again"
        )
    log.warning("%s: published, but %s: writing it again from the chunks", output, what)
    return None


def _one_partition(
    chunks: str, output: str, cs: ChunkSet, index: tuple[int, int], prov: bytes, t0: float
) -> dict[str, Any]:
    """``--h0-index``: write the partition of one base cell and its manifest for ``--finalize``."""
    h0_index, h0 = index
    parts = cs.partitions.get(h0, [])
    written = write_partition(chunks, output, h0, parts, cs.cell_columns, prov) if parts else {}
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


def _check_written(
    output: str, cs: ChunkSet, files: dict[str, int], present: set[str], finalize: bool, problems: list[str]
) -> list[str]:
    """Check the whole output against the markers: every file exists with its row count, and the
    partitions hold what the chunks hold. Returns the output's data files; raises
    :class:`IncompleteOutputError` listing every problem (``problems`` may hold earlier ones)."""
    expected_rows = {h0: sum(n for _, _, n in parts) for h0, parts in cs.partitions.items()}
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
            got = storage.open_parquet(url).metadata.num_rows
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
    return sorted(u for urls in by_part.values() for u in urls)


def _accounting_text(acc: dict[str, Any]) -> str:
    dropped = ", ".join(f"{v} {k}" for k, v in sorted(acc["dropped"].items()))
    return f"{acc['read']} read, {acc['written']} with cells" + (f", dropped: {dropped}" if dropped else "")

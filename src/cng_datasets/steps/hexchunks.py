"""The hex chunk set: reading the chunk markers and deciding whether they are complete.

Completeness is decided from the row ranges the markers record, not from how the chunks were
called (``--chunk-count``, ``--last-chunk`` or seed-style ``--chunk-id`` / ``--chunk-size`` only):

- every marker was made from the source given (its row count ``N`` and, for markers that record it,
  the digest of its Parquet footer), with the same H3 settings (resolution, parents, containment,
  id column);
- the markers' ``[start_row, end_row)`` ranges, empty ones left out, are disjoint (an overlap would
  put the features in it twice: chunks of two different ``--chunk-size`` runs) and their union is
  exactly ``[0, N)`` (a gap names the rows it leaves out and, when the chunk size is known, the
  chunks that would cover them);
- each marker's accounting holds (``read − Σ dropped == written``), the sums hold, and the null
  geometries the chunks dropped equal the source's own count (its ``cng_datasets`` metadata or the
  Parquet statistics);
- chunks that share a row chunk (``hex --shares P``) are all there (ids ``r·P .. r·P+P−1``, one
  ``--shares``), each counts only the rows it owns, and every feature split among them got at
  least one cell from them all.

:func:`check_chunks` raises :class:`~cng_datasets.errors.IncompleteOutputError` naming every
problem; it never writes or deletes anything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cng_datasets import contract, storage
from cng_datasets.contract import CHUNK_MARKER_DIR, CHUNK_MARKER_RE, ID_COLUMN
from cng_datasets.errors import IncompleteOutputError
from cng_datasets.steps.hex import (
    EMPTY_GEOMETRY,
    NULL_GEOMETRY,
    check_accounting,
    footer_digest,
    owned_rows,
    part_seq,
    source_info,
)

#: Settings every chunk of one set must share.
SHARED_KEYS = ("resolution", "parent_resolutions", "containment", "id_column")
_REQUIRED = ("chunk_id", "start_row", "end_row", "source_rows", "parts", *SHARED_KEYS)


def marker_digest(marker: dict[str, Any]) -> str:
    """A digest of one chunk marker (its canonical JSON): equal markers, equal chunk output."""
    body = json.dumps(marker, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(body).hexdigest()[:32]


def marker_accounting(marker: dict[str, Any]) -> dict[str, Any]:
    """The marker's accounting; derived from its counts for markers written before it existed."""
    acc = marker.get("accounting")
    if isinstance(acc, dict):
        return acc
    dropped = {
        NULL_GEOMETRY: int(marker.get("null_geometries", 0)),
        EMPTY_GEOMETRY: int(marker.get("empty_geometries", 0)),
    }
    return {
        "unit": "features",
        "read": int(marker["end_row"]) - int(marker["start_row"]),
        "written": int(marker.get("features_with_cells", 0)),
        "dropped": {k: v for k, v in dropped.items() if v},
    }


@dataclass
class ChunkSet:
    """The markers of a complete chunk set and what they promise."""

    markers: list[dict[str, Any]]
    partitions: dict[int, list[tuple[int, str, int]]] = field(default_factory=dict)  # h0 -> [(chunk, rel, rows)]
    id_column: str = ID_COLUMN
    features_with_cells: int = 0
    source_rows: int = 0
    accounting: dict[str, Any] = field(default_factory=dict)
    source_digest: str = ""

    @property
    def cell_columns(self) -> list[str]:
        """The chunks' cell columns (``h<res>``, parents, ``h0``), from the markers."""
        ref = self.markers[0]
        return contract.hex_cell_columns(int(ref["resolution"]), [int(p) for p in ref["parent_resolutions"]])

    def digest(self) -> str:
        """Identifies this chunk set: the same for every process of one parallel repartition."""
        body = json.dumps(self.markers, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(body).hexdigest()[:32]

    def marker_digests(self) -> dict[str, str]:
        """``{chunk id: digest of its marker}``, recorded in ``_SUCCESS.json``."""
        return {str(int(m["chunk_id"])): marker_digest(m) for m in self.markers}


def read_markers(chunks: str) -> list[dict[str, Any]]:
    """Every chunk marker below ``<chunks>/_done/`` (exact names only), by chunk id."""
    out = []
    for url in storage.list_prefix(storage.join(chunks, CHUNK_MARKER_DIR)):
        m = CHUNK_MARKER_RE.match(storage.parse(url).name)
        if not m:
            continue
        try:
            data = json.loads(storage.read_bytes(url))
        except ValueError as exc:
            raise IncompleteOutputError(f"{url}: unreadable chunk marker ({exc})") from exc
        if not isinstance(data, dict) or any(k not in data for k in _REQUIRED):
            missing = [k for k in _REQUIRED if not isinstance(data, dict) or k not in data]
            raise IncompleteOutputError(f"{url}: not a chunk marker (no {', '.join(missing)})")
        if int(data["chunk_id"]) != int(m.group(1)):
            raise IncompleteOutputError(f"{url}: holds the marker of chunk {data['chunk_id']}")
        out.append(data)
    return sorted(out, key=lambda d: int(d["chunk_id"]))


def _source_null_count(pf: Any, geometry_column: str, meta: dict[str, Any]) -> int | None:
    """Null geometries of the source: metadata, else Parquet statistics, else None."""
    if "null_geometries" in meta:
        return int(meta["null_geometries"])
    md = pf.metadata
    idx = pf.schema_arrow.names.index(geometry_column)
    total = 0
    for rg in range(md.num_row_groups):
        st = md.row_group(rg).column(idx).statistics
        if st is None or st.null_count is None:
            return None
        total += st.null_count
    return total


def _rows(a: int, b: int) -> str:
    return f"row {a}" if b - a == 1 else f"rows {a}..{b - 1}"


def _chunk_names(ids: list[int]) -> str:
    names = ", ".join(f"chunk {i} ({CHUNK_MARKER_DIR}/chunk-{i:05d}.json)" for i in ids[:10])
    return names + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")


def owned_span(marker: dict[str, Any]) -> tuple[int, int]:
    """The rows a chunk read and accounted for: its row chunk, or its slice of it when shared."""
    return owned_rows(
        int(marker["start_row"]), int(marker["end_row"]), int(marker.get("share", 0)), int(marker.get("shares", 1))
    )


def _chunks_of(a: int, b: int, size: int, shares: int) -> list[int]:
    """The chunk ids of the row chunks of ``size`` rows that meet ``[a, b)``, each with its
    ``shares`` (``hex --shares``)."""
    return [r * shares + k for r in range(a // size, (b - 1) // size + 1) for k in range(shares)]


def _row_chunks(markers: list[dict[str, Any]]) -> tuple[list[tuple[int, int, int]], list[str]]:
    """The row-chunk spans ``(start, end, chunk id)`` of the markers — the shares of one row chunk
    (``hex --shares``) make one span — and what is wrong with shared row chunks: a share missing
    (every share computes tiles of the big features of the whole row chunk, even a share that owns
    no row), shares of different ``--shares``, or chunk ids that are not those of their shares."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for m in markers:
        groups.setdefault((int(m["start_row"]), int(m["end_row"])), []).append(m)
    spans: list[tuple[int, int, int]] = []
    problems: list[str] = []
    for (s, e), group in sorted(groups.items()):
        ids = sorted(int(m["chunk_id"]) for m in group)
        counts = sorted({int(m.get("shares", 1)) for m in group})
        if len(counts) > 1:
            problems.append(
                f"chunks {', '.join(map(str, ids))} cover {_rows(s, e)} with different --shares "
                f"({', '.join(map(str, counts))}: chunks of two runs in one prefix?); "
                "run hex again into an empty prefix"
            )
            spans.extend([(s, e, ids[0])] if e > s else [])  # its rows are not a gap as well
            continue
        shares = counts[0]
        if shares == 1:
            spans.extend((s, e, i) for i in ids if e > s)  # two of them: an overlap, reported with the others
            continue
        if e <= s:
            continue
        first = ids[0] // shares
        if any(int(m["chunk_id"]) != first * shares + int(m.get("share", 0)) for m in group):
            problems.append(
                f"chunks {', '.join(map(str, ids))} cover {_rows(s, e)} but are not the {shares} shares of one row "
                "chunk (chunks of two runs in one prefix?); run hex again into an empty prefix"
            )
            spans.append((s, e, ids[0]))
            continue
        missing = sorted(set(range(shares)) - {int(m.get("share", 0)) for m in group})
        if missing:
            problems.append(
                f"missing {len(missing)} hex chunk(s): {_chunk_names([first * shares + k for k in missing])} "
                f"(of the {shares} that share {_rows(s, e)})"
            )
        spans.append((s, e, first * shares))
    return spans, problems


def coverage_problems(markers: list[dict[str, Any]], rows: int) -> list[str]:
    """Gaps and overlaps of the markers' row chunks against ``[0, rows)``, and missing shares."""
    spans, problems = _row_chunks(markers)
    spans.sort()
    sizes = {int(m["chunk_size"]) for m in markers if m.get("chunk_size")}
    size = sizes.pop() if len(sizes) == 1 else None
    counts = {int(m.get("shares", 1)) for m in markers}
    shares = counts.pop() if len(counts) == 1 else 1
    gaps: list[tuple[int, int]] = []
    overlaps: list[str] = []
    pos, owner = 0, -1
    for s, e, cid in spans:
        if s < 0 or e > rows:
            problems.append(f"chunk {cid} covers {_rows(s, e)}, outside the source's rows 0..{rows - 1}")
        if s > pos:
            gaps.append((pos, s))
        elif s < pos:
            a, b = sorted((owner, cid))
            overlaps.append(f"chunks {a} and {b} both cover {_rows(s, min(pos, e))}")
        if e > pos:
            pos, owner = e, cid
    if pos < rows:
        gaps.append((pos, rows))
    if overlaps:
        problems.append(
            "; ".join(overlaps) + " (their features would be duplicated: chunks of two runs with different "
            "--chunk-size in one prefix?); run hex again into an empty prefix"
        )
    for a, b in gaps:
        text = f"source {_rows(a, b)} are in no chunk"
        if size:
            ids = _chunks_of(a, b, size, shares)
            text = f"missing {len(ids)} hex chunk(s): {_chunk_names(ids)} ({text})"
        problems.append(text)
    return problems


def check_chunks(chunks: str, source: str, markers: list[dict[str, Any]] | None = None) -> ChunkSet:
    """Completeness of the chunk set against the source (see module docstring)."""
    if markers is None:
        markers = read_markers(chunks)
    if not markers:
        raise IncompleteOutputError(f"{chunks}: no completed hex chunks (no markers in {CHUNK_MARKER_DIR}/)")
    pf = storage.open_parquet(source)
    info = source_info(pf, source)
    rows = info.num_rows
    problems: list[str] = []
    ref = markers[0]
    for m in markers[1:]:
        for k in SHARED_KEYS:
            if m.get(k) != ref.get(k):
                problems.append(
                    f"chunk {m['chunk_id']} has {k}={m.get(k)!r} but chunk {ref['chunk_id']} has {ref.get(k)!r}"
                )
                break
    digest = footer_digest(source)
    for m in markers:
        if int(m["source_rows"]) != rows:
            problems.append(
                f"chunk {m['chunk_id']} was made from a source of {m['source_rows']} rows, {source} has {rows}"
            )
        elif m.get("source_footer_sha256", digest) != digest:
            problems.append(
                f"chunk {m['chunk_id']} was made from another version of {source} (its Parquet footer differs)"
            )
    if not problems:
        problems = coverage_problems(markers, rows)
    if problems:
        raise IncompleteOutputError(f"{chunks}: incomplete hex chunks: " + "; ".join(problems))

    total: dict[str, Any] = {"unit": "features", "read": 0, "written": 0, "dropped": {}}
    for m in markers:
        acc = marker_accounting(m)
        check_accounting(acc, f"{chunks}: chunk {m['chunk_id']}")
        lo, hi = owned_span(m)
        if int(acc["read"]) != hi - lo:
            raise IncompleteOutputError(
                f"{chunks}: chunk {m['chunk_id']} read {acc['read']} features of its {_rows(lo, hi)}"
            )
        total["read"] += int(acc["read"])
        total["written"] += int(acc["written"])
        for k, v in acc["dropped"].items():
            total["dropped"][k] = total["dropped"].get(k, 0) + int(v)
    total["dropped"] = dict(sorted(total["dropped"].items()))
    check_accounting(total, f"{chunks}: all chunks")
    if total["read"] != rows:
        raise IncompleteOutputError(f"{chunks}: the chunks read {total['read']} of {rows} source features")
    split: dict[int, int] = {}
    for m in markers:
        for row, n in (m.get("split_cells") or {}).items():
            split[int(row)] = split.get(int(row), 0) + int(n)
    without = sorted(r for r, n in split.items() if n == 0)
    if without:  # a feature split among shares is never given a fallback cell: it must have one
        raise IncompleteOutputError(
            f"{chunks}: the feature(s) of source row(s) {', '.join(map(str, without[:10]))} got no H3 cell "
            "from any of the chunks that shared their work"
        )
    nulls = int(total["dropped"].get(NULL_GEOMETRY, 0))
    src_nulls = _source_null_count(pf, info.geometry_column, info.metadata)
    if src_nulls is not None and src_nulls != nulls:
        raise IncompleteOutputError(f"{chunks}: {source} has {src_nulls} null geometries but the chunks saw {nulls}")
    if info.id_column != ref["id_column"]:
        raise IncompleteOutputError(
            f"{chunks}: the chunks' id column is {ref['id_column']!r}, {source}'s is {info.id_column!r}"
        )

    cs = ChunkSet(
        markers,
        id_column=info.id_column,
        features_with_cells=total["written"],
        source_rows=rows,
        accounting=total,
        source_digest=digest,
    )
    start = {int(m["chunk_id"]): int(m["start_row"]) for m in markers}
    for m in markers:
        for rel, n in sorted(m["parts"].items()):
            h0 = int(rel.split("/", 1)[0].split("=", 1)[1])
            cs.partitions.setdefault(h0, []).append((int(m["chunk_id"]), rel, int(n)))
    for parts in cs.partitions.values():
        # source row order (then a chunk's files in the order written): the output stays id-ordered,
        # except where several chunks share a row chunk of several features (hex --shares)
        parts.sort(key=lambda t: (start[t[0]], t[0], part_seq(t[1])))
    return cs

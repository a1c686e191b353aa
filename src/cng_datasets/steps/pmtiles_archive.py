"""What the ``pmtiles`` step checks and counts in the archive tippecanoe wrote, and the record it adds.

- :func:`verify_archive`: the archive is PMTiles v3 with MVT tiles, bounds and layer fields right.
- :func:`account_archive`: the accounting (read, written, dropped with reasons), recorded in the
  archive's metadata under ``cng_datasets``.
- :func:`count_features_at_zoom`: the distinct feature ids in the tiles of one zoom (the maximum),
  i.e. how many features the archive really holds. Tiles are read one by one through the archive's
  directories; ids go into a boolean array over the known id range (one byte per feature, never a
  Python set), so memory follows the GeoParquet's row count, not the tile count.
- :func:`set_metadata`: rewrite the archive's JSON metadata (the ``cng_datasets`` record) without
  touching the tiles: header, root directory, new metadata, then the leaf directories and tile data
  copied as byte ranges (their offsets are relative to their own section, so they stay valid).

MVT decoding here reads only what is needed (layer name, feature id) and skips the rest by length;
``cng-datasets validate`` counts with a different decoder (the protobuf classes of
``mapbox-vector-tile``), so a bug here cannot hide itself.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import mmap
import os
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cng_datasets import __version__, storage
from cng_datasets.accounting import (
    PMTILES_KEY,
    REASON_EMPTY,
    REASON_LATITUDE,
    REASON_NULL,
    REASON_TIPPECANOE,
    WEB_MERCATOR_MAX_LAT,
    balance_problem,
    make_record,
    parse_accounting,
)
from cng_datasets.contract import PROVENANCE_KEY
from cng_datasets.errors import IncompleteOutputError, ToolError

log = logging.getLogger("cng_datasets")

#: Distinct tile contents whose ids are remembered, so a repeated tile (ocean, a polygon's
#: interior) is decoded once.
_CONTENT_CACHE = 4096
#: Feature ids collected before they are added to a DistinctIds.
_ID_BATCH = 1 << 16
#: Id ranges up to this size are counted with one byte per possible id.
DENSE_LIMIT = 1 << 24
#: Sparse ids are compacted (sorted, deduplicated) when this many are pending.
SPARSE_COMPACT = 1 << 22


# --------------------------------------------------------------------------------------------
# Minimal MVT (protobuf) reading: Tile.layers = 3; Layer.name = 1, Layer.features = 2;
# Feature.id = 1 (uint64 varint).


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _skip(buf: bytes, pos: int, wire: int) -> int:
    if wire == 0:
        return _varint(buf, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 2:
        length, pos = _varint(buf, pos)
        return pos + length
    if wire == 5:
        return pos + 4
    raise ValueError(f"unsupported protobuf wire type {wire}")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, value or offset, end) of each field in ``buf[start:end]``;
    for wire type 2 the third item is the payload's start and the fourth its end."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
            yield field, wire, value, pos
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("field runs past its message")
            yield field, wire, pos, pos + length
            pos += length
        else:
            pos = _skip(buf, pos, wire)
    if pos != end:
        raise ValueError("message does not end at its length")


def _layer_parts(buf: bytes, start: int, end: int) -> tuple[str | None, list[tuple[int, int]]]:
    """The name and the feature spans of one Layer message; every other field is skipped by its
    length (a tile has thousands of keys and values: this loop is the hot path)."""
    name = None
    features: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 2:
            length = buf[pos]
            if length < 0x80:
                pos += 1
            else:
                length, pos = _varint(buf, pos)
            if key == 0x12:  # field 2, features
                features.append((pos, pos + length))
            elif key == 0x0A:  # field 1, name
                name = buf[pos : pos + length].decode("utf-8", "replace")
            pos += length
        else:
            pos = _skip(buf, pos, wire)
    if pos != end:
        raise ValueError("layer does not end at its length")
    return name, features


def _feature_id(buf: bytes, start: int, end: int) -> int | None:
    """The id (field 1, a varint) of the Feature message ``buf[start:end]``; the fields before it
    (tippecanoe writes type and tags first) are skipped by their length."""
    pos = start
    while pos < end:
        key = buf[pos]
        if key >= 0x80:  # a field number past 15: not one of Feature's
            key, pos = _varint(buf, pos)
        else:
            pos += 1
        if key == 0x08:
            return _varint(buf, pos)[0]
        if key & 7 == 2:
            length, pos = _varint(buf, pos)
            pos += length
        else:
            pos = _skip(buf, pos, key & 7)
    if pos != end:
        raise ValueError("feature does not end at its length")
    return None


def mvt_feature_ids(data: bytes, layer: str | None = None) -> tuple[list[int], int]:
    """The feature ids in an (uncompressed) MVT tile, in layer ``layer`` (all layers when None),
    and how many features there have no id."""
    ids: list[int] = []
    missing = 0
    for field, wire, start, end in _fields(data, 0, len(data)):
        if field != 3 or wire != 2:
            continue
        name, features = _layer_parts(data, start, end)
        if layer is not None and name != layer:
            continue
        for s2, e2 in features:
            fid = _feature_id(data, s2, e2)
            if fid is None:
                missing += 1
            else:
                ids.append(fid)
    return ids, missing


# --------------------------------------------------------------------------------------------
# Walking the archive


def _decompress(data: bytes, compression: Any) -> bytes:
    from pmtiles.tile import Compression

    if compression == Compression.GZIP:
        return zlib.decompress(data, 31)  # a gzip member (gzip.decompress parses its header in Python)
    if compression in (Compression.NONE, Compression.UNKNOWN):
        return data
    raise ValueError(f"unsupported compression {compression.name}")


def _first_tile_id(z: int) -> int:
    """Tile ids of zoom ``z`` start here (PMTiles: all tiles of lower zooms come first)."""
    return ((1 << (2 * z)) - 1) // 3


def _varints(data: bytes) -> np.ndarray:
    """Every unsigned LEB128 varint of ``data``, decoded at once (a directory holds thousands)."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf < 0x80)
    if not len(buf):
        return np.zeros(0, np.uint64)
    if not len(ends) or ends[-1] != len(buf) - 1:
        raise ValueError("directory ends inside a varint")
    starts = np.r_[0, ends[:-1] + 1]
    if len(ends) and int((ends - starts).max()) > 9:
        raise ValueError("varint longer than 10 bytes")
    shift = 7 * (np.arange(len(buf)) - np.repeat(starts, ends - starts + 1))
    bits = (buf & 0x7F).astype(np.uint64) << shift.astype(np.uint64)
    return np.add.reduceat(bits, starts)  # the bits of one varint are disjoint: their sum is their OR


def directory_entries(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A PMTiles v3 directory (gzip-compressed, as the ``pmtiles`` library writes and reads it) as
    arrays: tile ids, run lengths, lengths, offsets — what ``pmtiles.tile.deserialize_directory``
    returns, without a Python object per entry."""
    v = _varints(zlib.decompress(data, 31)).astype(np.int64)
    n = int(v[0]) if len(v) else 0
    if len(v) != 1 + 4 * n:
        raise ValueError(f"directory of {n} entries holds {len(v) - 1} values")
    tile_ids = np.cumsum(v[1 : 1 + n])
    run_lengths, lengths, raw = v[1 + n : 1 + 2 * n], v[1 + 2 * n : 1 + 3 * n], v[1 + 3 * n :]
    # offset 0 (after the first entry): right after the entry before; else the value − 1
    explicit = (raw != 0) | (np.arange(n) == 0)
    last = np.maximum.accumulate(np.where(explicit, np.arange(n), 0))
    before = np.r_[0, np.cumsum(lengths)[:-1]]  # bytes of the entries before each one
    offsets = (raw - 1)[last] + before - before[last]
    return tile_ids, run_lengths, lengths, offsets


def tiles_at_zoom(
    get_bytes: Callable[[int, int], bytes], header: dict[str, Any], zoom: int
) -> Iterator[tuple[int, int]]:
    """(offset, length) in the file of every tile content addressed at ``zoom`` (each run once)."""
    lo, hi = _first_tile_id(zoom), _first_tile_id(zoom + 1)
    stack = [(header["root_offset"], header["root_length"])]
    while stack:
        off, length = stack.pop()
        ids, runs, lengths, offsets = directory_entries(get_bytes(off, length))
        leaf = runs == 0
        following = np.r_[ids[1:], np.iinfo(np.int64).max]
        # a leaf may hold tiles of this zoom; a run of tiles that meets the zoom's ids is one content
        wanted_leaves = leaf & (ids < hi) & (following > lo)
        for i in np.flatnonzero(wanted_leaves)[::-1].tolist():  # popped in file order
            stack.append((header["leaf_directory_offset"] + int(offsets[i]), int(lengths[i])))
        tiles = ~leaf & (ids < hi) & (ids + runs > lo)
        base = header["tile_data_offset"]
        yield from zip((offsets[tiles] + base).tolist(), lengths[tiles].tolist(), strict=True)


class DistinctIds:
    """Distinct non-negative integer ids, expected within ``[low, high]``.

    Dense ranges (``high - low`` up to :data:`DENSE_LIMIT` or four times ``rows``) use one byte
    per possible id; sparse ones keep sorted unique uint64 arrays, compacted as they grow.
    """

    def __init__(self, low: int, high: int, rows: int = 0) -> None:
        self.low, self.high = low, high
        self.dense = high - low + 1 <= max(DENSE_LIMIT, 4 * rows)
        self.seen = np.zeros(max(0, high - low + 1) if self.dense else 0, dtype=bool)
        self._parts: list[np.ndarray] = []
        self._pending = 0
        self._outside: np.ndarray = np.zeros(0, np.uint64)  # distinct ids outside [low, high]

    def add(self, ids: Any) -> None:
        arr = np.asarray(ids, dtype=np.uint64)
        if not len(arr):
            return
        inside = (arr >= np.uint64(self.low)) & (arr <= np.uint64(self.high))
        if not inside.all():  # an anomaly: kept exactly (few)
            self._outside = np.union1d(self._outside, arr[~inside])
        arr = arr[inside]
        if self.dense:
            self.seen[(arr - np.uint64(self.low)).astype(np.int64)] = True
            return
        self._parts.append(arr)
        self._pending += len(arr)
        if self._pending > SPARSE_COMPACT:
            self._compact()

    def _compact(self) -> np.ndarray:
        merged = np.unique(np.concatenate(self._parts)) if self._parts else np.zeros(0, np.uint64)
        self._parts = [merged]
        self._pending = 0
        return merged

    def values(self) -> np.ndarray:
        """The distinct ids, sorted."""
        if self.dense:
            return np.flatnonzero(self.seen).astype(np.uint64) + np.uint64(self.low)
        return self._compact()

    @property
    def outside(self) -> int:
        """Distinct ids seen outside ``[low, high]``."""
        return len(self._outside)

    @property
    def outside_examples(self) -> list[int]:
        return [int(v) for v in self._outside[:5]]

    @property
    def count(self) -> int:
        return int(self.seen.sum()) if self.dense else len(self._compact())

    def not_in(self, other: DistinctIds) -> int:
        """How many of these ids ``other`` does not hold."""
        if self.dense and other.dense and (self.low, self.high) == (other.low, other.high):
            return int((self.seen & ~other.seen).sum())
        return int((~np.isin(self.values(), other.values(), assume_unique=True)).sum())


@dataclass
class ZoomCount:
    """What :func:`count_features_at_zoom` found."""

    zoom: int
    features: int  # distinct ids within the id range
    outside: int  # distinct ids outside the id range
    without_id: int  # feature occurrences without an id
    tiles: int  # tile contents decoded


def count_features_at_zoom(path: str | os.PathLike[str], layer: str, zoom: int, counter: DistinctIds) -> ZoomCount:
    """Add the feature ids of ``layer`` in the tiles of ``zoom`` of the local archive ``path`` to
    ``counter``; return what was found."""
    from pmtiles.tile import deserialize_header

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:

        def get_bytes(offset: int, length: int) -> bytes:
            return mm[offset : offset + length]

        header = dict(deserialize_header(get_bytes(0, 127)))
        compression = header["tile_compression"]
        without = 0
        decoded = 0
        recent: OrderedDict[tuple[int, int], None] = OrderedDict()
        pending: list[int] = []  # ids added to the counter in batches (one numpy call per tile costs)
        for key in tiles_at_zoom(get_bytes, header, zoom):
            if key in recent:  # the same content again: its ids are counted already
                recent.move_to_end(key)
                continue
            recent[key] = None
            if len(recent) > _CONTENT_CACHE:
                recent.popitem(last=False)
            ids, missing = mvt_feature_ids(_decompress(get_bytes(*key), compression), layer)
            pending += ids
            if len(pending) >= _ID_BATCH:
                counter.add(pending)
                pending = []
            without += missing
            decoded += 1
        counter.add(pending)
    return ZoomCount(zoom, counter.count, counter.outside, without, decoded)


# --------------------------------------------------------------------------------------------
# Rewriting the metadata


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON metadata of the local archive ``path``."""
    from pmtiles.tile import deserialize_header

    with open(path, "rb") as fh:
        header = deserialize_header(fh.read(127))
        fh.seek(header["metadata_offset"])
        raw = fh.read(header["metadata_length"])
    return dict(json.loads(_decompress(raw, header["internal_compression"])))


def _copy_range(src: Any, dst: Any, offset: int, length: int) -> None:
    src.seek(offset)
    left = length
    while left > 0:
        block = src.read(min(left, 1 << 20))
        if not block:
            raise ValueError(f"archive ends inside the section at byte {offset}")
        dst.write(block)
        left -= len(block)


def set_metadata(path: str | os.PathLike[str], updates: dict[str, Any]) -> None:
    """Merge ``updates`` into the JSON metadata of the local archive ``path`` (replaced in place;
    written to a sibling temporary file first)."""
    from pmtiles.tile import Compression, deserialize_header, serialize_header

    path = Path(path)
    with storage.atomic_output(str(path)) as out:
        with open(path, "rb") as src:
            header = deserialize_header(src.read(127))
            src.seek(header["metadata_offset"])
            meta = json.loads(_decompress(src.read(header["metadata_length"]), header["internal_compression"]))
            meta.update(updates)
            body = json.dumps(meta, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            if header["internal_compression"] == Compression.GZIP:
                body = gzip.compress(body, mtime=0)
            elif header["internal_compression"] not in (Compression.NONE, Compression.UNKNOWN):
                raise ValueError(f"unsupported metadata compression {header['internal_compression'].name}")
            new = header.copy()
            new["root_offset"] = 127
            new["metadata_offset"] = 127 + header["root_length"]
            new["metadata_length"] = len(body)
            new["leaf_directory_offset"] = new["metadata_offset"] + len(body)
            new["tile_data_offset"] = new["leaf_directory_offset"] + header["leaf_directory_length"]
            with open(out, "wb") as dst:
                dst.write(serialize_header(new))
                _copy_range(src, dst, header["root_offset"], header["root_length"])
                dst.write(body)
                _copy_range(src, dst, header["leaf_directory_offset"], header["leaf_directory_length"])
                _copy_range(src, dst, header["tile_data_offset"], header["tile_data_length"])


# --------------------------------------------------------------------------------------------
# Verification and accounting (called by the step on tippecanoe's output)


def verify_archive(
    path: str | os.PathLike[str],
    layer: str,
    fields: Sequence[str] = (),
    data_bounds: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Check a PMTiles archive; return its header. Raises :class:`ToolError` when it is wrong.

    Checked: spec version 3, tile type MVT, addressed tiles > 0, bounds inside the world and
    consistent with ``data_bounds`` (lon/lat), metadata ``vector_layers`` holding ``layer`` with
    every name of ``fields``.
    """
    from pmtiles.reader import MmapSource, Reader
    from pmtiles.tile import TileType

    def bad(problem: str) -> ToolError:
        return ToolError("tippecanoe", f"the archive it wrote is invalid: {problem}")

    try:
        with open(path, "rb") as fh:
            reader = Reader(MmapSource(fh))
            header = reader.header()
            metadata = reader.metadata()
    except Exception as exc:  # magic number / spec version / truncated file / bad JSON
        raise bad(f"cannot read it as PMTiles v3 ({type(exc).__name__}: {exc})") from exc
    if header["version"] != 3:
        raise bad(f"spec version {header['version']}, expected 3")
    if header["tile_type"] != TileType.MVT:
        raise bad(f"tile type {header['tile_type'].name}, expected MVT")
    if header["addressed_tiles_count"] <= 0:
        raise bad("no tiles")
    west, south = header["min_lon_e7"] / 1e7, header["min_lat_e7"] / 1e7
    east, north = header["max_lon_e7"] / 1e7, header["max_lat_e7"] / 1e7
    if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
        raise bad(f"bounds {west}, {south}, {east}, {north} are not inside the world")
    if data_bounds is not None and all(math.isfinite(v) for v in data_bounds):
        # tippecanoe quantises coordinates to its 32-bit world grid and clamps latitude to
        # Web Mercator (±85.0511); allow for both.
        tol = 1e-3
        dw, ds, de, dn = data_bounds
        ds, dn = max(ds, -85.0511287798), min(dn, 85.0511287798)
        if west < dw - tol or east > de + tol or south < ds - tol or north > dn + tol:
            raise bad(f"bounds {west}, {south}, {east}, {north} exceed the data's {dw}, {ds}, {de}, {dn}")
        if west > dw + 1 or east < de - 1 or (dn > ds and (south > ds + 1 or north < dn - 1)):
            raise bad(f"bounds {west}, {south}, {east}, {north} do not cover the data's {dw}, {ds}, {de}, {dn}")
    layers = metadata.get("vector_layers")
    if isinstance(layers, str):  # some writers nest it as JSON text
        layers = json.loads(layers)
    if not layers and isinstance(metadata.get("json"), str):
        layers = json.loads(metadata["json"]).get("vector_layers")
    entry = next((lyr for lyr in layers or [] if lyr.get("id") == layer), None)
    if entry is None:
        raise bad(f"metadata vector_layers has no layer {layer!r}")
    missing = [f for f in fields if f not in (entry.get("fields") or {})]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise bad(f"layer {layer!r} lacks the fields {shown}")
    return dict(header)


#: Integers beyond ±2^53 cannot be represented exactly by tippecanoe's doubles.
_MAX_SAFE_INT = 2**53


def feature_id_plan(pfile: Any, id_column: str) -> tuple[bool, int, int, str]:
    """How features are identified in the tiles: ``(row_ids, low, high, label)``.

    The id column's values when its Parquet statistics show a non-negative integer column without
    nulls, at most 2^53 (tippecanoe reads ids as doubles); otherwise the 1-based row numbers.
    ``low``..``high`` is the range the ids lie in.
    """
    import pyarrow as pa

    rows = pfile.metadata.num_rows
    by_row = (True, 1, max(rows, 1), "row numbers")
    schema = pfile.schema_arrow
    if id_column not in schema.names or not pa.types.is_integer(schema.field(id_column).type):
        return by_row
    md = pfile.metadata
    index = next((j for j in range(md.num_columns) if md.schema.column(j).path == id_column), None)
    if index is None:
        return by_row
    low, high = None, None
    for i in range(md.num_row_groups):
        col = md.row_group(i).column(index)
        st = col.statistics
        if col.num_values == 0:
            continue
        if st is None or not st.has_min_max or st.null_count is None or st.null_count > 0:
            return by_row
        low = st.min if low is None else min(low, st.min)
        high = st.max if high is None else max(high, st.max)
    if low is None or high is None or low < 0 or high > _MAX_SAFE_INT:
        return by_row
    return False, int(low), int(high), id_column


@dataclass(frozen=True)
class StreamCounts:
    """What the step gave tippecanoe: of ``rows`` read, ``null`` / ``empty`` / ``beyond`` (Web
    Mercator) were not given; ``features`` were, with the ids in ``streamed`` (``id_label`` says
    what the ids are)."""

    rows: int
    streamed: DistinctIds
    id_label: str
    null: int
    empty: int
    beyond: int
    features: int


def account_archive(
    path: Path, layer: str, max_zoom: int, given: StreamCounts, prov: dict[str, Any] | None = None
) -> tuple[dict[str, Any], int]:
    """Count the features of ``path`` at ``max_zoom`` and record the accounting (and the provenance
    record ``prov``) in its metadata; return the record and the features written. Raises
    :class:`ToolError` when the tiles hold a feature that was not given to tippecanoe."""
    t0 = time.monotonic()
    streamed = given.streamed
    counter = DistinctIds(streamed.low, streamed.high, given.rows)
    found = count_features_at_zoom(path, layer, max_zoom, counter)
    strangers = found.outside + counter.not_in(streamed)
    if strangers or found.without_id:
        examples = f" (ids {counter.outside_examples})" if counter.outside else ""
        raise ToolError(
            "tippecanoe",
            f"the archive holds {strangers + found.without_id} feature(s) at zoom {max_zoom} that were not given "
            f"to it{examples}" + (f", {found.without_id} of them without an id" if found.without_id else ""),
        )
    distinct = streamed.count
    written = found.features
    log.info(
        "pmtiles: %d of %d features present at zoom %d (%d tiles decoded in %.1f s)",
        written,
        distinct,
        max_zoom,
        found.tiles,
        time.monotonic() - t0,
    )
    dropped = {
        REASON_NULL: given.null,
        REASON_EMPTY: given.empty,
        REASON_LATITUDE: given.beyond,
        # features sharing an id cannot be told apart in the tiles: counted once
        f"duplicate feature id ({given.id_label})": given.features - distinct,
        REASON_TIPPECANOE: distinct - written,
    }
    _warn_drops(given, distinct, written, max_zoom)
    record = make_record(given.rows, written, dropped)
    why = balance_problem(parse_accounting(record))
    if why is not None:
        raise IncompleteOutputError(f"pmtiles: {why}")
    updates: dict[str, Any] = {
        PMTILES_KEY: {
            "accounting": record,
            "layer": layer,
            "max_zoom": max_zoom,
            "feature_ids": given.id_label,
            "version": __version__,
        }
    }
    if prov is not None:
        updates[PROVENANCE_KEY.decode()] = prov
    set_metadata(path, updates)
    return record, written


def _warn_drops(given: StreamCounts, distinct: int, written: int, max_zoom: int) -> None:
    """One warning line per reason features are missing from the tiles."""
    if given.beyond:
        log.warning(
            "pmtiles: %d feature(s) lie wholly beyond ±%.4f° latitude, outside Web Mercator: not in the tiles",
            given.beyond,
            WEB_MERCATOR_MAX_LAT,
        )
    if distinct - written:
        log.warning(
            "pmtiles: tippecanoe dropped %d of %d feature(s) at the maximum zoom %d (smaller than a pixel, or "
            "over the tile size limits with --drop-densest-as-needed)",
            distinct - written,
            distinct,
            max_zoom,
        )
    if given.features - distinct:
        log.warning("pmtiles: %d feature(s) share a feature id with another one", given.features - distinct)

"""PMTiles checks of ``cng-datasets validate`` (see the package docstring)."""

from __future__ import annotations

import json
from typing import Any

from cng_datasets import provenance
from cng_datasets.contract import PROVENANCE_KEY
from cng_datasets.errors import RecordError
from cng_datasets.validate.common import _bytes_source, _decompress, _Problems


def check_pmtiles(url: str, layer: str | None = None, count_features: bool = True) -> tuple[list[str], dict[str, Any]]:
    """Problems of the PMTiles archive at ``url`` (``layer``: a vector layer that must exist).

    With ``count_features``, ``stats["features"]`` is the number of distinct feature ids of
    ``layer`` in the tiles of the maximum zoom (absent, with ``stats["not_counted"]`` saying why,
    when it cannot be counted).
    """
    from pmtiles.tile import Compression, deserialize_header

    problems = _Problems()
    stats: dict[str, Any] = {}
    try:
        get_bytes, size, close = _bytes_source(url)
    except Exception as exc:  # noqa: BLE001 - any open error is the finding
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
        _check_header(url, h, size, problems, stats)
        if problems.items:
            return problems.items, stats
        try:
            meta = json.loads(
                _decompress(get_bytes(h["metadata_offset"], h["metadata_length"]), h["internal_compression"])
            )
        except Exception as exc:  # noqa: BLE001 - any decoder error is the finding
            return [f"{url}: metadata is unreadable ({exc})"], stats
        _check_layers(url, meta, layer, problems, stats)
        rec = meta.get(PROVENANCE_KEY.decode()) if isinstance(meta, dict) else None
        try:
            stats["provenance"] = provenance.summary(rec)
        except RecordError as exc:
            problems.add(f"{url}: {exc}")
        _check_directories(url, get_bytes, h, problems)
        if h["tile_compression"] not in (Compression.GZIP, Compression.NONE, Compression.UNKNOWN):
            stats["tile_compression"] = h["tile_compression"].name
        if count_features and not problems.items:
            _count_max_zoom(url, get_bytes, h, layer, problems, stats)
    finally:
        close()
    return problems.items, stats


def _check_header(url: str, h: Any, size: int, problems: _Problems, stats: dict[str, Any]) -> None:
    """Sections inside the file, MVT tiles, a tile count, zoom range and bounds that make sense."""
    from pmtiles.tile import TileType

    stats.update(tiles=h["addressed_tiles_count"], min_zoom=h["min_zoom"], max_zoom=h["max_zoom"], bytes=size)
    for name in ("root", "metadata", "leaf_directory", "tile_data"):
        end = h[f"{name}_offset"] + h[f"{name}_length"]
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


def _check_layers(url: str, meta: Any, layer: str | None, problems: _Problems, stats: dict[str, Any]) -> None:
    """The metadata's vector layers each have an id and fields; ``layer`` is one of them."""
    layers = meta.get("vector_layers") if isinstance(meta, dict) else None
    if not isinstance(layers, list) or not layers:
        problems.add(f"{url}: metadata has no vector_layers")
        return
    stats["layers"] = [lyr.get("id") for lyr in layers if isinstance(lyr, dict)]
    for lyr in layers:
        if not isinstance(lyr, dict) or not lyr.get("id") or not isinstance(lyr.get("fields"), dict):
            problems.add(f"{url}: vector layer {lyr!r:.80} lacks an id or a fields object")
    if layer is not None and layer not in stats["layers"]:
        problems.add(f"{url}: no vector layer {layer!r} (layers: {stats['layers']})")


def _check_directories(url: str, get_bytes: Any, h: Any, problems: _Problems) -> None:
    """Every directory entry inside the tile data, as many tiles as the header says, and a first
    tile that decompresses."""
    from pmtiles.tile import deserialize_directory

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
        except Exception as exc:  # noqa: BLE001 - any decoder error is the finding
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
        except Exception as exc:  # noqa: BLE001 - any decoder error is the finding
            problems.add(f"{url}: the first tile does not decompress ({exc})")


#: Ids collected before they are merged (sorted, deduplicated) into the distinct set.
_MERGE_EVERY = 1 << 21


def _count_max_zoom(
    url: str, get_bytes: Any, h: Any, layer: str | None, problems: _Problems, stats: dict[str, Any]
) -> None:
    """Distinct feature ids at the maximum zoom, decoded with mapbox-vector-tile's protobuf
    classes (not the step's own reader); memory: 8 bytes per distinct id."""
    import numpy as np
    from pmtiles.tile import deserialize_directory

    try:
        from mapbox_vector_tile.Mapbox import vector_tile_pb2
    except ImportError:
        stats["not_counted"] = "mapbox-vector-tile is not installed"
        return
    z = h["max_zoom"]
    lo = sum(4**i for i in range(z))  # the first tile id of zoom z
    hi = lo + 4**z
    distinct = np.zeros(0, dtype=np.uint64)
    pending: list[int] = []
    without_id = 0
    last_key = None
    stack = [(h["root_offset"], h["root_length"])]
    while stack:
        off, length = stack.pop()
        for e in deserialize_directory(get_bytes(off, length)):
            if e.run_length == 0:
                stack.append((h["leaf_directory_offset"] + e.offset, e.length))
                continue
            if not (e.tile_id < hi and e.tile_id + e.run_length > lo):
                continue
            key = (e.offset, e.length)
            if key == last_key:
                continue
            last_key = key
            tile = vector_tile_pb2.tile()
            try:
                tile.ParseFromString(
                    _decompress(get_bytes(h["tile_data_offset"] + e.offset, e.length), h["tile_compression"])
                )
            except Exception as exc:  # noqa: BLE001 - any decoder error is the finding
                problems.add(f"{url}: tile {e.tile_id} at zoom {z} is not a readable vector tile ({exc})")
                return
            for lyr in tile.layers:
                if layer is not None and lyr.name != layer:
                    continue
                for feat in lyr.features:
                    if feat.HasField("id"):
                        pending.append(feat.id)
                    else:
                        without_id += 1
            if len(pending) > _MERGE_EVERY:
                distinct = np.union1d(distinct, np.asarray(pending, dtype=np.uint64))
                pending = []
    distinct = np.union1d(distinct, np.asarray(pending, dtype=np.uint64))
    if without_id:
        stats["not_counted"] = f"{without_id} feature(s) at zoom {z} have no feature id"
        return
    stats["features"] = int(len(distinct))
    stats["features_zoom"] = z

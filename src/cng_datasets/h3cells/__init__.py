"""H3 cells of geometries: vectorized, streamed in bounded batches, correct on the whole globe.

The engine is h3ronpy (Rust h3o, vectorized over WKB arrays); h3-py is only the reference in the
tests and the benchmark. Semantics follow GeoParquet's default *planar* edges in lon/lat, which is
also what H3's polygon fill uses, with one exception inherited from H3 and RFC 7946: an edge longer
than 180° of longitude crosses the antimeridian, unless it starts or ends on ±180 (a seam of
already cut geometry; the rule lives in geometry.py and is shared with convert).

What each geometry type gives (``mode`` is ``center``, ``full`` or ``overlap``):

- polygons: the cells selected by ``mode`` (``center``: centroid inside; ``full``: cell inside;
  ``overlap``: cell and polygon intersect, including a polygon entirely inside one cell);
- points: their cell;
- lines: every cell the line passes through (densified in lon/lat to a step well below the smallest
  cell edge at the resolution, so no gaps at any latitude);
- collections: the union over their parts;
- a feature that would get no cell at all (a polygon smaller than a cell under ``center``) gets the
  cell of a point on its surface, so every non-empty feature has at least one cell.

Globe-wide correctness: H3 reads any edge longer than 180° as crossing the antimeridian and cannot
fill a polygon that contains a pole. Features wider than 90° of longitude (Russia, Antarctica, a raw
ring crossing ±180) are therefore first *normalized* (rings crossing ±180 are unwrapped and cut back
into [-180, 180]; a ring that winds round a pole is closed along that pole) and then cut into tiles
at most 90° wide. Each tile is handed to H3 with a margin of a few cells and keeps only the cells
whose centre lies in the (half-open) tile, so tiles never produce the same cell twice and no cell is
lost at a tile edge.

Known limit: near a pole, where one cell spans more longitude than a tile's margin (capped at 40°),
``full`` and ``overlap`` decide a cell from the part of the polygon inside its tile's band only;
``center`` is exact everywhere (tested against a brute-force centre-in-polygon reference).

Modules: :mod:`~cng_datasets.h3cells.cells` (H3 calls on arrays), :mod:`~cng_datasets.h3cells.tiling`
(tiles for wide, polar and huge features), this module (features → (feature, cell) pairs).

Bounded memory: the same tiling is used for any feature whose estimated cell count exceeds the
batch budget (a continent at resolution 10 is billions of cells): tiles are split (quadtree) until
each holds about ``budget`` cells, and cells are yielded tile by tile.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cng_datasets.contract import CONTAINMENT_MODES
from cng_datasets.h3cells.cells import (
    DEFAULT_BUDGET,
    RANGE_TOLERANCE,
    cell_area_km2,
    cell_centers,
    check_range,
    edge_km,
    line_cells,
    line_step_deg,
    parent_cells,
    point_cells,
    polygon_cells,
    unique_pairs,
)
from cng_datasets.h3cells.tiling import Parts, estimate_cells, explode, needs_tiling, normalize_polygon, tiled_cells

__all__ = [
    "DEFAULT_BUDGET",
    "RANGE_TOLERANCE",
    "Parts",
    "cell_area_km2",
    "cell_centers",
    "check_range",
    "edge_km",
    "estimate_cells",
    "explode",
    "Share",
    "feature_cells",
    "line_cells",
    "line_step_deg",
    "needs_tiling",
    "parent_cells",
    "point_cells",
    "polygon_cells",
    "tiled_cells",
    "unique_pairs",
]

# --------------------------------------------------------------------------------------------
# Feature batches


def _fallback_point(geom: Any) -> tuple[float, float] | None:
    """A point inside ``geom`` (its first coordinate if GEOS cannot find one)."""
    import shapely

    try:
        polys = []
        for p in shapely.get_parts(shapely.force_2d(geom)):
            if shapely.get_type_id(p) == 3:
                polys.extend(normalize_polygon(p))
        target = shapely.MultiPolygon(polys) if polys else geom
        pt = shapely.point_on_surface(target)
        if not pt.is_empty:
            return float(pt.x), float(pt.y)
    except Exception:  # noqa: BLE001 - invalid geometry: any vertex will do
        pass
    xy = shapely.get_coordinates(geom)
    return (float(xy[0, 0]), float(xy[0, 1])) if len(xy) else None


@dataclass(frozen=True)
class Share:
    """Share ``index`` of ``count`` of the work on a batch (``count`` processes split it): each
    computes the features it owns whole, and every ``count``-th tile of the features too big for
    one H3 call (see :func:`feature_cells`). Together the shares compute each cell exactly once."""

    index: int = 0
    count: int = 1

    def keeps(self, tile: int) -> bool:
        return tile % self.count == self.index


def feature_cells(
    geoms: np.ndarray,
    res: int,
    mode: str = "center",
    budget: int = DEFAULT_BUDGET,
    share: Share = Share(),
    owned: np.ndarray | None = None,
    split: set[int] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cells of a batch of shapely geometries (None / empty give none).

    Yields ``(feature index, cells)`` pairs in feature order (all pairs of a feature before those
    of the next), without duplicate (feature, cell) pairs; every non-empty feature gets at least
    one cell. Each yielded batch holds about ``budget`` cells at most.

    Shared work (``share.count > 1``): only the features ``owned`` (a mask; default all) are
    computed, plus this share's tiles of every feature too big for one H3 call (by its area or
    length, not its perimeter), owned or not; their indexes are added to ``split`` (before
    anything is yielded). A split feature gets no fallback cell: that it has a cell at all is
    known only from every share together (the caller checks it).

    Raises :class:`OutOfRangeError` (before yielding anything) when a geometry has a coordinate
    outside [-180, 180] × [-90, 90]: projected coordinates are never hexed as if they were degrees.
    """
    if mode not in CONTAINMENT_MODES:
        raise ValueError(f"containment mode must be one of {CONTAINMENT_MODES}, not {mode!r}")
    geoms = np.asarray(geoms, dtype=object)
    n = len(geoms)
    if n == 0:
        return
    import shapely

    present = np.array([g is not None for g in geoms], dtype=bool)
    safe = geoms.copy()
    safe[~present] = shapely.GeometryCollection()
    check_range(safe)
    parts = explode(safe)
    est = estimate_cells(parts, n, res)
    big = est > budget
    tile = needs_tiling(parts, n) | big
    has_parts = np.zeros(n, dtype=bool)
    for arr in (parts.polygon_index, parts.line_index, parts.point_index):
        has_parts[arr] = True
    # shared: only features that surely have cells (a split feature gets no fallback cell)
    shared = np.zeros(n, dtype=bool)
    if share.count > 1 and big.any():
        shared = big & (estimate_cells(parts, n, res, certain=True) > budget)
    work = (np.ones(n, dtype=bool) if owned is None else np.asarray(owned, dtype=bool)) | shared
    if split is not None:
        split.update(int(i) for i in np.flatnonzero(shared))

    # Contiguous runs of the features worked on: a tiled feature alone, or simple features up to
    # ~``budget`` estimated cells (found with numpy: no Python loop per feature).
    stretches = []
    for lo, hi in _runs(work):
        prev = lo
        for t in np.flatnonzero(tile[lo:hi]) + lo:
            stretches.append((prev, int(t)))
            stretches.append((int(t), int(t) + 1))
            prev = int(t) + 1
        stretches.append((prev, hi))
    for a, b in stretches:
        if a >= b:
            continue
        if shared[a]:
            yield from _tiled_feature(parts, a, geoms[a], res, mode, budget, share)
            continue
        if tile[a]:
            yield from _tiled_feature(parts, a, geoms[a], res, mode, budget)
            continue
        before = np.cumsum(est[a:b]) - est[a:b]
        group = np.floor(before / budget).astype(np.int64)
        cuts = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True]) + a
        for i, j in zip(cuts[:-1], cuts[1:], strict=True):
            yield from _simple_run(parts, int(i), int(j), geoms, has_parts, res, mode, budget)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _select(idx: np.ndarray, i: int, j: int) -> np.ndarray:
    lo, hi = np.searchsorted(idx, i, "left"), np.searchsorted(idx, j, "left")
    return np.arange(lo, hi)


def _simple_run(
    parts: Parts, i: int, j: int, geoms: np.ndarray, has_parts: np.ndarray, res: int, mode: str, budget: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    idx_chunks: list[np.ndarray] = []
    cell_chunks: list[np.ndarray] = []
    sel = _select(parts.polygon_index, i, j)
    if len(sel):
        k, c = polygon_cells(parts.polygons[sel], res, mode)
        idx_chunks.append(parts.polygon_index[sel][k])
        cell_chunks.append(c)
    sel = _select(parts.line_index, i, j)
    if len(sel):
        for k, c in line_cells(parts.lines[sel], res, budget):
            idx_chunks.append(parts.line_index[sel][k])
            cell_chunks.append(c)
    sel = _select(parts.point_index, i, j)
    if len(sel):
        import shapely

        xy = shapely.get_coordinates(parts.points[sel])
        idx_chunks.append(parts.point_index[sel])
        cell_chunks.append(point_cells(xy[:, 0], xy[:, 1], res))
    if idx_chunks:
        idx, cells = unique_pairs(np.concatenate(idx_chunks), np.concatenate(cell_chunks))
    else:
        idx, cells = np.empty(0, np.int64), np.empty(0, np.uint64)
    got = np.zeros(j - i, dtype=bool)
    got[idx - i] = True
    missing = np.flatnonzero(has_parts[i:j] & ~got) + i
    if len(missing):
        fx, fy, fi = [], [], []
        for m in missing:
            pt = _fallback_point(geoms[m])
            if pt is not None:
                fx.append(pt[0])
                fy.append(pt[1])
                fi.append(m)
        if fi:
            idx, cells = unique_pairs(
                np.r_[idx, np.asarray(fi, np.int64)], np.r_[cells, point_cells(np.asarray(fx), np.asarray(fy), res)]
            )
    if len(idx):
        yield idx, cells


def _tiled_feature(
    parts: Parts, i: int, geom: Any, res: int, mode: str, budget: int, share: Share | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cells of feature ``i`` tile by tile; with ``share``, only that share's tiles (and no
    fallback cell)."""
    polys = list(parts.polygons[_select(parts.polygon_index, i, i + 1)])
    lines = list(parts.lines[_select(parts.line_index, i, i + 1)])
    points = list(parts.points[_select(parts.point_index, i, i + 1)])
    any_cells = False
    keep = share.keeps if share is not None else None
    for cells in tiled_cells(polys, lines, points, res, mode, budget, keep):
        any_cells = True
        yield np.full(len(cells), i, dtype=np.int64), cells
    if not any_cells and share is None:
        pt = _fallback_point(geom)
        if pt is not None:
            yield np.array([i], np.int64), point_cells(np.array([pt[0]]), np.array([pt[1]]), res)

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

Bounded memory: the same tiling is used for any feature whose estimated cell count exceeds the
batch budget (a continent at resolution 10 is billions of cells): tiles are split (quadtree) until
each holds about ``budget`` cells, and cells are yielded tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cng_datasets.contract import CONTAINMENT_MODES
from cng_datasets.errors import OutOfRangeError
from cng_datasets.geometry import split_line, split_polygon

#: Degrees a coordinate may stray outside [-180, 180] × [-90, 90] (float noise) before it is refused.
RANGE_TOLERANCE = 1e-9


def check_range(geoms: np.ndarray) -> None:
    """Raise :class:`OutOfRangeError` for the first geometry with a coordinate outside lon/lat."""
    import shapely

    if len(geoms) == 0:
        return
    with np.errstate(invalid="ignore"):
        b = shapely.bounds(geoms)  # NaN for None / empty: never out of range
        bad = (
            (b[:, 0] < -180.0 - RANGE_TOLERANCE)
            | (b[:, 2] > 180.0 + RANGE_TOLERANCE)
            | (b[:, 1] < -90.0 - RANGE_TOLERANCE)
            | (b[:, 3] > 90.0 + RANGE_TOLERANCE)
        )
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise OutOfRangeError(
            i,
            f"coordinates outside [-180, 180] x [-90, 90] (bounds {[round(float(v), 6) for v in b[i]]}): "
            "not lon/lat degrees",
        )


#: Default number of cells computed per H3 call (and so held in memory at once), about 16 MB.
DEFAULT_BUDGET = 2_000_000

_KM_PER_DEG = 111.32
_RES_BITS = np.uint64(0xF << 52)


# --------------------------------------------------------------------------------------------
# Cell arithmetic


def parent_cells(cells: np.ndarray, res: int) -> np.ndarray:
    """Parents at resolution ``res`` of uint64 cells of a finer (or equal) resolution.

    Pure bit operations: set the resolution field and fill the unused digits with 7.
    """
    cells = np.asarray(cells, dtype=np.uint64)
    unused = np.uint64((1 << (3 * (15 - res))) - 1)
    return (cells & ~_RES_BITS) | np.uint64(res << 52) | unused


def edge_km(res: int) -> float:
    """Average hexagon edge length in km at ``res``."""
    import h3

    return float(h3.average_hexagon_edge_length(res, "km"))


def cell_area_km2(res: int) -> float:
    import h3

    return float(h3.average_hexagon_area(res, "km^2"))


def line_step_deg(res: int) -> float:
    """Densification step (degrees) for lines: a quarter of the average cell edge.

    Real distances along a lon/lat step are never longer than along the equator, so this is
    conservative at every latitude. Cell edges vary by about 2× over the globe (pentagons).
    """
    return edge_km(res) / _KM_PER_DEG / 4.0


# --------------------------------------------------------------------------------------------
# h3ronpy wrappers (all take / return numpy)


def _containment(mode: str) -> Any:
    from h3ronpy import ContainmentMode

    return {
        "center": ContainmentMode.ContainsCentroid,
        "full": ContainmentMode.ContainsBoundary,
        # h3-py's "overlap" also returns the cell that contains a polygon entirely: that is Covers
        "overlap": ContainmentMode.Covers,
    }[mode]


def _to_numpy_u64(arr: Any) -> np.ndarray:
    import pyarrow as pa

    a = pa.array(arr)
    if len(a) == 0:
        return np.empty(0, dtype=np.uint64)
    return np.asarray(a.to_numpy(zero_copy_only=False), dtype=np.uint64)


def polygon_cells(polygons: np.ndarray, res: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Cells of 2D shapely polygons (each narrower than 180° of longitude, no pole inside).

    Returns ``(index into polygons, cells)``.
    """
    import pyarrow as pa
    import shapely
    from h3ronpy.vector import wkb_to_cells

    if len(polygons) == 0:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    wkb = pa.array(shapely.to_wkb(polygons), type=pa.binary())
    lists = pa.array(wkb_to_cells(wkb, res, containment_mode=_containment(mode), flatten=False))
    offsets = np.asarray(lists.offsets.to_numpy(), dtype=np.int64)
    counts = np.diff(offsets)
    values = _to_numpy_u64(lists.values)[offsets[0] : offsets[-1]]
    return np.repeat(np.arange(len(polygons), dtype=np.int64), counts), values


def point_cells(lng: np.ndarray, lat: np.ndarray, res: int) -> np.ndarray:
    """Cells of points given as lon/lat arrays (degrees).

    Coordinates outside [-180, 180] × [-90, 90] by more than :data:`RANGE_TOLERANCE` raise
    :class:`OutOfRangeError` (they are not degrees); within it they are float noise of the
    densification and are clamped.
    """
    from h3ronpy.vector import coordinates_to_cells

    if len(lng) == 0:
        return np.empty(0, np.uint64)
    lat = np.asarray(lat, dtype=np.float64)
    lng = np.asarray(lng, dtype=np.float64)
    limit = np.array([180.0, 90.0]) + RANGE_TOLERANCE
    with np.errstate(invalid="ignore"):
        bad = ~((np.abs(lng) <= limit[0]) & (np.abs(lat) <= limit[1]))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise OutOfRangeError(
            None, f"point ({lng[i]}, {lat[i]}) is outside [-180, 180] x [-90, 90]: not lon/lat degrees"
        )
    lat = np.clip(lat, -90.0, 90.0)
    lng = np.clip(lng, -180.0, 180.0)
    return _to_numpy_u64(coordinates_to_cells(lat, lng, res))


def cell_centers(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(lng, lat)`` of the cell centres, degrees."""
    import pyarrow as pa
    from h3ronpy.vector import cells_to_coordinates

    rb = pa.record_batch(cells_to_coordinates(pa.array(cells, type=pa.uint64())))
    return rb.column("lng").to_numpy(), rb.column("lat").to_numpy()


def line_cells(lines: np.ndarray, res: int, budget: int = DEFAULT_BUDGET) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cells every line passes through; yields ``(index into lines, cells)`` in bounded batches.

    Each segment is densified in lon/lat with :func:`line_step_deg` (a segment longer than 180° of
    longitude is taken the short way across the antimeridian). Between two consecutive points in
    different cells the line may still graze the corner of a third cell: every such step is bisected
    (:data:`_BISECT_ROUNDS` times, vectorized) to find it, so no cell the line enters more than
    ~1e-5 of an edge deep is missed. Consecutive duplicates are dropped here; callers remove the rest.
    """
    import shapely

    if len(lines) == 0:
        return
    coords, part = shapely.get_coordinates(lines, return_index=True)
    if len(coords) == 0:
        return
    step = line_step_deg(res)
    same = part[:-1] == part[1:]
    x0, y0 = coords[:-1, 0][same], coords[:-1, 1][same]
    dx = coords[1:, 0][same] - x0
    dy = coords[1:, 1][same] - y0
    dx = np.where(dx > 180.0, dx - 360.0, np.where(dx < -180.0, dx + 360.0, dx))
    seg_part = part[:-1][same]
    n = np.maximum(1, np.ceil(np.maximum(np.abs(dx), np.abs(dy)) / step)).astype(np.int64)
    # the last segment of each line also emits its end vertex (t = 1)
    last_seg = np.r_[seg_part[1:] != seg_part[:-1], True] if len(seg_part) else np.zeros(0, bool)
    npts = n + last_seg
    ends = np.cumsum(npts)
    starts = ends - npts
    total = int(ends[-1]) if len(npts) else 0
    # single-vertex lines (degenerate): just their vertex
    lone = np.setdiff1d(np.unique(part), seg_part)
    if len(lone):
        first = np.searchsorted(part, lone)
        yield lone.astype(np.int64), point_cells(coords[first, 0], coords[first, 1], res)
    carry: tuple[float, float, int] | None = None  # last point of the previous batch
    for a in range(0, total, budget):
        b = min(total, a + budget)
        p = np.arange(a, b, dtype=np.int64)
        seg = np.searchsorted(ends, p, side="right")
        t = (p - starts[seg]) / n[seg]
        x = x0[seg] + dx[seg] * t
        y = y0[seg] + dy[seg] * t
        idx = seg_part[seg]
        if carry is not None:
            x, y, idx = np.r_[carry[0], x], np.r_[carry[1], y], np.r_[carry[2], idx]
        cells = point_cells((x + 180.0) % 360.0 - 180.0, y, res)
        carry = (float(x[-1]), float(y[-1]), int(idx[-1]))
        change = np.flatnonzero((cells[1:] != cells[:-1]) & (idx[1:] == idx[:-1]))
        extra_i, extra_c = _bisect(x, y, cells, idx, change, res)
        keep = np.r_[True, (cells[1:] != cells[:-1]) | (idx[1:] != idx[:-1])]
        yield np.r_[idx[keep], extra_i], np.r_[cells[keep], extra_c]


#: Bisection rounds between consecutive densified points in different cells (see line_cells).
_BISECT_ROUNDS = 16


def _bisect(
    x: np.ndarray, y: np.ndarray, cells: np.ndarray, idx: np.ndarray, change: np.ndarray, res: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cells entered between points ``change`` and ``change + 1`` other than their own cells."""
    px, py, qx, qy = x[change], y[change], x[change + 1], y[change + 1]
    a, c, k = cells[change], cells[change + 1], idx[change]
    found_i, found_c = [], []
    for _ in range(_BISECT_ROUNDS):
        if len(a) == 0:
            break
        mx, my = (px + qx) / 2.0, (py + qy) / 2.0
        m = point_cells((mx + 180.0) % 360.0 - 180.0, my, res)
        in_a, in_c = m == a, m == c
        other = ~in_a & ~in_c
        if other.any():
            found_i.append(k[other])
            found_c.append(m[other])
        px, py = np.where(in_a, mx, px), np.where(in_a, my, py)
        qx, qy = np.where(in_c, mx, qx), np.where(in_c, my, qy)
        go = ~other
        px, py, qx, qy, a, c, k = px[go], py[go], qx[go], qy[go], a[go], c[go], k[go]
    if not found_i:
        return np.empty(0, np.int64), np.empty(0, np.uint64)
    return np.concatenate(found_i), np.concatenate(found_c)


def unique_pairs(idx: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted by (idx, cell), duplicates removed."""
    if len(idx) == 0:
        return idx.astype(np.int64), cells.astype(np.uint64)
    order = np.lexsort((cells, idx))
    idx, cells = idx[order], cells[order]
    keep = np.r_[True, (idx[1:] != idx[:-1]) | (cells[1:] != cells[:-1])]
    return idx[keep], cells[keep]


# --------------------------------------------------------------------------------------------
# Geometry preparation


@dataclass
class Parts:
    """Single-part 2D geometries of a batch of features: ``index`` maps each part to its feature."""

    polygons: np.ndarray
    polygon_index: np.ndarray
    lines: np.ndarray
    line_index: np.ndarray
    points: np.ndarray
    point_index: np.ndarray


def explode(geoms: np.ndarray) -> Parts:
    """Split features (any type, nested collections too) into non-empty polygons, lines, points."""
    import shapely

    geoms = np.asarray(geoms, dtype=object)
    if shapely.has_z(geoms).any():
        geoms = shapely.force_2d(geoms)  # h3ronpy panics on Z
    if np.isin(shapely.get_type_id(geoms), (4, 5, 6, 7)).any():
        parts, index = shapely.get_parts(geoms, return_index=True)
    else:  # single-part geometries only (points, lines, polygons): nothing to split
        parts, index = geoms, np.arange(len(geoms), dtype=np.int64)
    while True:
        multi = np.isin(shapely.get_type_id(parts), (4, 5, 6, 7))
        if not multi.any():
            break
        sub, sub_i = shapely.get_parts(parts[multi], return_index=True)
        sub_index = index[multi][sub_i]
        parts = np.concatenate([parts[~multi], sub])
        index = np.concatenate([index[~multi], sub_index])
        order = np.argsort(index, kind="stable")
        parts, index = parts[order], index[order]
    if len(parts):
        nonempty = ~shapely.is_empty(parts)
        parts, index = parts[nonempty], index[nonempty]
    types = shapely.get_type_id(parts)
    poly = types == 3
    line = (types == 1) | (types == 2)
    point = types == 0
    return Parts(parts[poly], index[poly], parts[line], index[line], parts[point], index[point])


def estimate_cells(parts: Parts, n_features: int, res: int) -> np.ndarray:
    """A rough per-feature estimate of the number of cells (within a small factor)."""
    import shapely

    est = np.zeros(n_features, dtype=np.float64)
    cell_km2 = cell_area_km2(res)
    edge = edge_km(res)
    if len(parts.polygons):
        sinu = _sinusoidal(parts.polygons)
        area = shapely.area(sinu) * _KM_PER_DEG**2
        perim = shapely.length(sinu) * _KM_PER_DEG
        np.add.at(est, parts.polygon_index, area / cell_km2 + perim / edge + 1.0)
    if len(parts.lines):
        length = shapely.length(_sinusoidal(parts.lines)) * _KM_PER_DEG
        np.add.at(est, parts.line_index, length / edge * 2.0 + 1.0)
    if len(parts.points):
        np.add.at(est, parts.point_index, 1.0)
    return est


def _sinusoidal(geoms: np.ndarray) -> np.ndarray:
    """Geometries in the sinusoidal projection (degrees): planar area and length ≈ true ones."""
    import shapely

    def project(xy: np.ndarray) -> np.ndarray:
        out = xy.copy()
        out[:, 0] *= np.cos(np.radians(np.clip(xy[:, 1], -90.0, 90.0)))
        return out

    return shapely.transform(geoms, project)


def needs_tiling(parts: Parts, n_features: int) -> np.ndarray:
    """Features H3 cannot take as they are: a polygon wider than 90° of longitude (split at ±180
    but spanning the globe, a raw ring crossing ±180, a polygon round a pole)."""
    import shapely

    out = np.zeros(n_features, dtype=bool)
    if len(parts.polygons):
        b = shapely.bounds(parts.polygons)
        wide = (b[:, 2] - b[:, 0]) > 90.0
        out[parts.polygon_index[wide]] = True
    return out


def _clip(geom: Any, box: Any) -> Any:
    import shapely

    try:
        return shapely.intersection(geom, box)
    except shapely.errors.GEOSException:
        return shapely.intersection(shapely.make_valid(geom), box)


# The antimeridian rule (which long edges are crossings, how rings round a pole are closed) is the
# one convert applies: geometry.py holds it once for every step.
normalize_polygon = split_polygon
normalize_line = split_line


# --------------------------------------------------------------------------------------------
# Tiled computation for wide and huge features


def _margin_deg(res: int) -> float:
    """Latitude margin around a tile: more than the largest cell radius at ``res``."""
    return 3.0 * edge_km(res) / _KM_PER_DEG


#: Longitude margin cap: a 90° tile plus margins stays well below 180° (H3's antimeridian rule).
_MAX_LON_MARGIN = 40.0


def _lon_margin(rect: tuple[float, float, float, float], m_lat: float) -> float:
    y0e, y1e = max(-90.0, rect[1] - m_lat), min(90.0, rect[3] + m_lat)
    coslat = math.cos(math.radians(min(89.999, max(abs(y0e), abs(y1e)))))
    return min(_MAX_LON_MARGIN, m_lat / max(coslat, 1e-9))


def _clip_regions(rect: tuple[float, float, float, float], m_lat: float) -> list[Any]:
    """The tile grown by its margin, as boxes inside [-180, 180] (wrapping across ±180)."""
    import shapely

    x0, y0, x1, y1 = rect
    y0e, y1e = max(-90.0, y0 - m_lat), min(90.0, y1 + m_lat)
    m_lon = _lon_margin(rect, m_lat)
    a, b = x0 - m_lon, x1 + m_lon
    boxes = [shapely.box(max(-180.0, a), y0e, min(180.0, b), y1e)]
    if a < -180.0:
        boxes.append(shapely.box(a + 360.0, y0e, 180.0, y1e))
    if b > 180.0:
        boxes.append(shapely.box(-180.0, y0e, b - 360.0, y1e))
    return boxes


def _clip_all(geoms: list[Any], regions: list[Any], keep_types: tuple[int, ...]) -> list[Any]:
    import shapely

    out = []
    for g in geoms:
        gb = g.bounds
        for box in regions:
            bb = box.bounds
            if gb[2] < bb[0] or gb[0] > bb[2] or gb[3] < bb[1] or gb[1] > bb[3]:
                continue
            if gb[0] >= bb[0] and gb[2] <= bb[2] and gb[1] >= bb[1] and gb[3] <= bb[3]:
                out.append(g)
                continue
            piece = _clip(g, box)
            if piece.is_empty:
                continue
            for p in shapely.get_parts(piece):
                if shapely.get_type_id(p) in keep_types:
                    out.append(p)
                elif shapely.get_type_id(p) == 7:  # collection from make_valid
                    out.extend(q for q in shapely.get_parts(p) if shapely.get_type_id(q) in keep_types)
    return out


def _owned(cells: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """Mask of cells whose centre lies in the half-open tile [x0, x1) × [y0, y1) (closed at 90, 180)."""
    if len(cells) == 0:
        return np.zeros(0, dtype=bool)
    lng, lat = cell_centers(cells)
    lng = np.where(lng >= 180.0, lng - 360.0, lng)
    x0, y0, x1, y1 = rect
    in_x = (lng >= x0) & ((lng < x1) | (x1 >= 180.0))
    in_y = (lat >= y0) & ((lat < y1) | (y1 >= 90.0))
    return in_x & in_y


def tiled_cells(
    polygons: list[Any], lines: list[Any], points: list[Any], res: int, mode: str, budget: int = DEFAULT_BUDGET
) -> Iterator[np.ndarray]:
    """Cells of one feature, computed tile by tile; each yielded array is unique and no cell is
    yielded twice over the whole feature. Memory is bounded by ``budget`` (roughly)."""
    import shapely

    polygons = [p for poly in polygons for p in normalize_polygon(poly)]
    lines = [p for line in lines for p in normalize_line(line)]
    m_lat = _margin_deg(res)
    pts = shapely.get_coordinates(np.asarray(points, dtype=object)) if points else np.empty((0, 2))
    stack: list[tuple[tuple[float, float, float, float], list[Any], list[Any], int]] = []
    for x0 in (90.0, 0.0, -90.0, -180.0):  # popped in west-to-east order
        rect = (x0, -90.0, x0 + 90.0, 90.0)
        regions = _clip_regions(rect, m_lat)
        stack.append((rect, _clip_all(polygons, regions, (3,)), _clip_all(lines, regions, (1, 2)), 0))
    while stack:
        rect, polys, lns, depth = stack.pop()
        x0, y0, x1, y1 = rect
        in_pts = pts
        if len(pts):
            mask = np.zeros(len(pts), dtype=bool)
            for box in _clip_regions(rect, m_lat):
                bx0, by0, bx1, by1 = box.bounds
                mask |= (pts[:, 0] >= bx0) & (pts[:, 0] <= bx1) & (pts[:, 1] >= by0) & (pts[:, 1] <= by1)
            in_pts = pts[mask]
        if not polys and not lns and not len(in_pts):
            continue
        parts = Parts(
            np.asarray(polys, dtype=object),
            np.zeros(len(polys), np.int64),
            np.asarray(lns, dtype=object),
            np.zeros(len(lns), np.int64),
            np.empty(0, dtype=object),
            np.zeros(0, np.int64),
        )
        est = float(estimate_cells(parts, 1, res)[0])
        # a tile is never split below the margin (about a cell): its estimate could not shrink
        if est > budget and depth < 40 and (y1 - y0) > m_lat:
            xm, ym = (x0 + x1) / 2.0, (y0 + y1) / 2.0
            if _lon_margin(rect, m_lat) >= _MAX_LON_MARGIN:
                # near a pole cells are wider than any longitude margin: split in latitude only, so
                # the result does not depend on the budget
                children = [(x0, y0, x1, ym), (x0, ym, x1, y1)]
            else:
                children = [(x0, y0, xm, ym), (xm, y0, x1, ym), (x0, ym, xm, y1), (xm, ym, x1, y1)]
            for child in reversed(children):
                regions = _clip_regions(child, m_lat)
                stack.append((child, _clip_all(polys, regions, (3,)), _clip_all(lns, regions, (1, 2)), depth + 1))
            continue
        chunks = []
        if polys:
            _, c = polygon_cells(np.asarray(polys, dtype=object), res, mode)
            chunks.append(c)
        if lns:
            for _, c in line_cells(np.asarray(lns, dtype=object), res, budget):
                chunks.append(c)
        if len(in_pts):
            chunks.append(point_cells(in_pts[:, 0], in_pts[:, 1], res))
        cells = np.sort(np.concatenate(chunks)) if chunks else np.empty(0, np.uint64)
        if len(cells):
            cells = cells[np.r_[True, cells[1:] != cells[:-1]]]
        cells = cells[_owned(cells, rect)]
        if len(cells):
            yield cells


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


def feature_cells(
    geoms: np.ndarray, res: int, mode: str = "center", budget: int = DEFAULT_BUDGET
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cells of a batch of shapely geometries (None / empty give none).

    Yields ``(feature index, cells)`` pairs in feature order (all pairs of a feature before those
    of the next), without duplicate (feature, cell) pairs; every non-empty feature gets at least
    one cell. Each yielded batch holds about ``budget`` cells at most.

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
    tile = needs_tiling(parts, n) | (est > budget)
    has_parts = np.zeros(n, dtype=bool)
    for arr in (parts.polygon_index, parts.line_index, parts.point_index):
        has_parts[arr] = True

    # Contiguous runs: a tiled feature alone, or simple features up to ~``budget`` estimated cells
    # (found with numpy: no Python loop per feature).
    edges = np.flatnonzero(tile)
    stretches = []
    prev = 0
    for t in edges:
        stretches.append((prev, int(t)))
        stretches.append((int(t), int(t) + 1))
        prev = int(t) + 1
    stretches.append((prev, n))
    for a, b in stretches:
        if a >= b:
            continue
        if tile[a]:
            yield from _tiled_feature(parts, a, geoms[a], res, mode, budget)
            continue
        before = np.cumsum(est[a:b]) - est[a:b]
        group = np.floor(before / budget).astype(np.int64)
        cuts = np.flatnonzero(np.r_[True, group[1:] != group[:-1], True]) + a
        for i, j in zip(cuts[:-1], cuts[1:], strict=True):
            yield from _simple_run(parts, int(i), int(j), geoms, has_parts, res, mode, budget)


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
    parts: Parts, i: int, geom: Any, res: int, mode: str, budget: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    polys = list(parts.polygons[_select(parts.polygon_index, i, i + 1)])
    lines = list(parts.lines[_select(parts.line_index, i, i + 1)])
    points = list(parts.points[_select(parts.point_index, i, i + 1)])
    any_cells = False
    for cells in tiled_cells(polys, lines, points, res, mode, budget):
        any_cells = True
        yield np.full(len(cells), i, dtype=np.int64), cells
    if not any_cells:
        pt = _fallback_point(geom)
        if pt is not None:
            yield np.array([i], np.int64), point_cells(np.array([pt[0]]), np.array([pt[1]]), res)

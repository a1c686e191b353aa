"""Tiling of features that H3 cannot take whole (wider than 90° of longitude, round a pole, or
more cells than the batch budget): explode into parts, estimate their cells, cut into tiles and
keep in each tile only the cells it owns."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cng_datasets.geometry import split_line, split_polygon
from cng_datasets.h3cells.cells import (
    DEFAULT_BUDGET,
    KM_PER_DEG,
    cell_area_km2,
    cell_centers,
    edge_km,
    line_cells,
    point_cells,
    polygon_cells,
)

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


def estimate_cells(parts: Parts, n_features: int, res: int, certain: bool = False) -> np.ndarray:
    """A rough per-feature estimate of the number of cells (within a small factor). ``certain``:
    only the cells a feature surely has — its polygons' area in cells and its lines' length in
    edges, not its polygons' perimeter (a sliver of huge perimeter may cover no cell centre)."""
    import shapely

    est = np.zeros(n_features, dtype=np.float64)
    cell_km2 = cell_area_km2(res)
    edge = edge_km(res)
    if len(parts.polygons):
        sinu = _sinusoidal(parts.polygons)
        area = shapely.area(sinu) * KM_PER_DEG**2
        perim = 0.0 if certain else shapely.length(sinu) * KM_PER_DEG
        np.add.at(est, parts.polygon_index, area / cell_km2 + perim / edge + 1.0)
    if len(parts.lines):
        length = shapely.length(_sinusoidal(parts.lines)) * KM_PER_DEG
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
    return 3.0 * edge_km(res) / KM_PER_DEG


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
    polygons: list[Any],
    lines: list[Any],
    points: list[Any],
    res: int,
    mode: str,
    budget: int = DEFAULT_BUDGET,
    keep: Callable[[int], bool] | None = None,
) -> Iterator[np.ndarray]:
    """Cells of one feature, computed tile by tile; each yielded array is unique and no cell is
    yielded twice over the whole feature. Memory is bounded by ``budget`` (roughly).

    ``keep``: computes only the tiles whose number (in the order they are reached, the same for a
    given feature, resolution and budget) it accepts — how one huge feature's work is shared
    among processes without any cell computed twice or left out."""
    import shapely

    polygons = [p for poly in polygons for p in normalize_polygon(poly)]
    lines = [p for line in lines for p in normalize_line(line)]
    m_lat = _margin_deg(res)
    pts = shapely.get_coordinates(np.asarray(points, dtype=object)) if points else np.empty((0, 2))
    stack: list[tuple[tuple[float, float, float, float], list[Any], list[Any], int]] = []
    leaf = 0
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
        leaf += 1
        if keep is not None and not keep(leaf - 1):
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

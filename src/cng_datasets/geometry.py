"""Geometry normalisation shared by the steps.

Antimeridian: in lon/lat data, an edge that jumps more than 180° of longitude (179.9 → −179.9) is
meant to cross ±180, but every planar tool (and H3, and tippecanoe) reads it as a band round the
whole globe. :func:`split_antimeridian` cuts such lines and polygons at ±180, as RFC 7946 §3.1.9
asks. Edges from exactly ±180 to ∓180 (Antarctica's ring along −90) are planar
boundaries, not crossings, and are left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

#: Degrees from ±180 within which a vertex counts as on the antimeridian (reprojection noise).
_SEAM_TOLERANCE = 1e-7


def _crossing_edges(coords: np.ndarray) -> np.ndarray:
    """Boolean per edge: longitude jump > 180° that is not a seam.

    An edge from ±180 to ∓180 joins two points on the same meridian (on the
    sphere it has no east-west extent): it is the planar boundary of an already split or clipped
    polygon (Antarctica along −90, a polygon clipped along a parallel), not a crossing.
    """
    if len(coords) < 2:
        return np.zeros(0, dtype=bool)
    lon = coords[:, 0]
    dlon = np.abs(np.diff(lon))
    on_meridian = np.abs(np.abs(lon) - 180.0) <= _SEAM_TOLERANCE
    seam = on_meridian[:-1] | on_meridian[1:]
    return (dlon > 180.0) & ~seam


def _unwrap(coords: np.ndarray) -> np.ndarray:
    """Make longitudes continuous across ±180 (may leave [-180, 180])."""
    out = coords.copy()
    if len(out) < 2:
        return out
    dlon = np.diff(out[:, 0])
    shift = np.where(dlon > 180.0, -360.0, np.where(dlon < -180.0, 360.0, 0.0))
    out[1:, 0] += np.cumsum(shift)
    return out


def _wrap_into_world(geom: BaseGeometry) -> list[BaseGeometry]:
    """Cut an unwrapped geometry into pieces, each shifted back into [-180, 180]."""
    xmin, _, xmax, _ = geom.bounds
    parts: list[BaseGeometry] = []
    k_lo = int(np.floor((xmin + 180.0) / 360.0))
    k_hi = int(np.floor((xmax + 180.0) / 360.0))
    for k in range(k_lo, k_hi + 1):
        window = box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        piece = geom.intersection(window)
        if piece.is_empty:
            continue
        if k:
            piece = shapely.transform(piece, lambda c, dx=360.0 * k: c - np.array([dx, 0.0]))
        parts.append(piece)
    return parts


def _close_around_pole(ring: np.ndarray) -> np.ndarray:
    """A ring that unwraps to a ±360° open band encircles a pole: close it along that pole."""
    start, end = ring[0], ring[-1]
    pole = -90.0 if np.mean(ring[:, 1]) < 0 else 90.0
    extra = np.array([[end[0], pole], [start[0], pole], start])
    return np.vstack([ring[:-1] if np.allclose(ring[-1], ring[0]) else ring, extra])


def split_polygon(poly: Polygon) -> list[Polygon]:
    """One lon/lat polygon → polygons inside [-180, 180], cut where a ring crosses ±180."""
    rings = [np.asarray(poly.exterior.coords)] + [np.asarray(r.coords) for r in poly.interiors]
    if not any(_crossing_edges(r).any() for r in rings):
        return [poly]
    shell = _unwrap(rings[0])
    if abs(shell[-1, 0] - shell[0, 0]) > 180.0:
        shell = _close_around_pole(shell)
    centre = (shell[:, 0].min() + shell[:, 0].max()) / 2.0
    holes = []
    for ring in rings[1:]:
        h = _unwrap(ring)
        # move the hole by whole turns so it sits inside the shell's longitude range
        h[:, 0] += 360.0 * np.round((centre - h[:, 0].mean()) / 360.0)
        holes.append(h)
    unwrapped = shapely.make_valid(Polygon(shell, holes))
    return [p for p in _flatten(_wrap_into_world(unwrapped), Polygon) if p.area > 0]


def split_line(line: LineString) -> list[LineString]:
    """One lon/lat line → lines inside [-180, 180], cut where an edge crosses ±180."""
    coords = np.asarray(line.coords)
    if not _crossing_edges(coords).any():
        return [line]
    return _flatten(_wrap_into_world(LineString(_unwrap(coords))), LineString)


def _flatten(geoms: list[BaseGeometry], kind: type) -> list[Any]:
    out: list[Any] = []
    for g in geoms:
        if isinstance(g, kind):
            out.append(g)
        elif hasattr(g, "geoms"):
            out.extend(_flatten(list(g.geoms), kind))
    return out


def split_antimeridian_one(geom: BaseGeometry) -> BaseGeometry:
    """Split one lon/lat geometry at ±180 where an edge crosses it; unchanged otherwise."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        polys = [geom] if isinstance(geom, Polygon) else list(geom.geoms)
        pieces = [p for poly in polys for p in split_polygon(poly)]
        parts = _flatten(pieces, Polygon)
        if parts == polys:
            return geom
        return parts[0] if len(parts) == 1 and isinstance(geom, Polygon) else MultiPolygon(parts)
    if isinstance(geom, (LineString, MultiLineString)):
        lines = [geom] if isinstance(geom, LineString) else list(geom.geoms)
        parts = _flatten([p for ln in lines for p in split_line(ln)], LineString)
        if parts == lines:
            return geom
        return parts[0] if len(parts) == 1 and isinstance(geom, LineString) else MultiLineString(parts)
    if hasattr(geom, "geoms"):  # GeometryCollection
        return shapely.GeometryCollection([split_antimeridian_one(g) for g in geom.geoms])
    return geom


def split_antimeridian(geoms: np.ndarray) -> tuple[np.ndarray, int]:
    """Vectorised front end of :func:`split_antimeridian_one` for lon/lat geometries.

    Only geometries whose bounding box spans more than 180° of longitude can hold a crossing edge,
    so the per-geometry work is limited to those. Returns the new array and how many changed.
    """
    bounds = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        wide = np.flatnonzero((bounds[:, 2] - bounds[:, 0]) > 180.0)
    changed = 0
    if len(wide):
        geoms = geoms.copy()
        for i in wide:
            new = split_antimeridian_one(geoms[i])
            if new is not geoms[i]:
                geoms[i] = new
                changed += 1
    return geoms, changed

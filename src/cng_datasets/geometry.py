"""Geometry normalisation shared by the steps.

Antimeridian: in lon/lat data, an edge that jumps more than 180° of longitude (179.9 → −179.9) is
meant to cross ±180, but every planar tool (and H3, and tippecanoe) reads it as a band round the
whole globe. :func:`split_antimeridian` cuts such lines and polygons at ±180, as RFC 7946 §3.1.9
asks. Edges from exactly ±180 to ∓180 (Antarctica's ring along −90) are planar
boundaries, not crossings, and are left alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from numpy.typing import NDArray
from shapely.geometry import LineString, MultiLineString, MultiPolygon, Polygon, box
from shapely.geometry.base import BaseGeometry

#: Degrees from ±180 within which a vertex counts as on the antimeridian (reprojection noise).
_SEAM_TOLERANCE = 1e-7


def is_lonlat_crs84(crs: Any) -> bool:
    """Whether a pyproj CRS is OGC:CRS84 up to axis order (EPSG:4326 counts): lon/lat degrees,
    the CRS GeoParquet means when ``crs`` is omitted."""
    import pyproj

    return bool(crs.equals(pyproj.CRS.from_user_input("OGC:CRS84"), ignore_axis_order=True))


def _crossing_edges(coords: np.ndarray, closed: bool = True) -> np.ndarray:
    """Boolean per edge of one ring (``closed``) or line: which edges cross ±180.

    An edge jumping more than 180° of longitude is either a crossing (179.6 → −179.8, the short
    way round) or a planar boundary of geometry already cut at ±180 (Natural Earth's Antarctica
    runs from +180 to −180 along −90; a polygon clipped to a latitude band runs along that
    parallel from 180 westwards). Decided per ring:

    - a ring that closes when every long edge is taken the short way is a crossing ring: all its
      long edges cross (also those through a vertex lying exactly on ±180);
    - a ring that then winds once round the globe (round a pole) crosses only if it has a long
      edge between two points off the antimeridian (a raw polar ring), or if all its long edges
      touch ±180 but the ring taken as drawn is not simple (a raw polar ring with a vertex on
      ±180); otherwise it is already cut, and is taken as drawn.

    A line crosses where it has a long edge off the antimeridian (then all its long edges do).
    """
    if len(coords) < 2:
        return np.zeros(0, dtype=bool)
    lon = coords[:, 0]
    long_edge = np.abs(np.diff(lon)) > 180.0
    if not long_edge.any():
        return long_edge
    on_meridian = np.abs(np.abs(lon) - 180.0) <= _SEAM_TOLERANCE
    off_seam = (long_edge & ~(on_meridian[:-1] | on_meridian[1:])).any()
    if closed:
        unwrapped = _unwrap(coords, long_edge)
        if abs(unwrapped[-1, 0] - unwrapped[0, 0]) < 180.0:
            return long_edge
        if not off_seam and len(coords) >= 4 and not shapely.is_valid(Polygon(coords[:, :2])):
            # every long edge touches ±180, yet as drawn the ring runs back over itself: not a cut
            # polygon but a raw ring round a pole with a vertex that happens to lie on ±180 (taken
            # as drawn it would collapse to nothing)
            return long_edge
    return long_edge if off_seam else np.zeros(len(long_edge), dtype=bool)


def _unwrap(coords: np.ndarray, crossing: np.ndarray | None = None) -> np.ndarray:
    """Make longitudes continuous across the ``crossing`` edges (default: every edge > 180°)."""
    out = coords.copy()
    if len(out) < 2:
        return out
    dlon = np.diff(out[:, 0])
    if crossing is None:
        crossing = np.abs(dlon) > 180.0
    shift = np.where(crossing & (dlon > 180.0), -360.0, np.where(crossing & (dlon < -180.0), 360.0, 0.0))
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

            def shift(c: NDArray[np.float64], dx: float = 360.0 * k) -> NDArray[np.float64]:
                return c - np.array([dx, 0.0], dtype=np.float64)

            piece = shapely.transform(piece, shift)
        parts.append(piece)
    return parts


def _close_around_pole(ring: np.ndarray, pole: float | None = None) -> np.ndarray:
    """A ring that unwraps to a ±360° open band encircles a pole: close it along that pole
    (``pole``, or the one on the side of the ring's mean latitude)."""
    start, end = ring[0], ring[-1]
    if pole is None:
        pole = -90.0 if np.mean(ring[:, 1]) < 0 else 90.0
    extra = np.array([[end[0], pole], [start[0], pole], start])
    return np.vstack([ring[:-1] if np.allclose(ring[-1], ring[0]) else ring, extra])


def split_polygon(poly: Polygon, pole: float | None = None) -> list[Polygon]:
    """One lon/lat polygon → polygons inside [-180, 180], cut where a ring crosses ±180.

    ``pole`` (±90) says the polygon is known to contain that pole (e.g. it did in its source
    projection): its shell then winds round the pole and is closed along it, whatever its edges
    look like.
    """
    rings = [np.asarray(poly.exterior.coords)] + [np.asarray(r.coords) for r in poly.interiors]
    crossings = [_crossing_edges(r) for r in rings]
    if pole is None and not any(c.any() for c in crossings):
        return [poly]
    shell = _unwrap(rings[0], None if pole is not None else crossings[0])
    if abs(shell[-1, 0] - shell[0, 0]) > 180.0:
        shell = _close_around_pole(shell, pole)
    centre = (shell[:, 0].min() + shell[:, 0].max()) / 2.0
    holes = []
    for ring, crossing in zip(rings[1:], crossings[1:], strict=True):
        h = _unwrap(ring, crossing)
        # move the hole by whole turns so it sits inside the shell's longitude range
        h[:, 0] += 360.0 * np.round((centre - h[:, 0].mean()) / 360.0)
        holes.append(h)
    unwrapped = shapely.make_valid(Polygon(shell, holes))
    return [p for p in _flatten(_wrap_into_world(unwrapped), Polygon) if p.area > 0]


def split_line(line: LineString) -> list[LineString]:
    """One lon/lat line → lines inside [-180, 180], cut where an edge crosses ±180."""
    coords = np.asarray(line.coords)
    crossing = _crossing_edges(coords, closed=False)
    if not crossing.any():
        return [line]
    return _flatten(_wrap_into_world(LineString(_unwrap(coords, crossing))), LineString)


def _flatten(geoms: Sequence[BaseGeometry], kind: type) -> list[Any]:
    out: list[Any] = []
    for g in geoms:
        if isinstance(g, kind):
            out.append(g)
        elif hasattr(g, "geoms"):
            out.extend(_flatten(list(g.geoms), kind))
    return out


def split_antimeridian_one(geom: BaseGeometry, part_poles: Sequence[float | None] | None = None) -> BaseGeometry:
    """Split one lon/lat geometry at ±180 where an edge crosses it; unchanged otherwise.

    ``part_poles``: for each polygon of a (multi)polygon, the pole it is known to contain, or
    ``None`` (see :func:`split_polygon`).
    """
    if isinstance(geom, (Polygon, MultiPolygon)):
        polys = [geom] if isinstance(geom, Polygon) else list(geom.geoms)
        poles = list(part_poles) if part_poles is not None else [None] * len(polys)
        pieces = [p for poly, pole in zip(polys, poles, strict=True) for p in split_polygon(poly, pole)]
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


def split_antimeridian(
    geoms: np.ndarray, part_poles: dict[int, list[float | None]] | None = None
) -> tuple[np.ndarray, int]:
    """Vectorised front end of :func:`split_antimeridian_one` for lon/lat geometries.

    Only geometries whose bounding box spans more than 180° of longitude can hold a crossing edge,
    so the per-geometry work is limited to those (and to the keys of ``part_poles``, which maps a
    geometry's index to the pole each of its polygons contains). Returns the new array and how
    many changed.
    """
    part_poles = part_poles or {}
    bounds = shapely.bounds(geoms)
    with np.errstate(invalid="ignore"):
        wide = set(np.flatnonzero((bounds[:, 2] - bounds[:, 0]) > 180.0).tolist()) | set(part_poles)
    changed = 0
    if wide:
        geoms = geoms.copy()
        for i in sorted(wide):
            new = split_antimeridian_one(geoms[i], part_poles.get(i))
            if new is not geoms[i]:
                geoms[i] = new
                changed += 1
    return geoms, changed

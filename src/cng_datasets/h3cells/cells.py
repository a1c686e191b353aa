"""H3 calls on arrays: the range check, cell arithmetic, and the cells of polygons, points and
lines in lon/lat (h3ronpy, vectorized). Knows nothing of tiling or features."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from cng_datasets.errors import OutOfRangeError

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

KM_PER_DEG = 111.32
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
    return edge_km(res) / KM_PER_DEG / 4.0


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

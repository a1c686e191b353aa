"""H3 cell computation against independent references on real data.

References: h3-py (per-feature loops) and, for centre containment on the whole globe (where h3-py
itself cannot fill Antarctica), a brute force: every cell of the resolution whose centre lies in
the polygon by shapely's planar point-in-polygon.
"""

from __future__ import annotations

import math
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import pyogrio.raw
import pytest
import shapely

from cng_datasets import h3cells
from cng_datasets.errors import OutOfRangeError
from tests.conftest import CITIES, data_file


def _read(path, layer=None):
    meta, _, wkb, fields = pyogrio.raw.read(str(path), layer=layer)
    names = list(meta["fields"])
    return shapely.from_wkb(wkb), {n: fields[i] for i, n in enumerate(names)}


def _cells_by_feature(geoms, res, **kw):
    out = list(h3cells.feature_cells(geoms, res, **kw))
    idx = np.concatenate([o[0] for o in out]) if out else np.empty(0, np.int64)
    cells = np.concatenate([o[1] for o in out]) if out else np.empty(0, np.uint64)
    pairs = set(zip(idx.tolist(), cells.tolist(), strict=True))
    assert len(pairs) == len(cells), "duplicate (feature, cell) pairs"
    by = {i: set() for i in range(len(geoms))}
    for i, c in pairs:
        by[i].add(c)
    return by


@pytest.fixture(scope="module")
def lowres():
    return _read(data_file("naturalearth_lowres") / "naturalearth_lowres.shp")


@pytest.fixture(scope="module")
def countries10m():
    return _read(data_file("ne_10m_admin_0_countries_deu.zip"))


def _all_cells(res):
    cells = np.array(sorted(c for r0 in h3.get_res0_cells() for c in h3.cell_to_children(r0, res)), dtype=np.uint64)
    lng, lat = h3cells.cell_centers(cells)
    return cells, lng, lat


def test_parent_cells_equal_h3py():
    rng = np.random.default_rng(1)
    lat, lng = rng.uniform(-90, 90, 500), rng.uniform(-180, 180, 500)
    cells = np.array([h3.latlng_to_cell(a, b, 12) for a, b in zip(lat, lng, strict=True)], dtype=np.uint64)
    for p in (0, 5, 11, 12):
        expect = [h3.cell_to_parent(int(c), p) for c in cells]
        assert h3cells.parent_cells(cells, p).tolist() == expect


def test_10m_countries_center_equal_bruteforce_reference_everywhere(countries10m):
    """All 250 countries at res 3, incl. Russia and Fiji (split at ±180) and Antarctica (to −90)."""
    geoms, fields = countries10m
    res = 3
    mine = _cells_by_feature(geoms, res)
    cells, lng, lat = _all_cells(res)
    bad = []
    for i, g in enumerate(geoms):
        ref = set(cells[shapely.contains_xy(g, lng, lat)].tolist())
        if not ref:  # smaller than a cell: exactly one cell, the one of a point inside
            assert len(mine[i]) == 1, fields["NAME"][i]
            (c,) = mine[i]
            hexagon = shapely.Polygon([(lng_, lat_) for lat_, lng_ in h3.cell_to_boundary(c)])
            assert hexagon.intersects(g), fields["NAME"][i]
            continue
        if ref != mine[i]:
            bad.append(fields["NAME"][i])
    assert not bad


def test_lowres_center_equal_h3py_where_h3py_works(lowres):
    geoms, fields = lowres
    res = 4
    mine = _cells_by_feature(geoms, res)
    checked = 0
    for i, g in enumerate(geoms):
        if g.bounds[2] - g.bounds[0] > 180:  # h3-py cannot take these (Antarctica): covered above
            continue
        ref = set(h3.geo_to_cells(g, res))
        if ref:
            assert mine[i] == ref, fields["name"][i]
            checked += 1
    assert checked > 150


@pytest.mark.parametrize("mode", ["overlap", "full"])
def test_lowres_modes_equal_h3py_experimental(lowres, mode):
    geoms, fields = lowres
    res = 3
    mine = _cells_by_feature(geoms, res, mode=mode)
    for i, g in enumerate(geoms):
        if g.bounds[2] - g.bounds[0] > 180:
            continue
        ref = set(h3.h3shape_to_cells_experimental(h3.geo_to_h3shape(g), res, contain=mode))
        if ref:
            assert mine[i] == ref, fields["name"][i]
        else:
            assert len(mine[i]) == 1


@pytest.mark.parametrize("mode", ["center", "overlap", "full"])
def test_tiling_in_small_budgets_changes_nothing(lowres, mode):
    """The streamed, tiled path (used for huge features) gives the same cells as one H3 call."""
    geoms, fields = lowres
    names = list(fields["name"])
    pick = [names.index(n) for n in ("Russia", "Fiji", "Antarctica", "Canada", "France", "Brazil")]
    sub = geoms[pick]
    assert _cells_by_feature(sub, 3, mode=mode, budget=300) == _cells_by_feature(sub, 3, mode=mode)


def test_huge_feature_streamed_in_bounded_batches(lowres):
    geoms, fields = lowres
    russia = geoms[list(fields["name"]).index("Russia")]
    batches = list(h3cells.feature_cells(np.array([russia], dtype=object), 4, budget=2000))
    assert len(batches) > 10
    assert max(len(c) for _, c in batches) < 4 * 2000
    all_cells = np.concatenate([c for _, c in batches])
    assert len(np.unique(all_cells)) == len(all_cells)


def test_fiji_russia_antarctica_lie_where_they_are(countries10m):
    geoms, fields = countries10m
    names = list(fields["NAME_EN"])
    res = 2
    for name, check in {
        "Fiji": lambda lng, lat: np.all((np.abs(lng) > 174) & (lat < -12) & (lat > -22)),
        "Russia": lambda lng, lat: np.all(((lng > 18) | (lng < -168)) & (lat > 40)),
        "Antarctica": lambda lng, lat: np.all(lat < -60),
    }.items():
        i = names.index(name)
        cells = np.array(sorted(_cells_by_feature(geoms[i : i + 1], res)[0]), dtype=np.uint64)
        lng, lat = h3cells.cell_centers(cells)
        assert len(cells) and check(lng, lat), name
    ant = names.index("Antarctica")
    ant_cells = _cells_by_feature(geoms[ant : ant + 1], res)[0]
    assert h3.latlng_to_cell(-90, 0, res) in ant_cells
    # roughly Antarctica's 14 million km² (not the rest of the globe)
    area = len(ant_cells) * h3.average_hexagon_area(res, "km^2")
    assert 10e6 < area < 18e6


def test_raw_ring_crossing_antimeridian_is_filled_the_short_way():
    raw = shapely.Polygon([(178, -18), (-178, -18), (-178, -15), (178, -15)])  # no split at ±180
    res = 4
    mine = _cells_by_feature(np.array([raw], dtype=object), res)[0]
    ref = set(h3.geo_to_cells(shapely.box(178, -18, 180, -15), res)) | set(
        h3.geo_to_cells(shapely.box(-180, -18, -178, -15), res)
    )
    assert mine == ref
    lng, _ = h3cells.cell_centers(np.array(sorted(mine), dtype=np.uint64))
    assert np.all(np.abs(lng) > 177)


def test_ring_round_a_pole_without_pole_edge_is_a_polar_cap():
    # a ring crossing ±180 once and winding round the south pole (TopoJSON style), no pole edge
    coords = [(float(x), -75.0) for x in np.arange(-170, 180, 10.0)] + [(-170.0, -75.0)]
    cap = shapely.Polygon(coords[::-1])
    res = 2
    mine = _cells_by_feature(np.array([cap], dtype=object), res)[0]
    cells, lng, lat = _all_cells(res)
    # planar: the cap is every centre south of the ring (the ring's chord edges are along -75°)
    ref = set(cells[lat < -75.0].tolist())
    assert mine == ref
    assert h3.latlng_to_cell(-90, 0, res) in mine


def test_lines_every_cell_passed_without_gaps(lowres):
    geoms, _ = lowres
    lines = shapely.boundary(geoms[:60])
    res = 4
    mine = _cells_by_feature(lines, res)
    step = h3cells.edge_km(res) / 111.32 / 64  # an h3-py loop, 16× denser than ours
    for i, line in enumerate(lines):
        ref = set()
        for part in shapely.get_parts(line):
            xy = shapely.get_coordinates(part)
            for (x0, y0), (x1, y1) in zip(xy[:-1], xy[1:], strict=True):
                dx = x1 - x0
                dx = dx - 360 if dx > 180 else dx + 360 if dx < -180 else dx
                n = max(1, math.ceil(max(abs(dx), abs(y1 - y0)) / step))
                for k in range(n + 1):
                    x = (x0 + dx * k / n + 180) % 360 - 180
                    ref.add(h3.latlng_to_cell(y0 + (y1 - y0) * k / n, x, res))
        assert ref <= mine[i]
        # anything extra is a real neighbour of the path (a corner grazed closer than the loop's step)
        for c in mine[i] - ref:
            assert any(h3.are_neighbor_cells(c, r) for r in ref)
        # connected: every line's cells form one chain per part
        for part in shapely.get_parts(line):
            part_cells = _cells_by_feature(np.array([part], dtype=object), res)[0]
            seen, todo = set(), [next(iter(part_cells))]
            while todo:
                c = todo.pop()
                if c in seen:
                    continue
                seen.add(c)
                todo.extend(n for n in h3.grid_disk(c, 1) if n in part_cells)
            assert seen == part_cells


def test_line_across_antimeridian_and_near_pole_has_no_gaps():
    lines = np.array(
        [shapely.LineString([(179.0, 10.0), (-179.0, 11.0)]), shapely.LineString([(-170.0, 88.0), (170.0, 88.5)])],
        dtype=object,
    )
    by = _cells_by_feature(lines, 5)
    lng, _ = h3cells.cell_centers(np.array(sorted(by[0]), dtype=np.uint64))
    assert np.all(np.abs(lng) > 178)
    for cells in by.values():
        for c in cells:
            assert any(h3.are_neighbor_cells(c, o) for o in cells if o != c)


def test_cities_points_equal_h3py():
    path = data_file(CITIES)
    import pyarrow.csv as pcsv

    t = pcsv.read_csv(path, read_options=pcsv.ReadOptions(block_size=1 << 24))
    lat = t.column("lat").to_numpy()[:30000]
    lon = t.column("lon").to_numpy()[:30000]
    pts = shapely.points(lon, lat)
    by = _cells_by_feature(pts, 9)
    for i in range(0, len(pts), 7):
        assert by[i] == {h3.latlng_to_cell(lat[i], lon[i], 9)}


def test_tiny_features_collections_and_3d():
    tiny = shapely.box(10, 10, 10.001, 10.001)  # far smaller than a res-3 cell
    coll = shapely.GeometryCollection(
        [shapely.Point(0, 0), shapely.LineString([(0, 0), (0.5, 0.5)]), shapely.box(0, 0, 2, 2)]
    )
    multi_overlap = shapely.MultiPolygon([shapely.box(0, 0, 1, 1), shapely.box(0.5, 0.5, 1.5, 1.5)])
    point3d = shapely.Point(5, 5, 100)
    geoms = np.array([tiny, None, coll, shapely.Polygon(), multi_overlap, point3d], dtype=object)
    for mode in ("center", "full", "overlap"):
        by = _cells_by_feature(geoms, 3, mode=mode)
        assert by[0] == {h3.latlng_to_cell(10.0005, 10.0005, 3)}
        assert by[1] == set() and by[3] == set()
        assert len(by[2]) >= 1 and h3.latlng_to_cell(0, 0, 3) in by[2]
        assert len(by[4]) >= 1
        assert by[5] == {h3.latlng_to_cell(5, 5, 3)}


def test_coordinates_outside_lonlat_raise_instead_of_being_clipped():
    """Projected metres are refused (naming the feature's position), never clipped to ±90."""
    from cng_datasets.errors import DataError

    ok = shapely.Point(10.0, 50.0)
    metres = shapely.box(1_000_000.0, 6_000_000.0, 1_100_000.0, 6_100_000.0)  # Web Mercator, roughly Germany
    for bad in (metres, shapely.Point(10.0, 95.0), shapely.LineString([(0, 0), (200, 10)])):
        geoms = np.array([ok, None, bad, bad], dtype=object)
        with pytest.raises(OutOfRangeError) as info:
            list(h3cells.feature_cells(geoms, 3))
        assert info.value.index == 2 and "outside [-180, 180] x [-90, 90]" in str(info.value)
        assert isinstance(info.value, DataError)
    with pytest.raises(OutOfRangeError, match="outside"):
        h3cells.point_cells(np.array([10.0]), np.array([91.0]), 3)
    # the edges themselves, and float noise of a hair beyond them, are lon/lat
    edge = np.array(
        [shapely.Point(180.0, 90.0), shapely.Point(-180.0, -90.0), shapely.Point(180.0 + 1e-12, 45.0)], dtype=object
    )
    idx, _cells = zip(*h3cells.feature_cells(edge, 3), strict=True)
    assert sorted(np.concatenate(idx).tolist()) == [0, 1, 2]
    assert h3cells.point_cells(np.array([0.0]), np.array([90.0 + 1e-12]), 3)[0] == h3.latlng_to_cell(90.0, 0.0, 3)


def test_shares_together_are_the_unshared_cells_slivers_included() -> None:
    """A zig-zag sliver has a huge perimeter but no cell centre: it is not split among shares
    (a split feature gets no fallback cell), so its owner gives it the cell of a point on it."""
    xs = np.linspace(-40, 40, 400)
    sliver = shapely.LineString(np.c_[xs, np.where(np.arange(400) % 2, 0.3, -0.3)]).buffer(1e-6, cap_style=2)
    geoms = np.array([sliver, shapely.box(-60, -20, -50, -10), None], dtype=object)

    def pairs(**kw: Any) -> list[tuple[int, int]]:
        return sorted((int(i), int(c)) for idx, cs in h3cells.feature_cells(geoms, 5, "center", 300, **kw)
                      for i, c in zip(idx, cs, strict=True))  # fmt: skip

    whole = pairs()
    shared, splits = [], set()
    for k in range(3):
        split: set[int] = set()
        shared += pairs(share=h3cells.Share(k, 3), owned=np.arange(3) == k, split=split)
        splits |= split
    assert sorted(shared) == whole and splits == {1}  # the box's tiles are split, the sliver is not
    assert sum(1 for i, _ in whole if i == 0) == 1

"""geometry: antimeridian splitting cuts true crossings and leaves cut seams and poles alone."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from cng_datasets.geometry import split_antimeridian, split_antimeridian_one


def test_crossing_polygon_split_into_two_halves() -> None:
    ring = [(178, -10), (-178, -10), (-178, -20), (178, -20), (178, -10)]
    out = split_antimeridian_one(shapely.Polygon(ring))
    assert out.geom_type == "MultiPolygon" and len(out.geoms) == 2
    assert out.area == pytest.approx(40.0)
    assert sorted(round(g.bounds[0]) for g in out.geoms) == [-180, 178]


def test_crossing_polygon_with_hole_keeps_hole() -> None:
    shell = [(170, 0), (-170, 0), (-170, 10), (170, 10), (170, 0)]
    hole = [(179, 4), (-179, 4), (-179, 6), (179, 6), (179, 4)]
    out = split_antimeridian_one(shapely.Polygon(shell, [hole]))
    assert out.area == pytest.approx(20 * 10 - 2 * 2)


def test_already_split_and_pole_polygons_unchanged() -> None:
    # Antarctica-like: along -90 from 180 to -180
    ant = shapely.Polygon([(-180, -90), (-180, -80), (0, -70), (180, -80), (180, -90), (-180, -90)])
    assert split_antimeridian_one(ant) is ant
    # clipped along a parallel (Web Mercator Antarctica): the edge from 180 westwards to -143 is a
    # real planar boundary; the coast runs all the way round, so the short way would wind round
    # the pole
    clipped = shapely.Polygon(
        [(180, -84), (180, -85), (-143, -85), (-142, -84), (-100, -80), (0, -75), (100, -80), (180, -84)]
    )
    assert split_antimeridian_one(clipped) is clipped
    east = shapely.Polygon([(177, -17), (180, -17), (180, -16), (177, -16), (177, -17)])
    assert split_antimeridian_one(east) is east


def test_ring_around_a_pole_is_closed_along_it() -> None:
    # a ring round the north pole at 80°N given without the pole: must cover the cap, not a band
    lons = np.linspace(-170, 170, 18)
    ring = [(x, 80.0) for x in lons] + [(lons[0], 80.0)]
    out = split_antimeridian_one(shapely.Polygon(ring))
    assert out.bounds[3] == pytest.approx(90.0)
    assert out.bounds[1] == pytest.approx(80.0)


def test_crossing_through_vertices_on_the_antimeridian() -> None:
    # crosses only at vertices lying exactly on ±180: still a small polygon, not a band
    diamond = [(178, 0), (180, -1), (-178, 0), (180, 1), (178, 0)]
    out = split_antimeridian_one(shapely.Polygon(diamond))
    assert out.geom_type == "MultiPolygon" and out.area == pytest.approx(4.0)
    assert sorted(round(g.bounds[0]) for g in out.geoms) == [-180, 178]


def test_line_crossing_is_cut() -> None:
    line = shapely.LineString([(170, 0), (-170, 10)])
    out = split_antimeridian_one(line)
    assert out.geom_type == "MultiLineString"
    assert out.length == pytest.approx(np.hypot(20, 10))


def test_vectorised_front_end_counts_changes() -> None:
    geoms = np.array(
        [
            shapely.Point(0, 0),
            None,
            shapely.Polygon([(178, 0), (-178, 0), (-178, 1), (178, 1)]),
            shapely.box(-10, -10, 10, 10),
        ],
        dtype=object,
    )
    out, changed = split_antimeridian(geoms)
    assert changed == 1 and out[0] is geoms[0] and out[1] is None and out[3] is geoms[3]
    assert out[2].area == pytest.approx(4.0)


def test_ring_round_a_pole_with_a_vertex_on_the_antimeridian() -> None:
    # a raw ring along -60 that happens to have a vertex exactly on 180: as drawn it runs back over
    # itself (zero area); it is the cap south of -60, not an already cut polygon
    for lons in ([0, 90, 180, -90, 0], list(range(0, 181)) + list(range(-179, 1))):
        out = split_antimeridian_one(shapely.Polygon([(x, -60.0) for x in lons]))
        assert out.bounds == (-180.0, -90.0, 180.0, -60.0)
        assert out.area == pytest.approx(360.0 * 30.0)

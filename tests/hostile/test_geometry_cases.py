"""Hostile geometries through `cng-datasets run`: each ends in a correct output, checked against
shapely, h3-py and the decoded PMTiles tiles, or in one clear error line and nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pytest
import shapely
from shapely.geometry import box

from tests.hostile.conftest import (
    Outcome,
    all_cells,
    feature,
    h3_reference,
    long_edges,
    run_case,
    validate_ok,
    write_geojson,
)
from tests.hostile.corpus import (
    topojson_box,
    wkb_circularstring,
    wkb_curvepolygon,
    wkb_point_zm,
    wkb_polygon_m,
    write_gpkg,
)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hostile")]

RES = 3


def check_correct(cli_run, o: Outcome, expected: dict[int, Any], res: int = RES) -> dict[int, Any]:
    """Exit 0, `validate` ok, every feature present once with the expected geometry (area of the
    symmetric difference below 1e-6 deg²; None = null), no edge longer than 180°, and the hex
    cells of every polygonal feature equal to h3-py's for the expected geometry."""
    o.ok()
    validate_ok(cli_run, o)
    geoms = o.geometries()
    assert sorted(geoms) == sorted(expected)
    hexed = o.hex_cells(res)
    for fid, want in expected.items():
        got = geoms[fid]
        if want is None:
            assert got is None, (fid, got)
            assert fid not in hexed
            continue
        assert got is not None, fid
        assert not long_edges(got), (fid, long_edges(got))
        assert got.geom_type == want.geom_type or {got.geom_type, want.geom_type} <= {"Polygon", "MultiPolygon"}, (
            fid,
            got.geom_type,
            want.geom_type,
        )
        if want.area:
            assert shapely.symmetric_difference(got, want).area < 1e-6, (fid, got.wkt[:200], want.wkt[:200])
            assert hexed[fid] == h3_reference(want, res), fid
        else:
            assert shapely.equals_exact(shapely.normalize(got), shapely.normalize(want), 1e-9), (fid, got.wkt, want.wkt)
            assert hexed.get(fid), fid
    return geoms


# ---- the antimeridian -----------------------------------------------------------------------

EAST = box(170, -10, 180, 10)
WEST = box(-180, -10, -170, 10)
SPLIT = shapely.MultiPolygon([EAST, WEST])
RAW_RING = [[170, -10], [-170, -10], [-170, 10], [170, 10], [170, -10]]


def _no_band_round_the_world(o: Outcome, z: int = 4) -> None:
    """The polygon is in the tiles beside ±180 and not in one at 0° (a band the long way round)."""
    assert o.tile_features(z, 175, 0) and o.tile_features(z, -175, 0)
    assert not o.tile_features(z, 0, 0)
    assert not o.tile_features(z, 90, 0)


@pytest.mark.parametrize("fmt", ["geojson", "topojson"])
def test_ring_crossing_the_antimeridian_unsplit(cli_run, tmp_path: Path, fmt: str) -> None:
    if fmt == "geojson":
        src = write_geojson(
            tmp_path / "am.geojson", [feature({"type": "Polygon", "coordinates": [RAW_RING]}, name="box")]
        )
    else:  # TopoJSON world maps draw rings across ±180 as they are
        src = topojson_box(tmp_path / "am.topojson", RAW_RING, "box")
    o = run_case(cli_run, tmp_path / "out", src)
    geoms = check_correct(cli_run, o, {1: SPLIT})
    assert abs(geoms[1].area - 400.0) < 1e-9
    _no_band_round_the_world(o)


def test_multipolygon_already_split_at_180(cli_run, tmp_path: Path) -> None:
    src = write_geojson(tmp_path / "split.geojson", [feature(SPLIT, name="split")])
    o = run_case(cli_run, tmp_path / "out", src)
    check_correct(cli_run, o, {1: SPLIT})
    _no_band_round_the_world(o)


# ---- poles ----------------------------------------------------------------------------------


def _cells_with_centre(res: int, inside) -> set[int]:
    cells, lng, lat = all_cells(res)
    return set(cells[inside(lng, lat)].tolist())


def _check_polar_cap(cli_run, o: Outcome, inside, res: int) -> None:
    """Exactly the cells whose centre is inside (brute force over every cell at ``res``), and the
    cap is in the PMTiles at every longitude near its edge."""
    o.ok()
    validate_ok(cli_run, o)
    geoms = o.geometries()
    assert list(geoms) == [1]
    assert not long_edges(geoms[1])
    got = o.hex_cells(res)[1]
    want = _cells_with_centre(res, inside)
    assert got == want, (len(got), len(want), len(got ^ want))


def test_polygon_round_the_south_pole_in_epsg_3031(cli_run, tmp_path: Path) -> None:
    # a 4000 km square centred on the pole: everything south of about -72°
    square = box(-2_000_000, -2_000_000, 2_000_000, 2_000_000).segmentize(100_000)
    src = write_gpkg(tmp_path / "polar.gpkg", [square], {"name": ["cap"]}, crs="EPSG:3031", geometry_type="Polygon")
    o = run_case(cli_run, tmp_path / "out", src, res=2)
    to_polar = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3031", always_xy=True)

    def inside(lng: np.ndarray, lat: np.ndarray) -> np.ndarray:
        x, y = to_polar.transform(lng, lat)
        return shapely.contains_xy(square, x, y)

    _check_polar_cap(cli_run, o, inside, res=2)
    lonlat = o.geometries()[1]
    assert lonlat.bounds[1] == -90.0  # closed along the pole, not a band above it


@pytest.mark.parametrize(
    "ring",
    [
        # Natural Earth style: cut at ±180 and closed along -90
        [[-180, -90], [-180, -60], [0, -60], [180, -60], [180, -90], [0, -90], [-180, -90]],
        # a raw ring that winds once round the pole along -60 (one edge crosses ±180)
        [[0, -60], [120, -60], [-120, -60], [0, -60]],
        # the same with a vertex exactly on 180: taken as drawn it would run back over itself and
        # collapse to nothing (it did: the feature became a null geometry)
        [[0, -60], [90, -60], [180, -60], [-90, -60], [0, -60]],
    ],
    ids=["reaching-minus-90", "winding-round-the-pole", "winding-with-a-vertex-on-180"],
)
def test_polygon_containing_the_pole_in_lonlat(cli_run, tmp_path: Path, ring: list[list[float]]) -> None:
    src = write_geojson(tmp_path / "cap.geojson", [feature({"type": "Polygon", "coordinates": [ring]}, name="cap")])
    o = run_case(cli_run, tmp_path / "out", src, res=2)
    _check_polar_cap(cli_run, o, lambda lng, lat: lat < -60.0, res=2)


# ---- invalid polygons -----------------------------------------------------------------------

INVALID = {
    "bow-tie": shapely.from_wkt("POLYGON ((0 0, 10 10, 10 0, 0 10, 0 0))"),
    "hole outside its shell": shapely.from_wkt(
        "POLYGON ((20 0, 30 0, 30 10, 20 10, 20 0), (40 0, 45 0, 45 5, 40 5, 40 0))"
    ),
    "overlapping parts": shapely.from_wkt(
        "MULTIPOLYGON (((50 0, 60 0, 60 10, 50 10, 50 0)), ((55 5, 65 5, 65 15, 55 15, 55 5)))"
    ),
    "spike": shapely.from_wkt("POLYGON ((70 0, 80 0, 80 10, 75 10, 75 20, 75 10, 70 10, 70 0))"),
    "self-touching ring": shapely.from_wkt("POLYGON ((90 0, 100 0, 100 10, 95 0, 90 10, 90 0))"),
}


def test_invalid_polygons_are_repaired_not_dropped(cli_run, tmp_path: Path) -> None:
    names = list(INVALID)
    assert not any(shapely.is_valid(list(INVALID.values())))
    src = write_geojson(tmp_path / "invalid.geojson", [feature(g, name=n) for n, g in INVALID.items()])
    o = run_case(cli_run, tmp_path / "out", src)
    # the reference repair: GEOS "structure" (shells unioned, holes subtracted), kept polygonal
    want = {
        i + 1: shapely.make_valid(g, method="structure", keep_collapsed=False) for i, g in enumerate(INVALID.values())
    }
    assert abs(want[1].area - 50.0) < 1e-9  # the two triangles of the bow tie
    geoms = check_correct(cli_run, o, want)
    assert all(g.is_valid for g in geoms.values())
    assert o.table().column("name").to_pylist() == names


# ---- null, empty, mixed, collections ----------------------------------------------------------


def test_null_empty_and_mixed_types_in_one_layer(cli_run, tmp_path: Path) -> None:
    feats = [
        feature(None, kind="null"),
        feature({"type": "Polygon", "coordinates": []}, kind="empty polygon"),
        feature({"type": "Point", "coordinates": [10.5, 20.5]}, kind="point"),
        feature(box(0, 0, 5, 5), kind="polygon"),
        feature({"type": "LineString", "coordinates": [[0, 30], [10, 31]]}, kind="line"),
        feature({"type": "MultiPoint", "coordinates": [[1, 1], [40, 40]]}, kind="multipoint"),
        feature({"type": "MultiLineString", "coordinates": []}, kind="empty multiline"),
    ]
    src = write_geojson(tmp_path / "mixed.geojson", feats)
    o = run_case(cli_run, tmp_path / "out", src)
    geoms = check_correct(
        cli_run,
        o,
        {
            1: None,
            2: None,
            3: shapely.Point(10.5, 20.5),
            4: box(0, 0, 5, 5),
            5: shapely.LineString([(0, 30), (10, 31)]),
            6: shapely.MultiPoint([(1, 1), (40, 40)]),
            7: None,
        },
    )
    assert o.table().column("kind").to_pylist() == [f["properties"]["kind"] for f in feats]
    cells = o.hex_cells(RES)
    assert cells[6] == h3_reference(geoms[6], RES)  # both points of the multipoint
    import h3

    ends = {h3.str_to_int(h3.latlng_to_cell(lat, lng, RES)) for lng, lat in ((0, 30), (10, 31))}
    assert ends <= cells[5] and len(cells[5]) > 2  # the cells along the line, not only its ends
    # the null / empty rows are in the GeoParquet (null geometry) but in no tile and no hex row
    assert sorted(cells) == [3, 4, 5, 6]


def test_geometry_collection(cli_run, tmp_path: Path) -> None:
    gc = shapely.GeometryCollection([box(0, 0, 5, 5), shapely.Point(20, 20), shapely.LineString([(30, 0), (35, 0)])])
    src = write_geojson(
        tmp_path / "gc.geojson", [feature(gc, name="gc"), feature(box(-20, -20, -15, -15), name="plain")]
    )
    o = run_case(cli_run, tmp_path / "out", src)
    o.ok()
    validate_ok(cli_run, o)
    geoms = o.geometries()
    assert geoms[1].geom_type == "GeometryCollection" and shapely.equals(geoms[1], gc)
    cells = o.hex_cells(RES)
    # the union over the parts: the polygon's cells, the point's cell and cells along the line
    assert h3_reference(box(0, 0, 5, 5), RES) | h3_reference(shapely.Point(20, 20), RES) <= cells[1]
    assert cells[2] == h3_reference(box(-20, -20, -15, -15), RES)
    assert o.tile_features(6, 2.5, 2.5), "the collection's polygon is missing from the tiles"


# ---- curves, Z and M ------------------------------------------------------------------------

CIRCLE = wkb_curvepolygon([wkb_circularstring([(0, 0), (1, 1), (2, 0), (1, -1), (0, 0)])])
ARC = wkb_circularstring([(10, 0), (11, 1), (12, 0)])


@pytest.mark.parametrize("fmt", ["gpkg", "csv"])
def test_curves_are_linearized(cli_run, tmp_path: Path, fmt: str) -> None:
    if fmt == "gpkg":
        src = write_gpkg(tmp_path / "curves.gpkg", [CIRCLE, ARC], {"name": ["circle", "arc"]})
    else:
        src = tmp_path / "curves.csv"
        src.write_text(
            'name,WKT\ncircle,"CURVEPOLYGON (CIRCULARSTRING (0 0, 1 1, 2 0, 1 -1, 0 0))"\n'
            'arc,"CIRCULARSTRING (10 0, 11 1, 12 0)"\n',
            encoding="utf-8",
        )
    o = run_case(cli_run, tmp_path / "out", src, res=4)
    o.ok()
    validate_ok(cli_run, o)
    geoms = o.geometries()
    assert geoms[1].geom_type == "Polygon" and abs(geoms[1].area - np.pi) < 0.01 * np.pi
    assert geoms[2].geom_type == "LineString" and len(geoms[2].coords) > 3
    assert abs(geoms[2].length - np.pi) < 0.01 * np.pi  # half a circle of radius 1
    assert o.hex_cells(4)[1] == h3_reference(geoms[1], 4)
    assert o.table().column("name").to_pylist() == ["circle", "arc"]


def test_z_and_m_values_are_dropped_not_the_features(cli_run, tmp_path: Path) -> None:
    square_m = [(0, 0, 1), (5, 0, 2), (5, 5, 3), (0, 5, 4), (0, 0, 1)]
    src = write_gpkg(
        tmp_path / "zm.gpkg",
        [wkb_polygon_m(square_m), wkb_point_zm(20, 20, 100, 7), shapely.LineString([(30, 0, 5), (35, 1, 6)])],
        {"name": ["polygon m", "point zm", "line z"]},
    )
    o = run_case(cli_run, tmp_path / "out", src)
    check_correct(cli_run, o, {1: box(0, 0, 5, 5), 2: shapely.Point(20, 20), 3: shapely.LineString([(30, 0), (35, 1)])})
    # 2D ISO WKB: type codes below 1000 (no Z, M or ZM flavour)
    for wkb in o.table().column("geometry").to_pylist():
        assert int.from_bytes(wkb[1:5], "little" if wkb[0] == 1 else "big") < 1000, wkb[:5]


def test_3d_geojson(cli_run, tmp_path: Path) -> None:
    poly = {"type": "Polygon", "coordinates": [[[0, 0, 10], [5, 0, 10], [5, 5, 12], [0, 5, 12], [0, 0, 10]]]}
    src = write_geojson(
        tmp_path / "z.geojson", [feature(poly, name="z"), feature({"type": "Point", "coordinates": [1, 2, 3]})]
    )
    o = run_case(cli_run, tmp_path / "out", src)
    check_correct(cli_run, o, {1: box(0, 0, 5, 5), 2: shapely.Point(1, 2)})


# ---- CRS --------------------------------------------------------------------------------------


@pytest.mark.parametrize("crs", ["EPSG:3857", "EPSG:32633"])
def test_projected_source(cli_run, tmp_path: Path, crs: str) -> None:
    lonlat = box(12.0, 45.0, 16.0, 48.0).segmentize(0.05)
    to_src = pyproj.Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    projected = shapely.transform(lonlat, lambda xy: np.column_stack(to_src.transform(xy[:, 0], xy[:, 1])))
    src = write_gpkg(
        tmp_path / "projected.gpkg",
        [projected, shapely.Point(to_src.transform(13.4, 52.5))],
        {"name": ["box", "berlin"]},
        crs=crs,
    )
    o = run_case(cli_run, tmp_path / "out", src, res=4)
    check_correct(cli_run, o, {1: lonlat, 2: shapely.Point(13.4, 52.5)}, res=4)
    pt = o.geometries()[2]
    assert abs(pt.x - 13.4) < 1e-7 and abs(pt.y - 52.5) < 1e-7


def test_source_without_crs_in_degrees_is_taken_as_lonlat_with_a_warning(cli_run, tmp_path: Path) -> None:
    src = write_gpkg(tmp_path / "nocrs.gpkg", [box(0, 0, 5, 5)], {"name": ["a"]}, crs=None)
    o = run_case(cli_run, tmp_path / "out", src)
    check_correct(cli_run, o, {1: box(0, 0, 5, 5)})
    log = (o.out / o.dataset / "_cng" / "logs" / "convert.err").read_text()
    assert "has no CRS; taken as EPSG:4326" in log


def test_run_relays_the_assumed_crs_warning(cli_run, tmp_path: Path) -> None:
    src = write_gpkg(tmp_path / "nocrs.gpkg", [box(0, 0, 5, 5)], {"name": ["a"]}, crs=None)
    o = run_case(cli_run, tmp_path / "out", src)
    o.ok()
    assert any("no CRS" in w and "EPSG:4326" in w for w in o.warnings()), o.proc.stderr


def test_source_without_crs_in_metres_is_one_clear_error(cli_run, tmp_path: Path) -> None:
    src = write_gpkg(tmp_path / "metres.gpkg", [box(500_000, 5_000_000, 510_000, 5_010_000)], {"name": ["a"]}, crs=None)
    o = run_case(cli_run, tmp_path / "out", src)
    o.one_error("metres.gpkg", "lon/lat", "--source-crs", code=65)
    o.nothing_written()

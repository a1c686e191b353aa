"""Hostile attribute names and layers through `cng-datasets run`: names that collide with our
columns, duplicate and non-ASCII names, a layer without geometry. Values must arrive unchanged in
the GeoParquet, the hex partitions and the tiles, or the run ends in one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely.geometry import box

from tests.hostile.conftest import feature, h3_reference, run_case, validate_ok, write_geojson
from tests.hostile.corpus import write_attribute_table, write_gpkg

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hostile")]

RES = 3
GEOMS = [box(0, 0, 5, 5), shapely.Point(10, 10)]


def _props(i: int) -> dict[str, object]:
    return {
        "_cng_fid": f"x{i}",
        "geometry": f"g{i}",
        "bbox": f"b{i}",
        "Name": f"upper{i}",
        "name": f"lower{i}",
        "größe": 1.5 * i,
        "名前": ["東京", "大阪"][i - 1],
    }


def test_attribute_names_that_collide_with_ours(cli_run, tmp_path: Path) -> None:
    """`_cng_fid`, `geometry`, `bbox` are renamed `<name>_1` (with a warning) and keep their values;
    `Name` beside `name`, `größe` and `名前` pass unchanged to the GeoParquet, every hex row and the
    tiles."""
    src = write_geojson(tmp_path / "names.geojson", [feature(g, **_props(i + 1)) for i, g in enumerate(GEOMS)])
    o = run_case(cli_run, tmp_path / "out", src)
    o.ok()
    validate_ok(cli_run, o)
    renamed = {"_cng_fid": "_cng_fid_1", "geometry": "geometry_1", "bbox": "bbox_1"}
    t = o.table()
    assert t.column("_cng_fid").to_pylist() == [1, 2]
    rows = t.drop(["geometry", "bbox"]).to_pylist()
    for i, row in enumerate(rows, start=1):
        want = {renamed.get(k, k): v for k, v in _props(i).items()}
        assert {k: row[k] for k in want} == want
    log = (o.out / o.dataset / "_cng" / "logs" / "convert.err").read_text()
    for old, new in renamed.items():
        assert f"column {old!r} clashes with the output column of that name; renamed to {new!r}" in log

    # hex: our columns hold H3 cells (the reference's), the attributes ride along unchanged
    hx = o.hex_table()
    assert hx.schema.field("h3").type.equals(hx.schema.field("h0").type)
    by_id: dict[int, list[dict[str, object]]] = {}
    for r in hx.to_pylist():
        by_id.setdefault(r["_cng_fid"], []).append(r)
    assert sorted(by_id) == [1, 2]
    for fid, hex_rows in by_id.items():
        assert {r["h3"] for r in hex_rows} == h3_reference(GEOMS[fid - 1], RES)
        for r in hex_rows:
            assert r["h0"] == _parent(r["h3"], 0)
            for k, v in _props(fid).items():
                assert r[renamed.get(k, k)] == v, (k, r)

    # tiles: the properties of the decoded feature
    (tile,) = o.tile_features(6, 2.5, 2.5)
    props = tile["properties"]
    for k, v in _props(1).items():
        assert props[renamed.get(k, k)] == v, (k, props)


def _parent(cell: int, res: int) -> int:
    import h3

    return h3.str_to_int(h3.cell_to_parent(h3.int_to_str(cell), res))


@pytest.mark.parametrize("column", ["h0", "h3", "h2"], ids=["h0", "h-resolution", "h-parent"])
def test_attribute_named_like_an_h3_column(cli_run, tmp_path: Path, column: str) -> None:
    src = write_geojson(tmp_path / "h.geojson", [feature(g, **{column: f"v{i}"}) for i, g in enumerate(GEOMS)])
    o = run_case(cli_run, tmp_path / "out", src, "--parent-resolutions", "2,0")
    o.ok()
    validate_ok(cli_run, o)
    hx = o.hex_table()
    for r in hx.to_pylist():
        assert r["h0"] == _parent(r["h3"], 0) and r["h2"] == _parent(r["h3"], 2)
        assert r[f"{column}_1"] == f"v{r['_cng_fid'] - 1}"
    log = (o.out / o.dataset / "_cng" / "logs" / "hex.00000.err").read_text()
    assert f"column {column!r} clashes with the H3 cell column of that name; renamed to '{column}_1'" in log
    assert o.table().column(column).to_pylist() == ["v0", "v1"]  # the GeoParquet keeps the source's name


def test_attributes_named_like_other_h3_resolutions(cli_run, tmp_path: Path) -> None:
    src = write_geojson(tmp_path / "h.geojson", [feature(g, h10=f"ten{i}", h1=i + 0.5) for i, g in enumerate(GEOMS)])
    o = run_case(cli_run, tmp_path / "out", src)
    o.ok()
    rows = o.hex_table().to_pylist()
    assert {(r["_cng_fid"], r["h10"], r["h1"]) for r in rows} == {(1, "ten0", 0.5), (2, "ten1", 1.5)}
    assert all(r["h0"] == _parent(r["h3"], 0) for r in rows)
    validate_ok(cli_run, o)


def test_exactly_duplicated_csv_column_names(cli_run, tmp_path: Path) -> None:
    """GDAL passes a CSV header's repeated name on twice; the repeat is renamed `name_2` (with a
    warning) so neither column's values are lost."""
    src = tmp_path / "dup.csv"
    src.write_text("id,name,name,NAME,lon,lat\n1,a,b,c,10,20\n2,d,e,f,11,21\n", encoding="utf-8")
    o = run_case(cli_run, tmp_path / "out", src)
    o.ok()
    validate_ok(cli_run, o)
    t = o.table()
    assert [t.column(c).to_pylist() for c in ("name", "name_2", "NAME")] == [["a", "d"], ["b", "e"], ["c", "f"]]
    log = (o.out / o.dataset / "_cng" / "logs" / "convert.err").read_text()
    assert "column 'name' appears more than once; the repeat is renamed to 'name_2'" in log
    hx = o.hex_table().to_pylist()
    assert {(r["_cng_fid"], r["name"], r["name_2"], r["NAME"]) for r in hx} == {(1, "a", "b", "c"), (2, "d", "e", "f")}


def test_non_ascii_and_case_duplicate_names_from_a_geopackage(cli_run, tmp_path: Path) -> None:
    # SQLite column names are case-insensitive: a GeoPackage cannot hold Name and name; a
    # Shapefile DBF neither. Non-ASCII names must arrive byte-exact.
    attrs = {"größe": [1.5, 2.5], "名前": ["東京", "大阪"], "Ünïcödé ß": ["x", "y"]}
    src = write_gpkg(tmp_path / "utf8.gpkg", GEOMS, attrs)
    o = run_case(cli_run, tmp_path / "out", src)
    o.ok()
    validate_ok(cli_run, o)
    t = o.table()
    for k, v in attrs.items():
        assert t.column(k).to_pylist() == v
    hx = o.hex_table().to_pylist()
    assert {(r["_cng_fid"], r["名前"], r["größe"]) for r in hx} == {(1, "東京", 1.5), (2, "大阪", 2.5)}
    (tile,) = o.tile_features(6, 2.5, 2.5)
    assert tile["properties"]["Ünïcödé ß"] == "x" and tile["properties"]["名前"] == "東京"


# ---- layers without geometry ---------------------------------------------------------------------


def test_geopackage_with_only_an_attribute_table(cli_run, tmp_path: Path) -> None:
    src = write_attribute_table(tmp_path / "table.gpkg", {"code": [1, 2], "label": ["a", "b"]}, layer="codes")
    o = run_case(cli_run, tmp_path / "out", src)
    o.one_error("table.gpkg", "no layer with geometry", code=65)
    o.nothing_written()


def test_attribute_table_beside_a_spatial_layer_is_ignored(cli_run, tmp_path: Path) -> None:
    src = write_gpkg(tmp_path / "both.gpkg", GEOMS, {"label": ["p", "q"]}, layer="places")
    write_attribute_table(src, {"code": np.arange(3).tolist()}, layer="codes")
    o = run_case(cli_run, tmp_path / "out", src)
    o.ok()
    validate_ok(cli_run, o)
    assert o.table().column("label").to_pylist() == ["p", "q"]
    # naming the table as the layer: one line that says it has no geometry
    bad = run_case(cli_run, tmp_path / "out2", src, "--layer", "codes")
    bad.one_error("codes", "no geometry", code=65)
    bad.nothing_written()

"""convert: real sources → GeoParquet 1.1, checked against the spec's rules, not just existence."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from cng_datasets import storage
from cng_datasets.errors import EXIT_BAD_INPUT, DataError, SourceError
from cng_datasets.steps.convert import ConvertOptions, convert, read_dataset_info
from tests.conftest import CITIES, DATA, csv_rows, data_file

NE10 = "ne_10m_admin_0_countries_deu.zip"
LOWRES = DATA / "naturalearth_lowres" / "naturalearth_lowres.shp"
QUAKES = DATA / "earthquakes.json"
COUNTIES = DATA / "us-atlas" / "counties-10m.json"


def multi(table: pa.Table, column: str = "wkb_geometry") -> pa.Table:
    """Promote polygons to multipolygons (GPKG/FileGDB layers of one declared type)."""
    geoms = shapely.from_wkb(table[column].to_numpy(zero_copy_only=False))
    promoted = [shapely.MultiPolygon([g]) if g.geom_type == "Polygon" else g for g in geoms]
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(shapely.to_wkb(promoted)))


def check_geoparquet(path: str | Path, expected_rows: int | None = None) -> pa.Table:
    """Assert the GeoParquet 1.1 rules on a written file and return its table."""
    pf = pq.ParquetFile(path)
    md = pf.schema_arrow.metadata
    assert md is not None and b"geo" in md, "geo metadata must be visible to pyarrow readers"
    geo = json.loads(md[b"geo"])
    assert geo["version"] == "1.1.0"
    assert geo["primary_column"] == "geometry"
    col = geo["columns"]["geometry"]
    assert col["encoding"] == "WKB"
    assert set(col["geometry_types"]) <= {
        "Point",
        "LineString",
        "Polygon",
        "MultiPoint",
        "MultiLineString",
        "MultiPolygon",
        "GeometryCollection",
    }
    assert col["covering"] == {"bbox": {k: ["bbox", k] for k in ("xmin", "ymin", "xmax", "ymax")}}
    if "crs" in col:
        assert isinstance(col["crs"], dict) and "type" in col["crs"], "crs must be PROJJSON"
    table = pq.read_table(path)
    names = table.schema.names
    info = json.loads(md[b"cng_datasets"])
    assert names[0] == info["id_column"]
    assert names[-2:] == ["geometry", "bbox"]
    # the covering: float32 rounded outward, so each box contains its geometry exactly
    assert table.schema.field("bbox").type == pa.struct([(k, pa.float32()) for k in ("xmin", "ymin", "xmax", "ymax")])
    cover = np.column_stack(
        [
            table["bbox"].combine_chunks().field(k).to_numpy(zero_copy_only=False)
            for k in ("xmin", "ymin", "xmax", "ymax")
        ]
    ).astype(np.float64)
    exact = shapely.bounds(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False)))
    has = ~np.isnan(exact[:, 0])
    assert (cover[has, :2] <= exact[has, :2]).all() and (cover[has, 2:] >= exact[has, 2:]).all()
    assert np.isnan(cover[~has]).all()
    # Row groups are bounded and compressed with ZSTD.
    for i in range(pf.metadata.num_row_groups):
        assert pf.metadata.row_group(i).column(0).compression == "ZSTD"
    geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    present = ~shapely.is_missing(geoms)
    assert not shapely.is_empty(geoms[present]).any(), "empty geometries are written as null"
    assert shapely.has_z(geoms[present]).sum() == 0, "Z is dropped"
    assert shapely.is_valid(geoms[present]).all()
    types = {shapely.get_type_id(g) for g in geoms[present]}
    type_names = {
        0: "Point",
        1: "LineString",
        3: "Polygon",
        4: "MultiPoint",
        5: "MultiLineString",
        6: "MultiPolygon",
        7: "GeometryCollection",
    }
    assert {type_names[t] for t in types} == set(col["geometry_types"])
    bounds = shapely.bounds(geoms)
    bbox = table["bbox"].combine_chunks()
    for i, k in enumerate(("xmin", "ymin", "xmax", "ymax")):
        values = bbox.field(k).to_numpy(zero_copy_only=False).astype(float)
        # tight to float32 precision (one unit in the last place, 2^-23 relative, rounded outward)
        np.testing.assert_allclose(values[present], bounds[present, i], rtol=2.0**-22, atol=1e-30)
        assert bbox.is_null().to_numpy(zero_copy_only=False)[~present].all()
    if present.any():
        total = shapely.total_bounds(geoms[present])
        np.testing.assert_allclose(col["bbox"], total)
    if info["id_column"] == "_cng_fid":
        assert table["_cng_fid"].to_pylist() == list(range(1, table.num_rows + 1))
    if expected_rows is not None:
        assert table.num_rows == expected_rows == info["feature_count"]
    return table


def test_natural_earth_zip_utf8_without_cpg(tmp_path: Path) -> None:
    out = tmp_path / "ne.parquet"
    summary = convert([str(data_file(NE10))], str(out))
    table = check_geoparquet(out, 250)
    names = table["NAME"].to_pylist()
    assert table["NAME_ZH"][names.index("China")].as_py() == "中华人民共和国"
    assert summary.made_valid >= 1  # Egypt is invalid in the source
    geo = json.loads(pq.ParquetFile(out).schema_arrow.metadata[b"geo"])
    assert "crs" not in geo["columns"]["geometry"], "EPSG:4326 lon/lat output is OGC:CRS84: crs omitted"
    # Antarctica reaches the pole and Fiji / Russia are split at ±180 in the source: kept as is.
    geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    ant = geoms[names.index("Antarctica")]
    assert ant.bounds[1] == pytest.approx(-90, abs=1e-6)
    assert max(g.bounds[2] for g in geoms) <= 180 and min(g.bounds[0] for g in geoms) >= -180


def test_latin1_shapefile_without_cpg_is_detected(tmp_path: Path) -> None:
    t = pa.table(
        {"name": ["Zürich", "São Paulo"], "geometry": shapely.to_wkb(shapely.points([8.5, -46.6], [47.4, -23.5]))}
    )
    shp = tmp_path / "l1.shp"
    pyogrio.write_arrow(t, shp, geometry_name="geometry", geometry_type="Point", crs="EPSG:4326", encoding="ISO-8859-1")
    (tmp_path / "l1.cpg").unlink(missing_ok=True)
    convert([str(shp)], str(tmp_path / "o.parquet"))
    assert pq.read_table(tmp_path / "o.parquet")["name"].to_pylist() == ["Zürich", "São Paulo"]


def test_shapefile_without_dbf(tmp_path: Path) -> None:
    for ext in ("shp", "shx", "prj"):
        shutil.copy(LOWRES.with_suffix(f".{ext}"), tmp_path / f"g.{ext}")
    table = check_geoparquet(_convert(tmp_path / "g.shp", tmp_path), 177)
    assert table.schema.names == ["_cng_fid", "geometry", "bbox"]


def _convert(src: Path | str, tmp_path: Path, **kw: object) -> Path:
    out = tmp_path / "out.parquet"
    convert([str(src)], str(out), ConvertOptions(**kw))
    return out


def test_cities_csv_autodetects_lat_lon(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="no CRS"):
        out = _convert(data_file(CITIES), tmp_path)
    table = check_geoparquet(out, csv_rows(CITIES))
    first = shapely.from_wkb(table["geometry"][0].as_py())
    # x is longitude: El Tarter, Andorra (lat 42.57952, lon 1.65362)
    assert (first.x, first.y) == pytest.approx((1.65362, 42.57952))
    assert table["name"][0].as_py() == "El Tarter"


def test_csv_column_override_and_tsv(tmp_path: Path) -> None:
    tsv = tmp_path / "pts.tsv"
    tsv.write_text("site\tnorthing\teasting\tcode\nA\t10.5\t20.25\t007\nB\t-5\t170\t010\n")
    with pytest.warns(UserWarning, match="no CRS"):
        out = _convert(tsv, tmp_path, lat_column="northing", lon_column="easting")
    table = check_geoparquet(out, 2)
    g = shapely.from_wkb(table["geometry"][1].as_py())
    assert (g.x, g.y) == (170, -5)
    assert table["code"].to_pylist() == ["007", "010"]


def test_csv_without_coordinates_fails(tmp_path: Path) -> None:
    csv = tmp_path / "plain.csv"
    csv.write_text("a,b\n1,2\n")
    with pytest.raises(SourceError, match="no geometry.*--lat-column"):
        _convert(csv, tmp_path)
    assert not (tmp_path / "out.parquet").exists()


def test_earthquakes_3d_points_drop_z(tmp_path: Path) -> None:
    table = check_geoparquet(_convert(QUAKES, tmp_path), 1707)
    assert "mag" in table.schema.names


def test_topojson_counties_layer(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="choose one with --layer: counties, states, nation"):
        _convert(COUNTIES, tmp_path)
    with pytest.warns(UserWarning, match="no CRS"):
        out = _convert(COUNTIES, tmp_path, layer="counties")
    table = check_geoparquet(out, 3231)
    assert table["id"][0].as_py() == "04015", "FIPS ids keep their leading zeros"
    assert table["geometry"].null_count == 1, "the empty county geometry is kept as null"
    info = read_dataset_info(str(out))
    assert info["null_geometries"] == 1


def test_geopackage_3857_multilayer_reprojected(tmp_path: Path) -> None:
    gpkg = tmp_path / "multi.gpkg"
    ne = multi(pyogrio.read_arrow(LOWRES)[1])
    pyogrio.write_arrow(
        ne, gpkg, layer="countries", geometry_name="wkb_geometry", geometry_type="MultiPolygon", crs="EPSG:4326"
    )
    # a second spatial layer in EPSG:3857 and a non-spatial table
    pyogrio.write_arrow(
        pa.table(
            {
                "name": ["a", "b"],
                "wkb_geometry": shapely.to_wkb(shapely.points([1113194.9, -2226389.8], [1118890.0, 0.0])),
            }
        ),
        gpkg,
        layer="merc",
        geometry_name="wkb_geometry",
        geometry_type="Point",
        crs="EPSG:3857",
        append=False,
    )
    pyogrio.write_arrow(pa.table({"k": [1]}), gpkg, layer="lookup", geometry_type=None, append=False)
    with pytest.raises(SourceError, match="2 layers, choose one with --layer: countries, merc"):
        _convert(gpkg, tmp_path)
    with pytest.raises(SourceError, match="no layer 'nope'"):
        _convert(gpkg, tmp_path, layer="nope")
    with pytest.raises(SourceError, match="layer 'lookup' has no geometry"):
        _convert(gpkg, tmp_path, layer="lookup")
    table = check_geoparquet(_convert(gpkg, tmp_path, layer="merc"), 2)
    pts = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(shapely.get_coordinates(pts), [[10.0, 10.0], [-20.0, 0.0]], atol=1e-4)


def test_geopackage_in_3857_from_real_data(tmp_path: Path) -> None:
    gpkg = tmp_path / "ne3857.gpkg"
    meta, table = pyogrio.read_arrow(LOWRES)
    geoms = shapely.from_wkb(table["wkb_geometry"].to_numpy(zero_copy_only=False))
    import pyproj

    tr = pyproj.Transformer.from_crs(4326, 3857, always_xy=True)
    clipped = shapely.clip_by_rect(geoms, -180, -85, 180, 85)
    merc = shapely.transform(clipped, lambda c: np.column_stack(tr.transform(c[:, 0], c[:, 1])))
    t = multi(table.drop_columns(["wkb_geometry"]).append_column("geom", pa.array(shapely.to_wkb(merc))), "geom")
    pyogrio.write_arrow(t, gpkg, geometry_name="geom", geometry_type="MultiPolygon", crs="EPSG:3857")
    out = check_geoparquet(_convert(gpkg, tmp_path), 177)
    back = shapely.from_wkb(out["geometry"].to_numpy(zero_copy_only=False))
    ok = ~shapely.is_missing(back) & ~shapely.is_empty(clipped)
    np.testing.assert_allclose(shapely.bounds(back[ok]), shapely.bounds(clipped[ok]), atol=1e-6)


def _write_filegdb(tmp_path: Path) -> Path:
    gdb = tmp_path / "ne.gdb"
    table = multi(pyogrio.read_arrow(LOWRES)[1])
    pyogrio.write_arrow(
        table,
        gdb,
        driver="OpenFileGDB",
        layer="countries",
        geometry_name="wkb_geometry",
        geometry_type="MultiPolygon",
        crs="EPSG:4326",
        layer_options={"TARGET_ARCGIS_VERSION": "ARCGIS_PRO_3_2_OR_LATER"},
    )
    return gdb


def test_filegdb_directory_and_zipped(tmp_path: Path) -> None:
    gdb = _write_filegdb(tmp_path)
    check_geoparquet(_convert(gdb, tmp_path), 177)
    zipped = tmp_path / "ne.gdb.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in gdb.iterdir():
            zf.write(f, f"ne.gdb/{f.name}")
    out = tmp_path / "z.parquet"
    convert([str(zipped)], str(out))
    check_geoparquet(out, 177)


def test_geoparquet_source_roundtrip(tmp_path: Path) -> None:
    """Our own output converted again keeps its id column (no `_cng_fid_1`)."""
    first = _convert(LOWRES, tmp_path)
    second = tmp_path / "again.parquet"
    convert([str(first)], str(second))
    table = check_geoparquet(second, 177)
    assert table.schema.names == pq.read_table(first).schema.names
    assert table["_cng_fid"].to_pylist() == list(range(1, 178))
    assert table["name"].to_pylist() == pq.read_table(first)["name"].to_pylist()


def test_two_sources_merge_by_column_name(tmp_path: Path) -> None:
    out = tmp_path / "merged.parquet"
    a = tmp_path / "a.csv"
    a.write_text("lat,lon,name,pop\n1,2,x,10\n3,4,y,20\n")
    with pytest.warns(UserWarning, match="no CRS"):
        convert([str(QUAKES), str(a)], str(out))
    table = check_geoparquet(out, 1707 + 2)
    assert table["name"].to_pylist()[-2:] == ["x", "y"]
    assert table["mag"][-1].as_py() is None
    assert table["name"][0].as_py() is None
    assert table["pop"].type == pa.int32() or pa.types.is_integer(table["pop"].type)


def test_source_order_and_ids_identical_on_rerun(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    convert([str(QUAKES)], str(a))
    convert([str(QUAKES)], str(b))
    assert pq.read_table(a).equals(pq.read_table(b))
    src = pyogrio.read_arrow(QUAKES)[1]
    assert pq.read_table(a)["id"].to_pylist() == src["id"].to_pylist()


def test_id_column_unique_checked(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    convert([str(QUAKES)], str(out), ConvertOptions(id_column="id"))
    table = check_geoparquet(out, 1707)
    assert table.schema.names[0] == "id" and "_cng_fid" not in table.schema.names
    with pytest.raises(DataError, match="'net' is not unique"):
        convert([str(QUAKES)], str(tmp_path / "dup.parquet"), ConvertOptions(id_column="net"))
    with pytest.raises(DataError, match="must be an integer or text column"):
        convert([str(QUAKES)], str(tmp_path / "dup.parquet"), ConvertOptions(id_column="mag"))
    assert not (tmp_path / "dup.parquet").exists()
    with pytest.raises(DataError, match="not a column"):
        convert([str(QUAKES)], str(tmp_path / "dup.parquet"), ConvertOptions(id_column="nope"))


def test_options_simplify_trim_rowgroups(tmp_path: Path) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("lat,lon,name\n" + "".join(f"{i % 80},{i % 170},  n{i}  \n" for i in range(2500)))
    out = tmp_path / "o.parquet"
    with pytest.warns(UserWarning):
        convert([str(csv)], str(out), ConvertOptions(trim_strings=True, row_group_size=1000, compression_level=9))
    pf = pq.ParquetFile(out)
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)] == [1000, 1000, 500]
    assert pq.read_table(out)["name"][0].as_py() == "n0"
    simple = tmp_path / "s.parquet"
    convert([str(LOWRES)], str(simple), ConvertOptions(simplify_tolerance=0.5))
    full = tmp_path / "f.parquet"
    convert([str(LOWRES)], str(full))
    n_simple = shapely.get_num_coordinates(
        shapely.from_wkb(pq.read_table(simple)["geometry"].to_numpy(zero_copy_only=False))
    ).sum()
    n_full = shapely.get_num_coordinates(
        shapely.from_wkb(pq.read_table(full)["geometry"].to_numpy(zero_copy_only=False))
    ).sum()
    assert n_simple < 0.8 * n_full


def test_curves_are_linearized(tmp_path: Path) -> None:
    csv = tmp_path / "curves.csv"
    csv.write_text(
        'WKT,name\n"CURVEPOLYGON(CIRCULARSTRING(0 0,1 1,2 0,1 -1,0 0))",circle\n'
        '"COMPOUNDCURVE(CIRCULARSTRING(0 0,1 1,2 0),(2 0,3 0))",arc\n'
    )
    with pytest.warns(UserWarning, match="no CRS"):
        out = _convert(csv, tmp_path)
    table = check_geoparquet(out, 2)
    circle = shapely.from_wkb(table["geometry"][0].as_py())
    assert circle.geom_type == "Polygon" and circle.area == pytest.approx(np.pi, rel=0.01)


def test_target_crs_writes_projjson(tmp_path: Path) -> None:
    out = _convert(QUAKES, tmp_path, target_crs="EPSG:3857")
    geo = json.loads(pq.ParquetFile(out).schema_arrow.metadata[b"geo"])
    assert geo["columns"]["geometry"]["crs"]["id"] == {"authority": "EPSG", "code": 3857}


def test_antimeridian_ring_is_split(tmp_path: Path) -> None:
    gj = tmp_path / "am.geojson"
    ring = [[178, -10], [-178, -10], [-178, -20], [178, -20], [178, -10]]
    gj.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {"type": "Feature", "properties": {"n": 1}, "geometry": {"type": "Polygon", "coordinates": [ring]}}
                ],
            }
        )
    )
    table = check_geoparquet(_convert(gj, tmp_path), 1)
    g = shapely.from_wkb(table["geometry"][0].as_py())
    assert g.geom_type == "MultiPolygon" and len(g.geoms) == 2
    assert g.area == pytest.approx(40.0)  # 4° × 10°, not the long way round (356° × 10°)


# ---- bad input: one clear error naming the source, nothing at DEST ------------------------


@pytest.mark.parametrize(
    "make_source, message",
    [
        (lambda d: d / "missing.gpkg", "file not found"),
        (lambda d: _write(d / "corrupt.gpkg", b"this is not a geopackage"), "corrupt.gpkg"),
        (
            lambda d: _write(d / "broken.geojson", b'{"type": "FeatureCollection", "features": [{"type": '),
            "broken.geojson",
        ),
        (lambda d: "https://127.0.0.1:9/nothing.gpkg", "nothing.gpkg"),
    ],
    ids=["missing", "corrupt-gpkg", "corrupt-geojson", "unreachable-url"],
)
def test_bad_sources_fail_cleanly(tmp_path: Path, make_source, message: str, cli_run) -> None:
    src = make_source(tmp_path)
    dest = tmp_path / "out" / "x.parquet"
    proc = cli_run("convert", src, dest)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and message in lines[0] and str(src) in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not dest.exists() and not any(dest.parent.glob("*")) if dest.parent.exists() else True


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_cli_unknown_layer_and_nongeo(tmp_path: Path, cli_run) -> None:
    proc = cli_run("convert", "--layer", "nope", COUNTIES, tmp_path / "x.parquet")
    assert proc.returncode == EXIT_BAD_INPUT
    assert "no layer 'nope'; layers: counties, states, nation" in proc.stderr
    proc = cli_run("convert", "--id-column", "net", QUAKES, tmp_path / "x.parquet")
    assert proc.returncode == EXIT_BAD_INPUT and "not unique" in proc.stderr
    assert not (tmp_path / "x.parquet").exists()


def test_existing_output_survives_failed_run(tmp_path: Path) -> None:
    out = tmp_path / "keep.parquet"
    convert([str(QUAKES)], str(out))
    before = out.read_bytes()
    with pytest.raises(DataError):
        convert([str(QUAKES)], str(out), ConvertOptions(id_column="net"))
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.parquet"], "no temp files left behind"


# ---- S3 -------------------------------------------------------------------------------------


@pytest.mark.s3
def test_s3_round_trip(s3: str, tmp_path: Path) -> None:
    client = storage.s3_client()
    bucket = storage.parse(s3).bucket
    client.upload_file(str(data_file(NE10)), bucket, "in/countries.zip")
    client.upload_file(str(QUAKES), bucket, "in/quakes.json")
    dest = f"{s3}/out/countries.parquet"
    summary = convert([f"{s3}/in/countries.zip"], dest)
    assert summary.features == 250
    local = tmp_path / "c.parquet"
    storage.download_file(dest, local)
    table = check_geoparquet(local, 250)
    assert table["NAME_ZH"][table["NAME"].to_pylist().index("China")].as_py() == "中华人民共和国"
    # a GeoParquet source on S3, read through pyarrow's S3 filesystem
    with pytest.warns(UserWarning, match="renamed to '_cng_fid_1'"):
        convert([dest, f"{s3}/in/quakes.json"], f"{s3}/out/both.parquet")
    assert read_dataset_info(f"{s3}/out/both.parquet")["feature_count"] == 250 + 1707
    assert storage.list_prefix(f"{s3}/out") == [f"{s3}/out/both.parquet", f"{s3}/out/countries.parquet"]


@pytest.mark.s3
def test_s3_missing_source_leaves_nothing(s3: str, cli_run) -> None:
    env = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    proc = cli_run("convert", f"{s3}/nope.gpkg", f"{s3}/out.parquet", env=env)
    assert proc.returncode == EXIT_BAD_INPUT and "nope.gpkg" in proc.stderr
    assert storage.list_prefix(s3) == []


@pytest.mark.parametrize("driver, ext", [("GeoJSONSeq", "geojsonl"), ("FlatGeobuf", "fgb")])
def test_geojsonseq_and_flatgeobuf(tmp_path: Path, driver: str, ext: str) -> None:
    src = tmp_path / f"quakes.{ext}"
    meta, table = pyogrio.read_arrow(QUAKES)
    pyogrio.write_arrow(
        table, src, driver=driver, geometry_name="wkb_geometry", geometry_type="Point Z", crs="EPSG:4326"
    )
    out = check_geoparquet(_convert(src, tmp_path), 1707)
    # source order is the order the file holds (FlatGeobuf's writer sorts by its spatial index)
    assert out["id"].to_pylist() == pyogrio.read_arrow(src)[1]["id"].to_pylist()
    assert sorted(out["id"].to_pylist()) == sorted(table["id"].to_pylist())


@pytest.mark.s3
def test_remote_reads_over_http_and_zipped_filegdb_on_s3(s3: str, tmp_path: Path) -> None:
    """https:// sources go through GDAL's /vsicurl (range reads); moto serves plain http."""
    bucket = storage.parse(s3).bucket
    client = storage.s3_client()
    client.upload_file(str(QUAKES), bucket, "pub/quakes.geojson", ExtraArgs={"ACL": "public-read"})
    gdb = _write_filegdb(tmp_path)
    zipped = tmp_path / "ne.gdb.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        for f in gdb.iterdir():
            zf.write(f, f"ne.gdb/{f.name}")
    client.upload_file(str(zipped), bucket, "in/ne.gdb.zip")
    url = f"{storage.s3_settings().endpoint_url}/{bucket}/pub/quakes.geojson"
    out = tmp_path / "q.parquet"
    convert([url], str(out))
    check_geoparquet(out, 1707)
    convert([f"{s3}/in/ne.gdb.zip"], str(tmp_path / "gdb.parquet"))
    check_geoparquet(tmp_path / "gdb.parquet", 177)
    with pytest.raises(SourceError, match="FileGDB is a directory"):
        convert([f"{s3}/in/ne.gdb"], str(tmp_path / "x.parquet"))


def _geojson(path: Path, rings: list[list[list[float]]]) -> Path:
    feats = [
        {"type": "Feature", "properties": {"k": i}, "geometry": {"type": "Polygon", "coordinates": [r]}}
        for i, r in enumerate(rings)
    ]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    return path


def test_unsplit_crossing_polygons_keep_their_area(tmp_path: Path) -> None:
    """Random simple polygons round 180°, written with wrapped longitudes: the split (done before
    any validity repair) must give back the area they have when drawn the short way."""
    rng = np.random.default_rng(7)
    rings, areas = [], []
    for _ in range(300):
        cx, cy = 180 + rng.uniform(-2, 2), rng.uniform(-60, 60)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(4, 12)))
        radii = rng.uniform(0.3, 3, len(angles))
        xy = np.column_stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)])
        poly = shapely.Polygon(xy)
        if not poly.is_valid:
            continue
        areas.append(poly.area)
        wrapped = np.where(xy[:, 0] > 180, xy[:, 0] - 360, xy[:, 0])
        wrapped = np.round(wrapped, 1)  # some vertices land exactly on ±180
        drawn = shapely.Polygon(np.column_stack([np.where(wrapped < 0, wrapped + 360, wrapped), xy[:, 1]]))
        if not drawn.is_valid:  # rounding made it self-intersect: not a clean reference
            areas.pop()
            continue
        areas[-1] = drawn.area
        ring = np.column_stack([wrapped, xy[:, 1]]).tolist()
        rings.append(ring + [ring[0]])
    out = _convert(_geojson(tmp_path / "r.geojson", rings), tmp_path)
    table = check_geoparquet(out, len(rings))
    got = shapely.area(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False)))
    np.testing.assert_allclose(got, areas, rtol=1e-6)


def test_crossing_polygon_with_a_vertex_on_the_antimeridian(tmp_path: Path) -> None:
    ring = [[179.2, 12.4], [179.5, 11], [177.8, 9.5], [-180, 8.6], [-179.6, 8.4], [179.2, 12.4]]
    table = check_geoparquet(_convert(_geojson(tmp_path / "v.geojson", [ring]), tmp_path), 1)
    g = shapely.from_wkb(table["geometry"][0].as_py())
    expected = shapely.Polygon([(x + 360 if x < 0 else x, y) for x, y in ring]).area
    assert g.area == pytest.approx(expected)


def test_polar_projection_polygon_covers_the_pole(tmp_path: Path) -> None:
    """A circle round the south pole in EPSG:3031 (Antarctic polar stereographic): in lon/lat it
    must cover the cap down to -90, not collapse to a sliver or a null."""
    angles = np.linspace(0, 2 * np.pi, 65)[:-1]
    circle = shapely.Polygon(np.column_stack([2_000_000 * np.sin(angles), 2_000_000 * np.cos(angles)]))
    wobbly = shapely.Polygon(
        np.column_stack(
            [
                1_500_000 * (1 + 0.1 * np.sin(5 * angles)) * np.sin(angles),
                1_500_000 * (1 + 0.1 * np.sin(5 * angles)) * np.cos(angles),
            ]
        )
    )
    gpkg = tmp_path / "polar.gpkg"
    pyogrio.write_arrow(
        pa.table({"k": [1, 2], "geom": shapely.to_wkb([circle, wobbly])}),
        gpkg,
        geometry_name="geom",
        geometry_type="Polygon",
        crs="EPSG:3031",
    )
    table = check_geoparquet(_convert(gpkg, tmp_path), 2)
    geoms = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    for g in geoms:
        assert g is not None and g.bounds[1] == pytest.approx(-90)
        for lon in (-179, -90, 0, 90, 179):
            assert g.contains(shapely.Point(lon, -87)), lon
        assert not g.contains(shapely.Point(0, -50))
    # the circle's latitude is ~ -72: its lon/lat area is the band from there to the pole
    assert geoms[0].area == pytest.approx(360 * (90 - 71.9), rel=0.02)


def test_coordinates_outside_lonlat_need_a_source_crs(tmp_path: Path) -> None:
    csv = tmp_path / "metres.csv"
    csv.write_text("x,y,name\n1113194.9,1118890.0,a\n-2226389.8,0,b\n")
    with (
        pytest.warns(UserWarning, match="no CRS"),
        pytest.raises(SourceError, match="outside the lon/lat range.*--source-crs"),
    ):
        _convert(csv, tmp_path)
    assert not (tmp_path / "out.parquet").exists()
    table = check_geoparquet(_convert(csv, tmp_path, source_crs="EPSG:3857"), 2)
    np.testing.assert_allclose(
        shapely.get_coordinates(shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))),
        [[10, 10], [-20, 0]],
        atol=1e-4,
    )


def test_wkb_passes_through_only_when_it_is_what_geos_would_write() -> None:
    """The source's WKB is reused for unchanged geometries only when it is little-endian 2D ISO
    WKB of exactly the expected size; everything else is written anew (and reads back the same)."""
    import struct

    from cng_datasets.steps.geoparquet_write import encode_wkb, iso_wkb_size

    polys = [
        shapely.Polygon([(0, 0), (1, 0), (1, 1), (0, 0)]),
        shapely.MultiPolygon(
            [shapely.box(0, 0, 1, 1), shapely.box(2, 2, 3, 3).difference(shapely.box(2.2, 2.2, 2.4, 2.4))]
        ),
        shapely.MultiLineString([[(0, 0), (1, 1)], [(2, 2), (3, 3), (4, 4)]]),
        shapely.MultiPoint([(0, 0), (1, 1)]),
        shapely.Point(3, 4),
        shapely.LineString([(0, 0), (5, 5)]),
    ]
    geoms = np.array(polys, dtype=object)
    wkb = np.array(shapely.to_wkb(geoms, flavor="iso"), dtype=object)
    assert (iso_wkb_size(geoms) == [len(b) for b in wkb]).all()
    out = encode_wkb(geoms, wkb, np.zeros(len(geoms), dtype=bool))
    assert all(a is b for a, b in zip(out, wkb, strict=True))  # reused, not re-encoded
    big_endian = shapely.to_wkb(geoms[4], byte_order=0)
    unclosed = struct.pack("<BIII", 1, 3, 1, 3) + struct.pack("<6d", 0, 0, 1, 0, 1, 1)  # a ring of 3 points
    fixed = shapely.from_wkb(unclosed, on_invalid="fix")
    odd = np.array([geoms[4], fixed, geoms[0], None], dtype=object)
    src = np.array([big_endian, unclosed, wkb[0], None], dtype=object)
    out = encode_wkb(odd, src, np.array([False, False, True, False]))
    assert out[0] is not big_endian and out[0][0] == 1 and shapely.from_wkb(out[0]).equals(geoms[4])
    assert out[1] is not unclosed and shapely.from_wkb(out[1]).equals(fixed)  # GEOS closed the ring
    assert out[2] is not wkb[0] and out[2] == wkb[0]  # changed upstream: written anew
    assert out[3] is None

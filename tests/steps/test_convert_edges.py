"""convert at the edges of real inputs: every case ends in a correct output or one clear line,
exit 65 and nothing at the destination (issue 11)."""

from __future__ import annotations

import csv
import dataclasses
import http.server
import json
import random
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from cng_datasets import source_checks, sources
from cng_datasets.errors import EXIT_BAD_INPUT, DataError, SourceError
from cng_datasets.steps.convert import ConvertOptions, convert, read_dataset_info
from tests.conftest import DATA

HOSTILE = Path(__file__).resolve().parents[1] / "hostile" / "data"
OSM = HOSTILE / "sources_unsorted.osm.pbf"
LOWRES = DATA / "naturalearth_lowres" / "naturalearth_lowres.shp"


def _one_line_error(proc, *words: str) -> str:
    """The CLI failed with exit 65 and exactly one stderr line that is an error (no traceback)."""
    assert proc.returncode == EXIT_BAD_INPUT, (proc.returncode, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "ERROR 1" not in proc.stderr
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


# --------------------------------------------------------------------------------------------
# 1. OSM PBF with unsorted node ids; GDAL ERRORs during reading


def _plain_osm_count(layer: str) -> int:
    pyogrio.set_gdal_config_options({"OSM_USE_CUSTOM_INDEXING": "NO"})
    return pyogrio.read_arrow(OSM, layer=layer)[1].num_rows


def test_osm_driver_is_bundled() -> None:
    assert "OSM" in pyogrio.list_drivers()


@pytest.mark.parametrize("layer", ["points", "lines", "multipolygons"])
def test_osm_unsorted_layers_match_a_plain_read(tmp_path: Path, layer: str) -> None:
    out = tmp_path / f"{layer}.parquet"
    summary = convert([str(OSM)], str(out), ConvertOptions(layer=layer))
    expected = _plain_osm_count(layer)
    assert expected > 0
    assert summary.features == expected == pq.read_metadata(out).num_rows
    # the fixture holds 8 tagged nodes, 6 highways and 1 building
    assert expected == {"points": 8, "lines": 6, "multipolygons": 1}[layer]
    assert sources.count_features(str(OSM), layer) == expected  # what the survey counts with


def test_gdal_error_while_streaming_fails_the_read() -> None:
    """With GDAL's default (custom) node index the OSM driver logs an ERROR and ends its stream
    with 0 lines; pyogrio swallows it, so the guarded reader must raise."""
    pyogrio.set_gdal_config_options({"OSM_USE_CUSTOM_INDEXING": "YES"})
    try:
        with pyogrio.open_arrow(OSM, layer="lines", use_pyarrow=True) as (_, reader):
            with pytest.raises(SourceError, match="Non increasing node id"):
                list(source_checks.guarded(str(OSM), reader))
        # the unguarded stream really is silently empty: the guard is what makes it fail
        with pyogrio.open_arrow(OSM, layer="lines", use_pyarrow=True) as (_, reader):
            assert sum(b.num_rows for b in reader) == 0
    finally:
        pyogrio.set_gdal_config_options({"OSM_USE_CUSTOM_INDEXING": "NO"})


# --------------------------------------------------------------------------------------------
# 2. empty sources


def test_empty_feature_collection_fails_before_output(tmp_path: Path, cli_run) -> None:
    src = tmp_path / "none.geojson"
    src.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(DataError, match="no features"):
        convert([str(src)], str(tmp_path / "out.parquet"))
    proc = cli_run("convert", src, tmp_path / "out.parquet")
    _one_line_error(proc, "no features", "none.geojson")
    assert not list(tmp_path.glob("*.parquet")) and not list(tmp_path.glob(".*tmp*"))


def test_empty_layer_of_a_geopackage_fails(tmp_path: Path) -> None:
    gpkg = tmp_path / "two.gpkg"
    pts = pa.table({"name": ["a"], "geometry": shapely.to_wkb(shapely.points([1.0], [2.0]))})
    pyogrio.write_arrow(pts, gpkg, layer="full", geometry_name="geometry", geometry_type="Point", crs="EPSG:4326")
    pyogrio.write_arrow(
        pts.slice(0, 0),
        gpkg,
        layer="empty",
        geometry_name="geometry",
        geometry_type="Point",
        crs="EPSG:4326",
        append=True,
    )
    with pytest.raises(DataError, match="no features"):
        convert([str(gpkg)], str(tmp_path / "out.parquet"), ConvertOptions(layer="empty"))
    assert not (tmp_path / "out.parquet").exists()
    assert convert([str(gpkg)], str(tmp_path / "ok.parquet"), ConvertOptions(layer="full")).features == 1


@pytest.mark.slow
def test_run_stops_at_convert_on_an_empty_source(tmp_path: Path, cli_run) -> None:
    src = tmp_path / "none.geojson"
    src.write_text('{"type": "FeatureCollection", "features": []}')
    proc = cli_run("run", "--dataset", "d", "--source-url", src, "--bucket", tmp_path / "out", "--h3-resolution", "3")
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert "no features" in proc.stderr and "Traceback" not in proc.stderr
    out = tmp_path / "out"
    # only run's own logs (under d/_cng/) may be there: no output
    assert not [p for p in out.rglob("*") if p.is_file() and "_cng" not in p.parts]


# --------------------------------------------------------------------------------------------
# 3. empty, HTML, truncated and corrupt files


def _half_gpkg(tmp_path: Path) -> Path:
    full = tmp_path / "full.gpkg"
    table = pyogrio.read_arrow(LOWRES)[1]
    pyogrio.write_arrow(table, full, geometry_name="wkb_geometry", geometry_type="Unknown", crs="EPSG:4326")
    data = full.read_bytes()
    half = tmp_path / "half.gpkg"
    half.write_bytes(data[: len(data) // 2])
    return half


def _corrupt(tmp_path: Path, case: str) -> Path:
    if case == "empty":
        p = tmp_path / "empty.geojson"
        p.write_bytes(b"")
    elif case == "html":
        p = tmp_path / "page.geojson"
        p.write_text("<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head><body>nope</body></html>\n")
    elif case == "half-gpkg":
        p = _half_gpkg(tmp_path)
    elif case == "no-shx":
        for ext in ("shp", "dbf", "prj"):
            (tmp_path / f"cut.{ext}").write_bytes(LOWRES.with_suffix(f".{ext}").read_bytes())
        p = tmp_path / "cut.shp"
    elif case == "not-a-zip":
        p = tmp_path / "data.zip"
        p.write_text("this is not a zip archive\n")
    elif case == "cut-geojson":
        p = tmp_path / "cut.geojson"
        p.write_bytes((DATA / "earthquakes.json").read_bytes()[:30_000])
    elif case == "cut-shp":
        for ext in ("shx", "dbf", "prj"):
            (tmp_path / f"cut.{ext}").write_bytes(LOWRES.with_suffix(f".{ext}").read_bytes())
        (tmp_path / "cut.shp").write_bytes(LOWRES.read_bytes()[:50_000])
        p = tmp_path / "cut.shp"
    elif case == "xml":
        p = tmp_path / "denied.geojson"
        p.write_text('<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code></Error>')
    elif case == "empty-parquet":
        p = tmp_path / "nothing.parquet"
        p.write_bytes(b"")
    else:  # pragma: no cover
        raise AssertionError(case)
    return p


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("empty", ["empty.geojson", "is empty (0 bytes)"]),
        ("html", ["page.geojson", "looks like an HTML page", "not GeoJSON"]),
        ("half-gpkg", ["half.gpkg", "corrupt or truncated"]),
        ("no-shx", ["cut.shp", ".shx index is missing"]),
        ("not-a-zip", ["data.zip", "is not a zip archive"]),
        ("empty-parquet", ["nothing.parquet", "is empty (0 bytes)"]),
        ("cut-geojson", ["cut.geojson", "is not valid GeoJSON, truncated or corrupt?"]),
        # GDAL logs the short read as an ERROR and ends the stream early: without the guard this
        # wrote the first features only, exit 0
        ("cut-shp", ["cut.shp", "GDAL error while reading", "fread"]),
        ("xml", ["denied.geojson", "looks like an XML document"]),
    ],
)
def test_bad_file_is_one_line(tmp_path: Path, cli_run, case: str, words: list[str]) -> None:
    src = _corrupt(tmp_path, case)
    proc = cli_run("convert", src, tmp_path / "out" / "x.parquet")
    _one_line_error(proc, *words)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------------------------
# 4. URLs that do not answer, or answer 403 / 404


@pytest.fixture
def http_status(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP server: /403/… answers 403, anything else 404. Yields its base URL."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(403 if self.path.startswith("/403/") else 404)

        do_HEAD = do_GET

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/403/data.geojson", ["HTTP 403"]),
        ("/missing/data.geojson", ["HTTP 404"]),
        ("/missing/data.parquet", ["HTTP 404"]),
    ],
)
def test_url_answering_403_or_404(tmp_path: Path, http_status: str, path: str, words: list[str]) -> None:
    url = http_status + path
    with pytest.raises(SourceError, match=words[0]) as err:
        convert([url], str(tmp_path / "o.parquet"))
    assert url in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "o.parquet").exists()


def test_url_that_does_not_answer(tmp_path: Path, cli_run) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/data.geojson"
    with pytest.raises(SourceError, match="cannot be reached"):
        convert([url], str(tmp_path / "o.parquet"))
    proc = cli_run("convert", url, tmp_path / "o.parquet", env={"NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"})
    _one_line_error(proc, url, "cannot be reached")


def test_url_that_accepts_but_never_answers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that takes the connection and says nothing: bounded by the sniff timeout."""
    monkeypatch.setattr(source_checks, "SNIFF_TIMEOUT", 0.5)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # the kernel completes the handshake; nobody ever reads or answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/data.geojson"
        with pytest.raises(SourceError, match="no answer within"):
            convert([url], str(tmp_path / "o.parquet"))


@pytest.mark.s3
def test_s3_empty_and_html_objects(s3: str) -> None:
    from cng_datasets import storage

    client = storage.s3_client()
    bucket = storage.parse(s3).bucket
    client.put_object(Bucket=bucket, Key="in/empty.geojson", Body=b"")
    client.put_object(Bucket=bucket, Key="in/page.geojson", Body=b"<html><body>Access denied</body></html>")
    client.put_object(Bucket=bucket, Key="in/empty.parquet", Body=b"")
    for key, words in (
        ("empty.geojson", "is empty"),
        ("page.geojson", "looks like an HTML page"),
        ("empty.parquet", "is empty"),
    ):
        with pytest.raises(SourceError, match=words):
            convert([f"{s3}/in/{key}"], f"{s3}/out/x.parquet")
    assert storage.list_prefix(f"{s3}/out") == []


# --------------------------------------------------------------------------------------------
# 5. our own GeoParquet round-trips; a foreign `_cng_fid` is renamed


def test_own_output_keeps_a_text_id_column(tmp_path: Path) -> None:
    first = tmp_path / "first.parquet"
    convert([str(LOWRES)], str(first), ConvertOptions(id_column="name"))
    second = tmp_path / "second.parquet"
    convert([str(first)], str(second))
    assert read_dataset_info(str(second))["id_column"] == "name"
    assert pq.read_table(second).schema.names == pq.read_table(first).schema.names


def test_foreign_cng_fid_column_is_renamed_with_a_warning(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.parquet"
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}},
    }
    table = pa.table({"_cng_fid": [7, 7], "geometry": shapely.to_wkb(shapely.points([1.0, 2.0], [3.0, 4.0]))})
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), foreign)
    out = tmp_path / "out.parquet"
    with pytest.warns(UserWarning, match="renamed to '_cng_fid_1'"):
        convert([str(foreign)], str(out))
    result = pq.read_table(out)
    assert result["_cng_fid"].to_pylist() == [1, 2] and result["_cng_fid_1"].to_pylist() == [7, 7]


# --------------------------------------------------------------------------------------------
# 6. --on-invalid fail | skip


def _points_csv(path: Path, n: int = 400, bad: dict[int, tuple[str, str]] | None = None) -> Path:
    """A CSV of ``n`` European points; ``bad`` maps a data row (1-based) to its (lat, lon) text."""
    rng = random.Random(7)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "lat", "lon"])
        for row in range(1, n + 1):
            lat, lon = f"{rng.uniform(36, 60):.5f}", f"{rng.uniform(-9, 30):.5f}"
            if bad and row in bad:
                lat, lon = bad[row]
            w.writerow([f"p{row}", lat, lon])
    return path


#: CSV sources have no CRS: saying it keeps the AssumedCrsWarning out of these tests
LONLAT = ConvertOptions(source_crs="EPSG:4326")
BAD_ROWS = {57: ("4O.5", "12.0"), 203: ("45.1", "12°E"), 301: ("95.5", "10.0"), 350: ("", "")}


def test_invalid_csv_row_fails_by_default_naming_the_line(tmp_path: Path, cli_run) -> None:
    src = _points_csv(tmp_path / "pts.csv", bad=BAD_ROWS)
    with pytest.raises(DataError, match=r"row 57 \(line 58\): lat '4O.5' is not a number"):
        convert([str(src)], str(tmp_path / "out.parquet"), LONLAT)
    proc = cli_run("convert", src, tmp_path / "out.parquet")
    _one_line_error(proc, "pts.csv", "line 58", "--on-invalid skip")
    assert not (tmp_path / "out.parquet").exists()


def test_on_invalid_skip_writes_the_rest_and_lists_the_skipped(tmp_path: Path, cli_run) -> None:
    src = _points_csv(tmp_path / "pts.csv", bad=BAD_ROWS)
    out = tmp_path / "out.parquet"
    summary = convert([str(src)], str(out), ConvertOptions(on_invalid="skip", source_crs="EPSG:4326"))
    assert (summary.read, summary.skipped, summary.features) == (400, 3, 397)
    assert summary.null_geometries == 1  # row 350: both coordinates empty, kept as a null geometry
    table = pq.read_table(out)
    names = table["name"].to_pylist()
    assert table.num_rows == 397 and "p57" not in names and "p203" not in names and "p301" not in names
    assert "p350" in names
    assert table["_cng_fid"].to_pylist() == list(range(1, 398))
    info = read_dataset_info(str(out))
    assert info["accounting"] == {
        "unit": "features",
        "read": 400,
        "written": 397,
        "dropped": {"invalid row (--on-invalid skip)": 3},
    }
    assert info["sources"][0]["read"] == 400 and info["sources"][0]["skipped"] == 3
    report = tmp_path / "out.skipped.csv"
    assert summary.skipped_report == str(report)
    with report.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["feature"], r["line"]) for r in rows] == [("57", "58"), ("203", "204"), ("301", "302")]
    assert rows[0]["source"] == str(src)
    assert "lat '4O.5' is not a number" in rows[0]["reason"]
    assert "lon '12°E' is not a number" in rows[1]["reason"]
    assert rows[2]["reason"] == "coordinates outside the lon/lat range (lon/lat (10, 95.5))"

    # the CLI summary says how many were skipped and where they are listed
    proc = cli_run("convert", "--on-invalid", "skip", src, tmp_path / "cli.parquet")
    assert proc.returncode == 0, proc.stderr
    assert "3 invalid skipped" in proc.stdout and "cli.skipped.csv" in proc.stdout

    # a later clean run into the same destination removes the now stale report
    clean = _points_csv(tmp_path / "clean.csv")
    again = convert([str(clean)], str(out), ConvertOptions(on_invalid="skip", source_crs="EPSG:4326"))
    assert again.skipped == 0 and again.skipped_report is None and not report.exists()
    assert read_dataset_info(str(out))["accounting"]["dropped"] == {}


def test_unreadable_wkb_is_an_invalid_feature(tmp_path: Path) -> None:
    src = tmp_path / "wkb.parquet"
    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}},
    }
    wkb = list(shapely.to_wkb(shapely.points([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])))
    wkb[1] = b"\x01\x01\x00\x00\x00garbage"
    pq.write_table(pa.table({"k": [1, 2, 3], "geometry": wkb}).replace_schema_metadata({"geo": json.dumps(geo)}), src)
    with pytest.raises(DataError, match="feature 2: geometry cannot be read"):
        convert([str(src)], str(tmp_path / "a.parquet"))
    s = convert([str(src)], str(tmp_path / "b.parquet"), ConvertOptions(on_invalid="skip"))
    assert (s.read, s.skipped, s.features, s.null_geometries) == (3, 1, 2, 0)
    assert pq.read_table(tmp_path / "b.parquet")["k"].to_pylist() == [1, 3]


def test_all_rows_invalid_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "all.csv"
    src.write_text("name,lat,lon\na,x,1\nb,y,2\n")
    with pytest.raises(DataError, match="all 2 features were invalid"):
        convert([str(src)], str(tmp_path / "o.parquet"), ConvertOptions(on_invalid="skip", source_crs="EPSG:4326"))
    assert not list(tmp_path.glob("o.*"))


# --------------------------------------------------------------------------------------------
# 7. lat/lon swapped


def test_swapped_lat_lon_is_detected(tmp_path: Path, cli_run) -> None:
    """US places given with the longitude in the "lat" column."""
    rng = random.Random(3)
    src = tmp_path / "us.csv"
    lines = ["name,lat,lon"] + [f"p{i},{rng.uniform(-124, -70):.4f},{rng.uniform(26, 48):.4f}" for i in range(200)]
    src.write_text("\n".join(lines) + "\n")
    for mode in ("fail", "skip"):
        with pytest.warns(UserWarning), pytest.raises(SourceError, match="look swapped.*--lat-column and --lon-column"):
            convert([str(src)], str(tmp_path / "o.parquet"), ConvertOptions(on_invalid=mode))
    proc = cli_run("convert", src, tmp_path / "o.parquet")
    _one_line_error(proc, "us.csv", "look swapped")
    # given the other way round, it converts
    with pytest.warns(UserWarning):
        s = convert([str(src)], str(tmp_path / "o.parquet"), ConvertOptions(lat_column="lon", lon_column="lat"))
    assert s.features == 200
    b = shapely.total_bounds(
        shapely.from_wkb(pq.read_table(tmp_path / "o.parquet")["geometry"].to_numpy(zero_copy_only=False))
    )
    assert -124 <= b[0] and b[2] <= -70 and 26 <= b[1] and b[3] <= 48


# --------------------------------------------------------------------------------------------
# 8. --expect-features


def test_expect_features(tmp_path: Path, cli_run) -> None:
    out = tmp_path / "o.parquet"
    with pytest.raises(DataError, match="hold 177 features, not the 176"):
        convert([str(LOWRES)], str(out), ConvertOptions(expect_features=176))
    assert not out.exists()
    proc = cli_run("convert", "--expect-features", "178", LOWRES, out)
    _one_line_error(proc, "177", "178", "--expect-features")
    assert not out.exists()
    assert convert([str(LOWRES)], str(out), ConvertOptions(expect_features=177)).features == 177


def test_expect_features_on_a_csv(tmp_path: Path) -> None:
    src = _points_csv(tmp_path / "pts.csv", n=50)
    with pytest.raises(DataError, match="50 features.*not the 49"):
        convert([str(src)], str(tmp_path / "o.parquet"), ConvertOptions(expect_features=49))
    assert not (tmp_path / "o.parquet").exists()


def test_run_and_workflow_pass_the_convert_options() -> None:
    from cng_datasets.config import WorkflowConfig
    from cng_datasets.plan import build_plan

    base = WorkflowConfig(dataset="d", source_urls=("a.csv",), bucket="b")
    assert build_plan(base, 10).step("convert").argv == ("cng-datasets", "convert", "--", "a.csv", "s3://b/d.parquet")
    cfg = dataclasses.replace(
        base,
        lat_column="y",
        lon_column="x",
        encoding="CP1252",
        source_crs="EPSG:3857",
        on_invalid="skip",
        expect_features=10,
    )
    argv = build_plan(cfg, 10).step("convert").argv
    assert argv == (
        "cng-datasets",
        "convert",
        "--lat-column",
        "y",
        "--lon-column",
        "x",
        "--encoding",
        "CP1252",
        "--source-crs",
        "EPSG:3857",
        "--on-invalid",
        "skip",
        "--expect-features",
        "10",
        "--",
        "a.csv",
        "s3://b/d.parquet",
    )


def test_run_options_reach_convert(tmp_path: Path, cli_run) -> None:
    proc = cli_run(
        "run",
        "--dataset",
        "d",
        "--source-url",
        LOWRES,
        "--bucket",
        tmp_path / "out",
        "--expect-features",
        "5",
        "--h3-resolution",
        "2",
    )
    assert proc.returncode == EXIT_BAD_INPUT, proc.stderr
    assert "not the 5 that --expect-features says" in proc.stderr
    assert not (tmp_path / "out" / "d.parquet").exists()


# --------------------------------------------------------------------------------------------
# 9. accounting


def test_accounting_in_the_footer(tmp_path: Path) -> None:
    out = tmp_path / "o.parquet"
    convert([str(LOWRES), str(DATA / "earthquakes.json")], str(out))
    info = read_dataset_info(str(out))
    acc = info["accounting"]
    assert acc == {"unit": "features", "read": 177 + 1707, "written": 177 + 1707, "dropped": {}}
    assert [s["read"] for s in info["sources"]] == [177, 1707]
    assert np.sum([s["features"] for s in info["sources"]]) == pq.read_metadata(out).num_rows


def test_expect_features_checked_after_reading_when_the_driver_cannot_count(tmp_path: Path) -> None:
    """The OSM driver reports no count before reading: the check runs after reading, before publishing."""
    out = tmp_path / "o.parquet"
    with pytest.raises(DataError, match="read 6 features from the sources, not the 5"):
        convert([str(OSM)], str(out), ConvertOptions(layer="lines", expect_features=5))
    assert not out.exists()


def test_csv_coordinate_text_is_matched_across_batches(tmp_path: Path) -> None:
    """Small batches: the raw-text reader skips ahead and keeps rows it read past a batch."""
    bad = {3: ("", ""), 5: ("x", "1"), 40: ("", ""), 41: ("y", "2"), 97: ("z", "3"), 100: ("1", "w")}
    src = _points_csv(tmp_path / "pts.csv", n=100, bad=bad)
    out = tmp_path / "o.parquet"
    s = convert([str(src)], str(out), ConvertOptions(on_invalid="skip", source_crs="EPSG:4326", batch_size=7))
    assert (s.read, s.skipped, s.null_geometries) == (100, 4, 2)
    with (tmp_path / "o.skipped.csv").open() as f:
        assert [int(r["feature"]) for r in csv.DictReader(f)] == [5, 41, 97, 100]


def test_one_bad_latitude_in_a_small_file_is_not_called_a_swap(tmp_path: Path) -> None:
    src = tmp_path / "few.csv"
    src.write_text("name,lat,lon\na,48.1,11.5\nb,95.0,11.6\nc,48.3,11.7\nd,48.4,11.8\n")
    with pytest.raises(DataError, match=r"row 2 \(line 3\): coordinates outside the lon/lat range"):
        convert([str(src)], str(tmp_path / "o.parquet"), LONLAT)
    s = convert([str(src)], str(tmp_path / "o.parquet"), ConvertOptions(on_invalid="skip", source_crs="EPSG:4326"))
    assert (s.read, s.skipped, s.features) == (4, 1, 3)

"""`validate`: real outputs of a real run pass; each deliberately corrupted copy fails with a precise
message naming the file and what is wrong."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from cng_datasets import validate as v
from cng_datasets.config import WorkflowConfig
from cng_datasets.errors import DataError
from tests.conftest import DATA

SAMPLE = DATA / "naturalearth_lowres" / "naturalearth_lowres.shp"
RES = 4

pytestmark = pytest.mark.xdist_group("local-run")


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The outputs of one real `run` of Natural Earth 110m countries at H3 resolution 4."""
    from cng_datasets.local import run_local

    root = tmp_path_factory.mktemp("validate") / "out"
    cfg = WorkflowConfig(
        dataset="countries",
        source_urls=(str(SAMPLE),),
        bucket=str(root),
        h3_resolution=RES,
        parent_resolutions=(2, 0),
        chunk_size=60,
    )
    run_local(cfg, workers=2)
    return root


@pytest.fixture
def out(good: Path, tmp_path: Path) -> Path:
    """A private copy of the good outputs, to corrupt."""
    dest = tmp_path / "out"
    shutil.copytree(good, dest)
    return dest


def problems(root: Path) -> list[str]:
    return v.validate_dataset(str(root), "countries").problems


def one_problem(root: Path, *fragments: str) -> str:
    found = problems(root)
    assert len(found) >= 1, "the corruption was not detected"
    hits = [p for p in found if all(f in p for f in fragments)]
    assert hits, f"no problem mentions {fragments}: {found}"
    return hits[0]


def partition_files(root: Path) -> list[Path]:
    return sorted((root / "countries" / "hex").rglob("*.parquet"))


def rewrite(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path)


# --------------------------------------------------------------------------------------------


def test_real_outputs_pass(good: Path) -> None:
    seen: list[v.Check] = []
    report = v.validate_dataset(str(good), "countries", on_check=seen.append)
    assert report.ok, report.problems
    assert [c.name for c in seen] == ["geoparquet", "pmtiles", "hex"]
    hex_check = seen[2].detail
    assert "177 features" in hex_check and f"resolution {RES}" in hex_check
    report.raise_for_problems()


def test_missing_outputs_are_named(tmp_path: Path) -> None:
    report = v.validate_dataset(str(tmp_path), "nothing")
    assert not report.ok
    assert any("nothing.parquet: missing" in p for p in report.problems)
    assert any("nothing.pmtiles: missing" in p for p in report.problems)
    assert any("no .parquet files" in p for p in report.problems)
    with pytest.raises(DataError, match="validation failed: 3 problems"):
        report.raise_for_problems()


# ---- hex ----------------------------------------------------------------------------------


def test_missing_success_marker_is_caught(out: Path) -> None:
    (out / "countries" / "hex" / "_SUCCESS.json").unlink()
    one_problem(out, "hex/_SUCCESS.json: missing", "not published")


def test_unlisted_partition_file_is_caught(out: Path) -> None:
    """A stale or half-written file next to the published ones."""
    f = partition_files(out)[0]
    shutil.copy(f, f.parent / "data_1.parquet")
    one_problem(out, "1 .parquet file(s) not listed in _SUCCESS.json", f"{f.parent.name}/data_1.parquet")


def test_listed_file_missing_or_with_other_rows_is_caught(out: Path) -> None:
    hex_dir = out / "countries" / "hex"
    marker = json.loads((hex_dir / "_SUCCESS.json").read_text())
    first = min(marker["files"])
    marker["files"][first] += 1
    marker["files"]["h0=576495936675512319/data_9.parquet"] = 5
    (hex_dir / "_SUCCESS.json").write_text(json.dumps(marker))
    one_problem(out, "1 file(s) listed in _SUCCESS.json are missing", "data_9.parquet")
    one_problem(out, first, f"_SUCCESS.json lists {marker['files'][first]}")


def test_dropped_feature_is_caught(out: Path) -> None:
    # remove every row of one feature (wherever its cells are)
    victim = None
    for f in partition_files(out):
        t = pq.read_table(f)
        if victim is None:
            victim = t.column("_cng_fid")[0].as_py()
        rewrite(f, t.filter(pc.not_equal(t.column("_cng_fid"), victim)))
    msg = one_problem(out, "have no hex row")
    assert f"[{victim}]" in msg and "1 of 177" in msg


def test_wrong_h0_in_partition_is_caught(out: Path) -> None:
    files = partition_files(out)
    a, b = files[0], next(f for f in files if f.parent != files[0].parent)
    ta, tb = pq.read_table(a), pq.read_table(b)
    # move one row of partition b into partition a's file
    rewrite(a, pa.concat_tables([ta, tb.slice(0, 1).cast(ta.schema)]))
    rewrite(b, tb.slice(1))
    msg = one_problem(out, "row(s) have h0", f"in partition {a.parent.name}")
    assert str(a) in msg


def test_broken_parent_column_is_caught(out: Path) -> None:
    f = partition_files(out)[0]
    t = pq.read_table(f)
    col = t.column("h2").to_numpy().copy()
    other = pq.read_table(partition_files(out)[-1]).column("h2")[0].as_py()
    col[0] = other
    i = t.schema.get_field_index("h2")
    rewrite(f, t.set_column(i, t.schema.field(i), pa.array(col, type=t.schema.field(i).type)))
    one_problem(out, "column h2 is not the parent of h4", "1 row(s)", "row 0")


def test_duplicate_row_is_caught(out: Path) -> None:
    f = partition_files(out)[0]
    t = pq.read_table(f)
    rewrite(f, pa.concat_tables([t, t.slice(0, 1)]))
    one_problem(out, "1 duplicate (id, h4) pair(s)", str(f))


def test_cell_of_wrong_resolution_is_caught(out: Path) -> None:
    f = partition_files(out)[0]
    t = pq.read_table(f)
    i = t.schema.get_field_index("h4")
    col = t.column("h4").to_numpy().copy()
    col[0] = t.column("h2")[0].as_py()
    rewrite(f, t.set_column(i, t.schema.field(i), pa.array(col, type=t.schema.field(i).type)))
    one_problem(out, "column h4 has 1 value(s) that are not resolution-4 cells")


def test_unknown_id_is_caught(out: Path) -> None:
    f = partition_files(out)[0]
    t = pq.read_table(f)
    i = t.schema.get_field_index("_cng_fid")
    ids = t.column(i).to_numpy().copy()
    ids[0] = 10_000
    rewrite(f, t.set_column(i, t.schema.field(i), pa.array(ids, type=t.schema.field(i).type)))
    one_problem(out, "not source features", "10000")


# ---- GeoParquet ----------------------------------------------------------------------------


def _rewrite_geo(path: Path, change: Any) -> None:
    pf = pq.ParquetFile(path)
    t = pf.read()
    md = dict(pf.metadata.metadata)
    geo = json.loads(md[b"geo"])
    change(geo)
    md[b"geo"] = json.dumps(geo).encode()
    pq.write_table(t.replace_schema_metadata(md), path)


def test_missing_covering_is_caught(out: Path) -> None:
    _rewrite_geo(out / "countries.parquet", lambda g: g["columns"]["geometry"].pop("covering"))
    one_problem(out, "countries.parquet", "no covering.bbox declared for 'geometry'")


def test_old_geo_version_is_caught(out: Path) -> None:
    _rewrite_geo(out / "countries.parquet", lambda g: g.update(version="1.0.0"))
    one_problem(out, "geo version is '1.0.0', expected 1.1.x")


def test_string_crs_and_bad_encoding_are_caught(out: Path) -> None:
    def change(g: dict[str, Any]) -> None:
        g["columns"]["geometry"]["crs"] = "EPSG:4326"
        g["columns"]["geometry"]["encoding"] = "WKT"

    _rewrite_geo(out / "countries.parquet", change)
    one_problem(out, "crs of 'geometry' must be omitted, null or a PROJJSON object")
    one_problem(out, "encoding of 'geometry' is 'WKT'")


def test_undeclared_geometry_type_is_caught(out: Path) -> None:
    _rewrite_geo(out / "countries.parquet", lambda g: g["columns"]["geometry"].update(geometry_types=["Polygon"]))
    one_problem(out, "geometry types ['MultiPolygon'] found but geometry_types declares ['Polygon']")


def test_bbox_column_inconsistent_with_geometry_is_caught(out: Path) -> None:
    path = out / "countries.parquet"
    pf = pq.ParquetFile(path)
    t = pf.read()
    i = t.schema.get_field_index("bbox")
    rows = t.column(i).to_pylist()
    rows[5] = {**rows[5], "xmin": rows[5]["xmin"] + 1.0}
    t = t.set_column(i, t.schema.field(i), pa.array(rows, type=t.schema.field(i).type))
    pq.write_table(t.replace_schema_metadata(pf.metadata.metadata), path)
    one_problem(out, "covering column 'bbox' disagrees with the geometry bounds in 1 row(s); first row 5")


def test_not_parquet_is_caught(out: Path) -> None:
    (out / "countries.parquet").write_bytes(b"not parquet at all")
    one_problem(out, "countries.parquet: not a readable Parquet file")


# ---- PMTiles -------------------------------------------------------------------------------


def test_truncated_pmtiles_is_caught(out: Path) -> None:
    path = out / "countries.pmtiles"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    one_problem(out, "countries.pmtiles", "tile_data section ends at byte", "(truncated)")


def test_pmtiles_header_only_is_caught(out: Path) -> None:
    path = out / "countries.pmtiles"
    path.write_bytes(path.read_bytes()[:100])
    one_problem(out, "shorter than the 127-byte PMTiles header")


def test_pmtiles_wrong_layer_and_type_are_caught(out: Path) -> None:
    path = out / "countries.pmtiles"
    data = bytearray(path.read_bytes())
    data[99] = 2  # tile type PNG
    path.write_bytes(bytes(data))
    one_problem(out, "tile type PNG, expected MVT")


def test_pmtiles_layer_name_is_checked(good: Path) -> None:
    problems_, _ = v.check_pmtiles(str(good / "countries.pmtiles"), layer="rivers")
    assert problems_ and "no vector layer 'rivers'" in problems_[0]


# ---- pure helpers --------------------------------------------------------------------------


def test_parent_arithmetic_matches_h3py() -> None:
    import h3

    cells = [h3.latlng_to_cell(lat, lng, 9) for lat, lng in [(0, 0), (52.5, 13.4), (-89.9, 179.9), (45, -120)]]
    arr = np.array([int(c, 16) for c in cells], dtype=np.uint64)
    for res in (0, 3, 8, 9):
        assert [format(int(c), "x") for c in v.parents(arr, res)] == [h3.cell_to_parent(c, res) for c in cells]


# ---- against the source: what validate said ok to before, and must fail -------------------


def _footer(path: Path) -> tuple[pa.Table, dict[bytes, bytes], dict[str, Any]]:
    pf = pq.ParquetFile(path)
    md = dict(pf.metadata.metadata)
    return pf.read(), md, json.loads(md[b"cng_datasets"])


def test_real_outputs_pass_against_the_source(good: Path) -> None:
    report = v.validate_dataset(str(good), "countries")
    assert report.ok, report.problems
    details = {c.name: c.detail for c in report.checks}
    assert "source re-counted: 177 features" in details["geoparquet"]
    assert "177 features at zoom" in details["pmtiles"]
    assert report.chain.line().startswith("source 177 → geoparquet 177")
    assert "pmtiles 177 (0 dropped)" in report.chain.line()


def test_hex_missing_features_is_caught_against_the_source(out: Path) -> None:
    """A partition deleted and _SUCCESS.json fixed up to match: the hex output is consistent in
    itself, only the comparison with the GeoParquet / the recorded accounting catches it."""
    hex_dir = out / "countries" / "hex"
    marker = json.loads((hex_dir / "_SUCCESS.json").read_text())
    # the partition holding the most features wholly (so features go missing)
    victim = max(partition_files(out), key=lambda f: pq.read_metadata(f).num_rows)
    rel = str(victim.relative_to(hex_dir))
    victim.unlink()
    ids = pa.chunked_array([pq.read_table(f).column("_cng_fid") for f in partition_files(out)])
    counted = len(pc.unique(ids))
    assert counted < 177
    rows = marker["files"].pop(rel)
    marker["rows"] -= rows
    marker["partitions"] -= 1
    marker["features"] = counted
    if "accounting" in marker:  # a hex step that records accounting: fix that up too
        marker["accounting"]["written"] = counted
    (hex_dir / "_SUCCESS.json").write_text(json.dumps(marker))
    found = problems(out)
    assert not any("_SUCCESS.json" in p for p in found), found  # the marker matches the files
    one_problem(out, "hex:", f"{177 - counted:,} feature(s) lost without a recorded reason")


def test_pmtiles_missing_features_is_caught(out: Path, tmp_path: Path) -> None:
    """The archive built from fewer rows than the GeoParquet holds."""
    from cng_datasets.steps.pmtiles import TileOptions, build_pmtiles

    table, md, _ = _footer(out / "countries.parquet")
    fewer = tmp_path / "fewer.parquet"
    pq.write_table(table.slice(0, 170).replace_schema_metadata(md), fewer)
    build_pmtiles(str(fewer), str(out / "countries.pmtiles"), TileOptions(layer="countries", max_zoom=2))
    one_problem(out, "pmtiles:", "pmtiles read 170 features but the GeoParquet has 177 rows")


def test_pmtiles_record_that_lies_is_caught_by_counting(out: Path) -> None:
    """The record claims every feature; the tiles at max zoom hold fewer (counted independently)."""
    from cng_datasets.steps.pmtiles import TileOptions, build_pmtiles
    from cng_datasets.steps.pmtiles_archive import read_metadata, set_metadata

    path = out / "countries.pmtiles"
    fewer = out / "fewer.parquet"
    table, md, _ = _footer(out / "countries.parquet")
    pq.write_table(table.slice(7).replace_schema_metadata(md), fewer)
    build_pmtiles(str(fewer), str(path), TileOptions(layer="countries", max_zoom=2))
    fewer.unlink()
    record = read_metadata(path)["cng_datasets"]
    record["accounting"] = {"unit": "features", "read": 177, "written": 177, "dropped": {}}
    set_metadata(path, {"cng_datasets": record})
    one_problem(out, "pmtiles:", "170 features in the tiles of the maximum zoom (counted) but pmtiles recorded 177")


def test_pmtiles_without_record_missing_features_is_caught(out: Path) -> None:
    """An archive of an older version (no accounting in its metadata) missing features."""
    from cng_datasets.steps.pmtiles import TileOptions, build_pmtiles
    from cng_datasets.steps.pmtiles_archive import set_metadata

    path = out / "countries.pmtiles"
    table, md, _ = _footer(out / "countries.parquet")
    fewer = out / "fewer.parquet"
    pq.write_table(table.slice(0, 176).replace_schema_metadata(md), fewer)
    build_pmtiles(str(fewer), str(path), TileOptions(layer="countries", max_zoom=2))
    fewer.unlink()
    set_metadata(path, {"cng_datasets": None})
    one_problem(
        out, "pmtiles:", "176 features in the tiles of the maximum zoom, the GeoParquet has 177 with a geometry"
    )


def test_geoparquet_with_fewer_rows_than_the_source_is_caught(out: Path) -> None:
    """One row gone and every count in the footer made to agree: only re-counting the source
    catches it."""
    path = out / "countries.parquet"
    table, md, info = _footer(path)
    info["feature_count"] = 176
    for s in info["sources"]:
        s["features"] = 176
        if "read" in s:
            s["read"] = 176
    if "accounting" in info:
        info["accounting"].update(read=176, written=176)
    md[b"cng_datasets"] = json.dumps(info).encode()
    pq.write_table(table.slice(0, 176).replace_schema_metadata(md), path)
    one_problem(out, "geoparquet:", "the source holds 177 features (re-counted) but convert read 176")
    # without re-counting, this one is not caught
    report = v.validate_dataset(str(out), "countries", source_count=False)
    assert not any("re-counted" in p for p in report.problems)
    assert "source not re-counted: not asked to" in next(c.detail for c in report.checks if c.name == "geoparquet")


def test_unreachable_source_is_said_not_recounted(out: Path) -> None:
    path = out / "countries.parquet"
    table, md, info = _footer(path)
    for s in info["sources"]:
        s["source"] = str(out / "gone.shp")
    md[b"cng_datasets"] = json.dumps(info).encode()
    pq.write_table(table.replace_schema_metadata(md), path)
    report = v.validate_dataset(str(out), "countries")
    assert report.ok, report.problems
    detail = next(c.detail for c in report.checks if c.name == "geoparquet")
    assert "source not re-counted: " in detail and "gone.shp" in detail

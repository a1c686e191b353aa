"""``cng-datasets hex``: chunks of real GeoParquet files (made by `convert`) against h3-py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h3.api.basic_int as h3
import numpy as np
import pyarrow as pa
import pyarrow.compute  # makes pa.compute available
import pyarrow.parquet as pq
import pytest
import shapely

from cng_datasets import storage
from cng_datasets.errors import DataError
from cng_datasets.steps import hex as hexstep
from cng_datasets.steps.convert import ConvertOptions, convert
from tests.conftest import CITIES, csv_rows, data_file

# the CSV and TopoJSON samples carry no CRS: convert says so, and takes lon/lat
pytestmark = pytest.mark.filterwarnings("ignore::cng_datasets.errors.AssumedCrsWarning")


@pytest.fixture(scope="module")
def lowres_parquet(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Natural Earth 110m countries (177), in row groups of 40 so chunks straddle row groups."""
    out = tmp_path_factory.mktemp("src") / "countries.parquet"
    src = data_file("naturalearth_lowres") / "naturalearth_lowres.shp"
    convert([str(src)], str(out), ConvertOptions(row_group_size=40))
    return str(out)


def read_chunks(chunks: str | Path) -> pa.Table:
    files = sorted(Path(chunks).glob("h0=*/part-*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]) if files else pa.table({})


def pairs(table: pa.Table, res: int) -> set[tuple[int, int]]:
    return set(zip(table.column("_cng_fid").to_pylist(), table.column(f"h{res}").to_pylist(), strict=True))


def test_chunk_output_layout_columns_and_h3py_reference(lowres_parquet: str, tmp_path: Path) -> None:
    out = tmp_path / "chunks"
    marker = hexstep.hex_chunk(
        lowres_parquet, str(out), hexstep.ChunkSpec(0, 1000, last_chunk=True), hexstep.CellOptions(3, (2, 0))
    )
    assert marker is not None and marker["features"] == 177 and marker["features_with_cells"] == 177
    assert (out / "_done" / "chunk-00000.json").exists()
    assert json.loads((out / "_done" / "chunk-00000.json").read_text()) == marker
    table = read_chunks(out)
    assert table.num_rows == marker["cells"] == sum(marker["parts"].values())
    names = table.column_names
    assert names[:4] == ["_cng_fid", "h3", "h2", "h0"]
    assert "geometry" not in names and "bbox" not in names and "name" in names
    for c in ("h3", "h2", "h0"):
        assert table.schema.field(c).type == pa.uint64()
    # every part holds only its own h0, parents are right
    for f in out.glob("h0=*/part-00000.parquet"):
        t = pq.read_table(f)
        h0 = int(f.parent.name.split("=")[1])
        assert set(t.column("h0").to_pylist()) == {h0}
        ids = t.column("_cng_fid").to_numpy()
        assert np.all(np.diff(ids) >= 0)
    sample = table.slice(0, 200)
    for cell, h2, h0 in zip(*(sample.column(c).to_pylist() for c in ("h3", "h2", "h0")), strict=True):
        assert h3.cell_to_parent(cell, 2) == h2 and h3.cell_to_parent(cell, 0) == h0
    # the cells equal an h3-py per-feature loop on the source geometries
    src = pq.read_table(lowres_parquet, columns=["_cng_fid", "name", "geometry"])
    geoms = shapely.from_wkb(src.column("geometry").to_numpy(zero_copy_only=False))
    got = pairs(table, 3)
    by_id: dict[int, set[int]] = {}
    for i, c in got:
        by_id.setdefault(i, set()).add(c)
    checked = 0
    for fid, name, g in zip(src.column("_cng_fid").to_pylist(), src.column("name").to_pylist(), geoms, strict=True):
        if g.bounds[2] - g.bounds[0] > 180:
            continue
        ref = set(h3.geo_to_cells(g, 3))
        if ref:
            assert by_id[fid] == ref, name
            checked += 1
        else:
            assert len(by_id[fid]) == 1
    assert checked > 150


def test_chunk_boundaries_cover_every_feature_once(lowres_parquet: str, tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    hexstep.hex_chunk(
        lowres_parquet, str(whole), hexstep.ChunkSpec(0, 10_000, last_chunk=True), hexstep.CellOptions(2, (0,))
    )
    expect = pairs(read_chunks(whole), 2)

    out = tmp_path / "chunks"
    # 177 features, chunks of 50 (not a divisor): 0..49, 50..99, 100..149, 150..176
    markers = [
        hexstep.hex_chunk(
            lowres_parquet, str(out), hexstep.ChunkSpec(i, 50, chunk_count=4), hexstep.CellOptions(2, (0,))
        )
        for i in range(4)
    ]
    assert [(m["start_row"], m["end_row"]) for m in markers] == [(0, 50), (50, 100), (100, 150), (150, 177)]
    assert [m["last"] for m in markers] == [False, False, False, True]
    assert [(m["id_min"], m["id_max"]) for m in markers] == [(1, 50), (51, 100), (101, 150), (151, 177)]
    assert pairs(read_chunks(out), 2) == expect
    # chunk id >= chunk count: nothing at all; past the end without a count: an empty marker
    assert (
        hexstep.hex_chunk(
            lowres_parquet, str(out), hexstep.ChunkSpec(4, 50, chunk_count=4), hexstep.CellOptions(2, (0,))
        )
        is None
    )
    assert not (out / "_done" / "chunk-00004.json").exists()
    past = hexstep.hex_chunk(lowres_parquet, str(out), hexstep.ChunkSpec(9, 50), hexstep.CellOptions(2, (0,)))
    assert past is not None and past["features"] == 0 and past["parts"] == {}

    # an under-estimated count: the last planned chunk reads to the end
    under = tmp_path / "under"
    m0 = hexstep.hex_chunk(
        lowres_parquet, str(under), hexstep.ChunkSpec(0, 50, chunk_count=2), hexstep.CellOptions(2, (0,))
    )
    m1 = hexstep.hex_chunk(
        lowres_parquet, str(under), hexstep.ChunkSpec(1, 50, chunk_count=2), hexstep.CellOptions(2, (0,))
    )
    assert m0["end_row"] == 50 and (m1["start_row"], m1["end_row"], m1["last"]) == (50, 177, True)
    assert pairs(read_chunks(under), 2) == expect


def test_killed_mid_write_then_rerun_gives_identical_output(
    lowres_parquet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clean = tmp_path / "clean"
    hexstep.hex_chunk(
        lowres_parquet, str(clean), hexstep.ChunkSpec(1, 100, chunk_count=2), hexstep.CellOptions(3, (1, 0))
    )

    out = tmp_path / "killed"
    real_move = hexstep.shutil.move
    calls = {"n": 0}

    def dying_move(a: str, b: str) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt  # the process dies while publishing its parts
        real_move(a, b)

    monkeypatch.setattr(hexstep.shutil, "move", dying_move)
    with pytest.raises(KeyboardInterrupt):
        hexstep.hex_chunk(
            lowres_parquet, str(out), hexstep.ChunkSpec(1, 100, chunk_count=2), hexstep.CellOptions(3, (1, 0))
        )
    monkeypatch.setattr(hexstep.shutil, "move", real_move)
    assert not (out / "_done" / "chunk-00001.json").exists()
    assert 0 < len(list(out.glob("h0=*/part-*.parquet"))) < len(list(clean.glob("h0=*/part-*.parquet")))
    assert not list(out.rglob("*.tmp*")) and not (out / "_tmp").exists()  # work files live in $TMPDIR

    hexstep.hex_chunk(
        lowres_parquet, str(out), hexstep.ChunkSpec(1, 100, chunk_count=2), hexstep.CellOptions(3, (1, 0))
    )
    a = {p.relative_to(clean): p.read_bytes() for p in clean.rglob("*") if p.is_file()}
    b = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert a == b and a


def test_big_feature_streams_in_batches(lowres_parquet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A small cell budget forces Russia, Canada, Antarctica through the tiled, streamed path."""
    a, b = tmp_path / "a", tmp_path / "b"
    hexstep.hex_chunk(lowres_parquet, str(a), hexstep.ChunkSpec(0, 200, last_chunk=True), hexstep.CellOptions(4, (0,)))
    monkeypatch.setattr(hexstep, "BUFFER_BYTES", 64 << 10)
    hexstep.hex_chunk(
        lowres_parquet, str(b), hexstep.ChunkSpec(0, 200, last_chunk=True), hexstep.CellOptions(4, (0,), budget=3000)
    )
    assert pairs(read_chunks(a), 4) == pairs(read_chunks(b), 4)
    assert max(pq.ParquetFile(f).metadata.num_row_groups for f in b.glob("h0=*/*.parquet")) > 1


def test_cli_env_chunk_id_and_errors(lowres_parquet: str, tmp_path: Path, cli_run) -> None:
    out = tmp_path / "chunks"
    args = [
        "hex",
        "--input",
        lowres_parquet,
        "--output",
        out,
        "--chunk-size",
        "100",
        "--chunk-count",
        "2",
        "--resolution",
        "2",
        "--parent-resolutions",
        "1,0",
    ]
    proc = cli_run(*args, env={"JOB_COMPLETION_INDEX": "1"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "_done" / "chunk-00001.json").read_text())["start_row"] == 100
    proc = cli_run(*args, "--chunk-id", "5")
    assert proc.returncode == 0 and not (out / "_done" / "chunk-00005.json").exists()
    bad = cli_run(
        "hex", "--input", lowres_parquet, "--output", out, "--chunk-id", "0", "--chunk-size", "10", "--resolution", "16"
    )
    assert bad.returncode == 65 and "resolution" in bad.stderr
    bad = cli_run(
        "hex",
        "--input",
        lowres_parquet,
        "--output",
        out,
        "--chunk-id",
        "0",
        "--chunk-size",
        "10",
        "--resolution",
        "3",
        "--parent-resolutions",
        "5",
    )
    assert bad.returncode == 65 and "finer" in bad.stderr


def test_missing_columns_are_data_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": [1], "geometry": [shapely.to_wkb(shapely.Point(0, 0))]}), path)
    with pytest.raises(DataError, match="no id column '_cng_fid'"):
        hexstep.hex_chunk(str(path), str(tmp_path / "o"), hexstep.ChunkSpec(0, 10), hexstep.CellOptions(3))


def test_cities_csv_points(tmp_path: Path) -> None:
    src = data_file(CITIES)
    parquet = tmp_path / "cities.parquet"
    convert([str(src)], str(parquet))
    out = tmp_path / "chunks"
    m = hexstep.hex_chunk(
        str(parquet), str(out), hexstep.ChunkSpec(0, 1_000_000, chunk_count=1), hexstep.CellOptions(8, (5, 0))
    )
    assert m["features_with_cells"] == m["features"] == m["cells"] == csv_rows(CITIES)
    t = pq.read_table(parquet, columns=["_cng_fid", "geometry"])
    pts = shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))
    ref = {(int(i), h3.latlng_to_cell(p.y, p.x, 8)) for i, p in zip(t.column("_cng_fid").to_pylist(), pts, strict=True)}
    assert pairs(read_chunks(out), 8) == ref


@pytest.mark.slow
def test_counties_topojson_lines_and_10m_countries(tmp_path: Path) -> None:
    """US counties (TopoJSON, Aleutians West wider than 180°) and the 10m countries at res 2."""
    parquet = tmp_path / "countries.parquet"
    convert([str(data_file("ne_10m_admin_0_countries_deu.zip"))], str(parquet))
    out = tmp_path / "chunks"
    m = hexstep.hex_chunk(
        str(parquet), str(out), hexstep.ChunkSpec(0, 1000, chunk_count=1), hexstep.CellOptions(2, (0,))
    )
    assert m["features_with_cells"] == 250
    t = read_chunks(out)
    names = t.column("NAME_EN").to_pylist()
    cells = np.asarray(t.column("h2").to_numpy(), dtype=np.uint64)
    from cng_datasets.h3cells import cell_centers

    lng, lat = cell_centers(cells)
    names_arr = np.array(names, dtype=object)
    assert np.all(lat[names_arr == "Antarctica"] < -60)
    assert h3.latlng_to_cell(-90, 0, 2) in set(cells[names_arr == "Antarctica"].tolist())
    assert np.all(np.abs(lng[names_arr == "Fiji"]) > 174)
    ru = names_arr == "Russia"
    assert np.all((lng[ru] > 18) | (lng[ru] < -168))

    counties = tmp_path / "counties.parquet"
    convert([str(data_file("us-atlas/counties-10m.json"))], str(counties), ConvertOptions(layer="counties"))
    out2 = tmp_path / "counties"
    m2 = hexstep.hex_chunk(
        str(counties), str(out2), hexstep.ChunkSpec(0, 10_000, chunk_count=1), hexstep.CellOptions(5, (0,))
    )
    assert m2["features_with_cells"] + m2["null_geometries"] + m2["empty_geometries"] == m2["features"] == 3231
    t2 = read_chunks(out2)
    lng2, lat2 = cell_centers(np.asarray(t2.column("h5").to_numpy(), dtype=np.uint64))
    # the USA and its territories (Samoa, Guam), the Aleutians across ±180: never the long way round
    assert np.all((lat2 > -15) & (lat2 < 72))
    assert np.all((lng2 < -64) | (lng2 > 144))
    aleutians = t2.filter(pa.compute.equal(t2.column("name"), "Aleutians West"))
    lng3, _ = cell_centers(np.asarray(aleutians.column("h5").to_numpy(), dtype=np.uint64))
    assert 0 < len(lng3) < 3000 and np.all(np.abs(lng3) > 160)


@pytest.mark.s3
def test_s3_round_trip(lowres_parquet: str, s3: str, tmp_path: Path) -> None:
    src = f"{s3}/ds/countries.parquet"
    storage.upload_file(lowres_parquet, src)
    local = tmp_path / "local"
    for i in range(2):
        hexstep.hex_chunk(
            lowres_parquet, str(local), hexstep.ChunkSpec(i, 100, chunk_count=2), hexstep.CellOptions(2, (0,))
        )
        hexstep.hex_chunk(
            src, f"{s3}/ds/chunks", hexstep.ChunkSpec(i, 100, chunk_count=2), hexstep.CellOptions(2, (0,))
        )
    remote = storage.list_prefix(f"{s3}/ds/chunks")
    rel_remote = sorted(u[len(f"{s3}/ds/chunks/") :] for u in remote)
    rel_local = sorted(str(p.relative_to(local)).replace(os.sep, "/") for p in local.rglob("*") if p.is_file())
    assert rel_remote == rel_local
    for rel in rel_local:
        if rel.endswith(".parquet"):
            assert storage.read_bytes(f"{s3}/ds/chunks/{rel}") == (local / rel).read_bytes()


# ---- text ids, CRS and coordinate range ----------------------------------------------------


def test_text_id_column(tmp_path: Path) -> None:
    """Earthquakes with their text `id` as the id column: hexed, ids carried, no min/max."""
    parquet = tmp_path / "quakes.parquet"
    convert([str(data_file("earthquakes.json"))], str(parquet), ConvertOptions(id_column="id", row_group_size=500))
    out = tmp_path / "chunks"
    markers = [
        hexstep.hex_chunk(
            str(parquet), str(out), hexstep.ChunkSpec(i, 1000, chunk_count=2), hexstep.CellOptions(5, (0,))
        )
        for i in range(2)
    ]
    assert sum(m["features_with_cells"] for m in markers) == 1707
    assert all(m["id_min"] is None and m["id_max"] is None for m in markers)
    t = read_chunks(out)
    assert t.schema.field("id").type == pa.string() and t.column_names[:3] == ["id", "h5", "h0"]
    src = pq.read_table(parquet, columns=["id", "geometry"])
    pts = shapely.from_wkb(src.column("geometry").to_numpy(zero_copy_only=False))
    ref = {(i, h3.latlng_to_cell(p.y, p.x, 5)) for i, p in zip(src.column("id").to_pylist(), pts, strict=True)}
    assert set(zip(t.column("id").to_pylist(), t.column("h5").to_pylist(), strict=True)) == ref


@pytest.fixture(scope="module")
def mercator_parquet(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("merc") / "countries-3857.parquet"
    src = data_file("naturalearth_lowres") / "naturalearth_lowres.shp"
    convert([str(src)], str(out), ConvertOptions(target_crs="EPSG:3857"))
    return str(out)


def _with_geo(src: str, dest: Path, change: Any) -> str:
    pf = pq.ParquetFile(src)
    md = dict(pf.metadata.metadata)
    geo = json.loads(md[b"geo"])
    change(geo)
    md[b"geo"] = json.dumps(geo).encode()
    pq.write_table(pf.read().replace_schema_metadata(md), dest)
    return str(dest)


def test_projected_input_is_refused(mercator_parquet: str, tmp_path: Path, cli_run) -> None:
    out = tmp_path / "chunks"
    with pytest.raises(DataError, match=r"CRS is EPSG:3857 .*not lon/lat"):
        hexstep.hex_chunk(
            mercator_parquet, str(out), hexstep.ChunkSpec(0, 1000, last_chunk=True), hexstep.CellOptions(3, (0,))
        )
    assert not list(out.rglob("*.parquet"))
    proc = cli_run(
        "hex",
        "--input",
        mercator_parquet,
        "--output",
        out,
        "--chunk-id",
        "0",
        "--chunk-size",
        "1000",
        "--chunk-count",
        "1",
        "--resolution",
        "3",
    )
    assert proc.returncode == 65, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "EPSG:3857" in lines[0] and "not lon/lat" in lines[0], proc.stderr


def test_lonlat_crs_spellings_are_accepted(lowres_parquet: str, tmp_path: Path) -> None:
    import pyproj

    ref = hexstep.hex_chunk(
        lowres_parquet, str(tmp_path / "ref"), hexstep.ChunkSpec(0, 1000, last_chunk=True), hexstep.CellOptions(2, (0,))
    )
    for name, crs in (
        ("4326", pyproj.CRS("EPSG:4326").to_json_dict()),
        ("crs84", pyproj.CRS("OGC:CRS84").to_json_dict()),
    ):
        src = _with_geo(
            lowres_parquet, tmp_path / f"{name}.parquet", lambda g, c=crs: g["columns"]["geometry"].update(crs=c)
        )
        m = hexstep.hex_chunk(
            src, str(tmp_path / name), hexstep.ChunkSpec(0, 1000, last_chunk=True), hexstep.CellOptions(2, (0,))
        )
        assert m["cells"] == ref["cells"] and m["parts"] == ref["parts"]


def test_coordinates_outside_lonlat_name_the_feature(mercator_parquet: str, tmp_path: Path) -> None:
    """Metres with the CRS dropped from the metadata: refused, not clipped to the poles."""
    src = _with_geo(mercator_parquet, tmp_path / "nocrs.parquet", lambda g: g["columns"]["geometry"].pop("crs"))
    out = tmp_path / "chunks"
    with pytest.raises(DataError, match=r"feature _cng_fid=1: coordinates outside \[-180, 180\] x \[-90, 90\]"):
        hexstep.hex_chunk(src, str(out), hexstep.ChunkSpec(0, 1000, last_chunk=True), hexstep.CellOptions(3, (0,)))
    assert not (out / "_done" / "chunk-00000.json").exists()


def test_shared_chunks_split_the_tiles_of_big_features_and_write_each_cell_once(
    lowres_parquet: str, tmp_path: Path
) -> None:
    from cng_datasets.steps.repartition import repartition
    from cng_datasets.validate import check_hex

    cells = hexstep.CellOptions(4, (0,), budget=5000)  # Russia, Canada, … need several tiles
    whole = tmp_path / "whole"
    hexstep.hex_chunk(lowres_parquet, str(whole), hexstep.ChunkSpec(0, 10_000, last_chunk=True), cells)
    expect = read_chunks(whole)

    out = tmp_path / "shared"  # 3 row chunks of 60 features, each shared by 3 chunks
    markers = [
        hexstep.hex_chunk(lowres_parquet, str(out), hexstep.ChunkSpec(i, 60, chunk_count=3, shares=3), cells)
        for i in range(9)
    ]
    assert [(m["start_row"], m["end_row"], m["share"]) for m in markers[:3]] == [(0, 60, 0), (0, 60, 1), (0, 60, 2)]
    assert [m["features"] for m in markers[:3]] == [20, 20, 20]  # each owns a third of the rows
    assert sum(m["features"] for m in markers) == sum(m["features_with_cells"] for m in markers) == 177
    got = read_chunks(out)
    assert got.num_rows == expect.num_rows and pairs(got, 4) == pairs(expect, 4)  # every cell once
    split: dict[str, list[int]] = {}
    for m in markers:
        for row, n in m.get("split_cells", {}).items():
            split.setdefault(row, []).append(n)
    assert len(split) >= 3 and all(len(n) == 3 for n in split.values())  # every share has its say
    assert all(sum(1 for x in n if x) >= 2 for n in split.values())  # the tiles are spread
    summary = repartition(str(out), str(tmp_path / "hex"), lowres_parquet)
    assert summary["features"] == 177 and summary["rows"] == expect.num_rows
    problems, _ = check_hex(str(tmp_path / "hex"), lowres_parquet)
    assert problems == []


def test_a_long_part_rolls_over_to_next_files_with_the_same_rows(
    lowres_parquet: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer holds every row group's footer in memory until closed: past the limit the fullest
    file is closed and the part goes on in a next file — same rows, same order, same bytes again."""
    from cng_datasets.steps.repartition import repartition

    cells = hexstep.CellOptions(4, (0,))
    one = tmp_path / "one"
    hexstep.hex_chunk(lowres_parquet, str(one), hexstep.ChunkSpec(0, 1000, last_chunk=True), cells)
    monkeypatch.setattr(hexstep, "BUFFER_BYTES", 200_000)  # many small row groups
    monkeypatch.setattr(hexstep, "MAX_OPEN_COLUMN_CHUNKS", 200)
    runs = []
    for name in ("many", "again"):
        marker = hexstep.hex_chunk(
            lowres_parquet, str(tmp_path / name), hexstep.ChunkSpec(0, 1000, last_chunk=True), cells
        )
        runs.append({p.relative_to(tmp_path / name): p.read_bytes() for p in (tmp_path / name).rglob("*.parquet")})
    assert runs[0] == runs[1]  # a retried chunk writes the same bytes
    assert any(hexstep.part_seq(rel) > 0 for rel in marker["parts"])
    assert len(marker["parts"]) > len(list(one.glob("h0=*/*.parquet")))
    assert read_chunks(tmp_path / "many").num_rows == read_chunks(one).num_rows

    def hexed(chunks: Path, out: Path) -> list[Any]:
        repartition(str(chunks), str(out), lowres_parquet)
        t = pq.read_table(out)
        return list(zip(t.column("_cng_fid").to_pylist(), t.column("h4").to_pylist(), strict=True))

    many, single = hexed(tmp_path / "many", tmp_path / "hex_many"), hexed(one, tmp_path / "hex_one")
    assert many == single  # every file read, in the order written

"""``cng-datasets repartition``: merge chunks by h0, check completeness, clean up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cng_datasets import storage
from cng_datasets.errors import IncompleteOutputError
from cng_datasets.h3cells import parent_cells
from cng_datasets.steps import hex as hexstep
from cng_datasets.steps import repartition as rp
from cng_datasets.steps.convert import ConvertOptions, convert
from cng_datasets.steps.repartition import base_cells, repartition
from cng_datasets.validate import check_hex
from tests.conftest import data_file


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("src") / "countries.parquet"
    convert(
        [str(data_file("naturalearth_lowres") / "naturalearth_lowres.shp")], str(out), ConvertOptions(row_group_size=40)
    )
    return str(out)


def make_chunks(source: str, chunks: str, n: int = 4, size: int = 50, res: int = 3) -> None:
    for i in range(n):
        hexstep.hex_chunk(source, chunks, hexstep.ChunkSpec(i, size, chunk_count=n), hexstep.CellOptions(res, (1, 0)))


def read_hex(hex_dir: Path) -> dict[str, pa.Table]:
    return {p.parent.name: pq.read_table(p) for p in sorted(hex_dir.glob("h0=*/data_*.parquet"))}


def test_repartition_layout_order_and_cleanup(source: str, tmp_path: Path) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(chunks))
    all_rows = sum(pq.read_metadata(p).num_rows for p in chunks.glob("h0=*/part-*.parquet"))
    stale = out / "h0=123" / "data_0.parquet"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    summary = repartition(str(chunks), str(out), source)
    assert summary["rows"] == all_rows and summary["features"] == 177
    assert not chunks.exists()  # deleted after the check passed
    assert not stale.parent.exists()  # no stale partition survives
    parts = read_hex(out)
    assert sum(t.num_rows for t in parts.values()) == all_rows
    for name, t in parts.items():
        h0 = int(name.split("=")[1])
        assert h0 in base_cells()
        # hive layout: h0 is in the folder name only; every cell column is int64
        assert "h0" not in t.column_names
        assert {t.schema.field(c).type for c in ("h3", "h1")} == {pa.int64()}
        assert set(parent_cells(t.column("h3").to_numpy().astype(np.uint64), 0).tolist()) == {h0}
        ids = t.column("_cng_fid").to_numpy()
        assert np.all(np.diff(ids) >= 0), name
    f = next(out.glob("h0=*/data_0.parquet"))
    assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
    assert list(out.glob("h0=*/*")) == list(out.glob("h0=*/data_0.parquet"))
    problems, stats = check_hex(str(out), source)  # the independent validator agrees
    assert problems == [] and stats["features"] == 177


def test_missing_chunk_fails_naming_it_and_keeps_chunks(source: str, tmp_path: Path, cli_run) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(chunks))
    (chunks / "_done" / "chunk-00002.json").unlink()
    with pytest.raises(IncompleteOutputError, match=r"chunk 2 \(_done/chunk-00002.json\)"):
        repartition(str(chunks), str(out), source)
    proc = cli_run("repartition", "--chunks", chunks, "--output", out, "--source", source)
    assert proc.returncode == 65
    assert "missing 1 hex chunk(s): chunk 2" in proc.stderr
    assert (chunks / "_done" / "chunk-00000.json").exists() and not out.exists()


def test_missing_last_chunk_and_missing_part_fail(source: str, tmp_path: Path) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(chunks))
    (chunks / "_done" / "chunk-00003.json").unlink()
    with pytest.raises(IncompleteOutputError, match="chunk 3"):
        repartition(str(chunks), str(out), source)
    hexstep.hex_chunk(source, str(chunks), hexstep.ChunkSpec(3, 50, chunk_count=4), hexstep.CellOptions(3, (1, 0)))
    victim = sorted(chunks.glob("h0=*/part-00001.parquet"))[0]
    victim.unlink()
    with pytest.raises(IncompleteOutputError, match="part-00001.parquet"):
        repartition(str(chunks), str(out), source)
    assert (chunks / "_done").exists()


def test_parallel_partitions_then_finalize_equal_single_run(source: str, tmp_path: Path) -> None:
    single, para = tmp_path / "single", tmp_path / "para"
    make_chunks(source, str(tmp_path / "c1"))
    repartition(str(tmp_path / "c1"), str(single), source)
    chunks = tmp_path / "c2"
    make_chunks(source, str(chunks))
    for i in range(len(base_cells())):
        repartition(str(chunks), str(para), source, h0_index=i)
    assert chunks.exists()
    assert not (para / "_SUCCESS.json").exists()  # only the finalize step publishes
    assert len(list((para / "_partitions").glob("h0=*.json"))) == len(list(para.glob("h0=*")))
    repartition(str(chunks), str(para), source, finalize=True)
    assert not chunks.exists()
    assert (para / "_SUCCESS.json").exists() and not (para / "_partitions").exists()
    a = {p.relative_to(single): p.read_bytes() for p in single.rglob("*") if p.is_file()}
    b = {p.relative_to(para): p.read_bytes() for p in para.rglob("*") if p.is_file()}
    assert a == b


def test_finalize_detects_a_partition_not_written(source: str, tmp_path: Path) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(chunks))
    for i in range(10):
        repartition(str(chunks), str(out), source, h0_index=i)
    with pytest.raises(IncompleteOutputError, match="is missing"):
        repartition(str(chunks), str(out), source, finalize=True)
    assert chunks.exists()


def test_large_partition_rolls_over_files(source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cng_datasets.steps import repartition as rp

    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(chunks), res=4)
    monkeypatch.setattr(rp, "MAX_FILE_ROWS", 300)
    monkeypatch.setattr(rp, "ROW_GROUP_ROWS", 100)
    repartition(str(chunks), str(out), source)
    assert list(out.glob("h0=*/data_1.parquet"))
    problems, _ = check_hex(str(out), source)
    assert problems == []


def success(out: Path) -> dict:
    return json.loads((out / "_SUCCESS.json").read_text())


def test_success_marker_lists_every_file_with_its_rows(source: str, tmp_path: Path) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(chunks))
    repartition(str(chunks), str(out), source)
    marker = success(out)
    files = {str(p.relative_to(out)): pq.read_metadata(p).num_rows for p in out.glob("h0=*/*.parquet")}
    assert marker["files"] == files and marker["rows"] == sum(files.values())
    assert marker["features"] == 177 and marker["id_column"] == "_cng_fid" and marker["resolution"] == 3
    assert marker["partitions"] == len(list(out.glob("h0=*")))


def test_failure_midway_leaves_the_output_unpublished(source: str, tmp_path: Path) -> None:
    """A part found short in a late partition: the partitions written before it are not published.
    A part that is missing altogether is found before the output is touched: it stays published."""
    out = tmp_path / "hex"
    make_chunks(source, str(tmp_path / "c1"))
    repartition(str(tmp_path / "c1"), str(out), source)
    assert check_hex(str(out), source)[0] == []
    old = success(out)
    old_files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    chunks = tmp_path / "c2"
    make_chunks(source, str(chunks), res=4)  # a new run with other data
    last_h0 = max(int(p.name.split("=")[1]) for p in chunks.glob("h0=*"))
    victim = min(chunks.glob(f"h0={last_h0}/part-*.parquet"))
    saved = victim.read_bytes()
    victim.unlink()
    with pytest.raises(IncompleteOutputError, match=f"{victim.name} listed in its marker is missing"):
        repartition(str(chunks), str(out), source)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == old_files  # untouched, still published

    pq.write_table(pq.read_table(pa.BufferReader(saved)).slice(0, 1), victim)  # present, but short
    with pytest.raises(IncompleteOutputError, match=f"{victim.name} has 1 rows"):
        repartition(str(chunks), str(out), source)
    assert not (out / "_SUCCESS.json").exists()  # partitions were rewritten, but nothing claims completeness
    assert len(list(out.glob("h0=*/*.parquet"))) > 1
    problems, _ = check_hex(str(out), source)
    assert any("_SUCCESS.json: missing" in p for p in problems), problems

    # the chunk is redone: the re-run publishes exactly the new files
    chunk_id = int(victim.stem.split("-")[1])
    hexstep.hex_chunk(
        source, str(chunks), hexstep.ChunkSpec(chunk_id, 50, chunk_count=4), hexstep.CellOptions(4, (1, 0))
    )
    repartition(str(chunks), str(out), source)
    new = success(out)
    assert new["resolution"] == 4 and new != old
    assert sorted(new["files"]) == sorted(
        str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != "_SUCCESS.json"
    )
    assert check_hex(str(out), source)[0] == []


def test_marker_removed_first_stale_files_removed_last(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(tmp_path / "c0"))
    repartition(str(tmp_path / "c0"), str(out), source)
    some = next(out.glob("h0=*"))
    stale = [out / "h0=123" / "data_0.parquet", some / "data_7.parquet"]
    for f in stale:
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(b"old")
    make_chunks(source, str(chunks))
    seen: list[tuple[bool, bool]] = []
    real = rp.write_partition

    def watching(*args, **kw):
        seen.append(((out / "_SUCCESS.json").exists(), all(f.exists() for f in stale)))
        return real(*args, **kw)

    monkeypatch.setattr(rp, "write_partition", watching)
    repartition(str(chunks), str(out), source)
    assert seen and all(s == (False, True) for s in seen)  # unpublished, and nothing deleted, while writing
    assert not any(f.exists() for f in stale) and not (out / "h0=123").exists()
    assert "h0=123/data_0.parquet" not in success(out)["files"]
    assert check_hex(str(out), source)[0] == []


def test_finalize_refuses_partitions_of_other_chunks(source: str, tmp_path: Path) -> None:
    out = tmp_path / "hex"
    make_chunks(source, str(tmp_path / "c1"), res=3)
    for i in range(len(base_cells())):
        repartition(str(tmp_path / "c1"), str(out), source, h0_index=i)
    # other chunks (another resolution), and their finalize without the --h0-index runs
    make_chunks(source, str(tmp_path / "c2"), res=4)
    with pytest.raises(IncompleteOutputError, match="written from other chunks"):
        repartition(str(tmp_path / "c2"), str(out), source, finalize=True)
    assert not (out / "_SUCCESS.json").exists() and (tmp_path / "c2").exists()


def test_text_id_column_end_to_end(tmp_path: Path, cli_run) -> None:
    """convert --id-column name (text) → hex in chunks → repartition → validate."""
    src = data_file("naturalearth_lowres") / "naturalearth_lowres.shp"
    parquet, chunks, out = tmp_path / "countries.parquet", tmp_path / "chunks", tmp_path / "hex"
    cli_run("convert", src, parquet, "--id-column", "name", check=True)
    for i in range(2):
        cli_run(
            "hex",
            "--input",
            parquet,
            "--output",
            chunks,
            "--chunk-id",
            i,
            "--chunk-size",
            "100",
            "--chunk-count",
            "2",
            "--resolution",
            "3",
            "--parent-resolutions",
            "1,0",
            check=True,
        )
    marker = json.loads((chunks / "_done" / "chunk-00000.json").read_text())
    assert marker["id_column"] == "name" and marker["id_min"] is None
    cli_run("repartition", "--chunks", chunks, "--output", out, "--source", parquet, check=True)
    problems, stats = check_hex(str(out), str(parquet))
    assert problems == [] and stats["features"] == 177
    assert success(out)["id_column"] == "name"
    t = pq.read_table(next(out.glob("h0=*/data_0.parquet")))
    assert t.schema.field("name").type == pa.string() and "_cng_fid" not in t.column_names


def test_text_ids_are_counted_exactly(tmp_path: Path) -> None:
    """Earthquakes by their text id; a feature's rows lost from the output are noticed."""
    parquet = tmp_path / "quakes.parquet"
    convert([str(data_file("earthquakes.json"))], str(parquet), ConvertOptions(id_column="id"))
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    for i in range(3):
        hexstep.hex_chunk(
            str(parquet), str(chunks), hexstep.ChunkSpec(i, 600, chunk_count=3), hexstep.CellOptions(2, (0,))
        )
    cs = rp.check_chunks(str(chunks), str(parquet))
    repartition(str(chunks), str(out), str(parquet), keep_chunks=True)
    assert success(out)["features"] == 1707 and check_hex(str(out), str(parquet))[0] == []
    files = sorted(str(p) for p in out.glob("h0=*/*.parquet"))
    rp._output_ids_check(str(out), cs, files)
    with pytest.raises(IncompleteOutputError, match="holds 1706 distinct features, the chunks promised 1707"):
        rp._output_ids_check(str(out), cs, _drop_one(files, tmp_path))


def _drop_one(files: list[str], tmp_path: Path) -> list[str]:
    """Copies of ``files`` without the rows of one id that appears in a single file."""
    tables = {f: pq.read_table(f) for f in files}
    counts: dict[str, int] = {}
    for t in tables.values():
        for i in set(t.column("id").to_pylist()):
            counts[i] = counts.get(i, 0) + 1
    victim = next(i for i, n in counts.items() if n == 1)
    out = []
    for k, t in enumerate(tables.values()):
        dest = tmp_path / f"copy-{k}.parquet"
        pq.write_table(t.filter(pa.compute.not_equal(t.column("id"), victim)), dest)
        out.append(str(dest))
    return out


@pytest.mark.s3
def test_s3_round_trip(source: str, s3: str, tmp_path: Path) -> None:
    src = f"{s3}/ds/countries.parquet"
    storage.upload_file(source, src)
    make_chunks(src, f"{s3}/ds/chunks")
    repartition(f"{s3}/ds/chunks", f"{s3}/ds/hex", src)
    assert storage.list_prefix(f"{s3}/ds/chunks") == []
    published = {u: storage.read_bytes(u) for u in storage.list_prefix(f"{s3}/ds/hex")}
    assert repartition(f"{s3}/ds/chunks", f"{s3}/ds/hex", src)["skipped"]  # run again: a no-op
    assert {u: storage.read_bytes(u) for u in storage.list_prefix(f"{s3}/ds/hex")} == published
    local_chunks, local_out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(local_chunks))
    repartition(str(local_chunks), str(local_out), source)
    remote = sorted(storage.list_prefix(f"{s3}/ds/hex"))
    local = sorted((p for p in local_out.rglob("*") if p.is_file()), key=lambda p: str(p.relative_to(local_out)))
    # the same files, the completion marker included, byte for byte
    assert [u.split("/ds/hex/")[1] for u in remote] == [str(p.relative_to(local_out)) for p in local]
    assert f"{s3}/ds/hex/_SUCCESS.json" in remote
    for u, p in zip(remote, local, strict=True):
        assert storage.read_bytes(u) == p.read_bytes()
    problems, _ = check_hex(f"{s3}/ds/hex", src)
    assert problems == []


# --------------------------------------------------------------------------------------------
# completeness from the row ranges: seed-style chunks, gaps, overlaps


def seed_chunks(source: str, chunks: Path, ids: range | list[int], size: int = 50) -> None:
    """Chunks as an Indexed Job calls them: --chunk-id and --chunk-size, no --chunk-count."""
    for i in ids:
        hexstep.hex_chunk(source, str(chunks), hexstep.ChunkSpec(i, size), hexstep.CellOptions(3, (1, 0)))


def data_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.glob("h0=*/*.parquet"))}


def test_seed_style_chunks_without_a_count_are_complete(source: str, tmp_path: Path, cli_run) -> None:
    planned = tmp_path / "planned"
    make_chunks(source, str(tmp_path / "c0"))
    repartition(str(tmp_path / "c0"), str(planned), source)

    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    seed_chunks(source, chunks, range(5))  # 177 rows: chunks 0..3 hold them, 4 starts past the end
    proc = cli_run(
        "hex",
        "--input",
        source,
        "--output",
        chunks,
        "--chunk-size",
        "50",
        "--resolution",
        "3",
        "--parent-resolutions",
        "1,0",
        env={"JOB_COMPLETION_INDEX": "5"},
    )
    assert proc.returncode == 0, proc.stderr
    markers = {i: json.loads((chunks / "_done" / f"chunk-{i:05d}.json").read_text()) for i in range(6)}
    assert [(m["start_row"], m["end_row"]) for m in markers.values()] == [
        (0, 50),
        (50, 100),
        (100, 150),
        (150, 177),
        (177, 177),
        (177, 177),
    ]
    assert not any(m["last"] for m in markers.values()) and all(m["chunk_count"] is None for m in markers.values())
    assert markers[5]["parts"] == {} and markers[5]["accounting"] == {
        "unit": "features",
        "read": 0,
        "written": 0,
        "dropped": {},
    }

    proc = cli_run("repartition", "--chunks", chunks, "--output", out, "--source", source)
    assert proc.returncode == 0, proc.stderr
    assert data_files(out) == data_files(planned)  # byte for byte what the planned chunks give
    assert check_hex(str(out), source)[0] == []


def test_ranges_decide_not_the_chunk_size(source: str, tmp_path: Path) -> None:
    """One chunk of 100 rows then seed-style chunks of 50: the ranges tile the source, it is complete."""
    planned = tmp_path / "planned"
    make_chunks(source, str(tmp_path / "c0"))
    repartition(str(tmp_path / "c0"), str(planned), source)
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    hexstep.hex_chunk(source, str(chunks), hexstep.ChunkSpec(0, 100), hexstep.CellOptions(3, (1, 0)))  # rows 0..99
    seed_chunks(source, chunks, [2, 3])  # rows 100..149, 150..176
    repartition(str(chunks), str(out), source)
    assert data_files(out) == data_files(planned)


def test_seed_style_gap_names_the_rows_and_the_chunk(source: str, tmp_path: Path, cli_run) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    seed_chunks(source, chunks, [0, 1, 3, 4])
    proc = cli_run("repartition", "--chunks", chunks, "--output", out, "--source", source)
    assert proc.returncode == 65
    assert (
        "missing 1 hex chunk(s): chunk 2 (_done/chunk-00002.json) (source rows 100..149 are in no chunk)" in proc.stderr
    )
    assert not out.exists() and (chunks / "_done" / "chunk-00000.json").exists()
    # and a gap at the end: the last chunk of a seed-style run is just one more index
    (chunks / "_done" / "chunk-00003.json").unlink()
    seed_chunks(source, chunks, [2])
    with pytest.raises(
        IncompleteOutputError, match=r"chunk 3 \(_done/chunk-00003.json\) \(source rows 150..176 are in no chunk\)"
    ):
        repartition(str(chunks), str(out), source)


def test_overlapping_chunks_of_two_chunk_sizes_are_refused(source: str, tmp_path: Path, cli_run) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    for i in range(2):  # planned: chunk 1 of 2 reads rows 100..176
        hexstep.hex_chunk(source, str(chunks), hexstep.ChunkSpec(i, 100, chunk_count=2), hexstep.CellOptions(3, (1, 0)))
    seed_chunks(source, chunks, [2, 3])  # rows 100..149 and 150..176 again
    proc = cli_run("repartition", "--chunks", chunks, "--output", out, "--source", source)
    assert proc.returncode == 65
    assert "chunks 1 and 2 both cover rows 100..149" in proc.stderr and "duplicated" in proc.stderr
    assert "chunks 1 and 3 both cover rows 150..176" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_chunk_past_the_count_removes_its_stale_marker(source: str, tmp_path: Path) -> None:
    """A seed-style run of 50-row chunks, then a planned run of two 100-row chunks into the same prefix:
    chunks 2 and 3 of the first run would cover rows twice; chunks past the count remove their markers."""
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    seed_chunks(source, chunks, range(4))
    for i in range(4):  # what an Indexed Job of 4 completions with --chunk-count 2 runs
        hexstep.hex_chunk(source, str(chunks), hexstep.ChunkSpec(i, 100, chunk_count=2), hexstep.CellOptions(3, (1, 0)))
    assert sorted(p.name for p in (chunks / "_done").iterdir()) == ["chunk-00000.json", "chunk-00001.json"]
    repartition(str(chunks), str(out), source)
    assert check_hex(str(out), source)[0] == []


# --------------------------------------------------------------------------------------------
# accounting


def test_accounting_is_recorded_checked_and_published(tmp_path: Path) -> None:
    """Null geometries are dropped with their reason; a tiny polygon, a zero-length line and a
    point each get a cell; a marker that does not add up stops repartition before any output."""
    feats = [
        {"type": "Feature", "properties": {"k": "null"}, "geometry": None},
        {
            "type": "Feature",
            "properties": {"k": "tiny"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [[[10, 10], [10.000001, 10], [10.000001, 10.000001], [10, 10]]],
            },
        },
        {
            "type": "Feature",
            "properties": {"k": "zero-length line"},
            "geometry": {"type": "LineString", "coordinates": [[3, 3], [3, 3]]},
        },
        {"type": "Feature", "properties": {"k": "null"}, "geometry": None},
        {"type": "Feature", "properties": {"k": "point"}, "geometry": {"type": "Point", "coordinates": [-70, -30]}},
        {
            "type": "Feature",
            "properties": {"k": "box"},
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [5, 0], [5, 5], [0, 5], [0, 0]]]},
        },
    ]
    src = tmp_path / "f.geojson"
    src.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
    parquet, chunks, out = tmp_path / "f.parquet", tmp_path / "chunks", tmp_path / "hex"
    convert([str(src)], str(parquet), ConvertOptions())
    markers = [
        hexstep.hex_chunk(
            str(parquet), str(chunks), hexstep.ChunkSpec(i, 3, chunk_count=2), hexstep.CellOptions(3, (0,))
        )
        for i in range(2)
    ]
    assert [m["accounting"] for m in markers] == [
        {"unit": "features", "read": 3, "written": 2, "dropped": {"null geometry": 1}},
        {"unit": "features", "read": 3, "written": 2, "dropped": {"null geometry": 1}},
    ]
    for mode in ("full", "overlap"):  # no cell lies fully inside the tiny polygon: it still gets one
        m = hexstep.hex_chunk(
            str(parquet), str(tmp_path / mode), hexstep.ChunkSpec(0, 6), hexstep.CellOptions(3, (0,), containment=mode)
        )
        assert m["accounting"] == {"unit": "features", "read": 6, "written": 4, "dropped": {"null geometry": 2}}
    # a marker whose numbers do not add up: refused, nothing written
    path = chunks / "_done" / "chunk-00001.json"
    good = path.read_text()
    bad = json.loads(good)
    bad["accounting"]["written"] = 3
    path.write_text(json.dumps(bad))
    with pytest.raises(
        IncompleteOutputError, match="chunk 1: 3 features read, 3 written and 1 dropped .*-1 unaccounted"
    ):
        repartition(str(chunks), str(out), str(parquet))
    assert not out.exists()
    path.write_text(good)
    summary = repartition(str(chunks), str(out), str(parquet))
    acc = {"unit": "features", "read": 6, "written": 4, "dropped": {"null geometry": 2}}
    assert summary["accounting"] == acc
    done = success(out)
    assert done["accounting"] == acc and done["features"] == 4 and done["source_rows"] == 6
    assert sorted(done["chunks"]["markers"]) == ["0", "1"]
    assert check_hex(str(out), str(parquet))[0] == []


def test_empty_geometries_are_dropped_with_their_reason(tmp_path: Path) -> None:
    """A GeoParquet not written by convert may hold empty geometries (convert writes null)."""
    import shapely

    path, chunks, out = tmp_path / "x.parquet", tmp_path / "chunks", tmp_path / "hex"
    wkb = [shapely.to_wkb(shapely.Point(1, 1)), shapely.to_wkb(shapely.from_wkt("POLYGON EMPTY")), None]
    pq.write_table(
        pa.table({"_cng_fid": pa.array([1, 2, 3], pa.int64()), "geometry": pa.array(wkb, pa.binary())}), path
    )
    m = hexstep.hex_chunk(str(path), str(chunks), hexstep.ChunkSpec(0, 10), hexstep.CellOptions(2, (0,)))
    assert m["accounting"] == {
        "unit": "features",
        "read": 3,
        "written": 1,
        "dropped": {"empty geometry": 1, "null geometry": 1},
    }
    repartition(str(chunks), str(out), str(path))
    assert success(out)["accounting"]["dropped"] == {"empty geometry": 1, "null geometry": 1}


def _to_earlier_layout(out: Path) -> None:
    """Rewrite a hex output as the earlier version wrote it: h0 inside the files, uint64 cells,
    ``_SUCCESS.json`` format 1 (row counts unchanged)."""
    for f in sorted(out.glob("h0=*/*.parquet")):
        t = pq.read_table(f)
        h0 = int(f.parent.name[3:])
        t = t.cast(pa.schema([fl.with_type(pa.uint64()) if fl.name in ("h3", "h1") else fl for fl in t.schema]))
        t = t.add_column(3, "h0", pa.array([h0] * t.num_rows, pa.uint64()))
        pq.write_table(t, f)
    marker = success(out)
    marker["format"] = 1
    del marker["cell_type"]
    (out / "_SUCCESS.json").write_text(json.dumps(marker))


def test_an_output_of_the_earlier_layout_stays_valid_and_published(source: str, tmp_path: Path) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(chunks))
    repartition(str(chunks), str(out), source)
    _to_earlier_layout(out)
    problems, stats = check_hex(str(out), source)
    assert problems == [] and stats["features"] == 177
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    summary = repartition(str(chunks), str(out), source)  # chunks gone: published, nothing to do
    assert summary["rows"] == success(out)["rows"]
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    # the new layout refuses what the earlier one allowed: h0 in a file under a format-2 marker
    marker = success(out)
    marker["format"] = 2
    (out / "_SUCCESS.json").write_text(json.dumps(marker))
    problems, _ = check_hex(str(out), source)
    assert problems and "holds a h0 column" in problems[0]


def _shared_chunks(source: str, chunks: Path) -> list[dict]:
    """3 row chunks of 60 features, each shared by 3 chunks; the big countries split."""
    cells = hexstep.CellOptions(4, (0,), budget=5000)
    return [
        hexstep.hex_chunk(source, str(chunks), hexstep.ChunkSpec(i, 60, chunk_count=3, shares=3), cells)
        for i in range(9)
    ]


def test_a_missing_share_is_named(source: str, tmp_path: Path) -> None:
    chunks = tmp_path / "chunks"
    _shared_chunks(source, chunks)
    (chunks / "_done" / "chunk-00004.json").unlink()  # row chunk 1, share 1: rows 80..99
    with pytest.raises(IncompleteOutputError, match=r"missing 1 hex chunk\(s\): chunk 4 .*share rows 60\.\.119"):
        rp.check_chunks(str(chunks), source)


def _marker(chunk_id: int, start: int, end: int, shares: int = 1, size: int = 1) -> dict:
    return {"chunk_id": chunk_id, "start_row": start, "end_row": end, "share": chunk_id % shares,
            "shares": shares, "chunk_size": size}  # fmt: skip


def test_shares_that_own_no_row_or_come_from_another_run_are_caught() -> None:
    """Every share computes tiles of the big features of its whole row chunk, so a share that owns
    no row is still needed; shares of two runs must never pass for one."""
    from cng_datasets.steps.hexchunks import coverage_problems

    whole = [_marker(r * 3 + k, r, r + 1, 3) for r in range(4) for k in range(3)]  # 1 feature, 3 shares
    assert coverage_problems(whole, 4) == []
    owns_nothing = [m for m in whole if m["chunk_id"] != 6]  # row 2's share 0 owns no row
    assert coverage_problems(owns_nothing, 4) == [
        "missing 1 hex chunk(s): chunk 6 (_done/chunk-00006.json) (of the 3 that share row 2)"
    ]
    other_run = [m for m in whole if m["chunk_id"] != 3] + [_marker(3, 1, 2, 2)]  # chunk 3 of a --shares 2 run
    (problem,) = coverage_problems(other_run, 4)
    assert "chunks 3, 4, 5 cover row 1 with different --shares (2, 3: " in problem
    mixed_ids = [m for m in whole if m["chunk_id"] != 5] + [{**_marker(8, 1, 2, 3), "share": 2}]
    assert "are not the 3 shares of one row chunk" in coverage_problems(mixed_ids, 4)[0]
    sizes = [_marker(k, 0, 100, 2, 100) for k in range(2)] + [_marker(k, 100, 150, 2, 50) for k in (4, 5)]
    assert "source rows 150..199 are in no chunk" in coverage_problems(sizes, 200)[0]


def test_a_split_feature_without_any_cell_fails(source: str, tmp_path: Path) -> None:
    chunks = tmp_path / "chunks"
    markers = _shared_chunks(source, chunks)
    row = next(r for m in markers for r in m.get("split_cells", {}))
    for m in markers:  # as if no share had found a cell of it
        if row in m.get("split_cells", {}):
            m["split_cells"][row] = 0
            (chunks / "_done" / f"chunk-{m['chunk_id']:05d}.json").write_text(json.dumps(m))
    with pytest.raises(IncompleteOutputError, match=f"source row\\(s\\) {row} got no H3 cell"):
        rp.check_chunks(str(chunks), source)

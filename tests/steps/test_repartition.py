"""``cng-datasets repartition``: merge chunks by h0, check completeness, clean up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cng_datasets import storage
from cng_datasets.errors import IncompleteOutputError
from cng_datasets.steps import hex as hexstep
from cng_datasets.steps.convert import ConvertOptions, convert
from cng_datasets.steps.repartition import base_cells, repartition
from cng_datasets.validate import check_hex
from tests.conftest import data_file


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("src") / "countries.parquet"
    convert([str(data_file("naturalearth_lowres") / "naturalearth_lowres.shp")], str(out), ConvertOptions(row_group_size=40))
    return str(out)


def make_chunks(source: str, chunks: str, n: int = 4, size: int = 50, res: int = 3) -> None:
    for i in range(n):
        hexstep.hex_chunk(source, chunks, i, size, res, (1, 0), chunk_count=n)


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
        assert set(t.column("h0").to_pylist()) == {h0}
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
    hexstep.hex_chunk(source, str(chunks), 3, 50, 3, (1, 0), chunk_count=4)
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
    repartition(str(chunks), str(para), source, finalize=True)
    assert not chunks.exists()
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


@pytest.mark.s3
def test_s3_round_trip(source: str, s3: str, tmp_path: Path) -> None:
    src = f"{s3}/ds/countries.parquet"
    storage.upload_file(source, src)
    make_chunks(src, f"{s3}/ds/chunks")
    repartition(f"{s3}/ds/chunks", f"{s3}/ds/hex", src)
    assert storage.list_prefix(f"{s3}/ds/chunks") == []
    local_chunks, local_out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, str(local_chunks))
    repartition(str(local_chunks), str(local_out), source)
    remote = sorted(storage.list_prefix(f"{s3}/ds/hex"))
    local = sorted(local_out.rglob("*.parquet"))
    assert [u.split("/ds/hex/")[1] for u in remote] == [str(p.relative_to(local_out)) for p in local]
    for u, p in zip(remote, local):
        assert storage.read_bytes(u) == p.read_bytes()
    problems, _ = check_hex(f"{s3}/ds/hex", src)
    assert problems == []

"""hex and repartition under faults: real SIGKILLs at chosen points, re-runs, finished re-runs.

The kills are real (``kill -9`` of a ``cng-datasets`` subprocess: no ``finally``, no cleanup); the
point is chosen with the documented test hook ``CNG_DATASETS_TEST_KILL_AT`` (see
:mod:`cng_datasets.steps.testhook`), so no test depends on timing.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest

from cng_datasets.errors import IncompleteOutputError
from cng_datasets.steps import hex as hexstep
from cng_datasets.steps.convert import ConvertOptions, convert
from cng_datasets.steps.repartition import base_cells, repartition
from cng_datasets.steps.testhook import ENV as KILL_AT
from cng_datasets.validate import check_hex
from tests.conftest import data_file

RES = 3
HEX_ARGS = ("--chunk-size", "50", "--chunk-count", "4", "--resolution", str(RES), "--parent-resolutions", "1,0")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("src") / "countries.parquet"
    convert(
        [str(data_file("naturalearth_lowres") / "naturalearth_lowres.shp")], str(out), ConvertOptions(row_group_size=40)
    )
    return str(out)


@pytest.fixture(scope="module")
def reference(source: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hex output of an undisturbed run (chunks kept, for byte comparisons)."""
    root = tmp_path_factory.mktemp("ref")
    make_chunks(source, root / "chunks")
    repartition(str(root / "chunks"), str(root / "hex"), source, keep_chunks=True)
    return root


def make_chunks(source: str, chunks: Path) -> None:
    for i in range(4):
        hexstep.hex_chunk(
            source, str(chunks), hexstep.ChunkSpec(i, 50, chunk_count=4), hexstep.CellOptions(RES, (1, 0))
        )


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def killed(proc) -> bool:
    return proc.returncode == -signal.SIGKILL


def repartition_cli(cli_run, chunks: Path, out: Path, source: str, *extra: str, env: dict | None = None):
    return cli_run("repartition", "--chunks", chunks, "--output", out, "--source", source, *extra, env=env)


# --------------------------------------------------------------------------------------------
# repartition run again after it finished


def test_finished_repartition_run_again_is_a_noop(source: str, reference: Path, tmp_path: Path, cli_run) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, chunks)
    assert repartition_cli(cli_run, chunks, out, source).returncode == 0
    assert not chunks.exists()
    published = files(out)
    assert published == files(reference / "hex")

    again = repartition_cli(cli_run, chunks, out, source)  # a retried pod, a second `kubectl apply`
    assert again.returncode == 0, again.stderr
    assert "already published" in again.stderr and "nothing to do" in again.stderr
    assert files(out) == published  # _SUCCESS.json included: still published, nothing rewritten
    assert check_hex(str(out), source)[0] == []


def test_keep_chunks_rerun_is_a_noop_and_a_later_run_deletes_them(source: str, tmp_path: Path, cli_run) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, chunks)
    repartition(str(chunks), str(out), source, keep_chunks=True)
    published = files(out)
    proc = repartition_cli(cli_run, chunks, out, source, "--keep-chunks")
    assert proc.returncode == 0 and "already published" in proc.stderr
    assert files(out) == published and (chunks / "_done" / "chunk-00003.json").exists()
    # the same chunks hexed again (deterministic: identical markers) are still "these chunks"
    make_chunks(source, chunks)
    proc = repartition_cli(cli_run, chunks, out, source)
    assert proc.returncode == 0 and "already published" in proc.stderr
    assert files(out) == published and not chunks.exists()


def test_parallel_retries_after_finalize_are_noops(source: str, tmp_path: Path, cli_run) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, chunks)
    for i in range(len(base_cells())):
        repartition(str(chunks), str(out), source, h0_index=i)
    repartition(str(chunks), str(out), source, finalize=True)
    published = files(out)
    for extra in (("--h0-index", "5"), ("--finalize",)):
        proc = repartition_cli(cli_run, chunks, out, source, *extra)
        assert proc.returncode == 0 and "already published" in proc.stderr, proc.stderr
        assert files(out) == published


def test_new_chunks_are_published_but_a_damaged_output_without_chunks_is_an_error(
    source: str, tmp_path: Path, cli_run
) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, chunks)
    repartition(str(chunks), str(out), source, keep_chunks=True)
    # a stray .parquet in the output and the chunks still there: written again, the stray removed
    stray = next(out.glob("h0=*")) / "data_9.parquet"
    stray.write_bytes(b"junk")
    repartition(str(chunks), str(out), source)
    assert not stray.exists() and check_hex(str(out), source)[0] == []
    # chunks gone and a listed file missing: one clear error, the marker is not removed
    victim = next(out.glob("h0=*/data_0.parquet"))
    victim.unlink()
    proc = repartition_cli(cli_run, chunks, out, source)
    assert proc.returncode == 65
    assert f"{victim.parent.name}/data_0.parquet" in proc.stderr and "chunks are gone" in proc.stderr
    assert "Traceback" not in proc.stderr and (out / "_SUCCESS.json").exists()


# --------------------------------------------------------------------------------------------
# real kills


def test_repartition_killed_while_deleting_chunks_completes_on_rerun(
    source: str, reference: Path, tmp_path: Path, cli_run
) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, chunks)
    proc = repartition_cli(cli_run, chunks, out, source, env={KILL_AT: "repartition.chunks-deleting:3"})
    assert killed(proc), (proc.returncode, proc.stderr)
    # published, and killed half-way through deleting the chunks: the markers go last
    assert (out / "_SUCCESS.json").exists()
    assert len(list((chunks / "_done").glob("chunk-*.json"))) == 4
    left = len(list(chunks.glob("h0=*")))
    assert 0 < left < len(list((reference / "chunks").glob("h0=*")))

    again = repartition_cli(cli_run, chunks, out, source)
    assert again.returncode == 0, again.stderr
    assert "already published" in again.stderr
    assert not chunks.exists()
    assert files(out) == files(reference / "hex") and check_hex(str(out), source)[0] == []


def test_repartition_killed_mid_write_then_rerun_gives_identical_bytes(
    source: str, reference: Path, tmp_path: Path, cli_run
) -> None:
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    make_chunks(source, chunks)
    # an earlier published output (other settings) that the new run overwrites in place
    old = tmp_path / "old"
    for i in range(2):
        hexstep.hex_chunk(source, str(old), hexstep.ChunkSpec(i, 100, chunk_count=2), hexstep.CellOptions(2, (0,)))
    repartition(str(old), str(out), source)

    proc = repartition_cli(cli_run, chunks, out, source, env={KILL_AT: "repartition.file-staged:4"})
    assert killed(proc), (proc.returncode, proc.stderr)
    assert not (out / "_SUCCESS.json").exists()  # un-published before the first file was written
    assert list(out.glob("h0=*/.data_0.parquet.*.tmp*"))  # the kill left a half-published file
    assert (chunks / "_done").exists()

    again = repartition_cli(cli_run, chunks, out, source)
    assert again.returncode == 0, again.stderr
    assert files(out) == files(reference / "hex")  # identical bytes: no duplicate, stale or temp file
    assert check_hex(str(out), source) == ([], check_hex(str(reference / "hex"), source)[1])


def test_hex_chunk_killed_mid_write_then_rerun_gives_identical_bytes(
    source: str, reference: Path, tmp_path: Path, cli_run
) -> None:
    chunks, tmpdir = tmp_path / "chunks", tmp_path / "tmpdir"
    tmpdir.mkdir()
    env = {"TMPDIR": str(tmpdir)}
    args = ("hex", "--input", source, "--output", chunks, "--chunk-id", "1", *HEX_ARGS)
    proc = cli_run(*args, env={**env, KILL_AT: "hex.part-staged:3"})
    assert killed(proc), (proc.returncode, proc.stderr)
    assert not (chunks / "_done" / "chunk-00001.json").exists()
    assert list(chunks.glob("h0=*/.part-00001.parquet.*.tmp*"))  # half-published part at the destination
    assert list(tmpdir.glob("cng-hex-chunk-00001-*"))  # the dead process's work directory
    assert not (chunks / "_tmp").exists()  # private work files never live at the destination

    again = cli_run(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert not list(tmpdir.iterdir())  # the dead run's work directory was removed
    ref = {k: v for k, v in files(reference / "chunks").items() if "00001" in k}
    assert files(chunks) == ref and ref  # identical bytes, no temp file, no duplicate part


def test_chunks_killed_and_rerun_then_repartition_counts_every_feature_once(
    source: str, reference: Path, tmp_path: Path, cli_run
) -> None:
    """Every chunk killed once mid-publication and run again, then repartition: the same output."""
    chunks, out = tmp_path / "chunks", tmp_path / "hex"
    for i in range(4):
        args = ("hex", "--input", source, "--output", chunks, "--chunk-id", str(i), *HEX_ARGS)
        first = cli_run(*args, env={KILL_AT: "hex.part-staged:2"})
        assert killed(first) or first.returncode == 0  # a chunk with a single part finishes
        assert cli_run(*args).returncode == 0
    assert repartition_cli(cli_run, chunks, out, source).returncode == 0
    assert files(out) == files(reference / "hex")
    success = json.loads((out / "_SUCCESS.json").read_text())
    assert success["accounting"] == {"unit": "features", "read": 177, "written": 177, "dropped": {}}


def test_another_version_of_the_source_is_never_taken_for_the_published_one(
    source: str, tmp_path: Path, cli_run
) -> None:
    """Same row count, other values (a source re-converted in place): the footer digest tells."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    src, chunks, out = tmp_path / "src.parquet", tmp_path / "chunks", tmp_path / "hex"
    shutil.copyfile(source, src)
    make_chunks(str(src), chunks)
    repartition(str(chunks), str(out), str(src))
    t = pq.read_table(src)
    i = t.column_names.index("name")
    pq.write_table(t.set_column(i, "name", pc.utf8_upper(t.column(i))), src, row_group_size=40)
    assert pq.read_metadata(src).num_rows == 177

    proc = repartition_cli(cli_run, chunks, out, str(src))  # the chunks are gone: nothing to rebuild from
    assert proc.returncode == 65 and "published from another version of" in proc.stderr, proc.stderr
    # chunks of the old version are refused as well (a fresh output: nothing published there)
    make_chunks(source, chunks)
    with pytest.raises(IncompleteOutputError, match="was made from another version of"):
        repartition(str(chunks), str(tmp_path / "other"), str(src))

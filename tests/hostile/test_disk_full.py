"""A full disk during a step: a 2 MB tmpfs as the local destination. Every case must end in one
line that says "no space left on device" and names the place, a non-zero exit, and nothing
half-written there (no partial .parquet / .pmtiles, no temporary files)."""

from __future__ import annotations

import random
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.hostile.conftest import Outcome, run_case

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hostile")]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs mounted for the test (root only), unmounted in any case."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _csv(path: Path, rows: int) -> Path:
    """Points with an incompressible text column: about 110 bytes of GeoParquet per row."""
    rnd = random.Random(1)
    with open(path, "w") as f:
        f.write("id,lon,lat,txt\n")
        for i in range(rows):
            txt = "".join(rnd.choices(string.ascii_letters, k=40))
            f.write(f"{i},{rnd.uniform(-10, 10):.6f},{rnd.uniform(40, 50):.6f},{txt}\n")
    return path


def _nothing_half_written(root: Path) -> None:
    """Only complete outputs: no temporary file, every .parquet readable, no .pmtiles at all."""
    files = [p for p in root.rglob("*") if p.is_file() and "logs" not in p.parts]
    temp = [p for p in files if ".tmp" in p.name or ".cng-" in str(p) or "_tmp" in p.parts]
    assert not temp, temp
    for p in files:
        if p.suffix == ".parquet":
            assert pq.ParquetFile(p).metadata is not None  # raises on a truncated file
        assert p.suffix != ".pmtiles", p


def _disk_full_line(o: Outcome, where: Path) -> None:
    line = o.one_error("no space left on device", str(where))
    assert o.proc.returncode == 1, line  # not 65: the same input may succeed with more room


def test_disk_full_during_convert(cli_run, tmp_path: Path, small_disk: Path) -> None:
    src = _csv(tmp_path / "big.csv", 40_000)  # ~4 MB of GeoParquet
    o = run_case(cli_run, small_disk, src, res=5)
    _disk_full_line(o, small_disk)
    _nothing_half_written(small_disk)
    assert not (small_disk / "case.parquet").exists()


def test_disk_full_in_pmtiles(cli_run, tmp_path: Path, small_disk: Path) -> None:
    src = _csv(tmp_path / "big.csv", 40_000)
    parquet = tmp_path / "big.parquet"
    assert cli_run("convert", src, parquet).returncode == 0
    proc = cli_run("pmtiles", "--input", parquet, "--output", small_disk / "big.pmtiles", "--resolution", "5")
    _disk_full_line(Outcome(proc, small_disk), small_disk)
    _nothing_half_written(small_disk)


def test_disk_full_in_hex(cli_run, tmp_path: Path, small_disk: Path) -> None:
    src = _csv(tmp_path / "big.csv", 40_000)
    parquet = tmp_path / "big.parquet"
    assert cli_run("convert", src, parquet).returncode == 0
    proc = cli_run(
        "hex",
        "--input",
        parquet,
        "--output",
        small_disk / "chunks",
        "--chunk-id",
        "0",
        "--chunk-size",
        "100000",
        "--resolution",
        "5",
    )
    o = Outcome(proc, small_disk)
    _nothing_half_written(small_disk)
    assert not list(small_disk.rglob("chunk-00000.json"))
    _disk_full_line(o, small_disk)


def test_disk_full_after_convert_in_run(cli_run, tmp_path: Path, small_disk: Path) -> None:
    src = _csv(tmp_path / "mid.csv", 15_000)  # ~1.6 MB of GeoParquet fits, tiles and hex do not
    o = run_case(cli_run, small_disk, src, "--workers", "1", res=5)
    assert pq.ParquetFile(small_disk / "case.parquet").metadata.num_rows == 15_000  # convert's output is whole
    _nothing_half_written(small_disk)
    assert not (small_disk / "case" / "chunks" / "_tmp").exists()
    _disk_full_line(o, small_disk)

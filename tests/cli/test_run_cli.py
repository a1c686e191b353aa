"""`cng-datasets run` and `cng-datasets validate` as a user runs them: the console script in a
subprocess, on the bundled Natural Earth sample."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import DATA

SAMPLE = DATA / "naturalearth_lowres" / "naturalearth_lowres.shp"

pytestmark = pytest.mark.xdist_group("local-run")


def test_help_is_fast_and_complete() -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cng_datasets", "run", "--help"], capture_output=True, text=True)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    for flag in (
        "--dataset",
        "--source-url",
        "--bucket",
        "--h3-resolution",
        "--force",
        "--wait",
        "--quiet",
        "--workers",
    ):
        assert flag in proc.stdout
    assert "--namespace" not in proc.stdout  # accepted for symmetry with `workflow`, hidden
    assert took < 5
    proc = subprocess.run([sys.executable, "-m", "cng_datasets", "validate", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--dataset" in proc.stdout


@pytest.mark.slow
def test_run_then_validate_like_the_readme(cli_run, tmp_path: Path) -> None:
    # a bare relative directory is a local directory (./out), not an S3 bucket; k8s flags are ignored
    proc = cli_run(
        "run",
        "--dataset",
        "countries",
        "--source-url",
        SAMPLE,
        "--bucket",
        "out",
        "--h3-resolution",
        "4",
        "--namespace",
        "ignored",
        "--hex-cpu",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    assert (out / "countries.parquet").exists() and (out / "countries.pmtiles").exists()
    assert list((out / "countries" / "hex").glob("h0=*"))
    # where the outputs are, and a summary table
    assert f"outputs: {out}/countries.parquet  {out}/countries.pmtiles  {out}/countries/hex/" in proc.stdout
    for word in ("geoparquet", "pmtiles", "hex", "177 features", "partition(s)", "convert", "repartition", "total"):
        assert word in proc.stdout
    # not a terminal: plain progress lines on stderr
    assert "convert: started" in proc.stderr and "repartition: done in" in proc.stderr
    assert "\r" not in proc.stderr

    val = cli_run("validate", "out", "--dataset", "countries")
    assert val.returncode == 0, val.stderr
    assert val.stdout.count("ok ") == 3

    # re-run: nothing to do; quiet prints only where the outputs are
    again = cli_run(
        "run",
        "--dataset",
        "countries",
        "--source-url",
        SAMPLE,
        "--bucket",
        "out",
        "--h3-resolution",
        "4",
        "--quiet",
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().startswith("outputs: ") and again.stderr == ""

    # corrupt the hex output: validate fails with exit 65 and one precise line
    part = sorted((out / "countries" / "hex").rglob("*.parquet"))[0]
    part.write_bytes(b"broken")
    bad = cli_run("validate", "out", "--dataset", "countries")
    assert bad.returncode == 65
    assert f"FAIL hex: {part}: unreadable" in bad.stderr
    assert "error: validation failed" in bad.stderr


def test_failing_step_is_one_line_with_exit_65(cli_run, tmp_path: Path) -> None:
    proc = cli_run(
        "run", "--dataset", "x", "--source-url", tmp_path / "missing.gpkg", "--bucket", "out", "--h3-resolution", "3"
    )
    assert proc.returncode == 65
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: step convert failed (exit 65): ")
    assert "missing.gpkg" in errors[0]

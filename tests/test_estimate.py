"""Estimates before running (``cng_datasets.estimate``, ``cng-datasets plan``), checked against
what the steps really write on real data; the maximum zoom chosen from the data; chunks sized by
estimated work."""

from __future__ import annotations

import glob
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import shapely

from cng_datasets import estimate
from cng_datasets.plan import ROWS_PER_CHUNK, choose_chunking
from tests.conftest import CITIES, data_file

COUNTRIES = "ne_10m_admin_0_countries_deu.zip"


def _hex_rows(out: Path) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in glob.glob(f"{out}/**/*.parquet", recursive=True))


@pytest.mark.parametrize(
    ("source", "resolution", "containment"),
    [
        (COUNTRIES, 3, "center"),
        (COUNTRIES, 4, "overlap"),
        (COUNTRIES, 4, "full"),
        (CITIES, 8, "center"),
        ("earthquakes.json", 6, "overlap"),
    ],
)
def test_hex_rows_are_estimated_within_2x_of_what_hex_writes(
    source: str, resolution: int, containment: str, parquets: Any, cli_run: Any, tmp_path: Path
) -> None:
    src = parquets(source)
    sample = estimate.sample_geoparquet(str(src))
    guess = estimate.hex_rows(sample, resolution, containment)
    out = tmp_path / "hex"
    cli_run(
        "hex", "--input", src, "--output", out, "--resolution", str(resolution), "--parent-resolutions", "0",
        "--containment", containment, "--chunk-id", "0", "--chunk-size", "100000000", check=True,
    )  # fmt: skip
    actual = _hex_rows(out)
    assert actual / 2 <= guess <= actual * 2, (guess, actual)


def test_plan_json_is_within_2x_of_a_run(cli_run: Any, tmp_path: Path) -> None:
    """`plan --json` before anything exists, then `run` with the same options: rows, chunks and
    bytes of every output within 2× of what the run wrote (the estimate reads only a sample of the
    source)."""
    options = ["--dataset", "countries", "--source-url", data_file(COUNTRIES), "--bucket", tmp_path / "out"]
    options += ["--h3-resolution", "4", "--parent-resolutions", "2,0"]
    proc = cli_run("plan", "--json", *options, check=True)
    doc = json.loads(proc.stdout)
    assert not (tmp_path / "out").exists()  # the plan writes nothing
    assert doc["features"] == 250 and doc["hex_chunks"] == 1 and doc["max_zoom"] == 6
    assert {"geoparquet", "pmtiles", "hex"} == set(doc["outputs"])
    assert [s["step"] for s in doc["steps"]] == ["convert", "pmtiles", "hex", "repartition", "catalog"]
    cli_run("run", "-q", *options, check=True)
    out = tmp_path / "out"
    actual_rows = _hex_rows(out / "countries" / "hex")
    assert actual_rows / 2 <= doc["hex_rows"] <= actual_rows * 2
    sizes = {
        "geoparquet": (out / "countries.parquet").stat().st_size,
        "pmtiles": (out / "countries.pmtiles").stat().st_size,
        "hex": sum(p.stat().st_size for p in (out / "countries" / "hex").rglob("*.parquet")),
    }
    for name, size in sizes.items():
        assert size / 2 <= doc["outputs"][name]["bytes"] <= size * 2, (name, doc["outputs"][name]["bytes"], size)


def test_plan_warns_of_a_billion_rows_and_names_a_coarser_resolution(cli_run: Any, tmp_path: Path, s3: str) -> None:
    from cng_datasets import storage

    source = f"{s3}/in/{COUNTRIES}"  # a pod reads from a bucket: read over S3 here too
    storage.upload_file(data_file(COUNTRIES), source)
    options = ["--dataset", "countries", "--source-url", source, "--bucket", f"{s3}/out"]
    proc = cli_run("plan", *options, "--h3-resolution", "12", check=True)
    warning = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1
    assert (
        warning[0].startswith("warning: --h3-resolution 12 would write ~")
        and "billion hex rows (250 features)" in (warning[0])
    )
    assert "; --h3-resolution 8 would write ~" in warning[0]
    assert "125 chunks, 50 at once" in proc.stdout  # at most one chunk per 2 features here: 200 would be empty
    # workflow prints the same estimate and warning, and sizes the hex Job by it
    proc = cli_run("workflow", *options, "--h3-resolution", "12", "--output-dir", tmp_path / "m", check=True)
    assert "would write ~" in proc.stderr and "estimate: 250 features → ~" in proc.stderr
    plan = json.loads((tmp_path / "m" / "plan.json").read_text())
    assert plan["chunking"]["completions"] == 125 and plan["chunking"]["hex_rows"] > 10**9
    proc = cli_run("plan", *options, "--h3-resolution", "5", check=True)
    assert "warning" not in proc.stderr


def test_plan_of_a_source_that_cannot_be_read_is_one_line(cli_run: Any, tmp_path: Path) -> None:
    proc = cli_run("plan", "--dataset", "d", "--source-url", tmp_path / "missing.gpkg", "--bucket", tmp_path / "o")
    assert proc.returncode == 65
    assert proc.stderr.strip().splitlines()[-1].startswith("error: source ")
    assert "Traceback" not in proc.stderr


# ---- the maximum zoom --------------------------------------------------------------------------


def _sample(geoms: list[Any], total: int | None = None, contiguous: bool = True) -> estimate.FeatureSample:
    arr = np.array(geoms, dtype=object)
    return estimate.FeatureSample(total or len(geoms), arr, contiguous)


def test_zoom_of_world_polygons_and_points(parquets: Any) -> None:
    countries = estimate.choose_max_zoom(estimate.sample_geoparquet(str(parquets(COUNTRIES))), 10)
    assert countries.zoom == 6 and "typical segment 2.8 km → z6" in countries.reason
    quakes = estimate.choose_max_zoom(estimate.sample_geoparquet(str(parquets("earthquakes.json"))), 10)
    assert quakes.zoom == 6 and "floor z6" in quakes.reason  # spacing alone would say z4


def test_dense_points_get_a_high_zoom_within_the_ceiling() -> None:
    rng = np.random.default_rng(1)
    pts = shapely.points(rng.uniform(13.40, 13.41, 5000), rng.uniform(52.50, 52.51, 5000))  # ~1 km², Berlin
    choice = estimate.choose_max_zoom(_sample(list(pts)), 12)
    assert choice.zoom == 13 and choice.reason.startswith("typical spacing 19 m → z13")
    capped = estimate.choose_max_zoom(_sample(list(pts)), 8)
    assert capped.zoom == 11 and "ceiling z11 (H3 resolution 8 + 3)" in capped.reason


def test_detailed_world_wide_polygons_are_capped_by_the_tile_budget() -> None:
    # 2,000 big boxes with 10 m segments: detail wants z15+, their tiles would be far too many
    boxes = [shapely.segmentize(shapely.box(x, -40, x + 8, 40), 0.0001) for x in np.linspace(-170, 160, 50)]
    choice = estimate.choose_max_zoom(_sample(boxes, total=2000), 12)
    assert "≤ 1,000,000 tiles → z" in choice.reason
    assert estimate.tiles_at(_sample(boxes, total=2000), choice.zoom) <= estimate.TILE_BUDGET
    assert choice.zoom < 10


def test_a_sample_of_big_geometries_is_bounded_in_bytes(
    parquets: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "countries.parquet"  # 250 detailed polygons in 4 row groups
    pq.write_table(pq.read_table(parquets(COUNTRIES)), src, row_group_size=70)
    full = estimate.sample_geoparquet(str(src))
    assert len(full.geometries) == full.total == 250
    budget = full.wkb_bytes // 8
    monkeypatch.setattr(estimate, "SAMPLE_BYTES", budget)
    few = estimate.sample_geoparquet(str(src))
    assert 4 <= len(few.geometries) < 250 / 2 and not few.contiguous  # spread over every row group
    assert few.wkb_bytes < 1.5 * budget  # within about the budget


def test_a_spread_sample_accounts_for_the_features_it_skipped() -> None:
    rng = np.random.default_rng(2)
    pts = list(shapely.points(rng.uniform(-180, 180, 2000), rng.uniform(-60, 60, 2000)))
    alone = estimate.typical_spacing(_sample(pts))
    crowd = estimate.typical_spacing(_sample(pts, total=200_000, contiguous=False))
    assert alone is not None and crowd is not None
    assert crowd == pytest.approx(alone / 10)  # 100× the features: a tenth of the spacing


# ---- chunks by estimated work ------------------------------------------------------------------


def test_chunks_follow_the_estimated_work() -> None:
    assert choose_chunking(42_000, hex_rows=42_000).completions == 1  # was 42 chunks of 1,000 points
    assert choose_chunking(144_563, hex_rows=144_563).completions == 1
    big = choose_chunking(250, hex_rows=60 * ROWS_PER_CHUNK)
    assert 50 <= big.completions <= 60 and big.chunk_size * big.completions >= 250  # 5 features each
    continents = choose_chunking(10, hex_rows=10**12)  # more chunks wanted than features: shared
    assert (continents.chunk_size, continents.row_chunks, continents.shares) == (1, 10, 20)
    assert continents.completions == 200 and continents.parallelism == 50
    assert choose_chunking(1, hex_rows=10**6).shares == 1  # one small feature: one chunk
    assert choose_chunking(10**7, hex_rows=10**12).completions == 200  # the seed's limit
    assert choose_chunking(10**7, hex_rows=10**12).parallelism == 50
    assert choose_chunking(42_000, hex_rows=42_000, chunk_size=1000).completions == 42  # --chunk-size wins
    assert choose_chunking(42_000).completions == 42  # no estimate: by feature count, as before

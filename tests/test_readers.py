"""The hex output opens with each common reader's defaults (issue 13): pandas, pyarrow.dataset,
polars and DuckDB see the same rows; DuckDB and polars see every cell column, ``h0`` included,
as a signed 64-bit integer, so joins on ``h0`` and a cell column need no cast; a filter on ``h0``
reads only that folder.

pyarrow's hive discovery types a folder key it cannot fit in int32 as a string (pandas: a
categorical of strings); docs/usage.md gives the one-line schema that makes it int64 there too,
and the test checks that line.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tests.conftest import DATA

pytestmark = pytest.mark.slow

CELLS = ["h4", "h2", "h0"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two real runs: the 110m countries and the week of earthquakes, both at resolution 4."""
    from click.testing import CliRunner

    from cng_datasets.cli import cli

    root = tmp_path_factory.mktemp("readers")
    sources = {
        "countries": DATA / "naturalearth_lowres" / "naturalearth_lowres.shp",
        "quakes": DATA / "earthquakes.json",
    }
    for name, src in sources.items():
        args = ["run", "-q", "--dataset", name, "--source-url", str(src), "--bucket", str(root)]
        result = CliRunner().invoke(cli, [*args, "--h3-resolution", "4", "--parent-resolutions", "2,0"])
        assert result.exit_code == 0, result.output
    return {name: root / name / "hex" for name in sources}


def _rows(hex_dir: Path) -> int:
    import json

    return int(json.loads((hex_dir / "_SUCCESS.json").read_text())["rows"])


def test_pandas_reads_the_folder(outputs: dict[str, Path]) -> None:
    df = pd.read_parquet(outputs["countries"])
    assert len(df) == _rows(outputs["countries"])
    assert {c: str(df[c].dtype) for c in ("h4", "h2")} == {"h4": "int64", "h2": "int64"}
    # the folder key: pyarrow's discovery gives a categorical of the decimal cell ids
    assert set(df["h0"].astype("int64")) == {int(p.name[3:]) for p in outputs["countries"].glob("h0=*")}


def test_pyarrow_dataset_reads_the_folder(outputs: dict[str, Path]) -> None:
    default = ds.dataset(outputs["countries"], partitioning="hive").to_table()
    assert default.num_rows == _rows(outputs["countries"])
    # the documented schema makes h0 int64, like every other cell column
    typed = ds.dataset(
        outputs["countries"], partitioning=ds.partitioning(pa.schema([("h0", pa.int64())]), flavor="hive")
    )
    assert {typed.schema.field(c).type for c in CELLS} == {pa.int64()}
    one = int(next(outputs["countries"].glob("h0=*")).name[3:])
    part = typed.to_table(filter=ds.field("h0") == one)
    assert part.num_rows and set(part.column("h0").to_pylist()) == {one}


def test_polars_reads_the_folder(outputs: dict[str, Path]) -> None:
    lf = pl.scan_parquet(str(outputs["countries"] / "**" / "*.parquet"), hive_partitioning=True)
    schema = lf.collect_schema()
    assert {schema[c] for c in CELLS} == {pl.Int64}
    assert lf.select(pl.len()).collect().item() == _rows(outputs["countries"])


def test_duckdb_reads_the_folder_and_prunes_by_h0(outputs: dict[str, Path]) -> None:
    con = duckdb.connect()
    path = outputs["countries"] / "**" / "*.parquet"
    described = con.execute(f"DESCRIBE SELECT * FROM read_parquet('{path}', hive_partitioning=true)").fetchall()
    types = {r[0]: r[1] for r in described}
    assert {types[c] for c in CELLS} == {"BIGINT"}
    (n,) = con.execute(f"SELECT count(*) FROM read_parquet('{path}', hive_partitioning=true)").fetchone()
    assert n == _rows(outputs["countries"])
    one = int(next(outputs["countries"].glob("h0=*")).name[3:])
    plan = "\n".join(
        str(r[1])
        for r in con.execute(
            f"EXPLAIN ANALYZE SELECT count(*) FROM read_parquet('{path}', hive_partitioning=true) WHERE h0 = {one}"
        ).fetchall()
    )
    files = len(list(outputs["countries"].glob("h0=*/*.parquet")))
    assert files > 1 and f"Scanning Files: 1/{files}" in plan and "Total Files Read: 1" in plan


def test_join_two_datasets_on_h0_and_a_cell_without_casts(outputs: dict[str, Path]) -> None:
    """Earthquakes per country cell: DuckDB and polars join the two outputs as they come."""
    c, q = (outputs[n] / "**" / "*.parquet" for n in ("countries", "quakes"))
    con = duckdb.connect()
    sql = (
        f"SELECT count(*) FROM read_parquet('{c}', hive_partitioning=true) a "
        f"JOIN read_parquet('{q}', hive_partitioning=true) b ON a.h0 = b.h0 AND a.h4 = b.h4"
    )
    (duck,) = con.execute(sql).fetchone()
    a = pl.scan_parquet(str(c), hive_partitioning=True)
    b = pl.scan_parquet(str(q), hive_partitioning=True)
    polars = a.join(b, on=["h0", "h4"]).select(pl.len()).collect().item()
    assert duck == polars > 0

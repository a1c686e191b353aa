"""Feature counting: GDAL through pyogrio, Parquet footers, sums, timeouts and the fallback."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from cng_datasets import probe, sources, storage
from cng_datasets.errors import CountFallbackWarning
from tests.conftest import DATA


def count(urls: list[str], layer: str | None = None, timeout: float = probe.DEFAULT_TIMEOUT) -> int | None:
    """The features probe.survey counts (None when a count fails, with a warning)."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(source_urls=tuple(map(str, urls)), layer=layer, h3_resolution=5, containment="center")
    found = probe.survey(cfg, timeout=timeout, size=50)
    return None if found is None else found.features


def test_counts_gdal_sources_and_sums_them() -> None:
    shp = str(DATA / "naturalearth_lowres" / "naturalearth_lowres.shp")
    quakes = str(DATA / "earthquakes.json")
    a = count([shp])
    b = count([quakes])
    assert a is not None and b is not None and a > 0 and b > 0
    assert count([shp, quakes]) == a + b


def test_multi_layer_source_counts_the_chosen_layer() -> None:
    topo = str(DATA / "us-atlas" / "counties-10m.json")
    assert count([topo], layer="states") == 56
    # like convert, a multi-layer source without --layer has no single count
    with pytest.warns(CountFallbackWarning, match="choose one with --layer"):
        assert count([topo]) is None


def _parquet(path: Path, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    geo = {
        "version": "1.1.0",
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": ["Point"]}},
    }
    table = pa.table({"x": list(range(rows)), "geometry": shapely.to_wkb(shapely.points(range(rows), range(rows)))})
    pq.write_table(table.replace_schema_metadata({"geo": json.dumps(geo)}), path, row_group_size=7)


def test_parquet_is_counted_from_the_footer(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", 123)
    assert sources.is_parquet(str(tmp_path / "a.parquet"))
    assert count([str(tmp_path / "a.parquet")]) == 123


def test_is_parquet_ignores_query_strings() -> None:
    assert sources.is_parquet("https://x/y.parquet?sig=abc&x=1")
    assert sources.is_parquet("s3://b/k.GeoParquet")
    assert not sources.is_parquet("https://x/y.gpkg?f=a.parquet")


@pytest.mark.s3
def test_counts_on_s3(s3: str, tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", 42)
    storage.upload_file(tmp_path / "a.parquet", f"{s3}/dir/a.parquet")
    storage.upload_file(DATA / "earthquakes.json", f"{s3}/dir/quakes.json")
    quakes = count([str(DATA / "earthquakes.json")])
    assert count([f"{s3}/dir/a.parquet", f"{s3}/dir/quakes.json"]) == 42 + quakes


def test_failure_returns_none_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(CountFallbackWarning, match="nope.gpkg"):
        assert count([str(DATA / "earthquakes.json"), str(tmp_path / "nope.gpkg")]) is None
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.warns(CountFallbackWarning, match="bad.parquet"):
        assert count([str(tmp_path / "bad.parquet")]) is None
    with pytest.warns(CountFallbackWarning, match="missing"):
        assert count([str(DATA / "earthquakes.json")], layer="missing") is None


def test_a_hung_server_cannot_block_past_the_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections into the backlog and never answers
    port = server.getsockname()[1]
    try:
        start = time.monotonic()
        with pytest.warns(CountFallbackWarning, match="within"):
            assert count([f"http://127.0.0.1:{port}/data.gpkg"], timeout=2) is None
        assert time.monotonic() - start < 10
    finally:
        server.close()


def test_survey_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert probe._main([str(DATA / "earthquakes.json"), "--resolution", "6"]) == 0
    found = probe.Survey(**json.loads(capsys.readouterr().out))
    assert found.features == count([str(DATA / "earthquakes.json")]) == 1707
    assert found.hex_rows == 1707 and found.sampled == 1707 and found.zoom == 6

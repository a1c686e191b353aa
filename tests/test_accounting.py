"""The accounting chain source → GeoParquet → hex → PMTiles: records parsed in one place, older
outputs without records, every difference no recorded reason explains reported; `run` prints it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from cng_datasets import accounting as acc
from cng_datasets.errors import IncompleteOutputError

LAT = "latitude beyond ±85.0511 (Web Mercator)"

pytestmark = pytest.mark.xdist_group("local-run")


def _geojson(path: Path, geometries: list[dict[str, Any] | None]) -> Path:
    features = [{"type": "Feature", "properties": {"n": i}, "geometry": g} for i, g in enumerate(geometries)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _pt(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


#: 10 features: 7 inside Web Mercator, 2 points beyond ±85.0511°, 1 without a geometry.
POLAR = [_pt(i * 10.0, i * 5.0) for i in range(7)] + [_pt(0, 88), _pt(20, -87), None]


# --------------------------------------------------------------------------------------------
# parsing


def test_parse_accounting() -> None:
    r = acc.parse_accounting({"unit": "features", "read": 5, "written": 3, "dropped": {"null geometry": 2}})
    assert (r.read, r.written, r.dropped, r.dropped_total) == (5, 3, {"null geometry": 2}, 2)
    assert acc.balance_problem(r) is None
    assert acc.make_record(5, 3, {"null geometry": 2, LAT: 0}) == r.as_dict()  # zero drops left out
    for bad, msg in [
        ([], "not an object"),
        ({"unit": "rows", "read": 1, "written": 1}, "unit is 'rows'"),
        ({"read": -1, "written": 0}, "read is -1"),
        ({"read": True, "written": 0}, "read is True"),
        ({"read": 1, "written": 1, "dropped": [1]}, "'dropped' is not an object"),
        ({"read": 2, "written": 1, "dropped": {"x": "1"}}, "dropped\\['x'\\] is '1'"),
    ]:
        with pytest.raises(acc.RecordError, match=msg):
            acc.parse_accounting(bad)


def test_balance_problem_says_how_many_are_unexplained() -> None:
    lost = acc.Record(10, 7, {"null geometry": 1})
    assert acc.balance_problem(lost) == (
        "read 10, wrote 7, recorded drops 1: 2 feature(s) lost without a recorded reason"
    )
    more = acc.Record(10, 11, {})
    assert "1 feature(s) more than read" in str(acc.balance_problem(more))


# --------------------------------------------------------------------------------------------
# the chain from records built by hand (the shape every step records)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real GeoParquet and PMTiles archive of POLAR (convert and pmtiles steps), and a hex
    output marker written by hand."""
    import warnings

    from cng_datasets.steps.convert import convert
    from cng_datasets.steps.pmtiles import TileOptions, build_pmtiles

    root = tmp_path_factory.mktemp("acc")
    src = _geojson(root / "polar.geojson", POLAR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        convert([str(src)], str(root / "polar.parquet"))
    build_pmtiles(str(root / "polar.parquet"), str(root / "polar.pmtiles"), TileOptions(max_zoom=3))
    return {"source": src, "parquet": root / "polar.parquet", "pmtiles": root / "polar.pmtiles", "root": root}


def _copy(
    outputs: dict[str, Path], dest: Path, hex_marker: dict[str, Any] | None = None, footer: dict[str, Any] | None = None
) -> tuple[str, str, str]:
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(outputs["pmtiles"], dest / "polar.pmtiles")
    pf = pq.ParquetFile(outputs["parquet"])
    md = dict(pf.metadata.metadata)
    info = json.loads(md[b"cng_datasets"])
    info.pop("accounting", None)  # the older outputs' footer: counts only (a test may give one)
    if footer is not None:
        info = {**info, **footer}
    md[b"cng_datasets"] = json.dumps(info).encode()
    pq.write_table(pf.read().replace_schema_metadata(md), dest / "polar.parquet")
    hex_dir = dest / "polar" / "hex"
    hex_dir.mkdir(parents=True)
    marker = {"format": 1, "features": 9, "rows": 9, "files": {}}
    marker.update(hex_marker or {})
    (hex_dir / "_SUCCESS.json").write_text(json.dumps(marker))
    return str(dest / "polar.parquet"), str(hex_dir), str(dest / "polar.pmtiles")


def test_chain_of_recorded_accounting(outputs: dict[str, Path], tmp_path: Path) -> None:
    urls = _copy(
        outputs,
        tmp_path,
        footer={
            "accounting": {
                "unit": "features",
                "read": 11,
                "written": 10,
                "dropped": {"invalid row (--on-invalid skip)": 1},
            }
        },
        hex_marker={"accounting": {"unit": "features", "read": 10, "written": 9, "dropped": {"null geometry": 1}}},
    )
    chain = acc.read_chain(*urls)
    assert chain.problems == []
    assert chain.line() == (
        "source 11 → geoparquet 10 (1 dropped: invalid row (--on-invalid skip)) → hex 9 (1 dropped: null geometry)"
        f" → pmtiles 7 (3 dropped: 1 null geometry, 2 {LAT})"
    )
    assert chain.lines()[0] == "source 11" and chain.lines()[3].startswith("→ pmtiles 7")


def test_chain_of_older_outputs_falls_back_to_their_counts(outputs: dict[str, Path], tmp_path: Path) -> None:
    """A footer with only feature_count / null_geometries, a _SUCCESS.json with only features."""
    urls = _copy(outputs, tmp_path)
    chain = acc.read_chain(*urls)
    assert chain.problems == []
    gp, hx, _ = chain.stages
    assert gp.record is not None and not gp.record.recorded and (gp.record.read, gp.record.written) == (10, 10)
    assert hx.record is not None and hx.record.dropped == {"null geometry": 1}
    assert "hex 9 (1 dropped: null geometry) [derived: no accounting record]" in chain.line()


def test_unexplained_differences(outputs: dict[str, Path], tmp_path: Path) -> None:
    # hex lost one feature without a reason, and read other rows than the GeoParquet has
    urls = _copy(
        outputs,
        tmp_path / "a",
        hex_marker={
            "accounting": {"unit": "features", "read": 9, "written": 7, "dropped": {"null geometry": 1}},
        },
    )
    chain = acc.read_chain(*urls)
    found = chain.problems_of("hex")
    assert any("1 feature(s) lost without a recorded reason" in p for p in found), found
    assert any("hex read 9 features but the GeoParquet has 10 rows" in p for p in found), found
    # a hex marker of the older shape promising fewer features than the GeoParquet's geometries
    urls = _copy(outputs, tmp_path / "b", hex_marker={"features": 8})
    assert any("lost without a recorded reason" in p for p in acc.read_chain(*urls).problems_of("hex"))
    # a malformed record is a problem, not a crash
    urls = _copy(outputs, tmp_path / "c", hex_marker={"accounting": {"read": "ten", "written": 9}})
    assert any("read is 'ten', not a count" in p for p in acc.read_chain(*urls).problems_of("hex"))


def test_independent_counts_are_compared(outputs: dict[str, Path], tmp_path: Path) -> None:
    urls = _copy(outputs, tmp_path)
    counts = acc.Counts(source=12, hex_features=8, pmtiles_features=6, no_geometry=1, beyond_mercator=3)
    chain = acc.read_chain(*urls, counts)
    text = "\n".join(p for _, p in chain.problems)
    assert "the source holds 12 features (re-counted) but convert read 10" in text
    assert "8 features in the partitions (counted) but hex recorded 9" in text
    assert "6 features in the tiles of the maximum zoom (counted) but pmtiles recorded 7" in text
    assert f"pmtiles recorded 2 feature(s) {LAT}, the GeoParquet has 3" in text
    good = acc.Counts(
        source=10, geoparquet_rows=10, hex_features=9, pmtiles_features=7, no_geometry=1, beyond_mercator=2
    )
    assert acc.read_chain(*urls, good).problems == []


def test_missing_outputs_are_question_marks(tmp_path: Path) -> None:
    chain = acc.read_chain(str(tmp_path / "x.parquet"), str(tmp_path / "x" / "hex"), str(tmp_path / "x.pmtiles"))
    assert chain.problems == []
    assert chain.line() == (
        "source ? → geoparquet ? (missing or unreadable) → hex ? (not published) → pmtiles ? (missing or unreadable)"
    )


# --------------------------------------------------------------------------------------------
# run: the chain in the summary, from a real run


@pytest.fixture(scope="module")
def polar_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from cng_datasets.config import WorkflowConfig
    from cng_datasets.local import run_local

    root = tmp_path_factory.mktemp("polar-run")
    src = _geojson(root / "polar.geojson", POLAR)
    cfg = WorkflowConfig(
        dataset="polar", source_urls=(str(src),), bucket=str(root / "out"), h3_resolution=3, parent_resolutions=(0,)
    )
    run_local(cfg, workers=2)
    return cfg


def test_run_prints_the_chain(polar_run: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from cng_datasets.cli.run import check_accounting

    check_accounting(polar_run, quiet=False)
    lines = capsys.readouterr().out.splitlines()
    # (older convert / hex steps record no accounting: their counts are derived, and marked so)
    derived = " [derived: no accounting record]"
    gp_info = json.loads(pq.read_metadata(polar_run.parquet_url).metadata[b"cng_datasets"])
    assert lines[0].startswith("accounting  ")
    assert [ln[len("accounting  ") :] for ln in lines] == [
        "source 10",
        "→ geoparquet 10" + ("" if "accounting" in gp_info else derived),
        "→ hex 9 (1 dropped: null geometry)" + ("" if "accounting" in _hex_marker(polar_run) else derived),
        f"→ pmtiles 7 (3 dropped: 1 null geometry, 2 {LAT})",
    ]


def _hex_marker(cfg: Any) -> dict[str, Any]:
    return json.loads((Path(cfg.hex_url) / "_SUCCESS.json").read_text())


def test_validate_shows_the_latitude_drop(polar_run: Any) -> None:
    from cng_datasets.validate import validate_dataset

    report = validate_dataset(polar_run.root_url, "polar")
    assert report.ok, report.problems
    assert f"pmtiles 7 (3 dropped: 1 null geometry, 2 {LAT})" in report.chain.line()
    pm = next(c.detail for c in report.checks if c.name == "pmtiles")
    assert "7 features at zoom" in pm and f"recorded: 3 dropped: 1 null geometry, 2 {LAT}" in pm
    assert "source re-counted: 10 features" in next(c.detail for c in report.checks if c.name == "geoparquet")


def test_run_fails_on_an_unexplained_difference(polar_run: Any, tmp_path: Path, capsys: Any) -> None:
    import shutil
    from dataclasses import replace

    from cng_datasets.cli.run import check_accounting
    from cng_datasets.steps.pmtiles_archive import read_metadata, set_metadata

    root = tmp_path / "out"
    shutil.copytree(polar_run.root_url, root)
    cfg = replace(polar_run, bucket=str(root))
    pm = Path(cfg.pmtiles_url)
    record = read_metadata(pm)["cng_datasets"]
    record["accounting"]["dropped"] = {"null geometry": 1}  # the latitude drops without a reason
    set_metadata(pm, {"cng_datasets": record})
    with pytest.raises(IncompleteOutputError, match="pmtiles: .*2 feature\\(s\\) lost without a recorded reason"):
        check_accounting(cfg, quiet=True)

"""The pmtiles step's accounting: every feature not in the tiles of the maximum zoom is counted
with its reason (Web Mercator's latitudes, tippecanoe's drops), recorded in the archive's metadata
and checked against the tiles, decoded here with mapbox_vector_tile."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from cng_datasets.errors import DataError, ToolError
from cng_datasets.steps import pmtiles as step
from tests.conftest import _convert
from tests.steps.test_pmtiles import _fake_tippecanoe, _leftovers


def _ids_at_zoom(path: Path, layer: str, zoom: int) -> set[int]:
    """Feature ids in the tiles of ``zoom``, decoded with mapbox_vector_tile (not the step's reader)."""
    import mapbox_vector_tile
    from pmtiles.reader import MmapSource, Reader, all_tiles

    ids: set[int] = set()
    with open(path, "rb") as fh:
        for (z, _, _), data in all_tiles(Reader(MmapSource(fh)).get_bytes):
            if z == zoom:
                for feat in mapbox_vector_tile.decode(gzip.decompress(data)).get(layer, {}).get("features", []):
                    ids.add(feat["id"])
    return ids


def _geojson(path: Path, geometries: list[dict[str, Any] | None]) -> Path:
    features = [{"type": "Feature", "properties": {"n": i}, "geometry": g} for i, g in enumerate(geometries)]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _pt(lon: float, lat: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [lon, lat]}


def _box(lat0: float, lat1: float) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[0, lat0], [20, lat0], [20, lat1], [0, lat1], [0, lat0]]]}


def test_features_beyond_web_mercator_are_counted_and_reported(tmp_path: Path, caplog: Any) -> None:
    """Points (and whole features) beyond ±85.0511° are not silently absent: a warning with the
    count and a reason in the archive's metadata; a polygon reaching past the limit is kept."""
    geoms = [
        _pt(10, 0),
        _pt(10, 84),
        _pt(10, 85.05),  # inside
        _pt(10, 85.06),
        _pt(10, 86),
        _pt(10, 89.9),
        _pt(10, -86),
        _pt(10, -90),  # beyond
        _box(80, 88),  # partly beyond: kept (clipped)
        _box(86, 88),  # wholly beyond
        {"type": "LineString", "coordinates": [[0, 86], [20, 89]]},  # wholly beyond
        None,  # no geometry
    ]
    src = _convert(_geojson(tmp_path / "polar.geojson", geoms), tmp_path / "polar.parquet")
    out = tmp_path / "polar.pmtiles"
    with caplog.at_level("WARNING", logger="cng_datasets"):
        result = step.build_pmtiles(str(src), str(out), step.TileOptions(max_zoom=4))
    beyond = "latitude beyond ±85.0511 (Web Mercator)"
    assert result.accounting == {
        "unit": "features",
        "read": 12,
        "written": 4,
        "dropped": {"null geometry": 1, beyond: 7},
    }
    assert any("7 feature(s) lie wholly beyond ±85.0511° latitude" in r.getMessage() for r in caplog.records)
    # the record is in the archive, and the tiles hold exactly the features it says (ids = _cng_fid)
    from cng_datasets.steps.pmtiles_archive import read_metadata

    record = read_metadata(out)["cng_datasets"]
    assert record["accounting"] == result.accounting and record["max_zoom"] == 4
    assert record["feature_ids"] == "_cng_fid"
    assert _ids_at_zoom(out, "polar", 4) == {1, 2, 3, 9}
    step.verify_archive(out, "polar")  # the rewritten metadata keeps the archive valid


def test_only_features_beyond_web_mercator_is_one_clear_error(tmp_path: Path) -> None:
    src = _convert(_geojson(tmp_path / "pole.geojson", [_pt(0, 89), _pt(5, -88)]), tmp_path / "pole.parquet")
    with pytest.raises(
        DataError, match=r"no features with a geometry to tile \(2 rows, 2 wholly beyond ±85.0511° latitude\)"
    ):
        step.build_pmtiles(str(src), str(tmp_path / "out" / "pole.pmtiles"), step.TileOptions(max_zoom=2))
    assert _leftovers(tmp_path / "out") == []


def test_tiny_polygons_tippecanoe_drops_are_counted(parquets: Any, tmp_path: Path, caplog: Any) -> None:
    """Natural Earth 10m at zoom 3: tippecanoe leaves out polygons smaller than a pixel (Vatican,
    …); they are counted as dropped by tippecanoe, with a warning — never silent."""
    src = parquets("ne_10m_admin_0_countries_deu.zip")
    out = tmp_path / "c.pmtiles"
    with caplog.at_level("WARNING", logger="cng_datasets"):
        result = step.build_pmtiles(str(src), str(out), step.TileOptions(max_zoom=3))
    present = _ids_at_zoom(out, "c", 3)
    assert result.written == len(present) < 250
    assert result.accounting["dropped"] == {"dropped by tippecanoe": 250 - len(present)}
    assert any(f"tippecanoe dropped {250 - len(present)} of 250 feature(s)" in r.getMessage() for r in caplog.records)


def test_text_ids_are_counted_by_row_number(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    pts = shapely.points([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    table = pa.table({"code": ["a", "b", "c"], "geometry": pa.array(shapely.to_wkb(pts))})
    table = table.replace_schema_metadata({"cng_datasets": json.dumps({"id_column": "code"})})
    pq.write_table(table, tmp_path / "t.parquet")
    result = step.build_pmtiles(str(tmp_path / "t.parquet"), str(tmp_path / "t.pmtiles"), step.TileOptions(max_zoom=2))
    assert result.accounting == {"unit": "features", "read": 3, "written": 3, "dropped": {}}
    from cng_datasets.steps.pmtiles_archive import read_metadata

    assert read_metadata(tmp_path / "t.pmtiles")["cng_datasets"]["feature_ids"] == "row numbers"
    assert _ids_at_zoom(tmp_path / "t.pmtiles", "t", 2) == {1, 2, 3}


def test_mvt_id_reader_agrees_with_mapbox_vector_tile() -> None:
    import mapbox_vector_tile

    from cng_datasets.steps.pmtiles_archive import mvt_feature_ids

    layers = [
        {
            "name": "a",
            "features": [
                {"geometry": "POINT(1 2)", "properties": {"k": "v" * 300, "n": i}, "id": fid}
                for i, fid in enumerate([1, 300, 2**40])
            ],
        },
        {"name": "b", "features": [{"geometry": "POINT(3 4)", "properties": {}, "id": 7}]},
    ]
    data = mapbox_vector_tile.encode(layers)
    assert mvt_feature_ids(data, "a") == ([1, 300, 2**40], 0)
    assert mvt_feature_ids(data) == ([1, 300, 2**40, 7], 0)
    assert mvt_feature_ids(data, "c") == ([], 0)
    with pytest.raises((ValueError, IndexError)):
        mvt_feature_ids(data[:-3], "a")


def test_features_that_were_not_given_to_tippecanoe_fail_the_step(tmp_path: Path) -> None:
    """The tiles hold an id that was never streamed (tippecanoe fed from elsewhere): refused, nothing published."""
    src = _convert(_geojson(tmp_path / "two.geojson", [_pt(1, 1), _pt(2, 2)]), tmp_path / "two.parquet")
    other = tmp_path / "other.geojsons"
    other.write_text(
        "\n".join(
            json.dumps(
                {"type": "Feature", "id": fid, "properties": {"n": 0, "_cng_fid": fid}, "geometry": _pt(1.5, 1.5)}
            )
            for fid in (1, 2, 999)
        )
        + "\n"
    )
    fake = _fake_tippecanoe(tmp_path, f'cat > /dev/null\nexec {step.find_tippecanoe()} "$@" {other}\n')
    out = tmp_path / "out" / "two.pmtiles"
    with pytest.raises(ToolError, match=r"holds 1 feature\(s\) at zoom 2 that were not given to it \(ids \[999\]\)"):
        step.build_pmtiles(str(src), str(out), step.TileOptions(max_zoom=2, tippecanoe=fake))
    assert _leftovers(out.parent) == []


def test_distinct_ids_dense_and_sparse(monkeypatch: Any) -> None:
    import numpy as np

    from cng_datasets.steps import pmtiles_archive as pa_

    monkeypatch.setattr(pa_, "SPARSE_COMPACT", 4)  # compact often
    dense = pa_.DistinctIds(1, 100, rows=100)
    sparse = pa_.DistinctIds(0, 2**60, rows=10)
    assert dense.dense and not sparse.dense
    for counter in (dense, sparse):
        counter.add([5, 7, 5, 9])
        counter.add(np.array([7, 11, 13, 5], dtype=np.uint64))
        counter.add([])
        assert counter.count == 5 and counter.values().tolist() == [5, 7, 9, 11, 13]
    dense.add([0, 101, 101])  # outside the range: counted apart, once each
    assert (dense.count, dense.outside, dense.outside_examples) == (5, 2, [0, 101])
    fewer = pa_.DistinctIds(1, 100, rows=100)
    fewer.add([5, 7])
    assert fewer.not_in(dense) == 0 and dense.not_in(fewer) == 3 and dense.not_in(sparse) == 0
    sparse.add([2**59])
    assert sparse.not_in(dense) == 1


def test_directory_entries_agree_with_the_pmtiles_library() -> None:
    import random
    import zlib

    from pmtiles.tile import Entry, deserialize_directory, serialize_directory

    from cng_datasets.steps.pmtiles_archive import directory_entries

    rng = random.Random(4)
    entries, tile, offset = [], 0, 0
    for _ in range(5000):
        tile += rng.choice([1, 1, 2, 300, 2**33])
        length = rng.randint(1, 70_000)
        if rng.random() < 0.3:  # not right after the one before: an explicit offset
            offset += rng.randint(1, 2**40)
        entries.append(Entry(tile, rng.choice([0, 1, 1, 7]), offset, length))  # run length 0: a leaf
        offset += length
    data = serialize_directory(entries)
    ids, runs, lengths, offsets = directory_entries(data)
    want = deserialize_directory(data)
    assert ids.tolist() == [e.tile_id for e in want] and runs.tolist() == [e.run_length for e in want]
    assert lengths.tolist() == [e.length for e in want] and offsets.tolist() == [e.offset for e in want]
    with pytest.raises(zlib.error):
        directory_entries(serialize_directory(entries[:10])[:-8])  # a truncated gzip member

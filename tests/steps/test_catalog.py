"""`catalog`: the STAC collection and dataset card of a real run (issue 13). pystac reads it, and
it validates offline against the STAC 1.1 JSON schemas that pystac ships (core: collection and
item; the table extension's fields are checked against the GeoParquet here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.conftest import DATA

pytestmark = pytest.mark.slow

LOWRES = DATA / "naturalearth_lowres" / "naturalearth_lowres.shp"


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from click.testing import CliRunner

    from cng_datasets.cli import cli

    root = tmp_path_factory.mktemp("catalog")
    args = ["run", "-q", "--dataset", "world/countries", "--source-url", str(LOWRES), "--bucket", str(root)]
    args += ["--h3-resolution", "3", "--license", "CC0-1.0", "--description", "Natural Earth 110m countries."]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    return root


def _schema_errors(doc: dict[str, Any], kind: str) -> list[str]:
    import jsonschema
    from pystac.validation.local_validator import get_local_schema_cache
    from referencing import Registry, Resource

    cache = get_local_schema_cache()  # pystac's copies of the STAC 1.1 schemas: no network
    registry = Registry().with_resources([(uri, Resource.from_contents(s)) for uri, s in cache.items()])
    schema = cache[f"https://schemas.stacspec.org/v1.1.0/{kind}-spec/json-schema/{kind}.json"]
    return [e.message for e in jsonschema.Draft7Validator(schema, registry=registry).iter_errors(doc)]


def test_collection_and_items_validate_offline(out: Path) -> None:
    base = out / "world" / "countries"
    collection = json.loads((base / "collection.json").read_text())
    assert _schema_errors(collection, "collection") == []
    for name in ("geoparquet", "pmtiles", "hex"):
        assert _schema_errors(json.loads((base / "items" / f"{name}.json").read_text()), "item") == []
    broken = {k: v for k, v in collection.items() if k != "license"}
    assert _schema_errors(broken, "collection")  # the check can fail


def test_pystac_reads_it_and_the_assets_resolve(out: Path) -> None:
    import pystac

    base = out / "world" / "countries"
    col = pystac.Collection.from_file(str(base / "collection.json"))
    assert (col.id, col.license, col.description) == ("countries", "CC0-1.0", "Natural Earth 110m countries.")
    assert col.extra_fields["cng_datasets:sources"] == [str(LOWRES)]
    items = {i.id: i for i in col.get_items()}
    assert set(items) == {"countries-geoparquet", "countries-pmtiles", "countries-hex"}
    resolved = {i.id: Path(a.get_absolute_href() or "") for i in items.values() for a in i.assets.values()}
    assert resolved["countries-geoparquet"] == out / "world" / "countries.parquet"
    assert resolved["countries-pmtiles"] == out / "world" / "countries.pmtiles"
    assert resolved["countries-hex"].resolve() == (base / "hex").resolve()
    box = col.extent.spatial.bboxes[0]
    assert box[0] < -170 and box[2] > 170 and box[1] < -80


def test_table_fields_describe_the_geoparquet(out: Path) -> None:
    item = json.loads((out / "world" / "countries" / "items" / "geoparquet.json").read_text())
    pf = pq.ParquetFile(out / "world" / "countries.parquet")
    props = item["properties"]
    assert props["table:row_count"] == pf.metadata.num_rows == 177
    assert [(c["name"], c["type"]) for c in props["table:columns"]] == [(f.name, str(f.type)) for f in pf.schema_arrow]
    hex_item = json.loads((out / "world" / "countries" / "items" / "hex.json").read_text())
    marker = json.loads((out / "world" / "countries" / "hex" / "_SUCCESS.json").read_text())
    assert hex_item["properties"]["table:row_count"] == marker["rows"]


def test_the_card_says_what_it_is_and_how_to_read_it(out: Path) -> None:
    card = (out / "world" / "countries" / "README.md").read_text()
    assert card.startswith("# countries\n\nNatural Earth 110m countries.")
    assert "Licence: CC0-1.0." in card and "177 features" in card
    assert "| `continent` | string |" in card
    assert "hive_partitioning=true" in card and "pmtiles.io" in card


def test_a_rerun_keeps_created_and_a_missing_output_is_one_line(out: Path, tmp_path: Path, cli_run) -> None:
    base = out / "world" / "countries"
    before = json.loads((base / "collection.json").read_text())
    done = cli_run("catalog", "--root", out, "--dataset", "world/countries", "--license", "CC0-1.0")
    assert done.returncode == 0, done.stderr
    after = json.loads((base / "collection.json").read_text())
    assert after["created"] == before["created"] and after["updated"] >= before["updated"]
    done = cli_run("catalog", "--root", tmp_path, "--dataset", "nothing")
    assert done.returncode == 65 and done.stderr.count("\n") == 1, done.stderr
    assert "no GeoParquet here" in done.stderr and not (tmp_path / "nothing").exists()

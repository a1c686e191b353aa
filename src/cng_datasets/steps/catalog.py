"""``cng-datasets catalog``: a STAC Collection and a dataset card next to the three outputs.

Written after pmtiles and repartition, from what the outputs hold (nothing is recomputed)::

    <root>/<dataset>/collection.json          STAC 1.1 Collection: extent from the data, licence,
                                              description, the source URLs, links to the items
    <root>/<dataset>/items/geoparquet.json    one STAC Item per output; the GeoParquet's with the
    <root>/<dataset>/items/pmtiles.json       table extension (columns and types, row count)
    <root>/<dataset>/items/hex.json
    <root>/<dataset>/README.md                the card: what it is, counts, columns, how to query
    <root>/<dataset>/index.html               the map preview (:mod:`cng_datasets.preview`)

Links and asset hrefs are relative (a self-contained catalog): the folder can be copied or served
from a bucket as it is. Each file is written atomically; running again rewrites them from the
outputs (``created`` is kept from the first run, ``updated`` is now).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from cng_datasets import __version__, contract, preview, provenance, storage
from cng_datasets.errors import DataError, StorageError

log = logging.getLogger("cng_datasets")

STAC_VERSION = "1.1.0"
TABLE_EXTENSION = "https://stac-extensions.github.io/table/v1.2.0/schema.json"
#: ``file:size`` of each asset
FILE_EXTENSION = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
#: Licence when none is given: SPDX "other" (the card says so).
DEFAULT_LICENSE = "other"
COLLECTION_FILE = contract.CATALOG_FILE
CARD_FILE = contract.CARD_FILE
ITEMS_DIR = contract.CATALOG_ITEMS_DIR
PARQUET_TYPE = "application/vnd.apache.parquet"
PMTILES_TYPE = "application/vnd.pmtiles"


@dataclass(frozen=True)
class CatalogInfo:
    """What the catalog says of the dataset besides the data: its sources, licence, description."""

    sources: tuple[str, ...] = ()
    license: str = DEFAULT_LICENSE
    description: str | None = None


def write_catalog(root: str, dataset: str, info: CatalogInfo) -> dict[str, Any]:
    """Write the STAC collection, its items and the card of ``dataset`` below ``root``; return the
    collection. :class:`DataError` when an output is missing (the catalog describes finished data)."""
    dataset = dataset.strip("/")
    base = storage.join(root, dataset)
    name = dataset.rsplit("/", 1)[-1]
    urls = {
        "geoparquet": contract.parquet_url(root, dataset),
        "pmtiles": contract.pmtiles_url(root, dataset),
        "hex": contract.hex_url(root, dataset),
    }
    gp = _geoparquet_facts(urls["geoparquet"])
    pm = _pmtiles_facts(urls["pmtiles"])
    hx = _hex_facts(urls["hex"])
    now = provenance.now()
    created = _created(storage.join(base, COLLECTION_FILE)) or now
    bbox = gp["bbox"] or pm["bbox"]
    items = {
        "geoparquet": _item(
            f"{name}-geoparquet",
            bbox,
            created,
            now,
            {
                "table:row_count": gp["rows"],
                "table:columns": gp["columns"],
            },
            {"data": _asset(f"../../{name}.parquet", PARQUET_TYPE, "GeoParquet", gp["bytes"])},
            [TABLE_EXTENSION, FILE_EXTENSION],
        ),
        "pmtiles": _item(
            f"{name}-pmtiles",
            pm["bbox"] or bbox,
            created,
            now,
            {
                "pmtiles:min_zoom": pm["min_zoom"],
                "pmtiles:max_zoom": pm["max_zoom"],
            },
            {"tiles": _asset(f"../../{name}.pmtiles", PMTILES_TYPE, "PMTiles vector tiles", pm["bytes"])},
            [FILE_EXTENSION],
        ),
        "hex": _item(
            f"{name}-hex",
            bbox,
            created,
            now,
            {
                "table:row_count": hx["rows"],
                "h3:resolution": hx["resolution"],
                "h3:parent_resolutions": hx["parents"],
            },
            {"data": _asset("../hex/", PARQUET_TYPE, "H3 cells, hive-partitioned by h0", hx["bytes"])},
            [TABLE_EXTENSION, FILE_EXTENSION],
        ),
    }
    collection = {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": name,
        "title": name,
        "description": info.description or f"{name}: no description given (pass --description)",
        "license": info.license or DEFAULT_LICENSE,
        "extent": {"spatial": {"bbox": [bbox or [-180, -90, 180, 90]]}, "temporal": {"interval": [[created, None]]}},
        "links": [{"rel": "root", "href": f"./{COLLECTION_FILE}", "type": "application/json"}]
        + [{"rel": "item", "href": f"./{ITEMS_DIR}/{k}.json", "type": "application/geo+json"} for k in items]
        + [{"rel": "via", "href": s} for s in info.sources if "://" in s],
        "created": created,
        "updated": now,
        "cng_datasets:sources": list(info.sources),
        "cng_datasets:version": __version__,
    }
    for key, item in items.items():
        storage.write_bytes(storage.join(base, ITEMS_DIR, f"{key}.json"), _json(item))
    storage.write_bytes(storage.join(base, CARD_FILE), card(name, info, gp, pm, hx).encode("utf-8"))
    facts = [
        ("licence", info.license or DEFAULT_LICENSE),
        ("features", f"{gp['rows']:,}"),
        ("zoom", f"{pm['min_zoom']}..{pm['max_zoom']}"),
        ("hex rows", f"{hx['rows']:,} at resolution {hx['resolution']}"),
        ("sources", ", ".join(info.sources) or "not recorded"),
        ("description", info.description or "none given"),
    ]
    page = preview.page(name, pm["layer"] or name, pm["bbox"], facts)
    storage.write_bytes(storage.join(base, preview.PAGE_FILE), page.encode("utf-8"))
    storage.write_bytes(storage.join(base, COLLECTION_FILE), _json(collection))  # last: the entry point
    log.info("catalog: wrote %s/%s, %d items and %s", base, COLLECTION_FILE, len(items), CARD_FILE)
    return collection


def _json(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


def _created(url: str) -> str | None:
    try:
        value = json.loads(storage.read_bytes(url)).get("created")
    except (StorageError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def _asset(href: str, media_type: str, title: str, size: int) -> dict[str, Any]:
    return {"href": href, "type": media_type, "title": title, "roles": ["data"], "file:size": size}


def _item(
    item_id: str,
    bbox: list[float] | None,
    created: str,
    now: str,
    props: dict[str, Any],
    assets: dict[str, Any],
    extensions: list[str],
) -> dict[str, Any]:
    box = bbox or [-180.0, -90.0, 180.0, 90.0]
    w, s, e, n = box
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": extensions,
        "id": item_id,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": box,
        "properties": {"datetime": created, "created": created, "updated": now, **props},
        "links": [
            {"rel": "collection", "href": f"../{COLLECTION_FILE}", "type": "application/json"},
            {"rel": "parent", "href": f"../{COLLECTION_FILE}", "type": "application/json"},
            {"rel": "root", "href": f"../{COLLECTION_FILE}", "type": "application/json"},
        ],
        "assets": assets,
        "collection": item_id.rsplit("-", 1)[0],
    }


def _missing(url: str, what: str) -> DataError:
    return DataError(f"{url}: no {what} here; the catalog describes finished outputs (run the other steps first)")


def _geoparquet_facts(url: str) -> dict[str, Any]:
    try:
        pf = storage.open_parquet(url)
    except StorageError as exc:
        raise _missing(url, "GeoParquet") from exc
    kv = pf.metadata.metadata or {}
    geo = contract.footer_json(kv, contract.GEO_KEY, url) or {}
    primary = contract.geometry_column_of(geo)
    bbox = (geo.get("columns", {}).get(primary) or {}).get("bbox")
    columns = [{"name": f.name, "type": str(f.type)} for f in pf.schema_arrow]
    return {
        "rows": pf.metadata.num_rows,
        "columns": columns,
        "bbox": [float(v) for v in bbox[:4]] if isinstance(bbox, list) and len(bbox) >= 4 else None,
        "bytes": storage.size(url),
        "id_column": contract.id_column_of(kv, url),
    }


def _pmtiles_facts(url: str) -> dict[str, Any]:
    from pmtiles.tile import deserialize_header

    try:
        with storage.open_input(url) as f:
            h = deserialize_header(f.read(127))
    except StorageError as exc:
        raise _missing(url, "PMTiles archive") from exc
    box = [h["min_lon_e7"] / 1e7, h["min_lat_e7"] / 1e7, h["max_lon_e7"] / 1e7, h["max_lat_e7"] / 1e7]
    try:
        from cng_datasets.accounting import pmtiles_metadata

        layer = (pmtiles_metadata(url).get(contract.PMTILES_KEY) or {}).get("layer")
    except Exception:  # noqa: BLE001 - an archive of another tool: the page falls back to the name
        layer = None
    facts = {"min_zoom": h["min_zoom"], "max_zoom": h["max_zoom"], "bbox": box, "bytes": storage.size(url)}
    return {**facts, "layer": layer}


def _hex_facts(url: str) -> dict[str, Any]:
    try:
        marker = json.loads(storage.read_bytes(storage.join(url, contract.HEX_SUCCESS)))
    except (StorageError, ValueError) as exc:
        raise _missing(url, f"published hex output ({contract.HEX_SUCCESS})") from exc
    files = marker.get("files") or {}
    size = sum(storage.size(storage.join(url, rel)) for rel in files)
    return {
        "rows": marker.get("rows"),
        "features": marker.get("features"),
        "resolution": marker.get("resolution"),
        "parents": marker.get("parent_resolutions"),
        "partitions": marker.get("partitions"),
        "bytes": size,
    }


def card(name: str, info: CatalogInfo, gp: dict[str, Any], pm: dict[str, Any], hx: dict[str, Any]) -> str:
    """The dataset card (Markdown): what the data is, the counts, the columns, how to read it."""
    res = hx["resolution"]
    cols = "\n".join(f"| `{c['name']}` | {c['type']} |" for c in gp["columns"])
    sources = "\n".join(f"- {s}" for s in info.sources) or "- (not recorded)"
    licence = info.license or DEFAULT_LICENSE
    hex_what = (
        f"{hx['rows']:,} rows (feature, H3 cell) of {hx['features']:,} features at resolution {res}, "
        f"parents {hx['parents']}, {hx['partitions']} `h0=` partitions"
    )
    licence_note = " (no licence was given: pass `--license` with an SPDX id)" if licence == DEFAULT_LICENSE else ""
    return f"""# {name}

{info.description or "No description was given (pass `--description`)."}

Licence: {licence}{licence_note}. Built by cng-datasets {__version__}; the STAC collection is
[`{COLLECTION_FILE}`]({COLLECTION_FILE}).

Sources:
{sources}

| output | what | size |
|---|---|---|
| `../{name}.parquet` | GeoParquet 1.1, {gp["rows"]:,} features, id column `{gp["id_column"]}` | {gp["bytes"]:,} bytes |
| `../{name}.pmtiles` | PMTiles vector tiles, zoom {pm["min_zoom"]}..{pm["max_zoom"]} | {pm["bytes"]:,} bytes |
| `hex/` | {hex_what} | {hx["bytes"]:,} bytes |

Columns of the GeoParquet (the hex rows carry the same attributes, without `geometry` and `bbox`,
with the cell columns `h{res}`, … as int64):

| column | type |
|---|---|
{cols}

## Query it

```python
import duckdb
duckdb.sql("SELECT * FROM '{name}.parquet' LIMIT 5")          # from the folder above this one
duckdb.sql("SELECT h0, count(*) FROM read_parquet('{name}/hex/**/*.parquet', hive_partitioning=true) GROUP BY h0")
import pandas as pd
pd.read_parquet("{name}/hex")
```

On a map: drop `{name}.pmtiles` on <https://pmtiles.io>, or serve it with `pmtiles serve`.
"""

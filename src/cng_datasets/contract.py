"""The on-disk contract: the names every output, marker and reader agrees on. Owned here only.

A dataset ``<dataset>`` under a root (``s3://bucket[/prefix]`` or a local directory)::

    <root>/<dataset>.parquet             GeoParquet; footer keys ``geo`` and ``cng_datasets``
    <root>/<dataset>.pmtiles             PMTiles; JSON metadata key ``cng_datasets``
    <root>/<dataset>/hex/h0=<cell>/…     hex output, published by ``hex/_SUCCESS.json``
    <root>/<dataset>/chunks/             hex chunks (``h0=<cell>/part-<chunk>.parquet``), with a
                                         completion marker per chunk in ``chunks/_done/chunk-<NNNNN>.json``
    <root>/<dataset>/_cng/<step>.json    a local run's completion marker of each step (logs in ``_cng/logs``)

Columns: the feature id :data:`ID_COLUMN` (unless ``--id-column`` names another, recorded as
``id_column`` in the ``cng_datasets`` footer metadata), the hex cell columns ``h<res>``.

Importing this module is cheap (no pyarrow, GDAL or boto3): the CLI's option parsing uses it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from cng_datasets.errors import RecordError

# ---- columns ------------------------------------------------------------------------------------

#: The feature id column ``convert`` adds (int64, 1..N) unless ``--id-column`` names an existing one.
ID_COLUMN = "_cng_fid"
#: Geometry column of the GeoParquet output.
GEOMETRY_COLUMN = "geometry"
#: H3's resolution-0 cells: the most ``h0=<cell>`` partitions a hex output can have.
BASE_CELL_COUNT = 122


def cell_column(resolution: int) -> str:
    """The hex output's column of H3 cells at ``resolution``: ``h10``."""
    return f"h{resolution}"


#: Integer type of every cell column of the hex output, ``h0`` included: H3 indexes are below
#: 2**63, and DuckDB and polars read the ``h0=<cell>`` folder key as a signed 64-bit integer, so
#: joins on ``h0`` and a cell column need no cast.
HEX_CELL_TYPE = "int64"
#: The hex output's partition key: in the folder names only (``h0=<cell as decimal>``), not in the
#: files, as pyarrow's ``write_to_dataset``, Spark and DuckDB's ``PARTITION_BY`` write it.
HEX_PARTITION_KEY = "h0"


def hex_cell_columns(resolution: int, parents: list[int] | tuple[int, ...]) -> list[str]:
    """The cell columns of a hex run, finest first: ``h<resolution>``, then each parent (0 included)."""
    return [cell_column(r) for r in sorted({resolution, 0, *parents}, reverse=True)]


#: Polygon fill modes of the hex step: cell centre inside / cell entirely inside / cell overlaps.
CONTAINMENT_MODES = ("center", "full", "overlap")

# ---- metadata keys ------------------------------------------------------------------------------

#: GeoParquet 1.1 footer key.
GEO_KEY = b"geo"
#: Our footer key in the GeoParquet (JSON: ``id_column``, accounting, source identity, …).
GEOPARQUET_KEY = b"cng_datasets"
#: Our key in the PMTiles JSON metadata (accounting, id column).
PMTILES_KEY = "cng_datasets"
#: Where the provenance record (:mod:`cng_datasets.provenance`) of an output lives: a footer key of
#: the GeoParquet and of each hex partition, a key of the PMTiles JSON metadata.
PROVENANCE_KEY = b"cng_provenance"

# ---- layout -------------------------------------------------------------------------------------

#: The STAC collection, its items' folder and the dataset card, below ``<root>/<dataset>``.
CATALOG_FILE = "collection.json"
CATALOG_ITEMS_DIR = "items"
CARD_FILE = "README.md"
#: Directories below ``<root>/<dataset>``: the published hex output and the hex step's chunks.
HEX_DIR = "hex"
CHUNKS_DIR = "chunks"
#: The marker that publishes the hex output (written last, removed first by repartition).
HEX_SUCCESS = "_SUCCESS.json"
#: Directory below the chunks holding one completion marker per finished chunk.
CHUNK_MARKER_DIR = "_done"
#: The file name of a chunk's completion marker, and nothing else (not a ``.chunk-00003.json.<hex>.tmp``
#: left by an interrupted write).
CHUNK_MARKER_RE = re.compile(r"^chunk-(\d+)\.json$")
#: Directory of a local run's step markers, lease and logs, below ``<root>/<dataset>``.
RUN_DIR = "_cng"
#: The local run's lease (:mod:`cng_datasets.lease`) and its steps' logs, in :data:`RUN_DIR`.
LEASE_NAME = "lease.json"
LOGS_DIR = "logs"


def chunk_marker_name(chunk_id: int) -> str:
    """``chunk-00003.json``: the completion marker of hex chunk ``chunk_id``."""
    return f"chunk-{chunk_id:05d}.json"


def _join(*parts: str) -> str:
    head, *rest = parts
    return "/".join([head.rstrip("/"), *(p.strip("/") for p in rest if p.strip("/"))])


def parquet_url(root: str, dataset: str) -> str:
    return _join(root, dataset) + ".parquet"


def pmtiles_url(root: str, dataset: str) -> str:
    return _join(root, dataset) + ".pmtiles"


def hex_url(root: str, dataset: str) -> str:
    return _join(root, dataset, HEX_DIR)


def chunks_url(root: str, dataset: str) -> str:
    return _join(root, dataset, CHUNKS_DIR)


def catalog_url(root: str, dataset: str) -> str:
    """The STAC collection of a dataset; its items and card (``README.md``) lie beside it."""
    return _join(root, dataset, CATALOG_FILE)


def run_dir_url(root: str, dataset: str, *parts: str) -> str:
    """``<root>/<dataset>/_cng[/parts…]``: where a local run keeps its markers, lease and logs."""
    return _join(root, dataset, RUN_DIR, *parts)


def run_marker_url(root: str, dataset: str, name: str) -> str:
    """A local run's marker ``name`` (``convert``, ``hex-chunks``, …)."""
    return run_dir_url(root, dataset, f"{name}.json")


# ---- reading the footer -------------------------------------------------------------------------


def footer_json(kv: dict[bytes, bytes] | None, key: bytes, url: str | None = None) -> dict[str, Any] | None:
    """The JSON object under ``key`` of a Parquet footer's key-value metadata ``kv``; None when
    absent; :class:`RecordError` (naming ``url`` when given) when it is not a JSON object."""
    raw = (kv or {}).get(key)
    if not raw:
        return None
    where = f"{url}: " if url else ""
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise RecordError(f"{where}the {key.decode()} metadata is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise RecordError(f"{where}the {key.decode()} metadata is not a JSON object")
    return value


def dataset_metadata(kv: dict[bytes, bytes] | None, url: str | None = None) -> dict[str, Any]:
    """Our ``cng_datasets`` footer metadata of a GeoParquet (``{}`` for a file we did not write)."""
    return footer_json(kv, GEOPARQUET_KEY, url) or {}


def geometry_column_of(geo: dict[str, Any]) -> str:
    """The primary geometry column a ``geo`` footer (already parsed) declares (:data:`GEOMETRY_COLUMN`
    when it declares none)."""
    return str(geo.get("primary_column", GEOMETRY_COLUMN))


def id_column_of(kv: dict[bytes, bytes] | None, url: str | None = None) -> str:
    """The feature id column a GeoParquet declares (:data:`ID_COLUMN` when it declares none)."""
    return str(dataset_metadata(kv, url).get("id_column") or ID_COLUMN)

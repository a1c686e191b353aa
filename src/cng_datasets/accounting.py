"""Accounting from the source to every output: what each step read, wrote and dropped (and why).

Every step records, in its own completion record, the object::

    "accounting": {"unit": "features", "read": R, "written": W, "dropped": {"<reason>": n, ...}}

with R − Σ dropped = W (checked by the step before it publishes):

- convert: the GeoParquet footer key ``cng_datasets`` (read = features of all sources, written =
  rows, dropped = e.g. skipped invalid rows; null geometries are kept as rows);
- hex: ``<hex>/_SUCCESS.json`` (read = GeoParquet rows covered, written = features with at least
  one cell, dropped = null geometries, …);
- pmtiles: the archive's JSON metadata key ``cng_datasets`` (read = GeoParquet rows, written =
  distinct features in the tiles of the maximum zoom, dropped = null geometries, features beyond
  Web Mercator's latitudes, features tippecanoe dropped).

This module is the one place that parses those records (older outputs without ``accounting`` fall
back to what they hold: ``feature_count`` / ``null_geometries`` / ``_SUCCESS.json`` ``features``)
and builds the chain source → GeoParquet → hex → PMTiles with every difference that no recorded
reason explains (:func:`read_chain`). ``run`` prints the chain; ``validate`` adds its own
independent counts (:class:`Counts`) and fails on any unexplained difference.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Any

from cng_datasets import contract, storage
from cng_datasets.errors import RecordError

#: The unit every step counts in.
UNIT = "features"
#: Drop reasons (the same text in every record, so records can be compared).
REASON_NULL = "null geometry"
REASON_EMPTY = "empty geometry"
REASON_LATITUDE = "latitude beyond ±85.0511 (Web Mercator)"
REASON_TIPPECANOE = "dropped by tippecanoe"
#: Reasons that mean "the GeoParquet row has no geometry".
NO_GEOMETRY_REASONS = (REASON_NULL, REASON_EMPTY)
#: Web Mercator's latitude limit: atan(sinh(π)) in degrees.
WEB_MERCATOR_MAX_LAT = 85.0511287798066
#: Key of the record in the GeoParquet footer and in the PMTiles JSON metadata.
GEOPARQUET_KEY = contract.GEOPARQUET_KEY
PMTILES_KEY = contract.PMTILES_KEY
HEX_SUCCESS = contract.HEX_SUCCESS


@dataclass
class Record:
    """One step's accounting. ``recorded`` is False when derived from an older output's fields."""

    read: int
    written: int
    dropped: dict[str, int] = field(default_factory=dict)
    recorded: bool = True

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        return {"unit": UNIT, "read": self.read, "written": self.written, "dropped": dict(self.dropped)}


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"{what} is {value!r}, not a count")
    return value


def parse_accounting(obj: Any) -> Record:
    """The :class:`Record` of an ``accounting`` object; :class:`RecordError` when malformed."""
    if not isinstance(obj, dict):
        raise RecordError(f"accounting is {type(obj).__name__}, not an object")
    unit = obj.get("unit", UNIT)
    if unit != UNIT:
        raise RecordError(f"accounting unit is {unit!r}, expected {UNIT!r}")
    dropped = obj.get("dropped") or {}
    if not isinstance(dropped, dict):
        raise RecordError("accounting 'dropped' is not an object")
    return Record(
        read=_count(obj.get("read"), "read"),
        written=_count(obj.get("written"), "written"),
        dropped={str(k): _count(v, f"dropped[{k!r}]") for k, v in dropped.items()},
    )


def make_record(read: int, written: int, dropped: dict[str, int]) -> dict[str, Any]:
    """The ``accounting`` object a step records (zero drops left out)."""
    return Record(read, written, {k: v for k, v in dropped.items() if v}).as_dict()


def balance_problem(record: Record) -> str | None:
    """Why ``record`` does not balance (read − Σ dropped ≠ written), or None."""
    if record.read - record.dropped_total == record.written:
        return None
    missing = record.read - record.dropped_total - record.written
    return (
        f"read {record.read:,}, wrote {record.written:,}, recorded drops {record.dropped_total:,}: "
        f"{abs(missing):,} feature(s) {'lost' if missing > 0 else 'more than read'} without a recorded reason"
    )


# --------------------------------------------------------------------------------------------
# Reading the three records


def geoparquet_info(url: str) -> tuple[dict[str, Any] | None, int]:
    """The footer's ``cng_datasets`` JSON (None when absent) and the file's row count."""
    import pyarrow.parquet as pq

    with storage.open_random_access(url) as f:
        md = pq.ParquetFile(f).metadata
    return contract.footer_json(md.metadata, GEOPARQUET_KEY), md.num_rows


def geoparquet_record(info: dict[str, Any]) -> Record:
    """convert's accounting from its footer JSON (older files: ``feature_count`` and the sources)."""
    if "accounting" in info:
        return parse_accounting(info["accounting"])
    written = _count(info.get("feature_count"), "feature_count")
    sources = info.get("sources")
    read = written
    if isinstance(sources, list) and sources:
        read = sum(_count(s.get("read", s.get("features")), "source features") for s in sources if isinstance(s, dict))
    return Record(read, written, {}, recorded=False)


def source_entries(info: dict[str, Any] | None) -> list[tuple[str, str | None, int | None]]:
    """(url, layer, features read) of each source the GeoParquet footer records."""
    out: list[tuple[str, str | None, int | None]] = []
    for s in (info or {}).get("sources") or []:
        if isinstance(s, dict) and s.get("source"):
            n = s.get("read", s.get("features"))
            out.append((str(s["source"]), s.get("layer") or None, n if isinstance(n, int) else None))
    return out


def hex_record(hex_url: str, geoparquet: Record | None, info: dict[str, Any] | None) -> Record | None:
    """hex's accounting from ``<hex>/_SUCCESS.json`` (None when the output is not published).

    Older markers have only ``features`` (features with cells): read is then the GeoParquet's
    rows and the drops its null geometries (every other feature gets a cell or fails the chunk).
    """
    try:
        marker = json.loads(storage.read_bytes(storage.join(hex_url, HEX_SUCCESS)))
    except ValueError as exc:
        raise RecordError(f"{HEX_SUCCESS} is not JSON ({exc})") from exc
    except Exception:  # noqa: BLE001 - absent or unreadable: not published
        return None
    if not isinstance(marker, dict):
        raise RecordError(f"{HEX_SUCCESS} is not a JSON object")
    if "accounting" in marker:
        return parse_accounting(marker["accounting"])
    written = _count(marker.get("features"), f"{HEX_SUCCESS} features")
    if geoparquet is None:
        return Record(written, written, {}, recorded=False)
    nulls = (info or {}).get("null_geometries")
    dropped = {REASON_NULL: nulls} if isinstance(nulls, int) and nulls else {}
    return Record(geoparquet.written, written, dropped, recorded=False)


def pmtiles_metadata(url: str) -> dict[str, Any]:
    """The JSON metadata of the PMTiles archive at ``url`` (two range reads)."""
    from pmtiles.tile import Compression, deserialize_header

    with storage.open_input(url) as f:
        header = deserialize_header(f.read(127))
        f.seek(header["metadata_offset"])
        raw = f.read(header["metadata_length"])
    if header["internal_compression"] == Compression.GZIP:
        raw = gzip.decompress(raw)
    meta = json.loads(raw)
    return meta if isinstance(meta, dict) else {}


def pmtiles_record(meta: dict[str, Any]) -> Record | None:
    """pmtiles's accounting from the archive's metadata (None: written without accounting)."""
    entry = meta.get(PMTILES_KEY)
    if entry is None:
        return None
    if isinstance(entry, str):  # a writer may nest JSON as text
        try:
            entry = json.loads(entry)
        except ValueError as exc:
            raise RecordError(f"metadata {PMTILES_KEY!r} is not JSON ({exc})") from exc
    if not isinstance(entry, dict) or "accounting" not in entry:
        raise RecordError(f"metadata {PMTILES_KEY!r} has no accounting object")
    return parse_accounting(entry["accounting"])


# --------------------------------------------------------------------------------------------
# The chain


@dataclass
class Counts:
    """Independent counts (``validate``): any left None is not compared."""

    source: int | None = None  # features in the source(s), re-counted
    geoparquet_rows: int | None = None
    no_geometry: int | None = None  # GeoParquet rows with a null or empty geometry
    beyond_mercator: int | None = None  # GeoParquet geometries wholly beyond ±85.0511°
    hex_features: int | None = None  # distinct ids in the hex partitions
    pmtiles_features: int | None = None  # distinct ids in the tiles of the maximum zoom


@dataclass
class Stage:
    """One output in the chain: its record (None: absent, ``note`` says why)."""

    name: str
    url: str
    record: Record | None = None
    note: str = ""


@dataclass
class Chain:
    """source → GeoParquet → hex → PMTiles, and every difference no recorded reason explains."""

    source: int | None
    stages: list[Stage]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (stage name, one line)

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    def problems_of(self, name: str) -> list[str]:
        return [text for n, text in self.problems if n == name]

    def parts(self) -> list[str]:
        """One text per output: ``source 177``, ``geoparquet 177``, ``hex 177 (0 dropped)``, …"""
        out = [f"source {self.source:,}" if self.source is not None else "source ?"]
        for s in self.stages:
            r = s.record
            if r is None:
                out.append(f"{s.name} ? ({s.note})" if s.note else f"{s.name} ?")
                continue
            text = f"{s.name} {r.written:,}"
            if r.dropped_total or s.name != "geoparquet":
                text += f" ({describe_drops(r.dropped)})"
            if not r.recorded:
                text += " [derived: no accounting record]"
            out.append(text)
        return out

    def line(self) -> str:
        return " → ".join(self.parts())

    def lines(self) -> list[str]:
        """The chain, one line per output."""
        parts = self.parts()
        return [parts[0]] + [f"→ {p}" for p in parts[1:]]


def describe_drops(dropped: dict[str, int]) -> str:
    """``2 dropped: latitude beyond …`` / ``3 dropped: 1 null geometry, 2 latitude …`` / ``0 dropped``."""
    total = sum(dropped.values())
    items = [(k, v) for k, v in dropped.items() if v]
    if not items:
        return "0 dropped"
    if len(items) == 1:
        return f"{total:,} dropped: {items[0][0]}"
    return f"{total:,} dropped: " + ", ".join(f"{v:,} {k}" for k, v in items)


def _no_geometry(record: Record) -> int:
    return sum(record.dropped.get(k, 0) for k in NO_GEOMETRY_REASONS)


def read_chain(parquet_url: str, hex_url: str, pmtiles_url: str, counts: Counts | None = None) -> Chain:
    """Read the three records and build the chain; ``counts`` adds independent counts to compare.

    A missing output is shown as ``?`` (not a problem here: the checks of each output say so).
    """
    c = counts or Counts()
    problems: list[tuple[str, str]] = []
    gp = Stage("geoparquet", parquet_url)
    hx = Stage("hex", hex_url)
    pm = Stage("pmtiles", pmtiles_url)
    info: dict[str, Any] | None = None

    # source → GeoParquet
    try:
        info, rows = geoparquet_info(parquet_url)
        if info is None:
            gp.note = "no cng_datasets record: not written by convert"
        else:
            gp.record = geoparquet_record(info)
    except RecordError as exc:
        problems.append(("geoparquet", f"{parquet_url}: {exc}"))
    except Exception:  # noqa: BLE001 - absent or unreadable: the GeoParquet check says why
        gp.note = "missing or unreadable"
    if gp.record is not None:
        r = gp.record
        if (why := balance_problem(r)) is not None:
            problems.append(("geoparquet", f"{parquet_url}: convert {why}"))
        if c.source is not None and c.source != r.read:
            problems.append(
                (
                    "geoparquet",
                    f"{parquet_url}: the source holds {c.source:,} features (re-counted) but convert read {r.read:,}",
                )
            )
        # (an older file's feature_count is compared with its rows by the GeoParquet check)
        if r.recorded and c.geoparquet_rows is not None and c.geoparquet_rows != r.written:
            problems.append(
                (
                    "geoparquet",
                    f"{parquet_url}: {c.geoparquet_rows:,} rows but convert recorded writing {r.written:,}",
                )
            )
    gp_rows = gp.record.written if gp.record is not None else c.geoparquet_rows

    # GeoParquet → hex and GeoParquet → PMTiles
    try:
        hx.record = hex_record(hex_url, gp.record, info)
        if hx.record is None:
            hx.note = "not published"
    except RecordError as exc:
        problems.append(("hex", f"{hex_url}: {exc}"))
    try:
        pm.record = pmtiles_record(pmtiles_metadata(pmtiles_url))
        if pm.record is None:
            pm.note = "no accounting record in its metadata"
    except RecordError as exc:
        problems.append(("pmtiles", f"{pmtiles_url}: {exc}"))
    except Exception:  # noqa: BLE001 - absent or unreadable: the PMTiles check says why
        pm.note = "missing or unreadable"
    for stage, counted in ((hx, c.hex_features), (pm, c.pmtiles_features)):
        _check_branch(stage, counted, gp_rows, c, problems)
    return Chain(gp.record.read if gp.record is not None else c.source, [gp, hx, pm], problems)


def _check_branch(
    stage: Stage, counted: int | None, gp_rows: int | None, c: Counts, problems: list[tuple[str, str]]
) -> None:
    """The differences of one output read from the GeoParquet that no recorded reason explains."""
    name, url, r = stage.name, stage.url, stage.record
    where = "in the tiles of the maximum zoom" if name == "pmtiles" else "in the partitions"
    if r is None:
        if stage.note.startswith("no accounting") and counted is not None and gp_rows is not None:
            with_geometry = gp_rows - (c.no_geometry or 0)
            if counted != with_geometry:
                problems.append(
                    (
                        name,
                        f"{url}: {counted:,} features {where}, the GeoParquet has {with_geometry:,} with a geometry, "
                        "and no recorded reason explains the difference (written without accounting)",
                    )
                )
        return
    if (why := balance_problem(r)) is not None:
        problems.append((name, f"{url}: {name} {why}"))
    if gp_rows is not None and r.read != gp_rows:
        problems.append((name, f"{url}: {name} read {r.read:,} features but the GeoParquet has {gp_rows:,} rows"))
    if counted is not None and counted != r.written:
        problems.append((name, f"{url}: {counted:,} features {where} (counted) but {name} recorded {r.written:,}"))
    if c.no_geometry is not None and _no_geometry(r) != c.no_geometry:
        problems.append(
            (
                name,
                f"{url}: {name} recorded {_no_geometry(r):,} feature(s) without a geometry, "
                f"the GeoParquet has {c.no_geometry:,}",
            )
        )
    if name == "pmtiles" and c.beyond_mercator is not None and r.dropped.get(REASON_LATITUDE, 0) != c.beyond_mercator:
        problems.append(
            (
                name,
                f"{url}: pmtiles recorded {r.dropped.get(REASON_LATITUDE, 0):,} feature(s) {REASON_LATITUDE}, "
                f"the GeoParquet has {c.beyond_mercator:,}",
            )
        )

"""GeoParquet checks of ``cng-datasets validate`` (see the package docstring)."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from cng_datasets import contract, provenance, storage
from cng_datasets.accounting import WEB_MERCATOR_MAX_LAT
from cng_datasets.errors import RecordError, first_line
from cng_datasets.validate.common import _Problems

GEOMETRY_TYPES = {
    "Point",
    "LineString",
    "Polygon",
    "MultiPoint",
    "MultiLineString",
    "MultiPolygon",
    "GeometryCollection",
}
_TYPE_IDS = {
    0: "Point",
    1: "LineString",
    2: "LinearRing",
    3: "Polygon",
    4: "MultiPoint",
    5: "MultiLineString",
    6: "MultiPolygon",
    7: "GeometryCollection",
}


def _is_lonlat(meta: dict[str, Any]) -> bool:
    """Whether the geometry column's CRS is lon/lat degrees (absent or null: taken as such)."""
    crs = meta.get("crs")
    if crs is None:
        return True
    try:
        import pyproj

        from cng_datasets.geometry import is_lonlat_crs84

        return bool(is_lonlat_crs84(pyproj.CRS.from_user_input(crs)))
    except Exception:  # noqa: BLE001 - an unreadable CRS is reported by the CRS check
        return False


def _type_name(t: str) -> str:
    return t[:-2] if t.endswith(" Z") else t


def check_geoparquet(url: str) -> tuple[list[str], dict[str, Any]]:
    """Problems of the GeoParquet file at ``url`` (empty when valid) and what was found."""
    problems = _Problems()
    stats: dict[str, Any] = {}
    try:
        pf = storage.open_parquet(url)
    except Exception as exc:  # noqa: BLE001 - any reader error is the finding
        return [f"{url}: not a readable Parquet file ({first_line(exc)})"], stats
    kv = pf.metadata.metadata or {}
    names = pf.schema_arrow.names
    stats["rows"] = pf.metadata.num_rows
    try:
        stats["provenance"] = provenance.summary(provenance.of_parquet(kv))
    except RecordError as exc:
        problems.add(f"{url}: {exc}")
    try:
        geo = contract.footer_json(kv, contract.GEO_KEY)
    except RecordError as exc:
        return [f"{url}: {exc}"], stats
    if geo is None:
        return [f"{url}: no 'geo' key in the Parquet metadata (not GeoParquet)"], stats
    version = str(geo.get("version", ""))
    if not re.fullmatch(r"1\.1\.\d+(-[\w.]+)?", version):
        problems.add(f"{url}: geo version is {version!r}, expected 1.1.x")
    primary = geo.get("primary_column")
    columns = geo.get("columns") or {}
    if not primary or primary not in columns:
        return problems.items + [f"{url}: primary_column {primary!r} is not described in geo.columns"], stats
    if primary not in names:
        return problems.items + [f"{url}: primary_column {primary!r} is not a column of the file"], stats
    meta = columns[primary]
    declared, decl_bbox = _check_column_metadata(url, primary, meta, problems)
    cover = (meta.get("covering") or {}).get("bbox")
    cover_col = _covering_column(url, pf, primary, cover, problems)

    # Data: stream row groups; bounded memory.
    scan = _GeometryScan()
    read_cols = [primary] + ([cover_col] if cover_col else [])
    for batch in pf.iter_batches(batch_size=65536, columns=read_cols):
        scan.add(url, batch, cover if cover_col else None, cover_col, problems)
    stats.update(geometries=scan.non_null, types=sorted(scan.types), no_geometry=scan.rows - scan.with_geometry)
    if _is_lonlat(meta):
        stats["beyond_mercator"] = scan.beyond
    _check_declared_against_data(url, declared, decl_bbox, scan, problems)
    try:
        info = contract.dataset_metadata(kv)
        if info:
            expected = int(info["feature_count"])
            if expected != pf.metadata.num_rows:
                problems.add(f"{url}: {pf.metadata.num_rows} rows but cng_datasets metadata says {expected} features")
    except (RecordError, KeyError, ValueError, TypeError):
        problems.add(f"{url}: cng_datasets metadata is not valid JSON with a feature_count")
    return problems.items, stats


def _check_column_metadata(
    url: str, primary: str, meta: dict[str, Any], problems: _Problems
) -> tuple[list[Any], list[Any] | None]:
    """The geometry column's ``geo`` entry: encoding, types, CRS, edges, bbox. Returns the declared
    geometry types and bbox (None when absent or malformed)."""
    if meta.get("encoding") != "WKB":
        problems.add(f"{url}: encoding of {primary!r} is {meta.get('encoding')!r}, expected 'WKB'")
    declared = meta.get("geometry_types")
    if not isinstance(declared, list):
        problems.add(f"{url}: geometry_types of {primary!r} is missing or not a list")
        declared = []
    bad = [t for t in declared if _type_name(str(t)) not in GEOMETRY_TYPES]
    if bad:
        problems.add(f"{url}: geometry_types has invalid entries {bad}")
    crs = meta.get("crs", None)
    if crs is not None and not (isinstance(crs, dict) and "type" in crs):
        problems.add(f"{url}: crs of {primary!r} must be omitted, null or a PROJJSON object, got {str(crs)[:60]!r}")
    if meta.get("edges", "planar") not in ("planar", "spherical"):
        problems.add(f"{url}: edges is {meta.get('edges')!r}, expected planar or spherical")
    decl_bbox = meta.get("bbox")
    if decl_bbox is not None and (not isinstance(decl_bbox, list) or len(decl_bbox) not in (4, 6)):
        problems.add(f"{url}: bbox must be a list of 4 or 6 numbers, got {decl_bbox!r}")
        decl_bbox = None
    return declared, decl_bbox


def _covering_column(url: str, pf: Any, primary: str, cover: Any, problems: _Problems) -> str | None:
    """The bbox covering column the metadata declares, when it is a struct of float fields."""
    import pyarrow as pa

    if not cover:
        problems.add(f"{url}: no covering.bbox declared for {primary!r}")
        return None
    paths = [cover.get(k) for k in ("xmin", "ymin", "xmax", "ymax")]
    if not all(isinstance(p, list) and len(p) == 2 for p in paths) or len({p[0] for p in paths}) != 1:
        problems.add(f"{url}: covering.bbox must give [column, field] for xmin, ymin, xmax, ymax, got {cover!r}")
        return None
    cover_col: str = paths[0][0]
    fields = [p[1] for p in paths]
    if cover_col not in pf.schema_arrow.names:
        problems.add(f"{url}: covering column {cover_col!r} is not a column of the file")
        return None
    t = pf.schema_arrow.field(cover_col).type
    if (
        not pa.types.is_struct(t)
        or any(t.get_field_index(f) < 0 for f in fields)
        or any(not pa.types.is_floating(t.field(f).type) for f in fields if t.get_field_index(f) >= 0)
    ):
        problems.add(f"{url}: covering column {cover_col!r} must be a struct of float fields {fields}")
        return None
    return cover_col


class _GeometryScan:
    """What the geometry column holds, batch by batch: types, total bounds, counts."""

    def __init__(self) -> None:
        self.types: set[str] = set()
        self.total = [math.inf, math.inf, -math.inf, -math.inf]
        self.non_null = 0
        self.with_geometry = 0  # non-null and non-empty
        self.beyond = 0  # wholly beyond Web Mercator's latitudes
        self.rows = 0

    def add(self, url: str, batch: Any, cover: Any, cover_col: str | None, problems: _Problems) -> None:
        """Scan one batch (geometry first, the covering column second when there is one)."""
        import pyarrow.compute as pc
        import shapely

        row0 = self.rows
        self.rows += len(batch)
        wkb = batch.column(0)
        valid = np.asarray(pc.is_valid(wkb).to_numpy(zero_copy_only=False), dtype=bool)
        try:
            geoms = shapely.from_wkb(np.asarray(wkb.to_numpy(zero_copy_only=False), dtype=object))
        except Exception as exc:  # noqa: BLE001 - any WKB decoder error is the finding
            problems.add(f"{url}: rows {row0}..{row0 + len(batch) - 1}: geometry is not valid WKB ({exc})")
            return
        present = valid & ~shapely.is_missing(geoms)
        self.non_null += int(present.sum())
        g = geoms[present]
        self.types.update(_TYPE_IDS[int(i)] for i in np.unique(shapely.get_type_id(g)))
        if len(g):
            b = shapely.bounds(g)
            nonempty = ~np.isnan(b[:, 0])
            self.with_geometry += int(nonempty.sum())
            if nonempty.any():
                bb = b[nonempty]
                self.beyond += int(((bb[:, 1] > WEB_MERCATOR_MAX_LAT) | (bb[:, 3] < -WEB_MERCATOR_MAX_LAT)).sum())
                t = self.total
                self.total = [
                    min(t[0], bb[:, 0].min()),
                    min(t[1], bb[:, 1].min()),
                    max(t[2], bb[:, 2].max()),
                    max(t[3], bb[:, 3].max()),
                ]
        if cover_col and cover:
            _check_covering_rows(url, batch.column(1), cover, cover_col, geoms, present, row0, problems)


def _check_covering_rows(
    url: str, st: Any, cover: Any, cover_col: str, geoms: Any, present: Any, row0: int, problems: _Problems
) -> None:
    """The covering must contain each row's geometry and be tight to float32 precision."""
    import pyarrow.compute as pc
    import shapely

    fields = [cover[k][1] for k in ("xmin", "ymin", "xmax", "ymax")]
    cb = np.column_stack(
        [
            np.asarray(
                pc.fill_null(pc.struct_field(st, [st.type.get_field_index(f)]), np.nan).to_numpy(zero_copy_only=False),
                dtype=float,
            )
            for f in fields
        ]
    )
    gb = np.full((len(st), 4), np.nan)
    gb[present] = shapely.bounds(geoms[present])
    check = present & ~np.isnan(gb[:, 0])
    tol = 1e-6 * np.maximum(1.0, np.abs(gb))
    low_ok = (cb[:, :2] <= gb[:, :2] + 1e-9) & (cb[:, :2] >= gb[:, :2] - tol[:, :2])
    high_ok = (cb[:, 2:] >= gb[:, 2:] - 1e-9) & (cb[:, 2:] <= gb[:, 2:] + tol[:, 2:])
    bad_rows = np.flatnonzero(check & ~(low_ok.all(axis=1) & high_ok.all(axis=1)))
    if len(bad_rows):
        r = int(bad_rows[0])
        problems.add(
            f"{url}: covering column {cover_col!r} disagrees with the geometry bounds in "
            f"{len(bad_rows)} row(s); first row {row0 + r}: {cb[r].tolist()} vs {gb[r].tolist()}"
        )


def _check_declared_against_data(
    url: str, declared: list[Any], decl_bbox: list[Any] | None, scan: _GeometryScan, problems: _Problems
) -> None:
    """Geometry types found must be declared; the declared bbox must contain the data."""
    if declared:
        decl = {_type_name(str(t)) for t in declared}
        undeclared = scan.types - decl
        if undeclared:
            problems.add(f"{url}: geometry types {sorted(undeclared)} found but geometry_types declares {sorted(decl)}")
    total = scan.total
    if decl_bbox is not None and scan.non_null and math.isfinite(total[0]):
        d = decl_bbox if len(decl_bbox) == 4 else [decl_bbox[0], decl_bbox[1], decl_bbox[3], decl_bbox[4]]
        eps = 1e-6
        if d[0] > total[0] + eps or d[1] > total[1] + eps or d[2] < total[2] - eps or d[3] < total[3] - eps:
            problems.add(f"{url}: declared bbox {d} does not contain the data's bounds {[round(v, 6) for v in total]}")

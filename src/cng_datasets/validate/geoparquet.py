"""GeoParquet checks of ``cng-datasets validate`` (see the package docstring)."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from cng_datasets import contract, storage
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
    import pyarrow as pa
    import pyarrow.compute as pc
    import shapely

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

    cover = (meta.get("covering") or {}).get("bbox")
    cover_col: str | None = None
    if not cover:
        problems.add(f"{url}: no covering.bbox declared for {primary!r}")
    else:
        paths = [cover.get(k) for k in ("xmin", "ymin", "xmax", "ymax")]
        if not all(isinstance(p, list) and len(p) == 2 for p in paths) or len({p[0] for p in paths}) != 1:
            problems.add(f"{url}: covering.bbox must give [column, field] for xmin, ymin, xmax, ymax, got {cover!r}")
        else:
            cover_col = paths[0][0]
            fields = [p[1] for p in paths]
            if cover_col not in names:
                problems.add(f"{url}: covering column {cover_col!r} is not a column of the file")
                cover_col = None
            else:
                t = pf.schema_arrow.field(cover_col).type
                if (
                    not pa.types.is_struct(t)
                    or any(t.get_field_index(f) < 0 for f in fields)
                    or any(not pa.types.is_floating(t.field(f).type) for f in fields if t.get_field_index(f) >= 0)
                ):
                    problems.add(f"{url}: covering column {cover_col!r} must be a struct of float fields {fields}")
                    cover_col = None

    # Data: stream row groups; bounded memory.
    found_types: set[str] = set()
    total = [math.inf, math.inf, -math.inf, -math.inf]
    non_null = 0
    with_geometry = 0  # non-null and non-empty
    beyond = 0  # wholly beyond Web Mercator's latitudes (counted for lon/lat data only)
    lonlat = _is_lonlat(meta)
    read_cols = [primary] + ([cover_col] if cover_col else [])
    row0 = 0
    for batch in pf.iter_batches(batch_size=65536, columns=read_cols):
        wkb = batch.column(0)
        valid = np.asarray(pc.is_valid(wkb).to_numpy(zero_copy_only=False), dtype=bool)
        try:
            geoms = shapely.from_wkb(np.asarray(wkb.to_numpy(zero_copy_only=False), dtype=object))
        except Exception as exc:  # noqa: BLE001 - any WKB decoder error is the finding
            problems.add(f"{url}: rows {row0}..{row0 + len(batch) - 1}: geometry is not valid WKB ({exc})")
            row0 += len(batch)
            continue
        present = valid & ~shapely.is_missing(geoms)
        non_null += int(present.sum())
        g = geoms[present]
        found_types.update(_TYPE_IDS[int(i)] for i in np.unique(shapely.get_type_id(g)))
        if len(g):
            b = shapely.bounds(g)
            nonempty = ~np.isnan(b[:, 0])
            with_geometry += int(nonempty.sum())
            if nonempty.any():
                bb = b[nonempty]
                beyond += int(((bb[:, 1] > WEB_MERCATOR_MAX_LAT) | (bb[:, 3] < -WEB_MERCATOR_MAX_LAT)).sum())
                total = [
                    min(total[0], bb[:, 0].min()),
                    min(total[1], bb[:, 1].min()),
                    max(total[2], bb[:, 2].max()),
                    max(total[3], bb[:, 3].max()),
                ]
        if cover_col and cover:
            st = batch.column(1)
            fields = [cover[k][1] for k in ("xmin", "ymin", "xmax", "ymax")]
            cb = np.column_stack(
                [
                    np.asarray(
                        pc.fill_null(pc.struct_field(st, [st.type.get_field_index(f)]), np.nan).to_numpy(
                            zero_copy_only=False
                        ),
                        dtype=float,
                    )
                    for f in fields
                ]
            )
            gb = np.full((len(batch), 4), np.nan)
            gb[present] = shapely.bounds(geoms[present])
            check = present & ~np.isnan(gb[:, 0])
            tol = 1e-6 * np.maximum(1.0, np.abs(gb))
            # the covering must contain the geometry and be tight to float32 precision
            low_ok = (cb[:, :2] <= gb[:, :2] + 1e-9) & (cb[:, :2] >= gb[:, :2] - tol[:, :2])
            high_ok = (cb[:, 2:] >= gb[:, 2:] - 1e-9) & (cb[:, 2:] <= gb[:, 2:] + tol[:, 2:])
            bad_rows = np.flatnonzero(check & ~(low_ok.all(axis=1) & high_ok.all(axis=1)))
            if len(bad_rows):
                r = int(bad_rows[0])
                problems.add(
                    f"{url}: covering column {cover_col!r} disagrees with the geometry bounds in "
                    f"{len(bad_rows)} row(s); first row {row0 + r}: {cb[r].tolist()} vs {gb[r].tolist()}"
                )
        row0 += len(batch)
    stats.update(geometries=non_null, types=sorted(found_types), no_geometry=row0 - with_geometry)
    if lonlat:
        stats["beyond_mercator"] = beyond
    if declared:
        decl = {_type_name(str(t)) for t in declared}
        undeclared = found_types - decl
        if undeclared:
            problems.add(f"{url}: geometry types {sorted(undeclared)} found but geometry_types declares {sorted(decl)}")
    if decl_bbox is not None and non_null and math.isfinite(total[0]):
        d = decl_bbox if len(decl_bbox) == 4 else [decl_bbox[0], decl_bbox[1], decl_bbox[3], decl_bbox[4]]
        eps = 1e-6
        if d[0] > total[0] + eps or d[1] > total[1] + eps or d[2] < total[2] - eps or d[3] < total[3] - eps:
            problems.add(f"{url}: declared bbox {d} does not contain the data's bounds {[round(v, 6) for v in total]}")
    try:
        info = contract.dataset_metadata(kv)
        if info:
            expected = int(info["feature_count"])
            if expected != pf.metadata.num_rows:
                problems.add(f"{url}: {pf.metadata.num_rows} rows but cng_datasets metadata says {expected} features")
    except (RecordError, KeyError, ValueError, TypeError):
        problems.add(f"{url}: cng_datasets metadata is not valid JSON with a feature_count")
    return problems.items, stats

"""Small hostile sources written in the tests: GeoPackages through pyogrio.write_arrow with
hand-made ISO WKB (curves, M values, which shapely cannot write), CSV with WKT, TopoJSON text."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path
from typing import Any

import pyarrow as pa
import shapely

# ISO WKB type codes
CIRCULARSTRING, COMPOUNDCURVE, CURVEPOLYGON = 8, 9, 10


def wkb_circularstring(points: list[tuple[float, float]]) -> bytes:
    return struct.pack("<BII", 1, CIRCULARSTRING, len(points)) + b"".join(struct.pack("<dd", *p) for p in points)


def wkb_curvepolygon(rings: list[bytes]) -> bytes:
    return struct.pack("<BII", 1, CURVEPOLYGON, len(rings)) + b"".join(rings)


def wkb_polygon_m(ring: list[tuple[float, float, float]]) -> bytes:
    """ISO WKB Polygon M (type 2003): x, y, m."""
    return struct.pack("<BIII", 1, 2003, 1, len(ring)) + b"".join(struct.pack("<ddd", *p) for p in ring)


def wkb_point_zm(x: float, y: float, z: float, m: float) -> bytes:
    return struct.pack("<BIdddd", 1, 3001, x, y, z, m)


def write_gpkg(
    path: Path,
    geometries: list[Any],
    attrs: dict[str, list[Any]] | None = None,
    crs: str | None = "EPSG:4326",
    geometry_type: str = "Unknown",
    layer: str | None = None,
) -> Path:
    """A GeoPackage layer from shapely geometries or raw WKB bytes (None for a null geometry)."""
    import pyogrio

    wkb = [g if isinstance(g, bytes) or g is None else shapely.to_wkb(g, flavor="iso") for g in geometries]
    cols = {name: pa.array(values) for name, values in (attrs or {}).items()}
    cols["geometry"] = pa.array(wkb, type=pa.binary())
    kwargs: dict[str, Any] = {"geometry_name": "geometry", "geometry_type": geometry_type}
    if crs is not None:
        kwargs["crs"] = crs
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided", UserWarning)  # no CRS on purpose
        pyogrio.write_arrow(
            pa.table(cols), str(path), driver="GPKG", layer=layer or path.stem, append=path.exists(), **kwargs
        )
    return path


def write_attribute_table(path: Path, attrs: dict[str, list[Any]], layer: str) -> Path:
    """A non-spatial table in a GeoPackage (an "attributes" layer without geometry)."""
    import pyogrio

    pyogrio.write_arrow(pa.table(attrs), str(path), driver="GPKG", layer=layer, append=path.exists())
    return path


def topojson_box(path: Path, ring: list[list[float]], name: str) -> Path:
    """A TopoJSON file with one polygon drawn exactly as ``ring`` (no quantization)."""
    import json

    topo = {
        "type": "Topology",
        "objects": {
            "shapes": {
                "type": "GeometryCollection",
                "geometries": [
                    {"type": "Polygon", "arcs": [[0]], "properties": {"name": name}},
                ],
            }
        },
        "arcs": [ring],
    }
    path.write_text(json.dumps(topo), encoding="utf-8")
    return path

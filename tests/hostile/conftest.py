"""Helpers of the hostile corpus: run the real CLI on a small generated source and check what it
left behind, either a correct output (checked against independent references: shapely, h3-py,
the PMTiles reader and an MVT decoder) or one clear error line and nothing at the destination."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely

DATASET = "case"


@dataclass
class Outcome:
    """What one CLI call did: its process and where it wrote."""

    proc: Any
    out: Path
    dataset: str = DATASET

    @property
    def parquet(self) -> Path:
        return self.out / f"{self.dataset}.parquet"

    @property
    def pmtiles(self) -> Path:
        return self.out / f"{self.dataset}.pmtiles"

    @property
    def hex(self) -> Path:
        return self.out / self.dataset / "hex"

    def ok(self) -> None:
        """Exit 0, no traceback."""
        p = self.proc
        assert "Traceback" not in p.stderr, p.stderr
        assert p.returncode == 0, f"exit {p.returncode}\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"

    def one_error(self, *words: str, code: int | None = None) -> str:
        """A non-zero exit with exactly one ``error:`` line, no traceback; returns that line."""
        p = self.proc
        assert "Traceback" not in p.stderr and "Traceback" not in p.stdout, p.stderr
        assert p.returncode != 0, f"exit 0\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
        if code is not None:
            assert p.returncode == code, p.stderr
        errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, p.stderr
        line = errors[0]
        for w in words:
            assert w.lower() in line.lower(), line
        return line

    def warnings(self) -> list[str]:
        return [ln for ln in self.proc.stderr.splitlines() if ln.startswith("warning:")]

    def nothing_written(self) -> None:
        """No output at all at the destination (a failure before any step published anything);
        the steps' logs (``_cng/logs``) are allowed."""
        files = [p for p in self.out.rglob("*") if p.is_file() and "logs" not in p.parts] if self.out.exists() else []
        assert not files, files

    def no_temp_files(self) -> None:
        """No temporary or partial file anywhere below the destination."""
        left = (
            [p for p in self.out.rglob("*") if ".tmp" in p.name or p.name.startswith(".cng-") or "_tmp" in p.parts]
            if self.out.exists()
            else []
        )
        assert not left, left

    # ---- outputs ---------------------------------------------------------------------

    def table(self) -> pa.Table:
        return pq.read_table(self.parquet)

    def geometries(self) -> dict[Any, Any]:
        """id → shapely geometry (None for null) of the GeoParquet."""
        t = self.table()
        ids = t.column(0).to_pylist()
        return dict(zip(ids, shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False)), strict=True))

    def hex_table(self) -> pa.Table:
        files = sorted(self.hex.rglob("*.parquet"))
        assert files, f"no hex partitions below {self.hex}"
        tables = []
        for f in files:  # as a hive reader sees them: h0 from the folder name, int64
            t = pq.read_table(f)
            h0 = int(f.parent.name.removeprefix("h0="))
            tables.append(t.append_column("h0", pa.array([h0] * t.num_rows, pa.int64())))
        return pa.concat_tables(tables, promote_options="default")

    def hex_cells(self, res: int) -> dict[Any, set[int]]:
        """id → set of cells at ``res`` of the hex output."""
        t = self.hex_table()
        out: dict[Any, set[int]] = {}
        for i, c in zip(t.column(0).to_pylist(), t.column(f"h{res}").to_pylist(), strict=True):
            out.setdefault(i, set()).add(int(c))
        return out

    def tile_features(self, z: int, lon: float, lat: float) -> list[dict[str, Any]]:
        """Decoded features of the PMTiles tile at zoom ``z`` that holds (lon, lat)."""
        return tile_features(self.pmtiles, z, lon, lat)

    def pmtiles_header(self) -> dict[str, Any]:
        from pmtiles.reader import MmapSource, Reader

        with open(self.pmtiles, "rb") as f:
            return dict(Reader(MmapSource(f)).header())


def run_case(
    cli_run,
    out: Path,
    source: Path | str,
    *extra: str,
    res: int = 3,
    dataset: str = DATASET,
    env: dict[str, str] | None = None,
) -> Outcome:
    """``cng-datasets run`` of one source into ``out``, then an Outcome to check."""
    proc = cli_run(
        "run",
        "--dataset",
        dataset,
        "--source-url",
        str(source),
        "--bucket",
        str(out),
        "--h3-resolution",
        str(res),
        *extra,
        env=env,
        timeout=300,
    )
    return Outcome(proc, out, dataset)


def validate_ok(cli_run, outcome: Outcome) -> None:
    proc = cli_run("validate", str(outcome.out), "--dataset", outcome.dataset)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---- independent references --------------------------------------------------------------


def tile_features(path: Path, z: int, lon: float, lat: float) -> list[dict[str, Any]]:
    import mapbox_vector_tile
    from pmtiles.reader import MmapSource, Reader

    n = 2**z
    x = min(n - 1, int((lon + 180.0) / 360.0 * n))
    lat_r = math.radians(max(-85.05, min(85.05, lat)))
    y = min(n - 1, int((1.0 - math.asinh(math.tan(lat_r)) / math.pi) / 2.0 * n))
    with open(path, "rb") as f:
        data = Reader(MmapSource(f)).get(z, x, y)
    if not data:
        return []
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    layers = mapbox_vector_tile.decode(data)
    return [feat for layer in layers.values() for feat in layer["features"]]


def long_edges(geom: Any) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Edges longer than 180° of longitude, except edges along a pole (both ends at lat ±90)."""
    if geom is None or geom.is_empty:
        return []
    bad = []
    for part in shapely.get_parts(geom):
        rings = [part.exterior, *part.interiors] if part.geom_type == "Polygon" else [part]
        for ring in rings:
            xy = np.asarray(shapely.get_coordinates(ring))
            for a, b in zip(xy[:-1], xy[1:], strict=True):
                if abs(b[0] - a[0]) > 180.0 and not (abs(a[1]) == 90.0 and a[1] == b[1]):
                    bad.append((tuple(a), tuple(b)))
    return bad


def h3_reference(geom: Any, res: int) -> set[int]:
    """Centre-containment cells of a lon/lat geometry by h3-py (each polygon part < 180° wide);
    points give their cell."""
    import h3

    out: set[int] = set()
    for part in shapely.get_parts(geom):
        if part.geom_type == "Polygon":
            shape = h3.LatLngPoly(
                [(y, x) for x, y in part.exterior.coords[:-1]],
                *[[(y, x) for x, y in r.coords[:-1]] for r in part.interiors],
            )
            out.update(h3.str_to_int(c) for c in h3.polygon_to_cells(shape, res))
        elif part.geom_type == "Point":
            out.add(h3.str_to_int(h3.latlng_to_cell(part.y, part.x, res)))
        else:
            raise AssertionError(f"no reference for {part.geom_type}")
    return out


def all_cells(res: int) -> np.ndarray:
    """Every H3 cell at ``res`` (use a small res) and their centres: (cells, lng, lat)."""
    import h3

    cells = [c for base in h3.get_res0_cells() for c in h3.cell_to_children(base, res)]
    lat, lng = np.array([h3.cell_to_latlng(c) for c in cells]).T
    return np.array([h3.str_to_int(c) for c in cells], dtype=np.uint64), lng, lat


def write_geojson(path: Path, features: list[dict[str, Any]], **top: Any) -> Path:
    path.write_text(json.dumps({"type": "FeatureCollection", **top, "features": features}), encoding="utf-8")
    return path


def feature(geom: Any, **props: Any) -> dict[str, Any]:
    geometry = geom
    if geometry is not None and not isinstance(geometry, dict):
        geometry = json.loads(shapely.to_geojson(geometry))
    return {"type": "Feature", "properties": props, "geometry": geometry}

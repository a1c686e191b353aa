"""What a dataset will cost, from a sample of its features: hex rows, a maximum tile zoom, bytes.

Three users: the plan (hex chunks sized by estimated work, not by a fixed number of features),
the pmtiles step (its default maximum zoom, chosen from the data) and ``cng-datasets plan``
(the estimate before anything runs). No estimate ever decides what is written: the last hex
chunk always reads to the end of the file, and the zoom only sets how much detail tiles keep.

Sampling: a GeoParquet is sampled in up to four evenly spaced row groups, a few rows spread
through each (a spread subsample); any other source through the same reader as ``convert``
(:func:`cng_datasets.sources.open_source`), its first features (a contiguous sample: no format
lets every driver seek cheaply, and a remote file is then read only as far as needed).

Hex rows of a feature (one row per (feature, cell)), from its geodesic area ``A``, perimeter or
length ``P``, and the resolution's average cell area ``a`` and edge length ``e``:

==========  =================================================================================
points      the number of distinct points
lines       ``P / (1.5 e) + 1``
polygons    ``center``: ``max(1, A / a)`` (a polygon smaller than a cell gets the cell of a point
            on it); ``overlap``: ``A / a + P / (1.5 e) + 1``; ``full``: ``max(1, A / a - P / (1.5 e))``
==========  =================================================================================

The maximum zoom (see :func:`choose_max_zoom`) is the zoom at which the typical spacing between
features, or the typical length of a segment within them, spans 16 units of a 4096-unit tile
(tippecanoe's ``-zg`` reasons the same way), kept within a floor, a ceiling of H3 resolution + 3,
and the zoom at which the tiles would exceed a budget.
"""

from __future__ import annotations

import functools
import math
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cng_datasets import contract, storage

if TYPE_CHECKING:
    from cng_datasets.config import WorkflowConfig
    from cng_datasets.plan import Plan

#: Features a sample holds.
SAMPLE_SIZE = 2000
#: Row groups of a GeoParquet a sample reads.
SAMPLE_ROW_GROUPS = 4
#: Rows of a row group read at a time while sampling it.
SAMPLE_BATCH = 1024
#: WKB a GeoParquet sample holds at most, about (fewer features where they are big).
SAMPLE_BYTES = 32 << 20
#: A feature's span in tile units (of 4096) that the maximum zoom is chosen for.
SPAN_UNITS = 16.0
TILE_EXTENT = 4096
#: Lowest maximum zoom chosen from the data (points of a world-wide dataset still land within
#: ~150 m), unless the ceiling is lower.
ZOOM_FLOOR = 6
#: Highest maximum zoom chosen from the data.
ZOOM_CEILING = 16
#: Tiles at the maximum zoom that the chosen zoom may need at most (~ a few minutes of tippecanoe
#: on 2 cores: 573,861 tiles of the world's countries at z10 took 104 s).
TILE_BUDGET = 1_000_000


@dataclass
class FeatureSample:
    """Geometries (shapely, lon/lat; ``None`` where absent) of ``len(geometries)`` of ``total``
    features; ``contiguous`` when they are consecutive features (the first ones of the source)
    rather than spread through it."""

    total: int
    geometries: np.ndarray
    contiguous: bool
    wkb_bytes: int = 0  # bytes of the sampled WKB (sizes of outputs scale with it)
    attribute_bytes: float = 0.0  # uncompressed attribute bytes per feature, roughly
    attribute_columns: int = 0

    @property
    def size(self) -> int:
        return int(len(self.geometries))

    @functools.cached_property
    def bounds(self) -> np.ndarray:
        """``(xmin, ymin, xmax, ymax)`` of each geometry that is present and not empty."""
        import shapely

        present = ~shapely.is_missing(self.geometries) & ~shapely.is_empty(self.geometries)
        return np.asarray(shapely.bounds(self.geometries[present])).reshape(-1, 4)


# ---- sampling ----------------------------------------------------------------------------------


def _to_lonlat(geoms: np.ndarray, crs: Any) -> np.ndarray:
    import shapely

    from cng_datasets.geometry import is_lonlat_crs84

    if crs is None or is_lonlat_crs84(crs):
        return geoms
    import pyproj

    transformer = pyproj.Transformer.from_crs(crs, "OGC:CRS84", always_xy=True)
    return np.asarray(shapely.transform(geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1]))))


def sample_geoparquet(url: str, size: int = SAMPLE_SIZE, pfile: Any = None) -> FeatureSample:
    """A spread sample of a GeoParquet (``pfile``: the file already open, else opened here)."""
    import shapely

    own = pfile is None
    pf = storage.open_parquet(url) if own else pfile
    try:
        meta = pf.schema_arrow.metadata or {}
        geo = contract.footer_json(meta, contract.GEO_KEY) or {}
        column = contract.geometry_column_of(geo)
        crs = ((geo.get("columns") or {}).get(column) or {}).get("crs")
        md = pf.metadata
        total = md.num_rows
        pf_names = list(pf.schema_arrow.names)
        groups = [i for i in range(md.num_row_groups) if md.row_group(i).num_rows > 0]
        if len(groups) > SAMPLE_ROW_GROUPS:
            groups = [groups[round(k * (len(groups) - 1) / (SAMPLE_ROW_GROUPS - 1))] for k in range(SAMPLE_ROW_GROUPS)]
        per_group = max(1, size // max(1, len(groups)))
        wkbs: list[Any] = []
        attr_bytes = 0.0
        for i in groups:
            rg = md.row_group(i)
            n = rg.num_rows
            geometry_bytes = sum(
                rg.column(j).total_uncompressed_size
                for j in range(rg.num_columns)
                if rg.column(j).path_in_schema.split(".")[0] == column
            )
            # fewer rows where they are big, so that the sample's WKB stays near SAMPLE_BYTES
            fit = int(SAMPLE_BYTES / len(groups) * n / max(1, geometry_bytes))
            take = np.unique(np.linspace(0, n - 1, max(1, min(n, per_group, fit))).astype(np.int64))
            # batch by batch: a row group of big polygons never sits in memory at once (the
            # orchestrator samples in a pod of 256 MiB)
            seen = 0
            for batch in pf.iter_batches(batch_size=SAMPLE_BATCH, row_groups=[i], columns=[column]):
                lo, hi = np.searchsorted(take, [seen, seen + batch.num_rows])
                if hi > lo:
                    wkbs.extend(batch.column(0).take(take[lo:hi] - seen).to_pylist())
                seen += batch.num_rows
            attr_bytes += (rg.total_byte_size - geometry_bytes) / max(1, n)
        sampled_rows = sum(md.row_group(i).num_rows for i in groups)
    finally:
        if own:
            pf.close()
    geoms = shapely.from_wkb(np.array(wkbs, dtype=object))
    if crs:
        import pyproj

        geoms = _to_lonlat(geoms, pyproj.CRS.from_user_input(crs))
    return FeatureSample(
        total=int(total),
        geometries=geoms,
        contiguous=len(wkbs) >= sampled_rows,
        wkb_bytes=sum(len(w) for w in wkbs if w),
        attribute_bytes=attr_bytes / max(1, len(groups)),
        attribute_columns=max(0, len(pf_names) - 2),  # all but the geometry and its bbox covering
    )


def sample_source(url: str, options: Any, total: int, size: int = SAMPLE_SIZE) -> FeatureSample:
    """The first ``size`` features of any source ``convert`` reads (``options``: its
    :class:`~cng_datasets.sources.ReadOptions`); ``total``: its feature count."""
    import shapely

    from cng_datasets.sources import is_parquet, open_source

    if is_parquet(url):
        sample = sample_geoparquet(url, size)
        sample.total = total
        return sample
    wkbs: list[Any] = []
    attr_bytes = 0
    with ExitStack() as stack:
        src = open_source(url, options, stack)
        crs = src.crs
        columns = len(src.schema.names)
        for batch in src.batches:
            wkbs.extend(batch.wkb[: size - len(wkbs)].tolist())
            attr_bytes += batch.attrs.nbytes
            if len(wkbs) >= size:
                break
    geoms = _to_lonlat(shapely.from_wkb(np.array(wkbs, dtype=object)), crs)
    return FeatureSample(
        total=int(total),
        geometries=geoms,
        contiguous=True,
        wkb_bytes=sum(len(w) for w in wkbs if w is not None),
        attribute_bytes=attr_bytes / max(1, len(wkbs)),
        attribute_columns=columns,
    )


# ---- hex rows ----------------------------------------------------------------------------------


def _measures(geoms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(kind 0 point / 1 line / 2 polygon / -1 none, points, geodesic area m², perimeter or length m)."""
    import pyproj
    import shapely

    geod = pyproj.Geod(ellps="WGS84")
    n = len(geoms)
    kind = np.full(n, -1, dtype=np.int8)
    points = np.zeros(n)
    area = np.zeros(n)
    length = np.zeros(n)
    for i, g in enumerate(geoms):
        if g is None or shapely.is_empty(g):
            continue
        dim = shapely.get_dimensions(g)
        if dim == 0:
            kind[i] = 0
            points[i] = len(np.unique(shapely.get_coordinates(g), axis=0))
            continue
        kind[i] = 1 if dim == 1 else 2
        a, p = geod.geometry_area_perimeter(g)
        area[i] = abs(a)
        length[i] = p
    return kind, points, area, length


def cells_per_feature(geoms: np.ndarray, resolution: int, containment: str) -> np.ndarray:
    """The estimated hex rows of each geometry (see the module's table)."""
    import h3

    cell_area = h3.average_hexagon_area(resolution, unit="m^2")
    cell_across = 1.5 * h3.average_hexagon_edge_length(resolution, unit="m")
    kind, points, area, length = _measures(geoms)
    rows = np.zeros(len(geoms))
    rows[kind == 0] = points[kind == 0]
    rows[kind == 1] = length[kind == 1] / cell_across + 1
    poly = kind == 2
    inner = area[poly] / cell_area
    edge = length[poly] / cell_across
    if containment == "overlap":
        rows[poly] = inner + edge + 1
    elif containment == "full":
        rows[poly] = np.maximum(1.0, inner - edge)
    else:
        rows[poly] = np.maximum(1.0, inner)
    return rows


def touched_base_cells(sample: FeatureSample) -> int:
    """The H3 base cells (the hex output's h0 partitions) the sample touches: those of each
    geometry's bounding box corners and centre (a lower bound, at most
    :data:`~cng_datasets.contract.BASE_CELL_COUNT`)."""
    from cng_datasets.h3cells import point_cells

    b = sample.bounds
    if not len(b):
        return 0
    xs = np.concatenate([b[:, 0], b[:, 2], b[:, 0], b[:, 2], (b[:, 0] + b[:, 2]) / 2])
    ys = np.concatenate([b[:, 1], b[:, 1], b[:, 3], b[:, 3], (b[:, 1] + b[:, 3]) / 2])
    return len(np.unique(point_cells(np.clip(xs, -180, 180), np.clip(ys, -90, 90), 0)))


def hex_rows(sample: FeatureSample, resolution: int, containment: str) -> int:
    """Estimated hex rows of the whole dataset."""
    if sample.size == 0:
        return 0
    per = cells_per_feature(sample.geometries, resolution, containment)
    return int(round(float(per.mean()) * sample.total))


# ---- maximum zoom ------------------------------------------------------------------------------


def _mercator(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """lon/lat → Web Mercator as fractions of the world's width (0..1)."""
    lat = np.clip(lat, -85.0511, 85.0511)
    x = (lon + 180.0) / 360.0
    y = 0.5 - np.log(np.tan(np.pi / 4 + np.radians(lat) / 2)) / (2 * np.pi)
    return x, y


def _zoom_for(span: float) -> float:
    """The zoom at which ``span`` (a fraction of the world's width) is :data:`SPAN_UNITS` tile units."""
    if span <= 0 or not math.isfinite(span):
        return float(ZOOM_CEILING)
    return math.log2(SPAN_UNITS / (TILE_EXTENT * span))


def typical_spacing(sample: FeatureSample) -> float | None:
    """The typical distance between neighbouring features (fraction of the world's width): the
    geometric mean of the gaps between consecutive features in Morton (quadkey) order."""
    bounds = sample.bounds
    if len(bounds) < 2:
        return None
    x, y = _mercator((bounds[:, 0] + bounds[:, 2]) / 2, (bounds[:, 1] + bounds[:, 3]) / 2)
    scale = float((1 << 32) - 1)  # 32 bits an axis: ~1 cm at the equator
    xi = np.clip(x * scale, 0, scale).astype(np.uint64)
    yi = np.clip(y * scale, 0, scale).astype(np.uint64)
    code = np.zeros(len(xi), dtype=np.uint64)
    one = np.uint64(1)
    for bit in range(32):
        b = np.uint64(bit)
        code |= ((xi >> b) & one) << np.uint64(2 * bit)
        code |= ((yi >> b) & one) << np.uint64(2 * bit + 1)
    order = np.argsort(code, kind="stable")
    gaps = np.hypot(np.diff(x[order]), np.diff(y[order]))
    gaps = gaps[gaps > 0]
    if len(gaps) == 0:
        return None
    spacing = float(np.exp(np.log(gaps).mean()))
    if not sample.contiguous and sample.total > len(bounds):
        spacing *= math.sqrt(len(bounds) / sample.total)  # a spread subsample: the real crowd is denser
    return spacing


def segment_length(sample: FeatureSample) -> float | None:
    """The median over lines and polygons of their mean segment length (fraction of the world's width)."""
    import shapely

    lengths = []
    for g in sample.geometries:
        if g is None or shapely.is_empty(g) or shapely.get_dimensions(g) == 0:
            continue
        boundary = g.boundary if shapely.get_dimensions(g) == 2 else g
        parts = shapely.get_parts(boundary)
        total, segments = 0.0, 0
        for part in parts:
            xy = shapely.get_coordinates(part)
            if len(xy) < 2:
                continue
            x, y = _mercator(xy[:, 0], xy[:, 1])
            total += float(np.hypot(np.diff(x), np.diff(y)).sum())
            segments += len(xy) - 1
        if segments:
            lengths.append(total / segments)
    return float(np.median(lengths)) if lengths else None


def tiles_at(sample: FeatureSample, zoom: int) -> float:
    """Tiles the features' bounding boxes cover at ``zoom`` (an upper bound: overlaps count twice)."""
    b = sample.bounds
    if not len(b):
        return 0.0
    x0, y1 = _mercator(b[:, 0], b[:, 1])
    x1, y0 = _mercator(b[:, 2], b[:, 3])
    n = float(1 << zoom)
    tiles = (np.floor(x1 * n) - np.floor(x0 * n) + 1) * (np.floor(y1 * n) - np.floor(y0 * n) + 1)
    return min(float(tiles.mean()) * sample.total, n * n)


@dataclass(frozen=True)
class ZoomChoice:
    """The maximum zoom and why."""

    zoom: int
    reason: str


def choose_max_zoom(sample: FeatureSample, resolution: int, min_zoom: int = 0) -> ZoomChoice:
    """The maximum zoom for ``sample``'s dataset (see the module docstring)."""
    spacing = typical_spacing(sample)
    segment = segment_length(sample)
    guesses = [(_zoom_for(s), name) for s, name in ((spacing, "spacing"), (segment, "segment")) if s]
    guess = max(g for g, _ in guesses) if guesses else float(ZOOM_FLOOR)
    ceiling = min(resolution + 3, ZOOM_CEILING)
    budget = ceiling
    while budget > 0 and tiles_at(sample, budget) > TILE_BUDGET:
        budget -= 1
    top = max(min(ceiling, budget), min_zoom)
    floor = min(ZOOM_FLOOR, top)
    zoom = int(min(max(round(guess), floor, min_zoom), top))
    parts = []
    if spacing:
        parts.append(f"typical spacing {_km(spacing)} → z{max(0, round(_zoom_for(spacing)))}")
    if segment:
        parts.append(f"typical segment {_km(segment)} → z{max(0, round(_zoom_for(segment)))}")
    parts.append(f"floor z{floor}, ceiling z{ceiling} (H3 resolution {resolution} + 3)")
    if budget < ceiling:
        parts.append(f"≤ {TILE_BUDGET:,} tiles → z{budget}")
    return ZoomChoice(zoom, "; ".join(parts))


def _km(span: float) -> str:
    """A span (fraction of the world's width at the equator) in m or km."""
    metres = span * 40_075_016.7
    return f"{metres / 1000:.1f} km" if metres >= 1000 else f"{metres:.0f} m"


# ---- what each step costs ----------------------------------------------------------------------

#: Rates and peaks measured on the benchmark machine (2 cores; docs/benchmarks.md): features and
#: WKB bytes converted per second, hex rows per second and core (attributes included), tiles and
#: features per second of tippecanoe, rows per second of repartition, and the peak resident
#: memory per process of each step on the benchmark datasets.
CONVERT_FEATURES_PER_S = 70_000
CONVERT_WKB_BYTES_PER_S = 60e6
HEX_ROWS_PER_S = 400_000
PMTILES_TILES_PER_S = 5_000
PMTILES_FEATURES_PER_S = 50_000
REPARTITION_ROWS_PER_S = 2_000_000
PEAK_MB = {"convert": 500, "pmtiles": 450, "hex": 650, "repartition": 650, "catalog": 150}
#: A warning is printed at this many estimated hex rows.
HEX_ROWS_WARNING = 1_000_000_000


@dataclass(frozen=True)
class StepCost:
    """One step's estimate: processes (pods), the amount of work, the bytes it writes, the peak
    memory per process and the seconds it takes on a machine of ``cores`` cores."""

    step: str
    runs: int
    work: str
    bytes: int
    peak_mb: int
    seconds: float


def step_costs(
    features: int,
    hex_rows: int,
    tiles: float,
    wkb_bytes: float,
    attribute_bytes: float,
    attribute_columns: int,
    parents: int,
    chunks: int,
    cores: int,
    partitions: int,
) -> list[StepCost]:
    """Each step's :class:`StepCost` from a survey's numbers (bytes per feature are sampled;
    ``partitions``: the h0 partitions of the hex output)."""
    from cng_datasets.steps.repartition import ROW_GROUP_ROWS

    geoparquet = features * (0.6 * wkb_bytes + 0.3 * attribute_bytes + 16)
    # Each row: the id and its cells, which compress with the cells per feature (the cells of one
    # fill are neighbours: 6 B per column for points, ~0.5 B for a continent), and each attribute as
    # a dictionary index, in runs as long as the feature's cells (a feature's rows are written
    # together); fitted on cities, 50k small polygons, four boxes and Brazil at res 7, 8 and 10.
    per_feature = max(1.0, hex_rows / max(1, features))
    cells = 6.0 * (2 + parents) * max(0.09, per_feature**-0.5)
    attributes = (0.3 * attribute_bytes + 0.6 * attribute_columns) / per_feature
    # and every column chunk (a partition's file × row group × column): its pages, dictionary and
    # footer entry, ~330 B (the 10m countries at res 4: 98 files × 171 columns are 5.5 of 5.5 MB)
    row_groups = max(1, partitions) + hex_rows / ROW_GROUP_ROWS
    hex_bytes = hex_rows * (cells + attributes) + row_groups * (2 + parents + attribute_columns) * 330
    # every vertex down to the tile resolution, the attributes gzipped, and each tile's overhead
    pmtiles = tiles * 250 + features * (wkb_bytes + 0.35 * attribute_bytes)
    per_core = max(1, min(cores, chunks))
    return [
        StepCost(
            "convert",
            1,
            f"{features:,} features",
            int(geoparquet),
            PEAK_MB["convert"],
            features / CONVERT_FEATURES_PER_S + features * wkb_bytes / CONVERT_WKB_BYTES_PER_S,
        ),
        StepCost(
            "pmtiles",
            1,
            f"~{int(tiles):,} tiles",
            int(pmtiles),
            PEAK_MB["pmtiles"],
            tiles / PMTILES_TILES_PER_S + features / PMTILES_FEATURES_PER_S,
        ),
        StepCost(
            "hex",
            chunks,
            f"~{hex_rows:,} rows",
            int(hex_bytes),
            PEAK_MB["hex"],
            hex_rows / HEX_ROWS_PER_S / per_core,
        ),
        StepCost(
            "repartition",
            1,
            f"~{hex_rows:,} rows",
            int(hex_bytes),
            PEAK_MB["repartition"],
            hex_rows / REPARTITION_ROWS_PER_S,
        ),
        StepCost("catalog", 1, "metadata", 20_000, PEAK_MB["catalog"], 1.0),
    ]


def coarser_resolution(resolution: int, hex_rows: int, limit: int = HEX_ROWS_WARNING) -> tuple[int, int]:
    """The finest resolution whose rows stay under ``limit``, and its rows (each coarser
    resolution has ~1/7 of the cells of an area)."""
    rows = float(hex_rows)
    while resolution > 0 and rows >= limit:
        resolution -= 1
        rows /= 7
    return resolution, int(rows)


def estimated_hex_rows(config: WorkflowConfig, geoparquet: str) -> int | None:
    """The hex rows of ``config`` estimated from a sample of the GeoParquet; ``None`` (chunks by
    feature count) when the sample cannot be read."""
    import warnings

    from cng_datasets.errors import CngError, CountFallbackWarning

    try:
        sample = sample_geoparquet(geoparquet)
    except (CngError, OSError, ValueError) as exc:
        warnings.warn(
            CountFallbackWarning(f"could not estimate the hex rows ({exc}); chunking by feature count"),
            stacklevel=2,
        )
        return None
    return hex_rows(sample, config.h3_resolution, config.containment)


def plan_from_geoparquet(config: WorkflowConfig, geoparquet: str) -> Plan:
    """The plan built again once convert has written ``geoparquet``: its exact feature count (from
    its metadata, free) and the hex rows estimated from a sample of it. ``build_plan`` is pure, so
    only the hex chunking can differ from a plan built before convert ran. Used by the local
    runner and by the in-cluster orchestrator (which sizes the hex Job this way when the sources
    could not be counted while the manifests were written).

    Raises :class:`~cng_datasets.errors.CngError` / :class:`OSError` when the GeoParquet cannot
    be read.
    """
    from cng_datasets.plan import build_plan
    from cng_datasets.steps.convert import read_dataset_info

    features = int(read_dataset_info(geoparquet)["feature_count"])
    return build_plan(config, features, estimated_hex_rows(config, geoparquet))

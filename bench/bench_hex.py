"""Hex benchmark (run by hand): cells per second per core of our vectorized engine against a plain
per-feature h3-py loop on the same input, in the same run, and the peak memory of a big feature.

    /work/venv/bin/python bench/bench_hex.py [--write-docs]

Inputs: Natural Earth 10m countries (``../shared/data``), the GeoNames cities CSV. Everything runs
in one process on one core (``OMP``/Rayon threads pinned to 1) except the peak-memory case, which
runs ``cng-datasets hex`` in a child process and reads its ``ru_maxrss``.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")

import h3.api.basic_int as h3  # noqa: E402
import numpy as np  # noqa: E402
import pyogrio.raw  # noqa: E402
import shapely  # noqa: E402

from cng_datasets import h3cells  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DOC = ROOT / "docs" / "benchmarks.md"


def _timed(fn):
    t = time.process_time()
    w = time.perf_counter()
    out = fn()
    return out, time.process_time() - t, time.perf_counter() - w


def polygons_case(res: int) -> dict:
    _, _, wkb, _ = pyogrio.raw.read(str(DATA / "ne_10m_admin_0_countries_deu.zip"))
    geoms = shapely.force_2d(shapely.from_wkb(wkb))
    # the h3-py loop cannot take features wider than 180° (it raises or fills the wrong side):
    # both engines get the same features h3-py can do
    geoms = np.array([g for g in geoms if g.bounds[2] - g.bounds[0] <= 180], dtype=object)

    def ours():
        return sum(len(c) for _, c in h3cells.feature_cells(geoms, res))

    def loop():
        return sum(len(h3.geo_to_cells(g, res)) for g in geoms)

    n_ours, cpu_ours, wall_ours = _timed(ours)
    n_loop, cpu_loop, wall_loop = _timed(loop)
    return dict(
        case=f"10m countries ({len(geoms)} features), polygons, res {res}",
        cells=n_ours,
        ref_cells=n_loop,
        ours=n_ours / cpu_ours,
        loop=n_loop / cpu_loop,
        wall=wall_ours,
        wall_loop=wall_loop,
    )


def points_case(res: int) -> dict:
    import pyarrow.csv as pcsv

    t = pcsv.read_csv(DATA / "rg_cities1000.csv")
    lat, lon = t.column("lat").to_numpy(), t.column("lon").to_numpy()
    geoms = shapely.points(lon, lat)

    def ours():
        return sum(len(c) for _, c in h3cells.feature_cells(geoms, res))

    def loop():
        return len([h3.latlng_to_cell(p.y, p.x, res) for p in geoms])

    n_ours, cpu_ours, wall_ours = _timed(ours)
    n_loop, cpu_loop, wall_loop = _timed(loop)
    return dict(
        case=f"cities CSV ({len(geoms)} points), res {res}",
        cells=n_ours,
        ref_cells=n_loop,
        ours=n_ours / cpu_ours,
        loop=n_loop / cpu_loop,
        wall=wall_ours,
        wall_loop=wall_loop,
    )


def big_feature_case(res: int) -> dict:
    """Russia alone through `cng-datasets hex` in a child process: peak RSS and cells."""
    from cng_datasets.steps.convert import convert

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "countries.parquet"
        convert([str(DATA / "ne_10m_admin_0_countries_deu.zip")], str(src))
        import pyarrow.parquet as pq

        names = pq.read_table(src, columns=["NAME_EN"]).column(0).to_pylist()
        row = names.index("Russia")
        exe = [sys.executable, "-m", "cng_datasets"]
        args = [
            "hex",
            "--input",
            str(src),
            "--output",
            str(Path(tmp) / "chunks"),
            "--chunk-id",
            str(row),
            "--chunk-size",
            "1",
            "--resolution",
            str(res),
            "--parent-resolutions",
            "0",
            "-q",
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        w = time.perf_counter()
        subprocess.run(exe + args, check=True)
        wall = time.perf_counter() - w
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        import json

        marker = json.loads((Path(tmp) / "chunks" / "_done" / f"chunk-{row:05d}.json").read_text())
    return dict(
        case=f"Russia alone, res {res}, `cng-datasets hex` end to end",
        cells=marker["cells"],
        peak_mb=max(peak, before) / 1024,
        wall=wall,
        parts=len(marker["parts"]),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write-docs", action="store_true")
    ap.add_argument("--big-res", type=int, default=8)
    a = ap.parse_args()
    rows = [polygons_case(6), points_case(9)]
    big = big_feature_case(a.big_res)
    lines = [
        "",
        "## Hex",
        "",
        f"`bench/bench_hex.py`, {time.strftime('%Y-%m-%d')}, one core (`RAYON_NUM_THREADS=1`), CPU time; the",
        "reference is a plain per-feature h3-py 4.5 loop (`geo_to_cells` / `latlng_to_cell`) on the same",
        "features in the same run. Ours includes geometry preparation, dedupe and the zero-cell fallback.",
        "",
        "| case | cells | ours (cells/s/core) | h3-py loop (cells/s/core) | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['cells']:,} | {r['ours']:,.0f} | {r['loop']:,.0f} | {r['ours'] / r['loop']:.1f}× |"
        )
    lines += [
        "",
        f"Big feature: {big['case']}: {big['cells']:,} cells into {big['parts']} h0 parts in {big['wall']:.1f} s,",
        f"peak RSS {big['peak_mb']:.0f} MB (cells are computed tile by tile, ≤ 2 M per H3 call, and written",
        "in bounded row groups: memory does not grow with the cell count).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    for r in rows:
        assert r["cells"] >= 0.99 * r["ref_cells"], r
    if a.write_docs:
        with open(DOC, "a", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()

"""Benchmark: `convert` on GeoPackages of 250k and 1M real-derived features.

Run by hand:  python bench/bench_convert.py [--out bench/out]

Input: the GeoNames cities (../shared/data/rg_cities1000.csv, 144,563 points), repeated with a
small deterministic offset and buffered into small polygons (≈ 30 vertices each) so the file holds
polygons of realistic weight. Each measurement runs in a fresh subprocess; peak RSS is the
child's ru_maxrss.

Baseline, measured in the same run: the "load everything" way — `pyogrio.read_arrow` of the
whole layer, then one `pyarrow.parquet.write_table` (no reprojection, no validity checks). The
ratios say what streaming costs in time and saves in memory, and whether memory grows with N.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITIES = ROOT.parent / "shared" / "data" / "rg_cities1000.csv"


def make_gpkg(path: Path, n: int, radius: float = 0.004) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyogrio
    import shapely

    if path.exists():
        return
    cities = pacsv.read_csv(CITIES)
    reps = -(-n // cities.num_rows)
    lat = np.tile(cities["lat"].to_numpy(), reps)[:n]
    lon = np.tile(cities["lon"].to_numpy(), reps)[:n]
    k = np.repeat(np.arange(reps), cities.num_rows)[:n]
    pts = shapely.points(lon + 0.01 * k, lat + 0.005 * k)
    polys = shapely.buffer(pts, radius, quad_segs=8)
    table = pa.table(
        {
            "name": pa.array(np.tile(cities["name"].to_numpy(zero_copy_only=False), reps)[:n]),
            "cc": pa.array(np.tile(cities["cc"].to_numpy(zero_copy_only=False), reps)[:n]),
            "rep": pa.array(k.astype("int32")),
            "geom": pa.array(shapely.to_wkb(polys)),
        }
    )
    pyogrio.write_arrow(table, path, layer="cities", geometry_name="geom", geometry_type="Polygon", crs="EPSG:4326")


BASELINE = """
import sys, pyogrio, pyarrow.parquet as pq
meta, table = pyogrio.read_arrow(sys.argv[1])
pq.write_table(table, sys.argv[2], compression="zstd")
"""


def run_child(argv: list[str]) -> dict[str, float]:
    """Run argv via a wrapper that reports the child's own peak RSS."""
    wrapper = (
        "import resource, subprocess, sys, time, json;"
        "t=time.monotonic(); p=subprocess.run(sys.argv[1:], capture_output=True, text=True);"
        "dt=time.monotonic()-t;"
        "r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;"
        "print(json.dumps({'rc': p.returncode, 'seconds': dt, 'peak_rss_mb': r/1024, 'err': p.stderr[-500:]}))"
    )
    out = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["rc"]:
        raise SystemExit(f"{argv} failed: {result['err']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--sizes", default="250000,1000000")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        gpkg = args.out / f"polys_{n}.gpkg"
        make_gpkg(gpkg, n)
        ours = run_child(
            [sys.executable, "-m", "cng_datasets", "convert", "--quiet", str(gpkg), str(args.out / f"ours_{n}.parquet")]
        )
        base = run_child([sys.executable, "-c", BASELINE, str(gpkg), str(args.out / f"base_{n}.parquet")])
        rows.append((n, gpkg.stat().st_size / 1e6, ours, base))
        print(n, ours, base, flush=True)

    lines = [
        "## convert",
        "",
        f"Measured {datetime.date.today()} on {platform.machine()}, {resource.getpagesize()}-byte pages, "
        "2 cores, Python " + platform.python_version() + " with `python bench/bench_convert.py`. "
        "Input: GeoPackage of small polygons (GeoNames cities buffered, ~33 vertices each). "
        "Baseline (same run): `pyogrio.read_arrow` of the whole layer + one `pq.write_table`.",
        "",
        "| features | GPKG MB | convert s | convert peak RSS MB | baseline s | baseline peak RSS MB | time ratio | memory ratio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, mb, ours, base in rows:
        lines.append(
            f"| {n:,} | {mb:.0f} | {ours['seconds']:.1f} | {ours['peak_rss_mb']:.0f} | {base['seconds']:.1f} | "
            f"{base['peak_rss_mb']:.0f} | {ours['seconds'] / base['seconds']:.2f} | {ours['peak_rss_mb'] / base['peak_rss_mb']:.2f} |"
        )
    if len(rows) >= 2:
        growth = rows[-1][2]["peak_rss_mb"] / rows[0][2]["peak_rss_mb"]
        base_growth = rows[-1][3]["peak_rss_mb"] / rows[0][3]["peak_rss_mb"]
        lines += [
            "",
            f"Peak RSS growth from {rows[0][0]:,} to {rows[-1][0]:,} features: convert ×{growth:.2f}, baseline ×{base_growth:.2f}.",
        ]
    section = "\n".join(lines) + "\n"
    bench_md = ROOT / "docs" / "benchmarks.md"
    text = bench_md.read_text() if bench_md.exists() else "# Benchmarks\n\nRun by hand; each section says how.\n\n"
    start = text.find("## convert")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    bench_md.write_text(text)
    print(section)


if __name__ == "__main__":
    main()

"""Benchmark `cng-datasets pmtiles` on real data: wall time, CPU and peak RSS (ours and tippecanoe's).

    python bench/bench_pmtiles.py SOURCE [--max-zoom Z] [--workdir DIR]
    python bench/bench_pmtiles.py points:N [--max-zoom Z]     # N random points world-wide

SOURCE is anything `convert` reads (e.g. /work/shared/data/rg_cities1000.csv); it is converted
first (not timed), then tiled in a fresh process so the peak RSS figures are the step's own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

CHILD = r"""
import json, os, resource, stat, sys, tempfile, time
from cng_datasets.steps.pmtiles import TileOptions, build_pmtiles, find_tippecanoe
src, out, z = sys.argv[1], sys.argv[2], sys.argv[3]
# tippecanoe's own peak RSS, measured by GNU time (RUSAGE_CHILDREN would count the forked
# Python image before exec)
work = tempfile.mkdtemp()
wrapper, rss_file = os.path.join(work, "tippecanoe"), os.path.join(work, "rss")
with open(wrapper, "w") as fh:
    fh.write(f'#!/bin/sh\nexec /usr/bin/time -f %M -o {rss_file} {find_tippecanoe()} "$@"\n')
os.chmod(wrapper, 0o755)
t = time.monotonic()
r = build_pmtiles(src, out, TileOptions(max_zoom=None if z == "default" else int(z), tippecanoe=wrapper))
self_ = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
tip_rss_kb = int(open(rss_file).read().split()[-1])
print(json.dumps({
    "seconds": round(time.monotonic() - t, 2), "features": r.features, "tiles": r.tiles,
    "max_zoom": r.max_zoom, "mb": round(r.bytes / 1e6, 1),
    "python_cpu_s": round(self_.ru_utime + self_.ru_stime, 1), "python_peak_rss_mb": round(self_.ru_maxrss / 1024),
    "tippecanoe_cpu_s": round(kids.ru_utime + kids.ru_stime, 1), "tippecanoe_peak_rss_mb": round(tip_rss_kb / 1024),
}))
"""


def _random_points(n: int, dest: Path) -> None:
    """A GeoParquet following convert's contract: n points, an id, a text and a float attribute."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    rng = np.random.default_rng(1)
    writer = None
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        lon, lat = rng.uniform(-180, 180, m), np.degrees(np.arcsin(rng.uniform(-0.99, 0.99, m)))
        table = pa.table(
            {
                "_cng_fid": pa.array(np.arange(start + 1, start + m + 1), pa.int64()),
                "name": pa.array([f"pt{i}" for i in range(start, start + m)]),
                "value": pa.array(rng.normal(size=m)),
                "geometry": pa.array(shapely.to_wkb(shapely.points(lon, lat))),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(dest, table.schema, compression="zstd")
        writer.write_table(table)
    assert writer is not None
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("--max-zoom", default="default")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    from cng_datasets.steps.convert import convert

    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-pmtiles-"))
    parquet = work / (Path(args.source).name.split(".")[0].replace(":", "") + ".parquet")
    if args.source.startswith("points:"):
        _random_points(int(args.source.split(":")[1]), parquet)
    elif not parquet.exists():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            convert([args.source], str(parquet))
    out = work / (parquet.stem + ".pmtiles")
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(parquet), str(out), args.max_zoom], capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["source"] = Path(args.source).name
    result["process_seconds"] = round(time.monotonic() - t, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

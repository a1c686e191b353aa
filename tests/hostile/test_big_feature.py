"""One very large feature at resolution 10: memory stays bounded (the cells are streamed in tiles,
never held at once) and the output is complete.

Measured on 2 cores (Dec 2026): a 4° x 4° box at the equator with a 64-character attribute is
13.9 M cells at resolution 10 (~1.3 GB if every output row were held in memory at once); the
whole `run` took 14 s and its largest process peaked at 490 MB. A real continent (Brazil at
resolution 10 is ~570 M cells) takes minutes: too slow for CI, the same code path.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tests.hostile.conftest import Outcome, validate_ok

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("hostile")]

RES = 10
SIDE = 4.0  # degrees
MAX_RSS = 1 << 30  # 1 GiB

#: Runs the command given as arguments and writes the peak RSS (KiB) over every process of its tree
#: that was waited for (ru_maxrss of RUSAGE_CHILDREN: the largest single process) to a file.
_MEASURE = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[2:], capture_output=True, text=True)\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); sys.exit(r.returncode)\n"
)


def _sphere_area_km2(x0: float, y0: float, x1: float, y1: float) -> float:
    r = 6371.007180918475  # H3's authalic radius
    return r * r * math.radians(x1 - x0) * (math.sin(math.radians(y1)) - math.sin(math.radians(y0)))


def test_continent_sized_feature_at_resolution_10_in_bounded_memory(cli_run, tmp_path: Path) -> None:
    import subprocess

    import h3

    x0, y0 = 10.0, 0.0
    ring = [[x0, y0], [x0 + SIDE, y0], [x0 + SIDE, y0 + SIDE], [x0, y0 + SIDE], [x0, y0]]
    src = tmp_path / "big.geojson"
    src.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": "big", "note": "x" * 64},
                        "geometry": {"type": "Polygon", "coordinates": [ring]},
                    }
                ],
            }
        )
    )
    out = tmp_path / "out"
    rss_file = tmp_path / "maxrss"
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _MEASURE,
            str(rss_file),
            sys.executable,
            "-m",
            "cng_datasets",
            "run",
            "--dataset",
            "big",
            "--source-url",
            str(src),
            "--bucket",
            str(out),
            "--h3-resolution",
            str(RES),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    o = Outcome(proc, out, "big")
    o.ok()
    peak = int(rss_file.read_text()) * 1024
    assert peak <= MAX_RSS, f"peak RSS {peak / 2**20:.0f} MiB"

    validate_ok(cli_run, o)  # includes: no duplicate (id, cell) rows, every feature present
    files = sorted(o.hex.rglob("*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    # expected count: the box's area times the cell density h3-py gives in a 0.25° box at its centre
    cx, cy, d = x0 + SIDE / 2, y0 + SIDE / 2, 0.125
    sample = h3.polygon_to_cells(
        h3.LatLngPoly([(cy - d, cx - d), (cy - d, cx + d), (cy + d, cx + d), (cy + d, cx - d)]), RES
    )
    density = len(sample) / _sphere_area_km2(cx - d, cy - d, cx + d, cy + d)
    expected = density * _sphere_area_km2(x0, y0, x0 + SIDE, y0 + SIDE)
    assert abs(rows - expected) / expected < 0.01, (rows, expected)
    assert rows > 10_000_000  # big enough that holding it whole would not fit the bound
    # the attribute rides along on every row
    for f in files:
        t = pq.read_table(f, columns=["note"])
        assert pc.all(pc.equal(t.column("note"), "x" * 64)).as_py()

"""The speed and memory targets of issue 14, side by side with their baselines in one run.

Run by hand (a few minutes on 2 cores):

    python bench/bench_targets.py [--out /tmp/cng-bench] [--repeat 3]

It writes the section "Targets" of docs/benchmarks.md: each row ours vs its baseline, measured in
this run on this machine, best of ``--repeat`` (wall seconds, a fresh process each time, our
process start included), the ratio, and our peak RSS. Inputs come from ../shared/data (GeoNames
cities, Natural Earth 10m countries), derived deterministically. The DuckDB baseline needs
``pip install duckdb==1.5.5 duckdb-extension-spatial==1.5.5`` (loaded from the wheel, offline);
without it that row says so.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CITIES = DATA / "rg_cities1000.csv"
COUNTRIES = DATA / "ne_10m_admin_0_countries_deu.zip"
PY = sys.executable
#: Our commands; ``--ours-python`` points them at an environment installed as the image is (no test
#: extras: pyarrow imports pandas, a test-only dependency, at its first to_numpy when it is there).
CLI = [PY, "-m", "cng_datasets"]
ONE_CORE = {"RAYON_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "TIPPECANOE_MAX_THREADS": "1"}

# Runs argv, pinned to the given CPUs, and prints wall seconds and the peak RSS of the process tree.
_WRAPPER = """
import json, os, resource, subprocess, sys, time
cpus = json.loads(sys.argv[1])
if cpus:
    os.sched_setaffinity(0, cpus)
t = time.monotonic()
p = subprocess.run(sys.argv[2:], capture_output=True, text=True)
dt = time.monotonic() - t
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": p.returncode, "seconds": dt, "rss_mb": rss, "err": p.stderr[-800:]}))
"""


def measure_sampled(argv: list[str], env: dict[str, str], cpus: list[int]) -> tuple[dict, list[float]]:
    """One run, its RSS sampled every second: (the result, the peak RSS of each quarter of it)."""
    t = time.monotonic()
    proc = subprocess.Popen([*map(str, argv)], env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cpus))  # fmt: skip
    samples: list[float] = []
    while proc.poll() is None:
        try:
            samples.append(int(Path(f"/proc/{proc.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20)
        except (OSError, IndexError):
            pass
        time.sleep(1.0)
    err = proc.stderr.read() if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed: {err[-800:]}")
    q = max(1, len(samples) // 4)
    quarters = [max(samples[i : i + q] or [0.0]) for i in range(0, q * 4, q)]
    return {"seconds": time.monotonic() - t, "rss_mb": max(samples or [0.0])}, quarters


def measure(argv: list[str], repeat: int, env: dict[str, str] | None = None, cpus: list[int] | None = None) -> dict:
    """Best wall time of ``repeat`` fresh runs (and the peak RSS of that run)."""
    best: dict | None = None
    for _ in range(repeat):
        full_env = {**os.environ, **(env or {})}
        done = subprocess.run(
            [PY, "-c", _WRAPPER, json.dumps(cpus or []), *map(str, argv)],
            capture_output=True,
            text=True,
            env=full_env,
            check=True,
        )
        result = json.loads(done.stdout)
        if result["rc"] != 0:
            raise SystemExit(f"{argv} failed: {result['err']}")
        if best is None or result["seconds"] < best["seconds"]:
            best = result
    assert best is not None
    return best


# ---- inputs -------------------------------------------------------------------------------------


def small_polygons_gpkg(path: Path, n: int, radius: float = 0.004) -> Path:
    """n small polygons (33 vertices) around the GeoNames cities, repeated with an offset; 4 attributes."""
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_convert import make_gpkg

    make_gpkg(path, n, radius)
    return path


def boxes_gpkg(path: Path) -> Path:
    """Four 1°×1° boxes (Europe, Africa, South America, Asia)."""
    if path.exists():
        return path
    import numpy as np
    import pyarrow as pa
    import pyogrio
    import shapely

    boxes = [shapely.box(x, y, x + 1, y + 1) for x, y in ((10, 50), (20, 0), (-60, -10), (100, 30))]
    table = pa.table({"name": ["a", "b", "c", "d"], "geom": pa.array(shapely.to_wkb(np.array(boxes)))})
    pyogrio.write_arrow(table, path, layer="boxes", geometry_name="geom", geometry_type="Polygon", crs="EPSG:4326")
    return path


def convert(source: Path, dest: Path, *extra: str) -> Path:
    if not dest.exists():
        subprocess.run([*CLI, "convert", "--quiet", *extra, "--", source, dest], check=True, capture_output=True)
    return dest


def brazil_parquet(out: Path) -> Path:
    """Brazil alone, with every Natural Earth attribute."""
    dest = out / "brazil.parquet"
    if dest.exists():
        return dest
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    world = convert(COUNTRIES, out / "countries.parquet")
    table = pq.read_table(world)
    one = table.filter(pc.equal(table["ADMIN"], "Brazil"))
    pq.write_table(one, dest, compression="zstd")
    return dest


def geojsonseq(parquet: Path, dest: Path) -> Path:
    """The GeoJSONSeq bare tippecanoe reads: the same features and attributes."""
    if dest.exists():
        return dest
    import pyarrow.parquet as pq
    import shapely

    table = pq.read_table(parquet)
    names = [n for n in table.schema.names if n not in ("geometry", "bbox")]
    with dest.open("w") as fh:
        for batch in table.to_batches(4096):
            geoms = shapely.to_geojson(shapely.from_wkb(batch.column("geometry").to_numpy(zero_copy_only=False)))
            props = batch.select(names).to_pylist()
            for g, p in zip(geoms, props, strict=True):
                fh.write('{"type":"Feature","properties":' + json.dumps(p, default=str) + ',"geometry":' + g + "}\n")
    return dest


H3PY_LOOP = """
import sys, h3, pyarrow.parquet as pq, shapely
res, parents = int(sys.argv[2]), [int(p) for p in sys.argv[3].split(",")]
n = 0
for g in shapely.from_wkb(pq.read_table(sys.argv[1], columns=["geometry"])["geometry"].to_numpy(zero_copy_only=False)):
    cells = h3.geo_to_cells(g, res)
    for c in cells:
        for p in parents:
            h3.cell_to_parent(c, p)
    n += len(cells)
print(n)
"""

H3RONPY_FILL = """
import sys, numpy as np, pyarrow as pa, pyarrow.parquet as pq, h3ronpy
from h3ronpy.vector import wkb_to_cells
from h3ronpy import change_resolution
res = int(sys.argv[2]); parents = [int(p) for p in sys.argv[3].split(",") if p]
wkb = pq.read_table(sys.argv[1], columns=["geometry"])["geometry"].combine_chunks()
lists = wkb_to_cells(wkb, res, containment_mode=h3ronpy.ContainmentMode.ContainsCentroid, flatten=False)
cells = pa.array(lists).flatten()
for p in parents:
    change_resolution(cells, p)
print(len(cells))
"""

DUCKDB = """
import glob, sys, duckdb
ext = glob.glob(sys.argv[3] + "/duckdb_extension_spatial/**/*.duckdb_extension", recursive=True)[0]
con = duckdb.connect()
con.execute(f"LOAD '{ext}'")
con.execute(f"COPY (SELECT * FROM ST_Read('{sys.argv[1]}')) TO '{sys.argv[2]}' (FORMAT parquet, COMPRESSION zstd)")
"""


def site_packages() -> str | None:
    try:
        import duckdb_extension_spatial  # noqa: F401
    except ImportError:
        return None
    return str(Path(duckdb_extension_spatial.__file__).parent.parent)


def tippecanoe() -> str:
    from cng_datasets.steps.pmtiles import find_tippecanoe

    return find_tippecanoe()


# ---- the rows -----------------------------------------------------------------------------------


SECTIONS = ("convert", "hex", "pmtiles", "memory", "run")


def rows(out: Path, repeat: int, only: set[str], long: bool) -> list[dict]:
    from cng_datasets.steps.pmtiles import TIPPECANOE_FLAGS

    table: list[dict] = []

    def add(work: str, ours: dict, base: dict | None, base_name: str, target: str, extra: str = "") -> None:
        row = {"work": work, "ours": ours, "base": base, "base_name": base_name, "target": target, "extra": extra}
        table.append(row)
        ratio = f"{ours['seconds'] / base['seconds']:.2f}×" if base else "-"
        print(f"{work}: ours {ours['seconds']:.2f} s ({ours['rss_mb']:.0f} MB), {base_name} "
              f"{base['seconds'] if base else float('nan'):.2f} s, ratio {ratio} {extra}", flush=True)  # fmt: skip

    site = site_packages()
    for n in (200_000, 1_000_000) if "convert" in only else ():
        gpkg = small_polygons_gpkg(out / f"polys_{n}.gpkg", n)
        ours_out, duck_out = out / f"ours_{n}.parquet", out / f"duck_{n}.parquet"
        ours = measure([*CLI, "convert", "--quiet", gpkg, ours_out], repeat if n < 1e6 else 1)
        base = measure([PY, "-c", DUCKDB, gpkg, duck_out, site], repeat if n < 1e6 else 1) if site else None
        size = f"file {ours_out.stat().st_size / 1e6:.1f} MB" + (
            f" vs {duck_out.stat().st_size / 1e6:.1f} MB ({ours_out.stat().st_size / duck_out.stat().st_size:.2f}×)"
            if site
            else ""
        )
        add(f"convert {n:,} small polygons (GPKG) → GeoParquet", ours, base,
            "DuckDB COPY … ST_Read" if site else "DuckDB (spatial extension not installed)",
            "≤ 1.0× time, file ≤ 1.5×, peak ≤ 1 GiB", size)  # fmt: skip

    one = {"cpus": [0], "env": ONE_CORE}
    small = convert(small_polygons_gpkg(out / "polys_50000.gpkg", 50_000, radius=0.0045), out / "polys_50000.parquet")
    hex_argv = ["hex", "--chunk-id", "0", "--chunk-size", "100000000"]
    for name, src, res, parents in (
        ("50k ~1 km² polygons", small, 10, "9,8,0"),
        ("four 1°×1° boxes", convert(boxes_gpkg(out / "boxes.gpkg"), out / "boxes.parquet"), 10, "9,8,0"),
        ("Brazil alone (171 attributes)", brazil_parquet(out), 7, "0"),
    ) if "hex" in only else ():
        dest = out / f"hex_{res}_{src.stem}"
        argv = [*CLI, *hex_argv, "--input", src, "--output", dest, "--resolution", str(res), "--parent-resolutions", parents]
        ours = measure(argv, repeat, one["env"], one["cpus"])
        fill = measure([PY, "-c", H3RONPY_FILL, src, str(res), parents], repeat, one["env"], one["cpus"])
        loop = (
            measure([PY, "-c", H3PY_LOOP, src, str(res), parents], 1, one["env"], one["cpus"])
            if "Brazil" not in name
            else None
        )
        cells = sum(
            __import__("pyarrow.parquet", fromlist=["x"]).ParquetFile(f).metadata.num_rows
            for f in glob.glob(f"{dest}/**/*.parquet", recursive=True)
        )
        extra = f"{cells:,} rows" + (f"; h3-py loop {loop['seconds']:.2f} s: ours is {loop['seconds'] / ours['seconds']:.1f}× faster" if loop else "")
        add(f"hex {name}, res {res} + parents {parents}, one core", ours, fill, "h3ronpy fill + parents",
            "≤ 1.1× the fill (50k) / ≥ 5× the loop (boxes) / ≤ 4× the fill (Brazil)", extra)  # fmt: skip

    countries = convert(COUNTRIES, out / "countries.parquet")
    cities = convert(CITIES, out / "cities.parquet")
    pmtiles_rows = (("NE 10m countries", countries, "countries", 6), ("GeoNames cities", cities, "cities", None))
    for name, src, layer, zoom in pmtiles_rows if "pmtiles" in only else ():
        pm = out / f"{layer}.pmtiles"
        argv = [*CLI, "pmtiles", "--input", src, "--output", pm, "--layer-name", layer]
        argv += ["--max-zoom", str(zoom)] if zoom is not None else ["--resolution", "10"]
        ours = measure(argv, repeat, one["env"], one["cpus"])
        import pmtiles.reader as pr

        with pm.open("rb") as fh:
            chosen = pr.Reader(pr.MmapSource(fh)).header()["max_zoom"]
        seq = geojsonseq(src, out / f"{layer}.geojsons")
        bare = [tippecanoe(), f"--output={out / (layer + '_bare.pmtiles')}", "--force", f"--layer={layer}",
                f"--maximum-zoom={chosen}", *TIPPECANOE_FLAGS, str(seq)]  # fmt: skip
        base = measure(bare, repeat, one["env"], one["cpus"])
        how = f"z{zoom}" if zoom is not None else f"the default zoom (chosen: z{chosen})"
        add(f"pmtiles, {name} at {how}, one thread", ours, base, "bare tippecanoe, same flags, prepared GeoJSONSeq",
            "≤ 1.05×")  # fmt: skip

    if "pmtiles" in only:
        pm = out / "countries_default.pmtiles"
        ours = measure([*CLI, "pmtiles", "--input", countries, "--output", pm, "--resolution", "10"], 1)
        add("pmtiles, NE 10m countries at the default zoom for res 10 (was z13: unfinished after 300 s)", ours, None,
            "-", "minutes at most")  # fmt: skip
    if "memory" in only:
        memory_rows(out, cities, add, one, long)
    if "run" in only:
        run_row(out, repeat, add)
    return table


def memory_rows(out: Path, cities: Path, add: Any, one: dict, long: bool) -> None:
    """One big feature at finer resolutions (RSS sampled over the run: is it flat?), and
    repartition of 200 chunks."""
    hex_argv = ["hex", "--chunk-id", "0", "--chunk-size", "100000000"]
    for res in (8, 9, 10) if long else (8,):
        dest = out / f"hex_{res}_brazil"
        shutil.rmtree(dest, ignore_errors=True)
        argv = [*CLI, *hex_argv, "--input", brazil_parquet(out), "--output", dest, "--resolution", str(res), "--parent-resolutions", "0"]
        ours, quarters = measure_sampled(argv, one["env"], one["cpus"])
        cells = sum(
            __import__("pyarrow.parquet", fromlist=["x"]).ParquetFile(f).metadata.num_rows
            for f in glob.glob(f"{dest}/**/*.parquet", recursive=True)
        )
        add(f"hex Brazil alone (171 attributes), res {res}, one core: peak memory", ours, None, "-",
            "flat, ≤ 1 GiB (res 7: see above)",
            f"{cells:,} rows; peak RSS per quarter of the run: {' / '.join(f'{q:.0f}' for q in quarters)} MB")  # fmt: skip
    chunks, final = out / "chunks200", out / "hex200"
    if not (chunks / "_done").exists():
        for i in range(200):
            subprocess.run([*CLI, "hex", "--input", cities, "--output", chunks, "--resolution", "10",
                            "--parent-resolutions", "9,8,0", "--chunk-id", str(i), "--chunk-size", "723",
                            "--chunk-count", "200"], check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(final, ignore_errors=True)  # a finished output would make repartition a no-op
    ours = measure([*CLI, "repartition", "--chunks", chunks, "--output", final, "--source", cities, "--keep-chunks"], 1)
    add("repartition of 200 chunks (144k cities, res 10): peak memory", ours, None, "-", "≤ 1 GiB")


def run_row(out: Path, repeat: int, add: Any) -> None:
    """``run`` vs the same steps as single processes, one after the other."""
    bucket = out / "run"
    run_argv = [*CLI, "run", "-q", "--dataset", "cities", "--source-url", CITIES, "--bucket", bucket, "--h3-resolution", "10", "--force"]
    ours = measure(run_argv, repeat)
    steps = out / "steps"
    steps.mkdir(exist_ok=True)
    script = ";".join(
        [
            f"import subprocess as s, sys; C={CLI!r}",
            f"s.run(C+['convert','--quiet','--',{str(CITIES)!r},{str(steps / 'c.parquet')!r}],check=True)",
            f"s.run(C+['pmtiles','--input',{str(steps / 'c.parquet')!r},'--output',{str(steps / 'c.pmtiles')!r},'--resolution','10'],check=True)",
            f"s.run(C+['hex','--input',{str(steps / 'c.parquet')!r},'--output',{str(steps / 'chunks')!r},'--resolution','10','--parent-resolutions','9,8,0','--chunk-id','0','--chunk-size','100000000'],check=True)",
            f"s.run(C+['repartition','--chunks',{str(steps / 'chunks')!r},'--output',{str(steps / 'hex')!r},'--source',{str(steps / 'c.parquet')!r}],check=True)",
        ]
    )
    base = measure([PY, "-c", script], repeat)
    add("run on 144k points (GeoNames cities CSV, res 10)", ours, base, "the same four steps as single processes", "≤ 1.1×")


def write_docs(table: list[dict], repeat: int, write: bool = True) -> str:
    lines = [
        "## Targets (issue 14)",
        "",
        f"Measured {datetime.date.today()} with `python bench/bench_targets.py` on {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}: best of {repeat} fresh processes "
        "(long rows: one), wall seconds, our process start included; ratio = ours / baseline, measured "
        "in the same run. \"One core\" rows are pinned to CPU 0 with Rayon / tippecanoe threads at 1. "
        f"Ours ran with {'the development environment' if CLI[0] == PY else 'a production install (`pip install .`, as the Dockerfile)'}.",
        "",
        "| work | ours s | our peak RSS MB | baseline | baseline s | ratio | target | notes |",
        "|---|---:|---:|---|---:|---:|---|---|",
    ]
    for r in table:
        base = r["base"]
        lines.append(
            f"| {r['work']} | {r['ours']['seconds']:.2f} | {r['ours']['rss_mb']:.0f} | {r['base_name']} | "
            f"{base['seconds']:.2f} | {r['ours']['seconds'] / base['seconds']:.2f} | {r['target']} | {r['extra']} |"
            if base
            else f"| {r['work']} | {r['ours']['seconds']:.2f} | {r['ours']['rss_mb']:.0f} | {r['base_name']} | - | - | "
            f"{r['target']} | {r['extra']} |"
        )
    section = "\n".join(lines) + "\n\n"
    if not write:
        return section
    doc = ROOT / "docs" / "benchmarks.md"
    text = doc.read_text()
    start = text.find("## Targets (issue 14)")
    if start >= 0:
        end = text.find("\n## ", start + 1)
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    else:
        head_end = text.find("\n## ")
        text = text[: head_end + 1] + "\n" + section + "\n" + text[head_end + 1 :] if head_end >= 0 else text + section
    doc.write_text(text)
    return section


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/cng-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ours-python", default=PY, help="Python of an install of cng-datasets as in the image")
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}: printed, docs not written")
    parser.add_argument("--long", action="store_true", help="memory: Brazil at res 9 and 10 too (~20 min)")
    args = parser.parse_args()
    CLI[0] = args.ours_python
    args.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    table = rows(args.out, args.repeat, only, args.long)
    print(write_docs(table, args.repeat, write=not args.only))


if __name__ == "__main__":
    main()

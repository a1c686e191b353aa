"""S3 faults under `cng-datasets run`: transient errors (a fault-injecting proxy in front of the
moto server) are retried with backoff by boto3, pyarrow and GDAL and the outputs are complete and
correct; access denied and a missing bucket end in one clear line, a non-zero exit and nothing
written."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from shapely.geometry import box

from cng_datasets import storage
from tests.hostile.conftest import h3_reference
from tests.hostile.corpus import write_gpkg
from tests.hostile.faultproxy import FaultProxy

pytestmark = [pytest.mark.s3, pytest.mark.slow, pytest.mark.xdist_group("hostile")]

RES = 3
N = 60


def _source(tmp_path: Path, bucket: str) -> tuple[str, list[shapely.Geometry]]:
    """N small boxes and points in a GeoPackage uploaded to the bucket (read through /vsis3)."""
    # a 10 x 6 grid in a few h0 cells: the run's request count stays small
    geoms = [
        box(3.0 * (i % 10), 3.0 * (i // 10), 3.0 * (i % 10) + 2, 3.0 * (i // 10) + 1.5)
        if i % 3
        else shapely.Point(3.0 * (i % 10) + 0.5, 3.0 * (i // 10) + 0.5)
        for i in range(N)
    ]
    path = write_gpkg(
        tmp_path / "src.gpkg",
        geoms,
        {"name": [f"f{i}" for i in range(N)], "n": list(range(N))},
        geometry_type="Unknown",
    )
    url = f"{bucket}/src/src.gpkg"
    storage.upload_file(path, url)
    return url, geoms


def _keys(bucket: str, prefix: str) -> list[str]:
    return [u[len(bucket) + 1 :] for u in storage.list_prefix(f"{bucket}/{prefix}")]


def _check_complete(cli_run, bucket: str, geoms: list[shapely.Geometry], tmp_path: Path) -> None:
    """`validate` ok (straight to moto), every feature and value present, hex cells = h3-py's."""
    val = cli_run("validate", f"{bucket}/out", "--dataset", "ds")
    assert val.returncode == 0, val.stdout + val.stderr
    local = tmp_path / "check.parquet"
    storage.download_file(f"{bucket}/out/ds.parquet", local)
    t = pq.read_table(local)
    assert t.column("n").to_pylist() == list(range(N))
    got = shapely.from_wkb(t.column("geometry").to_numpy(zero_copy_only=False))
    assert all(shapely.equals(a, b) for a, b in zip(got, geoms, strict=True))
    parts = [k for k in _keys(bucket, "out/ds/hex") if k.endswith(".parquet")]
    assert parts
    tables = []
    for i, key in enumerate(parts):
        storage.download_file(f"{bucket}/{key}", tmp_path / f"part{i}.parquet")
        tables.append(pq.read_table(tmp_path / f"part{i}.parquet"))
    hx = pa.concat_tables(tables)
    cells: dict[int, set[int]] = {}
    for fid, c in zip(hx.column("_cng_fid").to_pylist(), hx.column(f"h{RES}").to_pylist(), strict=True):
        cells.setdefault(fid, set()).add(c)
    assert sorted(cells) == list(range(1, N + 1))
    for fid, g in enumerate(geoms, start=1):
        assert cells[fid] == h3_reference(g, RES), fid
    # nothing left over: no chunks, no temporary objects
    assert not _keys(bucket, "out/ds/chunks")
    assert not [k for k in _keys(bucket, "out") if ".tmp" in k or ".cng-" in k]


def test_transient_s3_errors_are_retried(cli_run, s3_server: str, s3: str, tmp_path: Path) -> None:
    """Every 7th request of the whole run (source read by GDAL, Parquet reads by pyarrow, writes,
    listings and deletes by boto3) answers 500, 503 or drops the connection, in turn."""
    src, geoms = _source(tmp_path, s3)
    with FaultProxy(s3_server, every=7, faults=("500", "drop", "503")) as proxy:
        proc = cli_run(
            "run",
            "--dataset",
            "ds",
            "--source-url",
            src,
            "--bucket",
            f"{s3}/out",
            "--h3-resolution",
            str(RES),
            "--chunk-size",
            "30",
            "--workers",
            "2",
            env={"AWS_ENDPOINT_URL": proxy.url},
            timeout=300,
        )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    # the proxy failed requests of every kind the run makes (reads, writes, listings)
    assert sum(proxy.failed.values()) >= 5, (proxy.failed, proxy.forwarded)
    assert {"GET", "PUT"} <= set(proxy.failed), proxy.failed
    _check_complete(cli_run, s3, geoms, tmp_path)


@pytest.mark.parametrize("fault", ["500", "503", "drop"])
@pytest.mark.parametrize("client", ["boto3", "pyarrow", "gdal"])
def test_each_s3_client_retries(
    cli_run, s3_server: str, s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, client: str, fault: str
) -> None:
    """Every third request fails: each of the three S3 clients the steps use gets through."""
    src, geoms = _source(tmp_path, s3)
    table = pa.table({"n": list(range(5000)), "s": [f"value {i}" for i in range(5000)]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=1000)
    storage.upload_file(tmp_path / "t.parquet", f"{s3}/t.parquet")
    with FaultProxy(s3_server, every=3, faults=(fault,)) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage._s3_client_cached.cache_clear()
        if client == "boto3":  # writes, listings, reads, deletes
            storage.write_bytes(f"{s3}/x/a.json", b"{}")
            storage.upload_file(tmp_path / "t.parquet", f"{s3}/x/b.parquet")
            assert storage.list_prefix(f"{s3}/x") == [f"{s3}/x/a.json", f"{s3}/x/b.parquet"]
            assert storage.read_bytes(f"{s3}/x/a.json") == b"{}"
            storage.download_file(f"{s3}/x/b.parquet", tmp_path / "back.parquet")
            assert pq.read_table(tmp_path / "back.parquet").equals(table)
            assert storage.delete_prefix(f"{s3}/x") == 2
        elif client == "pyarrow":  # range reads of a Parquet file
            with storage.open_random_access(f"{s3}/t.parquet") as f:
                assert pq.ParquetFile(f).read().equals(table)
            with storage.open_input(f"{s3}/t.parquet") as f:
                assert f.read()[:4] == b"PAR1"
        else:  # GDAL /vsis3, in a subprocess: GDAL holds the GIL while it waits for this proxy
            proc = cli_run("convert", src, tmp_path / "out.parquet", env={"AWS_ENDPOINT_URL": proxy.url}, timeout=120)
            assert proc.returncode == 0, proc.stderr
            assert pq.read_table(tmp_path / "out.parquet").column("n").to_pylist() == list(range(N))
    assert sum(proxy.failed.values()) >= 1, proxy.forwarded


def test_missing_object_is_not_retried(s3_server: str, s3: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries are for transient errors only: a missing key fails at once, as FileNotFoundError."""
    with FaultProxy(s3_server, every=10**9) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
        storage._s3_client_cached.cache_clear()
        with pytest.raises(FileNotFoundError):
            storage.open_random_access(f"{s3}/no/such.parquet")
    assert sum(proxy.forwarded.values()) <= 2, proxy.forwarded


# ---- errors that retrying cannot fix ------------------------------------------------------------


def _run_into(cli_run, src: str, dest: str, env: dict[str, str] | None = None):
    return cli_run(
        "run",
        "--dataset",
        "ds",
        "--source-url",
        src,
        "--bucket",
        dest,
        "--h3-resolution",
        str(RES),
        env=env,
        timeout=120,
    )


def _one_line(proc, *words: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode != 0
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    for w in words:
        assert w.lower() in errors[0].lower(), errors[0]
    return errors[0]


def test_missing_output_bucket(cli_run, s3: str, tmp_path: Path) -> None:
    src, _ = _source(tmp_path, s3)
    proc = _run_into(cli_run, src, "s3://no-such-bucket-here/out")
    _one_line(proc, "no-such-bucket-here", "bucket does not exist")


def test_missing_source_bucket(cli_run, s3: str, tmp_path: Path) -> None:
    proc = _run_into(cli_run, "s3://no-such-bucket-here/src.gpkg", f"{s3}/out")
    _one_line(proc, "no-such-bucket-here")
    assert not _keys(s3, "out/ds.parquet")


@pytest.mark.parametrize(
    ("action", "prefix", "words"),
    [
        # the run's first write is its lease on the dataset (out/ds/_cng/lease.json)
        ("s3:PutObject", "out/", ["out/ds", "access denied"]),
        ("s3:GetObject", "src/", ["src/src.gpkg", "403"]),
    ],
    ids=["writes-denied", "source-read-denied"],
)
def test_bucket_policy_denies(cli_run, s3: str, tmp_path: Path, action: str, prefix: str, words: list[str]) -> None:
    """A bucket policy (moto enforces it) denies writing the outputs or reading the source (GDAL)."""
    src, _ = _source(tmp_path, s3)
    bucket = storage.parse(s3).bucket
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": [action],
                "Resource": f"arn:aws:s3:::{bucket}/{prefix}*",
            }
        ],
    }
    storage.s3_client().put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    before = set(_keys(s3, ""))
    proc = _run_into(cli_run, src, f"{s3}/out")
    line = _one_line(proc, *words)
    print(line)
    assert set(_keys(s3, "")) == before

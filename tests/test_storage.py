"""storage: URL parsing, GDAL paths, S3 settings from the environment, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from cng_datasets import storage
from cng_datasets.errors import StorageError


@pytest.mark.parametrize(
    "url, scheme, bucket, key, path",
    [
        ("s3://b/a/x.parquet", "s3", "b", "a/x.parquet", ""),
        ("S3://b", "s3", "b", "", ""),
        ("https://h.org/a b&c.gpkg?x=1", "https", "", "", ""),
        ("http://h/x.zip", "http", "", "", ""),
        ("/tmp/x.gpkg", "file", "", "", "/tmp/x.gpkg"),
        ("file:///tmp/x.gpkg", "file", "", "", "/tmp/x.gpkg"),
        ("rel/x.shp", "file", "", "", "rel/x.shp"),
    ],
)
def test_parse(url: str, scheme: str, bucket: str, key: str, path: str) -> None:
    loc = storage.parse(url)
    assert (loc.scheme, loc.bucket, loc.key, loc.path) == (scheme, bucket, key, path)


@pytest.mark.parametrize("url", ["s3://", "ftp://x/y", "gs://b/k"])
def test_parse_rejects(url: str) -> None:
    with pytest.raises(StorageError):
        storage.parse(url)


def test_name_and_join() -> None:
    assert storage.parse("s3://b/dir/x.parquet").name == "x.parquet"
    assert storage.parse("https://h/a/b.zip").name == "b.zip"
    assert storage.join("s3://b/", "ds", "/hex/") == "s3://b/ds/hex"
    assert storage.join("/tmp/o", "ds", "hex") == "/tmp/o/ds/hex"


@pytest.mark.parametrize(
    "url, vsi",
    [
        ("s3://b/k.gpkg", "/vsis3/b/k.gpkg"),
        ("s3://b/k.zip", "/vsizip//vsis3/b/k.zip"),
        ("https://h/a.gdb.zip", "/vsizip//vsicurl/https://h/a.gdb.zip"),
        ("https://h/a.fgb", "/vsicurl/https://h/a.fgb"),
        ("/vsicurl/https://h/x", "/vsicurl/https://h/x"),
    ],
)
def test_vsi_path(url: str, vsi: str) -> None:
    assert storage.vsi_path(url) == vsi


def test_vsi_path_local_is_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert storage.vsi_path("x.zip") == f"/vsizip/{tmp_path}/x.zip"


def test_s3_settings_variants() -> None:
    s = storage.s3_settings({"AWS_ENDPOINT_URL": "http://minio:9000/"})
    assert (s.endpoint_url, s.host, s.https, s.anonymous) == ("http://minio:9000", "minio:9000", False, True)
    s = storage.s3_settings(
        {
            "AWS_S3_ENDPOINT": "ceph.local:8080",
            "AWS_HTTPS": "NO",
            "AWS_ACCESS_KEY_ID": "a",
            "AWS_SECRET_ACCESS_KEY": "b",
        }
    )
    assert (s.endpoint_url, s.https, s.anonymous) == ("http://ceph.local:8080", False, False)
    s = storage.s3_settings({"AWS_S3_ENDPOINT": "s3.example.org"})
    assert s.endpoint_url == "https://s3.example.org" and s.https
    assert storage.s3_settings({}).endpoint_url is None


def test_gdal_config_is_complete_and_path_style(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    cfg = storage.gdal_config()
    assert cfg["AWS_S3_ENDPOINT"] == "127.0.0.1:9000"
    assert cfg["AWS_HTTPS"] == "NO" and cfg["AWS_VIRTUAL_HOSTING"] == "FALSE"
    assert cfg["AWS_NO_SIGN_REQUEST"] == "NO"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    cfg = storage.gdal_config()
    # keys that must not survive from an earlier configuration are unset explicitly
    assert cfg["AWS_NO_SIGN_REQUEST"] == "YES" and cfg["AWS_S3_ENDPOINT"] is None and cfg["AWS_ACCESS_KEY_ID"] is None


def test_atomic_output_local(tmp_path: Path) -> None:
    dest = tmp_path / "d" / "x.bin"
    with pytest.raises(RuntimeError):
        with storage.atomic_output(str(dest)) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("boom")
    assert not dest.exists() and list((tmp_path / "d").iterdir()) == []
    with storage.atomic_output(str(dest)) as tmp:
        tmp.write_bytes(b"whole")
        assert not dest.exists()
    assert dest.read_bytes() == b"whole"
    with pytest.raises(StorageError, match="no output file"):
        with storage.atomic_output(str(dest)):
            pass
    assert dest.read_bytes() == b"whole"


def test_unwritable_destination_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot write here"):
        with storage.atomic_output("/proc/forbidden/x.parquet") as tmp:
            tmp.write_bytes(b"x")


def test_local_listing_and_delete(tmp_path: Path) -> None:
    for rel in ("a/1", "a/b/2", "c"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    assert storage.list_prefix(str(tmp_path / "a")) == [str(tmp_path / "a/1"), str(tmp_path / "a/b/2")]
    assert storage.delete_prefix(str(tmp_path / "a")) == 2
    storage.delete(str(tmp_path / "c"))
    storage.delete(str(tmp_path / "c"))  # missing is fine
    assert storage.list_prefix(str(tmp_path)) == []


@pytest.mark.s3
def test_s3_operations(s3: str, tmp_path: Path) -> None:
    url = f"{s3}/p/x.txt"
    assert not storage.exists(url)
    storage.write_bytes(url, b"hello")
    assert storage.exists(url) and storage.size(url) == 5 and storage.read_bytes(url) == b"hello"
    with pytest.raises(RuntimeError):
        with storage.atomic_output(f"{s3}/p/failed.txt") as tmp:
            tmp.write_bytes(b"x")
            raise RuntimeError("boom")
    assert storage.list_prefix(f"{s3}/p") == [url]
    with storage.open_input(url) as f:
        f.seek(1)
        assert f.read(3) == b"ell"
    storage.download_file(url, tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == b"hello"
    storage.write_bytes(f"{s3}/p/q/y", b"1")
    assert storage.delete_prefix(f"{s3}/p") == 2 and storage.list_prefix(s3) == []
    with pytest.raises(StorageError, match="not found"):
        storage.read_bytes(url)


@pytest.mark.s3
def test_https_range_reads(s3: str) -> None:
    # moto serves objects over plain HTTP: read one through the https:// code path (http scheme)
    storage.write_bytes(f"{s3}/pub/data.bin", bytes(range(256)) * 10)
    endpoint = storage.s3_settings().endpoint_url
    url = f"{endpoint}/{storage.parse(s3).bucket}/pub/data.bin"
    storage.s3_client().put_object_acl(Bucket=storage.parse(s3).bucket, Key="pub/data.bin", ACL="public-read")
    assert storage.size(url) == 2560
    with storage.open_input(url) as f:
        f.seek(2550)
        assert f.read() == bytes(range(246, 256))
    with pytest.raises(StorageError):
        storage.read_bytes(f"{endpoint}/nope/missing.bin")

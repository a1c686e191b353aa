"""One storage layer for every step: local paths, ``s3://bucket/key`` and ``http(s)://`` reads.

S3 settings come from the standard environment:

- ``AWS_ENDPOINT_URL`` (``http://host:port`` or ``https://…``) or ``AWS_S3_ENDPOINT`` (``host:port``,
  with ``AWS_HTTPS=NO`` for plain http) for a non-AWS endpoint; such endpoints (Ceph, MinIO, moto)
  are addressed path-style.
- ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (anonymous requests when absent),
  ``AWS_REGION`` / ``AWS_DEFAULT_REGION``.

Writes are atomic: :func:`atomic_output` hands out a local temporary file and publishes it only
when the block succeeds (``os.replace`` locally, a single PUT / completed multipart upload on S3),
so no reader ever sees a half-written object and a failed step leaves nothing at the destination;
a full disk there is one :class:`StorageError` naming the directory.

Transient S3 / HTTP failures (5xx, throttling, dropped connections) are retried with exponential
backoff by every client: boto3 and pyarrow with :data:`cng_datasets.retry.MAX_ATTEMPTS` attempts,
GDAL through ``GDAL_HTTP_MAX_RETRY``, and what they miss by :mod:`cng_datasets.retry`.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from cng_datasets.errors import DataError, StorageError, first_line
from cng_datasets.retry import MAX_ATTEMPTS, RetryingInput, http_transient, with_retries

if TYPE_CHECKING:  # type stubs only (boto3-stubs[s3], a test dependency)
    from mypy_boto3_s3 import S3Client

HTTP_TIMEOUT = 60


@dataclass(frozen=True)
class Location:
    """A parsed URL. ``scheme`` is ``file``, ``s3``, ``http`` or ``https``.

    For ``s3``, ``bucket`` and ``key`` are set; for ``file``, ``path`` is the local path.
    """

    scheme: str
    url: str
    bucket: str = ""
    key: str = ""
    path: str = ""

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def name(self) -> str:
        """The last path component (file name) of the URL."""
        tail = self.path if self.is_local else urlsplit(self.url).path
        return tail.rstrip("/").rsplit("/", 1)[-1]


def parse(url: str | os.PathLike[str]) -> Location:
    """Parse a local path, ``file://``, ``s3://`` or ``http(s)://`` URL.

    >>> parse("s3://bucket/a/b.parquet").key
    'a/b.parquet'
    """
    text = os.fspath(url)
    low = text.lower()
    if low.startswith("s3://"):
        rest = text[5:]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise StorageError(text, "an s3:// URL needs a bucket name")
        return Location("s3", text, bucket=bucket, key=key)
    if low.startswith(("http://", "https://")):
        return Location(low.split(":", 1)[0], text)
    if low.startswith("file://"):
        text = text[7:]
    if "://" in text:
        raise StorageError(text, "unsupported URL scheme (use a local path, s3:// or https://)")
    return Location("file", text, path=text)


def join(base: str, *parts: str) -> str:
    """Join path components onto a local path or URL with ``/``."""
    out = base.rstrip("/") if not parse(base).is_local else base
    for part in parts:
        part = part.strip("/")
        if not part:
            continue
        out = os.path.join(out, part) if parse(base).is_local else f"{out}/{part}"
    return out


# --------------------------------------------------------------------------------------------
# S3 configuration, shared by boto3, pyarrow and GDAL


@dataclass(frozen=True)
class S3Settings:
    """S3 connection settings read from the environment (see module docstring)."""

    endpoint_url: str | None  # scheme://host:port, or None for AWS
    region: str | None
    access_key: str | None
    secret_key: str | None
    session_token: str | None

    @property
    def host(self) -> str | None:
        return urlsplit(self.endpoint_url).netloc if self.endpoint_url else None

    @property
    def https(self) -> bool:
        return not self.endpoint_url or self.endpoint_url.lower().startswith("https://")

    @property
    def anonymous(self) -> bool:
        return not (self.access_key and self.secret_key)


def s3_settings(environ: dict[str, str] | None = None) -> S3Settings:
    """Read :class:`S3Settings` from ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not endpoint and env.get("AWS_S3_ENDPOINT"):
        raw = env["AWS_S3_ENDPOINT"]
        if "://" not in raw:
            https = env.get("AWS_HTTPS", "YES").upper() not in ("NO", "FALSE", "0", "OFF")
            raw = ("https://" if https else "http://") + raw
        endpoint = raw
    return S3Settings(
        endpoint_url=endpoint.rstrip("/") if endpoint else None,
        region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION"),
        access_key=env.get("AWS_ACCESS_KEY_ID"),
        secret_key=env.get("AWS_SECRET_ACCESS_KEY"),
        session_token=env.get("AWS_SESSION_TOKEN"),
    )


def s3_client(settings: S3Settings | None = None) -> S3Client:
    """A boto3 S3 client for ``settings`` (path-style for custom endpoints, unsigned if no keys)."""
    s = settings or s3_settings()
    return _s3_client_cached(s)


@lru_cache(maxsize=4)
def _s3_client_cached(s: S3Settings) -> S3Client:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path" if s.endpoint_url else "auto"},
        retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        signature_version=UNSIGNED if s.anonymous else None,
        connect_timeout=HTTP_TIMEOUT,
        read_timeout=HTTP_TIMEOUT,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=s.endpoint_url,
        region_name=s.region or "us-east-1",
        aws_access_key_id=s.access_key,
        aws_secret_access_key=s.secret_key,
        aws_session_token=s.session_token,
        config=config,
    )


def pyarrow_filesystem(url: str) -> tuple[Any, str]:
    """A ``pyarrow.fs`` filesystem and the path inside it, for reading Parquet with range requests."""
    from pyarrow import fs

    loc = parse(url)
    if loc.is_local:
        return fs.LocalFileSystem(), os.path.abspath(loc.path)
    if loc.scheme == "s3":
        s = s3_settings()
        kwargs: dict[str, Any] = {
            "region": s.region or "us-east-1",
            "anonymous": s.anonymous,
            "connect_timeout": HTTP_TIMEOUT,
            "request_timeout": HTTP_TIMEOUT,
            # the SDK's default is 3 attempts; match boto3's (see also retry.RetryingInput)
            "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS),
        }
        if not s.anonymous:
            kwargs.update(access_key=s.access_key, secret_key=s.secret_key, session_token=s.session_token)
        if s.endpoint_url:
            kwargs.update(endpoint_override=s.host, scheme="https" if s.https else "http")
        return fs.S3FileSystem(**kwargs), f"{loc.bucket}/{loc.key}"
    raise StorageError(url, "no filesystem for http(s) URLs; use open_input()")


def gdal_config() -> dict[str, str | None]:
    """GDAL configuration options for /vsis3 and /vsicurl from the standard environment.

    Every S3 key is present (``None`` unsets it), so applying a new configuration never inherits
    a stale one (e.g. ``AWS_NO_SIGN_REQUEST`` from an earlier anonymous read).

    Note: GDAL's /vsis3 ignores ``AWS_ENDPOINT_URL``; it needs ``AWS_S3_ENDPOINT=host:port``,
    ``AWS_HTTPS`` and ``AWS_VIRTUAL_HOSTING=FALSE`` for path-style endpoints.
    """
    s = s3_settings()
    custom = bool(s.endpoint_url)
    return {
        "GDAL_HTTP_TIMEOUT": str(HTTP_TIMEOUT),
        # GDAL doubles the delay after each retry; it retries these codes and dropped or reset
        # connections (a 503 SlowDown included)
        "GDAL_HTTP_MAX_RETRY": "5",
        "GDAL_HTTP_RETRY_DELAY": "1",
        "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
        "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
        # very large single features (a continent at 10 m) are refused by default
        "OGR_GEOJSON_MAX_OBJ_SIZE": "0",
        "AWS_S3_ENDPOINT": s.host if custom else None,
        "AWS_HTTPS": ("YES" if s.https else "NO") if custom else None,
        "AWS_VIRTUAL_HOSTING": "FALSE" if custom else None,
        "AWS_REGION": s.region,
        "AWS_NO_SIGN_REQUEST": "YES" if s.anonymous else "NO",
        "AWS_ACCESS_KEY_ID": None if s.anonymous else s.access_key,
        "AWS_SECRET_ACCESS_KEY": None if s.anonymous else s.secret_key,
        "AWS_SESSION_TOKEN": None if s.anonymous else s.session_token,
    }


_applied_gdal_config: dict[str, str | None] | None = None


def configure_gdal() -> None:
    """Apply :func:`gdal_config` to the GDAL bundled with pyogrio (cheap when unchanged)."""
    global _applied_gdal_config
    import pyogrio

    config = gdal_config()
    if config != _applied_gdal_config:
        pyogrio.set_gdal_config_options(config)
        pyogrio.vsi_curl_clear_cache()  # sizes / listings cached under the old settings
        _applied_gdal_config = config


def vsi_path(url: str) -> str:
    """The GDAL virtual-file-system path for ``url``; zip archives are opened in place.

    >>> vsi_path("https://example.com/a.zip")
    '/vsizip//vsicurl/https://example.com/a.zip'
    >>> vsi_path("s3://b/k.gpkg")
    '/vsis3/b/k.gpkg'
    """
    if url.startswith("/vsi"):
        return url
    loc = parse(url)
    if loc.is_local:
        base = os.path.abspath(loc.path)
    elif loc.scheme == "s3":
        base = f"/vsis3/{loc.bucket}/{loc.key}"
    else:
        base = f"/vsicurl/{loc.url}"
    if loc.name.lower().endswith(".zip"):
        return f"/vsizip/{base}"
    return base


# --------------------------------------------------------------------------------------------
# Object operations


def _client_error_code(exc: BaseException | None) -> str:
    """The S3 error code of ``exc`` or of the ClientError it wraps (boto3's S3UploadFailedError and
    s3transfer's errors only carry it in their message and their context)."""
    seen = 0
    while exc is not None and seen < 5:
        response = getattr(exc, "response", None)
        if isinstance(response, dict):
            return str(response.get("Error", {}).get("Code", ""))
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return ""


def _s3_error(url: str, exc: Exception) -> StorageError:
    code = _client_error_code(exc)
    if code in ("NoSuchBucket",):
        return StorageError(url, "bucket does not exist")
    if code in ("404", "NoSuchKey", "NotFound"):
        return StorageError(url, "not found")
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"):
        return StorageError(url, f"access denied ({code})")
    return StorageError(url, f"{type(exc).__name__}: {first_line(exc)}")


def exists(url: str) -> bool:
    """Whether an object / file exists at ``url`` (directories count for local paths)."""
    loc = parse(url)
    if loc.is_local:
        return os.path.exists(loc.path)
    return head(url) is not None


def size(url: str) -> int:
    """Size in bytes of the object / file at ``url``."""
    loc = parse(url)
    with _transfer_errors(url):
        if loc.is_local:
            return os.path.getsize(loc.path)
        if loc.scheme == "s3":
            return int(s3_client().head_object(Bucket=loc.bucket, Key=loc.key)["ContentLength"])
        req = urllib.request.Request(loc.url, method="HEAD")
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            return int(resp.headers["Content-Length"])


@dataclass(frozen=True)
class RemoteInfo:
    """What a HEAD request / listing says of a remote object: its validators, as the server gives them."""

    size: int | None
    etag: str | None
    modified: str | None


def head(url: str) -> RemoteInfo | None:
    """Size, ETag and Last-Modified of the s3:// or http(s):// object ``url``; None when it does
    not exist (404). :class:`StorageError` for any other failure."""
    loc = parse(url)
    if loc.is_local:
        raise StorageError(url, "head() is for remote objects")
    if loc.scheme == "s3":
        from botocore.exceptions import ClientError

        try:
            h = s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise _s3_error(url, exc) from exc
        except Exception as exc:
            raise _s3_error(url, exc) from exc
        modified = h.get("LastModified")
        return RemoteInfo(int(h["ContentLength"]), h.get("ETag"), modified.isoformat() if modified else None)
    try:
        req = urllib.request.Request(loc.url, method="HEAD")
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
            hd = resp.headers
            length = hd.get("Content-Length")
            return RemoteInfo(int(length) if length else None, hd.get("ETag"), hd.get("Last-Modified"))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise StorageError(url, f"HTTP {exc.code}") from exc
    except OSError as exc:
        raise StorageError(url, f"unreachable ({exc})") from exc


#: The CORS rule ``--cors`` adds: browsers may GET / HEAD any object with Range requests (PMTiles
#: readers, the map page served from elsewhere) and read the headers those readers need.
CORS_RULE: dict[str, Any] = {
    "ID": "cng-datasets-read-ranges",
    "AllowedMethods": ["GET", "HEAD"],
    "AllowedOrigins": ["*"],
    "AllowedHeaders": ["Range", "If-Match", "If-None-Match"],
    "ExposeHeaders": ["ETag", "Content-Range", "Content-Length", "Accept-Ranges"],
    "MaxAgeSeconds": 3600,
}


def allow_browser_reads(url: str) -> bool:
    """Add :data:`CORS_RULE` to the CORS configuration of the bucket of the s3:// ``url``, keeping
    the rules it has; True when it was added, False when it was there already."""
    from botocore.exceptions import ClientError

    loc = parse(url)
    if loc.scheme != "s3":
        raise StorageError(url, "CORS applies to s3:// destinations")
    client = s3_client()
    try:
        rules = client.get_bucket_cors(Bucket=loc.bucket).get("CORSRules", [])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchCORSConfiguration":
            raise _s3_error(url, exc) from exc
        rules = []
    if any(r.get("ID") == CORS_RULE["ID"] for r in rules):
        return False
    try:
        config: Any = {"CORSRules": [*rules, CORS_RULE]}  # CORS_RULE matches boto3's CORSRuleTypeDef
        client.put_bucket_cors(Bucket=loc.bucket, CORSConfiguration=config)
    except Exception as exc:
        raise _s3_error(url, exc) from exc
    return True


def list_objects(url: str) -> list[tuple[str, RemoteInfo]]:
    """Every object below the s3:// prefix ``url``: (key relative to the prefix, its size and ETag)."""
    loc = parse(url)
    if loc.scheme != "s3":
        raise StorageError(url, "list_objects() is for s3:// prefixes")
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    out: list[tuple[str, RemoteInfo]] = []
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                out.append((obj["Key"][len(prefix) :], RemoteInfo(int(obj["Size"]), str(obj.get("ETag", "")), None)))
    except Exception as exc:
        raise _s3_error(url, exc) from exc
    return out


def list_prefix(url: str) -> list[str]:
    """All object URLs below the prefix ``url`` (recursively), sorted.

    For local paths, the files below the directory ``url``.
    """
    loc = parse(url)
    if loc.is_local:
        root = Path(loc.path)
        if not root.is_dir():
            return []
        return sorted(str(p) for p in root.rglob("*") if p.is_file())
    if loc.scheme != "s3":
        raise StorageError(url, "cannot list an http(s) URL")
    prefix = loc.key.rstrip("/") + "/" if loc.key else ""
    out: list[str] = []
    try:
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix)
        for page in pages:
            out.extend(f"s3://{loc.bucket}/{obj['Key']}" for obj in page.get("Contents", []))
    except Exception as exc:
        raise _s3_error(url, exc) from exc
    return sorted(out)


def delete(url: str) -> None:
    """Delete one object / file; missing is not an error."""
    loc = parse(url)
    if loc.is_local:
        try:
            os.remove(loc.path)
        except FileNotFoundError:
            pass
        return
    if loc.scheme != "s3":
        raise StorageError(url, "cannot delete an http(s) URL")
    try:
        s3_client().delete_object(Bucket=loc.bucket, Key=loc.key)
    except Exception as exc:
        raise _s3_error(url, exc) from exc


def delete_prefix(url: str) -> int:
    """Delete everything below the prefix / directory ``url``; return how many objects went."""
    loc = parse(url)
    if loc.is_local:
        if not os.path.isdir(loc.path):
            return 0
        n = sum(1 for p in Path(loc.path).rglob("*") if p.is_file())
        shutil.rmtree(loc.path)
        return n
    keys = [parse(u).key for u in list_prefix(url)]
    client = s3_client()
    for i in range(0, len(keys), 1000):
        batch = keys[i : i + 1000]
        try:
            answer = client.delete_objects(
                Bucket=loc.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        except Exception as exc:
            raise _s3_error(url, exc) from exc
        failed = answer.get("Errors") or []
        if failed:
            first = failed[0]
            raise StorageError(
                url,
                (
                    f"{len(failed)} object(s) not deleted, e.g. {first.get('Key')}: "
                    f"{first.get('Code')} {first.get('Message', '')}"
                ).rstrip(),
            )
    return len(keys)


@contextmanager
def _transfer_errors(url: str) -> Iterator[None]:
    """Map local, HTTP and S3 failures of a transfer to one-line StorageErrors naming ``url``."""
    try:
        yield
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise StorageError(url, "not found") from exc
    except urllib.error.HTTPError as exc:
        raise StorageError(url, f"HTTP {exc.code}") from exc
    except OSError as exc:
        raise StorageError(url, f"unreachable ({exc})") from exc
    except Exception as exc:
        raise _s3_error(url, exc) from exc


def read_bytes(url: str) -> bytes:
    """The whole content of a (small) object / file."""
    loc = parse(url)
    with _transfer_errors(url):
        if loc.is_local:
            return Path(loc.path).read_bytes()
        if loc.scheme == "s3":
            return s3_client().get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
        with urllib.request.urlopen(loc.url, timeout=HTTP_TIMEOUT) as resp:
            body: bytes = resp.read()  # urlopen() is typed as returning Any
            return body


def write_bytes(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` atomically."""
    with atomic_output(url) as tmp:
        tmp.write_bytes(data)


def upload_file(local: str | os.PathLike[str], url: str) -> None:
    """Copy a local file to ``url`` (atomic at the destination)."""
    loc = parse(url)
    if loc.is_local:
        with atomic_output(url) as tmp:
            shutil.copyfile(local, tmp)
        return
    if loc.scheme != "s3":
        raise StorageError(url, "cannot write to an http(s) URL")
    try:
        # A multipart upload becomes visible only when completed: atomic for readers.
        s3_client().upload_file(os.fspath(local), loc.bucket, loc.key)
    except Exception as exc:
        raise _s3_error(url, exc) from exc


def download_file(url: str, local: str | os.PathLike[str]) -> None:
    """Copy the object at ``url`` to a local file."""
    loc = parse(url)
    with _transfer_errors(url):
        if loc.is_local:
            shutil.copyfile(loc.path, local)
        elif loc.scheme == "s3":
            s3_client().download_file(loc.bucket, loc.key, os.fspath(local))
        else:
            with urllib.request.urlopen(loc.url, timeout=HTTP_TIMEOUT) as resp, open(local, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk (or the quota) is full; pyarrow's write errors carry the errno
    in their text only."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


@contextmanager
def atomic_output(url: str, suffix: str = "") -> Iterator[Path]:
    """Yield a local temporary path; publish it at ``url`` only if the block succeeds.

    Locally the temporary file sits next to the destination (same filesystem) and is renamed into
    place; for S3 it is uploaded when the block ends. On any exception the temporary file is removed
    and nothing appears at ``url``.

    Example::

        with atomic_output("s3://bucket/ds.parquet", suffix=".parquet") as tmp:
            write_parquet(tmp)
    """
    loc = parse(url)
    if loc.scheme not in ("file", "s3"):
        raise StorageError(url, "cannot write to an http(s) URL")
    try:
        if loc.is_local:
            dest = Path(loc.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent / f".{dest.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}"
            if not os.access(dest.parent, os.W_OK):
                raise PermissionError(13, "permission denied", str(dest.parent))
        else:
            tmpdir = Path(tempfile.mkdtemp(prefix="cng-"))
            tmp = tmpdir / (uuid.uuid4().hex[:12] + suffix)
    except OSError as exc:
        why = exc.strerror or str(exc)
        if isinstance(exc, (FileExistsError, NotADirectoryError)):  # a file where a folder must be
            blocker = next((q for q in Path(loc.path).parents if q.exists() and not q.is_dir()), None)
            why = f"{blocker} is a file, not a directory" if blocker else why
        raise StorageError(url, f"cannot write here ({why})") from exc
    try:
        try:
            yield tmp
            if not tmp.exists():
                raise StorageError(url, "the step produced no output file")
            if loc.is_local:
                os.replace(tmp, loc.path)
            else:
                upload_file(tmp, url)
        except Exception as exc:  # an OSError, or a tool's error that quotes one
            if is_disk_full(exc):
                raise StorageError(url, f"no space left on device in {tmp.parent}") from exc
            raise
    finally:
        if tmp.exists():
            tmp.unlink()
        if not loc.is_local:
            shutil.rmtree(tmp.parent, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# Seekable input for readers that need random access (Parquet footers, zip directories)


class HttpRangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests (no whole-file download)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._pos = 0
        self._size = size(url)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        req = urllib.request.Request(self.url, headers={"Range": f"bytes={self._pos}-{self._pos + want - 1}"})

        def get() -> tuple[int, bytes]:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as resp:
                return resp.status, resp.read()

        try:
            status, data = with_retries(get, http_transient)
        except OSError as exc:
            raise StorageError(self.url, f"range read failed ({exc})") from exc
        if status == 200:  # server ignored Range: take our slice of the full body
            data = data[self._pos : self._pos + want]
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n


def open_random_access(url: str) -> Any:
    """A seekable file for readers that jump around (Parquet footers and row groups): pyarrow's
    filesystem for local paths, pyarrow's S3 client with retried reads for s3://, :func:`open_input`'s
    range reader for http(s).

    Unlike :func:`open_input`, local and S3 failures surface as pyarrow / OS errors
    (``FileNotFoundError`` for a missing object), for the caller to word.
    """
    loc = parse(url)
    if loc.scheme in ("http", "https"):
        return open_input(url)
    if loc.scheme == "s3":
        filesystem, path = pyarrow_filesystem(url)
        return RetryingInput(filesystem, path)
    filesystem, path = pyarrow_filesystem(url)
    return filesystem.open_input_file(path)


def open_parquet(url: str) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` over ``url`` (local, s3://, http(s)://) that reads the
    footer and the row groups it is asked for, never the whole file. The one way every step and
    check opens a Parquet input, so they fail alike: :class:`StorageError` when it is missing or
    cannot be reached (another attempt may succeed), :class:`DataError` when it is there but not
    Parquet (exit 65)."""
    import pyarrow.parquet as pq

    try:
        handle = open_random_access(url)
    except StorageError:
        raise
    except FileNotFoundError as exc:
        raise StorageError(url, "not found") from exc
    except OSError as exc:
        text = first_line(exc)
        if "does not exist" in text or "not found" in text.lower() or "NoSuchKey" in text:
            raise StorageError(url, "not found") from exc
        raise StorageError(url, text) from exc
    try:
        return pq.ParquetFile(handle)
    except OSError as exc:  # the transfer failed while reading the footer
        handle.close()
        raise StorageError(url, first_line(exc)) from exc
    except Exception as exc:  # ArrowInvalid (a ValueError): there, but not Parquet
        handle.close()
        raise DataError(f"{url}: not a readable Parquet file ({first_line(exc)})") from exc


def open_input(url: str) -> IO[bytes]:
    """A seekable binary file object for ``url`` that reads ranges on demand."""
    loc = parse(url)
    try:
        if loc.is_local:
            return open(loc.path, "rb")
        if loc.scheme == "s3":
            filesystem, path = pyarrow_filesystem(url)
            return io.BufferedReader(RetryingInput(filesystem, path), buffer_size=1 << 20)
        return io.BufferedReader(HttpRangeFile(url), buffer_size=1 << 20)
    except FileNotFoundError as exc:
        raise StorageError(url, "not found") from exc
    except OSError as exc:
        raise StorageError(url, first_line(exc)) from exc

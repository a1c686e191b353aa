"""Shared fixtures: real sample data, a real S3 endpoint (moto server on 127.0.0.1) and a clean
environment for every test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).parent / "data"

_AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_S3_ENDPOINT",
    "AWS_HTTPS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_VIRTUAL_HOSTING",
    "AWS_NO_SIGN_REQUEST",
)


def pytest_report_header(config: pytest.Config) -> list[str]:
    import pyarrow
    import pyogrio
    import shapely

    return [
        f"GDAL {pyogrio.__gdal_version_string__}, pyogrio {pyogrio.__version__}, "
        f"pyarrow {pyarrow.__version__}, shapely {shapely.__version__} (GEOS {shapely.geos_version_string})"
    ]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's AWS settings or kubeconfig."""
    for var in _AWS_VARS + ("KUBECONFIG", "JOB_COMPLETION_INDEX", "CNG_DATASETS_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    from cng_datasets import storage

    storage._s3_client_cached.cache_clear()


@pytest.fixture(autouse=True)
def restore_logging():
    """The CLI's setup_logging sets the package logger's level, propagation and handlers and the
    warnings display; undo it after every test so no test depends on which ran before it."""
    import logging
    import warnings

    logger = logging.getLogger("cng_datasets")
    saved = (list(logger.handlers), logger.propagate, logger.level, warnings.showwarning)
    yield
    logger.handlers[:] = saved[0]
    logger.propagate, logger.level = saved[1], saved[2]
    warnings.showwarning = saved[3]


def data_file(name: str) -> Path:
    """A sample file bundled in tests/data (a missing one is an error, never a skip)."""
    path = DATA / name
    if not path.exists():
        raise FileNotFoundError(f"tests/data/{name} is missing: the suite uses bundled data only")
    return path


#: GeoNames cities sample (tests/data/derive_cities_sample.py) and its row count, counted with
#: Python's csv module rather than the GDAL reader under test.
CITIES = "rg_cities_sample.csv"


def csv_rows(name: str) -> int:
    import csv

    with open(DATA / name, newline="", encoding="utf-8") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def s3_server() -> str:
    """A real S3 endpoint over HTTP: a moto server in its own process on 127.0.0.1."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise RuntimeError("moto server did not start")
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """Point the standard AWS environment at the local endpoint and create a fresh bucket.

    Returns ``s3://<bucket>``.
    """
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    from cng_datasets import storage

    storage._s3_client_cached.cache_clear()
    bucket = "test-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    client = storage.s3_client()
    client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture
def cli_run(tmp_path: Path):
    """Run the real console script in a subprocess; returns the CompletedProcess."""

    def run(*args: str, env: dict[str, str] | None = None, check: bool = False, timeout: int = 600):
        exe = shutil.which("cng-datasets") or ""
        cmd = [exe] if exe else [sys.executable, "-m", "cng_datasets"]
        full_env = dict(os.environ)
        full_env.update(env or {})
        proc = subprocess.run(
            cmd + [str(a) for a in args], capture_output=True, text=True, env=full_env, timeout=timeout, cwd=tmp_path
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    return run


def _convert(source: Path, dest: Path) -> Path:
    """The real GeoParquet of `convert` for ``source``."""
    import warnings

    from cng_datasets.errors import AssumedCrsWarning
    from cng_datasets.steps.convert import convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AssumedCrsWarning)  # the CSV has no CRS: lon/lat it is
        convert([str(source)], str(dest))
    return dest


@pytest.fixture(scope="session")
def parquets(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Converted sample datasets, each converted once per session on first use."""
    root = tmp_path_factory.mktemp("parquet")
    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            source = data_file(name)
            cache[name] = _convert(source, root / (name.split(".")[0] + ".parquet"))
        return cache[name]

    return get

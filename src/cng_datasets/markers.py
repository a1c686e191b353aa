"""Completion markers of a local run (:func:`cng_datasets.local.run_local`) and the identities
they record.

A finished step leaves ``<root>/<dataset>/_cng/<step>.json`` (:func:`marker_url`,
:func:`write_marker`): its argv, the :func:`identity` of its inputs and outputs, its run time. The
hex step leaves one marker per finished chunk under ``<chunks>/_done/``
(:func:`chunk_done_markers`); repartition publishes the hex output with ``<hex>/_SUCCESS.json``
(:func:`hex_published`). Deciding whether a step may be skipped is the runner's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cng_datasets import __version__, storage
from cng_datasets.config import WorkflowConfig
from cng_datasets.errors import StorageError
from cng_datasets.steps.hex import CHUNK_MARKER_RE, MARKER_DIR
from cng_datasets.steps.repartition import read_success

#: Marker format version (a marker of another version is ignored: the step runs again).
MARKER_VERSION = 1


def _stat_local(path: str) -> dict[str, Any] | None:
    p = Path(path)
    if p.is_dir():
        files = [f for f in p.rglob("*") if f.is_file()]
        return {"files": len(files), "size": sum(f.stat().st_size for f in files)}
    if not p.exists():
        return None
    st = p.stat()
    ident: dict[str, Any] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    # A Shapefile is several files: its .dbf / .prj changing changes the source.
    if p.suffix.lower() == ".shp":
        for side in sorted(p.parent.glob(p.stem + ".*")):
            if side != p and side.is_file():
                s2 = side.stat()
                ident[side.suffix.lower()] = [s2.st_size, s2.st_mtime_ns]
    return ident


def identity(url: str) -> dict[str, Any] | None:
    """What identifies the current content of ``url`` (None when absent or unknowable).

    Local file: size and mtime (and the Shapefile's side files); local directory: file count and
    total size; S3 object: size and ETag; S3 prefix: object count; http(s): size, ETag and
    Last-Modified from a HEAD request.
    """
    loc = storage.parse(url)
    try:
        if loc.is_local:
            return _stat_local(loc.path)
        if loc.scheme == "s3":
            from botocore.exceptions import ClientError

            try:
                head = storage.s3_client().head_object(Bucket=loc.bucket, Key=loc.key)
                return {"size": int(head["ContentLength"]), "etag": head.get("ETag")}
            except ClientError:
                n = len(storage.list_prefix(url))
                return {"files": n} if n else None
        import urllib.request

        req = urllib.request.Request(loc.url, method="HEAD")
        with urllib.request.urlopen(req, timeout=storage.HTTP_TIMEOUT) as resp:
            h = resp.headers
            return {"size": h.get("Content-Length"), "etag": h.get("ETag"), "modified": h.get("Last-Modified")}
    except (OSError, StorageError):
        return None


def present(url: str) -> bool:
    """Whether an output (a file, or a non-empty directory / prefix) exists."""
    loc = storage.parse(url)
    if loc.is_local:
        p = Path(loc.path)
        return p.is_file() or (p.is_dir() and any(f.is_file() for f in p.rglob("*")))
    return storage.exists(url) or bool(storage.list_prefix(url))


def marker_url(config: WorkflowConfig, name: str) -> str:
    """Where the marker ``name`` (``convert``, ``hex-chunks``, …) of ``config``'s dataset lives."""
    return storage.join(config.root_url, config.dataset_path, "_cng", f"{name}.json")


def read_marker(url: str) -> dict[str, Any] | None:
    """The marker at ``url``; None when absent, unreadable or of another :data:`MARKER_VERSION`."""
    try:
        data = json.loads(storage.read_bytes(url))
    except (StorageError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("marker_version") != MARKER_VERSION:
        return None
    return data


def write_marker(url: str, data: dict[str, Any]) -> None:
    """Write ``data`` as the marker at ``url`` (atomically), stamped with the marker and package versions."""
    body = {"marker_version": MARKER_VERSION, "cng_datasets": __version__, **data}
    storage.write_bytes(url, json.dumps(body, indent=1, sort_keys=True).encode())


#: The hex step's per-chunk completion markers: ``<chunks>/_done/chunk-<index>.json``.
DONE_DIR = MARKER_DIR


def chunk_done_markers(chunks_url: str) -> dict[int, str]:
    """Chunk index → URL of its completion marker, from ``<chunks>/_done/``.

    Only names matching the hex step's :data:`~cng_datasets.steps.hex.CHUNK_MARKER_RE`
    (``chunk-00003.json``) count: a temporary file left by an interrupted write
    (``.chunk-00003.json.<hex>.tmp``) does not mark chunk 3 done.
    """
    done: dict[int, str] = {}
    for url in storage.list_prefix(storage.join(chunks_url, DONE_DIR)):
        m = CHUNK_MARKER_RE.match(storage.parse(url).name)
        if m:
            done[int(m.group(1))] = url
    return done


def hex_published(hex_url: str) -> bool:
    """Whether repartition finished the hex output ``hex_url``: its ``_SUCCESS.json`` marker
    exists, is readable and lists files (written last, removed first by every repartition)."""
    return read_success(hex_url) is not None


def chunk_stats(marker: str | None) -> dict[str, int]:
    """Features and cells of a finished chunk, when its marker is JSON that tells them."""
    if not marker:
        return {}
    try:
        data = json.loads(storage.read_bytes(marker))
    except (StorageError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    out: dict[str, int] = {}
    for key, names in (("features", ("features", "feature_count", "rows_in")), ("cells", ("cells", "rows", "cell_count"))):
        for n in names:
            if isinstance(data.get(n), int):
                out[key] = int(data[n])
                break
    return out

"""Completion markers of a local run (:func:`cng_datasets.local.run_local`) and the identities
they record.

A finished step leaves ``<root>/<dataset>/_cng/<step>.json`` (:func:`marker_url`,
:func:`write_marker`): its argv, the :func:`identity` of its inputs and outputs, its run time. The
hex step leaves one marker per finished chunk under ``<chunks>/_done/``
(:func:`chunk_done_markers`); repartition publishes the hex output with ``<hex>/_SUCCESS.json``
(:func:`hex_published`). Deciding whether a step may be skipped is the runner's.

Identities (:mod:`cng_datasets.identity`) are of content, not of size and mtime.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cng_datasets import __version__, contract, storage
from cng_datasets.config import WorkflowConfig
from cng_datasets.contract import CHUNK_MARKER_DIR, CHUNK_MARKER_RE
from cng_datasets.errors import StorageError
from cng_datasets.identity import HASH, file_digest, forget_hashes, identity
from cng_datasets.steps.repartition import read_success

__all__ = [
    "HASH",
    "MARKER_VERSION",
    "chunk_done_markers",
    "chunk_stats",
    "file_digest",
    "forget_hashes",
    "hex_published",
    "identity",
    "marker_url",
    "present",
    "read_marker",
    "write_marker",
]

#: Marker format version (a marker of another version is ignored: the step runs again).
MARKER_VERSION = 2  # 2: identities by content (hash / ETag), not size and mtime


def present(url: str) -> bool:
    """Whether an output (a file, or a non-empty directory / prefix) exists."""
    loc = storage.parse(url)
    if loc.is_local:
        p = Path(loc.path)
        return p.is_file() or (p.is_dir() and any(f.is_file() for f in p.rglob("*")))
    return storage.exists(url) or bool(storage.list_prefix(url))


def marker_url(config: WorkflowConfig, name: str) -> str:
    """Where the marker ``name`` (``convert``, ``hex-chunks``, …) of ``config``'s dataset lives."""
    return contract.run_marker_url(config.root_url, config.dataset_path, name)


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
DONE_DIR = CHUNK_MARKER_DIR


def chunk_done_markers(chunks_url: str) -> dict[int, str]:
    """Chunk index → URL of its completion marker, from ``<chunks>/_done/``.

    Only names matching :data:`~cng_datasets.contract.CHUNK_MARKER_RE`
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
    for key, names in (
        ("features", ("features", "feature_count", "rows_in")),
        ("cells", ("cells", "rows", "cell_count")),
    ):
        for n in names:
            if isinstance(data.get(n), int):
                out[key] = int(data[n])
                break
    return out

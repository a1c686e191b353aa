"""Completion markers of a local run (:func:`cng_datasets.local.run_local`) and the identities
they record.

A finished step leaves ``<root>/<dataset>/_cng/<step>.json`` (:func:`marker_url`,
:func:`write_marker`): its argv, the :func:`identity` of its inputs and outputs, its run time. The
hex step leaves one marker per finished chunk under ``<chunks>/_done/``
(:func:`chunk_done_markers`); repartition publishes the hex output with ``<hex>/_SUCCESS.json``
(:func:`hex_published`). Deciding whether a step may be skipped is the runner's.

Identities are of content, not of size and mtime (which ``cp -p`` and ``rsync -t`` keep while the
bytes change): a hash of local files, ETags on S3 and HTTP.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cng_datasets import __version__, contract, storage
from cng_datasets.config import WorkflowConfig
from cng_datasets.contract import CHUNK_MARKER_DIR, CHUNK_MARKER_RE
from cng_datasets.errors import StorageError
from cng_datasets.steps.repartition import read_success

#: Marker format version (a marker of another version is ignored: the step runs again).
MARKER_VERSION = 2  # 2: identities by content (hash / ETag), not size and mtime


#: Content digest of local files: SHA-256 runs at ~1.4 GB/s on one core here (SHA-NI through
#: OpenSSL; BLAKE2b 0.8 GB/s, MD5 0.65 GB/s): 0.5 s for a 700 MB source in the page cache.
HASH = "sha256"
_BLOCK = 1 << 20

#: (path, dev, inode, size, mtime, ctime) → digest, within one run (:func:`forget_hashes`): the
#: runner asks for the same file's identity several times in a run; each run hashes it again.
_digests: dict[tuple[Any, ...], str] = {}


def forget_hashes() -> None:
    """Forget the digests computed so far, so the next :func:`identity` reads every file again."""
    _digests.clear()


def file_digest(path: str | Path) -> str:
    """The :data:`HASH` hex digest of a local file's content (streamed in 1 MiB blocks)."""
    st = os.stat(path)
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _digests:
        h = hashlib.new(HASH)
        buf = bytearray(_BLOCK)
        view = memoryview(buf)
        with open(path, "rb") as f:
            while n := f.readinto(buf):
                h.update(view[:n])
        _digests[key] = h.hexdigest()
    return _digests[key]


def _tree_digest(items: list[tuple[str, int, str]]) -> str:
    h = hashlib.new(HASH)
    for name, size, digest in sorted(items):
        h.update(f"{name}\0{size}\0{digest}\n".encode())
    return h.hexdigest()


def _identity_local(path: str) -> dict[str, Any] | None:
    p = Path(path)
    if p.is_dir():  # a FileGDB source, the hex output: every file's content
        files = sorted(f for f in p.rglob("*") if f.is_file())
        items = [(f.relative_to(p).as_posix(), f.stat().st_size, file_digest(f)) for f in files]
        return {"files": len(items), "size": sum(i[1] for i in items), HASH: _tree_digest(items)}
    if not p.is_file():
        return None
    ident: dict[str, Any] = {"size": p.stat().st_size, HASH: file_digest(p)}
    # A Shapefile is several files: its .dbf / .prj / .cpg changing changes the source.
    if p.suffix.lower() == ".shp":
        prefix = p.stem + "."
        for side in sorted(p.parent.iterdir()):
            if side != p and side.name.startswith(prefix) and side.is_file():
                ident[side.name[len(p.stem) :].lower()] = [side.stat().st_size, file_digest(side)]
    return ident


def _identity_s3(url: str) -> dict[str, Any] | None:
    info = storage.head(url)
    if info is not None:
        return {"size": info.size, "etag": info.etag, "modified": info.modified}
    # a prefix (a FileGDB directory, the hex output): every object's size and ETag
    items = [(key, o.size or 0, o.etag or "") for key, o in storage.list_objects(url)]
    if not items:
        return None
    return {"files": len(items), "size": sum(i[1] for i in items), "etags": _tree_digest(items)}


def identity(url: str) -> dict[str, Any] | None:
    """What identifies the current *content* of ``url``; None when absent or unknowable.

    Local file: size and :data:`HASH` of its bytes (a Shapefile also of its side files), so a
    different content copied over it with the same size and mtime (``cp -p``, ``rsync -t``) is
    seen; local directory: the digest of every file's name, size and hash. S3 object: size, ETag
    and Last-Modified; S3 prefix: the digest of every object's key, size and ETag. http(s): size,
    ETag and Last-Modified from a HEAD request, or None when the server sends neither validator
    (then nothing proves the content unchanged: the step runs again).
    """
    loc = storage.parse(url)
    try:
        if loc.is_local:
            return _identity_local(loc.path)
        if loc.scheme == "s3":
            return _identity_s3(url)
        info = storage.head(url)
        if info is None or (not info.etag and not info.modified):
            return None
        return {"size": info.size, "etag": info.etag, "modified": info.modified}
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

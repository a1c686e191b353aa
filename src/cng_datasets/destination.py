"""The destination of a local run, before anything is written and after a fault.

- :func:`check_destination`: a ``--bucket`` (or any folder on the way to an output) that is a
  file, or an output path that is a directory, is refused in one line before anything is written.
- :func:`remove_stale_temporaries`: what interrupted writers leave behind at the destination,
  removed under the dataset's lease (so no live writer of ours owns them). Only our own names:
  :func:`cng_datasets.storage.atomic_output`'s ``.<name>.<12 hex>.tmp[<suffix>]`` files (they must
  sit next to their destination for the final rename), the hex step's former private directory
  ``<chunks>/_tmp/`` and the pmtiles step's former ``.cng-tippecanoe-XXXXXXXX/`` work directory
  next to the PMTiles (both are in the system temp dir now). S3 needs none of this: an upload
  becomes visible only when complete.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from cng_datasets import contract, storage
from cng_datasets.config import WorkflowConfig
from cng_datasets.errors import StorageError, UsageError

#: storage.atomic_output's temporary files: ``.<name>.<uuid4 hex[:12]>.tmp<suffix>``.
ATOMIC_TMP_RE = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{12}\.tmp(\.[A-Za-z0-9]+)?$")
#: Older versions' tippecanoe work directory (tempfile.TemporaryDirectory(prefix=...)).
TIPPECANOE_TMP_RE = re.compile(r"^\.cng-tippecanoe-[a-z0-9_]{8}$")


def lease_url(config: WorkflowConfig) -> str:
    return contract.run_dir_url(config.root_url, config.dataset_path, contract.LEASE_NAME)


def _dirs_and_files(config: WorkflowConfig) -> tuple[list[str], list[str]]:
    dataset_dir = storage.join(config.root_url, config.dataset_path)
    run_dir = contract.run_dir_url(config.root_url, config.dataset_path)
    dirs = [config.root_url, dataset_dir, run_dir, config.chunks_url, config.hex_url]
    return dirs, [config.parquet_url, config.pmtiles_url]


def check_destination(config: WorkflowConfig) -> None:
    """Refuse a local destination that cannot hold the outputs, before anything is written.

    Raises :class:`~cng_datasets.errors.UsageError` naming the path when a folder we would
    create (the root, ``<dataset>/``, ``_cng/``, ``chunks/``, ``hex/``) or one of its parents is
    a file, or when the GeoParquet / PMTiles path is a directory.
    """
    if not config.is_local:
        return
    root = Path(os.path.abspath(config.root_url))
    dirs, files = _dirs_and_files(config)
    for d in dirs:
        p = Path(os.path.abspath(d))
        # the nearest existing folder on the way must be a directory
        for q in (p, *p.parents):
            if q.exists() or q.is_symlink():
                if not q.is_dir():
                    what = "--bucket" if q == root or q in root.parents else "the destination folder"
                    raise UsageError(f"{what} {q} is a file, not a directory: outputs cannot be written below it")
                break
    for f in files:
        if os.path.isdir(f):
            raise UsageError(f"{f} is a directory: the output file cannot be written there")


def make_root(config: WorkflowConfig) -> None:
    """Create the local root directory (one line naming it when that fails)."""
    if not config.is_local:
        return
    try:
        Path(config.root_url).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(config.root_url, f"cannot create the directory ({exc.strerror or exc})") from exc


def remove_stale_temporaries(config: WorkflowConfig) -> list[str]:
    """Remove what interrupted writes of this dataset left at a local destination; return it.

    Call it only while holding the dataset's lease with no step running. Looks only at our own
    names (module docstring) in the folder of the GeoParquet / PMTiles (the temporaries named after
    this dataset's files) and below ``_cng/``, ``chunks/`` and ``hex/``; never elsewhere in the
    dataset's folder, which may hold other datasets (``a`` and ``a/b``).
    """
    if not config.is_local:
        return []
    removed: list[str] = []
    dataset_dir = Path(storage.join(config.root_url, config.dataset_path))
    outputs = {Path(config.parquet_url).name, Path(config.pmtiles_url).name}
    parent = Path(config.parquet_url).parent
    if parent.is_dir():
        for p in parent.iterdir():
            m = ATOMIC_TMP_RE.match(p.name)
            if (m and m.group("name") in outputs and p.is_file()) or (TIPPECANOE_TMP_RE.match(p.name) and p.is_dir()):
                _remove(p, removed)
    for sub in (contract.RUN_DIR, contract.CHUNKS_DIR, contract.HEX_DIR):
        top = dataset_dir / sub
        if not top.is_dir():
            continue
        legacy = top / "_tmp"
        if sub == "chunks" and legacy.is_dir():
            _remove(legacy, removed)
        for p in sorted(top.rglob(".*")):
            if p.is_file() and ATOMIC_TMP_RE.match(p.name):
                _remove(p, removed)
    return removed


def _remove(p: Path, removed: list[str]) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
        removed.append(str(p))
    except FileNotFoundError:
        pass


def clean(config: WorkflowConfig) -> None:
    """Remove the markers (but not the lease), hex chunks and hex partitions of ``config``'s
    dataset (``run --force``)."""
    keep = lease_url(config)
    for url in storage.list_prefix(contract.run_dir_url(config.root_url, config.dataset_path)):
        if url != keep:
            storage.delete(url)
    storage.delete_prefix(config.chunks_url)
    storage.delete_prefix(config.hex_url)

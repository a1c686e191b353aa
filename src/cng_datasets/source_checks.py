"""Checks on a source before and while GDAL reads it: one clear line instead of GDAL's text.

- :func:`sniff`: the first bytes of a file or URL, with one-line errors for an empty file, an
  HTML page saved under a data name, a zip or GeoPackage that is not one, and a URL that
  answers 403/404 or does not answer at all (bounded timeout).
- :func:`explain_gdal_error`: GDAL's open errors reworded (truncated GeoPackage, missing .shx).
- :func:`guarded`: iterate a GDAL Arrow stream and fail on any CE_Failure that GDAL logged while
  producing it (pyogrio swallows those unless the call also returns an error code); GDAL
  warnings are logged.
- :class:`CsvCoordinates`: the raw text of a CSV's lon/lat columns, for the rows where GDAL made
  no point, so an unparseable coordinate is told apart from an empty one.
"""

from __future__ import annotations

import logging
import re
import socket
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cng_datasets import storage
from cng_datasets.errors import SourceError, first_line

log = logging.getLogger("cng_datasets")

#: Seconds a source URL may take to answer the first-bytes check.
SNIFF_TIMEOUT = 30.0
SNIFF_BYTES = 4096

_KIND_BY_SUFFIX = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".geojsonl": "GeoJSONSeq",
    ".geojsons": "GeoJSONSeq",
    ".topojson": "TopoJSON",
    ".csv": "CSV",
    ".tsv": "CSV",
    ".gpkg": "GeoPackage",
    ".zip": "zip",
    ".shp": "Shapefile",
    ".fgb": "FlatGeobuf",
    ".kml": "KML",
    ".gml": "GML",
    ".pbf": "OSM PBF",
    ".osm": "OSM XML",
    ".parquet": "Parquet",
    ".geoparquet": "Parquet",
}


def kind_of(url: str) -> str:
    """What the file name says the file is (``GeoJSON``, ``zip``, …) or ``data``."""
    name = storage.parse(url).name.lower()
    for suffix, kind in _KIND_BY_SUFFIX.items():
        if name.endswith(suffix):
            return kind
    return "data"


def _head(url: str) -> bytes | None:
    """Up to :data:`SNIFF_BYTES` first bytes; ``None`` where not checked (directories, S3)."""
    loc = storage.parse(url)
    if loc.is_local:
        path = Path(loc.path)
        if not path.is_file():
            return None
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    if loc.scheme == "s3":
        return _s3_head(loc.bucket, loc.key)
    if loc.scheme not in ("http", "https"):
        return None
    req = urllib.request.Request(loc.url, headers={"Range": f"bytes=0-{SNIFF_BYTES - 1}"})
    try:
        with urllib.request.urlopen(req, timeout=SNIFF_TIMEOUT) as resp:
            return bytes(resp.read(SNIFF_BYTES))
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416:  # nothing to give from byte 0: the object is empty
            return b""
        raise SourceError(url, f"the server answered HTTP {exc.code} {exc.reason}".rstrip()) from None
    except TimeoutError:
        raise SourceError(url, f"no answer within {SNIFF_TIMEOUT:.0f} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise SourceError(url, f"no answer within {SNIFF_TIMEOUT:.0f} s") from None
        text = getattr(reason, "strerror", None) or str(reason)
        raise SourceError(url, f"cannot be reached ({text})") from None
    except OSError as exc:
        raise SourceError(url, f"cannot be reached ({first_line(exc)})") from None


def _s3_head(bucket: str, key: str) -> bytes | None:
    """First bytes of an S3 object; ``None`` on any error but an empty object (GDAL and pyarrow
    word missing objects and denied access themselves, in one line)."""
    try:
        resp = storage.s3_client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{SNIFF_BYTES - 1}")
        return bytes(resp["Body"].read())
    except Exception as exc:  # noqa: BLE001 - only an empty object is decided here
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return b"" if code == "InvalidRange" else None


def sniff(url: str) -> None:
    """Raise :class:`SourceError` when the first bytes of ``url`` show it cannot be what its name
    says (or cannot be fetched at all)."""
    head = _head(url)
    if head is None:
        return
    kind = kind_of(url)
    if not head:
        raise SourceError(url, "is empty (0 bytes)")
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if start.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) and kind not in ("KML", "GML", "OSM XML"):
        raise SourceError(url, f"looks like an HTML page (an error or login page?), not {kind}")
    if start.startswith(b"<?xml") and kind in ("GeoJSON", "GeoJSONSeq", "TopoJSON", "CSV"):
        raise SourceError(url, f"looks like an XML document (a server's error answer?), not {kind}")
    if kind == "zip" and not head.startswith(b"PK"):
        raise SourceError(url, "is not a zip archive (corrupt, or another format named .zip)")
    if kind == "GeoPackage" and not head.startswith(b"SQLite format 3\x00"):
        raise SourceError(url, "is not a GeoPackage (no SQLite header)")
    if kind == "Parquet" and not head.startswith(b"PAR1"):
        raise SourceError(url, "is not a Parquet file (no PAR1 header)")


def explain_gdal_error(url: str, exc: BaseException) -> SourceError:
    """GDAL's open error as one line that says what is wrong with the file."""
    text = first_line(exc)
    low = text.lower()
    kind = kind_of(url)
    if (
        "not recognized as being in a supported file format" in low
        or "not recognized as a supported dataset name" in low
    ):
        if kind == "zip":
            return SourceError(
                url, "no readable vector data in this zip (truncated or corrupt, or no data file inside)"
            )
        return SourceError(url, f"not a readable {kind} file (GDAL does not recognize its content)")
    if "failed to read geojson data" in low:
        detail = text.split(";", 1)[1].strip() if ";" in text else text
        return SourceError(url, f"is not valid GeoJSON, truncated or corrupt? ({detail})")
    if "database disk image is malformed" in low or "file is not a database" in low:
        return SourceError(url, f"is corrupt or truncated ({kind}: SQLite database disk image is malformed)")
    m = re.search(r"unable to open (\S+)\.shx", text, flags=re.IGNORECASE)
    if m:
        return SourceError(url, "the Shapefile's .shx index is missing (a Shapefile needs its .shp, .shx and .dbf)")
    # GDAL names the file by its /vsi path; the SourceError names it as the user gave it
    text = re.sub(r"'?/vsi[a-z0-9]+/+[^' ]*'?\s*", "", text).strip() or text
    return SourceError(url, text)


def _capture() -> Any:
    """pyogrio's per-thread GDAL error capture (pyogrio is pinned; checked by the OSM test)."""
    from pyogrio._err import _ERROR_STACK, capture_errors

    return capture_errors, _ERROR_STACK


def guarded(url: str, reader: Any) -> Iterator[pa.RecordBatch]:
    """Batches of ``reader``; raise :class:`SourceError` on any GDAL ERROR logged meanwhile.

    Each ``next`` runs under pyogrio's error capture in the thread that reads (the capture is
    per thread); GDAL warnings are logged.
    """
    capture_errors, stack = _capture()
    it = iter(reader)
    while True:
        # pyogrio's capture also re-emits GDAL warnings as RuntimeWarning from inside its C
        # callback, where a raising filter would be unraisable; they are logged below instead.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with capture_errors():
                batch = next(it, None)
                captured = list(stack.get())
        failures = [e for e in captured if getattr(e, "error", 3) >= 3]
        for e in captured:
            if getattr(e, "error", 3) < 3:
                log.warning("source %r: GDAL warning: %s", url, first_line(e))
        if failures:
            raise SourceError(url, f"GDAL error while reading: {first_line(failures[0])}")
        if batch is None:
            return
        yield batch


def _matching(names: list[str], candidates: list[str]) -> str | None:
    wanted = {c.lower() for c in candidates}
    for name in names:
        if name.lower() in wanted:
            return name
    return None


class CsvCoordinates:
    """The raw text of a CSV's lon/lat columns, read in step with the main reader.

    GDAL parses the coordinate columns as numbers and gives a null geometry both for an empty
    coordinate and for one that does not parse ("abc", "12,5"). The second reader (every column
    as text) is opened at the first batch with a null geometry and skips ahead to it.
    """

    def __init__(
        self,
        url: str,
        vsi: str,
        layer: str,
        attrs: list[str],
        open_options: dict[str, str],
        batch_size: int,
    ) -> None:
        """``attrs``: the layer's columns; the coordinate columns are the first of
        ``Y_POSSIBLE_NAMES`` / ``X_POSSIBLE_NAMES`` of ``open_options`` among them."""
        self.url, self.vsi, self.layer = url, vsi, layer
        self.lat = _matching(attrs, open_options["Y_POSSIBLE_NAMES"].split(","))
        self.lon = _matching(attrs, open_options["X_POSSIBLE_NAMES"].split(","))
        # no X/Y names: GDAL would type those columns as numbers again; every column stays text
        self.options = {k: v for k, v in open_options.items() if k not in ("X_POSSIBLE_NAMES", "Y_POSSIBLE_NAMES")}
        self.options["AUTODETECT_TYPE"] = "NO"
        self.batch_size = batch_size
        self._cm: Any = None
        self._it: Iterator[pa.RecordBatch] | None = None
        self._buffer: pa.Table | None = None  # raw rows read but not yet matched

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None

    def _open(self) -> None:
        import pyogrio

        cols = [c for c in (self.lat, self.lon) if c is not None]
        self._cm = pyogrio.open_arrow(
            self.vsi,
            layer=self.layer,
            columns=cols,
            batch_size=self.batch_size,
            use_pyarrow=True,
            return_fids=True,
            **self.options,
        )
        _, reader = self._cm.__enter__()
        self._it = iter(reader)

    def _rows(self, first_fid: int, last_fid: int) -> pa.Table | None:
        """Raw rows with FID in [first_fid, last_fid] (FIDs ascend, in file order)."""
        if self._it is None:
            self._open()
        assert self._it is not None
        parts = [] if self._buffer is None else [self._buffer]
        while not parts or int(parts[-1].column(0)[-1].as_py()) < last_fid:
            batch = next(self._it, None)
            if batch is None:
                break
            if batch.num_rows and int(batch.column(0)[-1].as_py()) >= first_fid:  # else: skip ahead
                parts.append(pa.Table.from_batches([batch]))
        if not parts:
            return None
        table = pa.concat_tables(parts)
        fid_col = np.asarray(table.column(0).to_numpy())
        later = fid_col > last_fid
        self._buffer = table.filter(pa.array(later)) if later.any() else None
        return table.filter(pa.array((fid_col >= first_fid) & ~later))

    def problems(self, fids: np.ndarray, wkb: np.ndarray) -> dict[int, str]:
        """Row index → why its coordinates are unusable, for the rows without geometry whose
        coordinate text is not empty."""
        missing = np.flatnonzero(np.array([v is None for v in wkb], dtype=bool))
        if not len(missing) or self.lat is None or self.lon is None:
            return {}
        raw = self._rows(int(fids[0]), int(fids[-1]))
        if raw is None:
            return {}
        by_fid = dict(
            zip(
                raw.column(0).to_pylist(),
                zip(raw.column(self.lat).to_pylist(), raw.column(self.lon).to_pylist(), strict=True),
                strict=True,
            )
        )
        out: dict[int, str] = {}
        for i in missing:
            lat_text, lon_text = by_fid.get(int(fids[i]), (None, None))
            reason = _coordinate_problem(self.lat, lat_text, 90.0) or _coordinate_problem(self.lon, lon_text, 180.0)
            if reason is None and bool((lat_text or "").strip()) != bool((lon_text or "").strip()):
                reason = f"only one of {self.lat!r} / {self.lon!r} is given"
            if reason:
                out[int(i)] = reason
        return out


def _coordinate_problem(column: str, text: str | None, limit: float) -> str | None:
    value = (text or "").strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return f"{column} {value[:40]!r} is not a number"
    if not np.isfinite(number):
        return f"{column} {value[:40]!r} is not a finite number"
    return None

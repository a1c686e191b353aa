"""The list of features that ``convert --on-invalid skip`` left out.

It is a CSV next to the GeoParquet: ``<dest without .parquet>.skipped.csv`` (``out/x.parquet`` →
``out/x.skipped.csv``), with the columns ``source``, ``feature`` (the source's feature number:
GDAL FID, or the 1-based row of a Parquet / CSV source), ``line`` (CSV sources: the file line,
header = line 1, assuming no quoted field spans lines) and ``reason``. Rows are streamed to a
local temporary file and published atomically just before the GeoParquet; a run that skips
nothing removes a report left by an earlier run, so a report never describes another output.
"""

from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from cng_datasets import storage

#: The reason under which skipped features are counted in the accounting's "dropped".
SKIPPED_REASON = "invalid row (--on-invalid skip)"


def report_url(dest: str) -> str:
    """Where the skipped-features report of the GeoParquet at ``dest`` goes."""
    base = dest[: -len(".parquet")] if dest.lower().endswith(".parquet") else dest
    return base + ".skipped.csv"


def feature_label(fid: Any, is_csv: bool) -> str:
    """``feature 17``, or for a CSV ``row 17 (line 18)``."""
    return f"row {int(fid)} (line {int(fid) + 1})" if is_csv else f"feature {int(fid)}"


class SkippedReport:
    """Collects skipped features (streamed to a temporary file) and publishes the report."""

    def __init__(self, dest: str) -> None:
        self.url = report_url(dest)
        self.count = 0
        self._path: Path | None = None
        self._file: Any = None
        self._writer: Any = None

    def __enter__(self) -> SkippedReport:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
        if self._path is not None:
            self._path.unlink(missing_ok=True)

    def add(self, source: str, fids: np.ndarray, problems: dict[int, str], is_csv: bool) -> None:
        if self._writer is None:
            fd, name = tempfile.mkstemp(prefix="cng-skipped-", suffix=".csv")
            self._path = Path(name)
            self._file = os.fdopen(fd, "w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._file)
            self._writer.writerow(["source", "feature", "line", "reason"])
        for i in sorted(problems):
            fid = int(fids[i])
            self._writer.writerow([source, fid, fid + 1 if is_csv else "", problems[i]])
            self.count += 1

    def publish(self) -> str | None:
        """Publish the report (or remove a stale one); its URL, or None when nothing was skipped."""
        if self._writer is None:
            if storage.exists(self.url):
                storage.delete(self.url)
            return None
        self._file.close()
        assert self._path is not None  # set together with the writer
        storage.upload_file(self._path, self.url)
        return self.url

"""Count the features of the sources and estimate their cost, with a timeout (:func:`survey`): the
input of the hex chunking rule, of the estimate ``run`` and ``workflow`` print, and of
``cng-datasets plan``.

GDAL (through pyogrio) counts GDAL-readable sources over ``/vsicurl``, ``/vsis3`` and ``/vsizip``;
GeoParquet sources are counted from the Parquet footer with pyarrow (GDAL in the pyogrio wheel has
no Parquet driver). Counts of several sources are summed; each is then sampled
(:mod:`cng_datasets.estimate`).

Each source is surveyed in a child Python process that is killed at the timeout, so a hung remote
read cannot block the caller (a thread could not be stopped). On any failure of a count
:func:`survey` returns ``None`` and emits :class:`~cng_datasets.errors.CountFallbackWarning`; the
plan then uses default chunking, and the last hex chunk always reads to the end, so a wrong or
missing count never drops features. A sample that fails leaves the count alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from cng_datasets import contract
from cng_datasets.errors import CountFallbackWarning, first_line

DEFAULT_TIMEOUT = 120.0


def _ask_child(args: list[str], timeout: float) -> str:
    """The last line ``python -m cng_datasets.probe ARGS`` prints, within ``timeout`` seconds; its
    error's last line as a ``RuntimeError``. A child (not a thread) because a hung GDAL read cannot
    be interrupted in-process, and GDAL's own warnings stay out of the caller's output."""
    if timeout <= 0:
        raise TimeoutError("no time left")
    cmd = [sys.executable, "-m", "cng_datasets.probe", *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"no answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit code {proc.returncode}")
    return proc.stdout.strip().splitlines()[-1]


# ---- the survey: count and estimate ------------------------------------------------------------


@dataclass(frozen=True)
class Survey:
    """What the sources of a dataset are and will cost (:mod:`cng_datasets.estimate`):
    ``hex_rows`` estimated at the config's resolution and containment, ``zoom`` the maximum zoom
    the pmtiles step would choose, ``tiles`` at that zoom (an upper bound), sizes per feature.
    ``hex_rows`` is ``None`` when the features were counted but could not be sampled."""

    features: int
    hex_rows: int | None = None
    zoom: int | None = None
    zoom_reason: str = ""
    tiles: float = 0.0
    wkb_bytes: float = 0.0  # per feature
    attribute_bytes: float = 0.0  # per feature
    attribute_columns: int = 0
    partitions: int = 0  # h0 base cells the sample touches
    sampled: int = 0
    note: str = ""


def survey_source(
    url: str, options: object, resolution: int, containment: str, size: int, features: int | None = None
) -> Survey:
    """Count one source (unless ``features`` is known) and estimate it from a sample (no timeout;
    the sample failing leaves only the count)."""
    from cng_datasets import estimate
    from cng_datasets.sources import count_features as count_one

    layer = getattr(options, "layer", None)
    if features is None:
        features = count_one(url, layer)
    try:
        sample = estimate.sample_source(url, options, features, size)
    except Exception as exc:  # noqa: BLE001 - an estimate is optional: the count stands
        return Survey(features, note=f"not sampled: {first_line(exc)}")
    zoom = estimate.choose_max_zoom(sample, resolution)
    n = max(1, sample.size)
    return Survey(
        features=features,
        hex_rows=estimate.hex_rows(sample, resolution, containment),
        zoom=zoom.zoom,
        zoom_reason=zoom.reason,
        tiles=estimate.tiles_at(sample, zoom.zoom),
        wkb_bytes=sample.wkb_bytes / n,
        attribute_bytes=sample.attribute_bytes,
        attribute_columns=sample.attribute_columns,
        partitions=estimate.touched_base_cells(sample),
        sampled=sample.size,
    )


def _survey_in_subprocess(url: str, config: object, timeout: float, size: int, features: int | None) -> Survey:
    args = [url, "--size", str(size)]
    if features is not None:
        args += ["--features", str(features)]
    for flag, attr in (
        ("--layer", "layer"),
        ("--lat-column", "lat_column"),
        ("--lon-column", "lon_column"),
        ("--encoding", "encoding"),
        ("--resolution", "h3_resolution"),
        ("--containment", "containment"),
    ):
        value = getattr(config, attr, None)
        if value is not None:
            args += [flag, str(value)]
    return Survey(**json.loads(_ask_child(args, timeout)))


def combine(surveys: Sequence[Survey]) -> Survey:
    """The survey of several sources of one dataset."""
    features = sum(s.features for s in surveys)
    rows = [s.hex_rows for s in surveys]
    weight = [s.features / max(1, features) for s in surveys]
    zooms = [s.zoom for s in surveys if s.zoom is not None]
    return Survey(
        features=features,
        hex_rows=None if any(r is None for r in rows) else sum(r or 0 for r in rows),
        zoom=max(zooms) if zooms else None,
        zoom_reason="; ".join(s.zoom_reason for s in surveys if s.zoom_reason),
        tiles=sum(s.tiles for s in surveys),
        wkb_bytes=sum(w * s.wkb_bytes for w, s in zip(weight, surveys, strict=True)),
        attribute_bytes=sum(w * s.attribute_bytes for w, s in zip(weight, surveys, strict=True)),
        attribute_columns=max((s.attribute_columns for s in surveys), default=0),
        partitions=min(contract.BASE_CELL_COUNT, sum(s.partitions for s in surveys)),
        sampled=sum(s.sampled for s in surveys),
        note="; ".join(s.note for s in surveys if s.note),
    )


def survey(
    config: object,
    timeout: float = DEFAULT_TIMEOUT,
    size: int = 2000,
    warn: bool = True,
    features: int | None = None,
) -> Survey | None:
    """Count and estimate the sources of ``config`` (a :class:`~cng_datasets.config.WorkflowConfig`)
    in a child process each, within ``timeout`` seconds in all; ``None`` (with a warning unless
    not ``warn``) when a count fails. ``features``: the known total of
    a single source (then only sampled)."""
    deadline = time.monotonic() + timeout
    found = []
    urls = tuple(getattr(config, "source_urls", ()))
    known = features if len(urls) == 1 else None
    for url in urls:
        try:
            found.append(_survey_in_subprocess(url, config, deadline - time.monotonic(), size, known))
        except Exception as exc:  # noqa: BLE001 - any failure means "unknown count"
            if not warn:
                return None
            warnings.warn(
                CountFallbackWarning(
                    f"could not count the features of {url!r} ({first_line(exc)}); using default chunking "
                    "(the last hex chunk reads to the end, so no feature is dropped)"
                ),
                stacklevel=2,
            )
            return None
    return combine(found)


def _main(argv: list[str] | None = None) -> int:
    """``python -m cng_datasets.probe URL [options]``: print the :class:`Survey` of one source as
    one JSON line."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cng_datasets.probe")
    parser.add_argument("url")
    parser.add_argument("--layer", default=None)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--resolution", type=int, default=10)
    parser.add_argument("--containment", default="center")
    parser.add_argument("--lat-column", default=None)
    parser.add_argument("--lon-column", default=None)
    parser.add_argument("--encoding", default=None)
    parser.add_argument("--features", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        from cng_datasets.sources import ReadOptions

        options = ReadOptions(
            layer=args.layer, lat_column=args.lat_column, lon_column=args.lon_column, encoding=args.encoding
        )
        found = survey_source(args.url, options, args.resolution, args.containment, args.size, args.features)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        text = first_line(exc, "")
        sys.stderr.write(f"{type(exc).__name__}: {text}\n")
        return 1
    sys.stdout.write(json.dumps(asdict(found)) + "\n")
    return 0


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # GDAL chatter must not reach the parent's output
    sys.exit(_main())

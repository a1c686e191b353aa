"""Count the features of the sources, with a timeout: the input of the hex chunking rule.

GDAL (through pyogrio) counts GDAL-readable sources over ``/vsicurl``, ``/vsis3`` and ``/vsizip``;
GeoParquet sources are counted from the Parquet footer with pyarrow (GDAL in the pyogrio wheel has
no Parquet driver). Counts of several sources are summed.

Each count runs in a child Python process that is killed at the timeout, so a hung remote read
cannot block the caller (a thread could not be stopped). On any failure :func:`count_features` returns
``None`` and emits :class:`~cng_datasets.errors.CountFallbackWarning`; the plan then uses default
chunking, and the last hex chunk always reads to the end, so a wrong or missing count never drops
features.
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings
from collections.abc import Sequence

from cng_datasets.errors import CountFallbackWarning, first_line

DEFAULT_TIMEOUT = 120.0


def count_source(url: str, layer: str | None = None) -> int:
    """Features of one source, as convert will read it (no timeout; raises on failure)."""
    from cng_datasets.sources import count_features as count_one

    return count_one(url, layer)


def _count_in_subprocess(url: str, layer: str | None, timeout: float) -> int:
    """Count one source in a child Python process, killed after ``timeout`` seconds.

    A child (not a thread) because a hung GDAL read cannot be interrupted in-process, and GDAL's
    own warnings stay out of the caller's output.
    """
    if timeout <= 0:
        raise TimeoutError("no time left")
    cmd = [sys.executable, "-m", "cng_datasets.probe", url]
    if layer is not None:
        cmd += ["--layer", layer]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"no answer within {timeout:.0f} s") from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(lines[-1] if lines else f"exit code {proc.returncode}")
    return int(proc.stdout.strip().splitlines()[-1])


def count_features(urls: Sequence[str], layer: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> int | None:
    """The total number of features of ``urls``, or ``None`` (with a warning) when any count fails
    or the whole count takes longer than ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    total = 0
    for url in urls:
        try:
            total += _count_in_subprocess(url, layer, deadline - time.monotonic())
        except Exception as exc:  # noqa: BLE001 - any failure means "unknown count"
            detail = first_line(exc)
            warnings.warn(
                CountFallbackWarning(
                    f"could not count the features of {url!r} ({detail}); using default chunking "
                    "(the last hex chunk reads to the end, so no feature is dropped)"
                ),
                stacklevel=2,
            )
            return None
    return total


def _main(argv: list[str] | None = None) -> int:
    """``python -m cng_datasets.probe URL [--layer NAME]``: print the feature count of one source."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cng_datasets.probe")
    parser.add_argument("url")
    parser.add_argument("--layer", default=None)
    args = parser.parse_args(argv)
    try:
        n = count_source(args.url, args.layer)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        text = first_line(exc, "")
        sys.stderr.write(f"{type(exc).__name__}: {text}\n")
        return 1
    sys.stdout.write(f"{n}\n")
    return 0


if __name__ == "__main__":
    warnings.simplefilter("ignore")  # GDAL chatter must not reach the parent's output
    sys.exit(_main())

"""``cng-datasets plan``: what a dataset will cost, before anything runs; and the one-line estimate
(and its warning) that ``run`` and ``workflow`` print first."""

from __future__ import annotations

import json
import logging
import warnings
from typing import TYPE_CHECKING, Any

import click

from cng_datasets.cli.common import LOGGER_NAME, handle_errors
from cng_datasets.cli.options import config_from_options, kubernetes_options, workflow_options

if TYPE_CHECKING:  # imported in the commands only, so --help stays fast
    from cng_datasets.config import WorkflowConfig
    from cng_datasets.probe import Survey

log = logging.getLogger(LOGGER_NAME)


def announce(config: WorkflowConfig, survey: Survey | None) -> None:
    """Log the estimate in one line; warn (one line, with the numbers) when the hex output would
    have a billion rows or more."""
    from cng_datasets.errors import CngWarning
    from cng_datasets.estimate import HEX_ROWS_WARNING, coarser_resolution

    if survey is None:
        return
    if survey.hex_rows is None:
        log.info("estimate: %s features (%s)", f"{survey.features:,}", survey.note or "not sampled")
        return
    log.info(
        "estimate: %s features → ~%s hex rows at H3 resolution %d (%s containment), tiles to z%s "
        "(from a sample of %s features; `cng-datasets plan` tells more)",
        f"{survey.features:,}",
        f"{survey.hex_rows:,}",
        config.h3_resolution,
        config.containment,
        survey.zoom if config.max_zoom is None else config.max_zoom,
        f"{survey.sampled:,}",
    )
    if survey.hex_rows >= HEX_ROWS_WARNING:
        coarser, rows = coarser_resolution(config.h3_resolution, survey.hex_rows)
        warnings.warn(
            CngWarning(
                f"--h3-resolution {config.h3_resolution} would write ~{survey.hex_rows / 1e9:.1f} billion hex rows "
                f"({survey.features:,} features); --h3-resolution {coarser} would write ~{rows:,}"
            ),
            stacklevel=2,
        )


def _plan_document(config: WorkflowConfig, survey: Survey, cores: int) -> dict[str, Any]:
    from cng_datasets.contract import BASE_CELL_COUNT
    from cng_datasets.estimate import step_costs
    from cng_datasets.plan import build_plan

    plan = build_plan(config, survey.features, survey.hex_rows)
    ch = plan.chunking
    rows = survey.hex_rows or 0
    costs = step_costs(
        survey.features,
        rows,
        survey.tiles,
        survey.wkb_bytes,
        survey.attribute_bytes,
        survey.attribute_columns,
        len(config.parents),
        ch.completions,
        cores,
        survey.partitions or BASE_CELL_COUNT,  # not sampled: as many as there can be
    )
    by = {c.step: c for c in costs}
    convert_s = by["convert"].seconds
    after = max(by["pmtiles"].seconds, by["hex"].seconds + by["repartition"].seconds)
    return {
        "dataset": config.dataset,
        "features": survey.features,
        "sampled": survey.sampled,
        "hex_rows": survey.hex_rows,
        "hex_chunks": ch.completions,
        "hex_parallelism": ch.parallelism,
        "chunk_size": ch.chunk_size,
        "hex_shares": ch.shares,
        "h3_resolution": config.h3_resolution,
        "containment": config.containment,
        "max_zoom": config.max_zoom if config.max_zoom is not None else survey.zoom,
        "max_zoom_reason": "--max-zoom" if config.max_zoom is not None else survey.zoom_reason,
        "outputs": {
            "geoparquet": {"url": config.parquet_url, "rows": survey.features, "bytes": by["convert"].bytes},
            "pmtiles": {"url": config.pmtiles_url, "tiles": int(survey.tiles), "bytes": by["pmtiles"].bytes},
            "hex": {"url": config.hex_url + "/", "rows": survey.hex_rows, "bytes": by["hex"].bytes},
        },
        "steps": [
            {
                "step": c.step,
                "runs": c.runs,
                "work": c.work,
                "bytes": c.bytes,
                "peak_memory_mb": c.peak_mb,
                "seconds_here": round(c.seconds, 1),
            }
            for c in costs
        ],
        "seconds_here": round(convert_s + after + by["catalog"].seconds, 1),
        "cores_here": cores,
        "note": survey.note,
    }


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def _seconds(s: float) -> str:
    if s < 60:
        return f"~{max(1, round(s))} s"
    if s < 3600:
        return f"~{s / 60:.0f} min"
    return f"~{s / 3600:.1f} h"


def _runs(chunks: int, parallel: int) -> str:
    return "1 chunk" if chunks == 1 else f"{chunks} chunks, {parallel} at once"


def format_plan(doc: dict[str, Any]) -> str:
    lines = [
        f"dataset {doc['dataset']}: {doc['features']:,} features (estimates from a sample of {doc['sampled']:,}), "
        f"H3 resolution {doc['h3_resolution']} ({doc['containment']}), max zoom {doc['max_zoom']}"
        + (f" ({doc['max_zoom_reason']})" if doc["max_zoom_reason"] else ""),
    ]
    header = ("STEP", "RUNS", "WORK", "WRITES", "PEAK MEMORY/RUN", "TIME HERE")
    rows = [header] + [
        (
            s["step"],
            _runs(s["runs"], doc["hex_parallelism"]) if s["step"] == "hex" else str(s["runs"]),
            s["work"],
            "~" + _human(s["bytes"]),
            f"≤ {s['peak_memory_mb']} MB",
            _seconds(s["seconds_here"]),
        )
        for s in doc["steps"]
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() for r in rows]
    lines.append(
        f"all steps here: {_seconds(doc['seconds_here'])} on {doc['cores_here']} cores "
        f"(pmtiles beside hex); hex chunks of {doc['chunk_size']:,} features"
        + (f", each shared by {doc['hex_shares']} chunks" if doc["hex_shares"] > 1 else "")
    )
    if doc["note"]:
        lines.append(f"note: {doc['note']}")
    return "\n".join(lines)


@click.command("plan")
@workflow_options
@kubernetes_options
@click.option("--json", "as_json", is_flag=True, help="Print the estimate as one JSON object.")
@click.option(
    "--sample-size",
    type=click.IntRange(min=10),
    default=2000,
    show_default=True,
    help="Features sampled from the sources.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors besides the estimate.")
@handle_errors
def plan(as_json: bool, sample_size: int, count_timeout: float, quiet: bool, **kwargs: Any) -> None:
    """Estimate what `run` / `workflow` with the same options would do, without writing anything.

    Per step: processes (hex chunks / pods), the work (features, tiles, hex rows), the bytes it
    writes, the peak memory per process and the time on this machine. The features are counted
    and the rest estimated from a sample of them (hex rows from each sampled feature's geodesic
    area, perimeter or length and the resolution's cell size; the maximum zoom as the pmtiles
    step would choose it). Rates and memory peaks are those measured on the benchmark machine
    (docs/benchmarks.md).
    """
    from cng_datasets import limits, probe
    from cng_datasets.errors import SourceError

    config = config_from_options(**kwargs)
    survey = probe.survey(config, timeout=count_timeout, size=sample_size)
    if survey is None:
        raise SourceError(config.source_urls[0], "could not be counted within --count-timeout (see the warning)")
    announce(config, survey)
    doc = _plan_document(config, survey, limits.cpu_count())
    click.echo(json.dumps(doc, indent=1) if as_json else format_plan(doc))

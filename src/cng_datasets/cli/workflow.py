"""``cng-datasets workflow``: write the Kubernetes manifests of one dataset's workflow."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from cng_datasets.cli.common import LOGGER_NAME, handle_errors
from cng_datasets.cli.options import config_from_options, kubernetes_options, workflow_options

log = logging.getLogger(LOGGER_NAME)


@click.command("workflow")
@workflow_options
@kubernetes_options
@click.option(
    "--output-dir",
    required=True,
    type=click.Path(file_okay=False, writable=True),
    help="Folder for the manifests and their README (created if missing).",
)
@click.option(
    "--feature-count",
    type=click.IntRange(min=0),
    default=None,
    help="Number of source features, when known (skips counting; the sources are still sampled).",
)
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@handle_errors
def workflow(output_dir: str, feature_count: int | None, count_timeout: float, quiet: bool, **kwargs: Any) -> None:
    """Write the Kubernetes manifests of a dataset's workflow to --output-dir.

    Files: convert-job.yaml, pmtiles-job.yaml, hex-job.yaml, repartition-job.yaml, catalog-job.yaml,
    workflow-rbac.yaml, workflow-pvc.yaml, workflow-upload.yaml, workflow.yaml, plan.json (the
    steps and their order, read by the in-cluster orchestrator) and a README.md with the commands
    to run them. The hex chunking is chosen from the work: the features are counted and their hex
    rows estimated from a sample (one chunk per ~2 million rows; with --feature-count, or when
    counting fails, from the feature count alone). The estimate is printed first, with a warning
    when it reaches a billion rows.
    """
    from cng_datasets import probe, storage
    from cng_datasets.cli.plan import announce
    from cng_datasets.k8s import manifests
    from cng_datasets.plan import build_plan

    config = config_from_options(**kwargs)
    manifests.check_config(config)  # fail on bad names before spending time on counting
    log.info(
        "counting and sampling the features of %d source(s) (timeout %g s)", len(config.source_urls), count_timeout
    )
    # with --feature-count the sources are only sampled (the hex rows size the chunks, as in `run`)
    survey = probe.survey(config, timeout=count_timeout, features=feature_count, warn=feature_count is None)
    announce(config, survey)
    hex_rows = None
    if survey is not None:
        hex_rows = survey.hex_rows
        feature_count = feature_count if feature_count is not None else survey.features
    plan = build_plan(config, feature_count, hex_rows)
    files = manifests.render_files(plan, output_dir)

    out = Path(output_dir)
    for name, text in files.items():
        storage.write_bytes(str(out / name), text.encode("utf-8"))

    ch = plan.chunking
    counted = (
        f"{ch.feature_count:,} features"
        if ch.feature_count is not None
        else "features not counted: the orchestrator sizes the chunks from the converted GeoParquet"
    )
    log.info("hex: %s, %d in parallel (%s)", ch.describe(), ch.parallelism, counted)
    log.info("wrote %d files to %s; see %s", len(files), out, out / manifests.README_FILE)

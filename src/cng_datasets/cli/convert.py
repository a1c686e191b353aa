"""``cng-datasets convert SOURCE... DEST``."""

from __future__ import annotations

from typing import Any

import click

from cng_datasets.cli.common import handle_errors


@click.command("convert")
@click.argument("sources", nargs=-1, required=True)
@click.argument("dest", nargs=1)
@click.option("--layer", help="Layer to read from multi-layer sources (GeoPackage, FileGDB, TopoJSON).")
@click.option("--id-column", help="Use this existing, unique column as feature id instead of _cng_fid.")
@click.option("--target-crs", default="EPSG:4326", show_default=True, help="Output CRS (x is always longitude).")
@click.option("--source-crs", help="CRS of the sources, overriding their metadata (e.g. for a CSV in metres).")
@click.option("--simplify-tolerance", type=float, help="Topology-preserving simplification, in target CRS units.")
@click.option("--trim-strings", is_flag=True, help="Strip white space around every text value.")
@click.option("--row-group-size", type=int, default=100_000, show_default=True, help="Rows per row group (at most).")
@click.option("--row-group-mb", type=int, default=128, show_default=True, help="In-memory MB per row group (at most).")
@click.option("--compression-level", type=int, default=3, show_default=True, help="ZSTD level.")
@click.option("--lat-column", help="CSV latitude column (auto-detected otherwise).")
@click.option("--lon-column", help="CSV longitude column (auto-detected otherwise).")
@click.option("--encoding", help="Text encoding of Shapefiles without .cpg (detected otherwise).")
@click.option(
    "--on-invalid",
    type=click.Choice(["fail", "skip"]),
    default="fail",
    show_default=True,
    help="Features whose geometry is unusable (bad CSV coordinates, out of range, unreadable): "
    "fail, or skip them and list them in DEST's .skipped.csv.",
)
@click.option(
    "--expect-features",
    type=click.IntRange(min=0),
    default=None,
    help="Fail unless the sources hold exactly this many features.",
)
@click.option("--quiet", is_flag=True, help="Only errors and warnings.")
@handle_errors
def convert(sources: tuple[str, ...], dest: str, quiet: bool, row_group_mb: int, **kwargs: Any) -> None:
    """Convert vector SOURCE(s) to one GeoParquet 1.1 file at DEST.

    SOURCE and DEST are local paths, s3:// URLs or (sources only) https:// URLs. Several sources
    are merged by column name. Put `--` before the sources if one starts with a dash.

    \b
    Example:
      cng-datasets convert countries.zip s3://bucket/countries.parquet
    """
    from cng_datasets.steps.convert import ConvertOptions
    from cng_datasets.steps.convert import convert as run_convert

    opts = ConvertOptions(row_group_bytes=row_group_mb * 1024 * 1024, **kwargs)
    s = run_convert(list(sources), dest, opts)
    skipped = f", {s.skipped} invalid skipped (listed in {s.skipped_report})" if s.skipped else ""
    click.echo(
        f"wrote {s.output}: {s.features} features from {len(s.sources)} source(s){skipped}, "
        f"{s.null_geometries} null/empty geometries, {s.made_valid} made valid, "
        f"{s.split_at_antimeridian} split at ±180, {s.bytes / 1e6:.1f} MB in {s.seconds:.1f} s"
    )

"""``cng-datasets catalog``: the STAC collection and the dataset card of finished outputs."""

from __future__ import annotations

import click

from cng_datasets.cli.common import handle_errors


@click.command("catalog")
@click.option("--root", required=True, help="Where the outputs are (local directory or s3://bucket[/prefix]).")
@click.option("--dataset", required=True, help="Dataset name (may contain '/').")
@click.option("--source-url", "source_urls", multiple=True, help="A source of the dataset (repeat); recorded.")
@click.option("--license", "license_", default="other", show_default=True, help="SPDX licence id of the data.")
@click.option("--description", default=None, help="What the dataset is (one paragraph).")
@click.option(
    "--cors",
    is_flag=True,
    help="Add a CORS rule to ROOT's S3 bucket: browsers may GET/HEAD with Range from any origin.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors on stderr.")
@handle_errors
def catalog(
    root: str,
    dataset: str,
    source_urls: tuple[str, ...],
    license_: str,
    description: str | None,
    cors: bool,
    quiet: bool,
) -> None:
    """Write ROOT/DATASET/collection.json (STAC 1.1, an item per output) and ROOT/DATASET/README.md.

    Reads the finished GeoParquet, PMTiles and hex outputs (fails, exit 65, when one is missing)
    and writes each file atomically; running again rewrites them, keeping the creation time.
    """
    from cng_datasets.steps.catalog import CatalogInfo, write_catalog

    if cors:
        from cng_datasets import storage

        added = storage.allow_browser_reads(root)
        click.echo(f"{root}: CORS rule {'added' if added else 'already present'} (GET/HEAD with Range, any origin)")
    collection = write_catalog(root, dataset, CatalogInfo(source_urls, license_, description))
    click.echo(f"{root.rstrip('/')}/{dataset.strip('/')}/collection.json: {len(collection['links']) - 1} link(s)")

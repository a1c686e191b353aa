"""``cng-datasets preview``: open a dataset's map page, served with Range requests."""

from __future__ import annotations

import click

from cng_datasets.cli.common import handle_errors


@click.command("preview")
@click.argument("dest")
@click.option("--dataset", required=True, help="Dataset name (may contain '/').")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--no-open", is_flag=True, help="Do not open a browser; only print the URL.")
@handle_errors
def preview(dest: str, dataset: str, port: int, host: str, no_open: bool) -> None:
    """Serve DEST (a local directory or s3://bucket/prefix) over HTTP and open DEST/DATASET/index.html.

    PMTiles needs HTTP Range requests, which this server answers (Python's http.server does not).
    The page is written by `run` (its catalog step) or `cng-datasets catalog`. Ctrl-C stops it.
    """
    import time
    import webbrowser

    from cng_datasets import storage
    from cng_datasets.cli.run import local_root
    from cng_datasets.errors import DataError
    from cng_datasets.preview import PAGE_FILE
    from cng_datasets.preview.server import start

    root = local_root(dest)
    page = storage.join(root, dataset.strip("/"), PAGE_FILE)
    if not storage.exists(page):
        raise DataError(f"{page}: no map page; write it with `cng-datasets catalog --root {dest} --dataset {dataset}`")
    server, base = start(root, host, port)
    url = f"{base}/{dataset.strip('/')}/{PAGE_FILE}"
    click.echo(f"serving {root} at {base}/ — the map: {url}  (Ctrl-C stops)")
    if not no_open:
        webbrowser.open(url)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.shutdown()
        server.server_close()

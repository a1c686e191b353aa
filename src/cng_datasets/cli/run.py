"""``cng-datasets run`` (the whole workflow on this machine) and ``cng-datasets validate``."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any

import click

from cng_datasets.cli.common import handle_errors
from cng_datasets.cli.options import config_from_options, kubernetes_options, workflow_options

#: Options accepted for symmetry with `workflow` but meaningless on one machine (hidden in --help).
_K8S_ONLY = {
    "namespace",
    "image",
    "s3_secret",
    "s3_access_key_key",
    "s3_secret_key_key",
    "k8s_version",
    "max_parallelism",
    "count_timeout",
}


def local_root(bucket: str) -> str:
    """``--bucket`` of ``run`` / DEST of ``validate``: anything without ``://`` is a local directory.

    A bare name such as ``out`` is therefore ``./out`` here (in ``workflow`` it is an S3 bucket);
    use ``s3://out`` for the bucket. Local paths are made absolute so every subprocess agrees.

    >>> local_root("s3://b/p")
    's3://b/p'
    """
    if "://" in bucket:
        return bucket
    return os.path.abspath(os.path.expanduser(bucket))


def _fmt_seconds(s: float | None, precise: bool = False) -> str:
    if s is None:
        return "--"
    if precise and s < 60:
        return f"{s:.1f} s"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"  # pragma: no cover


class Display:
    """Renders :class:`cng_datasets.progress.Event`s: a live status line on a terminal, plain lines
    otherwise, nothing but errors with ``quiet``."""

    def __init__(self, stream: IO[str], quiet: bool, live: bool) -> None:
        from cng_datasets.progress import Progress

        self.stream = stream
        self.quiet = quiet
        self.live = live and not quiet
        self.progress = Progress()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._width = 0
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> Display:
        if self.live:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._clear()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                self._draw()

    # ---- drawing ------------------------------------------------------------------------

    def status_line(self) -> str:
        p = self.progress
        parts = []
        for s in p.steps:
            mark = {"pending": " ", "running": "…", "done": "✓", "skipped": "✓", "failed": "✗"}[
                p.state.get(s, "pending")
            ]
            parts.append(f"{s}{mark}")
        line = " ".join(parts)
        if p.chunks_total:
            line += f" | chunks {p.chunks_done}/{p.chunks_total}"
        if p.features is not None:
            line += (
                f" | features {p.features_hexed:,}/{p.features:,}" if p.chunks_total else f" | {p.features:,} features"
            )
        if p.cells:
            line += f" | cells {p.cells:,}"
        line += f" | {_fmt_seconds(p.elapsed())}"
        eta = p.eta()
        if eta is not None:
            line += f" ETA {_fmt_seconds(eta)}"
        return line

    def _clear(self) -> None:
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def _draw(self) -> None:
        if not self.live:
            return
        try:
            cols = os.get_terminal_size(self.stream.fileno()).columns or 120
        except (OSError, ValueError, AttributeError):
            cols = 120
        line = self.status_line()[: max(10, cols - 1)]
        self.stream.write("\r" + line + " " * max(0, self._width - len(line)))
        self.stream.flush()
        self._width = len(line)

    def _log(self, text: str) -> None:
        if self.quiet:
            return
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def __call__(self, ev: Any) -> None:
        with self._lock:
            self.progress.update(ev)
            if ev.kind == "warning":  # shown even with --quiet: it says something about the data
                self._clear()
                self.stream.write(f"warning: {ev.step}: {ev.message}\n")
                self.stream.flush()
            else:
                text = self._describe(ev)
                if text:
                    self._log(text)
            self._draw()

    def _describe(self, ev: Any) -> str | None:
        k, d = ev.kind, ev.data
        if k == "plan":
            if d.get("features") is None:
                return f"run: {', '.join(d['steps'])} into {d.get('root')} with {d.get('workers')} worker(s)"
            return f"plan: {d['features']:,} features, hex in {d['chunks']} chunk(s) of {d['chunk_size']:,}"
        if k == "step-started":
            p = self.progress
            if ev.step == "hex" and p.chunks_skipped:  # one line, not one per resumed chunk
                return f"hex: started, {p.chunks_skipped} of {p.chunks_total} chunk(s) done in an earlier run"
            return f"{ev.step}: started"
        if k == "step-finished":
            return f"{ev.step}: done in {d.get('seconds', 0):.1f} s"
        if k == "step-skipped":
            return f"{ev.step}: skipped, {ev.message}"
        if k == "chunk-finished" and not self.live:
            p = self.progress
            return f"hex: chunk {ev.chunk} done in {d.get('seconds', 0):.1f} s ({p.chunks_done}/{p.chunks_total})"
        if k == "lease-waiting":
            return f"run: waiting for the run that holds this dataset ({ev.message})"
        if k == "cleaned":
            return f"run: {ev.message}"
        return None


def summary_table(summary: Any) -> str:
    """The final table: one row per output, then one per step."""
    rows = [("output", "location", "size", "count")]
    for o in summary.outputs:
        count = f"{o.rows:,} {o.unit}" if o.rows is not None else "?"
        if o.kind == "hex":
            count += f" in {o.files} partition(s)"
        rows.append((o.kind, o.url, _fmt_bytes(o.bytes), count))
    rows.append(("", "", "", ""))
    rows.append(("step", "status", "time", ""))
    for s in summary.steps:
        extra = ""
        if s.name == "hex" and s.status == "ran":
            extra = f"{s.chunks_run} chunk(s) run, {s.chunks_skipped} resumed"
        status = s.status if s.status == "ran" else "skipped (done earlier)"
        rows.append(
            (
                s.name,
                status,
                _fmt_seconds(s.seconds, True) if s.status == "ran" else f"({_fmt_seconds(s.seconds, True)})",
                extra,
            )
        )
    rows.append(("total", "", _fmt_seconds(summary.seconds, True), ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


@contextlib.contextmanager
def _terminate_like_ctrl_c() -> Iterator[None]:
    """``kill`` (SIGTERM) stops the run as Ctrl-C does: steps stopped, temporaries and the lease
    removed (Python's default ends the process at once and leaves them)."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command("run")
@workflow_options
@kubernetes_options
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes at once (hex chunks and pmtiles).  [default: CPUs available]",
)
@click.option("--force", is_flag=True, help="Recompute everything, ignoring what earlier runs finished.")
@click.option(
    "--wait", is_flag=True, help="If another run is writing this dataset, wait for it to end instead of stopping."
)
@click.option("-q", "--quiet", is_flag=True, help="No progress; only errors, warnings and the output locations.")
@handle_errors
def run(workers: int | None, force: bool, wait: bool, quiet: bool, **kwargs: Any) -> None:
    """Run the whole workflow (convert, pmtiles, hex, repartition, catalog) on this machine.

    --bucket is a local directory (a bare name such as `out` means ./out) or s3://bucket/prefix.
    Outputs: BUCKET/DATASET.parquet, BUCKET/DATASET.pmtiles, BUCKET/DATASET/hex/h0=*/, and beside them the
    STAC collection, dataset card and map page (BUCKET/DATASET/collection.json, README.md, index.html).
    Each step runs as the same `cng-datasets <step>` command a Kubernetes Job would run; hex
    chunks run as parallel processes, pmtiles alongside them. Re-running resumes: finished steps
    and hex chunks are not computed again (--force recomputes all); a step runs again when its
    input's content changed. One run at a time per dataset: a second one stops, naming the run
    that holds it, or waits with --wait. Kubernetes-only options are accepted and ignored.
    The summary ends with the accounting chain (source features → GeoParquet rows → features in
    hex → features in the PMTiles at the maximum zoom, with the drops each step recorded and
    why); a difference that no recorded reason explains fails the run (exit 65).

    \b
    Example:
      cng-datasets run --dataset countries --source-url ne.shp --bucket ./out --h3-resolution 4
    """
    from cng_datasets import storage
    from cng_datasets.local import run_local

    kwargs["bucket"] = local_root(kwargs["bucket"])
    env = dict(os.environ)
    if kwargs.get("s3_endpoint"):
        env["AWS_ENDPOINT_URL"] = kwargs["s3_endpoint"]
    if kwargs.get("s3_region"):
        env["AWS_REGION"] = kwargs["s3_region"]
    if env != os.environ:
        os.environ.update(env)
        storage._s3_client_cached.cache_clear()
    config = config_from_options(**kwargs)
    from cng_datasets import probe
    from cng_datasets.cli.plan import announce

    def estimate_first() -> None:
        """Once the destination is checked and ours: the estimate (its warning shows with -q too);
        a source that cannot be read fails in convert, with its own message."""
        announce(config, probe.survey(config, timeout=kwargs.get("count_timeout") or 0, warn=False))

    with _terminate_like_ctrl_c(), Display(sys.stderr, quiet, live=sys.stderr.isatty()) as display:
        summary = run_local(
            config, force=force, workers=workers, on_event=display, env=env, wait=wait, on_start=estimate_first
        )
    if not quiet:
        click.echo(summary_table(summary))
    click.echo(f"outputs: {config.parquet_url}  {config.pmtiles_url}  {config.hex_url}/")
    check_accounting(config, quiet)


def check_accounting(config: Any, quiet: bool) -> None:
    """Print the accounting chain (source → GeoParquet → hex → PMTiles, one line per output);
    raise :class:`IncompleteOutputError` on a difference that no recorded reason explains."""
    from cng_datasets.accounting import read_chain
    from cng_datasets.errors import IncompleteOutputError

    chain = read_chain(config.parquet_url, config.hex_url, config.pmtiles_url)
    if not quiet:
        for i, line in enumerate(chain.lines()):
            click.echo(f"{'accounting' if i == 0 else '':10}  {line}")
    if chain.problems:
        for name, text in chain.problems[1:]:
            click.echo(f"accounting problem: {name}: {text}", err=True)
        name, text = chain.problems[0]
        raise IncompleteOutputError(f"{name}: {text}")


for _p in run.params:
    if isinstance(_p, click.Option) and (
        _p.name in _K8S_ONLY or (_p.name or "").endswith(("_cpu", "_memory", "_ephemeral_storage"))
    ):
        _p.hidden = True


@click.command("validate")
@click.argument("dest")
@click.option("--dataset", required=True, help="Dataset name, as given to `run` / `workflow`.")
@click.option("-q", "--quiet", is_flag=True, help="Print only problems.")
@click.option(
    "--skip-source-count", is_flag=True, help="Do not re-count the features of the source(s) (e.g. large remote files)."
)
@handle_errors
def validate(dest: str, dataset: str, quiet: bool, skip_source_count: bool) -> None:
    """Check the three outputs of DATASET below DEST (a local directory or s3://bucket/prefix).

    GeoParquet: GeoParquet 1.1 `geo` metadata, WKB, geometry types, bbox and covering column.
    PMTiles: v3 header, MVT tiles, tile count, bounds, vector_layers with fields, readable
    directories. Hex: each h0=<cell> partition holds only rows with that h0, parent columns are
    the parents of the finest cell, no duplicate (id, cell) rows, every feature with a geometry
    present, and the output published: hex/_SUCCESS.json exists and lists exactly the .parquet
    files present with their row counts. Against the source: what each step recorded it read,
    wrote and dropped (with a reason) must add up from the source's features (re-counted from
    the recorded source URLs when reachable) to the GeoParquet rows, the features in hex and the
    features in the PMTiles tiles at the maximum zoom (each counted again here). Exits 65 with one
    line per problem when a check fails, including any difference no recorded reason explains.
    """
    from cng_datasets.validate import validate_dataset

    start = time.monotonic()

    def show(check: Any) -> None:
        if check.ok and quiet:
            return
        click.echo(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}", err=not check.ok)

    report = validate_dataset(local_root(dest), dataset, on_check=show, source_count=not skip_source_count)
    if not quiet:
        if report.chain is not None:
            click.echo(f"accounting: {report.chain.line()}")
        click.echo(f"{len(report.checks)} checks in {time.monotonic() - start:.1f} s")
    report.raise_for_problems()

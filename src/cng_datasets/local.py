"""Run a dataset's :class:`~cng_datasets.plan.Plan` on this machine: ``cng-datasets run``.

The runner executes exactly the argv of the plan, each step as a subprocess (``cng-datasets`` is
resolved to ``python -m cng_datasets`` of the running interpreter so any virtualenv works; nothing
else in the argv is rewritten). What a pod runs in the cluster is what runs here.

Order and parallelism::

    convert ──┬── pmtiles ──────────────────┐
              └── hex chunk 0..n-1 ── repartition

- ``convert`` runs first and alone. The plan is then built *again* with the exact feature count
  read from the GeoParquet's metadata (``read_dataset_info``): :func:`~cng_datasets.plan.build_plan`
  is pure, so the second call only refines the hex chunking, and every other argv is unchanged.
  This is better than probing the source: the count is exact and costs nothing.
- ``pmtiles`` and the hex chunks then share ``workers`` process slots (default
  :func:`cng_datasets.limits.cpu_count`): pmtiles takes one slot as soon as it may start, hex chunks
  fill the others (at least one), so on 2 CPUs pmtiles and one chunk run side by side and hex gets
  both slots once pmtiles ends. ``repartition`` starts when every chunk is done.

Resuming: when a step succeeds the runner writes a marker ``<root>/<dataset>/_cng/<step>.json``
(atomically, through :mod:`cng_datasets.storage`; see :mod:`cng_datasets.markers`) with the step's
argv, the identity of its inputs and outputs *by content* (a SHA-256 of local files, Shapefile
side files and every file of a directory; ETag, size and Last-Modified on S3 and HTTP, taken before
the step starts), and its run time. An input whose identity cannot be known (an HTTP server
without ETag / Last-Modified) is never taken as unchanged. On a re-run a step is skipped when its marker exists, the argv equals the current
plan's, and its inputs and outputs are still the ones recorded; ``repartition`` moreover only
when the hex output's own completion marker ``<hex>/_SUCCESS.json`` exists (the output is
published). A finished ``repartition`` makes ``hex`` unneeded. Hex resumes per chunk: the hex
step writes a completion marker per chunk under ``<chunks>/_done/`` (exactly
``chunk-<N>.json``); chunks that have one are not started again, provided the chunks were made by
the same argv from the same GeoParquet (recorded in ``_cng/hex-chunks.json`` before the first chunk
starts; otherwise the chunks prefix is emptied first). ``force=True`` removes markers, chunks and
hex partitions and recomputes everything.

Faults: the run first checks the destination (a ``--bucket`` that is a file is refused in one
line, :mod:`cng_datasets.destination`), then takes the dataset's lease
(``<root>/<dataset>/_cng/lease.json``, :mod:`cng_datasets.lease`): a second run into the same
dataset says who holds it and stops, or waits (``wait=True``); a lease whose holder is gone is
taken over. Under the lease it removes what interrupted writes left at the destination (only our
own temporary names), and again when it ends, also on failure or Ctrl-C. The steps' work files
go to a private directory in the system temp dir (their ``TMPDIR``), removed at the end (after a
``kill -9``, by the next run on this host). Every step process, and tippecanoe started by the
pmtiles step, is killed by the kernel when its parent dies (``PR_SET_PDEATHSIG``, Linux), so a
re-run after ``kill -9`` never races an orphan; Ctrl-C stops them through their process groups.

Progress is reported through ``on_event`` (:class:`~cng_datasets.progress.Event`), never printed;
an exception raised by the callback (e.g. ``KeyboardInterrupt``) stops the run, terminates the
running subprocesses and keeps every finished output and marker. Use
:class:`~cng_datasets.progress.Progress` to turn events into a display.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cng_datasets import children, destination, limits, storage
from cng_datasets.config import WorkflowConfig
from cng_datasets.errors import EXIT_BAD_INPUT, CngError
from cng_datasets.lease import Lease, describe
from cng_datasets.lease import acquire as acquire_lease
from cng_datasets.markers import (
    DONE_DIR,
    chunk_done_markers,
    chunk_stats,
    forget_hashes,
    hex_published,
    identity,
    marker_url,
    present,
    read_marker,
    write_marker,
)
from cng_datasets.plan import Plan, Step, build_plan
from cng_datasets.progress import Event, EventCallback
from cng_datasets.steps.repartition import success_url

#: Seconds between two polls of the running subprocesses.
POLL_SECONDS = 0.05
#: Seconds a terminated subprocess gets before it is killed.
TERMINATE_GRACE = 5.0


class StepFailedError(CngError):
    """A step (or one hex chunk) of a local run exited non-zero.

    ``step`` and ``chunk`` name it, ``returncode`` is the subprocess's exit code, ``detail`` its
    last stderr line and ``log`` the file holding its whole stderr. The exit code of ``run`` is the
    step's: 65 (bad input) when the step exited 65, 1 otherwise.
    """

    def __init__(self, step: str, chunk: int | None, returncode: int, detail: str, log: str | None) -> None:
        self.step = step
        self.chunk = chunk
        self.returncode = returncode
        self.detail = detail
        self.log = log
        self.exit_code = EXIT_BAD_INPUT if returncode == EXIT_BAD_INPUT else 1
        where = step if chunk is None else f"{step} chunk {chunk}"
        how = f"exit {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"
        text = f"step {where} failed ({how}): {detail or 'no error message'}"
        if log:
            text += f" [log: {log}]"
        super().__init__(text)


# --------------------------------------------------------------------------------------------
# Summary


@dataclass
class StepResult:
    """How one step went: ``status`` is ``ran`` or ``skipped`` (done in an earlier run)."""

    name: str
    status: str
    seconds: float
    argv: tuple[str, ...] = ()
    chunks_run: int = 0
    chunks_skipped: int = 0


@dataclass
class OutputInfo:
    """One output of the run: ``rows`` is the row count (features, hex rows) or tile count."""

    kind: str
    url: str
    bytes: int
    rows: int | None
    unit: str
    files: int = 1


@dataclass
class RunSummary:
    """What :func:`run_local` did."""

    plan: Plan
    steps: list[StepResult]
    outputs: list[OutputInfo]
    seconds: float
    log_dir: str | None


def _step_inputs(plan: Plan, step: Step) -> list[str]:
    c = plan.config
    if step.name == "convert":
        return list(c.source_urls)
    return [c.parquet_url]


# --------------------------------------------------------------------------------------------
# Subprocesses


resolve_argv = children.resolve_argv
_Task = children.Task


# --------------------------------------------------------------------------------------------
# The runner


class _Runner:
    def __init__(
        self,
        config: WorkflowConfig,
        force: bool,
        workers: int,
        on_event: EventCallback | None,
        env: Mapping[str, str],
        log_dir: Path,
        lease: Lease | None = None,
    ) -> None:
        self.config = config
        self.force = force
        self.workers = workers
        self.on_event = on_event
        self.env = env
        self.log_dir = log_dir
        self.results: dict[str, StepResult] = {}
        self.running: list[_Task] = []
        self.lease = lease

    def emit(self, kind: str, step: str | None = None, chunk: int | None = None, message: str = "", **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(Event(kind, step, chunk, message, data))

    # ---- markers ------------------------------------------------------------------------

    def _marker_ok(self, plan: Plan, step: Step, inputs: dict[str, Any] | None = None) -> tuple[bool, str]:
        """Whether ``step`` may be skipped, and why. ``inputs``: the current input identities, when
        already known (they are what the step's marker will record if it runs)."""
        marker = read_marker(marker_url(self.config, step.name))
        if marker is None:
            return False, "no marker"
        if tuple(marker.get("argv", ())) != step.argv:
            return False, "its command changed"
        for url in _step_inputs(plan, step):
            now = inputs[url] if inputs is not None and url in inputs else identity(url)
            if now is None:
                return False, f"cannot tell whether input {url} changed"
            if marker.get("inputs", {}).get(url) != now:
                return False, f"input {url} changed"
        for url in step.outputs:
            recorded = marker.get("outputs", {}).get(url)
            if not present(url) or (recorded is not None and recorded != identity(url)):
                return False, f"output {url} is missing or changed"
        if step.name == "repartition" and not hex_published(self.config.hex_url):
            return False, f"output {self.config.hex_url} has no completion marker (_SUCCESS.json)"
        return True, f"done in an earlier run ({marker.get('seconds', 0):.1f} s)"

    def _finish_marker(self, plan: Plan, step: Step, seconds: float, inputs: dict[str, Any]) -> None:
        write_marker(
            marker_url(self.config, step.name),
            {
                "step": step.name,
                "argv": list(step.argv),
                "inputs": inputs,
                "outputs": {u: identity(u) for u in step.outputs},
                "seconds": round(seconds, 3),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )

    # ---- process pool -------------------------------------------------------------------

    def _poll(self) -> list[_Task]:
        """Return the tasks that ended since the last poll (failures raise)."""
        if self.lease is not None:
            self.lease.check()  # taken over by another run: stop before writing more
        ended = []
        for t in list(self.running):
            assert t.proc is not None
            rc = t.proc.poll()
            if rc is None:
                continue
            self.running.remove(t)
            t.close()
            if rc != 0:
                detail = t.last_line("err") or t.last_line("out")
                if t.chunk is not None:
                    self.emit("chunk-failed", t.step.name, t.chunk, detail)
                self.emit("step-failed", t.step.name, t.chunk, detail)
                raise StepFailedError(t.step.name, t.chunk, rc, detail, f"{t.log_base}.err")
            line = t.last_line("out")
            if line:
                self.emit("output", t.step.name, t.chunk, line)
            ended.append(t)
        return ended

    def stop_all(self) -> None:
        """Terminate every running subprocess (SIGTERM, then SIGKILL after a grace period)."""
        for t in self.running:
            t.terminate()
        deadline = time.monotonic() + TERMINATE_GRACE
        for t in self.running:
            assert t.proc is not None
            try:
                t.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                t.kill()
                t.proc.wait()
            t.close()
        self.running.clear()

    def _task(self, step: Step, chunk: int | None) -> _Task:
        argv = resolve_argv(step.argv_for_index(chunk) if chunk is not None else step.argv)
        name = step.name if chunk is None else f"{step.name}.{chunk:05d}"
        return _Task(step, chunk, argv, self.log_dir / name)

    # ---- steps --------------------------------------------------------------------------

    def run_convert(self, plan: Plan) -> None:
        step = plan.step("convert")
        # the sources' identities before convert reads them: what its marker records
        inputs = {u: identity(u) for u in _step_inputs(plan, step)}
        ok, why = (False, "") if self.force else self._marker_ok(plan, step, inputs)
        if ok:
            self._skip(step, why)
            return
        self.emit("step-started", "convert")
        task = self._task(step, None)
        task.start(self.env)
        self.running.append(task)
        while not self._poll():
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - task.started
        self._finish_marker(plan, step, seconds, inputs)
        self.results["convert"] = StepResult("convert", "ran", seconds, step.argv)
        self.emit("step-finished", "convert", seconds=seconds)

    def _skip(self, step: Step, why: str, seconds: float | None = None) -> None:
        if seconds is None:
            marker = read_marker(marker_url(self.config, step.name)) or {}
            seconds = float(marker.get("seconds", 0.0))
        self.results[step.name] = StepResult(step.name, "skipped", seconds, step.argv)
        self.emit("step-skipped", step.name, message=why)

    def run_rest(self, plan: Plan) -> None:
        """pmtiles in parallel with the hex chunks, then repartition."""
        pm, hx, rp = plan.step("pmtiles"), plan.step("hex"), plan.step("repartition")
        c = self.config
        parquet_id = identity(c.parquet_url)
        ids = {c.parquet_url: parquet_id}

        pm_todo = True
        if not self.force:
            ok, why = self._marker_ok(plan, pm, ids)
            if ok:
                self._skip(pm, why)
                pm_todo = False

        rp_todo, hex_todo = True, True
        if not self.force:
            ok, why = self._marker_ok(plan, rp, ids)
            if ok:
                self._skip(rp, why)
                rp_todo = False
                self._skip(hx, "not needed: repartition is done", seconds=self._marker_seconds("hex"))
                hex_todo = False
            else:
                ok, why = self._marker_ok(plan, hx, ids)
                if ok:
                    self._skip(hx, why)
                    hex_todo = False

        pending_chunks: list[int] = []
        if hex_todo:
            pending_chunks = self._prepare_chunks(plan, hx, parquet_id)
        if rp_todo:
            # un-publish the hex output of an earlier run at once (its source may have changed);
            # repartition removes its stale files after writing the new ones
            storage.delete(success_url(c.hex_url))

        pm_task: _Task | None = None
        rp_task: _Task | None = None
        hex_start = time.monotonic()
        hex_done = not hex_todo
        chunks_run = 0
        if hex_todo:
            self.emit("step-started", "hex")
            if not pending_chunks:  # every chunk was done in an earlier run
                self._finish_hex(plan, hx, hex_start, chunks_run, parquet_id)
                hex_done = True

        def hex_running() -> bool:
            return any(x.step.name == "hex" for x in self.running)

        while True:
            # Start what may start. pmtiles first: it is usually the longest single task.
            if pm_todo and pm_task is None and len(self.running) < self.workers:
                self.emit("step-started", "pmtiles")
                pm_task = self._task(pm, None)
                pm_task.start(self.env)
                self.running.append(pm_task)
            while pending_chunks and len(self.running) < self.workers:
                i = pending_chunks.pop(0)
                t = self._task(hx, i)
                t.start(self.env)
                self.running.append(t)
                self.emit("chunk-started", "hex", i)
            if rp_todo and rp_task is None and hex_done and len(self.running) < self.workers:
                self.emit("step-started", "repartition")
                rp_task = self._task(rp, None)
                rp_task.start(self.env)
                self.running.append(rp_task)

            if not self.running:
                break
            time.sleep(POLL_SECONDS)
            for t in self._poll():
                seconds = time.monotonic() - t.started
                if t is pm_task:
                    self._finish_marker(plan, pm, seconds, {c.parquet_url: parquet_id})
                    self.results["pmtiles"] = StepResult("pmtiles", "ran", seconds, pm.argv)
                    self.emit("step-finished", "pmtiles", seconds=seconds)
                elif t is rp_task:
                    self._finish_marker(plan, rp, seconds, {c.parquet_url: parquet_id})
                    self.results["repartition"] = StepResult("repartition", "ran", seconds, rp.argv)
                    self.emit("step-finished", "repartition", seconds=seconds)
                else:
                    chunks_run += 1
                    stats = chunk_stats(chunk_done_markers(c.chunks_url).get(t.chunk if t.chunk is not None else -1))
                    self.emit("chunk-finished", "hex", t.chunk, seconds=seconds, **stats)
                    if not pending_chunks and not hex_running():
                        self._finish_hex(plan, hx, hex_start, chunks_run, parquet_id)
                        hex_done = True

    def _marker_seconds(self, name: str) -> float:
        return float((read_marker(marker_url(self.config, name)) or {}).get("seconds", 0.0))

    def _prepare_chunks(self, plan: Plan, hx: Step, parquet_id: Any) -> list[int]:
        """The chunk indices still to run; empties the chunks prefix when it cannot be resumed."""
        c = self.config
        session_url = marker_url(c, "hex-chunks")
        session = None if self.force else read_marker(session_url)
        resumable = (
            session is not None
            and parquet_id is not None
            and tuple(session.get("argv", ())) == hx.argv
            and session.get("inputs", {}).get(c.parquet_url) == parquet_id
        )
        if not resumable:
            storage.delete_prefix(c.chunks_url)
            write_marker(session_url, {"step": "hex", "argv": list(hx.argv), "inputs": {c.parquet_url: parquet_id}})
            done: dict[int, str] = {}
        else:
            done = chunk_done_markers(c.chunks_url)
        pending = []
        self._chunks_skipped = 0
        for i in range(hx.completions):
            if i in done:
                self._chunks_skipped += 1
                self.emit("chunk-skipped", "hex", i, **chunk_stats(done[i]))
            else:
                pending.append(i)
        return pending

    def _finish_hex(self, plan: Plan, hx: Step, started: float, chunks_run: int, parquet_id: Any) -> None:
        done = chunk_done_markers(self.config.chunks_url)
        missing = [i for i in range(hx.completions) if i not in done]
        if missing:
            raise StepFailedError(
                "hex", missing[0], 1,
                f"chunk(s) {', '.join(map(str, missing[:5]))} exited 0 but left no completion marker "
                f"under {storage.join(self.config.chunks_url, DONE_DIR)}",
                None,
            )
        seconds = time.monotonic() - started
        self._finish_marker(plan, hx, seconds, {self.config.parquet_url: parquet_id})
        self.results["hex"] = StepResult(
            "hex", "ran", seconds, hx.argv, chunks_run=chunks_run, chunks_skipped=getattr(self, "_chunks_skipped", 0)
        )
        self.emit("step-finished", "hex", seconds=seconds)


def _plan_event(runner: _Runner, plan: Plan, features: int | None) -> None:
    runner.emit(
        "plan",
        steps=list(plan.names),
        chunks=plan.chunking.completions if features is not None else None,
        chunk_size=plan.chunking.chunk_size,
        features=features,
        workers=runner.workers,
        root=plan.config.root_url,
    )


#: ``run --force``'s clean-up (kept here for callers of the former name).
clean = destination.clean


def run_local(
    config: WorkflowConfig,
    *,
    force: bool = False,
    workers: int | None = None,
    on_event: EventCallback | None = None,
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    wait: bool = False,
) -> RunSummary:
    """Run the whole workflow of ``config`` on this machine; return what was done.

    - ``workers``: subprocesses at once (default :func:`cng_datasets.limits.cpu_count`);
    - ``force``: ignore markers, remove chunks and partitions of earlier runs, recompute all;
    - ``on_event``: called with every :class:`~cng_datasets.progress.Event` (from this thread);
      an exception it raises stops the run (running subprocesses are terminated, finished
      outputs and markers stay);
    - ``env``: environment of the subprocesses (default ``os.environ``);
    - ``log_dir``: where each subprocess's stdout / stderr go (``<name>.out`` / ``.err``). Default:
      ``<root>/<dataset>/_cng/logs`` for a local root; a temporary directory for S3 (removed when
      the run succeeds).

    - ``wait``: when another run holds the dataset's lease, wait for it (``lease-waiting`` event)
      instead of raising :class:`~cng_datasets.lease.LeaseHeldError`.

    Raises :class:`StepFailedError` when a step fails (exit code 65 if the step exited 65),
    :class:`~cng_datasets.errors.UsageError` for a destination that cannot hold the outputs.

    Example:
        >>> from cng_datasets.config import WorkflowConfig
        >>> cfg = WorkflowConfig(dataset="countries", source_urls=("ne.shp",), bucket="/tmp/out")
        >>> summary = run_local(cfg)  # doctest: +SKIP
    """
    destination.check_destination(config)  # before anything is written
    destination.make_root(config)

    def emit(kind: str, message: str = "", **data: Any) -> None:
        if on_event is not None:
            on_event(Event(kind, None, None, message, data))

    held = acquire_lease(
        destination.lease_url(config),
        wait=wait,
        label=storage.join(config.root_url, config.dataset_path),
        on_wait=lambda holder: emit("lease-waiting", describe(holder)),
    )
    tmpdir: str | None = None
    try:
        forget_hashes()  # this run hashes every input again
        children.remove_stale_tempdirs()
        removed = destination.remove_stale_temporaries(config)
        if removed:
            emit("cleaned", f"removed {len(removed)} temporary file(s) of an interrupted run", paths=removed)
        tmpdir = children.private_tempdir()
        child_env = dict(env if env is not None else os.environ)
        child_env["TMPDIR"] = tmpdir  # the steps' work files: outside the destination
        return _run_leased(config, force, workers, on_event, child_env, log_dir, held)
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
        try:  # the steps are stopped: whatever temporaries they left are stale
            destination.remove_stale_temporaries(config)
        finally:
            held.release()


def _run_leased(
    config: WorkflowConfig,
    force: bool,
    workers: int | None,
    on_event: EventCallback | None,
    env: Mapping[str, str],
    log_dir: str | os.PathLike[str] | None,
    lease: Lease,
) -> RunSummary:
    t0 = time.monotonic()
    n_workers = max(1, workers or limits.cpu_count())
    temp_logs = False
    if log_dir is not None:
        logs = Path(log_dir)
    elif config.is_local:
        logs = Path(storage.join(config.root_url, config.dataset_path, "_cng", "logs"))
    else:
        logs = Path(tempfile.mkdtemp(prefix="cng-run-logs-"))
        temp_logs = True
    if force:
        clean(config)
    if config.is_local:
        Path(config.root_url).mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    runner = _Runner(config, force, n_workers, on_event, env, logs, lease)

    try:
        plan = build_plan(config, None)
        _plan_event(runner, plan, None)
        runner.run_convert(plan)

        from cng_datasets.steps.convert import read_dataset_info

        features = int(read_dataset_info(config.parquet_url)["feature_count"])
        plan = build_plan(config, features)  # pure: only the hex chunking changes
        _plan_event(runner, plan, features)
        runner.run_rest(plan)
    except BaseException:
        runner.stop_all()
        raise
    outputs = describe_outputs(config, features)
    steps = [runner.results[n] for n in plan.names if n in runner.results]
    if temp_logs:
        shutil.rmtree(logs, ignore_errors=True)
    return RunSummary(plan, steps, outputs, time.monotonic() - t0, None if temp_logs else str(logs))


def describe_outputs(config: WorkflowConfig, features: int | None = None) -> list[OutputInfo]:
    """Sizes and row counts of the three outputs (reads only Parquet footers and the PMTiles header)."""
    import pyarrow.parquet as pq

    out: list[OutputInfo] = []
    if storage.exists(config.parquet_url):
        out.append(OutputInfo("geoparquet", config.parquet_url, storage.size(config.parquet_url), features, "features"))
    if storage.exists(config.pmtiles_url):
        tiles: int | None = None
        try:
            from pmtiles.tile import deserialize_header

            with storage.open_input(config.pmtiles_url) as f:
                tiles = int(deserialize_header(f.read(127))["addressed_tiles_count"])
        except Exception:  # noqa: BLE001 - the summary shows what it can; validate checks
            tiles = None
        out.append(OutputInfo("pmtiles", config.pmtiles_url, storage.size(config.pmtiles_url), tiles, "tiles"))
    parts = [u for u in storage.list_prefix(config.hex_url) if u.endswith(".parquet")]
    if parts:
        rows, size = 0, 0
        for u in parts:
            with storage.open_random_access(u) as f:
                rows += pq.ParquetFile(f).metadata.num_rows
            size += storage.size(u)
        partitions = len({u.rsplit("/", 2)[-2] for u in parts})
        out.append(OutputInfo("hex", config.hex_url, size, rows, "rows", files=partitions))
    return out

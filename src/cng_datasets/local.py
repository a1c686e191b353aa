"""Run a dataset's :class:`~cng_datasets.plan.Plan` on this machine: ``cng-datasets run``.

The runner executes exactly the argv of the plan, each step as a subprocess (``cng-datasets`` is
resolved to ``python -m cng_datasets`` of the running interpreter so any virtualenv works; nothing
else in the argv is rewritten). What a pod runs in the cluster is what runs here.

Order and parallelism come from the plan's DAG (``depends_on``; nothing here names a step)::

    convert ──┬── pmtiles ──────────────────┐
              └── hex chunk 0..n-1 ── repartition

- A step is decided (skipped or run) when every step it depends on is done, so ``convert`` runs
  first and alone. Before the first indexed step (hex) starts, the plan is built *again* with the
  exact feature count read from its input GeoParquet's metadata (``read_dataset_info``):
  :func:`~cng_datasets.plan.build_plan` is pure, so the second call only refines the hex
  chunking, and every other argv is unchanged. This is better than probing the source: the
  count is exact and costs nothing.
- Steps share ``workers`` process slots (default :func:`cng_datasets.limits.cpu_count`): a single
  step (pmtiles) takes one slot as soon as it may start, the indexes of an indexed step (hex
  chunks) fill the others, so on 2 CPUs pmtiles and one chunk run side by side and hex gets both
  slots once pmtiles ends. ``repartition`` starts when every chunk is done. Each step reads
  ``step.inputs``, whose identities its marker records.

Resuming: when a step succeeds the runner writes a marker ``<root>/<dataset>/_cng/<step>.json``
(atomically, through :mod:`cng_datasets.storage`; see :mod:`cng_datasets.markers`) with the step's
argv, the identity of its inputs and outputs *by content* (a SHA-256 of local files, Shapefile
side files and every file of a directory; ETag, size and Last-Modified on S3 and HTTP, taken before
the step starts), and its run time. An input whose identity cannot be known (an HTTP server
without ETag / Last-Modified) is never taken as unchanged. On a re-run a step is skipped when its
marker exists, the argv equals the current
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cng_datasets import children, contract, destination, limits, storage
from cng_datasets.config import WorkflowConfig
from cng_datasets.errors import StepFailedError
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

__all__ = [
    "OutputInfo",
    "RunSummary",
    "StepFailedError",
    "StepResult",
    "clean",
    "describe_outputs",
    "resolve_argv",
    "run_local",
]

#: Seconds between two polls of the running subprocesses.
POLL_SECONDS = 0.05
#: Seconds a terminated subprocess gets before it is killed.
TERMINATE_GRACE = 5.0


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


def _published_outputs(config: WorkflowConfig) -> frozenset[str]:
    """Outputs that are complete only with their completion marker ``<url>/_SUCCESS.json``."""
    return frozenset({config.hex_url})


# --------------------------------------------------------------------------------------------
# Subprocesses


resolve_argv = children.resolve_argv
_Task = children.Task


# --------------------------------------------------------------------------------------------
# The runner


@dataclass(frozen=True)
class _Decision:
    """Whether a step is skipped, why, and the identities of its inputs (what its marker records)."""

    skip: bool
    why: str
    inputs: dict[str, Any]


@dataclass
class _Fanout:
    """An indexed step being run: the indexes still to start, how many ran / were done before."""

    step: Step
    inputs: dict[str, Any]
    pending: list[int]
    started: float
    ran: int = 0
    skipped: int = 0


class _Runner:
    """Schedules a plan's steps from their ``depends_on``: a step is decided (skipped or run)
    when every step it depends on is done; single steps take a slot each, in plan order, and the
    indexes of an indexed step fill the free slots."""

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
        self.warned: set[tuple[str, str]] = set()  # (step, warning) already relayed
        self.lease = lease
        self.done: set[str] = set()  # finished or skipped
        self.begun: set[str] = set()  # decided
        self.decisions: dict[str, _Decision] = {}
        self.queue: list[Step] = []  # single steps waiting for a slot
        self.fanouts: dict[str, _Fanout] = {}
        self.plan: Plan  # set by run()

    def emit(
        self, kind: str, step: str | None = None, chunk: int | None = None, message: str = "", /, **data: Any
    ) -> None:
        if self.on_event is not None:
            self.on_event(Event(kind, step, chunk, message, data))

    # ---- markers ------------------------------------------------------------------------

    def _marker_ok(self, step: Step, inputs: dict[str, Any]) -> tuple[bool, str]:
        """Whether ``step`` may be skipped, and why. ``inputs``: the current input identities
        (what the step's marker will record if it runs)."""
        marker = read_marker(marker_url(self.config, step.name))
        if marker is None:
            return False, "no marker"
        if tuple(marker.get("argv", ())) != step.argv:
            return False, "its command changed"
        for url, now in inputs.items():
            if now is None:
                return False, f"cannot tell whether input {url} changed"
            if marker.get("inputs", {}).get(url) != now:
                return False, f"input {url} changed"
        for url in step.outputs:
            recorded = marker.get("outputs", {}).get(url)
            if not present(url) or (recorded is not None and recorded != identity(url)):
                return False, f"output {url} is missing or changed"
        for url in _published_outputs(self.config).intersection(step.outputs):
            if not hex_published(url):
                return False, f"output {url} has no completion marker (_SUCCESS.json)"
        return True, f"done in an earlier run ({marker.get('seconds', 0):.1f} s)"

    def _finish_marker(self, step: Step, seconds: float, inputs: dict[str, Any]) -> None:
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

    def _decide(self, step: Step) -> _Decision:
        """Skip or run ``step`` (once per run). A consumed step (hex, whose chunks repartition
        deletes) is not needed when every step depending on it is done."""
        if step.name in self.decisions:
            return self.decisions[step.name]
        # the inputs' identities before the step reads them: what its marker records
        inputs = {u: identity(u) for u in step.inputs}
        after = self.plan.dependents(step.name)
        if self.force:
            decision = _Decision(False, "", inputs)
        elif step.consumed and after and all(self._decide(s).skip for s in after):
            decision = _Decision(True, f"not needed: {', '.join(s.name for s in after)} is done", inputs)
        else:
            decision = _Decision(*self._marker_ok(step, inputs), inputs)
        if not decision.skip:
            # un-publish an earlier run's output at once (its source may have changed); the step
            # removes its stale files after writing the new ones
            for url in _published_outputs(self.config).intersection(step.outputs):
                storage.delete(success_url(url))
        self.decisions[step.name] = decision
        return decision

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
            self._relay_warnings(t)
            if rc != 0:
                detail = t.last_line("err") or t.last_line("out")
                detail = detail.removeprefix("error: ")  # the step CLI's prefix; ours is added once
                if t.chunk is not None:
                    self.emit("chunk-failed", t.step.name, t.chunk, detail)
                self.emit("step-failed", t.step.name, t.chunk, detail)
                raise StepFailedError(t.step.name, t.chunk, rc, detail, f"{t.log_base}.err")
            line = t.last_line("out")
            if line:
                self.emit("output", t.step.name, t.chunk, line)
            ended.append(t)
        return ended

    def _relay_warnings(self, t: _Task) -> None:
        """Pass a step's warnings on to the user once each (200 hex chunks warn alike), so that
        an assumed CRS or a renamed column is not only in a log file."""
        for text in t.warning_lines():
            if (t.step.name, text) not in self.warned:
                self.warned.add((t.step.name, text))
                self.emit("warning", t.step.name, t.chunk, text)

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

    def _start(self, step: Step, chunk: int | None) -> None:
        argv = resolve_argv(step.argv_for_index(chunk) if chunk is not None else step.argv)
        name = step.name if chunk is None else f"{step.name}.{chunk:05d}"
        task = _Task(step, chunk, argv, self.log_dir / name)
        task.start(self.env)
        self.running.append(task)

    # ---- scheduling ---------------------------------------------------------------------

    def run(self, plan: Plan) -> Plan:
        """Run ``plan`` to the end; return it as refined with the exact feature count."""
        self.plan = plan
        self._plan_event(None)
        while True:
            self._begin_ready()
            self._fill_slots()
            if not self.running:
                assert len(self.done) == len(self.plan.steps), "a step can never start"
                return self.plan
            time.sleep(POLL_SECONDS)
            for t in self._poll():
                self._ended(t)

    def _begin_ready(self) -> None:
        """Decide every step whose dependencies are done (skipping one may make others ready)."""
        while True:
            ready = [s for s in self.plan.ready(self.done) if s.name not in self.begun]
            if not ready:
                return
            self._refine_chunking(ready)
            for step in ready:
                self.begun.add(step.name)
                self._begin(self.plan.step(step.name))

    def _refine_chunking(self, ready: list[Step]) -> None:
        """Before an indexed step starts, build the plan again with the exact feature count of its
        input (the GeoParquet's metadata) and the hex rows estimated from a sample of it:
        build_plan is pure, only the chunking changes."""
        fan_in = next((s for s in ready if s.indexed), None)
        if fan_in is None or self.plan.chunking.feature_count is not None:
            return
        from cng_datasets.estimate import plan_from_geoparquet

        self.plan = plan_from_geoparquet(self.config, fan_in.inputs[0])
        self._plan_event(self.plan.chunking.feature_count)

    def _begin(self, step: Step) -> None:
        decision = self._decide(step)
        if decision.skip:
            self._skip(step, decision.why)
        elif step.indexed:
            self._begin_fanout(step, decision.inputs)
        else:
            self.queue.append(step)

    def _fill_slots(self) -> None:
        """Single steps first (pmtiles is usually the longest task), then the pending indexes."""
        while self.queue and len(self.running) < self.workers:
            step = self.queue.pop(0)
            self.emit("step-started", step.name)
            self._start(step, None)
        for fan in self.fanouts.values():
            while fan.pending and len(self.running) < self.workers:
                i = fan.pending.pop(0)
                self._start(fan.step, i)
                self.emit("chunk-started", fan.step.name, i)

    def _ended(self, t: _Task) -> None:
        seconds = time.monotonic() - t.started
        step = t.step
        if t.chunk is None:
            self._finish_marker(step, seconds, self.decisions[step.name].inputs)
            self.results[step.name] = StepResult(step.name, "ran", seconds, step.argv)
            self.emit("step-finished", step.name, seconds=seconds)
            self.done.add(step.name)
            return
        fan = self.fanouts[step.name]
        fan.ran += 1
        stats = chunk_stats(chunk_done_markers(step.outputs[0]).get(t.chunk))
        self.emit("chunk-finished", step.name, t.chunk, seconds=seconds, **stats)
        if not fan.pending and not any(x.step.name == step.name for x in self.running):
            self._finish_fanout(fan)

    def _skip(self, step: Step, why: str) -> None:
        marker = read_marker(marker_url(self.config, step.name)) or {}
        seconds = float(marker.get("seconds", 0.0))
        self.results[step.name] = StepResult(step.name, "skipped", seconds, step.argv)
        self.emit("step-skipped", step.name, None, why)
        self.done.add(step.name)

    # ---- indexed steps ------------------------------------------------------------------

    def _begin_fanout(self, step: Step, inputs: dict[str, Any]) -> None:
        fan = _Fanout(step, inputs, [], time.monotonic())
        done = self._resumable_indexes(step, inputs)
        for i in range(step.completions):
            if i in done:
                fan.skipped += 1
                self.emit("chunk-skipped", step.name, i, **chunk_stats(done[i]))
            else:
                fan.pending.append(i)
        self.emit("step-started", step.name)
        self.fanouts[step.name] = fan
        if not fan.pending:  # every index was done in an earlier run
            self._finish_fanout(fan)

    def _resumable_indexes(self, step: Step, inputs: dict[str, Any]) -> dict[int, str]:
        """The done markers of the indexes an earlier run finished, by index. They count only if
        that run had the same argv and inputs (``_cng/<step>-chunks.json``, written before the
        first index starts); otherwise the step's output prefix is emptied first."""
        session_url = marker_url(self.config, f"{step.name}-chunks")
        session = None if self.force else read_marker(session_url)
        resumable = (
            session is not None
            and all(v is not None for v in inputs.values())
            and tuple(session.get("argv", ())) == step.argv
            and session.get("inputs", {}) == inputs
        )
        if resumable:
            return chunk_done_markers(step.outputs[0])
        storage.delete_prefix(step.outputs[0])
        write_marker(session_url, {"step": step.name, "argv": list(step.argv), "inputs": inputs})
        return {}

    def _finish_fanout(self, fan: _Fanout) -> None:
        step = fan.step
        done = chunk_done_markers(step.outputs[0])
        missing = [i for i in range(step.completions) if i not in done]
        if missing:
            raise StepFailedError(
                step.name,
                missing[0],
                1,
                f"chunk(s) {', '.join(map(str, missing[:5]))} exited 0 but left no completion marker "
                f"under {storage.join(step.outputs[0], DONE_DIR)}",
                None,
            )
        seconds = time.monotonic() - fan.started
        self._finish_marker(step, seconds, fan.inputs)
        self.results[step.name] = StepResult(
            step.name, "ran", seconds, step.argv, chunks_run=fan.ran, chunks_skipped=fan.skipped
        )
        self.emit("step-finished", step.name, seconds=seconds)
        self.done.add(step.name)

    def _plan_event(self, features: int | None) -> None:
        plan = self.plan
        self.emit(
            "plan",
            steps=list(plan.names),
            chunks=plan.chunking.completions if features is not None else None,
            chunk_size=plan.chunking.chunk_size,
            features=features,
            workers=self.workers,
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
    on_start: Callable[[], None] | None = None,
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
      instead of raising :class:`~cng_datasets.errors.LeaseHeldError`;
    - ``on_start``: called once the destination is checked and the lease held, before any step
      (``run`` prints its estimate there).

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
        if on_start is not None:
            on_start()
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
        logs = Path(contract.run_dir_url(config.root_url, config.dataset_path, contract.LOGS_DIR))
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
        plan = runner.run(build_plan(config, None))
    except BaseException:
        runner.stop_all()
        raise
    features = plan.chunking.feature_count
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

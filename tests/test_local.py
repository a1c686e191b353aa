"""The local runner: real steps as real subprocesses on real data, into a directory and into S3;
interrupted in the middle of hex and resumed; markers decide what runs again."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cng_datasets import contract, estimate, local, markers, progress, storage
from cng_datasets.config import WorkflowConfig
from cng_datasets.plan import build_plan
from cng_datasets.validate import validate_dataset
from tests.conftest import DATA

SAMPLE = DATA / "naturalearth_lowres" / "naturalearth_lowres.shp"

pytestmark = pytest.mark.xdist_group("local-run")


def config(root: str, **kw: Any) -> WorkflowConfig:
    base: dict[str, Any] = dict(
        dataset="countries",
        source_urls=(str(SAMPLE),),
        bucket=root,
        h3_resolution=3,
        parent_resolutions=(1, 0),
    )
    base.update(kw)
    return WorkflowConfig(**base)


class Recorder:
    """Collects events; optionally interrupts the run after ``stop_after`` finished chunks."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.events: list[progress.Event] = []
        self.stop_after = stop_after

    def __call__(self, ev: progress.Event) -> None:
        self.events.append(ev)
        if (
            self.stop_after is not None
            and ev.kind == "chunk-finished"
            and len(self.of("chunk-finished")) >= self.stop_after
        ):
            raise KeyboardInterrupt

    def of(self, kind: str, step: str | None = None) -> list[progress.Event]:
        return [e for e in self.events if e.kind == kind and (step is None or e.step == step)]


def hex_rows(hex_url: str) -> list[tuple[Any, ...]]:
    """Every hex row with its partition, sorted: a run's hex output as comparable data."""
    rows = []
    for url in storage.list_prefix(hex_url):
        if not url.endswith(".parquet"):
            continue
        part = [p for p in url.split("/") if p.startswith("h0=")][0]
        filesystem, path = storage.pyarrow_filesystem(url)
        with filesystem.open_input_file(path) as f:
            t = pq.read_table(f)
        names = sorted(t.column_names)
        for r in t.select(names).to_pylist():
            rows.append((part, *(r[n] for n in names)))
    return sorted(rows, key=repr)


def read_parquet(url: str) -> pa.Table:
    filesystem, path = storage.pyarrow_filesystem(url)
    with filesystem.open_input_file(path) as f:
        return pq.read_table(f)


# --------------------------------------------------------------------------------------------


def test_resolve_argv_runs_this_interpreter() -> None:
    assert local.resolve_argv(("cng-datasets", "hex", "--chunk-id", "3")) == [
        sys.executable,
        "-m",
        "cng_datasets",
        "hex",
        "--chunk-id",
        "3",
    ]
    assert local.resolve_argv(("tippecanoe", "-o", "x")) == ["tippecanoe", "-o", "x"]


def test_progress_counts_and_eta() -> None:
    p = progress.Progress(started=0.0)
    p.update(
        progress.Event(
            "plan", data={"steps": ["convert", "pmtiles", "hex", "repartition"], "chunks": 4, "features": 100}, time=0.0
        )
    )
    p.update(progress.Event("chunk-skipped", "hex", 0, data={"features": 25, "cells": 10}, time=0.0))
    p.update(progress.Event("step-started", "hex", time=10.0))
    p.update(progress.Event("chunk-started", "hex", 1, time=10.0))
    p.update(progress.Event("chunk-finished", "hex", 1, data={"features": 25, "cells": 30}, time=20.0))
    assert (p.chunks_done, p.chunks_skipped, p.features_hexed, p.cells) == (2, 1, 50, 40)
    assert p.state["hex"] == "running"
    assert p.eta(now=20.0) == pytest.approx(20.0)  # 1 chunk per 10 s, 2 left
    assert p.elapsed(now=20.0) == 20.0


def test_chunk_marker_index_parsing(tmp_path: Path) -> None:
    done = tmp_path / "chunks" / "_done"
    done.mkdir(parents=True)
    for name in ("chunk-00003.json", "chunk-00011.json"):
        (done / name).write_text("{}")
    # leftovers of interrupted writes and foreign names are not completion markers: a temporary
    # file of chunk 4's marker must not make the runner skip chunk 4
    for name in (
        ".chunk-00004.json.3f2a9c.tmp",
        "chunk-00005.json.tmp",
        "00006-of-00020.json",
        "7",
        "xchunk-00008.json",
    ):
        (done / name).write_text("{}")
    assert sorted(markers.chunk_done_markers(str(tmp_path / "chunks"))) == [3, 11]


def test_chunk_marker_pattern_is_the_one_repartition_uses(tmp_path: Path) -> None:
    from cng_datasets.steps import repartition as rp

    assert markers.CHUNK_MARKER_RE is contract.CHUNK_MARKER_RE
    assert rp.CHUNK_MARKER_RE is contract.CHUNK_MARKER_RE
    assert contract.CHUNK_MARKER_RE.match(contract.chunk_marker_name(3))


@pytest.mark.slow
def test_run_into_directory_then_resume_skips_everything(tmp_path: Path) -> None:
    root = tmp_path / "out"
    cfg = config(str(root))
    rec = Recorder()
    summary = local.run_local(cfg, workers=2, on_event=rec)

    assert [s.name for s in summary.steps] == ["convert", "pmtiles", "hex", "repartition", "catalog"]
    assert all(s.status == "ran" for s in summary.steps)
    assert (root / "countries" / "collection.json").is_file() and (root / "countries" / "README.md").is_file()
    kinds = {o.kind: o for o in summary.outputs}
    assert kinds["geoparquet"].rows == 177 and kinds["geoparquet"].bytes > 0
    assert kinds["pmtiles"].rows and kinds["pmtiles"].rows > 0
    assert kinds["hex"].rows and kinds["hex"].rows >= 177 and kinds["hex"].files > 1
    assert validate_dataset(str(root), "countries").ok
    # the plan was refined with the exact count: one chunk for 177 features
    plans = rec.of("plan")
    assert plans[0].data["features"] is None and plans[1].data["features"] == 177 and plans[1].data["chunks"] == 1
    # each marker records the argv of the plan (the chunking from the hex rows estimated after convert)
    plan = build_plan(cfg, 177, estimate.estimated_hex_rows(cfg, cfg.parquet_url))
    assert plan.chunking.completions == 1 and plan.chunking.chunk_size == 177
    for step in plan.steps:
        marker = json.loads((root / "countries" / "_cng" / f"{step.name}.json").read_text())
        assert tuple(marker["argv"]) == step.argv
    # logs of every process
    assert (root / "countries" / "_cng" / "logs" / "convert.err").exists()
    # the lease is released, and the steps' work files were not at the destination
    assert not (root / "countries" / "_cng" / "lease.json").exists()
    assert not [p for p in root.rglob("*") if p.name.startswith(".") or p.name == "_tmp"]

    stamp = {p: p.stat().st_mtime_ns for p in [root / "countries.parquet", root / "countries.pmtiles"]}
    again = Recorder()
    summary2 = local.run_local(cfg, workers=2, on_event=again)
    assert [s.status for s in summary2.steps] == ["skipped"] * 5
    assert not again.of("step-started") and not again.of("chunk-started")
    assert {p: p.stat().st_mtime_ns for p in stamp} == stamp

    # a deleted output is redone, and only it
    (root / "countries.pmtiles").unlink()
    third = Recorder()
    local.run_local(cfg, workers=2, on_event=third)
    assert [e.step for e in third.of("step-started")] == ["pmtiles", "catalog"]  # the catalog describes the new archive
    assert (root / "countries.pmtiles").exists()

    # a changed argv redoes the steps it changes: a different max zoom only touches pmtiles
    fourth = Recorder()
    local.run_local(config(str(root), max_zoom=4), workers=2, on_event=fourth)
    assert [e.step for e in fourth.of("step-started")] == ["pmtiles", "catalog"]

    # --force recomputes everything
    forced = Recorder()
    local.run_local(cfg, workers=2, on_event=forced, force=True)
    assert [e.step for e in forced.of("step-finished")].count("convert") == 1
    assert {e.step for e in forced.of("step-finished")} == {"convert", "pmtiles", "hex", "repartition", "catalog"}


@pytest.mark.slow
def test_hex_is_done_only_when_its_success_marker_exists(tmp_path: Path) -> None:
    """Outputs and run markers that look finished are not enough: repartition runs again when the
    hex output has no _SUCCESS.json (e.g. written by an interrupted or older repartition)."""
    root = tmp_path / "out"
    cfg = config(str(root))
    local.run_local(cfg, workers=2)
    success = root / "countries" / "hex" / "_SUCCESS.json"
    assert success.exists() and validate_dataset(str(root), "countries").ok
    success.unlink()
    # the runner's marker recorded the hex output as it is now: only _SUCCESS.json tells it apart
    rp_marker = root / "countries" / "_cng" / "repartition.json"
    body = json.loads(rp_marker.read_text())
    body["outputs"] = {cfg.hex_url: markers.identity(cfg.hex_url)}
    rp_marker.write_text(json.dumps(body))
    rec = Recorder()
    local.run_local(cfg, workers=2, on_event=rec)
    assert "repartition" in [e.step for e in rec.of("step-started")]
    assert [e.message for e in rec.of("step-skipped") if e.step == "convert"]
    assert success.exists() and validate_dataset(str(root), "countries").ok
    assert markers.hex_published(cfg.hex_url)


@pytest.mark.slow
def test_interrupted_hex_resumes_without_recomputing_finished_chunks(tmp_path: Path) -> None:
    # 177 features in chunks of 20: 9 chunks
    cfg = config(str(tmp_path / "resumed"), chunk_size=20)
    first = Recorder(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        local.run_local(cfg, workers=2, on_event=first)
    finished = sorted(e.chunk for e in first.of("chunk-finished"))
    assert len(finished) == 3
    done = markers.chunk_done_markers(cfg.chunks_url)
    assert set(finished) <= set(done)
    assert len(done) < 9, "the interruption came too late to test resuming"
    stamps = {i: os.stat(done[i]) for i in done}
    assert not (tmp_path / "resumed" / "countries" / "_cng" / "hex.json").exists()

    def check_untouched(ev: progress.Event) -> None:
        second.events.append(ev)
        if ev.kind == "step-started" and ev.step == "repartition":
            now = markers.chunk_done_markers(cfg.chunks_url)
            for i, st in stamps.items():
                after = os.stat(now[i])
                assert (after.st_ino, after.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), f"chunk {i} was redone"

    second = Recorder()
    summary = local.run_local(cfg, workers=2, on_event=check_untouched)
    skipped = sorted(e.chunk for e in second.of("chunk-skipped"))
    started = sorted(e.chunk for e in second.of("chunk-started"))
    assert skipped == sorted(done)
    assert started == sorted(set(range(9)) - set(done))
    skipped_steps = [e.step for e in second.of("step-skipped")]
    assert "convert" in skipped_steps and "hex" not in skipped_steps and "repartition" not in skipped_steps
    hex_result = next(s for s in summary.steps if s.name == "hex")
    assert (hex_result.chunks_run, hex_result.chunks_skipped) == (9 - len(done), len(done))

    # identical to an uninterrupted run
    ref = config(str(tmp_path / "reference"), chunk_size=20)
    local.run_local(ref, workers=2)
    assert read_parquet(cfg.parquet_url).equals(read_parquet(ref.parquet_url))
    assert hex_rows(cfg.hex_url) == hex_rows(ref.hex_url)
    assert validate_dataset(cfg.root_url, "countries").ok


@pytest.mark.slow
@pytest.mark.s3
def test_run_into_s3(s3: str, tmp_path: Path) -> None:
    cfg = config(f"{s3}/prefix")
    rec = Recorder()
    summary = local.run_local(cfg, workers=2, on_event=rec)
    assert summary.log_dir is None  # temporary logs are removed after success
    keys = storage.list_prefix(f"{s3}/prefix")
    assert f"{s3}/prefix/countries.parquet" in keys and f"{s3}/prefix/countries.pmtiles" in keys
    assert any("/countries/hex/h0=" in k for k in keys)
    assert f"{s3}/prefix/countries/_cng/repartition.json" in keys
    assert f"{s3}/prefix/countries/_cng/lease.json" not in keys  # released at the end
    report = validate_dataset(f"{s3}/prefix", "countries")
    assert report.ok, report.problems
    # resumes from the markers on S3 too
    again = Recorder()
    local.run_local(cfg, workers=2, on_event=again)
    assert not again.of("step-started")


@pytest.mark.slow
def test_failing_step_names_step_and_keeps_finished_outputs(tmp_path: Path) -> None:
    root = tmp_path / "out"
    cfg = config(str(root))
    local.run_local(cfg, workers=2)
    # Break the GeoParquet after the fact: convert is redone (its output changed) — but make the
    # source unreadable so convert fails with bad input.
    bad = tmp_path / "broken.shp"
    bad.write_bytes(b"garbage")
    with pytest.raises(local.StepFailedError) as info:
        local.run_local(config(str(root), source_urls=(str(bad),)), workers=2)
    err = info.value
    assert err.step == "convert" and err.chunk is None and err.exit_code == 65
    assert "step convert failed (exit 65)" in str(err) and "broken.shp" in str(err)
    # what earlier runs finished is still there; the failed run gave its lease back
    assert (root / "countries.pmtiles").exists() and (root / "countries.parquet").exists()
    assert not (root / "countries" / "_cng" / "lease.json").exists()


@pytest.mark.slow
def test_the_runner_schedules_from_the_plan_not_from_the_step_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steps declared backwards (and every re-built plan too): the order still comes from
    depends_on, each step reads step.inputs, and the result is the same."""
    from cng_datasets import plan as plan_module
    from cng_datasets.plan import Plan

    real = local.build_plan
    built: list[Plan] = []

    def backwards(cfg: WorkflowConfig, features: int | None, hex_rows: int | None = None) -> Plan:
        plan = real(cfg, features, hex_rows)
        built.append(Plan(plan.config, plan.chunking, tuple(reversed(plan.steps))))
        return built[-1]

    monkeypatch.setattr(local, "build_plan", backwards)
    monkeypatch.setattr(plan_module, "build_plan", backwards)  # the plan rebuilt after convert
    cfg = config(str(tmp_path / "out"), chunk_size=50)
    rec = Recorder()
    summary = local.run_local(cfg, workers=1, on_event=rec)
    assert [p.data["features"] for p in rec.of("plan")] == [None, 177]
    assert built[-1].step("hex").completions == 4  # refined: 177 features in chunks of 50
    order = [(e.kind, e.step) for e in rec.events if e.kind in ("step-started", "step-finished")]
    assert order[:2] == [("step-started", "convert"), ("step-finished", "convert")]
    assert order[-2:] == [("step-started", "catalog"), ("step-finished", "catalog")]
    hex_done = order.index(("step-finished", "hex"))
    assert all(order.index(("step-started", s)) > 1 for s in ("pmtiles", "hex"))
    assert order.index(("step-started", "repartition")) > hex_done
    assert order.index(("step-started", "catalog")) > order.index(("step-finished", "pmtiles"))
    assert sorted(e.chunk for e in rec.of("chunk-finished")) == [0, 1, 2, 3]
    assert [s.name for s in summary.steps] == ["catalog", "repartition", "hex", "pmtiles", "convert"]  # plan order
    assert validate_dataset(cfg.root_url, "countries").ok
    # resumed from the markers whatever the declaration order
    again = Recorder()
    local.run_local(cfg, workers=1, on_event=again)
    assert not again.of("step-started") and len(again.of("step-skipped")) == 5


def test_few_big_features_are_shared_among_chunks_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More chunks wanted than features: the plan shares each row chunk among chunks (``hex
    --shares``); the runner runs every index, and the output is what one chunk writes."""
    from cng_datasets import plan as plan_module

    boxes = tmp_path / "boxes.geojson"
    boxes.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": {"name": name},
                        "geometry": {
                            "type": "Polygon",
                            "coordinates": [[[x, 0], [x + 20, 0], [x + 20, 20], [x, 20], [x, 0]]],
                        },
                    }
                    for name, x in (("west", -60), ("east", 20))
                ],
            }
        )
    )
    monkeypatch.setattr(plan_module, "ROWS_PER_CHUNK", 100)  # as if each box were a continent
    shared = config(str(tmp_path / "shared"), source_urls=(str(boxes),), max_completions=6)
    rec = Recorder()
    local.run_local(shared, workers=2, on_event=rec)
    assert rec.of("plan")[-1].data["chunks"] == 6
    started = [e for e in rec.of("chunk-started") if e.step == "hex"]
    assert sorted(e.chunk for e in started) == list(range(6))  # 2 row chunks × 3 shares
    monkeypatch.setattr(plan_module, "ROWS_PER_CHUNK", 2_000_000)
    alone = config(str(tmp_path / "alone"), source_urls=(str(boxes),))
    local.run_local(alone, workers=2)

    def rows(root: Path) -> list[tuple[Any, ...]]:
        t = pq.read_table(root / "countries" / "hex")
        return sorted(zip(t.column("_cng_fid").to_pylist(), t.column("h3").to_pylist(), strict=True))

    assert rows(tmp_path / "shared") == rows(tmp_path / "alone")
    assert validate_dataset(str(tmp_path / "shared"), "countries").ok

"""`run` and `workflow` read the same options into the same plan: identical step argv.

The matrix covers every option the two commands share; a new shared option that is missing from
it fails :func:`test_the_matrix_covers_every_shared_option`, so parity stays checked as options
are added. The end-to-end case runs the real `run` against an S3 endpoint and compares the argv
each step recorded in its completion marker with `workflow`'s ``plan.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from cng_datasets.cli import cli
from cng_datasets.plan import Plan, build_plan
from tests.conftest import DATA

FEATURES = 123_456
BASE = ("--dataset", "parity/ds", "--source-url", "https://example.com/a.gpkg", "--bucket", "s3://bkt/prefix")

#: option sets given to both commands (on top of BASE)
MATRIX: list[tuple[str, ...]] = [
    (),
    ("--h3-resolution", "4"),
    ("--h3-resolution", "0"),
    ("--h3-resolution", "7", "--parent-resolutions", "5,0", "--containment", "full"),
    ("--containment", "overlap", "--parent-resolutions", "9"),
    ("--layer", "roads", "--id-column", "gid", "--max-zoom", "9", "--min-zoom", "2"),
    (
        "--lat-column",
        "lat",
        "--lon-column",
        "lon",
        "--encoding",
        "CP1252",
        "--source-crs",
        "EPSG:3857",
        "--on-invalid",
        "skip",
        "--expect-features",
        str(FEATURES),
    ),
    ("--chunk-size", "5000", "--max-completions", "20", "--max-parallelism", "4"),
    ("--s3-endpoint", "http://minio:9000", "--s3-region", "eu-west-1", "--count-timeout", "5"),
    ("--source-url", "s3://in/b.gpkg"),
    ("--license", "CC-BY-4.0", "--description", "Protected areas, 2024 — all of them", "--cors"),
]


class _Captured(BaseException):
    """Stops `run` right after it built its configuration."""


def _run_plan(monkeypatch: pytest.MonkeyPatch, options: tuple[str, ...]) -> Plan:
    """The plan `run` executes for ``options`` (with the feature count fixed, as `workflow` gets it)."""
    seen: dict[str, Any] = {}

    def fake_run_local(config: Any, **kwargs: Any) -> None:
        seen["config"] = config
        raise _Captured

    monkeypatch.setattr("cng_datasets.local.run_local", fake_run_local)
    with pytest.raises(_Captured):
        CliRunner().invoke(cli, ["run", "-q", *BASE, *options])
    return build_plan(seen["config"], FEATURES)


def _workflow_plan(out: Path, options: tuple[str, ...]) -> Plan:
    result = CliRunner().invoke(
        cli, ["workflow", "-q", *BASE, *options, "--feature-count", str(FEATURES), "--output-dir", str(out)]
    )
    assert result.exit_code == 0, result.output
    return Plan.from_json((out / "plan.json").read_text())


def _shape(plan: Plan) -> list[tuple[Any, ...]]:
    return [
        (s.name, s.argv, s.depends_on, s.indexed, s.completions, s.parallelism, s.inputs, s.outputs) for s in plan.steps
    ]


@pytest.mark.parametrize("options", MATRIX, ids=lambda o: " ".join(o) or "defaults")
def test_run_and_workflow_build_the_same_plan(
    options: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = _run_plan(monkeypatch, options)
    cluster = _workflow_plan(tmp_path, options)
    assert _shape(local) == _shape(cluster)
    assert local.config == cluster.config


def test_default_parents_follow_the_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # formerly `workflow --h3-resolution 4` failed on the default 9,8,0 while `run` trimmed them
    plan = _workflow_plan(tmp_path, ("--h3-resolution", "4"))
    argv = plan.step("hex").argv
    assert argv[argv.index("--parent-resolutions") + 1] == "0"
    # given explicitly, parents finer than the resolution are an error in both
    for command in ("run", "workflow"):
        out = ["--output-dir", str(tmp_path / "o")] if command == "workflow" else []
        result = CliRunner().invoke(cli, [command, *BASE, "--h3-resolution", "4", "--parent-resolutions", "9,0", *out])
        assert result.exit_code == 65, (command, result.output)
        assert "--parent-resolutions: 9 must be coarser than --h3-resolution 4" in result.output


def _option_names(command: click.Command) -> set[str]:
    return {o for p in command.params if isinstance(p, click.Option) for o in p.opts if o.startswith("--")}


def _command(name: str) -> click.Command:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    return command


def test_the_matrix_covers_every_shared_option() -> None:
    from cng_datasets.cli.options import kubernetes_options, workflow_options

    shared = _option_names(workflow_options(click.command()(lambda **kw: None)))
    assert shared <= _option_names(_command("run")) and shared <= _option_names(_command("workflow"))
    given = {o for options in MATRIX for o in options if o.startswith("--")} | {o for o in BASE if o.startswith("--")}
    assert shared - given == set()
    # Kubernetes-only options are accepted by run too (and ignored), so one command line serves both
    k8s = _option_names(kubernetes_options(click.command()(lambda **kw: None)))
    assert k8s <= _option_names(_command("run"))


@pytest.mark.slow
def test_run_executes_the_argv_of_workflows_plan(s3: str, cli_run, tmp_path: Path) -> None:
    """End to end: the argv `run` executed (recorded in each step's marker) is `workflow`'s."""
    from cng_datasets import storage

    source = f"{s3}/in/earthquakes.json"
    storage.write_bytes(source, (DATA / "earthquakes.json").read_bytes())
    options = ["--dataset", "eq", "--source-url", source, "--bucket", f"{s3}/out"]
    options += ["--h3-resolution", "3", "--max-zoom", "5", "--on-invalid", "skip"]
    cli_run("run", "-q", *options, check=True)
    cli_run("workflow", "-q", *options, "--feature-count", "1707", "--output-dir", tmp_path / "m", check=True)
    plan = Plan.from_json((tmp_path / "m" / "plan.json").read_text())
    for step in plan.steps:
        marker = json.loads(storage.read_bytes(f"{s3}/out/eq/_cng/{step.name}.json"))
        assert tuple(marker["argv"]) == step.argv, step.name

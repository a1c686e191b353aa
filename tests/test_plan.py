"""The chunking rule and the plan: every feature covered, bounded fan-out, exact argv; the DAG
(order, readiness, refusal of cycles and unknown dependencies) and its JSON round trip."""

from __future__ import annotations

import json
import math
import random

import pytest

from cng_datasets.config import Resources, WorkflowConfig
from cng_datasets.errors import UsageError
from cng_datasets.plan import (
    FALLBACK_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    PLAN_FORMAT,
    PMTILES_WAIT_FOR_INPUT,
    PROGRAM,
    Plan,
    Step,
    build_plan,
    choose_chunking,
)

HOSTILE_URL = "https://example.com/a b&c='d\"e.gpkg?x=1&y=2"


def _counts() -> list[int]:
    rng = random.Random(20261129)
    edges = [
        0,
        1,
        2,
        999,
        1000,
        1001,
        1999,
        2000,
        2001,
        199_999,
        200_000,
        200_001,
        200_999,
        201_000,
        201_001,
        1_000_000,
        1_000_001,
        10**9 + 7,
        2**31 + 3,
    ]
    return edges + [rng.randrange(0, 10**8) for _ in range(1500)] + [rng.randrange(0, 5000) for _ in range(300)]


@pytest.mark.parametrize(("max_completions", "max_parallelism"), [(200, 50), (1, 1), (7, 3), (500, 1000)])
def test_chosen_chunking_covers_every_feature_with_bounded_fan_out(max_completions: int, max_parallelism: int) -> None:
    for n in _counts():
        ch = choose_chunking(n, max_completions, max_parallelism)
        assert ch.chunk_size * ch.completions >= n, n
        assert 1 <= ch.completions <= max_completions, n
        assert 1 <= ch.parallelism <= min(max_parallelism, ch.completions), n
        assert ch.chunk_size >= MIN_CHUNK_SIZE, n
        # no empty chunk: the last chunk starts before the end (floor: small datasets get few pods)
        if n > 0:
            assert (ch.completions - 1) * ch.chunk_size < n, n
        # the floor: never more chunks than needed for MIN_CHUNK_SIZE features each
        assert ch.completions <= max(1, math.ceil(n / MIN_CHUNK_SIZE)), n
        assert ch.feature_count == n


def test_chunk_size_is_the_smallest_that_fits_the_completions() -> None:
    for n in _counts():
        ch = choose_chunking(n)
        if n > 200 * MIN_CHUNK_SIZE:
            assert ch.chunk_size == math.ceil(n / 200)
            assert ch.completions == math.ceil(n / ch.chunk_size) <= 200
        else:
            assert ch.chunk_size == MIN_CHUNK_SIZE


@pytest.mark.parametrize("chunk_size", [1, 7, 999, 1000, 5000, 10**6])
def test_explicit_chunk_size_never_leaves_features_after_the_last_chunk(chunk_size: int) -> None:
    for n in _counts()[:400]:
        ch = choose_chunking(n, chunk_size=chunk_size)
        assert ch.chunk_size * ch.completions >= n
        assert ch.completions <= 200
        assert ch.chunk_size >= chunk_size
        if math.ceil(n / chunk_size) <= 200:
            assert ch.chunk_size == chunk_size  # honoured when it fits the completion limit


def test_small_datasets_start_one_pod() -> None:
    for n in (0, 1, 250, 999, 1000):
        assert choose_chunking(n).completions == 1
    assert choose_chunking(1001).completions == 2
    assert choose_chunking(1_000_000).completions == 200
    assert choose_chunking(1_000_000).chunk_size == 5000


def test_unknown_count_uses_defaults() -> None:
    ch = choose_chunking(None)
    assert (ch.chunk_size, ch.completions, ch.parallelism, ch.feature_count) == (FALLBACK_CHUNK_SIZE, 200, 50, None)
    assert choose_chunking(None, chunk_size=123).chunk_size == 123
    assert choose_chunking(None, max_completions=10, max_parallelism=4).completions == 10


def _config(**kw: object) -> WorkflowConfig:
    base: dict[str, object] = dict(dataset="wdpa/2024", source_urls=(HOSTILE_URL,), bucket="public-wdpa")
    base.update(kw)
    return WorkflowConfig(**base)


def test_plan_steps_argv_and_dependencies() -> None:
    plan = build_plan(_config(), 1_000_000)
    assert plan.names == ("convert", "pmtiles", "hex", "repartition", "catalog")
    for step in plan.steps:
        assert step.argv[:2] == (PROGRAM, step.name)
        assert all(isinstance(a, str) for a in step.argv)
    convert = plan.step("convert")
    assert convert.argv[-3:] == ("--", HOSTILE_URL, "s3://public-wdpa/wdpa/2024.parquet")
    pmtiles = plan.step("pmtiles")
    i = pmtiles.argv.index("--wait-for-input")
    assert pmtiles.argv[i + 1] == str(PMTILES_WAIT_FOR_INPUT) == "86400"
    assert pmtiles.depends_on == ("convert",)
    hex_ = plan.step("hex")
    assert hex_.indexed and hex_.completions == 200 and hex_.parallelism == 50
    assert "--chunk-id" not in hex_.argv  # Kubernetes gives JOB_COMPLETION_INDEX
    assert hex_.argv[hex_.argv.index("--chunk-size") + 1] == "5000"
    assert hex_.argv[hex_.argv.index("--chunk-count") + 1] == "200"
    assert hex_.argv[hex_.argv.index("--output") + 1] == "s3://public-wdpa/wdpa/2024/chunks"
    assert hex_.argv_for_index(3)[-2:] == ("--chunk-id", "3")
    assert plan.step("repartition").depends_on == ("hex",)
    assert plan.step("repartition").argv[plan.step("repartition").argv.index("--output") + 1] == (
        "s3://public-wdpa/wdpa/2024/hex"
    )
    catalog = plan.step("catalog")
    assert catalog.depends_on == ("pmtiles", "repartition")
    assert catalog.argv == (
        PROGRAM,
        "catalog",
        "--root",
        "s3://public-wdpa",
        "--dataset",
        "wdpa/2024",
        "--source-url",
        HOSTILE_URL,
        "--license",
        "other",
    )
    assert catalog.outputs == ("s3://public-wdpa/wdpa/2024/collection.json",)


def test_plan_with_unknown_count_and_several_sources() -> None:
    plan = build_plan(_config(source_urls=("s3://a/x.gpkg", "-starts-with-dash.gpkg")), None)
    assert plan.step("hex").completions == 200
    argv = plan.step("convert").argv
    assert argv[argv.index("--") + 1 :] == (
        "s3://a/x.gpkg",
        "-starts-with-dash.gpkg",
        "s3://public-wdpa/wdpa/2024.parquet",
    )


# ---- the DAG -----------------------------------------------------------------------------------


def _steps(**deps: tuple[str, ...]) -> tuple[Step, ...]:
    return tuple(Step(name, (PROGRAM, name), Resources(), depends_on=d) for name, d in deps.items())


def test_the_plan_is_a_dag_in_dependency_order() -> None:
    plan = build_plan(_config(), 1_000_000)
    assert [s.name for s in plan.order()] == ["convert", "pmtiles", "hex", "repartition", "catalog"]
    assert [s.name for s in plan.ready(set())] == ["convert"]
    assert [s.name for s in plan.ready({"convert"})] == ["pmtiles", "hex"]
    assert [s.name for s in plan.ready({"convert", "hex"})] == ["pmtiles", "repartition"]
    assert [s.name for s in plan.ready({"convert", "hex", "repartition"})] == ["pmtiles"]
    assert [s.name for s in plan.ready({"convert", "hex", "repartition", "pmtiles"})] == ["catalog"]
    assert plan.ready(set(plan.names)) == ()
    assert [s.name for s in plan.dependents("convert")] == ["pmtiles", "hex"]
    c = plan.config
    assert plan.step("convert").inputs == c.source_urls
    assert all(plan.step(s).inputs == (c.parquet_url,) for s in ("pmtiles", "hex", "repartition"))
    assert plan.step("hex").consumed and not plan.step("repartition").consumed


def test_declaration_order_does_not_matter() -> None:
    built = build_plan(_config(), 1000)
    shuffled = Plan(built.config, built.chunking, tuple(reversed(built.steps)))
    assert [s.name for s in shuffled.order()] == ["convert", "hex", "pmtiles", "repartition", "catalog"]
    plan = Plan(built.config, built.chunking, _steps(d=("b", "c"), c=("a",), b=("a",), a=()))
    assert [s.name for s in plan.order()] == ["a", "c", "b", "d"]  # peers in declaration order


@pytest.mark.parametrize(
    ("deps", "match"),
    [
        ({"a": ("b",), "b": ("a",)}, "the dependencies of a, b form a cycle"),
        ({"a": (), "b": ("c",), "c": ("b",), "d": ("a",)}, "the dependencies of b, c form a cycle"),
        ({"a": ("a",)}, "of a form a cycle"),
        ({"a": (), "b": ("missing",)}, "step 'b' depends on 'missing', which is not a step of the plan"),
    ],
)
def test_an_invalid_dag_is_refused(deps: dict[str, tuple[str, ...]], match: str) -> None:
    built = build_plan(_config(), 1000)
    with pytest.raises(UsageError, match=match):
        Plan(built.config, built.chunking, _steps(**deps))


def test_two_steps_of_one_name_are_refused() -> None:
    built = build_plan(_config(), 1000)
    with pytest.raises(UsageError, match="two steps named 'a'"):
        Plan(built.config, built.chunking, (*_steps(a=()), *_steps(a=())))


@pytest.mark.parametrize("count", [None, 0, 1_000_000])
def test_json_round_trip(count: int | None) -> None:
    cfg = _config(
        layer='it\'s "a" layer',
        max_zoom=9,
        chunk_size=777,
        lat_column="lat",
        lon_column="lon",
        resources={"hex": Resources(cpu="3", memory="1Gi", ephemeral_storage="2Gi")},
        parent_resolutions=(5, 0),
    )
    plan = build_plan(cfg, count)
    text = plan.to_json()
    again = Plan.from_json(text)
    assert again == plan
    assert isinstance(again.config.source_urls, tuple) and isinstance(again.steps[0].argv, tuple)
    assert again.config.resources["hex"] == Resources(cpu="3", memory="1Gi", ephemeral_storage="2Gi")
    assert again.to_json() == text
    assert json.loads(text)["format"] == PLAN_FORMAT


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{", "not a plan: not JSON"),
        ("[]", "not a plan of format 1"),
        ('{"format": 99, "steps": []}', r"not a plan of format 1 \(format: 99\)"),
        ('{"format": 1, "steps": []}', "not a valid plan: KeyError"),
    ],
)
def test_a_broken_plan_file_is_one_usage_error(text: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        Plan.from_json(text)


def test_a_plan_file_with_an_unknown_field_or_a_cycle_is_refused() -> None:
    doc = json.loads(build_plan(_config(), 10).to_json())
    doc["steps"][0]["retries"] = 3
    with pytest.raises(UsageError, match="unknown field"):
        Plan.from_json(json.dumps(doc))
    doc = json.loads(build_plan(_config(), 10).to_json())
    doc["steps"][0]["depends_on"] = ["repartition"]
    with pytest.raises(UsageError, match="form a cycle"):
        Plan.from_json(json.dumps(doc))

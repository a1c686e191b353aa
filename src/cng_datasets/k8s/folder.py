"""A workflow folder (written by ``cng-datasets workflow``; on the PVC, its step Jobs and plan) as
the orchestrator and ``submit`` read it.

The order of the steps and their dependencies come from ``plan.json``
(:meth:`~cng_datasets.plan.Plan.from_json`), never from the Jobs' labels or annotations; each step
of the plan maps to the one Job in ``<step>-job.yaml`` (:func:`cng_datasets.k8s.names.job_file`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cng_datasets.errors import UsageError
from cng_datasets.k8s import names
from cng_datasets.plan import Plan


def read_yaml_docs(path: Path) -> list[dict[str, Any]]:
    """The mapping documents of a YAML file; :class:`UsageError` when it is not readable YAML."""
    import yaml

    try:
        return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if isinstance(d, dict)]
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"{path}: not readable YAML ({exc})") from None


def container_argv(job: dict[str, Any]) -> list[str]:
    """The command and args of a Job's first container."""
    containers = job.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}]
    c = containers[0]
    return [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]


@dataclass
class StepJob:
    """One step of the plan with its Job, as read from the folder."""

    step: str
    manifest: dict[str, Any]
    depends_on: tuple[str, ...]
    source: str = ""  # the file it comes from, for messages

    @property
    def name(self) -> str:
        return str(self.manifest["metadata"]["name"])


def load_plan(directory: str | Path) -> Plan:
    """The plan of the folder (``plan.json``); :class:`UsageError` naming what is wrong."""
    path = Path(directory) / names.PLAN_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(
            f"{path.parent} has no {names.PLAN_FILE} (the order of the steps); write the folder with "
            "`cng-datasets workflow`"
        ) from None
    except OSError as exc:
        raise UsageError(f"{path}: not readable ({exc})") from None
    try:
        return Plan.from_json(text)
    except UsageError as exc:
        raise UsageError(f"{path}: {exc}") from None


def load_step_jobs(directory: str | Path) -> list[StepJob]:
    """The steps of the folder's plan in dependency order, each with the Job of its file."""
    d = Path(directory)
    if not d.is_dir():
        raise UsageError(f"{d} is not a directory")
    jobs: list[StepJob] = []
    for step in load_plan(d).order():
        path = d / names.job_file(step.name)
        if not path.is_file():
            raise UsageError(f"{d}: the plan has a step {step.name!r} but there is no {path.name}")
        docs = [doc for doc in read_yaml_docs(path) if doc.get("kind") == "Job"]
        if len(docs) != 1:
            raise UsageError(f"{path}: expected the one Job of step {step.name!r}, found {len(docs)} Jobs")
        jobs.append(StepJob(step.name, docs[0], step.depends_on, path.name))
    return jobs

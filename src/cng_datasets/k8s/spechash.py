"""What a Job runs, as a short hash: the ``cng-datasets/spec-hash`` annotation.

A Job name stays the same when the workflow is regenerated with other settings (``--h3-resolution
7`` instead of 10), and finished Jobs stay in the cluster for a week (``ttlSecondsAfterFinished``).
Without a fingerprint, a second run would find the old Complete Jobs and skip every step. So every
Job of a workflow carries::

    cng-datasets/spec-hash: <16 hex characters of a SHA-256>

of a canonical JSON of what decides its output — each container's ``image``, ``command``,
``args``, ``env``, ``envFrom``, ``workingDir`` and ``resources``, and the Job's ``completionMode`` and
``completions`` (the hex chunks) — **and the hashes of the steps it depends on**: hex reads
convert's output, so a changed convert makes hex (and repartition after it) stale as well, even
though their own commands did not change. The orchestrator Job's hash covers every step's.

:func:`spec_hash` / :func:`step_hashes` are the one computation used by ``k8s/manifests.py`` (which
writes the annotation), the orchestrator (which compares the live Job's annotation with the hash it
recomputes from the YAML it is about to apply or skip) and ``submit`` (the orchestrator and upload
Jobs). Labels, names, deadlines, retries, security settings and the annotation itself are not
part of it: they do not change what a finished Job produced. Neither is the chunking of a hex Job
that the orchestrator sizes after convert (``cng-datasets/sized-after-convert``: its
``completions`` and the options ``--chunk-size`` / ``--chunk-count`` / ``--shares``): it is chosen from the
converted GeoParquet, which convert's hash already covers, and the same work split otherwise
writes the same rows. :func:`find_stale` /
:func:`stale_error` compare a live Job with the hash it should carry and word the error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cng_datasets.errors import StaleJobError
from cng_datasets.k8s.labels import ANNOTATION_SIZED_AT_RUN, ANNOTATION_SPEC_HASH
from cng_datasets.plan import CHUNKING_OPTIONS

HASH_CHARS = 16

#: The container fields that decide what a step computes.
CONTAINER_FIELDS = ("name", "image", "command", "args", "env", "envFrom", "workingDir", "resources")
#: The Job fields that decide it (the hex chunks).
JOB_FIELDS = ("completionMode", "completions")


def _canonical(value: Any) -> Any:
    """Scalars as strings (``cpu: 2`` and ``cpu: "2"`` are the same request); dicts by key."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def sized_at_run(job: Mapping[str, Any]) -> bool:
    """Whether the orchestrator sizes ``job``'s chunks after convert."""
    annotations = (job.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(ANNOTATION_SIZED_AT_RUN, "")).lower() == "true"


def _without_chunking(argv: list[Any]) -> list[Any]:
    """``argv`` without the chunking options and their values."""
    out: list[Any] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in CHUNKING_OPTIONS:
            skip = True
        else:
            out.append(arg)
    return out


def spec_content(job: Mapping[str, Any]) -> dict[str, Any]:
    """The part of ``job`` that :func:`spec_hash` covers (without the dependencies)."""
    spec = job.get("spec") or {}
    pod = (spec.get("template") or {}).get("spec") or {}
    sized = sized_at_run(job)
    out: dict[str, Any] = {k: spec[k] for k in JOB_FIELDS if spec.get(k) is not None}
    if sized:
        out.pop("completions", None)
    for key in ("initContainers", "containers"):
        containers = pod.get(key) or []
        if containers:
            out[key] = [{f: c[f] for f in CONTAINER_FIELDS if c.get(f) is not None} for c in containers]
            if sized:
                for c in out[key]:
                    for f in ("command", "args"):
                        if f in c:
                            c[f] = _without_chunking(c[f])
    canonical: dict[str, Any] = _canonical(out)  # a mapping stays a mapping
    return canonical


def spec_hash(job: Mapping[str, Any], depends: Iterable[str] = ()) -> str:
    """The spec hash of ``job`` whose dependencies have the hashes ``depends`` (order-insensitive)."""
    doc = {"job": spec_content(job), "depends": sorted(depends)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def step_hashes(steps: Iterable[tuple[str, Mapping[str, Any], Sequence[str]]]) -> dict[str, str]:
    """(step, Job, the steps it depends on) → step → spec hash, each covering its dependencies'.

    Raises :class:`ValueError` on a dependency that is not among ``steps`` or a cycle.
    """
    items = {step: (job, tuple(deps)) for step, job, deps in steps}
    out: dict[str, str] = {}
    visiting: set[str] = set()

    def visit(step: str) -> str:
        if step in out:
            return out[step]
        if step not in items:
            raise ValueError(f"unknown step {step!r}")
        if step in visiting:
            raise ValueError(f"dependency cycle through {step!r}")
        visiting.add(step)
        job, deps = items[step]
        out[step] = spec_hash(job, [f"{d}={visit(d)}" for d in deps])
        visiting.discard(step)
        return out[step]

    for step in items:
        visit(step)
    return out


def workflow_hash(job: Mapping[str, Any], steps: Mapping[str, str]) -> str:
    """The orchestrator Job's hash: its own spec and every step's hash (``step_hashes``)."""
    return spec_hash(job, [f"{s}={h}" for s, h in steps.items()])


def annotated(job: Mapping[str, Any] | None) -> str | None:
    """The ``cng-datasets/spec-hash`` annotation of a (live) Job, ``None`` when it has none."""
    if not job:
        return None
    value = ((job.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    return str(value) if value else None


def with_hash(job: dict[str, Any], value: str) -> dict[str, Any]:
    """A shallow copy of ``job`` whose metadata carries ``value`` as its spec hash."""
    md = dict(job.get("metadata") or {})
    md["annotations"] = {**(md.get("annotations") or {}), ANNOTATION_SPEC_HASH: value}
    return {**job, "metadata": md}


# ---- stale Jobs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stale:
    """One existing Job whose spec-hash is not the YAML's."""

    job: str
    source: str  # the YAML file (or step) it should match
    want: str
    live: str | None


def find_stale(live: dict[str, Any] | None, job: str, source: str, want: str) -> Stale | None:
    """A :class:`Stale` when the live Job exists and its spec-hash annotation is not ``want``."""
    if live is None:
        return None
    have = annotated(live)
    return None if have == want else Stale(job, source, want, have)


def stale_error(namespace: str, stale: list[Stale], directory: str = "DIR") -> StaleJobError:
    """The one-line error naming the stale Jobs and the two ways to replace them."""
    what = ", ".join(
        f"{s.job} ({'spec-hash ' + s.live if s.live else 'no spec-hash'}; {s.source} has {s.want})" for s in stale
    )
    plural = "these Jobs" if len(stale) > 1 else "this Job"
    return StaleJobError(
        f"Job{'s' if len(stale) > 1 else ''} in namespace {namespace} from an earlier run with other settings: {what}"
        f" — {plural} would be taken for this run's (skipped when complete), so the workflow stops here; "
        f"replace {'them' if len(stale) > 1 else 'it'} with `cng-datasets submit {directory} --replace-stale` "
        f"(deletes only the stale Jobs, keeps the others and the outputs) or delete the workflow's Jobs with "
        f"`cng-datasets cleanup {directory}` (keeps the outputs) and submit again"
    )

"""Every error this package raises on purpose.

    CngError                        base; the CLI prints ``str(err)`` as one line (exit 1 unless noted)
    ├── UsageError                  options that contradict each other or cannot be honoured (65)
    ├── DataError                   deterministic bad input: retrying cannot help (exit 65)
    │   ├── SourceError             a source cannot be opened / read (names the source)
    │   ├── OutOfRangeError         a coordinate outside lon/lat degrees (h3cells)
    │   ├── RecordError             an accounting record present but malformed (accounting)
    │   ├── IncompleteOutputError   a completeness check failed (missing features, chunks)
    │   └── ValidationError         ``validate`` found problems; ``problems`` lists them
    ├── StorageError                a local / S3 / HTTP transfer failed (may succeed on retry)
    ├── ToolError                   an external tool (tippecanoe) failed
    ├── LeaseHeldError              another run holds the destination (``--wait`` waits for it)
    ├── LeaseLostError              our lease was taken over while we ran
    ├── StepFailedError             a step of a local run exited non-zero (65 when the step did)
    └── ClusterError                the Kubernetes API refused or a Job failed
        ├── StaleJobError           a Job of that name runs other settings (65)
        ├── WaitTimeoutError        a wait on the cluster ran out of time
        ├── PreflightError          a check before submitting failed; ``failed`` lists them
        ├── PodsStuckError          a step's pods cannot start (Unschedulable, image pull)
        ├── NotFound / AlreadyExists / Forbidden   HTTP 404 / 409 / 403 of the API
        └── NamespaceMissing        the namespace does not exist

    CngWarning (UserWarning)        printed as ``warning: …`` lines
    ├── AssumedCrsWarning / RenamedColumnWarning / CountFallbackWarning

Every class is defined here, none elsewhere; modules import what they raise. A caller tells
errors apart by class, never by their text.

Exit codes: ``DataError`` and subclasses exit with :data:`EXIT_BAD_INPUT` so a Kubernetes
``podFailurePolicy`` can fail a hex index at once instead of retrying it; anything else exits 1.
"""

from __future__ import annotations

from typing import Any

#: Exit code for deterministic bad input (sysexits.h EX_DATAERR).
EXIT_BAD_INPUT = 65
#: Exit code for every other handled failure.
EXIT_FAILURE = 1


def first_line(exc: object, fallback: str | None = None) -> str:
    """The first non-blank line of ``str(exc)``: what a one-line error message quotes.

    When there is none: ``fallback``, or the exception's type name.
    """
    text = str(exc).strip()
    if text:
        return text.splitlines()[0]
    return type(exc).__name__ if fallback is None else fallback


class CngError(Exception):
    """Base of all errors raised on purpose by cng-datasets."""

    exit_code = EXIT_FAILURE


class UsageError(CngError):
    """Options that contradict each other or cannot be honoured."""

    exit_code = EXIT_BAD_INPUT


class DataError(CngError):
    """Deterministic bad input: running again with the same input fails the same way."""

    exit_code = EXIT_BAD_INPUT


class SourceError(DataError):
    """A source cannot be opened or read. ``source`` names it as the user gave it."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        self.problem = problem
        super().__init__(f"source {source!r}: {problem}")


class IncompleteOutputError(DataError):
    """A completeness check failed: features or chunks are missing or duplicated."""


class OutOfRangeError(DataError):
    """A coordinate outside [-180, 180] × [-90, 90]: the data is not lon/lat degrees.

    ``index`` is the feature's position in the batch given to ``h3cells.feature_cells`` (``None``
    when unknown); ``detail`` says what is wrong without naming the feature, so a caller can name it.
    """

    def __init__(self, index: int | None, detail: str) -> None:
        self.index = index
        self.detail = detail
        where = f"feature #{index} of the batch" if index is not None else "a coordinate"
        super().__init__(f"{where}: {detail}")


class RecordError(DataError):
    """An accounting record that is present but not of the expected shape."""


class ValidationError(DataError):
    """One or more checks of ``validate`` failed; ``problems`` lists them (one precise line each)."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        head = problems[0] if len(problems) == 1 else f"{len(problems)} problems; first: {problems[0]}"
        super().__init__(f"validation failed: {head}")


class StorageError(CngError):
    """A read, write or delete on local disk, S3 or HTTP failed. ``url`` names the object."""

    def __init__(self, url: str, problem: str) -> None:
        self.url = url
        self.problem = problem
        super().__init__(f"{url}: {problem}")


class ToolError(CngError):
    """An external tool failed. ``tool`` names it, ``detail`` is the useful part of its output."""

    def __init__(self, tool: str, detail: str) -> None:
        self.tool = tool
        self.detail = detail
        super().__init__(f"{tool} failed: {detail}")


class ClusterError(CngError):
    """The Kubernetes API refused a request, or a Job of the workflow failed."""


class WaitTimeoutError(ClusterError):
    """A wait on the cluster (a Job, the upload pod, the uploaded files) ran out of time."""


class PreflightError(ClusterError):
    """A check of ``preflight`` (run by ``submit`` first) failed: the workflow would hang or fail
    on this cluster. ``failed`` holds each failed check's one line."""

    def __init__(self, failed: list[str]) -> None:
        self.failed = failed
        more = f" (and {len(failed) - 1} more, listed above)" if len(failed) > 1 else ""
        super().__init__(f"preflight: {failed[0]}{more}")


class PodsStuckError(ClusterError):
    """A step's pods stay Pending: no node can take them (Unschedulable) or their image cannot
    be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName)."""


class LeaseHeldError(CngError):
    """Another run holds the destination's lease (exit 1: running later may succeed).

    ``what`` names the destination, ``holder`` is the lease's content, ``description`` says who
    holds it in words."""

    def __init__(self, what: str, holder: dict[str, Any], description: str) -> None:
        self.what = what
        self.holder = holder
        super().__init__(f"{what} is in use by another run ({description}); wait for it with --wait, or stop that run")


class LeaseLostError(CngError):
    """Our lease was taken over by another run while we ran (our heartbeat had stopped)."""


class CngWarning(UserWarning):
    """Base of the warnings the library emits; the CLI prints them as ``warning: …`` lines."""


class AssumedCrsWarning(CngWarning):
    """A source had no CRS and was taken as EPSG:4326."""


class RenamedColumnWarning(CngWarning):
    """A source column clashed with a reserved output column and was renamed."""


class CountFallbackWarning(CngWarning):
    """Features could not be counted; default chunking is used (the last chunk reads to the end)."""


# ---- errors of the runners (local.py, k8s/) ------------------------------------------------------


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
        self.exit_code = EXIT_BAD_INPUT if returncode == EXIT_BAD_INPUT else EXIT_FAILURE
        where = step if chunk is None else f"{step} chunk {chunk}"
        how = f"exit {returncode}" if returncode >= 0 else f"killed by signal {-returncode}"
        text = f"step {where} failed ({how}): {detail or 'no error message'}"
        if log:
            text += f" [log: {log}]"
        super().__init__(text)


class StaleJobError(ClusterError):
    """A Job of the workflow's name exists but runs other settings than the YAML (spec-hash).

    Exit 65: running the orchestrator again cannot help until the Job is replaced.
    """

    exit_code = EXIT_BAD_INPUT


class NotFound(ClusterError):
    """The object does not exist (HTTP 404)."""


class AlreadyExists(ClusterError):
    """An object with that name already exists (HTTP 409 on create)."""


class Forbidden(ClusterError):
    """The credentials lack a permission (HTTP 403)."""


class NamespaceMissing(ClusterError):
    """The namespace does not exist."""

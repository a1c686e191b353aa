"""The label and annotation keys of the workflow's Kubernetes objects: their one owner.

``k8s/manifests.py`` writes them (for people and ``kubectl get jobs -l cng-datasets/dataset=…``),
``k8s/spechash.py`` reads the spec hash of a live Job, ``k8s/jobs.py`` the keys the Job controller
sets on pods. The orchestrator does not take its order from them: that comes from ``plan.json``.
"""

from __future__ import annotations

APP = "cng-datasets"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_DATASET = "cng-datasets/dataset"
LABEL_STEP = "cng-datasets/step"

#: For people reading a Job: the steps it runs after (the orchestrator reads plan.json instead).
ANNOTATION_DEPENDS_ON = "cng-datasets/depends-on"
ANNOTATION_DATASET_PATH = "cng-datasets/dataset-path"
#: What a Job runs, as a hash (:mod:`cng_datasets.k8s.spechash`).
ANNOTATION_SPEC_HASH = "cng-datasets/spec-hash"
#: On the hex Job of a workflow whose sources could not be counted: the orchestrator sizes its
#: chunks from the converted GeoParquet before creating it (:mod:`cng_datasets.k8s.orchestrator`).
ANNOTATION_SIZED_AT_RUN = "cng-datasets/sized-after-convert"

#: Set by the Job controller: on every pod of a Job, and on the pods of an Indexed Job.
LABEL_JOB_NAME = "job-name"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"


def job_pods(job: str) -> str:
    """The label selector of the pods of Job ``job``."""
    return f"{LABEL_JOB_NAME}={job}"

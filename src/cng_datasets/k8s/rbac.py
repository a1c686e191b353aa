"""The permissions of the ``cng-datasets-workflow`` ServiceAccount: exactly what the
orchestrator's code paths call, in its own namespace, nothing cluster-wide, no Secrets.

``k8s/manifests.py`` renders these rules into ``workflow-rbac.yaml``. ``tests/k8s/test_orchestrator.py``
runs ``orchestrate`` against the fake cluster with only these rules allowed, through every code
path (success, restart, OOMKilled index, deterministic failure), records each (apiGroup,
resource, verb) it calls and checks the set equals these rules exactly — no more, no less.

What each rule is for (``cng_datasets.k8s.orchestrator``):

- jobs ``get``: has a step's Job been created already, and what is its status (polled);
- jobs ``create``: start a step whose dependencies are complete;
- jobs ``delete``: a step whose pods cannot start (Unschedulable, image pull) is failed by deleting
  its Job, instead of leaving Pending pods until its deadline;
- pods ``list``: the pods of a running Job (``job-name=<job>``), to notice stuck Pending ones, and
  of a failed Job, to name their termination reason (OOMKilled, exit code) and the ``kubectl logs``
  command;
- pods/log ``get``: the error line of each failed pod (progress) and the last lines of the first
  failed pod's log in the failure report;
- configmaps ``get`` / ``create`` / ``update``: its progress record ``<ds>-progress``
  (:mod:`cng_datasets.k8s.progress`), read on a restart and written as the steps advance.

``submit`` / ``status`` / ``logs`` / ``cleanup`` run with the user's own credentials and are not
bound by these rules. The orchestrator deletes only the Job of a step whose pods are stuck: re-running a failed step is
``cng-datasets submit DIR --retry-failed``, replacing the Jobs of a run with other settings (its
``StaleJobError``, found with ``jobs get`` only) is ``cng-datasets submit DIR --replace-stale``,
both with the user's credentials.
"""

from __future__ import annotations

SERVICE_ACCOUNT = "cng-datasets-workflow"

#: (apiGroup, resource, verbs) — edit together with k8s/orchestrator.py.
RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("get", "create", "delete")),
    ("", "pods", ("list",)),
    ("", "pods/log", ("get",)),
    ("", "configmaps", ("get", "create", "update")),
)

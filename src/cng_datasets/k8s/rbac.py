"""The permissions of the ``cng-datasets-workflow`` ServiceAccount: exactly what the
orchestrator's code paths call, in its own namespace, nothing cluster-wide, no Secrets.

``k8s/manifests.py`` renders these rules into ``workflow-rbac.yaml``; the tests check that the
orchestrator's API calls against the fake cluster use no verb outside them.
"""

from __future__ import annotations

SERVICE_ACCOUNT = "cng-datasets-workflow"

#: (apiGroup, resource, verbs) — edit together with k8s/orchestrator.py.
RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch", "jobs", ("get", "list", "create")),
    ("", "pods", ("get", "list")),
    ("", "pods/log", ("get",)),
)

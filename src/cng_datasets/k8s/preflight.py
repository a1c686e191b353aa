"""Checks before a workflow is submitted: the things that make it hang or fail on a real cluster.

``cng-datasets preflight DIR`` runs them alone; ``submit`` runs them first. Each check reads the
documents of DIR (what the pods will ask for) and the cluster (with the user's credentials) and
ends in one line; a failed one says what to do. A check the credentials may not run (listing
Nodes or StorageClasses is often cluster-admin only) is reported as not checked, not failed.

=================  ===========================================================================
namespace          the namespace exists
permissions        the caller may do every verb ``submit`` uses and every verb the orchestrator's
                   Role grants (RBAC lets a user grant only what they hold), by
                   SelfSubjectAccessReview
s3-secret          the Secret the steps read their S3 keys from exists with those keys
image              every image reference is well-formed; its pull Secrets exist
priority-class     the PriorityClass exists (pods naming a missing one are refused)
storage            a StorageClass can bind the PVC: the one it names, else a default one
node-fit           each pod's requests fit a Node's allocatable resources, among the Nodes its
                   node selector and tolerations let it run on (else it stays Pending forever)
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cng_datasets.errors import ClusterError, Forbidden, PreflightError, UsageError
from cng_datasets.k8s import names
from cng_datasets.k8s.api import KubeApi
from cng_datasets.k8s.rbac import RULES

if TYPE_CHECKING:  # submit imports this module to run the checks first
    from cng_datasets.k8s.submit import Workflow

#: What ``submit`` does with the user's credentials: (apiGroup, resource, verbs).
SUBMIT_RULES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("", "serviceaccounts", ("get", "create")),
    ("rbac.authorization.k8s.io", "roles", ("get", "create", "update")),
    ("rbac.authorization.k8s.io", "rolebindings", ("get", "create", "update")),
    ("", "persistentvolumeclaims", ("get", "create")),
    ("batch", "jobs", ("get", "create", "delete")),
    ("", "pods", ("list",)),
    ("", "pods/exec", ("create",)),
    ("", "pods/log", ("get",)),
)
DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)
#: Resources a pod requests that a Node reports as allocatable.
FIT_RESOURCES = ("cpu", "memory", "ephemeral-storage")


@dataclass(frozen=True)
class Check:
    """One check's outcome: ``ok`` True (passed), False (failed) or None (could not check)."""

    name: str
    ok: bool | None
    message: str

    def line(self) -> str:
        mark = {True: "ok  ", False: "FAIL", None: "skip"}[self.ok]
        return f"{mark}  {self.name:<15} {self.message}"


# ---- what the folder's pods ask for -----------------------------------------------------------


def _jobs(wf: Workflow) -> list[dict[str, Any]]:
    return [s.manifest for s in wf.steps] + [wf.upload, wf.orchestrator]


def _pod_spec(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


def _secret_keys(wf: Workflow) -> dict[str, set[str]]:
    """Secret name → the keys the containers read from it (``secretKeyRef``)."""
    out: dict[str, set[str]] = {}
    for job in _jobs(wf):
        for c in _pod_spec(job).get("containers") or []:
            for env in c.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    out.setdefault(ref["name"], set()).add(ref["key"])
    return out


def _quantity(value: Any) -> float:
    from kubernetes.utils.quantity import parse_quantity

    return float(parse_quantity(str(value)))


def _fmt(resource: str, amount: float) -> str:
    if resource == "cpu":
        return f"{amount:g}"
    return f"{amount / 2**30:.1f}Gi"


# ---- the checks --------------------------------------------------------------------------------


def _not_checkable(name: str, what: str, exc: ClusterError) -> Check:
    return Check(name, None, f"not checked: your credentials may not {what} ({type(exc).__name__})")


def check_namespace(api: KubeApi, wf: Workflow) -> Check:
    ns = wf.namespace
    try:
        found = api.get_cluster("Namespace", ns) is not None
    except Forbidden as exc:
        return _not_checkable("namespace", "read namespaces", exc)
    if not found:
        return Check(
            "namespace",
            False,
            f"namespace {ns!r} does not exist: create it (kubectl create namespace {ns}) "
            "or write the workflow with --namespace of one that does",
        )
    return Check("namespace", True, f"namespace {ns} exists")


def check_permissions(api: KubeApi, wf: Workflow) -> Check:
    ns = wf.namespace
    missing: dict[str, list[str]] = {}  # resource → verbs, in the order of the rules
    for group, resource, verbs in (*SUBMIT_RULES, *RULES):
        what = resource + (f".{group}" if group else "")
        for verb in verbs:
            if verb not in missing.get(what, []) and not api.may(ns, verb, group, resource):
                missing.setdefault(what, []).append(verb)
    if missing:
        return Check(
            "permissions",
            False,
            f"in namespace {ns} you may not {', '.join('/'.join(v) + ' ' + r for r, v in missing.items())}: "
            "ask the cluster's admin for these "
            "(submit creates the RBAC, PVC and Jobs and copies the YAMLs through exec; RBAC lets you "
            "grant the orchestrator only what you hold)",
        )
    return Check("permissions", True, f"you may do everything submit and the orchestrator do in {ns}")


def check_s3_secret(api: KubeApi, wf: Workflow) -> Check:
    ns = wf.namespace
    wanted = _secret_keys(wf)
    if not wanted:
        return Check("s3-secret", True, "the steps read no Secret")
    problems = []
    for name, keys in sorted(wanted.items()):
        try:
            secret = api.get("Secret", ns, name)
        except Forbidden as exc:
            return _not_checkable("s3-secret", "read Secrets", exc)
        if secret is None:
            problems.append(
                f"Secret {name!r} does not exist in {ns}: create it with "
                f"kubectl create secret generic {name} -n {ns} "
                + " ".join(f"--from-literal={k}=..." for k in sorted(keys))
            )
            continue
        have = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        lacking = sorted(keys - have)
        if lacking:
            problems.append(
                f"Secret {name!r} in {ns} has no key {', '.join(lacking)} "
                f"(it has: {', '.join(sorted(have)) or 'none'}); add them, or write the workflow with "
                "--s3-access-key-key / --s3-secret-key-key naming its keys"
            )
    if problems:
        return Check("s3-secret", False, "; ".join(problems))
    listed = ", ".join(f"{n} ({', '.join(sorted(k))})" for n, k in sorted(wanted.items()))
    return Check("s3-secret", True, f"Secret {listed} present")


def check_image(api: KubeApi, wf: Workflow) -> Check:
    images: set[str] = set()
    pull_secrets: set[str] = set()
    for job in _jobs(wf):
        pod = _pod_spec(job)
        images.update(c["image"] for c in pod.get("containers") or [])
        pull_secrets.update(s["name"] for s in pod.get("imagePullSecrets") or [])
    for image in sorted(images):
        try:
            names.check_image(image)
        except UsageError as exc:
            return Check("image", False, f"{exc}; write the workflow again with a valid --image")
    for name in sorted(pull_secrets):
        try:
            found = api.get("Secret", wf.namespace, name) is not None
        except Forbidden as exc:
            return _not_checkable("image", "read Secrets (to find the image pull Secret)", exc)
        if not found:
            return Check(
                "image",
                False,
                f"image pull Secret {name!r} does not exist in {wf.namespace}: create it with "
                f"kubectl create secret docker-registry {name} -n {wf.namespace} --docker-server=... "
                "--docker-username=... --docker-password=...",
            )
    via = f" (pulled with {', '.join(sorted(pull_secrets))})" if pull_secrets else ""
    return Check("image", True, f"{', '.join(sorted(images))}{via}")


def check_priority_class(api: KubeApi, wf: Workflow) -> Check:
    wanted = sorted({p for job in _jobs(wf) if (p := _pod_spec(job).get("priorityClassName"))})
    if not wanted:
        return Check("priority-class", True, "none asked for")
    for name in wanted:
        try:
            found = api.get_cluster("PriorityClass", name) is not None
        except Forbidden as exc:
            return _not_checkable("priority-class", "read PriorityClasses", exc)
        if not found:
            return Check(
                "priority-class",
                False,
                f"PriorityClass {name!r} does not exist (the API refuses pods that name it): "
                "see kubectl get priorityclasses and pass one of them as --priority-class",
            )
    return Check("priority-class", True, ", ".join(wanted))


def check_storage(api: KubeApi, wf: Workflow) -> Check:
    pvc = wf.pvc
    name = pvc["metadata"]["name"]
    try:
        live = api.get("PersistentVolumeClaim", wf.namespace, name)
    except Forbidden as exc:
        return _not_checkable("storage", "read PersistentVolumeClaims", exc)
    if live is not None and (live.get("status") or {}).get("phase") == "Bound":
        return Check("storage", True, f"PVC {name} exists and is Bound")
    wanted = (pvc.get("spec") or {}).get("storageClassName")
    modes = ", ".join((pvc.get("spec") or {}).get("accessModes") or [])
    try:
        classes = api.list_cluster("StorageClass")
    except Forbidden as exc:
        return _not_checkable("storage", "list StorageClasses", exc)
    by_name = {c["metadata"]["name"]: c for c in classes}
    if wanted:
        if wanted not in by_name:
            return Check(
                "storage",
                False,
                f"StorageClass {wanted!r} does not exist (there are: {', '.join(sorted(by_name)) or 'none'}); "
                "write the workflow with --storage-class of one of them",
            )
        return Check("storage", True, f"StorageClass {wanted} can bind the {modes} PVC")
    defaults = [
        n
        for n, c in by_name.items()
        if any(
            str((c["metadata"].get("annotations") or {}).get(a)).lower() == "true" for a in DEFAULT_CLASS_ANNOTATIONS
        )
    ]
    if not defaults:
        return Check(
            "storage",
            False,
            "the cluster has no default StorageClass, so the PVC would stay Pending forever: write the "
            f"workflow with --storage-class of one of: {', '.join(sorted(by_name)) or '(none: ask the admin)'}",
        )
    return Check("storage", True, f"default StorageClass {sorted(defaults)[0]} can bind the {modes} PVC")


def _tolerates(tolerations: list[dict[str, Any]], taint: dict[str, Any]) -> bool:
    for t in tolerations:
        if t.get("effect") and t["effect"] != taint.get("effect"):
            continue
        if t.get("operator") == "Exists":
            if not t.get("key") or t["key"] == taint.get("key"):
                return True
        elif t.get("key") == taint.get("key") and (t.get("value") or "") == (taint.get("value") or ""):
            return True
    return False


def _eligible(node: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Whether the scheduler may put ``pod`` on ``node`` at all (ignoring what runs there)."""
    if (node.get("spec") or {}).get("unschedulable"):
        return False
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod.get("nodeSelector") or {}).items()):
        return False
    tolerations = pod.get("tolerations") or []
    return all(
        _tolerates(tolerations, taint)
        for taint in (node.get("spec") or {}).get("taints") or []
        if taint.get("effect") in ("NoSchedule", "NoExecute")
    )


def _requests(job: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in _pod_spec(job).get("containers") or []:
        for r, v in ((c.get("resources") or {}).get("requests") or {}).items():
            if r in FIT_RESOURCES:
                out[r] = out.get(r, 0.0) + _quantity(v)
    return out


def check_node_fit(api: KubeApi, wf: Workflow) -> Check:
    try:
        nodes = api.list_cluster("Node")
    except Forbidden as exc:
        return _not_checkable("node-fit", "list Nodes", exc)
    if not nodes:
        return Check("node-fit", None, "not checked: the API lists no Nodes")
    problems = []
    steps = [(s.step, s.manifest) for s in wf.steps] + [("upload", wf.upload), ("workflow", wf.orchestrator)]
    for step, job in steps:
        pod, wants = _pod_spec(job), _requests(job)
        eligible = [n for n in nodes if _eligible(n, pod)]
        if not eligible:
            problems.append(
                f"no Node matches the {step} pod's node selector and tolerations "
                f"({len(nodes)} Nodes; check --node-selector / --toleration against kubectl get nodes --show-labels)"
            )
            continue

        def fits(node: dict[str, Any], wants: dict[str, float] = wants) -> bool:
            alloc = (node.get("status") or {}).get("allocatable") or {}
            return all(r not in alloc or _quantity(alloc[r]) >= amount for r, amount in wants.items())

        if not any(fits(n) for n in eligible):
            biggest = max(
                eligible, key=lambda n: _quantity(((n.get("status") or {}).get("allocatable") or {}).get("memory", 0))
            )
            alloc = (biggest.get("status") or {}).get("allocatable") or {}
            asked = ", ".join(f"{r} {_fmt(r, a)}" for r, a in wants.items())
            has = ", ".join(f"{r} {_fmt(r, _quantity(alloc[r]))}" for r in wants if r in alloc)
            problems.append(
                f"the {step} pod asks for {asked} but no Node can give it (the largest, "
                f"{biggest['metadata']['name']}, has {has} allocatable): lower --{step}-cpu / --{step}-memory / "
                f"--{step}-ephemeral-storage, or it stays Pending forever"
            )
    if problems:
        return Check("node-fit", False, "; ".join(problems))
    return Check("node-fit", True, f"every pod fits on at least one of {len(nodes)} Nodes")


CHECKS: tuple[Callable[[KubeApi, Workflow], Check], ...] = (
    check_namespace,
    check_permissions,
    check_s3_secret,
    check_image,
    check_priority_class,
    check_storage,
    check_node_fit,
)


def run_checks(api: KubeApi, wf: Workflow) -> Iterator[Check]:
    """Every check, in order; after a missing namespace the namespaced ones cannot say anything."""
    for check in CHECKS:
        result = check(api, wf)
        yield result
        if check is check_namespace and result.ok is False:
            return


def preflight(api: KubeApi, wf: Workflow, echo: Callable[[str], None] = print) -> list[Check]:
    """Run every check, print one line each; raise :class:`PreflightError` if any failed."""
    results = []
    for result in run_checks(api, wf):
        echo(result.line())
        results.append(result)
    failed = [f"{r.name}: {r.message}" for r in results if r.ok is False]
    if failed:
        raise PreflightError(failed)
    return results

"""An in-memory fake of the Kubernetes API, following real Job and Pod status semantics.

It stands in for the official client's ``CoreV1Api`` / ``BatchV1Api`` / ``RbacAuthorizationV1Api``
(same method names and arguments) and for ``kubernetes.stream.stream``, so the production wrapper
:class:`cng_datasets.k8s.api.KubeApi` runs unchanged on top of it, including its mapping of real
``ApiException`` objects (403 / 404 / 409 / 422 with Status bodies) and connection errors.

What it models
--------------
- Namespaced objects (Job, Pod, ServiceAccount, Role, RoleBinding, PVC) with uid,
  resourceVersion, creationTimestamp; 409 AlreadyExists; 404 NotFound; create in a missing
  namespace → 404 ``namespaces "x" not found``; list in a missing namespace → empty list (as a real
  API server does); body namespace ≠ URL namespace → 400.
- RBAC: every call is recorded as (apiGroup, resource, verb); with ``allowed`` set (e.g. from
  ``cng_datasets.k8s.rbac.RULES``) anything else gets a real-looking 403 Forbidden.
- The Job controller, one ``tick`` at a time (``sleep(seconds)`` advances the clock and ticks):
  pods Pending → Running → terminated, with ``parallelism``, ``completions``,
  ``completionMode: Indexed`` (pod names ``<job>-<index>-<hash>``, the completion-index annotation
  and label), ``backoffLimit`` (BackoffLimitExceeded), ``backoffLimitPerIndex`` +
  ``failedIndexes`` (FailedIndexes) + ``maxFailedIndexes`` (MaxFailedIndexesExceeded),
  ``podFailurePolicy`` ``onExitCodes`` rules (FailJob → PodFailurePolicy, FailIndex, Ignore,
  Count), ``activeDeadlineSeconds`` (DeadlineExceeded). Terminal states go through
  ``FailureTarget`` / ``SuccessCriteriaMet`` first and become ``Failed`` / ``Complete`` one tick
  later (Kubernetes ≥ 1.31). Status carries ``active``, ``ready``, ``succeeded``, ``failed``,
  ``completedIndexes``, ``failedIndexes`` (range-compressed, e.g. ``"0-3,7"``), ``startTime``,
  ``completionTime``.
- Containers end with ``state.terminated`` {exitCode, reason}: ``Completed`` / ``Error`` /
  ``OOMKilled`` (exit 137), as the kubelet reports them; each pod has a log.
- Scripted outcomes per (step, index, attempt); Jobs whose container runs ``receive-yamls`` run the
  real :class:`cng_datasets.k8s.receive.Receiver` on a temporary directory standing for the PVC,
  and ``exec`` of ``cng-datasets receive-yamls --put/--complete`` runs the real ``put`` /
  ``complete`` there.

- Cluster-scoped Namespaces (``namespaces``), Nodes (labels, taints, allocatable), StorageClasses
  and PriorityClasses; Secrets and ConfigMaps; SelfSubjectAccessReviews answered from ``allowed``
  (every user may create them, as on a real cluster). By default one Node (16 CPU, 64Gi), a
  default StorageClass ``standard`` and in each namespace the Secret ``aws`` with the two AWS keys.
- Scheduling of a Pending pod, as the kube-scheduler reports it: when no Node that its node
  selector and tolerations allow has the allocatable resources it requests, it stays Pending with
  ``PodScheduled=False``, reason ``Unschedulable``, message ``0/N nodes are available: …``; a pod
  whose image is in ``unpullable`` stays Pending with ``ErrImagePull``, then ``ImagePullBackOff``.

What it does not model
----------------------
Resources used by running pods (a Node's allocatable is never used up), pod deletion grace periods
and ``terminating`` counts, ``onPodConditions`` (DisruptionTarget), ``successPolicy``, suspend,
TTL / garbage collection delays (Job deletion removes its pods at once), watches, field selectors,
resourceVersion conflicts, server-side validation beyond a few Job spec rules.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from cng_datasets.k8s import receive
from cng_datasets.k8s.api import KINDS, KubeApi

_BY_SUFFIX = {k.suffix: (name, k) for name, k in KINDS.items()}
_OP_VERB = {"read": "get", "list": "list", "create": "create", "replace": "update", "delete": "delete"}
T0 = 1_700_000_000.0


@dataclass
class Outcome:
    """How one pod attempt ends: after ``ticks`` ticks of running, with ``exit_code``."""

    exit_code: int = 0
    reason: str | None = None  # default: Completed for 0, Error otherwise
    ticks: int = 1
    log: str = ""


OK = Outcome()
OOM = Outcome(exit_code=137, reason="OOMKilled", log="MemoryError-ish: killed\n")
BAD_INPUT = Outcome(exit_code=65, log="error: source 'x.gpkg': layer has broken geometries\n")
HANG = Outcome(ticks=10**9)


def compress(indexes: set[int]) -> str:
    """[0,1,2,5] → "0-2,5" (the API's format for completedIndexes / failedIndexes)."""
    out: list[str] = []
    items = sorted(indexes)
    i = 0
    while i < len(items):
        j = i
        while j + 1 < len(items) and items[j + 1] == items[j] + 1:
            j += 1
        out.append(str(items[i]) if i == j else f"{items[i]}-{items[j]}")
        i = j + 1
    return ",".join(out)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_error(status: int, reason: str, message: str, details: dict[str, Any] | None = None) -> ApiException:
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": status,
    }
    if details:
        body["details"] = details
    return ApiException(status=status, reason=reason, body=json.dumps(body))


class _Surface:
    """One of CoreV1Api / BatchV1Api / RbacAuthorizationV1Api."""

    def __init__(self, cluster: FakeCluster, api: str) -> None:
        self._cluster = cluster
        self._api = api

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        if attr == "read_namespaced_pod_log" and self._api == "core":
            return self._cluster._pod_log
        if attr == "connect_get_namespaced_pod_exec" and self._api == "core":
            return self._cluster._exec_placeholder
        op, _, suffix = attr.partition("_")
        if op in _OP_VERB and suffix in _BY_SUFFIX and _BY_SUFFIX[suffix][1].api == self._api:
            kind = _BY_SUFFIX[suffix][0]
            return lambda *a, **kw: self._cluster._dispatch(op, kind, *a, **kw)
        raise AttributeError(attr)


class _Authorization:
    """AuthorizationV1Api: SelfSubjectAccessReview, answered from the cluster's ``allowed``."""

    def __init__(self, cluster: FakeCluster) -> None:
        self._cluster = cluster

    def create_self_subject_access_review(self, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        attrs = body["spec"]["resourceAttributes"]
        resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
        allowed = self._cluster.allowed is None or (attrs["group"], resource, attrs["verb"]) in self._cluster.allowed
        return {**body, "status": {"allowed": allowed}}


class FakeWS:
    """What ``stream(..., _preload_content=False)`` returns, after the command ran."""

    def __init__(self, stdout: str, stderr: str, code: int) -> None:
        self._out, self._err, self.returncode = stdout, stderr, code

    def run_forever(self, timeout: float | None = None) -> None:
        pass

    def read_stdout(self, timeout: float | None = None) -> str:
        return self._out

    def read_stderr(self, timeout: float | None = None) -> str:
        return self._err

    def close(self) -> None:
        pass


class FakeCluster:
    """The fake API server plus Job controller and kubelet. See the module docstring."""

    def __init__(
        self,
        tmp_path: Path,
        namespaces: tuple[str, ...] = ("geo",),
        user: str = "kubernetes-admin",
    ) -> None:
        self.tmp = Path(tmp_path)
        self.namespaces = set(namespaces)
        self.user = user
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.allowed: set[tuple[str, str, str]] | None = None
        self.unreachable = False
        self.now = T0
        self.tick_seconds = 10.0
        self.ticks = 0
        #: step label → {index (None = any) → outcomes per attempt (the last one repeats)}
        self.script: dict[str, dict[int | None, list[Outcome]]] = {}
        self.created_jobs: list[str] = []
        self.execs: list[list[str]] = []
        self._ctl: dict[str, dict[str, Any]] = {}
        self._serial = 0
        #: images whose pull fails (ErrImagePull, then ImagePullBackOff)
        self.unpullable: set[str] = set()
        self.core = _Surface(self, "core")
        self.batch = _Surface(self, "batch")
        self.rbac = _Surface(self, "rbac")
        self.storage = _Surface(self, "storage")
        self.scheduling = _Surface(self, "scheduling")
        self.authorization = _Authorization(self)
        self.add_node("node-1", cpu="16", memory="64Gi")
        self.add_cluster_object("StorageClass", "standard", default_class=True)
        for ns in namespaces:
            self.add_secret(ns, "aws", {"AWS_ACCESS_KEY_ID": "a2V5", "AWS_SECRET_ACCESS_KEY": "c2VjcmV0"})

    # ---- configuration ------------------------------------------------------------------------

    def api(self) -> KubeApi:
        return KubeApi(
            self.core,
            self.batch,
            self.rbac,
            stream=self.stream,
            host="https://fake:6443",
            storage=self.storage,
            scheduling=self.scheduling,
            authorization=self.authorization,
        )

    def add_node(
        self,
        name: str,
        cpu: str,
        memory: str,
        storage: str = "200Gi",
        labels: dict[str, str] | None = None,
        taints: list[dict[str, str]] | None = None,
    ) -> None:
        self.objects[("Node", "", name)] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
            "spec": {"taints": list(taints or [])},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "ephemeral-storage": storage, "pods": "110"}},
        }

    def add_cluster_object(self, kind: str, name: str, default_class: bool = False) -> None:
        annotations = {"storageclass.kubernetes.io/is-default-class": "true"} if default_class else {}
        self.objects[(kind, "", name)] = {"kind": kind, "metadata": {"name": name, "annotations": annotations}}

    def add_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.objects[("Secret", namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": dict(data),
        }

    def clear_jobs(self) -> None:
        """Forget every Job and Pod (the cluster itself stays)."""
        for key in [k for k in self.objects if k[0] in ("Job", "Pod")]:
            del self.objects[key]

    def remove(self, kind: str, namespace: str, name: str) -> None:
        del self.objects[(kind, namespace, name)]

    def allow_only(self, rules: Any) -> None:
        """Enforce RBAC: only (group, resource, verb) of ``rules`` (RULES-style tuples)."""
        self.allowed = {(g, r, v) for g, r, verbs in rules for v in verbs}

    def pvc_dir(self, namespace: str, claim: str) -> Path:
        d = self.tmp / "pvc" / namespace / claim
        d.mkdir(parents=True, exist_ok=True)
        return d

    def used_rules(self) -> set[tuple[str, str, str]]:
        return set(self.calls)

    def jobs(self, namespace: str = "geo") -> dict[str, dict[str, Any]]:
        return {n: o for (k, ns, n), o in self.objects.items() if k == "Job" and ns == namespace}

    def pods(self, namespace: str = "geo", job: str | None = None) -> list[dict[str, Any]]:
        return [
            o
            for (k, ns, _), o in self.objects.items()
            if k == "Pod" and ns == namespace and (job is None or o["metadata"]["labels"].get("job-name") == job)
        ]

    # ---- the API surface ----------------------------------------------------------------------

    def _check(self, group: str, resource: str, verb: str, namespace: str) -> None:
        if self.unreachable:
            raise urllib3.exceptions.MaxRetryError(
                None,
                "/apis",
                reason=urllib3.exceptions.NewConnectionError(None, "Connection refused"),
            )
        self.calls.append((group, resource, verb))
        if self.allowed is not None and (group, resource, verb) not in self.allowed:
            what = f"{resource}.{group}" if group else resource
            raise _api_error(
                403,
                "Forbidden",
                f'{what} is forbidden: User "{self.user}" cannot {verb} resource "{resource}" in API group '
                f'"{group}" in the namespace "{namespace}"',
                {"group": group, "kind": resource},
            )

    def _not_found(self, kind: str, name: str) -> ApiException:
        k = KINDS[kind]
        what = f"{k.resource}.{k.group}" if k.group else k.resource
        return _api_error(
            404, "NotFound", f'{what} "{name}" not found', {"name": name, "group": k.group, "kind": k.resource}
        )

    def _dispatch(self, op: str, kind: str, *args: Any, **kw: Any) -> Any:
        k = KINDS[kind]
        if not k.namespaced:
            return self._cluster_scoped(op, kind, *args, **kw)
        if op in ("create", "list"):
            namespace = kw.pop("namespace", None) or args[0]
            body = kw.pop("body", None) or (args[1] if len(args) > 1 else None)
            name = None
        else:
            name = kw.pop("name", None) or args[0]
            namespace = kw.pop("namespace", None) or args[1]
            body = kw.pop("body", None) or (args[2] if len(args) > 2 else None)
        self._check(k.group, k.resource, _OP_VERB[op], namespace)
        if op == "list":
            return {"kind": f"{kind}List", "items": self._list(kind, namespace, kw.get("label_selector"))}
        if op == "create":
            return self._create(kind, namespace, body)
        key = (kind, namespace, name)
        if key not in self.objects:
            raise self._not_found(kind, name)
        if op == "read":
            return copy.deepcopy(self.objects[key])
        if op == "replace":
            new = copy.deepcopy(body)
            new["metadata"] = dict(
                self.objects[key]["metadata"],
                **{k2: v for k2, v in new.get("metadata", {}).items() if k2 in ("labels", "annotations")},
            )
            self._serial += 1
            new["metadata"]["resourceVersion"] = str(self._serial)
            self.objects[key] = new
            return copy.deepcopy(new)
        # delete
        obj = self.objects.pop(key)
        if kind == "Job":
            for pod in self.pods(namespace, name):
                self.objects.pop(("Pod", namespace, pod["metadata"]["name"]), None)
            self._ctl.pop(obj["metadata"]["uid"], None)
        return {"kind": "Status", "status": "Success"}

    def _cluster_scoped(self, op: str, kind: str, *args: Any, **kw: Any) -> Any:
        k = KINDS[kind]
        self._check(k.group, k.resource, _OP_VERB[op], "")
        if kind == "Namespace":
            known = {n: {"kind": "Namespace", "metadata": {"name": n}} for n in sorted(self.namespaces)}
        else:
            known = {n: o for (kd, _, n), o in sorted(self.objects.items()) if kd == kind}
        if op == "list":
            return {"kind": f"{kind}List", "items": copy.deepcopy(list(known.values()))}
        if op != "read":
            raise AssertionError(f"the fake does not {op} {kind}")
        name = kw.pop("name", None) or args[0]
        if name not in known:
            raise self._not_found(kind, name)
        return copy.deepcopy(known[name])

    def _list(self, kind: str, namespace: str, selector: str | None) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in selector.split(",")) if selector else {}
        out = []
        for (k, ns, _), obj in sorted(self.objects.items()):
            if k != kind or ns != namespace:
                continue
            labels = obj["metadata"].get("labels") or {}
            if all(labels.get(a) == b for a, b in wanted.items()):
                out.append(copy.deepcopy(obj))
        return out

    def _create(self, kind: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        name = md["name"]
        if obj.get("kind") != kind:
            raise _api_error(400, "BadRequest", f"kind {obj.get('kind')} sent to the {kind} endpoint")
        if md.get("namespace") not in (None, namespace):
            raise _api_error(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        if namespace not in self.namespaces:
            raise _api_error(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        if (kind, namespace, name) in self.objects:
            k = KINDS[kind]
            what = f"{k.resource}.{k.group}" if k.group else k.resource
            raise _api_error(
                409, "AlreadyExists", f'{what} "{name}" already exists', {"name": name, "kind": k.resource}
            )
        self._serial += 1
        md.update(
            namespace=namespace,
            uid=f"uid-{self._serial}",
            resourceVersion=str(self._serial),
            creationTimestamp=_iso(self.now),
        )
        if kind == "Job":
            self._admit_job(obj)
            self.created_jobs.append(name)
        self.objects[(kind, namespace, name)] = obj
        return copy.deepcopy(obj)

    def _admit_job(self, job: dict[str, Any]) -> None:
        spec = job.setdefault("spec", {})
        tspec = spec.get("template", {}).get("spec", {})
        problems = []
        if tspec.get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append("spec.template.spec.restartPolicy: Required value: Never or OnFailure")
        if spec.get("completionMode") == "Indexed" and not spec.get("completions"):
            problems.append("spec.completions: Required value: when completion mode is Indexed")
        if spec.get("backoffLimitPerIndex") is not None and spec.get("completionMode") != "Indexed":
            problems.append("spec.backoffLimitPerIndex: requires Indexed completion mode")
        if spec.get("podFailurePolicy") and tspec.get("restartPolicy") != "Never":
            problems.append("spec.podFailurePolicy: requires restartPolicy Never")
        if problems:
            raise _api_error(422, "Invalid", f'Job.batch "{job["metadata"]["name"]}" is invalid: {"; ".join(problems)}')
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        sel = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(sel)
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("backoffLimit", 6 if spec.get("backoffLimitPerIndex") is None else 2147483647)
        spec.setdefault("completionMode", "NonIndexed")
        job["status"] = {}
        n = int(spec["completions"])
        self._ctl[uid] = {
            "attempts": {i: 0 for i in range(n)},
            "index_failures": {i: 0 for i in range(n)},
            "done": set(),
            "failed_idx": set(),
            "failed": 0,
            "succeeded": 0,
            "final": None,
        }

    def _pod_log(
        self, name: str, namespace: str, container: str | None = None, tail_lines: int | None = None, **_: Any
    ) -> str:
        self._check("", "pods/log", "get", namespace)
        pod = self.objects.get(("Pod", namespace, name))
        if pod is None:
            raise self._not_found("Pod", name)
        lines = pod.get("_log", "").splitlines(keepends=True)
        return "".join(lines[-tail_lines:] if tail_lines else lines)

    def _exec_placeholder(self, *a: Any, **kw: Any) -> Any:  # only passed to stream(), never called
        raise AssertionError("call through stream()")

    def stream(
        self, func: Any, name: str, namespace: str, command: list[str], container: str | None = None, **_: Any
    ) -> FakeWS:
        """``kubernetes.stream.stream`` for exec: runs ``receive-yamls`` argvs on the PVC directory."""
        self._check("", "pods/exec", "create", namespace)
        pod = self.objects.get(("Pod", namespace, name))
        if pod is None:
            raise self._not_found("Pod", name)
        names = [c["name"] for c in pod["spec"]["containers"]]
        if container not in (None, *names):
            raise _api_error(400, "BadRequest", f"container {container} is not valid for pod {name}")
        if pod["status"].get("phase") != "Running":
            raise _api_error(400, "BadRequest", f"pod {name} is not running (phase {pod['status'].get('phase')})")
        self.execs.append(list(command))
        try:
            out = self._run_exec(pod, list(command))
            return FakeWS(out, "", 0)
        except Exception as exc:  # noqa: BLE001 - becomes the exit status, like a real process
            return FakeWS("", f"error: {exc}\n", 1)

    def _mounts(self, pod: dict[str, Any]) -> dict[str, Path]:
        ns = pod["metadata"]["namespace"]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["spec"].get("volumes", [])
            if "persistentVolumeClaim" in v
        }
        out = {}
        for c in pod["spec"]["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] in claims:
                    if ("PersistentVolumeClaim", ns, claims[m["name"]]) not in self.objects:
                        raise AssertionError(f"pod mounts missing PVC {claims[m['name']]}")
                    out[m["mountPath"].rstrip("/")] = self.pvc_dir(ns, claims[m["name"]])
        return out

    def _host_path(self, pod: dict[str, Any], path: str) -> Path:
        for mount, host in self._mounts(pod).items():
            if path.rstrip("/") == mount:
                return host
        raise RuntimeError(f"{path} is not a mounted volume")

    def _run_exec(self, pod: dict[str, Any], argv: list[str]) -> str:
        if argv[:2] != ["cng-datasets", "receive-yamls"]:
            raise RuntimeError(f"the fake cannot exec {shlex.join(argv)}")
        opts: dict[str, str] = {}
        flags = set()
        i = 2
        while i < len(argv):
            if argv[i] == "--complete":
                flags.add("complete")
                i += 1
            else:
                opts[argv[i]] = argv[i + 1]
                i += 2
        d = self._host_path(pod, opts["--dir"])
        if "complete" in flags:
            receive.complete(d, wait=0)
            return ""
        receive.put(
            d,
            opts["--put"],
            opts["--content-b64"],
            part=int(opts.get("--part", 1)),
            parts=int(opts.get("--parts", 1)),
            sha256=opts.get("--sha256"),
            wait=0,
        )
        return ""

    # ---- the controllers ------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        """Injected as the code's ``sleep``: advance the clock by one tick."""
        self.tick()

    def tick(self) -> None:
        self.ticks += 1
        self.now += self.tick_seconds
        for (kind, ns, name), job in list(self.objects.items()):
            if kind == "Job" and (kind, ns, name) in self.objects:
                self._reconcile(job)

    def _outcome(self, job: dict[str, Any], index: int, attempt: int) -> Outcome:
        step = job["metadata"].get("labels", {}).get("cng-datasets/step", job["metadata"]["name"])
        per_step = self.script.get(step, {})
        outs = per_step.get(index) or per_step.get(None) or [OK]
        return outs[min(attempt, len(outs) - 1)]

    def _new_pod(self, job: dict[str, Any], index: int | None) -> None:
        ctl = self._ctl[job["metadata"]["uid"]]
        i = index if index is not None else 0
        attempt = ctl["attempts"].get(i, 0)
        ctl["attempts"][i] = attempt + 1
        jname, ns = job["metadata"]["name"], job["metadata"]["namespace"]
        self._serial += 1
        suffix = hashlib.sha1(f"{jname}{self._serial}".encode()).hexdigest()[:5]
        name = f"{jname}-{index}-{suffix}" if index is not None else f"{jname}-{suffix}"
        tmpl = copy.deepcopy(job["spec"]["template"])
        labels = dict(tmpl.get("metadata", {}).get("labels", {}))
        annotations = dict(tmpl.get("metadata", {}).get("annotations", {}) or {})
        if index is not None:
            labels["batch.kubernetes.io/job-completion-index"] = str(index)
            annotations["batch.kubernetes.io/job-completion-index"] = str(index)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": labels,
                "annotations": annotations,
                "uid": f"uid-{self._serial}",
                "creationTimestamp": _iso(self.now),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": jname,
                        "uid": job["metadata"]["uid"],
                        "controller": True,
                    }
                ],
            },
            "spec": tmpl["spec"],
            "status": {
                "phase": "Pending",
                "conditions": [],
                "containerStatuses": [
                    {
                        "name": c["name"],
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                    for c in tmpl["spec"]["containers"]
                ],
            },
            "_index": i,
            "_attempt": attempt,
            "_outcome": self._outcome(job, i, attempt),
            "_left": None,
        }
        self.objects[("Pod", ns, name)] = pod

    def _start_program(self, pod: dict[str, Any]) -> None:
        argv = [
            str(a)
            for a in (pod["spec"]["containers"][0].get("command") or [])
            + (pod["spec"]["containers"][0].get("args") or [])
        ]
        if argv[1:2] == ["receive-yamls"]:
            opts = dict(zip(argv[2::2], argv[3::2], strict=False))
            rec = receive.Receiver(
                self._host_path(pod, opts["--dir"]),
                opts["--expect"].split(","),
                stable_seconds=30,
                clock=lambda: self.now,
            )
            rec.start()
            pod["_receiver"] = rec
            pod["_deadline"] = self.now + float(opts.get("--timeout", 3600))

    def _advance_pod(self, pod: dict[str, Any]) -> str | None:
        """Move a pod one step; return "ok" / "fail" when it terminated this tick."""
        st = pod["status"]
        if st["phase"] == "Pending" and not self._schedule_and_pull(pod):
            return None
        if st["phase"] == "Pending":
            st["phase"] = "Running"
            st["startTime"] = _iso(self.now)
            for cs in st["containerStatuses"]:
                cs["state"] = {"running": {"startedAt": _iso(self.now)}}
                cs["ready"] = True
            self._start_program(pod)
            pod["_left"] = pod["_outcome"].ticks
            return None
        if st["phase"] != "Running":
            return None
        rec = pod.get("_receiver")
        if rec is not None:
            try:
                if rec.poll():
                    return self._terminate(pod, 0, "Completed", "received\n")
            except Exception as exc:  # noqa: BLE001 - a receiver error ends its pod, as in the cluster
                return self._terminate(pod, 1, "Error", f"error: {exc}\n")
            if self.now >= pod["_deadline"]:
                return self._terminate(pod, 1, "Error", "error: timed out\n")
            return None
        pod["_left"] -= 1
        if pod["_left"] > 0:
            return None
        out: Outcome = pod["_outcome"]
        reason = out.reason or ("Completed" if out.exit_code == 0 else "Error")
        return self._terminate(pod, out.exit_code, reason, out.log or f"index {pod['_index']}: done\n")

    def _unschedulable(self, pod: dict[str, Any]) -> str | None:
        """The kube-scheduler's message when no Node can take ``pod``, else ``None``."""
        from kubernetes.utils.quantity import parse_quantity

        spec = pod["spec"]
        wants: dict[str, Any] = {}
        for c in spec["containers"]:
            for r, v in (c.get("resources") or {}).get("requests", {}).items():
                wants[r] = wants.get(r, 0) + parse_quantity(v)
        nodes = [o for (k, _, _), o in sorted(self.objects.items()) if k == "Node"]
        reasons: dict[str, int] = {}
        for node in nodes:
            labels = node["metadata"]["labels"]
            if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
                reasons["node(s) didn't match Pod's node affinity/selector"] = (
                    reasons.get("node(s) didn't match Pod's node affinity/selector", 0) + 1
                )
                continue
            untolerated = [
                t
                for t in node["spec"].get("taints") or []
                if t.get("effect") in ("NoSchedule", "NoExecute")
                and not any(
                    tol.get("effect") in (None, "", t["effect"])
                    and (
                        (tol.get("operator") == "Exists" and tol.get("key") in (None, "", t["key"]))
                        or (tol.get("key") == t["key"] and tol.get("value") == t.get("value"))
                    )
                    for tol in spec.get("tolerations") or []
                )
            ]
            if untolerated:
                t = untolerated[0]
                why = f"node(s) had untolerated taint {{{t['key']}: {t.get('value', '')}}}"
                reasons[why] = reasons.get(why, 0) + 1
                continue
            short = [
                r
                for r, v in wants.items()
                if r in node["status"]["allocatable"] and parse_quantity(node["status"]["allocatable"][r]) < v
            ]
            if not short:
                return None
            why = f"Insufficient {short[0]}"
            reasons[why] = reasons.get(why, 0) + 1
        parts = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        return f"0/{len(nodes)} nodes are available: {parts}. preemption: 0/{len(nodes)} nodes are available."

    def _schedule_and_pull(self, pod: dict[str, Any]) -> bool:
        """Move a Pending pod through scheduling and its image pull; ``False`` while it is stuck."""
        st = pod["status"]
        why = self._unschedulable(pod)
        if why is not None:
            before = next((c for c in st["conditions"] if c.get("reason") == "Unschedulable"), None)
            since = before["lastTransitionTime"] if before else _iso(self.now)  # kept while it holds
            st["conditions"] = [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": why,
                    "lastTransitionTime": since,
                }
            ]
            return False
        st["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": _iso(self.now)}]
        image = pod["spec"]["containers"][0]["image"]
        if image in self.unpullable:
            cs = st["containerStatuses"][0]
            before = (cs["state"].get("waiting") or {}).get("reason")
            if before in ("ErrImagePull", "ImagePullBackOff"):
                cs["state"] = {
                    "waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
                }
            else:
                message = (
                    f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull and unpack '
                    f'image "{image}": not found'
                )
                cs["state"] = {"waiting": {"reason": "ErrImagePull", "message": message}}
            return False
        return True

    def _terminate(self, pod: dict[str, Any], code: int, reason: str, text: str) -> str:
        st = pod["status"]
        st["phase"] = "Succeeded" if code == 0 else "Failed"
        for cs in st["containerStatuses"]:
            cs["ready"] = False
            cs["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": reason,
                    "startedAt": st.get("startTime"),
                    "finishedAt": _iso(self.now),
                }
            }
        pod["_log"] = pod.get("_log", "") + text
        return "ok" if code == 0 else "fail"

    def _policy_action(self, job: dict[str, Any], pod: dict[str, Any]) -> str:
        code = pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"]
        cname = pod["status"]["containerStatuses"][0]["name"]
        for rule in (job["spec"].get("podFailurePolicy") or {}).get("rules", []):
            ec = rule.get("onExitCodes")
            if not ec or ec.get("containerName") not in (None, cname):
                continue
            hit = code in ec.get("values", [])
            if (ec.get("operator") == "In") == hit:
                return str(rule["action"])
        return "Count"

    def _set_condition(self, job: dict[str, Any], ctype: str, reason: str, message: str) -> None:
        conds = job["status"].setdefault("conditions", [])
        conds.append(
            {
                "type": ctype,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": _iso(self.now),
                "lastTransitionTime": _iso(self.now),
            }
        )

    def _reconcile(self, job: dict[str, Any]) -> None:
        ctl = self._ctl.get(job["metadata"]["uid"])
        if ctl is None:
            return
        spec, status = job["spec"], job["status"]
        ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
        conds = {c["type"] for c in status.get("conditions", [])}
        if "Complete" in conds or "Failed" in conds:
            return
        # Second half of a terminal transition (pods are gone by now).
        if ctl["final"] is not None:
            ctype, reason, message = ctl["final"]
            self._set_condition(job, ctype, reason, message)
            if ctype == "Complete":
                status["completionTime"] = _iso(self.now)
            status["active"] = 0
            status["ready"] = 0
            return
        status.setdefault("startTime", _iso(self.now))
        indexed = spec["completionMode"] == "Indexed"
        n = int(spec["completions"])
        per_index = spec.get("backoffLimitPerIndex")
        fail: tuple[str, str] | None = None
        for pod in sorted(self.pods(ns, name), key=lambda p: p["metadata"]["name"]):
            if pod.get("_counted"):
                continue
            result = self._advance_pod(pod)
            if result is None:
                continue
            pod["_counted"] = True
            i = pod["_index"]
            if result == "ok":
                if i not in ctl["done"]:
                    ctl["done"].add(i)
                    ctl["succeeded"] += 1
                continue
            action = self._policy_action(job, pod)
            if action == "Ignore":
                continue
            ctl["failed"] += 1
            if action == "FailJob":
                fail = fail or (
                    "PodFailurePolicy",
                    f"Container {pod['spec']['containers'][0]['name']} for pod {ns}/{pod['metadata']['name']} "
                    f"failed with exit code {pod['status']['containerStatuses'][0]['state']['terminated']['exitCode']} "
                    "matching FailJob rule at index 0",
                )
            elif per_index is not None:
                ctl["index_failures"][i] += 1
                if action == "FailIndex" or ctl["index_failures"][i] > per_index:
                    ctl["failed_idx"].add(i)
        # Terminal checks (real precedence: pod failure policy, deadline, limits, success).
        started = datetime.fromisoformat(status["startTime"].replace("Z", "+00:00")).timestamp()
        deadline = spec.get("activeDeadlineSeconds")
        max_failed = spec.get("maxFailedIndexes")
        resolved = ctl["done"] | ctl["failed_idx"]
        if fail is None and deadline is not None and self.now - started >= int(deadline):
            fail = ("DeadlineExceeded", "Job was active longer than specified deadline")
        if fail is None and per_index is None and ctl["failed"] > int(spec["backoffLimit"]):
            fail = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        if fail is None and max_failed is not None and len(ctl["failed_idx"]) > int(max_failed):
            fail = ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")
        if fail is None and per_index is not None and len(resolved) == n and ctl["failed_idx"]:
            fail = ("FailedIndexes", "Job has failed indexes")
        active_pods = [p for p in self.pods(ns, name) if p["status"]["phase"] in ("Pending", "Running")]
        if fail is None and len(ctl["done"]) >= n:
            self._set_condition(
                job, "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"
            )
            ctl["final"] = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif fail is not None:
            for p in active_pods:  # the controller deletes the remaining pods
                self.objects.pop(("Pod", ns, p["metadata"]["name"]), None)
            active_pods = []
            self._set_condition(job, "FailureTarget", *fail)
            ctl["final"] = ("Failed", *fail)
        else:
            # Start pods for indexes that have none, up to parallelism.
            busy = {p["_index"] for p in active_pods}
            room = int(spec["parallelism"]) - len(active_pods)
            for i in range(n):
                if room <= 0:
                    break
                if i in busy or i in resolved:
                    continue
                if not indexed and len(ctl["done"]) + len(busy) >= n:
                    break
                self._new_pod(job, i if indexed else None)
                busy.add(i)
                room -= 1
            active_pods = [p for p in self.pods(ns, name) if p["status"]["phase"] in ("Pending", "Running")]
        status["active"] = len(active_pods)
        status["ready"] = sum(1 for p in active_pods if p["status"]["phase"] == "Running")
        status["succeeded"] = ctl["succeeded"]
        status["failed"] = ctl["failed"]
        if indexed:
            status["completedIndexes"] = compress(ctl["done"])
            if per_index is not None:
                status["failedIndexes"] = compress(ctl["failed_idx"])
        status["uncountedTerminatedPods"] = {}


def write_workflow(
    directory: Path,
    bucket: str = "bkt",
    namespace: str = "geo",
    feature_count: int = 4500,
    chunk_size: int = 1000,
    dataset: str = "demo/places",
    **settings: Any,
) -> Path:
    """A real workflow folder, written by the manifest builders of ``cng-datasets workflow``
    (``settings``: more :class:`~cng_datasets.config.WorkflowConfig` fields, e.g. ``h3_resolution``)."""
    from cng_datasets.config import WorkflowConfig
    from cng_datasets.k8s import manifests
    from cng_datasets.plan import build_plan

    config = WorkflowConfig(
        dataset=dataset,
        source_urls=("https://example.org/places.gpkg",),
        bucket=bucket,
        namespace=namespace,
        chunk_size=chunk_size,
        **settings,
    )
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in manifests.render_files(build_plan(config, feature_count), str(directory)).items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def step_yamls(directory: Path) -> Path:
    """Only the four step Job files and the plan (what the orchestrator finds on the PVC)."""
    from cng_datasets.k8s import manifests

    out = directory.parent / (directory.name + "-yamls")
    out.mkdir(exist_ok=True)
    for name in manifests.UPLOADED_FILES:
        (out / name).write_bytes((directory / name).read_bytes())
    return out

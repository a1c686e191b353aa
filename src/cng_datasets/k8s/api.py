"""A thin, injectable wrapper over the official Kubernetes client.

Everything the orchestrator and ``submit`` / ``status`` / ``logs`` / ``cleanup`` do goes through a
:class:`KubeApi`. It takes the three API objects of the official client (``CoreV1Api``,
``BatchV1Api``, ``RbacAuthorizationV1Api``) — or the in-memory fake of the tests, which has the same
method names — and

- returns plain dicts in the API's JSON form (``status.completedIndexes``, not model objects);
- turns every ``ApiException`` and connection error into a one-line
  :class:`~cng_datasets.errors.ClusterError` (a missing namespace, a missing permission, an
  unreachable API server each get their own message);
- maps ``get`` of a missing object to ``None`` and ``create`` of an existing one to
  :class:`AlreadyExists`.

:func:`connect` builds the real one from the in-cluster service account or a kubeconfig.
The ``kubernetes`` package is imported only there, so ``--help`` stays fast.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from cng_datasets.errors import (  # the API's errors, importable from here as before
    AlreadyExists,
    ClusterError,
    Forbidden,
    NamespaceMissing,
    NotFound,
    first_line,
)

__all__ = [
    "KINDS",
    "AlreadyExists",
    "Forbidden",
    "Kind",
    "KubeApi",
    "NamespaceMissing",
    "NotFound",
    "connect",
    "in_cluster_namespace",
    "map_api_error",
    "plain",
]

SERVICE_ACCOUNT_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Kind:
    """How the official client names the calls of one kind, and its RBAC (apiGroup, resource)."""

    api: str  # "core", "batch", "rbac", "storage", "scheduling"
    suffix: str  # create_<suffix>, read_<suffix>, ...
    group: str
    resource: str
    namespaced: bool = True


KINDS: dict[str, Kind] = {
    "Job": Kind("batch", "namespaced_job", "batch", "jobs"),
    "Pod": Kind("core", "namespaced_pod", "", "pods"),
    "ServiceAccount": Kind("core", "namespaced_service_account", "", "serviceaccounts"),
    "PersistentVolumeClaim": Kind("core", "namespaced_persistent_volume_claim", "", "persistentvolumeclaims"),
    "Role": Kind("rbac", "namespaced_role", "rbac.authorization.k8s.io", "roles"),
    "RoleBinding": Kind("rbac", "namespaced_role_binding", "rbac.authorization.k8s.io", "rolebindings"),
    "Secret": Kind("core", "namespaced_secret", "", "secrets"),
    "ConfigMap": Kind("core", "namespaced_config_map", "", "configmaps"),
    # cluster-scoped: read by preflight only
    "Namespace": Kind("core", "namespace", "", "namespaces", namespaced=False),
    "Node": Kind("core", "node", "", "nodes", namespaced=False),
    "StorageClass": Kind("storage", "storage_class", "storage.k8s.io", "storageclasses", namespaced=False),
    "PriorityClass": Kind("scheduling", "priority_class", "scheduling.k8s.io", "priorityclasses", namespaced=False),
}


def _status_body(exc: Any) -> dict[str, Any]:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str) and body.strip().startswith("{"):
        try:
            data = json.loads(body)
            return data if isinstance(data, dict) else {}
        except ValueError:
            return {}
    return {}


def map_api_error(exc: Any, verb: str, kind: str, namespace: str, name: str | None = None) -> ClusterError:
    """The one-line :class:`ClusterError` for an ``ApiException`` of ``verb`` on ``kind``."""
    status = getattr(exc, "status", None)
    body = _status_body(exc)
    message = str(body.get("message") or getattr(exc, "reason", "") or exc).strip().splitlines()[0:1]
    msg = message[0] if message else ""
    details = body.get("details") or {}
    what = f"{kind.lower()} {name!r}" if name else f"{kind.lower()}s"
    if status == 404:
        if details.get("kind") == "namespaces" or (verb == "create" and "namespaces" in msg):
            return NamespaceMissing(
                f"namespace {namespace!r} does not exist (create it, or pass the right --namespace)"
            )
        return NotFound(f"{what} not found in namespace {namespace!r}")
    if status == 403:
        return Forbidden(
            f"permission denied: cannot {verb} {KINDS[kind].resource if kind in KINDS else kind} in namespace "
            f"{namespace!r} ({msg})"
        )
    if status == 401:
        return ClusterError(f"the Kubernetes API rejected the credentials (expired token?): {msg}")
    if status == 409:
        return AlreadyExists(f"{what} already exists in namespace {namespace!r}")
    if status == 422:
        return ClusterError(f"the Kubernetes API rejected {what}: {msg}")
    return ClusterError(f"Kubernetes API error {status} on {verb} {what} in namespace {namespace!r}: {msg}")


def _json_object(answer: Any) -> dict[str, Any]:
    """:func:`plain` of an answer that is one Kubernetes object (a JSON object)."""
    return cast("dict[str, Any]", plain(answer))


def plain(obj: Any) -> Any:
    """An API answer as plain JSON-like data.

    The wrapper asks the official client for the raw response (``_preload_content=False``) and
    parses its JSON, so no model validation or renaming stands between the API and the caller;
    the fake answers with dicts directly. Model objects are converted too, for completeness.
    """
    data = getattr(obj, "data", None)
    if isinstance(data, (bytes, bytearray)) and hasattr(obj, "status"):
        text = data.decode("utf-8", "replace")
        try:
            return json.loads(text) if text.strip() else {}
        except ValueError:
            return text
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "isoformat"):
        text = obj.isoformat()
        return text.replace("+00:00", "Z")
    if hasattr(obj, "openapi_types") and hasattr(obj, "attribute_map"):
        out = {}
        for attr in obj.openapi_types:
            value = getattr(obj, attr)
            if value is not None:
                out[obj.attribute_map[attr]] = plain(value)
        return out
    return obj


class KubeApi:
    """The calls cng-datasets makes, over injectable API objects (real client or test fake).

    ``stream`` is :func:`kubernetes.stream.stream` (or the fake's); ``host`` only names the API
    server in connection errors.
    """

    def __init__(
        self,
        core: Any,
        batch: Any,
        rbac: Any,
        stream: Callable[..., Any] | None = None,
        host: str = "the API server",
        storage: Any = None,
        scheduling: Any = None,
        authorization: Any = None,
    ) -> None:
        self.core = core
        self.batch = batch
        self.rbac = rbac
        self.storage = storage
        self.scheduling = scheduling
        self.authorization = authorization
        self._stream = stream
        self.host = host

    # ---- plumbing ------------------------------------------------------------------------

    def _method(self, kind: str, op: str) -> Callable[..., Any]:
        k = KINDS[kind]
        method: Callable[..., Any] = getattr(getattr(self, k.api), f"{op}_{k.suffix}")
        return method

    def _call(
        self, verb: str, kind: str, namespace: str, name: str | None, fn: Callable[..., Any], *a: Any, **kw: Any
    ) -> Any:
        from kubernetes.client.exceptions import ApiException

        try:
            import urllib3

            conn_errors: tuple[type[BaseException], ...] = (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)
        except ImportError:  # pragma: no cover
            conn_errors = (ConnectionError, TimeoutError)
        try:
            return fn(*a, **kw)
        except ApiException as exc:
            raise map_api_error(exc, verb, kind, namespace, name) from None
        except conn_errors as exc:
            reason = getattr(exc, "reason", None) or exc
            first = first_line(reason, type(exc).__name__)
            raise ClusterError(f"cannot reach the Kubernetes API at {self.host}: {first}") from None

    # ---- generic object calls --------------------------------------------------------------

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """The object, or ``None`` if it does not exist."""
        try:
            return _json_object(
                self._call(
                    "get", kind, namespace, name, self._method(kind, "read"), name, namespace, _preload_content=False
                )
            )
        except NamespaceMissing:
            return None
        except NotFound:
            return None

    def list(self, kind: str, namespace: str, label_selector: str | None = None) -> list[dict[str, Any]]:
        kw: dict[str, Any] = {"_preload_content": False}
        if label_selector:
            kw["label_selector"] = label_selector
        result = plain(self._call("list", kind, namespace, None, self._method(kind, "list"), namespace, **kw))
        return list(result.get("items") or [])

    def create(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create ``body``; raises :class:`AlreadyExists` if its name is taken."""
        kind, name = body["kind"], body["metadata"]["name"]
        return _json_object(
            self._call(
                "create", kind, namespace, name, self._method(kind, "create"), namespace, body, _preload_content=False
            )
        )

    def replace(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        kind, name = body["kind"], body["metadata"]["name"]
        return _json_object(
            self._call(
                "update",
                kind,
                namespace,
                name,
                self._method(kind, "replace"),
                name,
                namespace,
                body,
                _preload_content=False,
            )
        )

    def delete(self, kind: str, namespace: str, name: str) -> bool:
        """Delete (pods of a Job go with it, in the background); ``False`` if it did not exist."""
        kw: dict[str, Any] = {"_preload_content": False}
        if kind == "Job":
            kw["propagation_policy"] = "Background"
        try:
            self._call("delete", kind, namespace, name, self._method(kind, "delete"), name, namespace, **kw)
            return True
        except NotFound:
            return False

    # ---- cluster-scoped reads and access reviews (preflight) -----------------------------------

    def get_cluster(self, kind: str, name: str) -> dict[str, Any] | None:
        """A cluster-scoped object (Namespace, StorageClass, PriorityClass), or ``None``."""
        try:
            return _json_object(
                self._call("get", kind, "", name, self._method(kind, "read"), name, _preload_content=False)
            )
        except (NotFound, NamespaceMissing):  # a missing Namespace is a 404 naming "namespaces"
            return None

    def list_cluster(self, kind: str) -> builtins.list[dict[str, Any]]:
        """Every object of a cluster-scoped kind (Node, StorageClass)."""
        result = plain(self._call("list", kind, "", None, self._method(kind, "list"), _preload_content=False))
        return list(result.get("items") or [])

    def may(self, namespace: str, verb: str, group: str, resource: str) -> bool:
        """Whether the caller may ``verb`` ``resource`` (``pods/exec`` names a subresource) in
        ``namespace``: a SelfSubjectAccessReview, which every authenticated user may create."""
        res, _, sub = resource.partition("/")
        attrs = {"namespace": namespace, "verb": verb, "group": group, "resource": res}
        if sub:
            attrs["subresource"] = sub
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        answer = _json_object(
            self._call(
                "create",
                "SelfSubjectAccessReview",
                namespace,
                None,
                self.authorization.create_self_subject_access_review,
                body,
                _preload_content=False,
            )
        )
        return bool((answer.get("status") or {}).get("allowed"))

    def pod_log(self, namespace: str, pod: str, container: str | None = None, tail_lines: int | None = None) -> str:
        kw: dict[str, Any] = {"_preload_content": False}
        if container:
            kw["container"] = container
        if tail_lines:
            kw["tail_lines"] = tail_lines
        try:
            out = self._call("get", "Pod", namespace, pod, self.core.read_namespaced_pod_log, pod, namespace, **kw)
        except NotFound:
            return ""
        data = getattr(out, "data", out)
        return data.decode("utf-8", "replace") if isinstance(data, (bytes, bytearray)) else str(data)

    def exec(
        self, namespace: str, pod: str, argv: Iterable[str], container: str | None = None, timeout: float = 120
    ) -> str:
        """Run ``argv`` in ``pod`` (no stdin, no tty); return its stdout, raise on a non-zero exit."""
        if self._stream is None:
            raise ClusterError("exec is not available (no stream function)")
        kw: dict[str, Any] = dict(command=list(argv), stderr=True, stdin=False, stdout=True, tty=False)
        if container:
            kw["container"] = container
        resp = self._call(
            "create",
            "Pod",
            namespace,
            pod,
            self._stream,
            self.core.connect_get_namespaced_pod_exec,
            pod,
            namespace,
            _preload_content=False,
            **kw,
        )
        try:
            self._call("create", "Pod", namespace, pod, resp.run_forever, timeout=timeout)
            out = resp.read_stdout() or ""
            err = resp.read_stderr() or ""
            code = resp.returncode
        finally:
            resp.close()
        if code is None:
            raise ClusterError(f"command in pod {pod} did not finish within {timeout:.0f} s")
        if code != 0:
            last = err.strip().splitlines()[-1] if err.strip() else ""
            raise ClusterError(f"command in pod {pod} exited with {code}: {last}")
        return str(out)


def in_cluster_namespace() -> str | None:
    """The namespace of this pod's service account, when running in a cluster."""
    try:
        with open(SERVICE_ACCOUNT_NAMESPACE_FILE, encoding="utf-8") as fh:
            return fh.read().strip() or None
    except OSError:
        return None


def connect(context: str | None = None) -> KubeApi:
    """A :class:`KubeApi` on the real cluster: in-cluster configuration when running in a pod,
    otherwise the kubeconfig (``$KUBECONFIG`` or ``~/.kube/config``, optional ``context``)."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException
    from kubernetes.stream import stream

    configuration = client.Configuration()
    try:
        if os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            config.load_incluster_config(client_configuration=configuration)
        else:
            config.load_kube_config(context=context, client_configuration=configuration)
    except (ConfigException, OSError, TypeError, ValueError) as exc:
        first = first_line(exc)
        raise ClusterError(
            f"no usable Kubernetes configuration (no in-cluster service account, no kubeconfig at "
            f"$KUBECONFIG or ~/.kube/config): {first}"
        ) from None
    api_client = client.ApiClient(configuration)
    return KubeApi(
        client.CoreV1Api(api_client),
        client.BatchV1Api(api_client),
        client.RbacAuthorizationV1Api(api_client),
        stream=stream,
        host=configuration.host,
        storage=client.StorageV1Api(api_client),
        scheduling=client.SchedulingV1Api(api_client),
        authorization=client.AuthorizationV1Api(api_client),
    )

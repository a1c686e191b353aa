"""Kubernetes manifests of a dataset's workflow: pure builders, :class:`~cng_datasets.plan.Plan` in,
plain ``dict`` documents out (no I/O, no network, no Kubernetes client).

Files (see :data:`FILES`)::

    convert-job.yaml      pmtiles-job.yaml      hex-job.yaml (Indexed)      repartition-job.yaml
    workflow-rbac.yaml    ServiceAccount + Role + RoleBinding ``cng-datasets-workflow`` (per namespace)
    workflow-pvc.yaml     PVC ``<ds>-workflow-yamls`` holding the four Job files and plan.json
    plan.json             the plan (:meth:`~cng_datasets.plan.Plan.to_json`): the orchestrator's order
    workflow-upload.yaml  Job ``<ds>-upload-yamls``: ``cng-datasets receive-yamls`` on the PVC
    workflow.yaml         Job ``<ds>-workflow``: ``cng-datasets orchestrate`` with the ServiceAccount

Every container runs an argv list taken verbatim from the plan (no shell), as a non-root user
with a read-only root filesystem, no privilege escalation, all capabilities dropped and the
RuntimeDefault seccomp profile; ``/tmp`` is an ``emptyDir`` sized by the step's ephemeral storage.
S3 keys come from a Secret through ``secretKeyRef``, never inlined.

Every Job carries ``cng-datasets/spec-hash`` (:mod:`cng_datasets.k8s.spechash`): a fingerprint of
what it runs, including the steps it depends on, so that a re-run with other settings does not
mistake the finished Jobs of the earlier run for its own.

The documents validate with ``kubernetes-validate --strict`` from :data:`MIN_K8S_VERSION` on.
"""

from __future__ import annotations

import shlex
from typing import Any

from cng_datasets.config import STEPS, WorkflowConfig
from cng_datasets.errors import EXIT_BAD_INPUT, UsageError
from cng_datasets.k8s import names
from cng_datasets.k8s.labels import (
    ANNOTATION_DATASET_PATH,
    ANNOTATION_DEPENDS_ON,
    ANNOTATION_SIZED_AT_RUN,
    ANNOTATION_SPEC_HASH,
    APP,
    LABEL_COMPONENT,
    LABEL_DATASET,
    LABEL_NAME,
    LABEL_PART_OF,
    LABEL_STEP,
)
from cng_datasets.k8s.rbac import RULES, SERVICE_ACCOUNT
from cng_datasets.k8s.spechash import spec_hash, step_hashes, workflow_hash
from cng_datasets.plan import PROGRAM, Plan, Step

#: Output files, in the order they are written and listed.
JOB_FILES: dict[str, str] = {step: names.job_file(step) for step in STEPS}
RBAC_FILE = "workflow-rbac.yaml"
PVC_FILE = "workflow-pvc.yaml"
UPLOAD_FILE = "workflow-upload.yaml"
WORKFLOW_FILE = "workflow.yaml"
README_FILE = "README.md"
PLAN_FILE = names.PLAN_FILE
FILES: tuple[str, ...] = (*JOB_FILES.values(), RBAC_FILE, PVC_FILE, UPLOAD_FILE, WORKFLOW_FILE, PLAN_FILE)
#: What the upload Job receives on the PVC: the step Jobs and the plan that orders them.
UPLOADED_FILES: tuple[str, ...] = (*JOB_FILES.values(), PLAN_FILE)

#: Oldest Kubernetes version whose API has every field we emit: ``backoffLimitPerIndex``,
#: ``maxFailedIndexes`` and the ``FailIndex`` action are beta (enabled by default) from 1.29;
#: ``podFailurePolicy`` rules with only ``onExitCodes`` are rejected by the 1.28 schemas.
MIN_K8S_VERSION = "1.29"

#: The numeric user and group of the image (Dockerfile ``USER 10001:10001``).
RUN_AS_USER = 10001
RUN_AS_GROUP = 10001

CONTAINER = "step"
YAMLS_MOUNT = "/yamls"
TMP_MOUNT = "/tmp"
UPLOAD_TIMEOUT = 3600

#: Finished Jobs (and their pods and logs) are kept a week, then garbage-collected.
TTL_SECONDS_AFTER_FINISHED = 7 * 24 * 3600
#: Wall-clock limit of each Job (includes time spent Pending). pmtiles may first wait as long as
#: convert may run for convert's output (``--wait-for-input``), then has 48 h of its own; the
#: orchestrator outlives the whole chain.
ACTIVE_DEADLINE_SECONDS: dict[str, int] = {
    "convert": 24 * 3600,
    "pmtiles": 24 * 3600 + 48 * 3600,
    "hex": 24 * 3600,
    "repartition": 12 * 3600,
    # waits for nothing: it runs once pmtiles and repartition are complete
    "catalog": 3600,
    "upload": UPLOAD_TIMEOUT + 1800,
    "workflow": 5 * 24 * 3600,
}
#: Pod retries of the non-indexed Jobs (the hex Job's per-index retries and failed-index limit
#: are ``--hex-retries`` / ``--max-failed-indexes``, in the config).
BACKOFF_LIMIT = 2

#: Resources of the two small infrastructure containers.
SMALL_RESOURCES = {"cpu": "100m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
#: The orchestrator's: it may sample the converted GeoParquet to size the hex Job (~200 MB peak).
ORCHESTRATOR_RESOURCES = {**SMALL_RESOURCES, "memory": "512Mi"}
PVC_SIZE = "1Gi"


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def check_k8s_version(version: str) -> str:
    """Return ``version`` if the manifests can target it, else raise :class:`UsageError`."""
    try:
        ok = _version_tuple(version) >= _version_tuple(MIN_K8S_VERSION)
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(
            f"--k8s-version {version!r}: the manifests need Kubernetes {MIN_K8S_VERSION} or newer "
            "(Indexed Job backoffLimitPerIndex / maxFailedIndexes / FailIndex)"
        )
    return version


def check_config(config: WorkflowConfig) -> None:
    """Raise :class:`UsageError` for settings that cannot make valid manifests."""
    check_k8s_version(config.k8s_version)
    names.check_namespace(config.namespace)
    names.check_secret_name(config.s3_secret)
    names.check_secret_key(config.s3_access_key_key, "--s3-access-key-key")
    names.check_secret_key(config.s3_secret_key_key, "--s3-secret-key-key")
    names.dataset_k8s_name(config.dataset)
    names.check_image(config.image)
    if config.storage_class is not None and not names.is_dns_subdomain(config.storage_class):
        raise UsageError(f"--storage-class {config.storage_class!r} is not a valid StorageClass name")
    names.check_scheduling(
        config.image_pull_secrets,
        config.priority_class,
        config.node_selector,
        tuple((t.key, t.value) for t in config.tolerations),
    )
    if config.is_local:
        raise UsageError(f"--bucket {config.bucket!r}: Kubernetes Jobs need an S3 bucket, not a local directory")
    for url in config.source_urls:
        if not url.lower().startswith(("http://", "https://", "s3://", "/vsi")):
            raise UsageError(f"--source-url {url!r}: a pod cannot read a local file; give an http(s):// or s3:// URL")


# ---- labels -------------------------------------------------------------------------------


def dataset_labels(config: WorkflowConfig) -> dict[str, str]:
    """Labels every object of one dataset carries."""
    base = names.dataset_k8s_name(config.dataset)
    return {LABEL_NAME: APP, LABEL_PART_OF: base, LABEL_DATASET: base}


def step_labels(config: WorkflowConfig, step: str) -> dict[str, str]:
    """Labels of a processing Job and its pods."""
    return {**dataset_labels(config), LABEL_COMPONENT: step, LABEL_STEP: step}


# ---- pod pieces ---------------------------------------------------------------------------


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "fsGroup": RUN_AS_GROUP,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_GROUP,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def step_resources(config: WorkflowConfig, step: str) -> dict[str, dict[str, str]]:
    """Requests = limits: the steps size their pools from the cgroup limits they are given."""
    r = config.resources_for(step)
    amounts = {"cpu": r.cpu, "memory": r.memory, "ephemeral-storage": r.ephemeral_storage}
    return {"requests": dict(amounts), "limits": dict(amounts)}


def s3_env(config: WorkflowConfig) -> list[dict[str, Any]]:
    """The S3 environment of a step container: keys from the Secret, endpoint and region as given."""

    def secret(name: str, key: str) -> dict[str, Any]:
        return {"name": name, "valueFrom": {"secretKeyRef": {"name": config.s3_secret, "key": key}}}

    env = [
        secret("AWS_ACCESS_KEY_ID", config.s3_access_key_key),
        secret("AWS_SECRET_ACCESS_KEY", config.s3_secret_key_key),
    ]
    if config.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": config.s3_endpoint})
    if config.s3_region:
        env.append({"name": "AWS_REGION", "value": config.s3_region})
    return env


def base_env() -> list[dict[str, Any]]:
    """Temp files go to the ``/tmp`` emptyDir; HOME points there too (read-only root filesystem)."""
    return [
        {"name": "TMPDIR", "value": TMP_MOUNT},
        {"name": "HOME", "value": TMP_MOUNT},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def _tmp_volume(size: str) -> dict[str, Any]:
    return {"name": "tmp", "emptyDir": {"sizeLimit": size}}


def _container(
    config: WorkflowConfig,
    argv: tuple[str, ...],
    env: list[dict[str, Any]],
    resources: dict[str, dict[str, str]],
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "name": CONTAINER,
        "image": config.image,
        "imagePullPolicy": "Always" if names.is_floating_image(config.image) else "IfNotPresent",
        "command": list(argv),
        "env": env,
        "resources": resources,
        "securityContext": container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": TMP_MOUNT}, *mounts],
    }


def scheduling(config: WorkflowConfig) -> dict[str, Any]:
    """The shared-cluster fields of every pod spec: pull secrets, priority class, node selector,
    tolerations (only those given)."""
    out: dict[str, Any] = {}
    if config.image_pull_secrets:
        out["imagePullSecrets"] = [{"name": n} for n in config.image_pull_secrets]
    if config.priority_class:
        out["priorityClassName"] = config.priority_class
    if config.node_selector:
        out["nodeSelector"] = dict(config.node_selector)
    if config.tolerations:
        out["tolerations"] = [t.to_k8s() for t in config.tolerations]
    return out


def _pod_template(
    config: WorkflowConfig,
    labels: dict[str, str],
    container: dict[str, Any],
    volumes: list[dict[str, Any]],
    service_account: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"restartPolicy": "Never"}
    if service_account:
        spec["serviceAccountName"] = service_account
        spec["automountServiceAccountToken"] = True
    else:
        spec["automountServiceAccountToken"] = False
    spec.update(
        enableServiceLinks=False,
        securityContext=pod_security_context(),
        **scheduling(config),
        containers=[container],
        volumes=volumes,
    )
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


def pod_failure_policy(indexed: bool) -> dict[str, Any]:
    """Ignore disruptions (preemption, eviction, drain); exit 65 = bad input: fail at once."""
    return {
        "rules": [
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            {
                "action": "FailIndex" if indexed else "FailJob",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]},
            },
        ]
    }


def _job(
    config: WorkflowConfig,
    name: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    spec: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": config.namespace,
            "labels": dict(labels),
            "annotations": dict(annotations),
        },
        "spec": spec,
    }


# ---- documents ----------------------------------------------------------------------------


def step_job(plan: Plan, step: Step, sized_at_run: bool | None = None) -> dict[str, Any]:
    """The Job of one processing step; the container command is ``step.argv`` verbatim.

    The hex step is an Indexed Job: Kubernetes sets ``JOB_COMPLETION_INDEX`` in each pod and
    ``cng-datasets hex`` reads its chunk from it. When the plan could not count the features
    (``sized_at_run``, by default), its Job carries :data:`ANNOTATION_SIZED_AT_RUN`: the
    orchestrator then sizes the chunks from the converted GeoParquet before creating it, and the
    spec hash leaves the chunking out.
    """
    config = plan.config
    if not step.argv or step.argv[0] != PROGRAM:
        raise ValueError(f"step {step.name}: argv must start with {PROGRAM!r}")
    labels = step_labels(config, step.name)
    annotations = {
        ANNOTATION_DEPENDS_ON: ",".join(step.depends_on),
        ANNOTATION_DATASET_PATH: config.dataset,
    }
    if sized_at_run is None:
        sized_at_run = step.indexed and plan.chunking.feature_count is None
    if sized_at_run:
        annotations[ANNOTATION_SIZED_AT_RUN] = "true"
    resources = step_resources(config, step.name)
    container = _container(config, step.argv, [*s3_env(config), *base_env()], resources, [])
    volumes = [_tmp_volume(resources["limits"]["ephemeral-storage"])]
    spec: dict[str, Any] = {}
    if step.indexed:
        spec.update(
            completionMode="Indexed",
            completions=step.completions,
            parallelism=step.parallelism,
            backoffLimitPerIndex=config.hex_retries,
            maxFailedIndexes=min(config.max_failed_indexes, step.completions),
        )
    else:
        spec.update(completions=1, parallelism=1, backoffLimit=BACKOFF_LIMIT)
    spec.update(
        activeDeadlineSeconds=ACTIVE_DEADLINE_SECONDS[step.name],
        ttlSecondsAfterFinished=TTL_SECONDS_AFTER_FINISHED,
        podFailurePolicy=pod_failure_policy(step.indexed),
        template=_pod_template(config, labels, container, volumes),
    )
    return _job(config, names.job_name(config.dataset, step.name), labels, annotations, spec)


def rbac_documents(config: WorkflowConfig) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding ``cng-datasets-workflow``, shared by every dataset of
    the namespace (so they carry no dataset label). Rules: :data:`cng_datasets.k8s.rbac.RULES`."""
    meta = {"namespace": config.namespace, "labels": {LABEL_NAME: APP, LABEL_COMPONENT: "workflow-rbac"}}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, **meta},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": SERVICE_ACCOUNT, **meta},
            "rules": [
                {"apiGroups": [group], "resources": [resource], "verbs": list(verbs)}
                for group, resource, verbs in RULES
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": SERVICE_ACCOUNT, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": SERVICE_ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": config.namespace}],
        },
    ]


def pvc_document(config: WorkflowConfig) -> dict[str, Any]:
    """The PVC that holds the Job YAMLs (ReadWriteOnce: the upload pod ends before the
    orchestrator needs it; ``--storage-class``, else the cluster's default StorageClass)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": names.pvc_name(config.dataset),
            "namespace": config.namespace,
            "labels": {**dataset_labels(config), LABEL_COMPONENT: "workflow-yamls"},
            "annotations": {ANNOTATION_DATASET_PATH: config.dataset},
        },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            **({"storageClassName": config.storage_class} if config.storage_class else {}),
            "resources": {"requests": {"storage": PVC_SIZE}},
        },
    }


def _yamls_volume(config: WorkflowConfig) -> dict[str, Any]:
    return {"name": "yamls", "persistentVolumeClaim": {"claimName": names.pvc_name(config.dataset)}}


def _infra_job(
    config: WorkflowConfig,
    kind: str,
    argv: tuple[str, ...],
    service_account: str | None,
    env: list[dict[str, Any]] | None = None,
    sizes: dict[str, str] = SMALL_RESOURCES,
) -> dict[str, Any]:
    labels = {**dataset_labels(config), LABEL_COMPONENT: kind}
    resources = {"requests": dict(sizes), "limits": dict(sizes)}
    mounts = [{"name": "yamls", "mountPath": YAMLS_MOUNT}]
    container = _container(config, argv, [*(env or []), *base_env()], resources, mounts)
    volumes = [_tmp_volume(sizes["ephemeral-storage"]), _yamls_volume(config)]
    spec = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": BACKOFF_LIMIT,
        "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS[kind],
        "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
        "podFailurePolicy": pod_failure_policy(indexed=False),
        "template": _pod_template(config, labels, container, volumes, service_account),
    }
    annotations = {ANNOTATION_DATASET_PATH: config.dataset}
    return _job(config, names.job_name(config.dataset, kind), labels, annotations, spec)


def upload_argv() -> tuple[str, ...]:
    """``cng-datasets receive-yamls``: wait until the Job files and the plan are on the PVC, then exit 0."""
    return (
        PROGRAM,
        "receive-yamls",
        "--dir",
        YAMLS_MOUNT,
        "--expect",
        ",".join(UPLOADED_FILES),
        "--timeout",
        str(UPLOAD_TIMEOUT),
    )


def orchestrate_argv(config: WorkflowConfig) -> tuple[str, ...]:
    """``cng-datasets orchestrate``: apply the Jobs from the PVC in the order of its plan.json and
    await them."""
    return (PROGRAM, "orchestrate", "--yamls", YAMLS_MOUNT, "--namespace", config.namespace)


def upload_job(config: WorkflowConfig) -> dict[str, Any]:
    """Job ``<ds>-upload-yamls``: a Ready pod with the PVC at /yamls that receives the YAMLs
    (``kubectl cp`` or ``cng-datasets submit``). It needs no API access and no S3 keys."""
    return _infra_job(config, "upload", upload_argv(), service_account=None)


def workflow_job(config: WorkflowConfig) -> dict[str, Any]:
    """Job ``<ds>-workflow``: the in-cluster orchestrator, with the ``cng-datasets-workflow``
    ServiceAccount, the PVC at /yamls and the S3 keys (it reads the hex chunk markers to count
    features and cells for its progress record, and the converted GeoParquet to size the hex Job
    of sources that could not be counted)."""
    return _infra_job(
        config,
        "workflow",
        orchestrate_argv(config),
        service_account=SERVICE_ACCOUNT,
        env=s3_env(config),
        sizes=ORCHESTRATOR_RESOURCES,
    )


def build_documents(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """Every file of the workflow (see :data:`FILES`) → its documents, in file order."""
    config = plan.config
    check_config(config)
    docs: dict[str, list[dict[str, Any]]] = {}
    steps = {step.name: step_job(plan, step) for step in plan.order()}
    hashes = step_hashes((s, job, plan.step(s).depends_on) for s, job in steps.items())
    for step_name, job in steps.items():
        job["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = hashes[step_name]
        docs[names.job_file(step_name)] = [job]
    docs[RBAC_FILE] = rbac_documents(config)
    docs[PVC_FILE] = [pvc_document(config)]
    upload = upload_job(config)
    upload["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = spec_hash(upload)
    docs[UPLOAD_FILE] = [upload]
    orchestrator = workflow_job(config)
    orchestrator["metadata"]["annotations"][ANNOTATION_SPEC_HASH] = workflow_hash(orchestrator, hashes)
    docs[WORKFLOW_FILE] = [orchestrator]
    return docs


def to_yaml(documents: list[dict[str, Any]]) -> str:
    """YAML text of ``documents`` (``---`` between documents, keys in insertion order)."""
    import yaml

    return "---\n".join(
        yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10_000)
        for doc in documents
    )


def render_files(plan: Plan, output_dir: str = ".") -> dict[str, str]:
    """File name → text, for every file of the output directory (the YAMLs, ``plan.json`` and
    ``README.md``, whose commands refer to the folder as ``output_dir``)."""
    out = {name: to_yaml(docs) for name, docs in build_documents(plan).items()}
    out[PLAN_FILE] = plan.to_json()
    out[README_FILE] = readme(plan, output_dir)
    return out


def readme(plan: Plan, output_dir: str = ".") -> str:
    """The folder's README: the exact commands to run this workflow, with real names filled in."""
    c = plan.config
    ns = c.namespace
    d = shlex.quote(output_dir.rstrip("/") or ".")
    ch = plan.chunking
    count = f"{ch.feature_count:,} features" if ch.feature_count is not None else "feature count unknown"
    sizing = (
        ""
        if ch.feature_count is not None
        else "\nThe orchestrator sizes the chunks from the converted GeoParquet before it creates the hex Job\n"
        "(`submit`); applied by hand with kubectl, the Job runs as written.\n"
    )
    return f"""# Workflow of dataset `{c.dataset}`

Generated by `cng-datasets workflow` for namespace `{ns}` (schemas: Kubernetes {c.k8s_version}).
Run the commands from the directory that contains this folder (`{d}` below).
Every Job file carries its namespace and can also be applied on its own (last section).

Outputs:

- `{c.parquet_url}` (GeoParquet)
- `{c.pmtiles_url}` (PMTiles)
- `{c.hex_url}/h0=…/` (H3 hex, partitioned by h0; temporary chunks in `{c.chunks_url}/`)

Hex chunking: {ch.describe()}, {ch.parallelism} in parallel ({count};
the last chunk always reads to the end of the file).
{sizing}
Prerequisite: the Secret `{c.s3_secret}` in namespace `{ns}` with the keys
`{c.s3_access_key_key}` and `{c.s3_secret_key_key}` (the S3 access key id and secret key).

## One command

```bash
cng-datasets preflight {d}   # optional: submit runs these checks first
cng-datasets submit {d}
cng-datasets status {d} --watch
```

""" + _readme_by_hand(plan, d)


def _readme_by_hand(plan: Plan, d: str) -> str:
    """The README's kubectl recipes (``d``: the folder, shell-quoted)."""
    c = plan.config
    ns = c.namespace
    job = {k: names.job_name(c.dataset, k) for k in names.JOB_SUFFIXES}
    pvc = names.pvc_name(c.dataset)
    cps = "\n".join(f'kubectl cp {d}/{f} "$POD":{YAMLS_MOUNT}/ -n {ns}' for f in UPLOADED_FILES)
    t = ACTIVE_DEADLINE_SECONDS
    return f"""## Complete workflow with kubectl

```bash
# One-time setup per namespace (shared by every dataset)
kubectl apply -f {d}/{RBAC_FILE}

# PVC for the Job YAMLs
kubectl apply -f {d}/{PVC_FILE}

# Pod that receives the YAMLs
kubectl apply -f {d}/{UPLOAD_FILE}
kubectl wait --for=condition=ready pod -l job-name={job["upload"]} -n {ns} --timeout=10m

# Copy the Job YAMLs and the plan (the orchestrator's order) to the PVC
POD=$(kubectl get pods -l job-name={job["upload"]} -n {ns} -o jsonpath='{{.items[0].metadata.name}}')
{cps}

# Start the orchestrator (the laptop can disconnect after this)
kubectl apply -f {d}/{WORKFLOW_FILE}

# Monitor progress
kubectl logs -f job/{job["workflow"]} -n {ns}
```

## Jobs one by one

```bash
kubectl apply -f {d}/{RBAC_FILE}

kubectl apply -f {d}/{JOB_FILES["convert"]}
# pmtiles waits (up to 24 h) for convert's output
# WARNING on a re-run: apply pmtiles only after convert has completed — it waits only for the .parquet to exist, and the old one does
kubectl apply -f {d}/{JOB_FILES["pmtiles"]}

# Wait for convert to finish before hex
kubectl wait --for=condition=complete job/{job["convert"]} -n {ns} --timeout={t["convert"] // 3600}h

kubectl apply -f {d}/{JOB_FILES["hex"]}
kubectl wait --for=condition=complete job/{job["hex"]} -n {ns} --timeout={t["hex"] // 3600}h

kubectl apply -f {d}/{JOB_FILES["repartition"]}

# The STAC collection and dataset card, once pmtiles and repartition are complete
kubectl wait --for=condition=complete job/{job["pmtiles"]} job/{job["repartition"]} -n {ns} --timeout={t["pmtiles"] // 3600}h
kubectl apply -f {d}/{JOB_FILES["catalog"]}
```

`kubectl wait --for=condition=complete` does not return early when a Job fails; check with
`kubectl get jobs -n {ns} -l {LABEL_DATASET}={names.dataset_k8s_name(c.dataset)}`.

## Cleanup

```bash
kubectl delete job {job["convert"]} {job["pmtiles"]} {job["hex"]} {job["repartition"]} {job["catalog"]} \\
  {job["upload"]} {job["workflow"]} -n {ns} --ignore-not-found=true
kubectl delete pvc {pvc} -n {ns} --ignore-not-found=true
```
"""  # noqa: E501 - one shell comment of the README, which the golden manifests fix word for word

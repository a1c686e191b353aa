"""CI runs what the README says, and the lint, format and type checks before it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _ci_lines() -> list[str]:
    text = (ROOT / ".ci" / "run").read_text()
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_ci_ends_with_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"Run the tests[^\n]*\n(?:[^\n]*\n)*?```bash\n([^\n]+)\n```", readme)
    assert m, "README has no 'Run the tests' command block"
    assert _ci_lines()[-1] == m.group(1)


def test_ci_checks_lint_format_and_types_before_the_suite() -> None:
    lines = _ci_lines()
    assert "set -euo pipefail" in lines
    checks = [".venv/bin/ruff check src tests", ".venv/bin/ruff format --check src tests", ".venv/bin/mypy"]
    positions = [lines.index(c) for c in checks]
    assert positions == sorted(positions) and positions[-1] < len(lines) - 1


def test_every_lint_or_type_suppression_says_why() -> None:
    """A ``noqa`` or ``type: ignore`` in the package carries its reason on the same line; tests
    carry no ``type: ignore`` (mypy checks the package only, so there they would be noise)."""
    bare = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            m = re.search(r"#\s*(noqa(: [A-Z0-9, ]+)?|type: ignore(\[[a-z-, ]+\])?)(?P<rest>.*)", line)
            if m and not re.match(r"\s*(-|—|#)\s*\w", m.group("rest")):
                bare.append(f"{path.relative_to(ROOT)}:{n}")
    assert bare == []
    typed = [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("*.py") if "type: ignore" in p.read_text()]
    assert typed == [p for p in typed if p.endswith("test_ci.py")]


def test_github_workflows_validate_against_githubs_schema() -> None:
    import subprocess
    import sys

    workflows = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
    assert [w.name for w in workflows] == ["ci.yml", "release.yml"]
    exe = Path(sys.executable).with_name("check-jsonschema")
    done = subprocess.run(
        [str(exe), "--builtin-schema", "vendor.github-workflows", *map(str, workflows)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "bash .ci/run" in (ROOT / ".github" / "workflows" / "ci.yml").read_text()


def test_dockerfile_lints_clean_and_release_tags_the_default_image() -> None:
    import subprocess
    import sys

    from cng_datasets import __version__
    from cng_datasets.config import DEFAULT_IMAGE, IMAGE_REPOSITORY

    exe = Path(sys.executable).with_name("hadolint")
    done = subprocess.run([str(exe), str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert DEFAULT_IMAGE == f"{IMAGE_REPOSITORY}:{__version__}"
    release = (ROOT / ".github" / "workflows" / "release.yml").read_text()
    assert "linux/amd64,linux/arm64" in release and "cng-datasets:${{ env.VERSION }}" in release

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

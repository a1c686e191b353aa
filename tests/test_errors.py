"""One exception tree: every error class is defined in errors.py and drawn in its docstring."""

from __future__ import annotations

import ast
from pathlib import Path

from cng_datasets import errors

SRC = Path(errors.__file__).resolve().parent


def _classes_outside_errors() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "errors.py" and path.parent == SRC:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases}
                if node.name.endswith(("Error", "Exception")) or any(b.endswith(("Error", "Exception")) for b in bases):
                    found.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name}")
    return found


def test_no_error_class_outside_errors_py() -> None:
    assert _classes_outside_errors() == []


def test_the_docstring_draws_every_class() -> None:
    doc = errors.__doc__ or ""
    classes = [
        name
        for name, obj in vars(errors).items()
        if isinstance(obj, type) and issubclass(obj, (errors.CngError, errors.CngWarning))
    ]
    assert len(classes) > 20
    assert [c for c in classes if c not in doc] == []


def test_exit_codes_follow_the_tree() -> None:
    assert errors.ValidationError(["x"]).exit_code == errors.EXIT_BAD_INPUT
    assert errors.OutOfRangeError(0, "lat 91").exit_code == errors.EXIT_BAD_INPUT
    assert errors.WaitTimeoutError("timed out").exit_code == errors.EXIT_FAILURE
    assert issubclass(errors.WaitTimeoutError, errors.ClusterError)
    assert errors.LeaseHeldError("d", {}, "pid 1").exit_code == errors.EXIT_FAILURE

"""Every command's --help is quick: it imports none of the heavy libraries."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cng_datasets.cli import COMMANDS

HEAVY = ("pyogrio", "pyarrow", "shapely", "numpy", "h3", "h3ronpy", "pmtiles", "yaml", "kubernetes", "boto3", "pyproj")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_imports_no_heavy_library(command: str | None) -> None:
    args = [] if command is None else [command]
    code = (
        "import sys\nfrom cng_datasets.cli import main\n"
        f"try:\n    main({args + ['--help']!r})\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout, proc.stdout[-300:]
    assert "Usage:" in proc.stdout

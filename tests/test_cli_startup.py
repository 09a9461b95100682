"""The CLI starts fast: ``--version`` and ``--help`` import no heavy library.

Startup time itself is measured, not tested (the machines are noisy); what is tested is the
cause of a slow start: importing torch, Ray, MLflow, Optuna or pandas for a command that
does not use them. ``python -X importtime`` lists every module a command imported.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "ray", "mlflow", "optuna", "pandas", "matplotlib", "duckdb")


def imported(*args: str) -> set[str]:
    """The top-level packages ``initstudy ARGS`` imports."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    assert "pipeline" in names  # the listing was read
    return names


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("run", "--help")])
def test_the_cli_starts_without_heavy_libraries(args: tuple[str, ...]) -> None:
    heavy = sorted(imported(*args) & set(HEAVY))
    assert not heavy, f"initstudy {' '.join(args)} imported {heavy}"


def test_importing_the_spec_records_does_not_import_torch() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import models.fields, models.spec, sys; print('torch' in sys.modules)",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "False", proc.stderr

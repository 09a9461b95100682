"""The layering lint rule: models/ and the analysis modules import no outside system."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def banned(path: str, source: str) -> bool:
    """Whether ruff's banned-api rule (TID251) fires on ``source`` placed at ``path``."""
    proc = subprocess.run(
        [str(RUFF), "check", "--stdin-filename", path, "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return "TID251" in proc.stdout


@pytest.mark.parametrize("module", ["optuna", "ray", "mlflow"])
@pytest.mark.parametrize(
    "path",
    [
        "models/train.py",
        "models/theory.py",
        "pipeline/analysis/verdicts.py",
        "pipeline/analysis/stats.py",
        "pipeline/analysis/a_module_not_written_yet.py",
    ],
)
def test_models_and_analysis_may_not_import_an_outside_system(path: str, module: str) -> None:
    assert banned(path, f"import {module}\n")
    assert banned(path, f"from {module} import something\n")


def test_the_modules_that_talk_to_a_store_may() -> None:
    assert not banned("pipeline/driver.py", "import optuna\nimport ray\n")
    assert not banned("pipeline/tracking.py", "import mlflow\n")
    assert not banned("models/train.py", "import torch\n")

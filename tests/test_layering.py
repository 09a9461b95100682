"""The layering: what may import an outside system, and imports only ever point down."""

from __future__ import annotations

import ast
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
        "pipeline/driver.py",
    ],
)
def test_only_the_store_modules_may_import_an_outside_system(path: str, module: str) -> None:
    assert banned(path, f"import {module}\n")
    assert banned(path, f"from {module} import something\n")


def test_the_modules_that_talk_to_a_store_may() -> None:
    assert not banned("pipeline/execution.py", "import ray\n")
    assert not banned("pipeline/ray_compat.py", "import ray\n")
    assert not banned("pipeline/optuna_compat.py", "import optuna\n")
    assert not banned("pipeline/tracking.py", "import mlflow\n")
    assert not banned("pipeline/studystore.py", "import optuna\n")
    assert not banned("models/train.py", "import torch\n")


# The data path is one-way: spec -> plan -> driver -> executor -> models -> result ->
# stores -> tables -> analysis. In imports: a module may import its own layer and those
# below it, never one above (docs/design.md has the map).
LAYERS: list[tuple[str, ...]] = [
    ("models",),
    (
        "pipeline.exitcodes",
        "pipeline.urls",
        "pipeline.safeout",
        "pipeline.retry",
        "pipeline.faults",
        "pipeline.version",
        "pipeline.claimspec",
        "pipeline.specerrors",
        "pipeline.specfile",
        "pipeline.space",
        "pipeline.samplerspec",
        "pipeline.studyspec",
        "pipeline.protocolspec",
        "pipeline.tunestage",
        "pipeline.plan",
    ),
    (
        "pipeline.optuna_compat",
        "pipeline.ray_compat",
        "pipeline.execution",
        "pipeline.raysession",
        "pipeline.storage",
        "pipeline.studystore",
        "pipeline.disk",
        "pipeline.mlflowio",
        "pipeline.tracking",
        "pipeline.tracking_base",
        "pipeline.tracking_retry",
        "pipeline.tracking_runs",
        "pipeline.progress",
        "pipeline.live",
        "pipeline.studylog",
        "pipeline.resources",
    ),
    ("pipeline.driver", "pipeline.gridwindow"),
    # efficiency reads trial records only, so the storage reader (results) may use it
    # optuna_plots draws Optuna's plots from the trials table, as results' importances do
    (
        "pipeline.analysis.tables",
        "pipeline.analysis.efficiency",
        "pipeline.results",
        "pipeline.optuna_plots",
    ),
    ("pipeline.analysis",),
    (
        "pipeline.check",
        "pipeline.ui",
        "pipeline.dashboard",
        "pipeline.protocol",
        "pipeline.frontend",
        "pipeline.publish",
        "pipeline.cli",
        "pipeline.api",
    ),
]


def layer_of(module: str) -> int:
    """The layer of a module: that of the longest entry of LAYERS it is or is inside."""
    best, rank = "", -1
    for i, names in enumerate(LAYERS):
        for name in names:
            inside = module == name or module.startswith(name + ".")
            if inside and len(name) > len(best):
                best, rank = name, i
    assert rank >= 0, f"{module} is in no layer of LAYERS: add it"
    return rank


def imports_of(path: Path) -> set[str]:
    """The models/pipeline modules a file imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("pipeline", "pipeline.analysis"):  # from pipeline import x
                found |= {f"{node.module}.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m.split(".")[0] in ("models", "pipeline")}


def test_no_module_imports_a_layer_above_its_own() -> None:
    sources = sorted((ROOT / "models").glob("*.py")) + sorted((ROOT / "pipeline").rglob("*.py"))
    upward = []
    for path in sources:
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for target in imports_of(path):
            if layer_of(target) > layer_of(module):
                upward.append(f"{module} imports {target}")
    assert not upward, upward


def test_the_layer_check_catches_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from pipeline.analysis.verdicts import judge\n")
    assert imports_of(bad) == {"pipeline.analysis.verdicts"}
    assert layer_of("pipeline.analysis.verdicts") > layer_of("pipeline.driver")
    assert layer_of("pipeline.analysis.tables") < layer_of("pipeline.analysis.report")


def test_the_driver_only_drives_and_no_module_is_too_long() -> None:
    """Size limits that keep the code easy to change (docs/design.md): the Driver class at
    most 300 lines, no module of pipeline/ over 600."""
    lines = (ROOT / "pipeline" / "driver.py").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("class Driver"))
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i] and not lines[i][0].isspace()),
        len(lines),
    )
    assert end - start <= 300, f"Driver is {end - start} lines"
    long = {
        str(p.relative_to(ROOT)): n
        for p in (ROOT / "pipeline").rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert not long, long

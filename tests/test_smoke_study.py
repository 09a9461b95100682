"""The main job: the real CLI on studies/smoke.yaml, and the honesty of what it concludes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pipeline import results, urls
from pipeline.analysis.verdicts import VERDICTS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    run_dir = tmp_path_factory.mktemp("main_job")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "studies/smoke.yaml", "--run-dir", run_dir],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return run_dir, proc


@pytest.fixture(scope="module")
def verdicts(smoke: tuple[Path, Any]) -> dict[str, dict[str, Any]]:
    path = smoke[0] / "reports" / "smoke" / "verdicts.json"
    return {v["id"]: v for v in json.loads(path.read_text())}


def test_the_smoke_study_judges_what_it_declares(verdicts) -> None:
    assert list(verdicts) == ["C4", "C5", "C2", "C1"]  # its claims: list, in order
    for v in verdicts.values():
        assert set(v) == {"id", "text", "verdict", "rule", "evidence", "numbers"}
        assert v["verdict"] in VERDICTS and v["verdict"] != "not measured by this study"


def test_c4_is_never_supported_from_a_bound_or_a_wide_interval(verdicts) -> None:
    c4 = verdicts["C4"]
    cells = c4["numbers"]["cells"]
    assert {c["hidden"] for c in cells} == {4, 8, 64}
    for cell in cells:
        assert {"n_a", "n_b", "estimate", "lo", "hi", "kind", "classification"} <= set(cell)
        assert cell["n_a"] == cell["n_b"] == 8
        if cell["classification"] == "within":
            assert cell["kind"] == "finite" and cell["lo"] >= 2 and cell["hi"] <= 10
    big = next(c for c in cells if c["hidden"] == 64)
    assert big["kind"] == "unbounded"  # uniform01 is frozen there: not "> budget/x"
    if c4["verdict"] == "supported":
        assert all(c["classification"] == "within" for c in cells)
    assert c4["verdict"] != "supported"  # the unbounded cell contradicts "at most 10x"


def test_uniform01_is_frozen_at_hidden_64_and_trains_at_hidden_4(smoke) -> None:
    tables = results.load_tables("smoke", urls.default_storage_url(smoke[0]))
    trials = tables.trials
    uni = trials[trials["init"] == "uniform01"]
    assert set(uni.loc[uni["hidden"] == 64, "outcome"]) == {"frozen"}
    assert (uni.loc[uni["hidden"] == 64, "recurrent_grad_norm"] == 0).all()
    assert (uni.loc[uni["hidden"] == 4, "outcome"] == "converged").mean() >= 0.5
    xavier = trials[(trials["init"] == "xavier") & (trials["hidden"] == 64)]
    assert (xavier["outcome"] == "converged").all()


def test_c1_quotes_the_mean_field_prediction_beside_the_measurement(verdicts) -> None:
    numbers = verdicts["C1"]["numbers"]
    measured, predicted = numbers["measured_variance"], numbers["predicted_variance"]
    assert 0 < predicted < 1 and 0 < measured < 1
    assert abs(measured - predicted) < 0.5 * predicted  # theory and measurement agree
    assert verdicts["C1"]["verdict"] != "supported"  # a tanh RNN's variance is not ~1


def test_the_run_prints_the_verdicts_and_where_they_are(smoke) -> None:
    out = smoke[1].stdout
    assert "Claim verdicts" in out
    assert "verdicts.json" in out
    assert "48 trained" in out


@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_the_parent_mlflow_run_carries_the_verdicts(smoke, verdicts) -> None:
    from mlflow.tracking import MlflowClient

    from pipeline.tracking import KIND_TAG

    client = MlflowClient(f"sqlite:///{smoke[0] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    assert experiment is not None
    (parent,) = client.search_runs(
        [experiment.experiment_id], f"tags.`{KIND_TAG}` = 'study'", max_results=5
    )
    tags = parent.data.tags
    for claim_id, verdict in verdicts.items():
        assert tags[f"initstudy.verdict.{claim_id}"] == verdict["verdict"]
    names = [f.path for f in client.list_artifacts(parent.info.run_id, "report")]
    assert "report/verdicts.json" in names

"""A trial that converges and then diverges gets the same outcome everywhere.

With ``stop_on_converge: false`` a trial trains on after it reached the target and may
diverge later. By the outcome rule (``TrialResult.outcome``: converged > diverged > frozen
> stalled > censored) it is "converged", and every place that shows an outcome must say so:
the Optuna trial's user attribute, the MLflow child run's tag, the ``outcome`` column of the
results tables, and the statistics (an event at its converged epoch, never censored).

The spec is contrived to make that happen fast and every time: a loose target (1.0, above
the adding task's baseline of about 0.17, so every trial converges at epoch 1), a high Adam
learning rate and a divergence factor just above 1 (so an epoch that leaves the loss above
1.05 x the baseline without improving it counts as divergence). On this code, 6 of the 8
trials converge at epoch 1 and diverge at epoch 2 to 4; the other 2 only converge.
"""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from models.spec import TrialResult
from pipeline import results
from pipeline import storage as st
from pipeline.analysis import stats
from pipeline.driver import Driver, RunOptions
from pipeline.execution import InProcessExecutor
from pipeline.progress import Reporter
from pipeline.studyspec import parse_study_spec

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

STUDY = "agree"
SPEC = f"""
name: {STUDY}
sampler: grid
trial:
  task: adding
  seq_len: 5
  hidden: 8
  optimizer: adam
  lr: 0.15
  batch_size: 32
  batches_per_epoch: 20
  max_epochs: 8
  target_loss: 1.0
  patience: 1
  divergence_factor: 1.05
  val_size: 128
  stop_on_converge: false
space:
  init: [xavier, orthogonal]
  seed: [0, 1, 2, 3]
"""
N_TRIALS = 8
OUTCOME_TAG = "initstudy.outcome"
"""The MLflow child run's outcome tag (the documented name, spelled out: an outside reader)."""
KEY_TAG = "initstudy.trial_key"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The study run by the real driver into a real Optuna SQLite and MLflow SQLite store,
    one trial per pack, on the in-process executor: where the outcome is written is the
    driver's and the stores' business, not Ray's (a Ray run gives these trials the same
    results; tests/test_pipeline.py covers the run through Ray)."""
    run = tmp_path_factory.mktemp("agree") / "run"
    spec = parse_study_spec(yaml.safe_load(SPEC), "agree.yaml")
    options = RunOptions(run_dir=run, pack_size=1)
    outcome = Driver(spec, SPEC, options, Reporter(enabled=False), InProcessExecutor).run()
    assert (outcome.trained, outcome.logged, outcome.failed) == (N_TRIALS, N_TRIALS, [])
    return run


def optuna_trials(run: Path) -> dict[str, optuna.trial.FrozenTrial]:
    """The study's complete Optuna trials by identity key (read with Optuna itself)."""
    study = optuna.load_study(study_name=STUDY, storage=f"sqlite:///{run / 'optuna.db'}")
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return {t.user_attrs[st.KEY]: t for t in complete}


def mlflow_outcomes(run: Path) -> dict[str, str]:
    """Each trial key's outcome tag on its MLflow child run (read with MLflow itself)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{run / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], "tags.`initstudy.kind` = 'trial'", max_results=100
    )
    assert {r.info.status for r in runs} == {"FINISHED"}
    keys = [r.data.tags[KEY_TAG] for r in runs]
    assert len(keys) == len(set(keys)) == N_TRIALS
    return {r.data.tags[KEY_TAG]: r.data.tags[OUTCOME_TAG] for r in runs}


def test_a_trial_that_converges_then_diverges_is_converged_everywhere(run_dir: Path) -> None:
    trials = optuna_trials(run_dir)
    assert len(trials) == N_TRIALS
    stored = {key: TrialResult.from_json(t.user_attrs[st.RESULT]) for key, t in trials.items()}

    # The scenario happened: trials that reached the target and diverged after it.
    both = {
        k
        for k, r in stored.items()
        if r.converged_epoch is not None
        and r.diverged_epoch is not None
        and r.converged_epoch < r.diverged_epoch
    }
    assert both, {k: (r.converged_epoch, r.diverged_epoch) for k, r in stored.items()}
    for key in both:
        result = stored[key]
        assert result.outcome == "converged"
        assert not result.spec.stop_on_converge
        assert len(result.history) == result.diverged_epoch  # it trained on past converging

    # Optuna: the outcome attribute, and the objective is the converged epoch.
    expected = {key: r.outcome for key, r in stored.items()}
    assert {k: t.user_attrs[st.OUTCOME] for k, t in trials.items()} == expected
    for key in both:
        assert trials[key].value == stored[key].converged_epoch

    # MLflow: the child run's outcome tag.
    assert mlflow_outcomes(run_dir) == expected

    # The results tables.
    tables = results.load_tables(STUDY, f"sqlite:///{run_dir / 'optuna.db'}")
    t = tables.trials.set_index("key")
    assert sorted(t.index) == sorted(trials)
    assert t["outcome"].to_dict() == expected
    for key in both:
        row = t.loc[key]
        assert row["outcome"] == "converged" and bool(row["converged"])
        assert not bool(row["censored"])
        assert bool(row["diverged"])  # the column records the later divergence
        assert row["converged_epoch"] == stored[key].converged_epoch
        assert row["diverged_epoch"] == stored[key].diverged_epoch
        assert row["value"] == stored[key].converged_epoch

    # The statistics: an event at its converged epoch, never censored at the budget.
    ordered = tables.trials.reset_index(drop=True)
    durations, events = stats.time_to_event(ordered)
    is_converged = (ordered["outcome"] == "converged").to_numpy()
    assert (events == is_converged).all()
    for i, key in enumerate(ordered["key"]):
        if key in both:
            assert events[i] and durations[i] == stored[key].converged_epoch

    summary = stats.group_summary(ordered, by=["init"]).set_index("init")
    for init, group in ordered.groupby("init"):
        share = float((group["outcome"] == "converged").mean())
        assert summary.loc[init, "n"] == len(group)
        assert summary.loc[init, "converged_rate"] == pytest.approx(share)
        assert summary.loc[init, "censored_rate"] == pytest.approx(1 - share)
        diverged = float((group["outcome"] == "diverged").mean())
        assert summary.loc[init, "diverged_rate"] == pytest.approx(diverged)
    assert (summary["converged_rate"] == 1.0).all()  # every trial here converged
    assert (summary["km_median"] == 1.0).all()  # all at epoch 1: a reached, finite median

    table = stats.speedup_table(ordered, "xavier", "orthogonal", by=["seq_len"], n_boot=200)
    assert len(table) == 1
    row = table.iloc[0]
    assert (row["n_a"], row["n_b"], row["n_pairs"]) == (4, 4, 4)
    by_seed = ordered.pivot(index="seed", columns="init", values="outcome")
    both_converged = int(((by_seed == "converged").all(axis=1)).sum())
    assert row["paired_n_both"] == both_converged == 4
    assert row["pairs_tied"] == 4  # every pair converged at epoch 1
    assert row["kind"] == "finite" and row["speedup"] == pytest.approx(1.0)
    assert not row["lower_bound"]
    assert pd.notna(row["paired_ratio_both"]) and row["paired_ratio_both"] == pytest.approx(1.0)

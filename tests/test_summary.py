"""The per-study summary (pipeline.analysis.summary), Optuna's parameter importances
(pipeline.results.param_importances) and the ``results`` command's summary lines: on
hand-made tables and on the session's smoke study (tests/conftest.py)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import Done
from factories import diagnostics, history, trial_result

from models.spec import TrialResult, TrialSpec
from pipeline import storage as st
from pipeline.analysis import summary as sm
from pipeline.analysis.tables import StudyTables, tables_from_results
from pipeline.results import MIN_IMPORTANCE_TRIALS, load_tables, param_importances

SPEC = """\
name: hand
sampler: random
n_trials: 12
trial: {task: adding, cell: rnn_tanh, hidden: 8, seq_len: 5, max_epochs: 6}
space:
  init: [xavier, uniform01]
  lr: {low: 0.0001, high: 0.1, log: true}
  seed: [0, 1]
"""


def result(init: str, lr: float, seed: int, converged: int | None) -> TrialResult:
    """A trial of SPEC: converged at ``converged`` (None: censored after 6 epochs)."""
    epochs = 6 if converged is None else converged
    loss = 0.3 if converged is None else 0.01
    return trial_result(
        TrialSpec(init=init, lr=lr, seed=seed, seq_len=5, hidden=8, max_epochs=6),
        history([loss] * epochs),
        diagnostics=diagnostics(5),
        converged=converged,
    )


def hand_made() -> StudyTables:
    """12 trials: xavier converges (fastest: trials 4 and 7, both at epoch 2, so trial 4 is
    the best), uniform01 never does; 12 distinct learning rates."""
    lrs = [10 ** (-4 + 3 * i / 11) for i in range(12)]
    epochs = [5, 4, 3, 6, 2, 4, 5, 2, 3, 5, 4, 6]
    rows = []
    for i, lr in enumerate(lrs):
        init = "xavier" if i % 3 != 0 or i == 6 else "uniform01"
        converged = epochs[i] if init == "xavier" else None
        rows.append((i, f"k{i}", result(init, lr, i % 2, converged)))
    return tables_from_results("hand", rows, spec_text=SPEC)


@pytest.fixture(scope="module")
def hand() -> StudyTables:
    return hand_made()


def test_the_best_trial_is_the_lowest_objective_and_the_first_on_a_tie(hand) -> None:
    summary = sm.study_summary(hand)
    assert summary.metric == "epochs_to_converge" and summary.n_trials == 12
    best = summary.best
    assert best is not None
    assert (best.number, best.value, best.outcome) == (4, 2.0, "converged")
    assert best.params["init"] == "xavier" and best.params["seed"] == 0
    assert math.isclose(best.params["lr"], 10 ** (-4 + 12 / 11))
    line = summary.best_line()
    assert line.startswith("best trial: #4 (init=xavier, lr=") and line.endswith(
        ": epochs_to_converge 2, converged"
    )


def test_each_searched_parameter_gets_a_table_and_lr_is_binned(hand) -> None:
    summary = sm.study_summary(hand)
    assert [p.name for p in summary.params] == ["init", "lr", "seed"]
    by = {e.param.name: e for e in summary.effects}
    init = by["init"].table.set_index("init")
    assert list(init.index) == ["xavier", "uniform01"]  # the spec's order
    assert init.loc["uniform01", "n"] == 3 and init.loc["uniform01", "converged"] == 0.0
    assert init.loc["uniform01", "median"] == 7.0  # max_epochs + 1: never converged
    assert init.loc["xavier", "n"] == 9 and init.loc["xavier", "best"] == 2.0
    assert init.loc["xavier", "converged"] == 1.0
    lr = by["lr"]
    assert lr.binned and not by["init"].binned and not by["seed"].binned
    assert 1 < len(lr.table) <= sm.N_BINS and lr.table["n"].sum() == 12
    assert lr.table["lr"].iloc[0].startswith("[0.0001, ")  # log-spaced from the lowest
    assert lr.table["lr"].iloc[-1].endswith(", 0.1]")
    assert len(lr.points) == 12 and set(lr.points["level"]) == set(lr.table["lr"])
    headings = [h for h, _ in sm.display_tables(summary)]
    assert headings == [
        "epochs_to_converge by init",
        "epochs_to_converge by lr (binned)",
        "epochs_to_converge by seed",
    ]


def test_a_searched_parameter_that_is_no_column_is_skipped(hand) -> None:
    tables = replace(hand, trials=hand.trials.drop(columns=["lr"]))
    summary = sm.study_summary(tables)
    assert [p.name for p in summary.params] == ["init", "seed"]
    assert summary.skipped == ["lr (not a column of the trials table)"]
    imp = param_importances(tables)
    assert "lr (not a column of the trials table)" in imp.left_out


def test_without_a_spec_the_varying_fields_are_the_searched_ones(hand) -> None:
    summary = sm.study_summary(replace(hand, spec_text=""))
    assert [p.name for p in summary.params] == ["init", "lr", "seed"]  # SEARCHABLE order


def test_best_val_loss_objective_counts_a_diverged_trial_as_worst(hand) -> None:
    trials = hand.trials.copy()
    trials.loc[0, "best_val_loss"] = 0.0001  # the lowest loss, but it diverged
    trials.loc[0, "diverged"] = True
    objective = sm.objective_of(trials, "best_val_loss")
    assert objective.iloc[0] == math.inf
    best = sm.best_trial(trials, [], "best_val_loss")
    assert best is not None and best.number == 1  # the first of the lowest (0.01) losses


def test_importances_sum_to_one_with_enough_trials(hand) -> None:
    imp = param_importances(hand)
    assert imp.enough and imp.evaluator in ("fANOVA", "PED-ANOVA")
    assert set(imp.values) == {"init", "lr"}  # the seed is a replicate, never ranked
    assert math.isclose(sum(imp.values.values()), 1.0, abs_tol=1e-6)
    assert all(v >= 0 for v in imp.values.values())
    assert max(imp.values, key=imp.values.__getitem__) == "init"  # it decides convergence


def test_without_scikit_learn_the_importances_are_ped_anova(
    hand, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)  # `import sklearn` raises ImportError
    imp = param_importances(hand)
    assert imp.enough and imp.evaluator == "PED-ANOVA"
    assert set(imp.values) <= {"init", "lr"}
    assert math.isclose(sum(imp.values.values()), 1.0, abs_tol=1e-6)


def test_importances_say_not_enough_trials_rather_than_fail(hand) -> None:
    few = replace(hand, trials=hand.trials.iloc[: MIN_IMPORTANCE_TRIALS - 1])
    imp = param_importances(few)
    assert not imp.enough and imp.note.startswith("not enough trials")
    xavier = hand.trials[hand.trials["init"] == "xavier"].reset_index(drop=True)
    same = xavier.assign(lr=0.01, seed=0)  # every searched parameter takes one value
    imp = param_importances(replace(hand, trials=same))
    assert not imp.enough and "no searched parameter takes two values" in imp.note
    assert set(imp.left_out) == {"init (one value)", "lr (one value)"}


# --------------------------------------------------------------------------- smoke study


@pytest.fixture(scope="module")
def smoke(smoke_study) -> StudyTables:
    return load_tables(study="smoke", storage_url=smoke_study.storage_url)


@pytest.mark.slow
def test_the_smoke_study_best_trial_is_optunas(smoke, smoke_study) -> None:
    summary = sm.study_summary(smoke)
    optuna_study = st.load_existing_study(st.make_storage(smoke_study.storage_url), "smoke")
    best = optuna_study.best_trial
    assert summary.best is not None
    assert summary.best.number == best.number and summary.best.value == best.value
    # the searched parameters as Optuna has them, and the seed (an attribute, not a param)
    assert summary.best.params == {**best.params, "seed": best.user_attrs[st.SEED]}
    assert [p.name for p in summary.params] == ["init", "seq_len", "seed"]
    imp = param_importances(smoke)
    assert set(imp.values) == {"init"} and imp.left_out == ["seq_len (one value)"]


@pytest.mark.slow
def test_results_prints_the_best_trial_and_the_summary(
    smoke, smoke_run: Path, cli_here: Callable[..., Done]
) -> None:
    done = cli_here("results", "smoke", "--run-dir", str(smoke_run))
    assert done.returncode == 0, done.stderr
    summary = sm.study_summary(smoke)
    assert summary.best is not None
    assert f"best trial: #{summary.best.number} (init=" in done.stdout
    assert summary.best_line() in done.stdout
    assert "epochs_to_converge by init" in done.stdout
    imp = param_importances(smoke)
    first = next(iter(imp.values))
    assert f"parameter importance ({imp.evaluator}): {first} " in done.stdout
    csv = cli_here("results", "smoke", "--run-dir", str(smoke_run), "--format", "csv")
    assert csv.returncode == 0 and "best trial" not in csv.stdout  # CSV stays CSV

"""Sampled studies left to chance (issue 15): ``sampler_options`` in the spec
(pipeline.samplerspec), the warnings of a spec and of its results (pipeline.analysis.advice),
the searched parameters as columns of every table, and TPE's random start honoured by the
driver (fast: tiny trials, trained in this process)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from factories import diagnostics, history, numbered, trial_result
from optuna.trial import FrozenTrial, TrialState

from models.fields import SEARCHABLE
from models.spec import TrialResult, TrialSpec
from pipeline import results, urls
from pipeline import storage as st
from pipeline.analysis import advice
from pipeline.execution import InProcessExecutor
from pipeline.samplerspec import TPE_STARTUP
from pipeline.studyspec import SpecError, parse_study_spec

TINY = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8}
TINY |= {"batches_per_epoch": 2, "max_epochs": 2, "val_size": 16}


def sampled(sampler: str = "tpe", **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "tpe8",
        "sampler": sampler,
        "n_trials": 8,
        "sampler_seed": 3,
        "trial": {"task": "adding", "hidden": 4, "max_epochs": 3},
        "space": {
            "init": ["xavier", "he_normal"],
            "lr": {"low": 1.0e-4, "high": 0.1, "log": True},
        },
    }
    doc.update(extra)
    return {k: v for k, v in doc.items() if v is not None}


def refused(doc: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_study_spec(doc, "x.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


# -- sampler_options in the spec -----------------------------------------------------------


def test_a_spec_without_sampler_options_keeps_its_hash() -> None:
    """Hashes computed before sampler_options existed: stored studies must still resume."""
    assert parse_study_spec(sampled()).spec_hash() == "67f2af8becec0bd1"
    assert parse_study_spec(sampled("random", sampler_seed=None)).spec_hash() == (
        "b15f79f177d5dded"
    )
    assert parse_study_spec(sampled("qmc")).spec_hash() == "e26a5d2ae7164c25"
    # an empty mapping (or null) is no options at all
    assert parse_study_spec(sampled(sampler_options={})).spec_hash() == "67f2af8becec0bd1"
    given = parse_study_spec(sampled(sampler_options={"n_startup_trials": 2}))
    assert given.spec_hash() != "67f2af8becec0bd1"
    other = parse_study_spec(sampled(sampler_options={"n_startup_trials": 3}))
    assert other.spec_hash() != given.spec_hash()


def test_make_sampler_passes_the_options_to_optuna() -> None:
    options = {"n_startup_trials": 2, "multivariate": True, "constant_liar": False}
    tpe = parse_study_spec(sampled(sampler_options=options)).make_sampler()
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert (tpe._n_startup_trials, tpe._multivariate, tpe._constant_liar) == (2, True, False)
    default = parse_study_spec(sampled()).make_sampler()
    assert isinstance(default, optuna.samplers.TPESampler)
    # Optuna's random start, but parallel asks differ (constant liar) and no joint model
    assert (default._n_startup_trials, default._multivariate, default._constant_liar) == (
        TPE_STARTUP,
        False,
        True,
    )
    qmc = parse_study_spec(sampled("qmc", sampler_options={"scramble": False})).make_sampler()
    assert isinstance(qmc, optuna.samplers.QMCSampler) and qmc._scramble is False
    assert parse_study_spec(sampled("qmc")).make_sampler()._scramble is True


def test_the_options_seed_is_the_sampler_seed() -> None:
    spec = parse_study_spec(sampled("random", sampler_seed=None, sampler_options={"seed": 7}))
    assert spec.sampler_seed == 7
    same = parse_study_spec(sampled("random", sampler_seed=7))
    draws = []
    for s in (spec, same):
        study = optuna.create_study(sampler=s.make_sampler())
        draws.append([study.ask(s.distributions()).params for _ in range(3)])
    assert draws[0] == draws[1]
    assert parse_study_spec(sampled(sampler_seed=3, sampler_options={"seed": 3})).sampler_seed == 3
    message = refused(sampled(sampler_seed=3, sampler_options={"seed": 4}))
    assert message.startswith("x.yaml: sampler_options.seed: ")
    assert "sampler_seed is 3" in message and "4" in message


@pytest.mark.parametrize(
    ("doc", "where", "words"),
    [
        (
            sampled(sampler_options={"startup": 2}),
            "sampler_options.startup",
            "unknown sampler option; allowed: seed, n_startup_trials, multivariate,"
            " constant_liar, scramble",
        ),
        (
            sampled("random", sampler_options={"n_startup_trials": 2}),
            "sampler_options.n_startup_trials",
            "only sampler tpe takes n_startup_trials (sampler is 'random')",
        ),
        (
            sampled("tpe", sampler_options={"scramble": True}),
            "sampler_options.scramble",
            "only sampler qmc takes scramble (sampler is 'tpe')",
        ),
        (
            {"name": "g", "space": {"init": ["xavier"]}, "sampler_options": {"seed": 1}},
            "sampler_options.seed",
            "the grid sampler takes no sampler_options (its seed is sampler_seed)",
        ),
        (
            sampled(sampler_options={"n_startup_trials": -1}),
            "sampler_options.n_startup_trials",
            "must be >= 0 (got -1)",
        ),
        (
            sampled(sampler_options={"multivariate": "yes"}),
            "sampler_options.multivariate",
            "must be true or false",
        ),
    ],
)
def test_a_bad_sampler_option_is_refused_in_one_line(
    doc: dict[str, Any], where: str, words: str
) -> None:
    message = refused(doc)
    assert message.startswith(f"x.yaml: {where}: ")
    assert words in message


def test_an_n_trials_within_tpes_random_start_warns() -> None:
    assert parse_study_spec(sampled()).warnings() == [
        "tpe with n_trials 8 <= n_startup_trials 10 is random search; raise n_trials or set"
        " sampler_options.n_startup_trials"
    ]
    lowered = parse_study_spec(sampled(sampler_options={"n_startup_trials": 2}))
    assert lowered.warnings() == [] and lowered.startup_trials == 2
    assert parse_study_spec(sampled(n_trials=11)).warnings() == []
    assert parse_study_spec(sampled("random")).warnings() == []
    assert parse_study_spec(sampled("random")).startup_trials is None


# -- the searched parameters are columns of every table ------------------------------------


def result(
    converged: int | None = None,
    diverged: int | None = None,
    epochs: int = 3,
    **spec: Any,
) -> TrialResult:
    s = TrialSpec(**{"max_epochs": 3, "seq_len": 3, **spec})
    return trial_result(
        s,
        history(
            [math.inf if diverged == e else 0.5 for e in range(1, epochs + 1)],
            train_losses=[1.0] * epochs,
            hidden_var=0.1,
        ),
        diagnostics=diagnostics(
            hidden_var=[0.1, 0.2], hidden_sat=[0.0, 0.1], grad_norm=[2.0, 1.0], initial_loss=0.9
        ),
        converged=converged,
        diverged=diverged,
        baseline=1.0,
    )


def test_every_searchable_field_is_a_column_of_every_table() -> None:
    for schema in (results.TRIAL_COLUMNS, results.EPOCH_COLUMNS, results.STEP_COLUMNS):
        assert set(SEARCHABLE) <= set(schema)
        # typed as in the trials table
        assert {c: schema[c] for c in SEARCHABLE} == {
            c: results.TRIAL_COLUMNS[c] for c in SEARCHABLE
        }


def test_a_searched_lr_and_clip_reach_the_epochs_table() -> None:
    text = yaml.safe_dump(sampled(space={"lr": {"low": 1.0e-4, "high": 0.1}, "clip": [1.0]}))
    rows = [
        (0, "k0", result(2, lr=0.003, clip=1.0, optimizer="sgd")),
        (1, "k1", result(None, lr=0.02, clip=None)),
    ]
    tables = results.tables_from_results("s", rows, spec_text=text)
    assert tables.searched == ["lr", "clip"]
    for frame in (tables.trials, tables.epochs, tables.steps):
        assert str(frame["lr"].dtype) == "float64" and str(frame["clip"].dtype) == "float64"
        assert str(frame["optimizer"].dtype) == "string"
    epochs = tables.epochs
    assert epochs.groupby("trial_number")["lr"].first().tolist() == [0.003, 0.02]
    assert epochs.loc[epochs["trial_number"] == 0, "optimizer"].eq("sgd").all()
    assert epochs.loc[epochs["trial_number"] == 1, "clip"].isna().all()
    got = results.query(tables, "SELECT lr, count(*) AS n FROM epochs GROUP BY lr ORDER BY lr")
    assert got["lr"].tolist() == [0.003, 0.02] and got["n"].tolist() == [3, 3]
    assert results.tables_from_results("s", []).searched == []


# -- warnings from the results -------------------------------------------------------------


def tables_of(doc: dict[str, Any], rows: list[TrialResult]) -> results.StudyTables:
    return results.tables_from_results("s", numbered(rows, key="k"), spec_text=yaml.safe_dump(doc))


def test_a_listed_choice_without_a_complete_trial_warns() -> None:
    doc = sampled(space={"init": ["xavier", "he_normal", "orthogonal"], "lr": 0.01})
    rows = [result(2, init="xavier"), result(3, init="orthogonal")]
    assert advice.unmeasured_choices(tables_of(doc, rows)) == [
        "space.init: choice he_normal got no complete trial (of 2); nothing is measured for"
        " it: raise n_trials, or use the grid sampler to run every choice"
    ]
    rows.append(result(1, init="he_normal"))
    assert advice.study_advice(tables_of(doc, rows)) == []


def test_unmeasured_choices_read_none_and_numbers_by_value() -> None:
    doc = {
        "name": "g",
        "space": {"init_recurrent": [None, "identity"], "lr": [0.001, 0.01], "seed": [0, 1]},
    }
    rows = [result(2, lr=0.001, seed=0), result(2, lr=0.01 + 1e-18, seed=1)]
    (line,) = advice.unmeasured_choices(tables_of(doc, rows))
    assert line.startswith("space.init_recurrent: choice identity got no complete trial")
    assert "rerun `initstudy run`" in line  # a grid: the study is unfinished
    assert advice.unmeasured_choices(tables_of(doc, [])) == []


def test_a_flat_objective_warns_and_says_what_to_change() -> None:
    doc = sampled(space={"init": ["xavier"], "lr": {"low": 1.0e-4, "high": 0.1}})
    never = [result(None, init="xavier", lr=1e-4), result(None, init="xavier", lr=1e-3)]
    (line,) = advice.flat_objective(tables_of(doc, never))
    assert line.startswith("no trial converged (")
    assert "of 2): the objective is flat (every trial scores 4)" in line
    assert "raise trial.max_epochs (now 3), raise space.lr" in line
    blown = [result(None, 1, 1, lr=0.1), result(None, 2, 2, lr=0.05)]
    (line,) = advice.flat_objective(tables_of(doc, blown))
    assert "2 diverged of 2" in line and "lower space.lr" in line
    assert advice.flat_objective(tables_of(doc, [*never, result(2)])) == []
    other = {**doc, "objective": {"metric": "best_val_loss"}}
    assert advice.flat_objective(tables_of(other, never)) == []
    assert advice.flat_objective(tables_of(doc, [])) == []


# -- TPE's random start on the driver ------------------------------------------------------


@pytest.mark.slow  # it starts a study (in this process, on the in-process executor)
def test_the_driver_asks_no_modelled_trial_before_tpes_random_start_is_done(
    tmp_path: Path, cli_here: Callable[..., Any], in_process_executor: list[InProcessExecutor]
) -> None:
    doc = {
        "name": "tpe-start",
        "sampler": "tpe",
        "n_trials": 5,
        "sampler_options": {"n_startup_trials": 2},
        "trial": TINY,
        "space": {"lr": {"low": 1.0e-3, "high": 0.1, "log": True}, "seed": [0, 1]},
    }
    assert parse_study_spec(doc, "tpe.yaml").warnings() == []
    spec_file = tmp_path / "tpe.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "run"
    done = cli_here("run", str(spec_file), "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert len(in_process_executor) == 1  # trained here, on two slots
    storage = st.make_storage(urls.default_storage_url(run_dir))
    trials = sorted(st.load_existing_study(storage, "tpe-start").get_trials(), key=_number)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    for t in trials[2:]:  # every modelled trial was asked once the 2 random ones were done
        assert t.datetime_start is not None
        done_before = [
            u for u in trials if u.datetime_complete and u.datetime_complete <= t.datetime_start
        ]
        assert len(done_before) >= 2, f"trial {t.number} was asked before the random start"
    assert sum(len(pack) for pack in in_process_executor[0].submitted) == 5


def _number(t: FrozenTrial) -> int:
    return t.number

"""models/fields.py: one table of TrialSpec's fields, which a study spec and
``initstudy trial`` both check values by.

For every field, a set of values made from its rule (valid ones, each bound and just
beyond it, wrong types, None, NaN and infinities for numbers, unknown registry names)
goes to a study spec (``parse_study_spec`` with the value under ``trial:``) and to the
real ``trial`` command (in process, tiny settings: an accepted value trains for a fraction
of a second); each must accept it if and only if the other does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, get_type_hints

import pytest
from typer.testing import CliRunner

from models import CELLS, INIT_SCHEMES, OPTIMIZERS, TASKS, TrialSpec
from models.fields import COLUMNS, FACTORS, FIELDS, SEARCHABLE, SETTINGS, Field, size_problem
from pipeline import cli, studyspec
from pipeline.cli.trial import option_name
from pipeline.studyspec import SpecError, parse_study_spec

TINY: dict[str, Any] = {
    "hidden": 2,
    "seq_len": 3,
    "batches_per_epoch": 1,
    "max_epochs": 1,
    "val_size": 8,
}
"""Settings under which an accepted trial trains for a fraction of a second."""
CONTEXT: dict[str, dict[str, Any]] = {"seq_len": {"task": "copy"}}
"""Other settings while one field is tested: the adding task needs seq_len >= 2 (its own
rule, not the field's), so seq_len's bound is tested on the copy task."""
REGISTRIES = {
    "TASKS": TASKS,
    "CELLS": CELLS,
    "INIT_SCHEMES": INIT_SCHEMES,
    "OPTIMIZERS": OPTIMIZERS,
}
CHEAP_AT_CAP = {"batch_size", "val_size", "patience"}
"""Fields whose largest value trains quickly under TINY (patience: refused, > max_epochs)."""
OTHER_NAME = {"task": "copy"}
"""A second registered name to try (charlm would build its corpus in every trial)."""


def values(field: Field) -> list[Any]:
    """Values to try for ``field``, from its rule."""
    out: list[Any] = [field.default, None, True, [1]]
    if field.kind in (int, float):
        out += ["big", math.nan, math.inf, -math.inf]
        out += [2.5, 2.0] if field.kind is int else [2]
        step = 1 if field.kind is int else 1e-6
        if field.low is not None:
            out += [field.low, field.low - step, field.low + step]
        if field.high is not None:
            out += [field.high, field.high + step]
        if field.cap is not None:  # the cap itself only where training at it is quick
            out += [field.cap, field.cap + 1] if field.name in CHEAP_AT_CAP else [field.cap + 1]
    elif field.kind is str:
        out += [3, "", "bogus"]
        if field.registry is not None:
            others = [n for n in sorted(REGISTRIES[field.registry]) if n != field.default]
            out.append(OTHER_NAME.get(field.name, others[0]))
    else:
        out += [False, "maybe", 1]
    return list({repr(v): v for v in out}.values())


CASES = [(name, value) for name, field in FIELDS.items() for value in values(field)]


def spec_problem(name: str, value: Any) -> str | None:
    """Why a study spec with ``value`` under ``trial:`` is refused; None: accepted."""
    trial = {**TINY, **CONTEXT.get(name, {}), name: value}
    try:
        parse_study_spec({"name": "fields", "trial": trial}, "spec")
    except SpecError as exc:
        return str(exc).removeprefix(f"spec: trial.{name}: ")
    return None


def argv(name: str, value: Any) -> list[str]:
    """The ``trial`` command line for ``value``: None is an option not given when the
    field may be None, and the text ``null`` when it may not."""
    settings = {**TINY, **CONTEXT.get(name, {})}
    args = [f"{option_name(k)}={v}" for k, v in settings.items() if k != name]
    if value is None and FIELDS[name].optional:
        return ["trial", *args]
    if isinstance(value, bool) and FIELDS[name].kind is bool:
        value = "true" if value else "false"
    return ["trial", *args, f"{option_name(name)}={'null' if value is None else value}"]


@pytest.mark.parametrize(("name", "value"), CASES, ids=[f"{n}={v!r}" for n, v in CASES])
def test_a_spec_and_the_trial_command_accept_the_same_values(name: str, value: Any) -> None:
    refused = spec_problem(name, value)
    result = CliRunner().invoke(cli.app, argv(name, value))
    assert result.exit_code in (0, 2), (result.output, result.exception)
    assert (result.exit_code == 2) == (refused is not None), (refused, result.output)
    prefix = f"error: {option_name(name)}: "
    if result.exit_code == 2 and result.stderr.startswith(prefix) and typed(name, value):
        assert result.stderr.removeprefix(prefix).strip() == refused  # check_spec's words


def typed(name: str, value: Any) -> bool:
    """Whether ``value`` is of the field's type, so the command line gives the same value
    (its text is all the command sees: ``3`` for a name is the name ``'3'`` there)."""
    kind = FIELDS[name].kind
    return type(value) is kind or (kind is float and type(value) is int)


def test_the_table_names_trialspec_fields_with_their_types_and_defaults() -> None:
    hints = get_type_hints(TrialSpec)
    spec_fields = dataclasses.fields(TrialSpec)
    assert list(FIELDS) == [f.name for f in spec_fields]
    for f in spec_fields:
        field = FIELDS[f.name]
        assert field.name == f.name
        assert hints[f.name] == (field.kind | None if field.optional else field.kind), f.name
        assert field.default == f.default, f.name
        assert field.problem(f.default, REGISTRIES.get(str(field.registry), ())) is None


def test_the_derived_lists_follow_the_table() -> None:
    assert studyspec.SEARCHABLE == SEARCHABLE
    assert set(SEARCHABLE) == {n for n, f in FIELDS.items() if f.searchable}
    assert "seed" in SEARCHABLE and "batch_size" not in SEARCHABLE
    assert set(FACTORS) | set(SETTINGS) <= set(COLUMNS) | {"stop_on_converge"}
    assert {"init", "scale", "hidden"} <= set(FACTORS)
    assert COLUMNS["hidden"] == "int64" and COLUMNS["task"] == "string"


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("hidden", 0, "must be >= 1 (got 0)"),
        ("lr", 0.0, "must be > 0 (got 0.0)"),
        ("seed", -1, "must be in [0, 2**32 - 1] (got -1)"),
        ("divergence_factor", 1.0, "must be > 1 (got 1.0)"),
        ("scale", math.inf, "must be finite (got inf)"),
        ("clip", None, None),
        ("hidden", None, "must be an integer (got None)"),
        ("hidden", True, "must be an integer (got True)"),
        ("scale", 2, None),
    ],
)
def test_problem_states_the_rule(name: str, value: Any, words: str | None) -> None:
    assert FIELDS[name].problem(value) == words


def test_problem_checks_registry_names_against_the_given_registry() -> None:
    assert FIELDS["cell"].problem("lstm", CELLS) is None
    assert FIELDS["cell"].problem("lstm", ()) == "unknown name 'lstm'; known: "
    assert FIELDS["cell"].problem("gpt", CELLS) == (
        "unknown name 'gpt'; known: gru, lstm, rnn_linear, rnn_relu, rnn_tanh"
    )


@pytest.mark.parametrize(
    ("values", "blamed", "words"),
    [
        ({}, None, None),
        ({"batch_size": 4096, "seq_len": 1024, "hidden": 16}, None, None),
        ({"batch_size": 4096, "seq_len": 1025, "hidden": 1}, "batch_size", "x seq_len must be"),
        ({"batch_size": 512, "seq_len": 1000, "hidden": 4096}, "batch_size", "x hidden"),
        ({"val_size": 65536, "seq_len": 257}, "val_size", "val_size x seq_len must be <="),
    ],
)
def test_size_problem_caps_one_trials_sizes_together(
    values: dict[str, int], blamed: str | None, words: str | None
) -> None:
    found = size_problem(values)
    if blamed is None:
        assert found is None
    else:
        assert found is not None and found[0] == blamed and words in found[1]


def test_every_size_and_budget_has_a_cap() -> None:
    """Every int field is bounded above: a seed by its interval, a size or budget by a cap."""
    for name, field in FIELDS.items():
        if field.kind is int:
            assert field.high is not None or field.cap is not None, name
    assert FIELDS["hidden"].problem(10**6) == (
        "must be <= 4096 (got 1000000), the most one trial may take"
    )
    assert FIELDS["hidden"].bounds == ">= 1"  # the cap is stated only when exceeded

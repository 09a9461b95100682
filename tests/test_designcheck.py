"""validate and run refuse a design that cannot judge the claims it lists
(``pipeline.analysis.design``, ``pipeline.frontend.design_check``), before anything trains;
--yes makes it a warning. And a power estimate per declared comparison."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import Done

from pipeline.analysis.design import SAMPLED_MARGIN, design_problems
from pipeline.analysis.judging import MIN_N
from pipeline.analysis.power import comparison_power
from pipeline.claimspec import Comparison
from pipeline.frontend import design_check, load_spec, pilot_power
from pipeline.specerrors import SpecError

# The study of issue 26: TPE over two schemes and two hidden sizes, 16 trials.
USER = """\
name: user_gru
sampler: tpe
n_trials: 16
claims:
  - {faster: orthogonal, than: xavier, by: [1.5, .inf]}
trial: {task: charlm, cell: gru, max_epochs: 5}
space:
  init: [orthogonal, xavier]
  hidden: [16, 64]
  lr: {low: 1.0e-3, high: 3.0e-2, log: true}
  scale: {low: 0.5, high: 2.0}
  seed: [0, 1, 2, 3]
"""

GRID = """\
name: grid_ok
claims:
  - C4
  - {faster: xavier, than: uniform01, by: [2, 10]}
trial: {task: adding, seq_len: 5, max_epochs: 3}
space:
  init: [xavier, uniform01]
  hidden: [4, 8]
  seed: [0, 1, 2, 3, 4]
"""


def _problems(text: str, **changes: Any) -> list[str]:
    import yaml

    data = yaml.safe_load(text)
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    spec, _ = load_spec(data)
    return [p.line for p in design_problems(spec)]


# --------------------------------------------------------------------------- the rules


def test_the_users_sampled_study_cannot_judge_its_claim_and_the_fix_is_named() -> None:
    (line,) = _problems(USER)
    assert line.startswith("claim U1 (orthogonal converges at least 1.5x faster than xavier)")
    # 16 trials / 2 schemes / 2 hidden sizes = 4 expected, below 2 x 5 = 10
    assert "is expected to give each scheme about 4 trials per hidden value" in line
    assert f"{SAMPLED_MARGIN * MIN_N}" in line
    # TPE's 10 random draws give each scheme 2.5 per hidden size; later ones may give none
    assert "TPE draws only its first 10 trials at random" in line and "about 2.5" in line
    assert "give n_trials >= 40 and sampler_options.n_startup_trials >= 20" in line
    assert "or give init and hidden as grid axes (sampler: grid) with >= 5 seeds" in line


def test_enough_sampled_trials_or_a_grid_can_judge_it() -> None:
    start = {"n_startup_trials": 20}
    assert _problems(USER, n_trials=40, sampler_options=start) == []
    (few,) = _problems(USER, n_trials=39, sampler_options=start)
    assert "n_trials >= 40" in few and "n_startup_trials" not in few
    (early,) = _problems(USER, n_trials=40)  # TPE's default: 10 random draws
    assert "give sampler_options.n_startup_trials >= 20, or" in early
    # a random sampler: every draw is random, 40 trials suffice
    assert _problems(USER, n_trials=40, sampler="random") == []
    # one hidden size: no regime to fill, 20 trials give each scheme 10
    space = _space(USER, "hidden")
    assert _problems(USER, n_trials=20, sampler="random", trial__hidden=64, space=space) == []
    assert _problems(GRID) == []


def _space(text: str, drop: str) -> dict[str, Any]:
    import yaml

    space = dict(yaml.safe_load(text)["space"])
    del space[drop]
    return space


def test_a_grid_needs_the_speedup_rules_minimum_per_cell() -> None:
    few = {"init": ["xavier", "uniform01"], "hidden": [4, 8], "seed": [0, 1, 2]}
    (line,) = _problems(GRID, space=few)
    assert "3 trials per hidden value, fewer than 5" in line and "add seeds" in line
    # gain 1 only: a scale axis of 0.5/1/2 leaves 5 seeds at gain 1 per cell, enough
    assert _problems(GRID, space={**_space(GRID, "hidden"), "scale": [0.5, 1.0, 2.0]}) == []
    # a cell at a scale other than 1: the Kaplan-Meier rule has no cell; the AFT model
    # takes the scale as a covariate and has 5 seeds x 2 scales per scheme
    assert _problems(GRID, space={**_space(GRID, "hidden"), "scale": [0.5, 2.0]}) == []


def test_a_grid_whose_cells_are_small_falls_back_to_the_model() -> None:
    # lr, a setting, splits the Kaplan-Meier cells: 3 seeds each, too few; the AFT model
    # takes lr as a covariate and has 2 lr x 3 seeds = 6 trials per scheme and hidden size
    space = {"init": ["xavier", "uniform01"], "hidden": [4, 8], "seed": [0, 1, 2]}
    assert _problems(GRID, space={**space, "lr": [0.001, 0.01]}) == []
    claims = [{"faster": "xavier", "than": "uniform01", "by": [2, 10], "where": {"lr": 0.01}}]
    (line,) = _problems(GRID, space={**space, "lr": [0.001, 0.01]}, claims=claims)
    assert "3 trials per hidden value" in line


def test_a_scheme_that_is_not_searched_or_not_offered() -> None:
    c4, u1 = _problems(GRID, space={"hidden": [4, 8], "seed": [0, 1, 2, 3, 4]})
    assert c4.startswith("claim C4") and u1.startswith("claim U2")
    assert "init is not searched: every trial uses xavier" in u1
    assert "search init over [xavier, uniform01]" in u1
    lines = _problems(GRID, space={**_space(GRID, "init"), "init": ["xavier", "orthogonal"]})
    assert len(lines) == 2  # C4 and U1
    assert lines[0].startswith("claim C4") and "space.init has no uniform01" in lines[0]


def test_a_where_that_keeps_nothing() -> None:
    claims = [{"faster": "xavier", "than": "uniform01", "by": [2, 10], "where": {"hidden": 32}}]
    (line,) = _problems(GRID, claims=claims)
    assert "no planned trial" in line and "hidden" in line


def test_the_shipped_studies_can_judge_their_claims() -> None:
    root = Path(__file__).resolve().parents[1] / "studies"
    for path in sorted(root.rglob("*.yaml")):
        spec, _ = load_spec(path)
        assert design_problems(spec) == [], path


def test_design_check_refuses_or_warns() -> None:
    spec, _ = load_spec(USER)
    with pytest.raises(SpecError, match=r"^user_gru: claim U1 .* or pass yes=True to run"):
        design_check(spec, False, "pass yes=True")
    (warning,) = design_check(spec, True, "pass yes=True")
    assert warning.startswith("claim U1") and "n_trials >= 40" in warning


# --------------------------------------------------------------------------- the CLI


def test_validate_refuses_the_users_study_and_names_the_fix(
    cli_here: Callable[..., Done], tmp_path: Path
) -> None:
    spec = tmp_path / "user.yaml"
    spec.write_text(USER)
    done = cli_here("validate", str(spec), "--run-dir", str(tmp_path / "runs"))
    assert done.returncode == 2 and done.stdout == ""
    assert "cannot be judged" in done.stderr and "n_trials >= 40" in done.stderr
    assert "add --yes" in done.stderr
    warned = cli_here("validate", str(spec), "--run-dir", str(tmp_path / "runs"), "--yes")
    assert warned.returncode == 0, warned.stderr
    assert "ok - study 'user_gru'" in warned.stdout
    assert "warning:" in warned.stderr and "n_trials >= 40" in warned.stderr
    assert "power (U1: orthogonal vs xavier): no earlier results" in warned.stdout
    fixed = cli_here(
        "validate", str(spec), "--run-dir", str(tmp_path), "--set", "n_trials=40",
        "--set", "sampler_options.n_startup_trials=20",
    )  # fmt: skip
    assert fixed.returncode == 0 and "cannot be judged" not in fixed.stderr


def test_run_refuses_it_before_anything_trains(
    cli_here: Callable[..., Done], tmp_path: Path
) -> None:
    spec = tmp_path / "user.yaml"
    spec.write_text(USER)
    run_dir = tmp_path / "runs"
    done = cli_here("run", str(spec), "--run-dir", str(run_dir))
    assert done.returncode == 2 and "cannot be judged" in done.stderr
    assert not run_dir.exists()  # no store, no tracking: nothing started


def test_the_api_refuses_it_too(tmp_path: Path) -> None:
    from pipeline import api

    with pytest.raises(SpecError, match="pass yes=True to run it anyway"):
        api.run_study(USER, run_dir=tmp_path / "runs")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- power


def _trial(init: str, hidden: int, seed: int, epoch: int | None, **more: Any) -> dict[str, Any]:
    return {
        "task": "adding",
        "cell": "rnn_tanh",
        "hidden": hidden,
        "seq_len": 10,
        "init": init,
        "init_recurrent": None,
        "scale": 1.0,
        "recurrent_scale": 1.0,
        "seed": seed,
        "converged_epoch": epoch,
        "diverged_epoch": None,
        "max_epochs": 40,
        "device_type": "cpu",
        "outcome": "converged" if epoch is not None else "censored",
        **more,
    }


def _pilot(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows).astype(
        {
            "converged_epoch": "Int64",
            "diverged_epoch": "Int64",
            "init": "string",
            "device_type": "string",
            "seed": "int64",
        }
    )


# orthogonal ~4 epochs, xavier ~12: a speedup of about 3; uniform01 never converges
ORTH = [3, 4, 4, 5, 4, 3, 5, 4]
XAV = [10, 12, 14, 11, 13, 12, 16, 9]


def _race_pilot() -> pd.DataFrame:
    rows = []
    for hidden in (16, 64):
        for s, (o, x) in enumerate(zip(ORTH, XAV, strict=True)):
            rows += [
                _trial("orthogonal", hidden, s, o),
                _trial("xavier", hidden, s, x),
                _trial("uniform01", hidden, s, None),
                _trial("xavier", hidden, s, 2, scale=2.0),  # not at gain 1: left out
            ]
    return _pilot(rows)


def test_comparison_power_estimates_each_declared_pair_on_its_arms() -> None:
    claims = [
        Comparison("U1", "orthogonal", "xavier", 2.0, 10.0),
        Comparison("U2", "orthogonal", "xavier", 2.0, math.inf),
        Comparison("U3", "orthogonal", "identity", 2.0, 10.0),
        Comparison("U4", "orthogonal", "xavier", 2.0, 10.0, where={"hidden": (64,)}),
    ]
    out = comparison_power(_race_pilot(), claims, n_sim=60, n_boot=60)
    assert [e["claim"] for e in out] == ["U1", "U2", "U3", "U4"]
    u1, u2, u3, u4 = out
    assert u1["faster"] == "orthogonal" and u1["than"] == "xavier"
    needed = u1["seeds_needed"]
    assert needed is not None and 5 <= needed <= 64
    assert u1["text"].startswith(f"{needed} seeds per cell")
    assert "about the claimed 2-10x" in u1["text"] and "each of the 2 cells" in u1["text"]
    assert "claimed 2-infx" in u2["text"] or u2["seeds_needed"] is not None
    assert u3["seeds_needed"] is None and "no orthogonal-vs-identity pairs" in u3["text"]
    assert "each of the 1 cells" in u4["text"]


def test_comparison_power_says_when_the_baseline_never_converges() -> None:
    claims = [Comparison("U1", "orthogonal", "uniform01", 2.0, 10.0)]
    (entry,) = comparison_power(_race_pilot(), claims, n_sim=40, n_boot=40)
    assert entry["seeds_needed"] is None
    assert "never converges within the budget: a longer budget is needed" in entry["text"]


def test_comparison_power_says_why_a_sampled_pilot_gives_none() -> None:
    rows = [_trial(i, 16, 0, 5, lr=lr) for i in ("orthogonal", "xavier") for lr in (1e-3, 1e-2)]
    rows += [_trial(i, 16, 0, 6, lr=0.02) for i in ("orthogonal", "xavier")]
    pilot = _pilot(rows).drop(columns=["lr"])  # the lr is not a column: seeds repeat
    (entry,) = comparison_power(pilot, [Comparison("U1", "orthogonal", "xavier", 2.0, 10.0)])
    assert entry["seeds_needed"] is None and entry["text"].startswith("not estimated: ")


def test_pilot_power_without_a_pilot_lists_every_comparison() -> None:
    spec, _ = load_spec(USER)
    c4, per_claim = pilot_power(spec, None)
    assert c4["seeds_needed"] is None and "no earlier results" in str(c4["text"])
    assert [(e["claim"], e["faster"], e["than"]) for e in per_claim] == [
        ("U1", "orthogonal", "xavier")
    ]


def test_validate_json_lists_the_design_problems_and_each_comparisons_power(
    cli_here: Callable[..., Done], tmp_path: Path
) -> None:
    import json

    from pipeline.cli import jsonout

    spec = tmp_path / "user.yaml"
    spec.write_text(USER)
    done = cli_here("validate", str(spec), "--run-dir", str(tmp_path), "--json", "--yes")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert tuple(doc) == jsonout.VALIDATE_KEYS
    (line,) = doc["design"]
    assert line.startswith("claim U1") and "n_trials >= 40" in line
    (entry,) = doc["comparisons"]
    assert tuple(entry) == jsonout.COMPARISON_POWER_KEYS
    assert entry["claim"] == "U1" and entry["enough"] is None

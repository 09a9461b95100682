"""A tuned protocol that its lr grid cannot decide: a pick at either end of an arm's lrs is
tuned again one ladder step further out, a bounded number of times, and a final pick
still at an end is flagged whatever its median (synthetic tables for the rule; the
in-process executor, real SQLite Optuna and MLflow stores for the stages)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import Done

from pipeline import protocol as proto
from pipeline.analysis.protocol import EDGE_FLAG, extension_lrs, pick_lr, tuning, tuning_table
from pipeline.analysis.report import write_report
from pipeline.check import check_study
from pipeline.driver import RunOptions
from pipeline.execution import InProcessExecutor
from pipeline.progress import Reporter
from pipeline.protocolspec import MAX_EXTENSIONS, Protocol, arm_key, lr_ladder, tune_stage
from pipeline.results import load_tables
from pipeline.studyspec import SpecError, parse_study_spec

GRID = [1.0e-3, 3.0e-3, 1.0e-2]
LADDER = [1.0e-4, 3.16e-4, 1.0e-3, 3.0e-3, 1.0e-2, 3.16e-2, 1.0e-1]
X, U = arm_key({"init": "xavier"}), arm_key({"init": "uniform01"})


def protocol(**changes: Any) -> Protocol:
    return Protocol(kind="tuned", lr=GRID, tuning_seeds=[100, 101], **changes)


# --------------------------------------------------------------------------- the ladder


def test_the_ladder_extends_the_grid_at_its_mean_log_spacing() -> None:
    assert lr_ladder(protocol()) == LADDER  # the 1-3-10 grid's step is sqrt(10)
    assert lr_ladder(protocol(extensions=1)) == LADDER[1:-1]
    assert lr_ladder(protocol(extensions=0)) == GRID
    unsorted = Protocol(kind="tuned", lr=[1e-2, 1e-3], tuning_seeds=[1], extensions=1)
    assert lr_ladder(unsorted) == [1e-4, 1e-3, 1e-2, 1e-1]
    assert lr_ladder(Protocol(kind="tuned", lr=[1e-2, 1e-3], tuning_seeds=[1], extensions=0)) == [
        1e-2,
        1e-3,
    ]  # as given: a study stored before extensions keeps its hash


def tuned_doc(**protocol_changes: Any) -> dict[str, Any]:
    trial = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8}
    trial |= {"batches_per_epoch": 2, "max_epochs": 3, "val_size": 16}
    return {
        "name": "ext",
        "sampler": "grid",
        "trial": trial,
        "space": {"init": ["xavier", "uniform01"], "seed": [0, 1]},
        "protocol": {"kind": "tuned", "lr": GRID, "tuning_seeds": [100, 101]} | protocol_changes,
    }


@pytest.mark.parametrize("bad", [-1, MAX_EXTENSIONS + 1, "two"])
def test_a_bad_number_of_extensions_is_one_clear_line(bad: Any) -> None:
    with pytest.raises(SpecError) as info:
        parse_study_spec(tuned_doc(extensions=bad), "x.yaml")
    message = str(info.value)
    assert "\n" not in message and message.startswith("x.yaml: protocol.extensions: ")


def test_the_extensions_are_in_the_hash_and_stage_one_keeps_one_hash() -> None:
    two = parse_study_spec(tuned_doc())
    assert two.protocol.extensions == 2  # the default
    one = parse_study_spec(tuned_doc(extensions=1))
    assert one.spec_hash() != two.spec_hash()
    assert tune_stage(one).spec_hash() != tune_stage(two).spec_hash()  # another lr axis
    plain, grown = tune_stage(two), tune_stage(two, {X: [3.16e-2, 1e-1]})
    assert grown.spec_hash() == plain.spec_hash()  # one study, grown by its extensions
    assert plain.distributions()["lr"].choices == tuple(LADDER)
    assert grown.distributions()["lr"].choices == tuple(LADDER)
    assert {p["lr"] for p in plain.grid_points()} == set(GRID)
    assert plain.n_trials_planned == 2 * 3 * 2
    extra = [p for p in grown.grid_points() if p["lr"] not in GRID]
    assert sorted((p["init"], p["lr"], p["seed"]) for p in extra) == sorted(
        ("xavier", lr, s) for lr in (3.16e-2, 1e-1) for s in (100, 101)
    )
    assert grown.n_trials_planned == 12 + 4


# --------------------------------------------------------------------------- the rule


def rows(init: str, lr: float, epochs: list[int | None]) -> list[dict[str, Any]]:
    return [
        {"init": init, "lr": lr, "converged_epoch": e, "diverged_epoch": None}
        | {"max_epochs": 10, "best_val_loss": 0.5 if e is None else 0.01 * e}
        for e in epochs
    ]


def table(**arms: dict[float, list[int | None]]) -> pd.DataFrame:
    return pd.DataFrame(
        [r for init, by_lr in arms.items() for lr, e in by_lr.items() for r in rows(init, lr, e)]
    )


INTERIOR = {1e-3: [9, 9], 3e-3: [4, 4], 1e-2: [8, 8]}
FALLING = {1e-3: [9, 9], 3e-3: [7, 7], 1e-2: [5, 5]}
"""KM medians 9, 7, 5: the best lr is the largest tried."""


def test_an_interior_pick_asks_for_nothing() -> None:
    assert extension_lrs(table(xavier=INTERIOR), ["init"], protocol()) == {}


def test_a_pick_at_the_top_asks_for_the_next_lr_above() -> None:
    assert extension_lrs(table(xavier=FALLING), ["init"], protocol()) == {X: [3.16e-2]}


def test_an_extension_that_wins_again_asks_for_one_more_and_no_more_than_allowed() -> None:
    still_falling = FALLING | {3.16e-2: [3, 3]}
    assert extension_lrs(table(xavier=still_falling), ["init"], protocol()) == {X: [3.16e-2, 1e-1]}
    # the bound: after two extensions the walk stops, however the last one did
    at_the_end = still_falling | {1e-1: [2, 2]}
    assert extension_lrs(table(xavier=at_the_end), ["init"], protocol()) == {X: [3.16e-2, 1e-1]}
    assert extension_lrs(table(xavier=at_the_end), ["init"], protocol(extensions=1)) == {
        X: [3.16e-2]
    }
    assert extension_lrs(table(xavier=at_the_end), ["init"], protocol(extensions=0)) == {}
    pick = pick_lr(table(xavier=at_the_end), ["init"], base=GRID)[0]
    assert (pick.lr, pick.extended, pick.at_edge) == (1e-1, (3.16e-2, 1e-1), True)
    assert pick.flag == f"{EDGE_FLAG} (lr 0.001-0.1 (extended to 0.0316, 0.1))"


def test_an_extension_that_loses_ends_the_walk_with_an_interior_pick() -> None:
    turned = FALLING | {3.16e-2: [6, 6]}
    assert extension_lrs(table(xavier=turned), ["init"], protocol()) == {X: [3.16e-2]}
    pick = pick_lr(table(xavier=turned), ["init"], base=GRID)[0]
    assert (pick.lr, pick.extended, pick.at_edge, pick.flag) == (1e-2, (3.16e-2,), False, None)


def test_the_bottom_end_extends_downwards_and_each_arm_on_its_own() -> None:
    rising = {1e-3: [3, 3], 3e-3: [6, 6], 1e-2: [9, 9]}
    got = extension_lrs(table(xavier=INTERIOR, uniform01=rising), ["init"], protocol())
    assert got == {U: [3.16e-4]}
    lower = rising | {3.16e-4: [2, 2]}
    got = extension_lrs(table(xavier=INTERIOR, uniform01=lower), ["init"], protocol())
    assert got == {U: [3.16e-4, 1e-4]}


def test_a_pick_at_an_end_with_no_median_reached_extends_and_is_flagged() -> None:
    # the old flag needed a reached median: a frozen arm's pick at an end went unflagged
    frozen = {lr: [None, None] for lr in GRID}
    assert extension_lrs(table(uniform01=frozen), ["init"], protocol()) == {U: [3.16e-4]}
    pick = pick_lr(table(uniform01=frozen), ["init"], base=GRID)[0]
    assert (pick.reached, pick.lr, pick.at_edge) == (False, 1e-3, True)
    assert tuning_table([pick])[EDGE_FLAG].tolist() == ["yes"]


def test_an_untrained_step_stops_the_walk_until_it_is_trained() -> None:
    # the first extension is asked for but not trained: the walk cannot look past it
    assert extension_lrs(table(xavier=FALLING), ["init"], protocol()) == {X: [3.16e-2]}
    # a trial at an lr outside the arm's walk (another arm's extension) changes nothing
    other = table(xavier=INTERIOR | {3.16e-2: [1, 1]})
    assert extension_lrs(other, ["init"], protocol()) == {}


def test_the_tuning_table_marks_lrs_an_arm_did_not_try() -> None:
    picks = pick_lr(
        table(xavier=FALLING | {3.16e-2: [6, 6]}, uniform01=INTERIOR), ["init"], base=GRID
    )
    curve = tuning_table(picks).set_index("init")
    lr_columns = [c for c in curve.columns if c.startswith("lr ")]
    assert lr_columns == ["lr 0.001", "lr 0.003", "lr 0.01", "lr 0.0316"]  # ascending
    assert curve.loc["uniform01", "lr 0.0316"] == "not tried"
    assert curve.loc["xavier", "range searched"] == "0.001-0.0316 (extended to 0.0316)"
    assert curve.loc["uniform01", "range searched"] == "0.001-0.01"


# --------------------------------------------------------------------------- both stages

_names = itertools.count()


@pytest.mark.slow  # it runs a study (in this process)
def test_an_edge_pick_is_tuned_again_on_the_same_study_and_resumes(tmp_path: Path) -> None:
    # two lrs: every round-0 pick is at an end, so every arm is extended once (the bound)
    d = tuned_doc(lr=[1e-3, 1e-2], extensions=1)
    spec, text = parse_study_spec(d), yaml.safe_dump(d)
    options = RunOptions(run_dir=tmp_path, study_name=f"ext-{next(_names)}")
    executors: list[InProcessExecutor] = []

    def make() -> InProcessExecutor:
        executors.append(InProcessExecutor(2))
        return executors[-1]

    heard: list[str] = []
    done = proto.run_protocol(
        spec, text, options, Reporter(enabled=False), make, lambda s, o: heard.append(s)
    )
    assert heard == ["tune", "measure"]
    assert done.measure is not None and done.measure.counts.complete == 4
    assert (done.tune.trained, done.tune.failed) == (8 + 4, [])  # 2 arms x 1 step x 2 seeds
    assert (done.tune.counts.planned, done.tune.counts.complete) == (12, 12)
    ladder = lr_ladder(spec.protocol)
    assert ladder == [1e-4, 1e-3, 1e-2, 1e-1]
    trained = [s for e in executors for pack in e.submitted for s in pack]
    stage1 = [s for s in trained if s.seed in (100, 101)]
    stage1_name = proto.tune_name(options.study_name)
    tables = load_tables(stage1_name, options.storage_url)
    round0 = pick_lr(tables.trials[tables.trials["lr"].isin([1e-3, 1e-2])], ["init"])
    for first in round0:  # each arm's extension is the ladder's next lr beyond its pick
        step = 1e-1 if first.lr == 1e-2 else 1e-4
        got = sorted({s.lr for s in stage1 if s.init == first.arm["init"]})
        assert got == sorted([1e-3, 1e-2, step]), (first.arm, got)
    picks = {p.arm["init"]: p for p in done.picks}
    assert all(len(p.extended) == 1 for p in picks.values())  # bounded: one extension
    assert {s.lr for s in trained if s.seed in (0, 1)} == {p.lr for p in picks.values()}

    # the stage-1 study holds the extension trials as ordinary trials; check agrees
    for name in (options.study_name, stage1_name):
        assert check_study(name, options.storage_url, options.tracking).ok
    assert len(tables.trials) == 12
    section = tuning(tables, ["init"], base=spec.protocol.lr)
    assert {p.key: p.lr for p in section.picks} == {p.key: p.lr for p in done.picks}
    assert sorted(section.shared["lr"]) == ["0.001", "0.01"]  # the grid every arm tried
    files = write_report(
        load_tables(options.study_name, options.storage_url),
        tmp_path / "report",
        tuning=section,
        n_boot=100,
    )
    markdown = files["markdown"].read_text()
    assert EDGE_FLAG in markdown and "extended to" in markdown

    again = proto.run_protocol(spec, text, options, Reporter(enabled=False), make)
    assert again.measure is not None
    assert (again.tune.trained, again.measure.trained) == (0, 0)
    assert {p.key: p.lr for p in again.picks} == {p.key: p.lr for p in done.picks}


def test_validate_counts_the_extension_trials_a_spec_may_add(
    tmp_path: Path, cli_here: Callable[..., Done]
) -> None:
    path = tmp_path / "ext.yaml"
    path.write_text(yaml.safe_dump(tuned_doc()), encoding="utf-8")
    done = cli_here("validate", str(path))
    assert done.returncode == 0, done.stderr
    # 2 arms x 2 tuning seeds x 2 extensions
    assert "12 trials: every arm at lr 0.001, 0.003, 0.01" in done.stdout
    assert "then up to 8 more where a pick is at an end of its range" in done.stdout
    path.write_text(yaml.safe_dump(tuned_doc(extensions=0)), encoding="utf-8")
    assert "more where" not in cli_here("validate", str(path)).stdout

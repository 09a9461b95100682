"""C4 as a map across conditions: every speedup verdict of the suite carries its study's
conditions, the suite's one C4 record names where the claim holds and where it does not,
and the README's "In short" sentence is generated from that map (synthetic per-study
verdicts, no training)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.analysis.condition_map import (
    TUNED,
    c4_headline,
    c4_map,
    combine_c4,
    condition_table,
    lr_edges,
    speedup_cells,
    study_conditions,
)
from pipeline.analysis.judging import C4_RANGE, Verdict
from pipeline.analysis.speedup_rule import SPEEDUP_RULE, combine_cells
from pipeline.analysis.suite_report import (
    README_BEGIN,
    README_END,
    SuiteStudy,
    readme_block,
    write_suite_report,
)

C4_TEXT = "Xavier cuts epochs-to-convergence 2-10x against uniform[0,1] (headline)"


def cell(hidden: int, cls: str, estimate: float | None, **extra: Any) -> dict[str, Any]:
    """One C4 cell as ``judge_comparison`` writes it (seq_len 5 unless given)."""
    lo = None if estimate is None or math.isinf(estimate) else estimate * 0.8
    hi = None if estimate is None or math.isinf(estimate) else estimate * 1.2
    kind = {"unbounded": "unbounded", "inconclusive": "none"}.get(cls, "finite")
    out = {"hidden": hidden, "seq_len": 5, "n_a": 5, "n_b": 5, "estimate": estimate}
    return out | {"lo": lo, "hi": hi, "kind": kind, "classification": cls} | extra


def c4_verdict(cells: list[dict[str, Any]]) -> Verdict:
    verdict = combine_cells([c["classification"] for c in cells])
    numbers = {"faster": "xavier", "than": "uniform01", "range": list(C4_RANGE), "cells": cells}
    return Verdict("C4", C4_TEXT, verdict, SPEEDUP_RULE, f"{verdict} here", None, numbers)


def conditions(optimizer: str, task: str, **extra: Any) -> dict[str, Any]:
    base = {"optimizer": optimizer, "task": task, "cell": "rnn_tanh", "clip": 1}
    return base | {"max_epochs": 60, "batches_per_epoch": 20, "lr": TUNED} | extra


SGD_CHARLM = [cell(32, "within", 3.1), cell(128, "unbounded", math.inf)]
ADAM_ADDING = [cell(2, "below", 0.3), cell(8, "below", 1.1), cell(32, "unbounded", math.inf)]
ADAM_ADDING += [cell(128, "unbounded", math.inf)]


def studies() -> list[SuiteStudy]:
    cost: dict[str, Any] = {"trials": 10, "wall_seconds": 60.0, "estimated_cpu_seconds": 90.0}
    orth = Verdict(
        "all_xavier_vs_orthogonal",
        "xavier converges at least 2x faster than orthogonal",
        "supported",
        SPEEDUP_RULE,
        "e",
        None,
        {
            "faster": "xavier",
            "than": "orthogonal",
            "range": [2.0, math.inf],
            "cells": [cell(16, "within", math.inf, kind="lower_bound", lo=2.5)],
        },
    )
    c2 = Verdict("C2", "uniform[0,1] vanishes", "supported", "r", "e", None, {"sizes": []})
    return [
        SuiteStudy(
            "regimes",
            "studies/reproduce/regimes.yaml",
            "Adam on adding",
            [c2, c4_verdict(ADAM_ADDING)],
            conditions=conditions("adam", "adding", hidden=[2, 8, 32, 128]),
            **cost,
        ),
        SuiteStudy(
            "sgd_charlm",
            "studies/reproduce/sgd_charlm.yaml",
            "SGD on charlm",
            [c4_verdict(SGD_CHARLM), orth],
            conditions=conditions("sgd", "charlm", hidden=[32, 128]),
            **cost,
        ),
    ]


def records() -> list[dict[str, Any]]:
    return [
        {"study": s.study, "kind": "claim", **v.to_dict(), "conditions": s.conditions}
        for s in studies()
        for v in s.verdicts
    ]


# --------------------------------------------------------------------------- conditions


def test_a_studys_conditions_come_from_its_trials_table() -> None:
    trials = pd.DataFrame(
        {
            "optimizer": ["sgd"] * 4,
            "task": ["charlm"] * 4,
            "hidden": [32, 32, 128, 128],
            "clip": [float("nan")] * 4,
            "max_epochs": [50] * 4,
            "lr": [0.1, 0.03, 0.1, 0.03],
        }
    )
    got = study_conditions(trials, tuned=False)
    assert got == {
        "optimizer": "sgd",
        "task": "charlm",
        "hidden": [32, 128],
        "clip": None,  # no clipping
        "max_epochs": 50,
        "lr": [0.03, 0.1],
    }
    assert json.loads(json.dumps(got)) == got  # plain JSON values, not numpy
    assert study_conditions(trials, tuned=True)["lr"] == TUNED


def test_every_speedup_cell_carries_its_studys_conditions_and_its_own_regime() -> None:
    cells = speedup_cells(records())
    assert len(cells) == len(ADAM_ADDING) + len(SGD_CHARLM) + 1  # C2 has no speedup cells
    sgd = [c for c in cells if c["study"] == "sgd_charlm" and c["claim"] == "C4"]
    assert [c["conditions"]["hidden"] for c in sgd] == [32, 128]  # the cell's, not the list
    assert all(c["conditions"]["optimizer"] == "sgd" for c in sgd)
    assert all(c["conditions"]["task"] == "charlm" for c in sgd)
    assert {c["claim"] for c in speedup_cells(records(), "C4")} == {"C4"}


# --------------------------------------------------------------------------- the map


def test_the_suites_c4_is_one_record_that_names_where_the_claim_holds() -> None:
    combined = combine_c4(records())
    c4 = [r for r in combined if r["id"] == "C4"]
    assert len(c4) == 1 and len(combined) == len(records()) - 1
    (record,) = c4
    # within in one cell, contradicted in others: partly, not one word for the suite
    assert record["verdict"] == "partly supported"
    assert record["study"] == "regimes, sgd_charlm"
    evidence = record["evidence"]
    assert evidence.startswith("Across 6 cells of 2 studies: ")
    assert "within 2-10x (3.1x) under sgd on charlm at hidden 32" in evidence
    assert "below 2x (0.3-1.1x) under adam on adding at hidden 2, 8" in evidence
    assert "unbounded (uniform01 cannot train) under adam on adding at hidden 32, 128" in evidence
    assert "unbounded (uniform01 cannot train) under sgd on charlm at hidden 128" in evidence
    assert evidence.index("within") < evidence.index("below") < evidence.index("unbounded")
    assert "not known" not in evidence
    studies_ = record["numbers"]["studies"]
    assert [(s["study"], s["verdict"]) for s in studies_] == [
        ("regimes", "refuted"),
        ("sgd_charlm", "partly supported"),
    ]
    assert combine_c4(combined) == combined  # a combined record stays as it is
    shared = record["conditions"]  # what every cell shares
    assert shared == {"cell": "rnn_tanh", "clip": 1, "max_epochs": 60} | {
        "batches_per_epoch": 20,
        "lr": TUNED,
        "seq_len": 5,
    }


def test_one_condition_alone_gives_that_conditions_verdict() -> None:
    only = [r for r in records() if r["study"] == "regimes"]
    (c4,) = [r for r in combine_c4(only) if r["id"] == "C4"]
    assert c4["verdict"] == "refuted"
    assert "within" not in c4["evidence"]


def test_a_setting_that_differs_across_the_map_is_named() -> None:
    rows = records()
    for r in rows:
        if r["study"] == "sgd_charlm":
            r["conditions"] = {**r["conditions"], "clip": None}
    phrases = [p["text"] for p in c4_map(speedup_cells(rows, "C4"))]
    assert "within 2-10x (3.1x) under sgd on charlm without clipping at hidden 32" in phrases
    below = "below 2x (0.3-1.1x) under adam on adding with clip 1"
    assert any(p.startswith(below) for p in phrases)


def test_an_undecided_cell_says_why_and_records_without_conditions_say_so() -> None:
    bare = [
        {k: v for k, v in r.items() if k != "conditions"}
        for r in records()
        if r["study"] == "regimes"
    ]
    bare[1]["numbers"]["cells"].append(cell(2, "inconclusive", None, seq_len=20))
    text = c4_headline(bare)
    assert text is not None and text.startswith("In short: the headline claim C4")
    assert "undecided (xavier's median not reached) at hidden 2 (seq_len 20)" in text
    assert "below 2x (0.3-1.1x) at hidden 2, 8 (seq_len 5);" in text
    assert "not known here" in text  # no optimizer or task to name
    assert c4_headline([r for r in records() if r["id"] != "C4"]) is None


def test_the_condition_table_has_a_row_per_speedup_cell() -> None:
    table = condition_table(records())
    assert len(table) == 7
    sgd = table[(table["study"] == "sgd_charlm") & (table["claim"] == "C4")]
    assert sgd[["optimizer", "task", "hidden", "clip"]].values.tolist() == [
        ["sgd", "charlm", "32", "1"],
        ["sgd", "charlm", "128", "1"],
    ]
    assert sgd["budget"].tolist() == ["60 epochs x 20 batches"] * 2
    assert sgd["shows"].tolist() == ["within 2-10x", "unbounded (uniform01 cannot train)"]
    assert sgd["speedup [95% CI]"].tolist() == ["3.1x [2.48, 3.72]", "unbounded"]
    orth = table[table["claim"] == "all_xavier_vs_orthogonal"]
    assert orth["shows"].tolist() == ["at least 2x"] and orth["lr"].tolist() == [TUNED]


# --------------------------------------------------------------------------- the suite report


def test_the_suite_report_and_readme_carry_the_map(tmp_path: Path) -> None:
    run = {"command": "initstudy suite x", "machine": "m", "commit": "c", "date": "d"}
    run |= {"wall_seconds": 120.0, "cpus": 2, "folder": "studies/reproduce"}
    paths = write_suite_report(studies(), tmp_path, run)
    written = json.loads(paths["verdicts"].read_text(encoding="utf-8"))
    assert [r["id"] for r in written].count("C4") == 1
    assert all("conditions" in r for r in written)
    by_id = {r["id"]: r for r in written}
    assert by_id["C4"]["verdict"] == "partly supported"
    assert by_id["all_xavier_vs_orthogonal"]["conditions"]["optimizer"] == "sgd"
    page = paths["markdown"].read_text(encoding="utf-8")
    assert "## C4 and the other speedups, by condition" in page
    assert "| C4 | sgd_charlm | xavier / uniform01 | sgd | charlm | rnn_tanh | 32 |" in page
    assert "within 2-10x (3.1x) under sgd on charlm at hidden 32" in page

    block = readme_block(tmp_path)
    assert block.startswith(README_BEGIN) and block.rstrip().endswith(README_END)
    headline = c4_headline(written)
    assert headline is not None and headline in block
    assert "is **partly supported** as one statement; by condition it is within 2-10x" in block
    assert "| C4: " + C4_TEXT + " | **partly supported** | regimes, sgd_charlm |" in block


# --------------------------------------------------------------------------- lr at the edge


def test_a_pick_at_the_edge_of_its_range_follows_its_cells_into_the_map(tmp_path: Path) -> None:
    from pipeline.analysis.protocol import ArmPick, LrScore

    scores = [LrScore(lr, 3, None, "> 60", 0.5) for lr in (1e-4, 3.16e-4, 1e-3, 3e-3)]
    frozen = {"hidden": np.int64(32), "init": "uniform01", "seq_len": np.int64(5)}
    picks = [
        ArmPick(frozen, 1e-4, False, scores, (1e-4, 3.16e-4)),
        ArmPick({"hidden": 2, "init": "xavier", "seq_len": 5}, 1e-3, True, scores),
    ]
    edges = lr_edges(picks)
    assert edges == [
        {
            "arm": {"hidden": 32, "init": "uniform01", "seq_len": 5},
            "lr": 1e-4,
            "searched": "0.0001-0.003 (extended to 0.0001, 0.000316)",
        }
    ]
    assert json.loads(json.dumps(edges)) == edges  # numpy values made plain
    rows = records()
    for r in rows:
        if r["study"] == "regimes":
            r["lr_edges"] = edges
    cells = speedup_cells(rows, "C4")
    flagged = [c for c in cells if c["lr_edge"]]
    assert [(c["study"], c["conditions"]["hidden"]) for c in flagged] == [("regimes", 32)]
    (c4,) = [r for r in combine_c4(rows) if r["id"] == "C4"]
    assert c4["evidence"].endswith(
        "Best lr at the edge of the searched range, so a wider search could move it:"
        " uniform01 at hidden 32."
    )
    table = condition_table(rows).set_index(["study", "claim", "hidden"])
    assert table.loc[("regimes", "C4", "32"), "lr at the edge"] == "uniform01 (0.0001)"
    assert table.loc[("regimes", "C4", "128"), "lr at the edge"] == "no"

    suite = studies()
    suite[0].lr_edges = edges
    run = {"command": "c", "machine": "m", "commit": "c", "date": "d", "wall_seconds": 1.0}
    paths = write_suite_report(suite, tmp_path, run | {"cpus": 2, "folder": "f"})
    page = paths["markdown"].read_text(encoding="utf-8")
    assert "**Best lr at the edge of the searched range** for 1 arm(s): hidden 32, " in page
    assert "init uniform01, seq_len 5 (lr 0.0001, searched 0.0001-0.003" in page
    written = json.loads(paths["verdicts"].read_text(encoding="utf-8"))
    assert all(r["lr_edges"] == edges for r in written if r["study"] == "regimes")

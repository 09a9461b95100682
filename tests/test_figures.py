"""The figures on hand-made tables: resolution and SVG copies, the learning curves (a line
per scheme, the target, early stoppers carried forward), Kaplan-Meier curves that coincide,
and the objective-vs-parameter panels."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from factories import diagnostics, history, trial_result
from PIL import Image

from models.spec import TrialResult, TrialSpec
from pipeline.analysis import figures as fg
from pipeline.analysis import figures_curves as fc
from pipeline.analysis.summary import study_summary
from pipeline.analysis.tables import StudyTables, tables_from_results

TARGET = 0.05
BUDGET = 6


def result(init: str, seed: int, losses: list[float], converged: int | None) -> TrialResult:
    """A trial that ran ``len(losses)`` epochs with these validation losses."""
    return trial_result(
        TrialSpec(init=init, seed=seed, seq_len=5, hidden=8, max_epochs=BUDGET),
        history(losses),
        diagnostics=diagnostics(5),
        converged=converged,
        target=TARGET,
    )


def curves_study() -> StudyTables:
    """xavier: trial 0 converges at epoch 3 and stops, trial 1 trains all 6 epochs at 0.3;
    uniform01: two trials at 0.5 throughout."""
    rows = [
        (0, "k0", result("xavier", 0, [0.4, 0.1, 0.01], 3)),
        (1, "k1", result("xavier", 1, [0.3] * BUDGET, None)),
        (2, "k2", result("uniform01", 0, [0.5] * BUDGET, None)),
        (3, "k3", result("uniform01", 1, [0.5] * BUDGET, None)),
    ]
    return tables_from_results("curves", rows)


def labelled(ax) -> dict[str, object]:
    """The axes' lines that have a legend label, by label."""
    return {ln.get_label(): ln for ln in ax.get_lines() if not ln.get_label().startswith("_")}


def test_a_saved_figure_is_a_png_of_at_least_150_dpi_with_an_svg_beside(tmp_path: Path) -> None:
    tables = curves_study()
    png = fg.save_figure(
        fc.learning_curves_figure(tables.trials, tables.epochs), tmp_path / "a.png"
    )
    assert png == tmp_path / "a.png"
    with Image.open(png) as image:
        assert image.format == "PNG"
        dpi_x, dpi_y = image.info["dpi"]
    assert round(dpi_x) >= 150 and round(dpi_y) >= 150
    svg = (tmp_path / "a.svg").read_text(encoding="utf-8")
    assert "<svg" in svg and "validation loss" in svg  # text kept as text
    again = tmp_path / "b.png"
    fg.save_figure(fc.learning_curves_figure(tables.trials, tables.epochs), again)
    assert (tmp_path / "b.svg").read_text(encoding="utf-8") == svg  # no date: reproducible


def test_learning_curves_have_a_line_per_scheme_and_the_target() -> None:
    tables = curves_study()
    fig = fc.learning_curves_figure(tables.trials, tables.epochs)
    try:
        (ax,) = fig.axes
        lines = labelled(ax)
        assert set(lines) == {"uniform01 (n=2)", "xavier (n=2)", fc.TARGET_LABEL}
        target = lines[fc.TARGET_LABEL]
        assert set(np.asarray(target.get_ydata(), dtype=float)) == {TARGET}
        xavier = lines["xavier (n=2)"]
        x = np.asarray(xavier.get_xdata(), dtype=float)
        y = np.asarray(xavier.get_ydata(), dtype=float)
        assert list(x) == list(range(1, BUDGET + 1))
        # trial 0 stopped at epoch 3 having converged: its 0.01 is carried to epoch 6, so
        # the median there is of 0.01 and 0.3, not 0.3 alone
        assert math.isclose(y[-1], (0.01 + 0.3) / 2)
        assert ax.get_yscale() == "log"  # 0.01 to 0.5 spans more than a factor 10
        assert "carries its last loss forward" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_only_a_converged_trial_is_carried_forward() -> None:
    tables = curves_study()
    trials = tables.trials.copy()
    trials.loc[0, "converged"] = False  # as if trial 0 had stopped for another reason
    matrix = fc.loss_matrix(trials[trials["init"] == "xavier"], tables.epochs, BUDGET)
    assert list(matrix.index) == list(range(1, BUDGET + 1))
    assert matrix[0].isna().sum() == 3 and matrix[1].notna().all()
    carried = fc.loss_matrix(tables.trials[tables.trials["init"] == "xavier"], tables.epochs, 6)
    assert list(carried[0]) == [0.4, 0.1, 0.01, 0.01, 0.01, 0.01]


def test_identical_km_curves_are_told_apart() -> None:
    rows = [
        (i, f"k{i}", result(init, i % 2, [0.01] * e, e))
        for i, (init, e) in enumerate([("xavier", 2), ("xavier", 4), ("orthogonal", 2)])
    ]
    rows.append((3, "k3", result("orthogonal", 1, [0.01] * 4, 4)))
    trials = tables_from_results("twins", rows).trials
    fig = fg.km_figure(trials)
    try:
        lines = labelled(fig.axes[0])
        (first,) = [ln for label, ln in lines.items() if label.startswith("orthogonal")]
        (second,) = [ln for label, ln in lines.items() if label.startswith("xavier")]
        assert "identical to orthogonal" in second.get_label()
        assert "identical" not in first.get_label()
        assert (first.get_linestyle(), first.get_marker()) != (
            second.get_linestyle(),
            second.get_marker(),
        )
        assert first.get_linestyle() != second.get_linestyle()
        assert first.get_marker() != second.get_marker()
        gap = np.asarray(second.get_ydata(), float) - np.asarray(first.get_ydata(), float)
        assert np.allclose(gap, fg.KM_OFFSET)  # drawn a little above its twin
    finally:
        plt.close(fig)


def test_the_objective_figure_has_a_panel_per_searched_parameter() -> None:
    tables = curves_study()
    spec = (
        "name: curves\nsampler: grid\ntrial: {max_epochs: 6}\n"
        "space:\n  init: [xavier, uniform01]\n  seed: [0, 1]\n"
    )
    summary = study_summary(
        StudyTables("curves", "", spec, tables.trials, tables.epochs, tables.steps)
    )
    fig = fc.objective_figure(summary)
    try:
        axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
        assert [ax.get_xlabel() for ax in axes] == ["init", "seed"]
        ticks = [t.get_text() for t in axes[0].get_xticklabels()]
        assert ticks == ["xavier", "uniform01"]
        median = labelled(axes[0])["median"]
        assert list(np.asarray(median.get_ydata(), float)) == [5.0, 7.0]  # 3 and 7 -> 5; 7, 7
    finally:
        plt.close(fig)


@pytest.mark.parametrize(
    "draw",
    [
        lambda: fc.learning_curves_figure(curves_study().trials, pd.DataFrame()),
        lambda: fc.objective_figure(None),
    ],
)
def test_the_new_figures_without_the_data_say_so(draw) -> None:
    fig = draw()
    try:
        texts = [t.get_text() for ax in fig.axes for t in ax.texts]
        assert any(t.startswith("not enough data") for t in texts)
    finally:
        plt.close(fig)

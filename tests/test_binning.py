"""Figures of sampled designs: continuous parameters binned, at most ~10 legend entries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_aft import sampled_study, trial

from pipeline.analysis import figures as fg
from pipeline.analysis import figures_curves as fc
from pipeline.analysis.binning import MAX_BINS, MAX_LEGEND, bin_labels, curve_labels, panel_labels
from pipeline.analysis.tables import tables_from_results


def frame(schemes: list[str], n: int, **columns: object) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = {"init": [schemes[i % len(schemes)] for i in range(n)]}
    for name, kind in columns.items():
        data[name] = rng.uniform(0.5, 2.0, n) if kind == "float" else rng.choice(kind, n)
    return pd.DataFrame(data)


def test_a_grid_keeps_one_label_per_value() -> None:
    labels = bin_labels(pd.Series([0.5, 1.0, 2.0, 1.0]), MAX_BINS)
    assert labels.tolist() == ["0.5", "1", "2", "1"]


def test_a_sampled_scale_is_binned_into_at_most_five_quantile_bins() -> None:
    values = pd.Series(np.linspace(0.5, 2.0, 40))
    labels = bin_labels(values, MAX_BINS)
    assert labels.nunique() == MAX_BINS
    assert labels.value_counts().tolist() == [8] * 5  # quantile bins: equal counts
    assert labels.iloc[0] == "0.5-0.769" and labels.iloc[-1] == "1.73-2"


def test_curve_labels_stay_within_the_legend_budget_and_say_what_is_pooled() -> None:
    two = frame(["xavier", "uniform01"], 40, scale="float", hidden=[16, 32, 64])
    labels, pooled = curve_labels(two, two["init"])
    assert labels.nunique() <= MAX_LEGEND and pooled == []
    assert any(" x" in s and ", h=" in s for s in labels)
    six = frame([f"s{i}" for i in range(6)], 60, scale="float", hidden=[16, 64])
    labels, pooled = curve_labels(six, six["init"])
    assert labels.nunique() == 6 and pooled == ["scale", "hidden"]


def test_many_sequence_lengths_make_at_most_five_panels_in_order() -> None:
    _, order = panel_labels(pd.Series(range(10, 210, 10)))
    assert len(order) == MAX_BINS and order[0].startswith("10-") and order[-1].endswith("-200")
    few, order = panel_labels(pd.Series([10, 30, 60, 30]))
    assert order == ["10", "30", "60"] and few.tolist() == ["10", "30", "60", "30"]


def legend_entries(figure: object) -> list[int]:
    return [len(ax.get_legend().get_texts()) for ax in figure.axes if ax.get_legend()]


def test_km_and_learning_curves_of_a_sampled_study_have_short_legends() -> None:
    tables = sampled_study(4.0)  # 40 trials, each its own scale
    km = fg.km_figure(tables.trials)
    learning = fc.learning_curves_figure(tables.trials, tables.epochs)
    for figure in (km, learning):
        counts = legend_entries(figure)
        assert counts and max(counts) <= MAX_LEGEND + 1  # + the target line
    assert max(legend_entries(km)) == MAX_LEGEND  # 2 schemes x 5 scale bins


def test_a_pooled_parameter_is_named_in_the_title() -> None:
    trials = sampled_study(4.0).trials
    six = trials.assign(init=[f"s{i % 6}" for i in range(len(trials))])  # no room for bins
    km = fg.km_figure(six)
    assert max(legend_entries(km)) == 6
    assert "pooled over scale" in km._suptitle.get_text()


def test_the_outcomes_table_bins_a_sampled_scale() -> None:
    from pipeline.analysis.report import _summary_display

    table = _summary_display(sampled_study(4.0).trials)
    assert table is not None and len(table) == 2 * MAX_BINS  # not 40 rows of n=1
    assert table["n"].sum() == 40 and table["scale"].str.contains("-").all()


@pytest.mark.slow
def test_a_study_without_uniform01_has_no_c4_column(tmp_path: Path) -> None:
    from pipeline.analysis.report import write_report

    results = [
        trial(init, epochs + seed % 3, seed=seed)
        for seed in range(5)
        for init, epochs in (("xavier", 4), ("orthogonal", 8))
    ]
    tables = tables_from_results("no_u", [(i, f"k{i}", r) for i, r in enumerate(results)])
    text = write_report(tables, tmp_path, n_boot=100)["markdown"].read_text(encoding="utf-8")
    assert "## Speedup of Xavier over each other scheme" in text
    assert "C4 cell" not in text and "xavier vs orthogonal" in text
    assert "## Speedup from a censored regression (AFT)" not in text  # nothing declared

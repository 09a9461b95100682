"""The phase diagram, hidden-state and gradient-norm figures of sampled designs: the axes
are the study's searched ones (continuous ones binned), and no legend has more than about
:data:`MAX_LEGEND` entries (synthetic tables; tests/test_binning.py has the KM and curves)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from test_aft import grid_study, sampled_study

from pipeline.analysis import figures as fg
from pipeline.analysis.binning import MAX_BINS, MAX_LEGEND


def ticks(figure: Figure) -> tuple[list[str], list[str], list[str], list[str]]:
    """The first panel's x and y tick labels and axis labels."""
    ax = figure.axes[0]
    return (
        [t.get_text() for t in ax.get_xticklabels()],
        [t.get_text() for t in ax.get_yticklabels()],
        [ax.get_xlabel()],
        [ax.get_ylabel()],
    )


def legend_sizes(figure: Figure) -> list[int]:
    sizes = [len(ax.get_legend().get_texts()) for ax in figure.axes if ax.get_legend()]
    plt.close(figure)
    return sizes


def test_a_sampled_study_phase_diagram_has_its_searched_axes_binned() -> None:
    trials = sampled_study(4.0).trials  # lr and scale continuous, seq_len and hidden fixed
    assert fg.phase_axes(trials) == (["scale", "lr"], [])
    figure = fg.phase_figure(trials)
    xs, ys, xlabel, ylabel = ticks(figure)
    assert xlabel == ["scale"] and ylabel[0].endswith("\nlr")  # a row per scheme
    assert len(xs) == MAX_BINS and len(ys) == MAX_BINS  # not 40 rows of one trial each
    assert all("-" in t for t in xs + ys)  # quantile bins "low-high"
    assert "(scale x lr)" in figure._suptitle.get_text()
    plt.close(figure)


def test_hidden_is_an_axis_when_searched_and_a_third_axis_is_pooled() -> None:
    trials = grid_study(3.0).trials  # hidden 16 and 64, one seq_len, one scale
    assert fg.phase_axes(trials) == (["hidden"], [])
    rng = np.random.default_rng(0)
    wide = trials.assign(
        seq_len=[int(x) for x in rng.choice([10, 20, 40], len(trials))],
        scale=rng.uniform(0.5, 2.0, len(trials)),
    )
    assert fg.phase_axes(wide) == (["seq_len", "hidden"], ["scale"])
    figure = fg.phase_figure(wide)
    xs, ys, xlabel, ylabel = ticks(figure)
    assert xlabel == ["seq_len"] and xs == ["10", "20", "40"]
    assert ylabel[0].endswith("\nhidden") and ys == ["16", "64"]
    assert "(seq_len x hidden; pooled over scale)" in figure._suptitle.get_text()
    plt.close(figure)
    figure = fg.phase_figure(trials)  # one searched axis: the schemes are the other
    _, ys, xlabel, ylabel = ticks(figure)
    assert (
        xlabel == ["hidden"] and ylabel == ["scheme"] and sorted(ys) == sorted(set(trials["init"]))
    )
    plt.close(figure)


def test_hidden_stats_and_grad_norm_of_a_sampled_scale_have_short_legends() -> None:
    steps = sampled_study(4.0).steps
    assert steps["trial_number"].nunique() == 40 and steps["scale"].nunique() == 40
    labels, pooled = fg.step_labels(steps)
    assert labels.nunique() == 2 * MAX_BINS and pooled == []  # 2 schemes x 5 scale bins
    for figure in (fg.hidden_stats_figure(steps), fg.grad_norm_figure(steps)):
        sizes = legend_sizes(figure)
        assert sizes and max(sizes) <= MAX_LEGEND + 1  # + the mean-field line


def test_many_schemes_pool_the_scale_and_say_so() -> None:
    steps = sampled_study(4.0).steps
    schemes = ["glorot_normal", "he_normal", "identity", "normal001", "orthogonal", "xavier"]
    six = steps.assign(init=[schemes[n % 6] for n in steps["trial_number"]])
    labels, pooled = fg.step_labels(six)
    assert labels.nunique() == 6 and pooled == ["scale"]
    figure = fg.hidden_stats_figure(six)
    assert "pooled over scale" in figure._suptitle.get_text()
    assert max(legend_sizes(figure)) <= 6 + 1


def test_grad_norm_panels_bin_many_sequence_lengths() -> None:
    steps = sampled_study(4.0).steps
    many = steps.assign(seq_len=10 + steps["trial_number"] * 5)  # 40 lengths
    figure = fg.grad_norm_figure(many)
    titled = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert len(titled) == MAX_BINS and all(t.startswith("seq_len ") for t in titled)
    plt.close(figure)

"""The report's line figures: learning curves, the objective against each searched
parameter and a tuned protocol's tuning curve.

:func:`learning_curves_figure` draws the ``epochs`` table: per init scheme (a panel per
seq_len) the median validation loss by epoch and its inter-quartile band, with the task's
target loss. A trial that converged and stopped early (``stop_on_converge``) would drop out
of the later epochs and leave only the slow trials there, dragging the median up: it carries
its last validation loss forward to the budget (it had reached the target, so that is the
loss it stopped at). A trial that stopped for any other reason (it diverged, stalled or
froze) counts only for the epochs it trained; non-finite losses are left out. The y axis is
logarithmic when the losses drawn span a factor 10 or more.

:func:`objective_figure` draws a :class:`~pipeline.analysis.summary.StudySummary`: a panel
per searched parameter, each trial's objective as a point (hollow: not converged) and the
median per value or bin as a line. This module reads tables; it knows nothing of Optuna,
MLflow or Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from pipeline.analysis.figures import (
    FIGURE_TITLES,
    colours_of,
    curve_frame,
    grid_of,
    not_enough,
    pooled_note,
)

if TYPE_CHECKING:
    from pipeline.analysis.summary import StudySummary

__all__ = [
    "LOG_SPAN",
    "TUNING_TITLE",
    "learning_curves_figure",
    "loss_matrix",
    "objective_figure",
    "tuning_figure",
]

LOG_SPAN = 10.0
"""The learning curves' y axis is logarithmic when the losses span at least this factor."""
TARGET_LABEL = "target loss"
"""The legend label of the target line(s) of the learning curves."""


def loss_matrix(trials: pd.DataFrame, epochs: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Validation loss, one column per trial, one row per epoch 1..``budget``.

    A trial that converged and stopped before ``budget`` carries its last finite loss
    forward; any other trial is NaN after its last epoch; non-finite losses are NaN.
    """
    frame = epochs[epochs["trial_number"].isin(trials["trial_number"])]
    loss = pd.to_numeric(frame["val_loss"], errors="coerce").astype(float)
    frame = frame.assign(val_loss=loss.where(np.isfinite(loss)))
    matrix = frame.pivot_table(
        index="epoch", columns="trial_number", values="val_loss", aggfunc="last", dropna=False
    ).reindex(index=range(1, budget + 1))
    stopped = trials[trials["converged"].astype(bool)]["trial_number"]
    for number in stopped:
        if number in matrix.columns:
            column = matrix[number]
            last = column.last_valid_index()
            if last is not None:
                matrix.loc[last:, number] = column.loc[last:].fillna(column.loc[last])
    return matrix


def learning_curves_figure(trials: pd.DataFrame, epochs: pd.DataFrame) -> Figure:
    """Median validation loss by epoch with its inter-quartile band, a line per scheme and
    a panel per seq_len, and the target loss dotted (see the module docstring)."""
    name = "learning_curves"
    if trials.empty or epochs.empty:
        return not_enough(name, "the study recorded no training epochs")
    frame, lengths, pooled = curve_frame(trials)
    colours = colours_of(sorted(frame["label"].unique()))
    fig, axes = grid_of(len(lengths))
    for ax, seq_len in zip(axes, lengths, strict=True):
        part = frame[frame["panel"] == seq_len]
        budget = int(part["max_epochs"].max())
        drawn: list[float] = []
        for label, group in part.groupby("label", sort=True):
            matrix = loss_matrix(group, epochs, budget)
            median = matrix.median(axis=1, skipna=True)
            q1 = matrix.quantile(0.25, axis=1)
            q3 = matrix.quantile(0.75, axis=1)
            if not median.notna().any():
                continue
            colour = colours[label]
            ax.plot(median.index, median, color=colour, label=f"{label} (n={len(group)})")
            ax.fill_between(median.index, q1, q3, color=colour, alpha=0.2, linewidth=0)
            drawn += [*median.dropna(), *q1.dropna(), *q3.dropna()]
        targets = sorted(set(pd.to_numeric(part["target_loss"], errors="coerce").dropna()))
        for target in targets:
            label = f"{TARGET_LABEL} {target:g}" if len(targets) > 1 else TARGET_LABEL
            ax.axhline(target, color="black", linestyle=":", linewidth=1.2, label=label)
            drawn.append(float(target))
        positive = [v for v in drawn if v > 0]
        if positive and len(positive) == len(drawn) and max(positive) / min(positive) >= LOG_SPAN:
            ax.set_yscale("log")
        ax.set_xlim(0.5, budget + 0.5)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation loss")
        ax.set_title(f"seq_len {seq_len}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(_wrap(FIGURE_TITLES[name] + pooled_note(pooled)), fontsize=10)
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int = 95) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def objective_figure(summary: StudySummary | None) -> Figure:
    """Per searched parameter, each trial's objective (hollow: not converged) and the
    median per value or bin (a line)."""
    name = "objective_vs_params"
    if summary is None or not summary.effects:
        why = "no study summary" if summary is None else "the study searched no parameter"
        if summary is not None and summary.n_trials == 0:
            why = "the study has no complete trials"
        return not_enough(name, why)
    fig, axes = grid_of(len(summary.effects), width=4.2, height=3.4)
    rng = np.random.default_rng(0)  # the same jitter every time
    for ax, effect in zip(axes, summary.effects, strict=True):
        levels = list(effect.table[effect.param.name])
        position = {level: i for i, level in enumerate(levels)}
        points = effect.points
        x = points["level"].map(position).to_numpy(dtype=float)
        x = x + rng.uniform(-0.12, 0.12, len(x))
        y = points["objective"].to_numpy(dtype=float)
        finite = np.isfinite(y)
        done = points["converged"].to_numpy(dtype=bool)
        for mask, fill, label in ((done, "full", "converged"), (~done, "none", "not converged")):
            keep = mask & finite
            if keep.any():
                ax.plot(
                    x[keep],
                    y[keep],
                    "o",
                    color="C0",
                    fillstyle=fill,
                    alpha=0.6,
                    markersize=5,
                    label=label,
                )
        ax.plot(range(len(levels)), effect.table["median"], "-", color="C3", label="median")
        ax.set_xticks(range(len(levels)), levels, rotation=30 if effect.binned else 0, fontsize=7)
        ax.set_xlim(-0.5, len(levels) - 0.5)
        ax.set_xlabel(effect.param.name + (" (binned)" if effect.binned else ""))
        ax.set_ylabel(summary.metric)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(FIGURE_TITLES[name] + " (lower is better)", fontsize=11)
    fig.tight_layout()
    return fig


TUNING_TITLE = "Tuning curve: KM median epochs-to-converge per lr, stage 1"


def tuning_figure(
    arms: list[tuple[str, list[tuple[float, float | None]], float]], budget: int
) -> Figure:
    """Stage 1 of a tuned protocol: per arm, the KM median epochs at each lr (log axis),
    a hollow marker above the budget where the median was not reached, the picked lr
    ringed.

    Args:
        arms: ``(label, [(lr, median or None), ...], chosen lr)`` per arm.
        budget: the epoch budget (where "not reached" is drawn, one above it).
    """
    fig, ax = plt.subplots(figsize=(10.5, 4.6))
    if not arms:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "not enough data: no stage-1 trials", ha="center", va="center")
        ax.set_title(TUNING_TITLE, fontsize=11)
        return fig
    colours = colours_of([label for label, _, _ in arms])
    top = budget + 1
    for label, points, chosen in arms:
        ys = {lr: top if m is None else m for lr, m in points}
        ax.plot(list(ys), list(ys.values()), "-", color=colours[label], label=label, alpha=0.8)
        for lr, m in points:
            fill = "none" if m is None else "full"
            ax.plot(lr, ys[lr], "o", color=colours[label], fillstyle=fill)
        ax.plot(chosen, ys[chosen], "o", markersize=13, fillstyle="none", color=colours[label])
    ax.axhline(top, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    ax.text(
        0.01,
        top,
        "not reached",
        va="bottom",
        fontsize=8,
        color="grey",
        transform=ax.get_yaxis_transform(),
    )  # x in axes fraction, y in data
    ax.set_xlabel("learning rate (ringed: the arm's pick)")
    ax.set_ylabel("KM median epochs to converge")
    ax.set_title(TUNING_TITLE, fontsize=11)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.subplots_adjust(left=0.08, right=0.66, bottom=0.13)
    return fig

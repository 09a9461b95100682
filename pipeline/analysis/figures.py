"""The report's figures, drawn with matplotlib from a study's tables.

Every report has the same :data:`FIGURES`, written by :func:`write_figures` as
``<name>.png`` (:data:`DPI` dots per inch) with an ``<name>.svg`` beside each: a figure
the study's data cannot support is still written, saying "not enough data: ..." and why.
The Kaplan-Meier curves are :func:`pipeline.analysis.survival.km_curve`
(``scipy.stats.ecdf``), the estimator of every median the report quotes; curves that
coincide get distinct line styles and markers, a small offset and a legend note. The
learning curves, the objective against each searched parameter and the tuning curve are
in :mod:`pipeline.analysis.figures_curves`. This module reads tables; it knows nothing of
Optuna, MLflow or Ray.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # after matplotlib.use: the backend must be chosen first
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from models.spec import OUTCOMES
from pipeline.analysis.binning import MAX_BINS, bin_labels, curve_labels, panel_labels
from pipeline.analysis.judging import C4_RANGE, XAVIER
from pipeline.analysis.survival import km_curve, time_to_event
from pipeline.safeout import replace_file

if TYPE_CHECKING:
    from pipeline.analysis.summary import StudySummary

__all__ = [
    "DPI",
    "FIGURES",
    "FIGURE_TITLES",
    "grad_norm_figure",
    "hidden_stats_figure",
    "km_figure",
    "phase_axes",
    "phase_figure",
    "scheme_label",
    "speedup_figure",
    "step_labels",
    "write_figures",
]

FIGURES: tuple[str, ...] = (
    "km_curves",
    "learning_curves",
    "speedup_vs_seq_len",
    "phase_diagram",
    "hidden_stats",
    "grad_norm",
    "objective_vs_params",
)
"""The figures every report has, written as ``<name>.png`` and ``<name>.svg``."""

FIGURE_TITLES: dict[str, str] = {
    "km_curves": "Kaplan-Meier: fraction of trials not yet converged, by epoch",
    "speedup_vs_seq_len": "Speedup of Xavier over the other schemes vs sequence length",
    "phase_diagram": "Outcome shares: converged, censored, stalled, frozen, diverged",
    "hidden_stats": "Hidden-state variance and saturation share per time step, at init",
    "grad_norm": "Gradient norm |dL/dh_t| per time step, at init",
    "learning_curves": "Validation loss by epoch: median and inter-quartile band per scheme "
    "(a trial that converged and stopped early carries its last loss forward; one that "
    "stopped for another reason counts only while it trained)",
    "objective_vs_params": "The objective against each searched parameter",
}

DPI = 150
"""Resolution of every PNG (the SVG beside it is vector)."""


def write_figures(
    trials: pd.DataFrame,
    steps: pd.DataFrame,
    speedups: pd.DataFrame,
    out_dir: Path,
    *,
    epochs: pd.DataFrame | None = None,
    summary: StudySummary | None = None,
) -> dict[str, Path]:
    """Draw every one of :data:`FIGURES`; write ``out_dir/<name>.png`` and ``<name>.svg``.

    Args:
        trials, steps, epochs: the study's ``trials``, ``steps`` and ``epochs`` tables
            (no ``epochs``: the learning curves say "not enough data").
        speedups: Xavier's speedups (``pipeline.analysis.speedup_rule.xavier_speedups``).
        out_dir: an existing folder (files are overwritten).
        summary: the study summary (``pipeline.analysis.summary.study_summary``) the
            objective-vs-parameter figure draws (None: a placeholder).

    Returns:
        ``{name: PNG path}`` in the order of :data:`FIGURES`.
    """
    import pipeline.analysis.figures_curves as fc  # it draws with this module's helpers

    drawers: dict[str, Callable[[], Figure]] = {
        "km_curves": lambda: km_figure(trials),
        "learning_curves": lambda: fc.learning_curves_figure(
            trials, epochs if epochs is not None else pd.DataFrame()
        ),
        "objective_vs_params": lambda: fc.objective_figure(summary),
        "speedup_vs_seq_len": lambda: speedup_figure(speedups),
        "phase_diagram": lambda: phase_figure(trials),
        "hidden_stats": lambda: hidden_stats_figure(steps),
        "grad_norm": lambda: grad_norm_figure(steps),
    }
    files: dict[str, Path] = {}
    for name in FIGURES:
        files[name] = save_figure(drawers[name](), out_dir / f"{name}.png")
    return files


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI` and as an SVG beside it; close it.

    The SVG keeps its text as text and carries no date, so a rerun on the same data writes
    the same bytes. Each file replaces what was there (a link planted under its name is
    replaced, not followed: :func:`pipeline.safeout.replace_file`). Returns the PNG's path.
    """
    png, svg = io.BytesIO(), io.BytesIO()
    try:
        fig.savefig(png, format="png", dpi=DPI)
        with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "initstudy"}):
            fig.savefig(svg, format="svg", metadata={"Date": None})
    finally:
        plt.close(fig)
    replace_file(path, png.getvalue())
    replace_file(path.with_suffix(".svg"), svg.getvalue())
    return path


def not_enough(name: str, reason: str) -> Figure:
    """A placeholder figure that says why it could not be drawn."""
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.set_axis_off()
    ax.text(
        0.5,
        0.5,
        f"not enough data: {reason}",
        ha="center",
        va="center",
        wrap=True,
        fontsize=11,
        transform=ax.transAxes,
    )
    ax.set_title(FIGURE_TITLES[name], fontsize=11)
    return fig


def scheme_label(frame: pd.DataFrame, with_scale: bool | None = None) -> pd.Series:
    """A readable scheme name per row: init, "/rec" override, " x scale" if scales vary."""
    label = frame["init"].astype(str)
    rec = frame["init_recurrent"]
    if rec.notna().any():
        label = label + rec.astype(object).map(lambda r: "" if pd.isna(r) else f" / Whh {r}")
    if with_scale is None:
        with_scale = frame["scale"].nunique() > 1
    if with_scale:
        label = label + frame["scale"].map(lambda s: f" x{float(s):g}")
    return label


def curve_frame(trials: pd.DataFrame) -> tuple[pd.DataFrame, list[str], list[str]]:
    """``trials`` with a curve ``label`` (scheme, binned scale and hidden) and a ``panel``
    (seq_len, binned) per row (:mod:`pipeline.analysis.binning`); the panels in order; the
    parameters pooled to keep the legends short."""
    labels, pooled = curve_labels(trials, scheme_label(trials, with_scale=False))
    panels, order = panel_labels(trials["seq_len"])
    return trials.assign(label=labels.to_numpy(), panel=panels.to_numpy()), order, pooled


def pooled_note(pooled: list[str]) -> str:
    """``"; pooled over scale"`` for a figure title (``""`` when nothing is pooled)."""
    return f"; pooled over {', '.join(pooled)}" if pooled else ""


def grid_of(n: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    size = (max(width * cols, 8.0), height * rows + 0.4)  # room for the suptitle
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


def colours_of(labels: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


KM_LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")
KM_MARKERS: tuple[str, ...] = ("o", "s", "^", "D", "v")
"""Line style and marker per scheme of the KM figure, each in turn (20 pairs before one
repeats): curves that coincide stay distinguishable without colour."""
KM_OFFSET = 0.012
"""How far (in survival fraction) a KM curve identical to one drawn before is shifted up."""


def km_figure(trials: pd.DataFrame) -> Figure:
    """KM "fraction not yet converged" vs epoch, one line per scheme, a panel per seq_len.

    Each scheme has its own line style and marker (:data:`KM_MARKERS`); a curve identical to
    one already drawn in its panel is shifted up by :data:`KM_OFFSET` per earlier twin and
    its legend entry says "identical to ..."."""
    if trials.empty:
        return not_enough("km_curves", "the study has no complete trials")
    frame, lengths, pooled = curve_frame(trials)
    labels = sorted(frame["label"].unique())
    colours = colours_of(labels)
    styles = {
        label: (KM_LINESTYLES[i % len(KM_LINESTYLES)], KM_MARKERS[i % len(KM_MARKERS)])
        for i, label in enumerate(labels)
    }
    fig, axes = grid_of(len(lengths))
    budget = float(frame["max_epochs"].max())
    for ax, seq_len in zip(axes, lengths, strict=True):
        part = frame[frame["panel"] == seq_len]
        drawn: list[tuple[str, np.ndarray, np.ndarray]] = []
        for label, group in part.groupby("label", sort=True):
            durations, events = time_to_event(group)
            times, surv = km_curve(durations, events)
            times = np.append(times, max(float(durations.max()), times[-1]))
            surv = np.append(surv, surv[-1])
            twins = [
                other
                for other, t, s in drawn
                if len(t) == len(times) and np.allclose(t, times) and np.allclose(s, surv)
            ]
            drawn.append((str(label), times, surv))
            shown = surv + KM_OFFSET * len(twins)
            note = f", identical to {twins[0]}" if twins else ""
            colour = colours[label]
            linestyle, marker = styles[str(label)]
            ax.step(
                times,
                shown,
                where="post",
                color=colour,
                linestyle=linestyle,
                marker=marker,
                markersize=4,
                fillstyle="none",
                label=f"{label} (n={len(group)}{note})",
            )
            cens = durations[~events]
            if len(cens):
                level = [shown[np.searchsorted(times, c, side="right") - 1] for c in cens]
                ax.plot(cens, level, "|", color=colour, markersize=10, markeredgewidth=1.5)
        ax.set_xlim(0, budget * 1.02)
        ax.set_ylim(-0.03, 1.03 + KM_OFFSET * len(labels))
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction not yet converged")
        ax.set_title(f"seq_len {seq_len}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(FIGURE_TITLES["km_curves"] + " (| = censored)" + pooled_note(pooled), fontsize=11)
    fig.tight_layout()
    return fig


def speedup_figure(speedups: pd.DataFrame) -> Figure:
    """Speedup of Xavier over each scheme vs seq_len, CI bars, lower bounds as triangles."""
    name = "speedup_vs_seq_len"
    if speedups is None or speedups.empty:
        return not_enough(name, "needs xavier and at least one other scheme at scale 1")
    est = pd.to_numeric(speedups["speedup"], errors="coerce").astype(float)
    if not np.isfinite(est).any():
        return not_enough(
            name, "no speedup could be estimated (xavier's median epochs was never reached)"
        )
    frame = speedups.assign(est=est)
    dims = [c for c in ("task", "cell", "hidden", "device_type") if frame[c].nunique() > 1]
    frame["line"] = "over " + frame["other"].astype(str)
    for dim in dims:
        frame["line"] = frame["line"] + frame[dim].map(lambda v, d=dim: f", {d} {v}")
    colours = colours_of(list(dict.fromkeys(frame["line"])))
    fig, ax = plt.subplots(figsize=(8, 4.8))
    low, high = C4_RANGE
    ax.axhspan(low, high, color="#2da44e", alpha=0.12, label=f"claimed {low:g}-{high:g}x")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    lengths = sorted(frame["seq_len"].unique())
    lines = list(colours)
    width = 0.35 / max(len(lines), 1)
    positions = {s: i for i, s in enumerate(lengths)}
    shown: list[float] = [0.8, 15.0]  # keep 1x and the claimed band in view
    for k, line in enumerate(lines):
        part = frame[(frame["line"] == line) & np.isfinite(frame["est"])].sort_values("seq_len")
        if part.empty:
            continue
        x = np.array([positions[s] for s in part["seq_len"]]) + (k - (len(lines) - 1) / 2) * width
        y = part["est"].to_numpy()
        bound = part["lower_bound"].astype(bool).to_numpy()
        colour = colours[line]
        ax.plot(x, y, "-", color=colour, alpha=0.5, lw=1, label=line)
        exact = ~bound
        if exact.any():
            lo = pd.to_numeric(part["lo"], errors="coerce").astype(float).to_numpy()[exact]
            hi = pd.to_numeric(part["hi"], errors="coerce").astype(float).to_numpy()[exact]
            ye = y[exact]
            yerr = np.vstack([np.nan_to_num(ye - lo, nan=0.0), np.nan_to_num(hi - ye, nan=0.0)])
            ax.errorbar(
                x[exact], ye, yerr=np.clip(yerr, 0, None), fmt="o", color=colour, capsize=3
            )
            shown += [*lo[np.isfinite(lo)], *hi[np.isfinite(hi)]]
        if bound.any():
            ax.plot(x[bound], y[bound], "^", color=colour, markersize=9)
            for xi, yi in zip(x[bound], y[bound], strict=True):
                ax.annotate(
                    "",
                    xy=(xi, yi * 1.8),
                    xytext=(xi, yi),
                    arrowprops={"arrowstyle": "->", "color": colour},
                )
        shown += [*y, *(y[bound] * 1.8)]
    for seq_len, pos in positions.items():
        if not np.isfinite(frame.loc[frame["seq_len"] == seq_len, "est"]).any():
            ax.annotate(
                f"no estimate:\n{XAVIER}'s median\nnot reached",
                xy=(pos, 0.04),
                xycoords=("data", "axes fraction"),
                ha="center",
                fontsize=7,
                color="#57606a",
            )
    ax.plot([], [], "ko", label="estimate, 95% CI")
    ax.plot([], [], "k^", label="lower bound (other's median not reached)")
    ax.set_yscale("log")
    ax.set_ylim(min(shown) / 1.3, max(shown) * 1.3)
    ax.set_xticks(range(len(lengths)), [str(s) for s in lengths])
    ax.set_xlim(-0.6, len(lengths) - 0.4)
    ax.set_xlabel("sequence length")
    ax.set_ylabel("speedup of Xavier (x, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(FIGURE_TITLES[name], fontsize=11)
    fig.tight_layout()
    return fig


PHASE_PANELS = (
    ("converged", "Greens"),
    ("censored", "Oranges"),
    ("stalled", "Oranges"),
    ("frozen", "Blues"),
    ("diverged", "Reds"),
)
"""The outcome shares the phase diagram draws, with their colour maps."""


PHASE_AXES = ("seq_len", "hidden", "scale", "lr")
"""The axes the phase diagram may take, in order of preference: the first two the study
searched (varied) are its x and y; hidden comes before scale, the question's axis."""


def phase_axes(trials: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The study's searched axes the phase diagram draws (x, then y; at most two) and those
    it pools over."""
    searched = [c for c in PHASE_AXES if c in trials and trials[c].nunique() > 1]
    return searched[:2], searched[2:]


def _binned(values: pd.Series) -> tuple[pd.Series, list[str]]:
    """Each value's label (quantile bins past :data:`MAX_BINS` values) and the labels in
    increasing order."""
    labels = bin_labels(values, MAX_BINS).astype(str)
    order = pd.to_numeric(values).groupby(labels).min().sort_values().index.astype(str)
    return labels, order.tolist()


def phase_figure(trials: pd.DataFrame) -> Figure:
    """Outcome shares over the study's searched axes (:func:`phase_axes`: seq_len, hidden,
    scale, lr, the first two that vary; continuous ones in quantile bins), a row per
    scheme; with one searched axis or none, the schemes are the y axis."""
    name = "phase_diagram"
    if trials.empty:
        return not_enough(name, "the study has no complete trials")
    frame = trials.copy()
    for outcome in OUTCOMES:
        frame[f"is_{outcome}"] = frame["outcome"] == outcome
    (drawn, pooled) = phase_axes(frame)
    order: dict[str, list[str]] = {}
    for axis in drawn:
        frame[axis], order[axis] = _binned(frame[axis])
    xdim = drawn[0] if drawn else "seq_len"
    if xdim not in order:
        frame[xdim], order[xdim] = _binned(frame[xdim])
    if len(drawn) < 2:
        ydim = "scheme"
        frame["scheme"] = scheme_label(frame, with_scale=False)
        order["scheme"] = sorted(set(frame["scheme"]))
        panels: list[tuple[str, pd.DataFrame]] = [("", frame)]
    else:
        ydim = drawn[1]
        frame["panel"] = scheme_label(frame, with_scale=False)
        panels = [(str(k), g) for k, g in frame.groupby("panel", sort=True)]
    xs, ys = order[xdim], order[ydim]
    fig, axes = plt.subplots(
        len(panels),
        len(PHASE_PANELS),
        figsize=(
            max(3.2, 0.7 * len(xs)) * len(PHASE_PANELS) + 1.5,
            0.45 * len(ys) * len(panels) + 1.6 * len(panels),
        ),
        squeeze=False,
    )
    for r, (panel, group) in enumerate(panels):
        counts = group.groupby([ydim, xdim]).agg(
            n=("trial_number", "size"),
            **{outcome: (f"is_{outcome}", "mean") for outcome in OUTCOMES},
        )
        for c, (outcome, cmap) in enumerate(PHASE_PANELS):
            ax = axes[r][c]
            grid = np.full((len(ys), len(xs)), np.nan)
            for (yv, xv), row in counts.iterrows():
                grid[ys.index(str(yv)), xs.index(str(xv))] = float(row[outcome])
            ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", origin="lower")
            for i in range(len(ys)):
                for j in range(len(xs)):
                    if not np.isnan(grid[i, j]):
                        ax.text(
                            j,
                            i,
                            f"{grid[i, j]:.0%}",
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="black" if grid[i, j] < 0.6 else "white",
                        )
            ax.set_xticks(range(len(xs)), xs, fontsize=7, rotation=30 if len(xs) > 4 else 0)
            ax.set_yticks(range(len(ys)), ys, fontsize=8)
            ax.set_xlabel(xdim)
            if c == 0:
                ax.set_ylabel(f"{panel}\n{ydim}" if panel else ydim)
            ax.set_title(outcome if r == 0 else "", fontsize=10)
    note = f"{xdim} x {ydim}" + pooled_note(pooled)
    fig.suptitle(f"{FIGURE_TITLES[name]} ({note})", fontsize=11)
    fig.tight_layout()
    return fig


def _tick(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def step_labels(steps: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """A curve label per row of ``steps``: the trial's scheme and, where they vary, its
    scale and hidden size binned over the trials (:func:`curve_labels`, one row per trial),
    so at most :data:`~pipeline.analysis.binning.MAX_LEGEND` lines where the schemes allow;
    and the parameters pooled."""
    first = steps.drop_duplicates("trial_number")
    labels, pooled = curve_labels(first, scheme_label(first, with_scale=False))
    by_trial = dict(zip(first["trial_number"], labels, strict=True))
    return steps["trial_number"].map(by_trial).astype(str), pooled


def _per_step(steps: pd.DataFrame, column: str) -> pd.DataFrame:
    """Median of ``column`` over trials, per curve label (``label``) and time step."""
    frame = steps if "label" in steps else steps.assign(label=scheme_label(steps))
    return frame.groupby(["label", "step"])[column].median().unstack("label").sort_index()


def _predictions(steps: pd.DataFrame) -> dict[str, Any]:
    """Mean-field predictions (``models.theory``) per scheme label, for its commonest
    (task, cell, hidden, seq_len) (the middle one on a tie, as the plotted medians mix
    them); only where the theory applies."""
    from models.theory import predict

    out: dict[str, Any] = {}
    frame = steps[steps["step"] == 0]
    if "label" not in frame:
        frame = frame.assign(label=scheme_label(frame))
    keys = ["task", "cell", "hidden", "seq_len"]
    for label, group in frame.groupby("label", sort=True):
        sizes = group.groupby(keys).size()
        common = sizes[sizes == sizes.max()].sort_index()
        row = common.index[len(common) // 2]  # the middle one of the commonest, like a median
        first = group.set_index(keys).loc[[row]].iloc[0]
        pred = predict(
            task=str(row[0]),
            cell=str(row[1]),
            hidden=int(row[2]),
            seq_len=int(row[3]),
            init=str(first["init"]),
            init_recurrent=None
            if pd.isna(first["init_recurrent"])
            else str(first["init_recurrent"]),
            scale=float(first["scale"]),
            recurrent_scale=float(first["recurrent_scale"]),
        )
        if pred.applies:
            out[str(label)] = pred
    return out


def hidden_stats_figure(steps: pd.DataFrame) -> Figure:
    """Median hidden variance and saturation share per time step, one line per scheme, with
    the mean-field prediction dashed beside each."""
    name = "hidden_stats"
    if steps.empty:
        return not_enough(name, "the study recorded no per-step init diagnostics")
    labels, pooled = step_labels(steps)
    steps = steps.assign(label=labels)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    variance = _per_step(steps, "hidden_var")
    saturation = _per_step(steps, "hidden_sat")
    colours = colours_of(list(variance.columns))
    for label in variance.columns:
        axes[0].plot(variance.index, variance[label], color=colours[label], label=label)
        axes[1].plot(saturation.index, saturation[label], color=colours[label], label=label)
    for label, pred in _predictions(steps).items():
        if label not in colours:
            continue
        t = range(len(pred.hidden_var))
        style = {"color": colours[label], "linestyle": "--", "linewidth": 1.0, "alpha": 0.8}
        axes[0].plot(t, pred.hidden_var, **style)
        axes[1].plot(t, pred.hidden_sat, **style)
    axes[0].plot([], [], color="grey", linestyle="--", label="mean-field theory")
    axes[0].set_ylabel("hidden-state variance (median over trials)")
    axes[1].set_ylabel("share of units with |h| > 0.99")
    axes[1].set_ylim(-0.03, 1.03)
    for ax in axes:
        ax.set_xlabel("time step t")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(FIGURE_TITLES[name] + pooled_note(pooled), fontsize=11)
    fig.tight_layout()
    return fig


def grad_norm_figure(steps: pd.DataFrame) -> Figure:
    """Median |dL/dh_t| per time step and scheme, log y, a panel per seq_len."""
    name = "grad_norm"
    if steps.empty:
        return not_enough(name, "the study recorded no per-step init diagnostics")
    values = pd.to_numeric(steps["grad_norm"], errors="coerce").astype(float)
    positive = values.where(values > 0)  # 0 = underflow; a log axis cannot show it
    if not np.isfinite(positive).any():
        return not_enough(name, "every recorded gradient norm is zero or missing")
    curves, pooled = step_labels(steps)
    frame = steps.assign(grad_norm=positive, label=curves)
    frame["panel"], lengths = panel_labels(frame["seq_len"])
    labels = sorted(set(frame["label"]))
    colours = colours_of(labels)
    fig, axes = grid_of(len(lengths))
    for ax, seq_len in zip(axes, lengths, strict=True):
        table = _per_step(frame[frame["panel"] == seq_len], "grad_norm")
        for label in table.columns:
            few = int(table[label].notna().sum()) <= 3  # a lone point draws no line
            ax.plot(
                table.index,
                table[label],
                color=colours[label],
                label=label,
                marker="o" if few else None,
                markersize=4,
            )
        predictions = _predictions(frame[frame["panel"] == seq_len])
        for label, pred in predictions.items():
            last = table[label].dropna() if label in table else pd.Series(dtype=float)
            if last.empty or not np.isfinite(pred.chi):
                continue
            # Back through time the squared norm shrinks or grows by chi per step.
            t_end = float(last.index[-1])
            steps = np.asarray(table.index, dtype=float)
            line = float(last.iloc[-1]) * pred.chi ** ((t_end - steps) / 2)
            ax.plot(steps, line, color=colours[label], linestyle="--", linewidth=1.0, alpha=0.8)
        if predictions:
            ax.plot([], [], color="grey", linestyle="--", label="mean-field chi")
        ax.set_yscale("log")
        ax.set_xlabel("time step t")
        ax.set_ylabel("|dL/dh_t| (median over trials)")
        ax.set_title(f"seq_len {seq_len}", fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    note = " (zeros, i.e. underflow, not drawn" + pooled_note(pooled) + ")"
    fig.suptitle(FIGURE_TITLES[name] + note, fontsize=11)
    fig.tight_layout()
    return fig

"""Claim verdicts: the six claims of DESIGN.md, each judged from a study's tables.

:func:`judge` turns a :class:`~pipeline.results.StudyTables` into six :class:`Verdict`
records, C1 to C6 in order. Each one names the rule it applied, in words a reader can
check against the numbers it quotes, and carries the table behind it. A claim the study
has no data for is ``"not measured by this study"``, with what would be needed.

Unless a rule says otherwise, "the scheme" means trials whose init scheme is applied to
every matrix (no per-matrix ``init_recurrent`` override) at scale (gain) 1: uniform[0,1]
is U[0, 1], not a rescaled copy of it.

The rules and their thresholds
------------------------------
C1, Xavier keeps hidden-state variance roughly constant (~1) across time steps.
    Xavier trials on the tanh Elman cell (:data:`TANH_CELLS`), from the per-step init
    diagnostics. Per trial: the *ratio* of the hidden variance at the last step to its
    mean over the first :data:`C1_EARLY_STEPS` steps, and the *level* (the variance at the
    last step). With the medians over trials: supported if the ratio and the level both
    lie in :data:`C1_RATIO_RANGE` / :data:`C1_LEVEL_RANGE` ([0.5, 2]); partly supported if
    the ratio does but the level does not (constant, but not ~1); refuted otherwise.
C2, uniform[0,1] makes the signal vanish for large hidden sizes.
    Per cell type, at the largest hidden size that has uniform[0,1] trials: the median
    last-step saturation share (abs(h) > 0.99) must exceed :data:`C2_MIN_SATURATION` (0.9)
    and the median last-step hidden variance must be below :data:`C2_MAX_VAR_RATIO` (0.1)
    times Xavier's at the same cell type and size (below :data:`C2_ABS_VAR` = 0.01 when the
    study has no Xavier trials there). With several sizes, saturation must also not fall as
    the size grows (each size at least the previous one's minus
    :data:`C2_TREND_TOLERANCE` = 0.02). Supported if all hold; refuted if neither the
    saturation nor the variance test holds; partly supported otherwise.
C3, recurrent gain > 1 explodes gradients back through time, < 1 vanishes.
    Needs one recurrent scheme at scales on both sides of 1. Per (scheme, cell type, scale,
    hidden, seq_len) the median of log10(|dL/dh_0| / |dL/dh_T|) at init (negative:
    vanishing towards the first step; positive: exploding), with the spectral radius of
    Whh alongside. Supported if it is negative for every scale < 1 and positive for every
    scale > 1; partly supported if only one side holds; refuted if neither does.
C4, Xavier cuts epochs-to-convergence 2-10x against uniform[0,1] (the headline).
    Per (task, cell type, hidden, seq_len, device type): the speedup of Xavier over
    uniform[0,1] (Kaplan-Meier median epochs of uniform[0,1] / Xavier's) with its 95%
    bootstrap CI, from :func:`pipeline.stats.speedup_table`. A cell is "within 2-10x" if
    the estimate lies in :data:`C4_RANGE`; a lower bound "> b" (uniform[0,1]'s median not
    reached) is within if 2 <= b <= 10 and "at least 10x" if b > 10; "below 2x" if the
    CI's upper end is < 2; "above 10x" if the CI's lower end is > 10; "inconclusive"
    otherwise, including when Xavier's own median was not reached. Supported if every
    cell is within; refuted if every cell is below 2x or above 10x (or at least 10x);
    partly supported if some cells are within and others below/above; inconclusive
    otherwise. The details also hold Xavier's speedup over every other scheme in the
    study; those rows do not enter the verdict.
C5, uniform[0,1] works for tiny models and short sequences, fails at scale.
    Per cell type, over the (hidden, seq_len) cells with uniform[0,1] trials: the smallest
    cell (least hidden x seq_len) and the largest. Refuted if the smallest cell's
    convergence rate is below :data:`C5_WORKS_RATE` (0.5): it fails even there. Supported
    if it converges there and at least :data:`C5_FAILS_RATE` (0.5) of the largest cell's
    trials diverged (loss exploded or NaN). Partly supported otherwise: it fails at scale
    by never converging (censored) rather than by diverging, or the largest cell still
    converges. Not measured with a single cell.
C6, He suits ReLU, orthogonal preserves norm exactly, Xavier is the safe default for tanh.
    Three sub-checks, each only where the study has the data: (a) orthogonal Whh at scale
    1 has spectral radius within :data:`C6_ORTHO_TOL` (1e-4) of 1 in every trial; (b)
    he_normal on rnn_relu converges at least as often as Xavier on rnn_relu (same cells);
    (c) Xavier on rnn_tanh never diverges and converges within :data:`C6_TANH_RATE_GAP`
    (0.1) of the best scheme's rate on rnn_tanh (same cells, at least one other scheme).
    Supported if every measured sub-check holds, refuted if none does, partly supported
    if some do; not measured if none could be measured.

Sub-verdicts over several cell types (C2, C3, C5) combine as: all the same -> that
verdict; otherwise partly supported. This module reads tables; it knows nothing of
Optuna, MLflow or Ray.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from pipeline.results import StudyTables

__all__ = [
    "C1_EARLY_STEPS",
    "C1_LEVEL_RANGE",
    "C1_RATIO_RANGE",
    "C2_ABS_VAR",
    "C2_MAX_VAR_RATIO",
    "C2_MIN_SATURATION",
    "C2_TREND_TOLERANCE",
    "C4_RANGE",
    "C5_FAILS_RATE",
    "C5_WORKS_RATE",
    "C6_ORTHO_TOL",
    "C6_TANH_RATE_GAP",
    "CLAIMS",
    "TANH_CELLS",
    "VERDICTS",
    "Verdict",
    "judge",
]

SUPPORTED = "supported"
REFUTED = "refuted"
PARTLY = "partly supported"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured by this study"
VERDICTS: tuple[str, ...] = (SUPPORTED, REFUTED, PARTLY, INCONCLUSIVE, NOT_MEASURED)
"""Every verdict a claim can get."""

CLAIMS: dict[str, str] = {
    "C1": "Xavier keeps hidden-state variance roughly constant (~1) across time steps",
    "C2": "uniform[0,1] (mean 0.5, variance 1/12) makes the signal vanish for large hidden sizes",
    "C3": "recurrent weights with gain > 1 explode gradients back through time, < 1 vanish",
    "C4": "Xavier cuts epochs-to-convergence 2–10x (headline)",
    "C5": "uniform[0,1] works for tiny models and short sequences, fails at scale "
    "(loss explodes or NaN)",
    "C6": "He suits ReLU, orthogonal preserves norm exactly, Xavier is the safe default for tanh",
}
"""The claims under test, as DESIGN.md's table words them."""

XAVIER = "xavier"
UNIFORM = "uniform01"
TANH_CELLS: tuple[str, ...] = ("rnn_tanh",)
"""Cells whose hidden state is tanh(...) of the recurrence, where C1 is asked."""

C1_EARLY_STEPS = 3
"""C1: the reference level is the mean hidden variance over this many first steps."""
C1_RATIO_RANGE = (0.5, 2.0)
"""C1: "roughly constant": last-step / early variance within this range."""
C1_LEVEL_RANGE = (0.5, 2.0)
"""C1: "~1": last-step variance within this range."""
C2_MIN_SATURATION = 0.9
"""C2: "vanished": more than this share of units saturated (abs(h) > 0.99) at the last step."""
C2_MAX_VAR_RATIO = 0.1
"""C2: "vanished": last-step hidden variance below this fraction of Xavier's."""
C2_ABS_VAR = 0.01
"""C2: the variance bound when the study has no Xavier trials to compare with."""
C2_TREND_TOLERANCE = 0.02
"""C2: saturation "does not fall" with size: each size >= the previous one's minus this."""
C4_RANGE = (2.0, 10.0)
"""C4: the claimed range of the speedup."""
C5_WORKS_RATE = 0.5
"""C5: "works": at least this share of the smallest cell's trials converged."""
C5_FAILS_RATE = 0.5
"""C5: "loss explodes or NaN": at least this share of the largest cell's trials diverged."""
C6_ORTHO_TOL = 1e-4
"""C6: "preserves norm exactly": abs(spectral radius of Whh - 1) at most this."""
C6_TANH_RATE_GAP = 0.1
"""C6: "safe default": Xavier's convergence rate at most this far below the best scheme's."""


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict, the rule that gave it and the numbers that decided it."""

    claim_id: str
    """"C1" .. "C6"."""
    claim: str
    """The claim's text (DESIGN.md's table)."""
    verdict: str
    """One of :data:`VERDICTS`."""
    rule: str
    """The rule applied, in words a reader can check ("supported if ...; refuted if ...")."""
    evidence: str
    """The numbers that decided it, one or two sentences."""
    details: pd.DataFrame | None = None
    """The table behind it, when there is one."""


def judge(tables: StudyTables, *, n_boot: int = 2000, seed: int = 0) -> list[Verdict]:
    """Judge all six claims against one study's tables.

    Args:
        tables: the study's trials, epochs and steps tables (``pipeline.results``).
        n_boot: bootstrap resamples for C4's speedup intervals.
        seed: seed for the bootstrap.

    Returns:
        Six verdicts, C1 to C6 in order; each ``verdict`` is one of :data:`VERDICTS`.
    """
    trials, steps = tables.trials, tables.steps
    return [
        judge_c1(trials, steps),
        judge_c2(trials),
        judge_c3(trials),
        judge_c4(trials, n_boot=n_boot, seed=seed),
        judge_c5(trials),
        judge_c6(trials),
    ]


# --------------------------------------------------------------------------- helpers


def plain_scheme(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose scheme is applied to every matrix (no recurrent override) at scale 1."""
    if frame.empty:
        return frame
    mask = frame["init_recurrent"].isna() & np.isclose(frame["scale"].astype(float), 1.0)
    return frame[mask]


def recurrent_scheme(frame: pd.DataFrame) -> pd.Series:
    """The scheme that drew Whh: ``init_recurrent`` where set, else ``init``."""
    rec = frame["init_recurrent"].astype(object)
    return rec.where(rec.notna(), frame["init"].astype(object)).astype(str)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for evidence text: 3 significant digits, "n/a" for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _rate(series: pd.Series) -> float:
    return float(series.astype(bool).mean()) if len(series) else math.nan


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def _combine(verdicts: Iterable[str]) -> str:
    """Combine per-cell-type sub-verdicts: all the same -> that, else partly supported."""
    found = [v for v in verdicts if v != NOT_MEASURED]
    if not found:
        return NOT_MEASURED
    if all(v == found[0] for v in found):
        return found[0]
    return PARTLY


def _cell_label(row: pd.Series, dims: list[str]) -> str:
    """E.g. "hidden 64, seq_len 30" from the dims that vary (seq_len always)."""
    parts = []
    for dim in dims:
        value = row[dim]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(f"{value}" if dim in ("cell", "task", "device_type") else f"{dim} {value}")
    return ", ".join(parts)


def _varying(
    frame: pd.DataFrame, candidates: list[str], always: tuple[str, ...] = ()
) -> list[str]:
    return [c for c in candidates if c in always or frame[c].nunique(dropna=False) > 1]


# --------------------------------------------------------------------------- C1


def judge_c1(trials: pd.DataFrame, steps: pd.DataFrame) -> Verdict:
    """C1 from the per-step hidden variance of Xavier trials at init (see module docs)."""
    lo_r, hi_r = C1_RATIO_RANGE
    lo_l, hi_l = C1_LEVEL_RANGE
    rule = (
        f"Xavier, {'/'.join(TANH_CELLS)}, scale 1, per-step hidden variance at init. Per trial: "
        f"ratio = variance at the last step / mean over the first {C1_EARLY_STEPS} steps; "
        f"level = variance at the last step. Supported if the median ratio is in "
        f"[{lo_r:g}, {hi_r:g}] and the median level in [{lo_l:g}, {hi_l:g}]; partly supported "
        "if only the ratio is (constant but not ~1); refuted otherwise."
    )
    rows = plain_scheme(steps)
    if not rows.empty:
        rows = rows[(rows["init"] == XAVIER) & rows["cell"].isin(TANH_CELLS)]
    if rows.empty:
        return Verdict(
            "C1",
            CLAIMS["C1"],
            NOT_MEASURED,
            rule,
            "needs Xavier trials on rnn_tanh at scale 1 (their per-step init diagnostics); "
            "this study has none.",
        )
    per_trial = []
    for trial_number, group in rows.sort_values("step").groupby("trial_number", sort=True):
        var = group["hidden_var"].astype(float).to_numpy()
        early = float(np.mean(var[:C1_EARLY_STEPS]))
        last = float(var[-1])
        ratio = last / early if early > 0 else math.nan
        first = group.iloc[0]
        per_trial.append(
            {
                "trial_number": trial_number,
                "seq_len": int(first["seq_len"]),
                "hidden": int(first["hidden"]),
                "seed": int(first["seed"]),
                "steps": len(var),
                "early_var": early,
                "last_var": last,
                "ratio": ratio,
            }
        )
    details = pd.DataFrame(per_trial)
    if not np.isfinite(details["ratio"]).any():
        return Verdict(
            "C1",
            CLAIMS["C1"],
            NOT_MEASURED,
            rule,
            f"needs finite per-step hidden variances; the {len(details)} Xavier trials here "
            "have none (non-finite or zero at the first steps).",
            details,
        )
    ratio = float(details["ratio"].median(skipna=True))
    level = float(details["last_var"].median(skipna=True))
    ratio_ok = lo_r <= ratio <= hi_r
    level_ok = lo_l <= level <= hi_l
    verdict = SUPPORTED if ratio_ok and level_ok else PARTLY if ratio_ok else REFUTED
    by_len = details.groupby("seq_len").agg(
        ratio=("ratio", "median"), level=("last_var", "median")
    )
    per_len = "; ".join(
        f"seq_len {n}: ratio {fmt(r.ratio)}, level {fmt(r.level)}" for n, r in by_len.iterrows()
    )
    evidence = (
        f"{len(details)} Xavier trials: median last/early variance ratio {fmt(ratio)} "
        f"({'within' if ratio_ok else 'outside'} [{lo_r:g}, {hi_r:g}]), median last-step "
        f"variance {fmt(level)} ({'within' if level_ok else 'outside'} [{lo_l:g}, {hi_l:g}]). "
        f"{per_len}."
    )
    return Verdict("C1", CLAIMS["C1"], verdict, rule, evidence, details)


# --------------------------------------------------------------------------- C2


def judge_c2(trials: pd.DataFrame) -> Verdict:
    """C2 from last-step saturation and variance of uniform[0,1] vs Xavier (module docs)."""
    rule = (
        "uniform01 at scale 1, at the largest hidden size it was run with (per cell type): "
        f"median last-step saturation share > {C2_MIN_SATURATION:g} and median last-step hidden "
        f"variance < {C2_MAX_VAR_RATIO:g} x Xavier's at the same cell type and size (< "
        f"{C2_ABS_VAR:g} if the study has no Xavier there); with several sizes, saturation must "
        f"not fall as size grows (tolerance {C2_TREND_TOLERANCE:g}). Supported if all hold; "
        "refuted if neither the saturation nor the variance test holds; partly supported "
        "otherwise."
    )
    base = plain_scheme(trials)
    if not base.empty:
        base = base[np.isfinite(base["hidden_sat_last"]) & np.isfinite(base["hidden_var_last"])]
    uni = base[base["init"] == UNIFORM] if not base.empty else base
    if uni.empty:
        return Verdict(
            "C2",
            CLAIMS["C2"],
            NOT_MEASURED,
            rule,
            "needs uniform01 trials at scale 1 with finite init diagnostics (ideally at "
            "several hidden sizes, with Xavier at the same sizes); this study has none.",
        )
    xav = base[base["init"] == XAVIER]
    subs: list[str] = []
    texts: list[str] = []
    frames: list[pd.DataFrame] = []
    for cell, group in uni.groupby("cell", sort=True):
        table = group.groupby("hidden").agg(
            n=("trial_number", "size"),
            saturation=("hidden_sat_last", "median"),
            variance=("hidden_var_last", "median"),
        )
        xv = xav[xav["cell"] == cell].groupby("hidden")["hidden_var_last"].median()
        table["xavier_variance"] = xv.reindex(table.index)
        table.insert(0, "cell", cell)
        frames.append(table.reset_index())
        big = int(table.index.max())
        row = table.loc[big]
        sat, var, xvar = float(row["saturation"]), float(row["variance"]), row["xavier_variance"]
        sat_ok = sat > C2_MIN_SATURATION
        if pd.notna(xvar) and float(xvar) > 0:
            var_ok = var < C2_MAX_VAR_RATIO * float(xvar)
            var_text = (
                f"variance {fmt(var)} vs Xavier's {fmt(xvar)} ({fmt(var / float(xvar))}x, "
                f"needs < {C2_MAX_VAR_RATIO:g}x)"
            )
        else:
            var_ok = var < C2_ABS_VAR
            var_text = f"variance {fmt(var)} (no Xavier at that size; needs < {C2_ABS_VAR:g})"
        sats = table["saturation"].astype(float).to_numpy()
        if len(sats) > 1:
            trend_ok = bool(np.all(np.diff(sats) >= -C2_TREND_TOLERANCE))
            sizes = ", ".join(f"{h}: {fmt(s)}" for h, s in zip(table.index, sats, strict=True))
            trend_text = (
                f"saturation by hidden size {sizes} "
                f"({'does not fall' if trend_ok else 'falls'} with size)"
            )
        else:
            trend_ok = True
            trend_text = "one hidden size only, so the trend with size is not measured"
        if sat_ok and var_ok and trend_ok:
            subs.append(SUPPORTED)
        elif not sat_ok and not var_ok:
            subs.append(REFUTED)
        else:
            subs.append(PARTLY)
        texts.append(
            f"{cell}, hidden {big} (n={int(row['n'])}): saturation {fmt(sat)} (needs > "
            f"{C2_MIN_SATURATION:g}), {var_text}; {trend_text}"
        )
    return Verdict(
        "C2",
        CLAIMS["C2"],
        _combine(subs),
        rule,
        "; ".join(texts) + ".",
        pd.concat(frames, ignore_index=True),
    )


# --------------------------------------------------------------------------- C3


def _log_ratio(frame: pd.DataFrame) -> pd.Series:
    """log10(|dL/dh_0| / |dL/dh_T|); -inf when the first-step gradient underflowed to 0."""
    first = frame["grad_norm_first"].astype(float).to_numpy()
    last = frame["grad_norm_last"].astype(float).to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(first) - np.log10(last)
    return pd.Series(out, index=frame.index, dtype=float)


def judge_c3(trials: pd.DataFrame) -> Verdict:
    """C3 from dL/dh_t at the first vs the last step, swept over the gain (module docs)."""
    rule = (
        "per recurrent scheme run at scales on both sides of 1: median over seeds of "
        "log10(|dL/dh_0| / |dL/dh_T|) at init, per (scale, hidden, seq_len); < 0 means the "
        "gradient vanishes back through time, > 0 that it explodes. Supported if it is < 0 for "
        "every scale < 1 and > 0 for every scale > 1; partly supported if only one side holds; "
        "refuted if neither does."
    )
    need = (
        "needs one recurrent scheme run at scales (gains) both below and above 1, e.g. "
        "studies/scale_sweep.yaml"
    )
    if trials.empty:
        return Verdict("C3", CLAIMS["C3"], NOT_MEASURED, rule, need + "; this study has none.")
    frame = trials.assign(scheme=recurrent_scheme(trials), log_ratio=_log_ratio(trials))
    frame = frame[frame["log_ratio"].notna()]
    rows: list[pd.DataFrame] = []
    for (scheme, cell), group in frame.groupby(["scheme", "cell"], sort=True):
        scales = group["scale"].astype(float)
        if (scales < 1 - 1e-9).any() and (scales > 1 + 1e-9).any():
            table = (
                group.groupby(["scale", "hidden", "seq_len"])
                .agg(
                    n=("trial_number", "size"),
                    log_ratio=("log_ratio", "median"),
                    spectral_radius=("spectral_radius", "median"),
                )
                .reset_index()
            )
            table.insert(0, "cell", cell)
            table.insert(0, "scheme", scheme)
            rows.append(table)
    if not rows:
        present = ", ".join(
            f"{s}: {', '.join(fmt(x) for x in sorted(g['scale'].astype(float).unique()))}"
            for s, g in frame.groupby("scheme", sort=True)
        )
        return Verdict(
            "C3",
            CLAIMS["C3"],
            NOT_MEASURED,
            rule,
            f"{need}; this study's scales per scheme are {present or 'none'}.",
        )
    details = pd.concat(rows, ignore_index=True)
    subs = []
    texts = []
    for (scheme, cell), table in details.groupby(["scheme", "cell"], sort=True):
        below = table[table["scale"] < 1 - 1e-9]
        above = table[table["scale"] > 1 + 1e-9]
        vanish_ok = bool((below["log_ratio"] < 0).all())
        explode_ok = bool((above["log_ratio"] > 0).all())
        if vanish_ok and explode_ok:
            subs.append(SUPPORTED)
        elif vanish_ok or explode_ok:
            subs.append(PARTLY)
        else:
            subs.append(REFUTED)
        parts = []
        for scale, group in table.groupby("scale", sort=True):
            lr = group["log_ratio"]
            span = fmt(lr.iloc[0]) if len(lr) == 1 else f"{fmt(lr.min())} to {fmt(lr.max())}"
            parts.append(
                f"scale {fmt(scale)}: radius {fmt(group['spectral_radius'].median())}, "
                f"log10 ratio {span}"
            )
        texts.append(
            f"{scheme}/{cell}: {'; '.join(parts)} (scales < 1 "
            f"{'all vanish' if vanish_ok else 'do not all vanish'}, scales > 1 "
            f"{'all explode' if explode_ok else 'do not all explode'})"
        )
    return Verdict("C3", CLAIMS["C3"], _combine(subs), rule, ". ".join(texts) + ".", details)


# --------------------------------------------------------------------------- C4

WITHIN = "within 2-10x"
AT_LEAST_10 = "at least 10x"
BELOW = "below 2x"
ABOVE = "above 10x"
CELL_INCONCLUSIVE = "inconclusive"


def classify_speedup(
    estimate: float | None, lo: float | None, hi: float | None, lower_bound: bool
) -> str:
    """One C4 cell's outcome from a speedup estimate, its CI and whether it is a lower bound."""
    low, high = C4_RANGE
    if estimate is None or pd.isna(estimate):
        return CELL_INCONCLUSIVE
    estimate = float(estimate)
    if lower_bound:
        if estimate > high:
            return AT_LEAST_10
        return WITHIN if estimate >= low else CELL_INCONCLUSIVE
    if low <= estimate <= high:
        return WITHIN
    if hi is not None and pd.notna(hi) and float(hi) < low:
        return BELOW
    if lo is not None and pd.notna(lo) and float(lo) > high:
        return ABOVE
    return CELL_INCONCLUSIVE


SPEEDUP_BY: list[str] = ["task", "cell", "hidden", "seq_len"]
"""The cells a speedup is computed in (device type is added by ``speedup_table``)."""


SETTINGS: tuple[str, ...] = (
    "optimizer",
    "lr",
    "clip",
    "batch_size",
    "batches_per_epoch",
    "max_epochs",
    "target_loss",
    "divergence_factor",
    "val_size",
    "data_seed",
    "corpus",
)
"""Trial settings that, where a study varies them per scheme and seed, split speedup cells."""


def speedup_cells(trials: pd.DataFrame) -> list[str]:
    """:data:`SPEEDUP_BY`, plus every setting that varies within one scheme and seed there.

    A speedup cell must hold one trial per scheme and seed (so seeds pair up); settings
    that vary across seeds only (``data_seed`` = ``seed``) do not split it.
    """
    by = list(SPEEDUP_BY)
    if trials.empty:
        return by
    for name in SETTINGS:
        groups = trials.groupby([*by, "device_type", "init", "seed"], dropna=False)[name]
        if (groups.nunique(dropna=False) > 1).any():
            by.append(name)
    return by


def xavier_speedups(trials: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Speedup of Xavier over every other scheme at scale 1, per :data:`SPEEDUP_BY` cell.

    uniform01 comes first (the headline comparison), then the other schemes by name. Each
    row has ``comparison`` ("xavier vs uniform01"), ``other`` and ``speedup_table``'s
    columns, plus ``cell_verdict`` (C4's per-cell outcome) and ``in_verdict`` (True for the
    uniform01 rows, the only ones C4's verdict reads). Empty if Xavier or every other
    scheme is missing.
    """
    from pipeline.stats import speedup_table

    base = plain_scheme(trials)
    schemes = set(base["init"].astype(str)) if not base.empty else set()
    if XAVIER not in schemes or len(schemes) < 2:
        return pd.DataFrame()
    rest = sorted(schemes - {XAVIER, UNIFORM})
    others = [UNIFORM, *rest] if UNIFORM in schemes else rest
    by = speedup_cells(base)
    frames = []
    for other in others:
        table = speedup_table(base, XAVIER, other, by, n_boot=n_boot, seed=seed).copy()
        table.insert(0, "other", other)
        table.insert(0, "comparison", f"{XAVIER} vs {other}")
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    table["cell_verdict"] = [
        classify_speedup(r.speedup, r.lo, r.hi, bool(r.lower_bound)) for r in table.itertuples()
    ]
    table["in_verdict"] = table["other"] == UNIFORM
    return table


def judge_c4(trials: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> Verdict:
    """C4: Xavier's speedup over uniform[0,1] per cell (module docs)."""
    low, high = C4_RANGE
    rule = (
        "per (task, cell type, hidden, seq_len, device type), scale 1: speedup = Kaplan-Meier "
        "median epochs-to-target of uniform01 / Xavier's, 95% bootstrap CI. A cell is within "
        f"{low:g}-{high:g}x if the estimate is in [{low:g}, {high:g}] (a lower bound '> b', "
        f"uniform01's median not reached, is within if {low:g} <= b <= {high:g}, at least "
        f"{high:g}x if b > {high:g}); below {low:g}x if the CI's upper end < {low:g}; above "
        f"{high:g}x if its lower end > {high:g}; inconclusive otherwise (incl. Xavier's own "
        "median not reached). Supported if every cell is within; refuted if every cell is "
        "below or above; partly supported if some are within and the others are outside or "
        "inconclusive; inconclusive otherwise."
    )
    base = plain_scheme(trials)
    schemes = set(base["init"].astype(str)) if not base.empty else set()
    if XAVIER not in schemes or UNIFORM not in schemes:
        return Verdict(
            "C4",
            CLAIMS["C4"],
            NOT_MEASURED,
            rule,
            "needs Xavier and uniform01 trials at scale 1 on the same cells (e.g. "
            f"studies/headline.yaml); this study has {', '.join(sorted(schemes)) or 'none'}.",
        )
    table = xavier_speedups(trials, n_boot=n_boot, seed=seed)
    headline = table["in_verdict"].astype(bool)
    cells = table[headline]
    extra = [c for c in cells.columns if c in SETTINGS]
    dims = _varying(cells, [*SPEEDUP_BY, *extra, "device_type"], always=("seq_len",))
    outcomes = cells["cell_verdict"].tolist()
    contra = {BELOW, ABOVE, AT_LEAST_10}
    if not outcomes:
        return Verdict(
            "C4",
            CLAIMS["C4"],
            NOT_MEASURED,
            rule,
            "needs Xavier and uniform01 trials at scale 1 on the same cells; in this study "
            "they share no (task, cell type, hidden, seq_len, device type) cell.",
            table,
        )
    if all(o == WITHIN for o in outcomes):
        verdict = SUPPORTED
    elif all(o in contra for o in outcomes):
        verdict = REFUTED
    elif WITHIN in outcomes:
        # Within 2-10x where it could be measured; outside it, or not measurable, elsewhere.
        verdict = PARTLY
    else:
        verdict = INCONCLUSIVE
    parts = []
    for _, row in cells.iterrows():
        reason = row["cell_verdict"]
        if reason == CELL_INCONCLUSIVE:
            if pd.isna(row["speedup"]):
                reason += ": Xavier's median not reached"
            elif row["lower_bound"]:
                reason += f": only a lower bound, below {low:g}x"
            else:
                reason += f": the CI straddles {low:g}x or {high:g}x"
        elif row["lower_bound"]:
            reason += "; uniform01's median not reached"
        text = "n/a" if pd.isna(row["speedup"]) else row["text"]
        parts.append(f"{_cell_label(row, dims)}: {text} ({reason})")
    evidence = f"speedup of Xavier over uniform01 — {'; '.join(parts)}."
    return Verdict("C4", CLAIMS["C4"], verdict, rule, evidence, table)


# --------------------------------------------------------------------------- C5


def judge_c5(trials: pd.DataFrame) -> Verdict:
    """C5: uniform[0,1] at the smallest vs the largest (hidden, seq_len) cell (module docs)."""
    rule = (
        "uniform01 at scale 1, per cell type: the smallest (hidden x seq_len) and the largest "
        f"cell run. Refuted if the smallest cell's convergence rate < {C5_WORKS_RATE:g} (fails "
        f"even there); supported if it is >= {C5_WORKS_RATE:g} and >= {C5_FAILS_RATE:g} of the "
        "largest cell's trials diverged (loss exploded or NaN); partly supported otherwise "
        "(fails at scale by never converging rather than diverging, or still converges there)."
    )
    base = plain_scheme(trials)
    uni = base[base["init"] == UNIFORM] if not base.empty else base
    subs = []
    texts = []
    frames = []
    for cell, group in uni.groupby("cell", sort=True):
        table = (
            group.groupby(["hidden", "seq_len"])
            .agg(
                n=("trial_number", "size"),
                converged_rate=("converged", "mean"),
                diverged_rate=("diverged", "mean"),
                censored_rate=("censored", "mean"),
            )
            .reset_index()
        )
        table.insert(0, "cell", cell)
        table["size"] = table["hidden"].astype(int) * table["seq_len"].astype(int)
        table = table.sort_values(["size", "hidden", "seq_len"], ignore_index=True)
        frames.append(table)
        if len(table) < 2:
            subs.append(NOT_MEASURED)
            continue
        small, large = table.iloc[0], table.iloc[-1]
        works = float(small["converged_rate"]) >= C5_WORKS_RATE
        diverges = float(large["diverged_rate"]) >= C5_FAILS_RATE
        if not works:
            subs.append(REFUTED)
        elif diverges:
            subs.append(SUPPORTED)
        else:
            subs.append(PARTLY)
        texts.append(
            f"{cell}: smallest cell (hidden {small['hidden']}, seq_len {small['seq_len']}, "
            f"n={small['n']}) converged {_pct(float(small['converged_rate']))}; largest "
            f"(hidden {large['hidden']}, seq_len {large['seq_len']}, n={large['n']}) converged "
            f"{_pct(float(large['converged_rate']))}, diverged "
            f"{_pct(float(large['diverged_rate']))}, censored "
            f"{_pct(float(large['censored_rate']))}"
        )
    verdict = _combine(subs)
    if verdict == NOT_MEASURED:
        cells = ", ".join(f"hidden {r.hidden} x seq_len {r.seq_len}" for r in _rows(frames))
        return Verdict(
            "C5",
            CLAIMS["C5"],
            NOT_MEASURED,
            rule,
            "needs uniform01 trials at scale 1 over at least two (hidden, seq_len) cells, e.g. "
            f"studies/hidden_sweep.yaml; this study has {cells or 'none'}.",
            pd.concat(frames, ignore_index=True) if frames else None,
        )
    return Verdict(
        "C5",
        CLAIMS["C5"],
        verdict,
        rule,
        "; ".join(texts) + ".",
        pd.concat(frames, ignore_index=True),
    )


def _rows(frames: list[pd.DataFrame]) -> list[Any]:
    return [row for frame in frames for row in frame.itertuples()]


# --------------------------------------------------------------------------- C6


def _shared_cells(frame: pd.DataFrame, schemes: list[str]) -> pd.DataFrame:
    """Rows of ``schemes`` restricted to (task, hidden, seq_len) cells where all were run."""
    dims = ["task", "hidden", "seq_len"]
    rows = frame[frame["init"].isin(schemes)]
    present = rows.groupby(dims)["init"].nunique()
    shared = present[present == len(set(schemes))].index
    keys = pd.MultiIndex.from_frame(rows[dims])
    return rows[keys.isin(shared)]


def judge_c6(trials: pd.DataFrame) -> Verdict:
    """C6: three sub-checks, each judged only where the study has the data (module docs)."""
    rule = (
        f"(a) orthogonal Whh at scale 1: abs(spectral radius - 1) <= {C6_ORTHO_TOL:g} in every "
        "trial; (b) he_normal on rnn_relu converges at least as often as Xavier on rnn_relu "
        "(same task/hidden/seq_len cells); (c) Xavier on rnn_tanh has no divergence and a "
        f"convergence rate within {C6_TANH_RATE_GAP:g} of the best scheme's on rnn_tanh (same "
        "cells). Supported if all three are measured and hold, refuted if none that was "
        "measured holds, partly supported if some hold or some were not measured."
    )
    results: list[dict[str, Any]] = []
    missing: list[str] = []

    # (a) orthogonal: the recurrent matrix's spectral radius at init.
    scaled1 = trials[np.isclose(trials["scale"].astype(float), 1.0)] if len(trials) else trials
    ortho = scaled1[recurrent_scheme(scaled1) == "orthogonal"] if len(scaled1) else scaled1
    radius = ortho["spectral_radius"].astype(float) if len(ortho) else pd.Series(dtype=float)
    radius = radius[np.isfinite(radius)]
    if len(radius):
        dev = float((radius - 1.0).abs().max())
        results.append(
            {
                "check": "orthogonal preserves norm",
                "holds": dev <= C6_ORTHO_TOL,
                "evidence": f"orthogonal Whh: max abs(spectral radius - 1) = {dev:.2g} over "
                f"{len(radius)} trials (tolerance {C6_ORTHO_TOL:g})",
            }
        )
    else:
        missing.append("(a) needs orthogonal trials at scale 1")

    base = plain_scheme(trials)
    # (b) He on ReLU vs Xavier on ReLU.
    relu = base[base["cell"] == "rnn_relu"] if len(base) else base
    relu = _shared_cells(relu, ["he_normal", XAVIER]) if len(relu) else relu
    if len(relu):
        he = _rate(relu.loc[relu["init"] == "he_normal", "converged"])
        xr = _rate(relu.loc[relu["init"] == XAVIER, "converged"])
        results.append(
            {
                "check": "He suits ReLU",
                "holds": he >= xr,
                "evidence": f"rnn_relu: he_normal converged {_pct(he)} vs Xavier {_pct(xr)}",
            }
        )
    else:
        missing.append("(b) needs he_normal and Xavier on rnn_relu")

    # (c) Xavier on tanh: never diverges, converges about as often as the best scheme.
    tanh = base[base["cell"] == "rnn_tanh"] if len(base) else base
    if len(tanh) and XAVIER in set(tanh["init"]) and tanh["init"].nunique() > 1:
        shared = _shared_cells(tanh, sorted(set(tanh["init"].astype(str))))
        if shared.empty:  # not every scheme on every cell: compare on Xavier's cells
            keys = tanh.loc[tanh["init"] == XAVIER, ["task", "hidden", "seq_len"]]
            shared = tanh.merge(keys.drop_duplicates(), on=["task", "hidden", "seq_len"])
        rates = shared.groupby("init")["converged"].mean().astype(float)
        x_rate = float(rates[XAVIER])
        x_div = _rate(shared.loc[shared["init"] == XAVIER, "diverged"])
        best = str(rates.idxmax())
        holds = x_div == 0 and float(rates.max()) - x_rate <= C6_TANH_RATE_GAP
        results.append(
            {
                "check": "Xavier is the safe default for tanh",
                "holds": holds,
                "evidence": f"rnn_tanh: Xavier converged {_pct(x_rate)} and diverged "
                f"{_pct(x_div)}; best scheme {best} converged {_pct(float(rates.max()))}",
            }
        )
    else:
        missing.append("(c) needs Xavier and at least one other scheme on rnn_tanh")

    details = pd.DataFrame(results, columns=["check", "holds", "evidence"])
    if not results:
        return Verdict("C6", CLAIMS["C6"], NOT_MEASURED, rule, "; ".join(missing) + ".", details)
    held = [bool(r["holds"]) for r in results]
    verdict = SUPPORTED if all(held) else REFUTED if not any(held) else PARTLY
    if verdict == SUPPORTED and missing:
        verdict = PARTLY  # what was measured holds, but part of the claim was not tested
    evidence = "; ".join(
        f"{r['evidence']} ({'holds' if r['holds'] else 'does not hold'})" for r in results
    )
    if missing:
        evidence += "; not measured: " + ", ".join(missing)
    return Verdict("C6", CLAIMS["C6"], verdict, rule, evidence + ".", details)

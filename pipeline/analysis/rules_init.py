"""The claims about a network at init: C1 (Xavier's hidden variance), C2 (uniform[0,1]'s
signal at large sizes) and C3 (the recurrent gain and gradients back through time).

Each claim is its text, its rule (``C*_RULE``, the words the report and
``docs/results.md`` print) and its judge, which reads the init diagnostics of a study's
tables (the ``steps`` table and the ``*_first``/``*_last`` columns of ``trials``) and
quotes mean-field predictions (``models.theory``) beside them. This module reads tables;
it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.analysis.cells import cannot_train
from pipeline.analysis.judging import (
    C1_EARLY_STEPS,
    C1_LEVEL_RANGE,
    C1_MAX_SATURATION,
    C1_MIN_LEVEL,
    C1_RATIO_RANGE,
    C1_THEORY_TOLERANCE,
    C2_LOST_SATURATION,
    C2_TREND_TOLERANCE,
    C2_VANISHED_VARIANCE,
    GAIN_TOLERANCE,
    PARTLY,
    REFUTED,
    SUPPORTED,
    TANH_CELLS,
    UNIFORM,
    XAVIER,
    Claim,
    Options,
    Verdict,
    _combine,
    _not_measured,
    _pct,
    _theory,
    fmt,
    plain_scheme,
    recurrent_scheme,
)

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

# --------------------------------------------------------------------------- C1

C1_RULE = (
    f"Xavier on {'/'.join(TANH_CELLS)} at gain 1, per-step hidden variance at init on the "
    "probe batch, judged per cell (task, cell, hidden size, sequence length), never pooled "
    "across sizes or lengths. (a) Constant: the median over the cell's trials of (variance "
    f"at the last step / mean over the first {C1_EARLY_STEPS} steps) lies in "
    f"[{C1_RATIO_RANGE[0]:g}, {C1_RATIO_RANGE[1]:g}], the last-step variance has not "
    f"vanished (> {C1_MIN_LEVEL:g}) and at most {C1_MAX_SATURATION:g} of the units are "
    "saturated (not pinned at +-1). (b) ~1: the median last-step variance lies in "
    f"[{C1_LEVEL_RANGE[0]:g}, {C1_LEVEL_RANGE[1]:g}]. Beside it, the cell's own mean-field "
    "prediction (models.theory: the last-step variance and the stationary q* for that "
    "hidden size, length and input drive); the cell is 'at its predicted fixed point' when "
    f"the measured level is within {C1_THEORY_TOLERANCE:g} (relative) of that prediction. "
    "Per cell: supported if (a) and (b) hold; partly supported if only (a) holds; refuted "
    "if (a) fails. The verdict is the cells' verdict where they agree, partly supported "
    "where they differ."
)


def c1_parts(steps: pd.DataFrame) -> pd.DataFrame:
    """Per trial of ``steps``: early and last variance, their ratio, last saturation."""
    rows = []
    for number, group in steps.sort_values("step").groupby("trial_number", sort=True):
        var = group["hidden_var"].astype(float).to_numpy()
        sat = group["hidden_sat"].astype(float).to_numpy()
        early = float(np.mean(var[:C1_EARLY_STEPS]))
        last = float(var[-1])
        first = group.iloc[0]
        rows.append(
            {
                "trial_number": number,
                "task": first["task"],
                "cell": first["cell"],
                "init": first["init"],
                "scale": float(first["scale"]),
                "hidden": int(first["hidden"]),
                "seq_len": int(first["seq_len"]),
                "early_var": early,
                "last_var": last,
                "ratio": last / early if early > 0 else math.nan,
                "last_sat": float(sat[-1]),
            }
        )
    return pd.DataFrame(rows)


def c1_constant(parts: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    """C1 (a) on :func:`c1_parts` rows: constant, not vanished, not saturated."""
    ratio = float(parts["ratio"].median(skipna=True))
    level = float(parts["last_var"].median(skipna=True))
    sat = float(parts["last_sat"].median(skipna=True))
    ok = (
        C1_RATIO_RANGE[0] <= ratio <= C1_RATIO_RANGE[1]
        and level > C1_MIN_LEVEL
        and sat <= C1_MAX_SATURATION
    )
    return ok, {"ratio": ratio, "level": level, "saturation": sat}


C1_CELL = ("task", "cell", "hidden", "seq_len")
"""The columns of a C1 cell: each is judged against its own predicted fixed point."""


def _c1_cell(parts: pd.DataFrame, row: Any) -> dict[str, Any]:
    """One cell's C1 numbers: (a), (b), its prediction and its sub-verdict."""
    constant, m = c1_constant(parts)
    level_ok = C1_LEVEL_RANGE[0] <= m["level"] <= C1_LEVEL_RANGE[1]
    pred = _theory(row) if row is not None else None
    predicted = float(pred.hidden_var[-1]) if pred is not None else math.nan
    q_star = float(pred.q_star) if pred is not None else math.nan
    at_fixed_point = bool(predicted > 0 and abs(m["level"] / predicted - 1) <= C1_THEORY_TOLERANCE)
    first = parts.iloc[0]
    return {
        **{k: first[k] for k in C1_CELL},
        "n": len(parts),
        "measured_variance": m["level"],
        "predicted_variance": predicted,
        "q_star": q_star,
        "ratio": m["ratio"],
        "saturation": m["saturation"],
        "constant": constant,
        "level_near_1": level_ok,
        "at_fixed_point": at_fixed_point,
        "verdict": SUPPORTED if constant and level_ok else PARTLY if constant else REFUTED,
    }


def _c1_text(cell: dict[str, Any], label: str) -> str:
    where = "at" if cell["at_fixed_point"] else "away from"
    return (
        f"{label} (n={cell['n']}): (a) last/early ratio {fmt(cell['ratio'])}, last-step "
        f"variance {fmt(cell['measured_variance'])}, saturated {fmt(cell['saturation'])}: "
        f"{'constant' if cell['constant'] else 'not constant (or vanished or saturated)'}; "
        f"(b) vs ~1: {'holds' if cell['level_near_1'] else 'does not hold'}; Mean-field theory "
        f"predicts {fmt(cell['predicted_variance'])} at the last step (q* = "
        f"{fmt(cell['q_star'])}): {where} its predicted fixed point -> {cell['verdict']}"
    )


def judge_c1(tables: StudyTables, options: Options) -> Verdict:
    """C1: Xavier's per-step hidden variance at init, per cell (:data:`C1_RULE`)."""
    claim = C1
    steps = plain_scheme(tables.steps)
    if not steps.empty:
        steps = steps[(steps["init"] == XAVIER) & steps["cell"].isin(TANH_CELLS)]
    if steps.empty:
        return _not_measured(
            claim, "needs Xavier trials on rnn_tanh at gain 1; this study has none."
        )
    parts = c1_parts(steps)
    if not np.isfinite(parts["ratio"]).any():
        return _not_measured(claim, "needs finite per-step hidden variances at init.")
    trials = plain_scheme(tables.trials)
    trials = trials[(trials["init"] == XAVIER) & trials["cell"].isin(TANH_CELLS)]
    firsts = {
        tuple(r[k] for k in C1_CELL): r
        for _, r in trials.drop_duplicates(list(C1_CELL)).iterrows()
    }
    dims = [d for d in ("task", "cell") if parts[d].nunique() > 1] + ["hidden", "seq_len"]
    cells, texts, skipped = [], [], []
    for key, group in parts.groupby(list(C1_CELL), sort=True):
        label = ", ".join(
            f"{group.iloc[0][d]}" if d in ("task", "cell") else f"{d} {group.iloc[0][d]}"
            for d in dims
        )
        if not np.isfinite(group["ratio"]).any():
            skipped.append(label)
            continue
        cell = _c1_cell(group, firsts.get(tuple(key)))
        cells.append(cell)
        texts.append(_c1_text(cell, label))
    table = pd.DataFrame(cells)
    verdict = _combine(c["verdict"] for c in cells)
    evidence = (
        f"{len(parts)} Xavier trials in {len(cells)} cell{'s' if len(cells) > 1 else ''}: "
        + "; ".join(texts)
        + ". A tanh RNN's stationary variance is q* < 1 for its input drive, not 1."
    )
    if skipped:
        evidence += f" Left out (no finite variance): {', '.join(skipped)}."

    def middle(col: str) -> float:
        return float(table[col].median())

    numbers = {
        "measured_variance": middle("measured_variance"),
        "predicted_variance": middle("predicted_variance"),
        "q_star": middle("q_star"),
        "ratio": middle("ratio"),
        "saturation": middle("saturation"),
        "constant": bool(table["constant"].all()),
        "level_near_1": bool(table["level_near_1"].all()),
        "n": len(parts),
        "cells": cells,
    }
    details = parts.merge(
        table[[*C1_CELL, "predicted_variance", "q_star", "verdict"]], on=list(C1_CELL)
    )
    return Verdict(claim.id, claim.text, verdict, claim.rule, evidence, details, numbers)


# --------------------------------------------------------------------------- C2

C2_RULE = (
    "uniform01 at gain 1, per cell type with at least two hidden sizes (others are left out). "
    "Outcome: the signal is lost at a size if the median last-step saturation share exceeds "
    f"{C2_LOST_SATURATION:g} (saturated), or the units are not saturated and the median "
    f"last-step hidden variance is below {C2_VANISHED_VARIANCE:g} (vanished), or at least half "
    "are frozen; it holds if the signal is lost at the largest size and saturation does not "
    f"fall with size (tolerance {C2_TREND_TOLERANCE:g}). Mechanism, reported separately: the "
    "claim says 'vanish' (the hidden state shrinks towards 0); saturation (|h| -> 1) driven "
    "by the weights' mean (Perron root of U[0,1] ~ N/2, models.theory) is another. Supported "
    "if the outcome holds by vanishing; partly supported if it holds otherwise (saturated, "
    "or frozen with neither); refuted if the signal is not lost at the largest size."
)


def judge_c2(tables: StudyTables, options: Options) -> Verdict:
    """C2: uniform[0,1] loses the signal at large hidden sizes? (:data:`C2_RULE`)."""
    claim = C2
    base = plain_scheme(tables.trials)
    uni = base[base["init"] == UNIFORM] if not base.empty else base
    if uni.empty or uni.groupby("cell")["hidden"].nunique().max() < 2:
        sizes = sorted(uni["hidden"].unique()) if len(uni) else []
        return _not_measured(
            claim,
            "needs uniform01 trials at gain 1 at two or more hidden sizes (the claim is a "
            f"trend with size); this study has hidden sizes {sizes or 'none'}.",
        )
    subs, texts, frames = [], [], []
    numbers: dict[str, Any] = {"sizes": []}
    for cell, group in uni.groupby("cell", sort=True):
        if group["hidden"].nunique() < 2:
            texts.append(f"{cell}: one hidden size only, no trend to judge")
            continue
        rows = []
        for hidden, g in group.groupby("hidden", sort=True):
            first = g.iloc[0]
            pred = _theory(first)
            rows.append(
                {
                    "cell": cell,
                    "hidden": int(hidden),
                    "n": len(g),
                    "saturation": float(g["hidden_sat_last"].median()),
                    "variance": float(g["hidden_var_last"].median()),
                    "frozen_share": float(cannot_train(g).mean()),
                    "spectral_radius": float(g["spectral_radius"].median()),
                    "perron_predicted": float(pred.perron_root),
                    "saturation_predicted": float(pred.hidden_sat[-1]),
                }
            )
        table = pd.DataFrame(rows)
        frames.append(table)
        saturated = table["saturation"] > C2_LOST_SATURATION
        vanished = ~saturated & (table["variance"] < C2_VANISHED_VARIANCE)
        lost = saturated | vanished | (table["frozen_share"] >= 0.5)
        sats = table["saturation"].to_numpy()
        trend = bool(np.all(np.diff(sats) >= -C2_TREND_TOLERANCE))
        largest = table.iloc[-1]
        outcome = bool(lost.iloc[-1]) and trend
        by_saturation, by_vanishing = bool(saturated.iloc[-1]), bool(vanished.iloc[-1])
        if not outcome:
            subs.append(REFUTED)
        else:
            subs.append(SUPPORTED if by_vanishing else PARTLY)
        per_size = "; ".join(
            f"hidden {r.hidden} (n={r.n}): saturated {fmt(r.saturation)} (predicted "
            f"{fmt(r.saturation_predicted)}), frozen {_pct(r.frozen_share)}, spectral radius "
            f"{fmt(r.spectral_radius)} (Perron root predicted {fmt(r.perron_predicted)})"
            for r in table.itertuples()
        )
        mech = (
            "by saturation driven by the weights' mean, not by vanishing"
            if by_saturation
            else "by vanishing"
            if by_vanishing
            else "with its trials frozen, by neither vanishing nor saturation"
        )
        texts.append(
            f"{cell}: {per_size}. The signal is "
            + (
                f"lost at hidden {largest['hidden']}, {mech}"
                if outcome
                else "not lost at the largest size"
            )
            + ("" if trend else " (saturation falls with size)")
        )
        numbers["sizes"] += table.to_dict("records")
    verdict = _combine(subs)
    details = pd.concat(frames, ignore_index=True)
    return Verdict(
        claim.id, claim.text, verdict, claim.rule, ". ".join(texts) + ".", details, numbers
    )


# --------------------------------------------------------------------------- C3

C3_RULE = (
    "Needs a sweep of the recurrent gain g (recurrent_scale, Whh alone) with one scheme at "
    "fixed input scale, on both sides of 1. Per gain, the measured per-step factor chi of the "
    "squared gradient norm back through time, (|dL/dh_0| / |dL/dh_T-1|)^(2/(T-1)) at init "
    "(median over trials), beside mean-field theory's chi = g^2 E[tanh'(h)^2] (models.theory); "
    "chi < 1 vanishes, > 1 explodes. The claim puts the boundary at g = 1: its half 'g < 1 "
    "vanishes' holds if chi < 1 at every gain < 1, its half 'g > 1 explodes' if chi > 1 at "
    "every gain > 1. Supported if both halves hold; partly supported if one does; refuted if "
    "neither. The predicted critical gain (chi = 1) is reported with the measured crossing."
)


def _chi_measured(frame: pd.DataFrame) -> pd.Series:
    first = frame["grad_norm_first"].astype(float).to_numpy()
    last = frame["grad_norm_last"].astype(float).to_numpy()
    steps = frame["seq_len"].astype(float).to_numpy() - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.exp(2 * (np.log(first) - np.log(last)) / steps)
    return pd.Series(out, index=frame.index, dtype=float)


def _crossing(gains: np.ndarray, chis: np.ndarray) -> float:
    """The gain where log(chi) crosses 0, interpolated between neighbouring gains."""
    with np.errstate(divide="ignore"):
        logs = np.log(chis)
    for i in range(len(gains) - 1):
        if np.isfinite(logs[i]) and np.isfinite(logs[i + 1]) and logs[i] < 0 <= logs[i + 1]:
            t = -logs[i] / (logs[i + 1] - logs[i])
            return float(gains[i] + t * (gains[i + 1] - gains[i]))
    return math.nan


def judge_c3(tables: StudyTables, options: Options) -> Verdict:
    """C3: gradients back through time against the recurrent gain (:data:`C3_RULE`)."""
    claim = C3
    trials = tables.trials
    predicted: dict[str, Any] = {}
    ref = plain_scheme(trials)
    ref = ref[(ref["init"] == XAVIER) & ref["cell"].isin(TANH_CELLS)] if len(ref) else ref
    if len(ref):
        pred = _theory(ref.iloc[0])
        predicted = {
            "chi_predicted": pred.chi,
            "critical_gain_predicted": pred.critical_gain,
        }
    if trials.empty:
        return _not_measured(claim, "needs trials; this study has none.", **predicted)
    frame = trials[trials["cell"].isin(TANH_CELLS)].assign(
        scheme=recurrent_scheme(trials), chi=_chi_measured(trials)
    )
    frame = frame[np.isfinite(frame["chi"])]
    sweeps = []
    for key, group in frame.groupby(["scheme", "cell", "task", "hidden", "seq_len", "scale"]):
        gains = group["recurrent_scale"].astype(float)
        if (gains < 1 - GAIN_TOLERANCE).any() and (gains > 1 + GAIN_TOLERANCE).any():
            sweeps.append((key, group))
    if not sweeps:
        return _not_measured(
            claim,
            "needs a sweep of recurrent_scale (the gain of Whh alone) on both sides of 1 with "
            "one scheme on rnn_tanh, e.g. studies/scale_sweep.yaml.",
            **predicted,
        )
    subs, texts, rows = [], [], []
    numbers: dict[str, Any] = {"sweeps": []}
    for (scheme, cell, task, hidden, seq_len, scale), group in sweeps:
        per_gain = group.groupby("recurrent_scale", sort=True).agg(
            n=("trial_number", "size"), chi=("chi", "median"), radius=("spectral_radius", "median")
        )
        first = group.iloc[0]
        per_gain["chi_predicted"] = [
            float(_theory(first, recurrent_scale=float(g)).chi) for g in per_gain.index
        ]
        gains = per_gain.index.to_numpy(dtype=float)
        below = per_gain[gains < 1 - GAIN_TOLERANCE]
        above = per_gain[gains > 1 + GAIN_TOLERANCE]
        vanish_ok = bool((below["chi"] < 1).all())
        explode_ok = bool((above["chi"] > 1).all())
        subs.append(
            SUPPORTED
            if vanish_ok and explode_ok
            else PARTLY
            if vanish_ok or explode_ok
            else REFUTED
        )
        crit_pred = float(_theory(first, recurrent_scale=1.0).critical_gain)
        crit_meas = _crossing(gains, per_gain["chi"].to_numpy(dtype=float))
        detail = per_gain.reset_index().assign(
            scheme=scheme, cell=cell, task=task, hidden=hidden, seq_len=seq_len, scale=scale
        )
        rows.append(detail)
        gains_text = ", ".join(
            f"g {fmt(g)}: chi {fmt(r.chi)} (predicted {fmt(r.chi_predicted)})"
            for g, r in per_gain.iterrows()
        )
        texts.append(
            f"{scheme}, hidden {hidden}, seq_len {seq_len}: {gains_text}; gains < 1 "
            f"{'all vanish' if vanish_ok else 'do not all vanish'}, gains > 1 "
            f"{'all explode' if explode_ok else 'do not all explode'}; critical gain "
            f"predicted {fmt(crit_pred)}, measured {fmt(crit_meas)}"
        )
        numbers["sweeps"].append(
            {
                "scheme": scheme,
                "hidden": int(hidden),
                "seq_len": int(seq_len),
                "gains": gains.tolist(),
                "chi_measured": per_gain["chi"].tolist(),
                "chi_predicted": per_gain["chi_predicted"].tolist(),
                "critical_gain_predicted": crit_pred,
                "critical_gain_measured": crit_meas,
            }
        )
    numbers.update(predicted)
    if numbers["sweeps"]:
        numbers["critical_gain_predicted"] = numbers["sweeps"][0]["critical_gain_predicted"]
        numbers["critical_gain_measured"] = numbers["sweeps"][0]["critical_gain_measured"]
    details = pd.concat(rows, ignore_index=True)
    return Verdict(
        claim.id, claim.text, _combine(subs), claim.rule, ". ".join(texts) + ".", details, numbers
    )


C1 = Claim(
    "C1",
    "Xavier keeps hidden-state variance roughly constant (~1) across time steps",
    C1_RULE,
    judge_c1,
)
C2 = Claim(
    "C2",
    "uniform[0,1] (mean 0.5, variance 1/12) makes the signal vanish for large hidden sizes",
    C2_RULE,
    judge_c2,
)
C3 = Claim(
    "C3",
    "recurrent weights with gain > 1 explode gradients back through time, < 1 vanish",
    C3_RULE,
    judge_c3,
)

"""The claims about training outcomes beyond the speedup: C5 (uniform[0,1] at a tiny vs a
large size) and C6 (He for ReLU, orthogonal's norm, Xavier for tanh).

Each claim is its text, its rule (``C*_RULE``, the words the report and
``docs/results.md`` print) and its judge, which reads the outcomes of a study's trials.
This module reads tables; it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from pipeline.analysis.judging import (
    ALPHA,
    C5_LARGE_HIDDEN,
    C5_TINY_HIDDEN,
    C5_WORKS_RATE,
    C6_NORM_TOLERANCE,
    INCONCLUSIVE,
    MIN_N,
    PARTLY,
    REFUTED,
    SUPPORTED,
    UNIFORM,
    XAVIER,
    Claim,
    Options,
    Verdict,
    _combine,
    _not_measured,
    _pct,
    _rate,
    fmt,
    plain_scheme,
    wilson,
)
from pipeline.analysis.rules_init import _chi_measured

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

# --------------------------------------------------------------------------- C5

C5_RULE = (
    f"uniform01 at gain 1, per cell type, needs a tiny cell (hidden <= {C5_TINY_HIDDEN}) and a "
    f"large one (hidden >= {C5_LARGE_HIDDEN}), each with Xavier in the same cell and at least "
    f"{MIN_N} trials per scheme. Outcome: 'works' at the tiny cell if at least "
    f"{C5_WORKS_RATE:g} of uniform01's trials converged; 'fails at scale' if fewer than "
    f"{C5_WORKS_RATE:g} converged at the large cell (stalled, frozen, censored and diverged all "
    "count as failing) while Xavier there converged at least as often as that threshold. "
    "Mechanism, judged on its own: 'loss explodes or NaN' holds if most failing uniform01 "
    "trials at the large cell diverged; the loss at init relative to the task's baseline is "
    "shown. Supported if the outcome and the mechanism hold; partly supported if only the "
    "outcome holds; refuted if it does not work at the tiny cell or does not fail at the "
    "large one."
)


def judge_c5(tables: StudyTables, options: Options) -> Verdict:
    """C5: uniform[0,1] at a tiny vs a large hidden size (:data:`C5_RULE`)."""
    claim = C5
    base = plain_scheme(tables.trials)
    base = base[base["init"].isin([UNIFORM, XAVIER])] if len(base) else base
    subs, texts = [], []
    rows: list[dict[str, Any]] = []
    for (cell, task), group in base.groupby(["cell", "task"], sort=True):
        stats_rows = []
        for (hidden, seq_len), g in group.groupby(["hidden", "seq_len"], sort=True):
            u, x = g[g["init"] == UNIFORM], g[g["init"] == XAVIER]
            if len(u) < MIN_N or len(x) < MIN_N:
                continue
            failing = u[u["outcome"] != "converged"]
            stats_rows.append(
                {
                    "cell": cell,
                    "task": task,
                    "hidden": int(hidden),
                    "seq_len": int(seq_len),
                    "n_uniform": len(u),
                    "n_xavier": len(x),
                    "uniform_converged": _rate(u),
                    "xavier_converged": _rate(x),
                    "uniform_frozen": _rate(u, "frozen"),
                    "uniform_stalled": _rate(u, "stalled"),
                    "uniform_diverged": _rate(u, "diverged"),
                    "failing_diverged": _rate(failing, "diverged") if len(failing) else math.nan,
                    "initial_over_baseline": float(
                        (u["initial_loss"] / u["baseline_loss"]).median()
                    ),
                }
            )
        tiny = [r for r in stats_rows if r["hidden"] <= C5_TINY_HIDDEN]
        large = [r for r in stats_rows if r["hidden"] >= C5_LARGE_HIDDEN]
        rows += stats_rows
        if not tiny or not large:
            continue
        t = min(tiny, key=lambda r: r["hidden"] * r["seq_len"])
        big = max(large, key=lambda r: r["hidden"] * r["seq_len"])
        works = t["uniform_converged"] >= C5_WORKS_RATE
        fails = (
            big["uniform_converged"] < C5_WORKS_RATE and big["xavier_converged"] >= C5_WORKS_RATE
        )
        mechanism = big["failing_diverged"] > 0.5
        if not works or not fails:
            subs.append(REFUTED)
        else:
            subs.append(SUPPORTED if mechanism else PARTLY)
        texts.append(
            f"{cell}/{task}: tiny cell hidden {t['hidden']}, seq_len {t['seq_len']}: uniform01 "
            f"converged {_pct(t['uniform_converged'])} of {t['n_uniform']} (Xavier "
            f"{_pct(t['xavier_converged'])}); large cell hidden {big['hidden']}, seq_len "
            f"{big['seq_len']}: uniform01 converged {_pct(big['uniform_converged'])} (frozen "
            f"{_pct(big['uniform_frozen'])}, stalled {_pct(big['uniform_stalled'])}, diverged "
            f"{_pct(big['uniform_diverged'])}; Xavier {_pct(big['xavier_converged'])}); loss at "
            f"init {fmt(big['initial_over_baseline'])}x the baseline. It "
            + ("works tiny" if works else "does not work even tiny")
            + (" and fails at scale" if fails else " and does not fail at scale")
            + (
                ""
                if not (works and fails)
                else (
                    ", by exploding"
                    if mechanism
                    else ", by not learning (not by exploding or NaN)"
                )
            )
        )
    details = pd.DataFrame(rows)
    if not subs:
        sizes = sorted(set(details["hidden"])) if len(details) else []
        return _not_measured(
            claim,
            f"needs uniform01 and Xavier (>= {MIN_N} trials each) at a tiny hidden size "
            f"(<= {C5_TINY_HIDDEN}) and a large one (>= {C5_LARGE_HIDDEN}); this study has "
            f"hidden sizes {sizes or 'none'} with enough trials.",
        )
    numbers = {"cells": details.to_dict("records")}
    return Verdict(
        claim.id, claim.text, _combine(subs), claim.rule, ". ".join(texts) + ".", details, numbers
    )


# --------------------------------------------------------------------------- C6

C6_RULE = (
    "Three sub-checks, each where the study has the data, each holds / fails / inconclusive. "
    "(a) orthogonal preserves norm: in the network, the gradient norm carried back over the "
    "whole sequence at init, |dL/dh_0| / |dL/dh_T-1|, lies within 1 +- "
    f"{C6_NORM_TOLERANCE:g} for orthogonal Whh at gain 1 (median over trials; the per-step "
    "factor is shown beside it). "
    "(b) He suits ReLU: on rnn_relu, he_normal converges in at least half its trials and not "
    "significantly less often than Xavier (or identity, IRNN) in the same cells (one-sided "
    f"Fisher exact test, alpha {ALPHA:g}); fails if it converges in none, or significantly "
    "less often. (c) Xavier is the safe default for tanh: on rnn_tanh, Xavier never diverges, "
    "converges in at least half its trials and not significantly less often than the best "
    "scheme in the same cells; fails if it diverges, converges in none, or significantly less "
    f"often. Each needs >= {MIN_N} trials per scheme; a 0% rate never supports anything. "
    "Supported if every sub-check measured holds and all three were measured; refuted if "
    "every decided sub-check fails; partly supported if some hold; inconclusive otherwise."
)


def _rate_check(mine: pd.DataFrame, others: dict[str, pd.DataFrame], name: str) -> tuple[str, str]:
    """holds / fails / inconclusive for "``name`` converges about as often as the others"."""
    k, n = int((mine["outcome"] == "converged").sum()), len(mine)
    lo, hi = wilson(k, n)
    parts = [f"{name} converged {k}/{n} [{fmt(lo, 2)}, {fmt(hi, 2)}]"]
    worse = False
    for other, frame in others.items():
        k2, n2 = int((frame["outcome"] == "converged").sum()), len(frame)
        p = float(sps.fisher_exact([[k, n - k], [k2, n2 - k2]], alternative="less")[1])
        parts.append(f"{other} {k2}/{n2} (Fisher p={fmt(p, 2)})")
        worse |= p < ALPHA
    if k == 0 or worse:
        return "fails", ", ".join(parts)
    if k / n >= C5_WORKS_RATE:
        return "holds", ", ".join(parts)
    return "inconclusive", ", ".join(parts)


def _shared(frame: pd.DataFrame, schemes: Sequence[str]) -> pd.DataFrame:
    dims = ["task", "hidden", "seq_len"]
    rows = frame[frame["init"].isin(schemes)]
    present = rows.groupby(dims)["init"].nunique()
    keep = present[present == len(set(schemes))].index
    return rows[pd.MultiIndex.from_frame(rows[dims]).isin(keep)]


def judge_c6(tables: StudyTables, options: Options) -> Verdict:
    """C6: three sub-checks (:data:`C6_RULE`)."""
    claim = C6
    trials = tables.trials
    checks: list[dict[str, Any]] = []
    missing: list[str] = []
    base = plain_scheme(trials)

    ortho = base[base["init"] == "orthogonal"] if len(base) else base
    if len(ortho):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ortho["grad_norm_first"].astype(float) / ortho["grad_norm_last"].astype(float)
        ortho = ortho.assign(ratio=ratio, factor=np.sqrt(_chi_measured(ortho)))
        ortho = ortho[np.isfinite(ortho["ratio"]) & np.isfinite(ortho["factor"])]
    if len(ortho) >= MIN_N:
        carried = float(ortho["ratio"].median())
        factor = float(ortho["factor"].median())
        radius = float(ortho["spectral_radius"].median())
        state = "holds" if abs(carried - 1) <= C6_NORM_TOLERANCE else "fails"
        checks.append(
            {
                "check": "(a) orthogonal preserves norm",
                "state": state,
                "evidence": f"orthogonal Whh has spectral radius {fmt(radius, 4)}; in the "
                f"network the gradient norm carried back over the sequence is {fmt(carried)}x "
                f"its size at the last step ({fmt(factor)} per step; n={len(ortho)})",
                "value": carried,
            }
        )
    else:
        missing.append(f"(a) needs >= {MIN_N} orthogonal trials at gain 1")

    relu = base[base["cell"] == "rnn_relu"] if len(base) else base
    rivals = [s for s in (XAVIER, "identity") if s in set(relu["init"])] if len(relu) else []
    if len(relu) and "he_normal" in set(relu["init"]) and rivals:
        shared = _shared(relu, ["he_normal", *rivals])
        he = shared[shared["init"] == "he_normal"]
        others = {s: shared[shared["init"] == s] for s in rivals}
        if len(he) >= MIN_N and all(len(f) >= MIN_N for f in others.values()):
            state, text = _rate_check(he, others, "he_normal")
            checks.append(
                {"check": "(b) He suits ReLU", "state": state, "evidence": f"rnn_relu: {text}"}
            )
        else:
            missing.append(f"(b) needs >= {MIN_N} he_normal and Xavier trials on rnn_relu")
    else:
        missing.append("(b) needs he_normal and Xavier (or identity) on rnn_relu")

    tanh = base[base["cell"] == "rnn_tanh"] if len(base) else base
    if len(tanh) and XAVIER in set(tanh["init"]) and tanh["init"].nunique() > 1:
        shared = _shared(tanh, sorted(set(tanh["init"].astype(str))))
        if shared.empty:
            keys = tanh.loc[tanh["init"] == XAVIER, ["task", "hidden", "seq_len"]]
            shared = tanh.merge(keys.drop_duplicates(), on=["task", "hidden", "seq_len"])
        rates = shared.groupby("init")["outcome"].apply(lambda s: float((s == "converged").mean()))
        best = str(rates.drop(XAVIER).idxmax())
        xav = shared[shared["init"] == XAVIER]
        if len(xav) >= MIN_N and (shared["init"] == best).sum() >= MIN_N:
            state, text = _rate_check(xav, {best: shared[shared["init"] == best]}, XAVIER)
            diverged = float(xav["diverged"].astype(bool).mean())  # at any epoch
            if diverged > 0:
                state = "fails"
            checks.append(
                {
                    "check": "(c) Xavier is the safe default for tanh",
                    "state": state,
                    "evidence": f"rnn_tanh: {text}; Xavier diverged {_pct(diverged)}",
                }
            )
        else:
            missing.append(f"(c) needs >= {MIN_N} Xavier trials and of the best other scheme")
    else:
        missing.append("(c) needs Xavier and another scheme on rnn_tanh")

    details = pd.DataFrame(checks, columns=["check", "state", "evidence", "value"])
    if not checks:
        return _not_measured(claim, "; ".join(missing) + ".")
    states = [c["state"] for c in checks]
    decided = [s for s in states if s != "inconclusive"]
    if decided and all(s == "holds" for s in states) and not missing:
        verdict = SUPPORTED
    elif decided and all(s == "fails" for s in decided):
        verdict = REFUTED
    elif "holds" in states:
        verdict = PARTLY
    else:
        verdict = INCONCLUSIVE
    evidence = "; ".join(f"{c['evidence']}: {c['state']}" for c in checks)
    if missing:
        evidence += "; not measured: " + ", ".join(missing)
    numbers = {"checks": [{k: c.get(k) for k in ("check", "state", "value")} for c in checks]}
    return Verdict(claim.id, claim.text, verdict, claim.rule, evidence + ".", details, numbers)


C5 = Claim(
    "C5",
    "uniform[0,1] works for tiny models and short sequences, fails at scale (loss explodes "
    "or NaN)",
    C5_RULE,
    judge_c5,
)
C6 = Claim(
    "C6",
    "He suits ReLU, orthogonal preserves norm exactly, Xavier is the safe default for tanh",
    C6_RULE,
    judge_c6,
)

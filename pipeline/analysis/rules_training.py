"""The claims about training outcomes beyond the speedup: C5 (uniform[0,1] at a tiny vs a
large size) and C6 (He for ReLU, orthogonal's norm, Xavier for tanh; the scheme parts judged
by paired comparisons within each cell, :func:`paired_cells`).

Each claim is its text, its rule (``C*_RULE``, the words the report and
``docs/results.md`` print) and its judge, which reads the outcomes of a study's trials.
This module reads tables; it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.analysis.cells import speedup_table
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
    _label,
    _not_measured,
    _pct,
    _rate,
    _varying,
    fmt,
    plain_scheme,
)
from pipeline.analysis.rules_init import _chi_measured
from pipeline.analysis.speedup_rule import speedup_cells

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
    "factor is shown beside it). (b) and (c) are paired comparisons within each cell (task, "
    "cell, hidden, seq_len and any setting that varies per scheme and seed), over the seeds "
    "two schemes share: who converged first, by the exact two-sided sign test at alpha "
    f"{ALPHA:g}, with the speedup (Kaplan-Meier medians, bootstrap interval) and the paired "
    "ratio beside it; both arms converging is not evidence that one suits better, and no "
    "difference found never supports 'suits better'. "
    "(b) He suits ReLU: on rnn_relu, he_normal against Xavier (identity, the IRNN, where "
    "there is no Xavier): holds if he_normal converges first significantly in every cell; "
    "fails if Xavier does in any cell; inconclusive otherwise (no difference found). "
    "(c) Xavier is the safe default for tanh: on rnn_tanh, Xavier against every other "
    "scheme in the cell: fails if Xavier diverges in any trial or another scheme converges "
    "first significantly; holds if Xavier converges first significantly against every other "
    "scheme in every cell; inconclusive otherwise (no difference found). "
    f"Each comparison needs >= {MIN_N} trials per scheme and >= {MIN_N} pairs. "
    "Supported if every sub-check measured holds and all three were measured; refuted if "
    "every decided sub-check fails; partly supported if some hold; inconclusive otherwise."
)

BETTER = "converges first significantly"
WORSE = "the rival converges first significantly"
NO_DIFFERENCE = "no difference found"


def paired_cells(
    frame: pd.DataFrame, mine: str, rival: str, options: Options
) -> tuple[list[dict[str, Any]], str | None]:
    """``mine`` against ``rival`` per cell: the sign test on who converged first and the
    speedup, each cell classified as :data:`BETTER`, :data:`WORSE` or
    :data:`NO_DIFFERENCE`. Returns the cells with enough pairs and, when none has, why."""
    rows = frame[frame["init"].isin([mine, rival])]
    by = speedup_cells(rows)
    try:
        table = speedup_table(rows, mine, rival, by, n_boot=options.n_boot, seed=options.seed)
    except ValueError as err:  # several trials per seed: cannot pair
        return [], str(err)
    dims = [d for d in _varying(table, [*by, "device_type"]) if d != "cell"] or ["seq_len"]
    out = []
    for _, r in table.iterrows():
        if min(int(r["n_a"]), int(r["n_b"]), int(r["n_pairs"])) < MIN_N:
            continue
        significant = float(r["sign_p"]) < ALPHA
        a_first, b_first = int(r["pairs_a_first"]), int(r["pairs_b_first"])
        state = (
            BETTER
            if significant and a_first > b_first
            else WORSE
            if significant and b_first > a_first
            else NO_DIFFERENCE
        )
        out.append(
            {
                "cell": _label(r, ["cell", *dims]),
                "scheme": mine,
                "rival": rival,
                "n_pairs": int(r["n_pairs"]),
                "first": a_first,
                "rival_first": b_first,
                "ties": int(r["pairs_tied"]),
                "sign_p": float(r["sign_p"]),
                "speedup": None if pd.isna(r["speedup"]) else float(r["speedup"]),
                "speedup_lo": None if pd.isna(r["lo"]) else float(r["lo"]),
                "speedup_hi": None if pd.isna(r["hi"]) else float(r["hi"]),
                "speedup_text": str(r["text"]),
                "paired_text": str(r["paired_text"]),
                "state": state,
            }
        )
    if not out:
        return [], (
            f"needs >= {MIN_N} trials of {mine} and {rival} on >= {MIN_N} shared seeds in a cell"
        )
    return out, None


def _comparison_text(c: dict[str, Any]) -> str:
    verdict = {
        BETTER: f"{c['scheme']} converges first significantly",
        WORSE: f"{c['rival']} converges first significantly",
        NO_DIFFERENCE: "no difference found",
    }[c["state"]]
    return (
        f"{c['cell']}: {c['paired_text']}; speedup of {c['scheme']} over {c['rival']} "
        f"{c['speedup_text']} -> {verdict}"
    )


def _compared_check(comparisons: list[dict[str, Any]], unsafe: bool = False) -> str:
    """holds / fails / inconclusive from the cells' comparisons (see :data:`C6_RULE`)."""
    states = [c["state"] for c in comparisons]
    if unsafe or WORSE in states:
        return "fails"
    return "holds" if states and all(s == BETTER for s in states) else "inconclusive"


def judge_c6(tables: StudyTables, options: Options) -> Verdict:
    """C6: three sub-checks (:data:`C6_RULE`)."""
    claim = C6
    trials = tables.trials
    checks: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
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
    relu_schemes = set(relu["init"].astype(str)) if len(relu) else set()
    rival = next((s for s in (XAVIER, "identity") if s in relu_schemes), None)
    if "he_normal" in relu_schemes and rival is not None:
        found, why = paired_cells(relu, "he_normal", rival, options)
        if found:
            comparisons += found
            checks.append(
                {
                    "check": "(b) He suits ReLU",
                    "state": _compared_check(found),
                    "evidence": "; ".join(_comparison_text(c) for c in found),
                }
            )
        else:
            missing.append(f"(b) {why}")
    else:
        missing.append("(b) needs he_normal and Xavier (or identity) on rnn_relu")

    tanh = base[base["cell"] == "rnn_tanh"] if len(base) else base
    tanh_schemes = sorted(set(tanh["init"].astype(str))) if len(tanh) else []
    if XAVIER in tanh_schemes and len(tanh_schemes) > 1:
        found, whys = [], []
        for other in (s for s in tanh_schemes if s != XAVIER):
            cells, why = paired_cells(tanh, XAVIER, other, options)
            found += cells
            whys += [why] if why else []
        if found:
            comparisons += found
            xav = tanh[tanh["init"] == XAVIER]
            diverged = float(xav["diverged"].astype(bool).mean())  # at any epoch
            checks.append(
                {
                    "check": "(c) Xavier is the safe default for tanh",
                    "state": _compared_check(found, unsafe=diverged > 0),
                    "evidence": "; ".join(_comparison_text(c) for c in found)
                    + f"; Xavier diverged in {_pct(diverged)} of its {len(xav)} trials",
                }
            )
        else:
            missing.append(f"(c) {'; '.join(whys)}")
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
    evidence = "; ".join(f"{c['check']}: {c['evidence']}: {c['state']}" for c in checks)
    if missing:
        evidence += "; not measured: " + ", ".join(missing)
    numbers = {
        "checks": [{k: c.get(k) for k in ("check", "state", "value")} for c in checks],
        "comparisons": comparisons,
    }
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

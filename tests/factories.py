"""Shared builders of trial results and study tables for the tests.

tests/ is not a package: a test imports these by module name (``from factories import
result, study``), as it does ``from conftest import ...``.

- :func:`history`, :func:`diagnostics` and :func:`trial_result`: the parts of a
  :class:`~models.spec.TrialResult` and the result itself, every value given or a plain
  default; a test that needs particular numbers (a loss curve, a measured variance) passes
  them.
- :func:`result`: one trial of the adding task whose training history is consistent with
  the outcome asked for (converged, diverged, stalled, frozen, censored), with the init
  diagnostics a claim rule reads; :func:`ending` and :func:`arm` pick outcomes by name.
- :func:`numbered` and :func:`study`: results as the store's rows and as
  :class:`~pipeline.analysis.tables.StudyTables`.
- Synthetic studies with a known verdict for each claim: :func:`race` (C4 and declared
  speedups), :func:`c2_runs`, :func:`gain_sweep` (C3), :func:`c5_runs`, :func:`ortho_runs`
  (C6 (a)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from models.spec import EpochRecord, InitDiagnostics, TrialResult, TrialSpec
from pipeline.analysis import verdicts as vd
from pipeline.analysis.tables import StudyTables, tables_from_results

N_BOOT = 200  # enough for the intervals the verdict tests read; keeps them fast
OPTS = vd.Options(n_boot=N_BOOT)
TARGET = 0.05
BASELINE = 0.167
T = 10  # default seq_len: T init-diagnostic steps
FIVE = vd.MIN_N


def up(x: float) -> float:
    """The next float above ``x``."""
    return math.nextafter(x, math.inf)


def down(x: float) -> float:
    """The next float below ``x``."""
    return math.nextafter(x, -math.inf)


# --------------------------------------------------------------------------- parts


def history(
    val_losses: Sequence[float],
    *,
    train_losses: Sequence[float] | None = None,
    grad_norm: float = 1.0,
    hidden_var: float = 0.2,
    hidden_sat: float = 0.0,
) -> list[EpochRecord]:
    """One epoch record per validation loss (epochs 1, 2, ...); the training loss is the
    validation loss unless ``train_losses`` are given."""
    train = list(val_losses) if train_losses is None else list(train_losses)
    assert len(train) == len(val_losses), "one training loss per epoch"
    return [
        EpochRecord(
            epoch=e,
            train_loss=t,
            val_loss=v,
            grad_norm=grad_norm,
            hidden_var=hidden_var,
            hidden_sat=hidden_sat,
        )
        for e, (t, v) in enumerate(zip(train, val_losses, strict=True), start=1)
    ]


def diagnostics(
    steps: int = T,
    *,
    radius: float = 1.0,
    hidden_var: list[float] | None = None,
    hidden_sat: list[float] | None = None,
    grad_norm: list[float] | None = None,
    initial_loss: float = 0.2,
    input_grad_norm: float = math.nan,
    recurrent_grad_norm: float = math.nan,
) -> InitDiagnostics:
    """Init diagnostics over ``steps`` time steps: variance 0.2, no saturation and a
    gradient norm of 0.1 at every step unless given; the gradients into Wxh and Whh are
    not measured (NaN) unless given."""
    return InitDiagnostics(
        spectral_radius=radius,
        hidden_var=hidden_var if hidden_var is not None else [0.2] * steps,
        hidden_sat=hidden_sat if hidden_sat is not None else [0.0] * steps,
        grad_norm=grad_norm if grad_norm is not None else [0.1] * steps,
        initial_loss=initial_loss,
        input_grad_norm=input_grad_norm,
        recurrent_grad_norm=recurrent_grad_norm,
    )


def trial_result(
    spec: TrialSpec,
    epochs: list[EpochRecord],
    *,
    diagnostics: InitDiagnostics,
    converged: int | None = None,
    diverged: int | None = None,
    target: float = TARGET,
    baseline: float = BASELINE,
    **fields: Any,
) -> TrialResult:
    """A result of ``spec`` with this history and these diagnostics; ``fields`` are the
    result's other fields (``wall_seconds``, ``device``, ``node``, ``extra``)."""
    return TrialResult(
        spec=spec,
        converged_epoch=converged,
        diverged_epoch=diverged,
        target_loss=target,
        baseline_loss=baseline,
        history=epochs,
        diagnostics=diagnostics,
        **fields,
    )


# --------------------------------------------------------------------------- trials


def result(
    init: str = "xavier",
    *,
    cell: str = "rnn_tanh",
    hidden: int = 16,
    seq_len: int = T,
    scale: float = 1.0,
    recurrent_scale: float | None = None,
    init_recurrent: str | None = None,
    seed: int = 0,
    converged: int | None = None,
    diverged: int | None = None,
    frozen: bool = False,
    stalled: bool = False,
    max_epochs: int = 40,
    patience: int = 2,
    target: float = TARGET,
    baseline: float = BASELINE,
    val_losses: list[float] | None = None,
    radius: float = 1.0,
    hidden_var: list[float] | None = None,
    hidden_sat: list[float] | None = None,
    grad_norm: list[float] | None = None,
) -> TrialResult:
    """One trial's result, with a training history consistent with its outcome.

    ``converged``: the first of ``patience`` epochs at a loss below the target (training
    stops there); ``diverged``: the loss is inf at that epoch; ``stalled``: the loss stays
    at the baseline; ``frozen``: zero gradient into Wxh and Whh at init; otherwise the loss
    leaves the baseline but never reaches the target (censored at ``max_epochs``).
    """
    spec = TrialSpec(
        task="adding",
        seq_len=seq_len,
        hidden=hidden,
        cell=cell,
        init=init,
        init_recurrent=init_recurrent,
        scale=scale,
        recurrent_scale=recurrent_scale,
        max_epochs=max_epochs,
        target_loss=target,
        patience=patience,
        seed=seed,
        data_seed=seed,
    )
    if val_losses is None:
        rest = baseline if stalled else 0.1
        if converged is not None:
            val_losses = [rest] * (converged - 1) + [target / 2] * patience
        elif diverged is not None:
            val_losses = [rest] * (diverged - 1) + [math.inf]
        else:
            val_losses = [rest] * max_epochs
    gradient = 0.0 if frozen else 1.0
    return trial_result(
        spec,
        history(val_losses),
        diagnostics=diagnostics(
            seq_len,
            radius=radius,
            hidden_var=hidden_var,
            hidden_sat=hidden_sat,
            grad_norm=grad_norm,
            input_grad_norm=gradient,
            recurrent_grad_norm=gradient,
        ),
        converged=converged,
        diverged=diverged,
        target=target,
        baseline=baseline,
    )


ENDINGS: dict[str, dict[str, Any]] = {
    "converged": {"converged": 3},
    "censored": {},
    "stalled": {"stalled": True},
    "frozen": {"frozen": True},
    "diverged": {"diverged": 3},
}
"""``result`` keyword arguments that give each outcome."""


def ending(outcome: str, init: str = "xavier", **kwargs: Any) -> TrialResult:
    """A trial whose ``outcome`` is the given one."""
    return result(init, **ENDINGS[outcome], **kwargs)


def arm(init: str, outcomes: list[str], first_seed: int = 0, **kwargs: Any) -> list[TrialResult]:
    """One trial per outcome, with seeds ``first_seed``, ``first_seed + 1``, ..."""
    return [ending(o, init, seed=first_seed + i, **kwargs) for i, o in enumerate(outcomes)]


# --------------------------------------------------------------------------- studies


def numbered(
    results: Sequence[TrialResult], key: str = "key"
) -> list[tuple[int, str, TrialResult]]:
    """The results as the store's rows: (trial number, ``{key}{number}``, result)."""
    return [(i, f"{key}{i}", r) for i, r in enumerate(results)]


def study(results: list[TrialResult], spec_text: str = "") -> StudyTables:
    """The tables of a study named "synthetic" that ran these results, in this order."""
    return tables_from_results(
        "synthetic", numbered(results), claim="synthetic claim", spec_text=spec_text
    )


def race(
    xavier: list[int | None],
    other: list[int | None],
    *,
    scheme: str = "uniform01",
    faster: str = "xavier",
    seq_len: int = T,
    hidden: int = 16,
    budget: int = 40,
    frozen: int = 0,
    **kwargs: Any,
) -> list[TrialResult]:
    """``faster`` trial i converges at ``xavier[i]``, ``scheme`` trial i at ``other[i]``
    (None: never, censored at ``budget``); the first ``frozen`` trials of ``scheme`` are
    frozen at init."""
    out = [
        result(faster, seq_len=seq_len, hidden=hidden, seed=s, converged=c, **kwargs)
        for s, c in enumerate(xavier)
    ]
    out += [
        result(
            scheme,
            seq_len=seq_len,
            hidden=hidden,
            seed=s,
            converged=c,
            max_epochs=budget,
            frozen=s < frozen,
            **kwargs,
        )
        for s, c in enumerate(other)
    ]
    return out


def c2_runs(
    sizes: dict[int, tuple[float, float, int]],
    *,
    n: int = 4,
    cell: str = "rnn_tanh",
    first_seed: int = 0,
) -> list[TrialResult]:
    """uniform01 at each hidden size: (last-step saturation, last-step variance, trials
    frozen out of ``n``)."""
    out = []
    for hidden, (sat, var, n_frozen) in sizes.items():
        for i in range(n):
            out.append(
                result(
                    "uniform01",
                    cell=cell,
                    hidden=hidden,
                    seed=first_seed + i,
                    frozen=i < n_frozen,
                    hidden_sat=[0.5] * (T - 1) + [sat],
                    hidden_var=[0.2] * (T - 1) + [var],
                )
            )
    return out


def chi_norms(chi: float, seq_len: int = T) -> list[float]:
    """|dL/dh_t| with (first / last)^(2 / (T - 1)) = chi: a per-step factor sqrt(chi)."""
    return [chi ** ((seq_len - 1 - t) / 2) for t in range(seq_len)]


def gain_sweep(
    chis: dict[float, float | list[float]], *, scheme: str = "xavier", **kw: Any
) -> list[TrialResult]:
    """Trials at each recurrent gain with the given measured chi (one trial per chi in a
    list, three trials otherwise); gain 1 is the plain scheme."""
    out = []
    for gain, chi in chis.items():
        values = chi if isinstance(chi, list) else [chi] * 3
        for seed, c in enumerate(values):
            out.append(
                result(
                    scheme,
                    recurrent_scale=gain,
                    seed=seed,
                    radius=gain,
                    grad_norm=chi_norms(c, kw.get("seq_len", T)),
                    **kw,
                )
            )
    return out


def c5_runs(
    cells: dict[tuple[int, int], tuple[list[str], list[str]]],
) -> list[TrialResult]:
    """Per (hidden, seq_len): the outcomes of the uniform01 and of the Xavier trials."""
    out = []
    for (hidden, seq_len), (uniform, xavier) in cells.items():
        out += arm("uniform01", uniform, hidden=hidden, seq_len=seq_len)
        out += arm("xavier", xavier, hidden=hidden, seq_len=seq_len)
    return out


OK = ["converged"] * FIVE
"""Five converged trials: an arm that works."""


def ortho_runs(carried: list[float], cell: str = "gru", **kw: Any) -> list[TrialResult]:
    """Orthogonal trials whose gradient norm at step 0 is ``carried`` times its norm at the
    last step (|dL/dh_0| / |dL/dh_T-1|), changing by the same factor at every step."""
    return [
        result("orthogonal", cell=cell, seed=s, grad_norm=chi_norms(r ** (2 / (T - 1))), **kw)
        for s, r in enumerate(carried)
    ]

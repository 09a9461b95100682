"""What every claim's judge shares: the verdicts, the thresholds, and small helpers.

A verdict is one of :data:`VERDICTS`, always with the numbers that decided it
(``Verdict.numbers``, written to ``verdicts.json``). The thresholds below are the rules'
numbers; ``docs/results.md`` lists them (``pipeline.analysis.verdicts.rules_markdown``).
This module reads tables; it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

SUPPORTED = "supported"
REFUTED = "refuted"
PARTLY = "partly supported"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured by this study"
REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
VERDICTS: tuple[str, ...] = (
    SUPPORTED,
    REFUTED,
    PARTLY,
    INCONCLUSIVE,
    NOT_MEASURED,
    REPRODUCED,
    NOT_REPRODUCED,
)
"""Every verdict a claim can get."""

XAVIER = "xavier"
UNIFORM = "uniform01"
TANH_CELLS: tuple[str, ...] = ("rnn_tanh",)
"""Cells whose hidden state is tanh(...) of the recurrence, where C1 is asked."""

MIN_N = 5
"""Fewest trials per arm (scheme, in one cell) for a speedup or a rate to decide anything."""
ALPHA = 0.05
"""Significance level of the tests (two-sided 95% intervals, sign and Fisher tests)."""
C1_EARLY_STEPS = 3
"""C1: the reference level is the mean hidden variance over this many first steps."""
C1_RATIO_RANGE = (0.5, 2.0)
"""C1 (constant): last-step / early variance within this range."""
C1_MIN_LEVEL = 1e-3
"""C1 (constant): a last-step variance below this has vanished (nothing is carried)."""
C1_MAX_SATURATION = 0.5
"""C1 (constant): more than this share of units saturated at the last step is not a
signal kept constant but one pinned at +-1."""
C1_LEVEL_RANGE = (0.5, 2.0)
"""C1 (level): "~1" means a last-step variance within this range."""
C2_LOST_SATURATION = 0.9
"""C2: the signal is lost at a hidden size when more than this share of units is saturated
at the last step (or most of its trials are frozen)."""
C2_VANISHED_VARIANCE = 1e-3
"""C2: the signal has vanished at a size when the median last-step hidden variance is below
this and the units are not saturated."""
C2_TREND_TOLERANCE = 0.02
"""C2: saturation "does not fall" with size: each size >= the previous one's minus this."""
C4_RANGE = (2.0, 10.0)
"""C4: the claimed range of the speedup."""
C5_TINY_HIDDEN = 8
"""C5: a "tiny" model has at most this many hidden units."""
C5_LARGE_HIDDEN = 32
"""C5: a model "at scale" has at least this many hidden units."""
C5_WORKS_RATE = 0.5
"""C5: "works": at least this share of a cell's trials converged."""
C6_NORM_TOLERANCE = 0.1
"""C6 (a): "preserves norm exactly": |dL/dh_0| / |dL/dh_T-1| (the gradient norm carried back
over the whole sequence) within 1 +- this."""
R_LEARN_RATE = 0.5
"""Reproductions: an arm "learns" the task when at least this share of its trials converged
(reached the task's target loss)."""
R_STAY_FRACTION = 0.9
"""Reproductions: an arm "stays at the baseline" when none of its trials converged and its
median best validation loss is at least this fraction of the task's memoryless baseline."""
R_FLAT_TOLERANCE = 0.02
"""Reproductions: a trial's learning has flattened when its best validation loss over the
whole run is not below (1 - this) x its best over the first half of the run (no gain of
more than this share over the last half of the budget)."""
C1_THEORY_TOLERANCE = 0.25
"""C1: a cell's measured last-step variance is "at its predicted fixed point" when within
this relative distance of the mean-field prediction (models.theory) for that cell."""
GAIN_TOLERANCE = 1e-9

THRESHOLDS: dict[str, Any] = {
    name: value
    for name, value in sorted(globals().items())
    if name == "MIN_N" or re.fullmatch(r"(C\d|R)_[A-Z_]+", name)
}
"""The thresholds of the rules by name (``MIN_N`` and the ``C*_`` constants), as the docs
list them."""


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict, the rule that gave it and the numbers that decided it."""

    claim_id: str
    """"C1" .. "C6", or a declared comparison's id."""
    claim: str
    """The claim's text."""
    verdict: str
    """One of :data:`VERDICTS`."""
    rule: str
    """The rule applied, in words a reader can check."""
    evidence: str
    """The numbers that decided it, in a few sentences."""
    details: pd.DataFrame | None = None
    """The table behind it, when there is one."""
    numbers: dict[str, Any] = field(default_factory=dict)
    """What the rule used, machine-readable (``verdicts.json``)."""

    def to_dict(self) -> dict[str, Any]:
        """``{id, text, verdict, rule, evidence, numbers}`` with JSON-safe numbers."""
        return {
            "id": self.claim_id,
            "text": self.claim,
            "verdict": self.verdict,
            "rule": self.rule,
            "evidence": self.evidence,
            "numbers": _json_safe(self.numbers),
        }


@dataclass(frozen=True)
class Claim:
    """A built-in claim: its text, its rule in words, and its judge."""

    id: str
    text: str
    rule: str
    judge: Callable[[StudyTables, Options], Verdict]


@dataclass(frozen=True)
class Options:
    """Knobs of the statistics a judge may use."""

    n_boot: int = 2000
    seed: int = 0


# --------------------------------------------------------------------------- helpers


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def plain_scheme(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose scheme is applied to every matrix (no recurrent override) at gain 1."""
    if frame.empty:
        return frame
    mask = frame["init_recurrent"].isna() & np.isclose(frame["scale"].astype(float), 1.0)
    if "recurrent_scale" in frame:
        mask &= np.isclose(frame["recurrent_scale"].astype(float), 1.0)
    return frame[mask]


def select_rows(trials: pd.DataFrame, values: Mapping[str, Any]) -> pd.DataFrame:
    """The rows whose columns hold ``values`` (one value or a tuple of allowed ones each;
    numbers compared with a tolerance): a declared claim's ``where``, a reproduction's arm."""
    mask = np.ones(len(trials), dtype=bool)
    for column, value in values.items():
        allowed = value if isinstance(value, tuple) else (value,)
        col = trials[column]
        hit = np.zeros(len(trials), dtype=bool)
        for v in allowed:
            if isinstance(v, float) or (isinstance(v, int) and col.dtype.kind == "f"):
                hit |= np.isclose(col.astype(float).to_numpy(), float(v))
            else:
                hit |= (col.astype(object) == v).fillna(False).to_numpy(dtype=bool)
        mask &= hit
    return trials[mask]


def recurrent_scheme(frame: pd.DataFrame) -> pd.Series:
    """The scheme that drew Whh: ``init_recurrent`` where set, else ``init``."""
    rec = frame["init_recurrent"].astype(object)
    return rec.where(rec.notna(), frame["init"].astype(object)).astype(str)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for evidence text: 3 significant digits, "n/a" for missing."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def _combine(verdicts: Iterable[str]) -> str:
    """Combine sub-verdicts: all the same -> that; otherwise partly supported."""
    found = [v for v in verdicts if v != NOT_MEASURED]
    if not found:
        return NOT_MEASURED
    if all(v == found[0] for v in found):
        return found[0]
    return PARTLY


def _rate(frame: pd.DataFrame, outcome: str = "converged") -> float:
    return float((frame["outcome"] == outcome).mean()) if len(frame) else math.nan


def wilson(successes: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaNs for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    z = float(sps.norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _label(row: Any, dims: Sequence[str]) -> str:
    parts = []
    for dim in dims:
        value = row[dim]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(f"{value}" if dim in ("cell", "task", "device_type") else f"{dim} {value}")
    return ", ".join(parts) or "all trials"


def _varying(frame: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    return [c for c in candidates if c in frame and frame[c].nunique(dropna=False) > 1]


def _theory(row: Any, **override: Any) -> Any:
    """The mean-field prediction for a trials row (``models.theory.predict``)."""
    from models.theory import predict

    values = {
        "task": str(row["task"]),
        "cell": str(row["cell"]),
        "hidden": int(row["hidden"]),
        "seq_len": int(row["seq_len"]),
        "init": str(row["init"]),
        "init_recurrent": None if pd.isna(row["init_recurrent"]) else str(row["init_recurrent"]),
        "scale": float(row["scale"]),
        "recurrent_scale": float(row.get("recurrent_scale", row["scale"])),
    }
    corpus = row.get("corpus")
    if corpus is not None and not pd.isna(corpus):
        values["corpus"] = str(corpus)  # charlm: Wxh's fan-in is the corpus's vocabulary
    values.update(override)
    return predict(**values)


def _not_measured(claim: Claim, need: str, **numbers: Any) -> Verdict:
    return Verdict(claim.id, claim.text, NOT_MEASURED, claim.rule, need, numbers=numbers)

"""The ``claims:`` list of a study spec: which claims a study is judged on.

A study may declare what it tests. Each entry is either a built-in claim id (``C1`` ..
``C6``, see ``pipeline.analysis.verdicts.CLAIMS``) or a comparison of its own::

    claims:
      - C4
      - {faster: orthogonal, than: xavier, by: [2, 10], where: {hidden: 64}}

A comparison says that scheme ``faster`` needs ``by[0]`` to ``by[1]`` times fewer epochs to
converge than scheme ``than``; ``by: [2, .inf]`` says "at least 2x". ``where`` keeps the
trials whose columns hold the given value (or one of a list of values); ``metric`` is
``epochs_to_converge`` (the only one a speedup is defined for); ``id`` names it in the
report (default ``U1``, ``U2``, ... in order). Comparisons are judged by the same speedup
rule as C4.

This module is plain Python: it is read by the spec loader and by the verdicts, and knows
nothing of Optuna, MLflow, Ray or tensors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUILTIN_IDS",
    "WHERE_KEYS",
    "Comparison",
    "parse_claims",
]

BUILTIN_IDS: tuple[str, ...] = ("C1", "C2", "C3", "C4", "C5", "C6")
"""The built-in claims (DESIGN's six)."""
WHERE_KEYS: tuple[str, ...] = (
    "task",
    "cell",
    "hidden",
    "seq_len",
    "init_recurrent",
    "scale",
    "recurrent_scale",
    "optimizer",
    "lr",
    "clip",
    "batch_size",
    "max_epochs",
    "device_type",
)
"""Columns a comparison's ``where`` may filter on."""
METRICS: tuple[str, ...] = ("epochs_to_converge",)
_KEYS = ("id", "faster", "than", "by", "where", "metric")
_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,32}")


@dataclass(frozen=True)
class Comparison:
    """A declared claim: scheme ``faster`` converges ``low`` to ``high`` times faster."""

    id: str
    faster: str
    than: str
    low: float
    high: float
    """``math.inf`` for "at least ``low``"."""
    where: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    metric: str = "epochs_to_converge"

    @property
    def text(self) -> str:
        """The claim in words, e.g. "orthogonal converges 2-10x faster than xavier"."""
        span = (
            f"at least {self.low:g}x" if math.isinf(self.high) else f"{self.low:g}-{self.high:g}x"
        )
        where = "".join(
            f", {k} {'/'.join(str(v) for v in vals)}" for k, vals in self.where.items()
        )
        return f"{self.faster} converges {span} faster than {self.than}{where}"


class ClaimError(ValueError):
    """A ``claims:`` entry is invalid; ``path`` is where in the list, ``msg`` what is wrong."""

    def __init__(self, path: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.path = path
        self.msg = msg


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def parse_claims(raw: Any, schemes: tuple[str, ...] | None = None) -> list[str | Comparison]:
    """Validate a spec's ``claims:`` value.

    Args:
        raw: the YAML value (a list of ids and mappings).
        schemes: the registered init schemes, to check ``faster``/``than`` (None: unchecked).

    Returns:
        Built-in ids and :class:`Comparison` records, in the order given.

    Raises:
        ClaimError: naming the entry, the key and what is allowed.
    """
    if not isinstance(raw, list) or not raw:
        raise ClaimError((), "must be a non-empty list of claim ids and comparisons")
    out: list[str | Comparison] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            if entry not in BUILTIN_IDS:
                raise ClaimError(
                    (i,), f"unknown claim {entry!r}; built-in: {', '.join(BUILTIN_IDS)}"
                )
            item: str | Comparison = entry
            name = entry
        elif isinstance(entry, dict):
            item = _comparison(i, entry, schemes, default_id=f"U{i + 1}")
            name = item.id
        else:
            raise ClaimError(
                (i,),
                "must be a built-in claim id or a mapping {faster, than, by, where, metric} "
                f"(got {entry!r})",
            )
        if name in seen:
            raise ClaimError((i,), f"claim {name!r} is listed twice")
        seen.add(name)
        out.append(item)
    return out


def _comparison(
    i: int, entry: dict[str, Any], schemes: tuple[str, ...] | None, default_id: str
) -> Comparison:
    for key in entry:
        if key not in _KEYS:
            raise ClaimError((i, str(key)), f"unknown key; allowed: {', '.join(_KEYS)}")
    for key in ("faster", "than", "by"):
        if key not in entry:
            raise ClaimError((i,), f"a comparison needs {key!r} (keys: faster, than, by)")
    ident = entry.get("id", default_id)
    if not isinstance(ident, str) or not _ID_RE.fullmatch(ident) or ident in BUILTIN_IDS:
        raise ClaimError(
            (i, "id"), f"must be 1-32 letters, digits, '_.-' and not C1-C6 (got {ident!r})"
        )
    names = []
    for key in ("faster", "than"):
        value = entry[key]
        if not isinstance(value, str) or (schemes is not None and value not in schemes):
            known = f"; known: {', '.join(schemes)}" if schemes is not None else ""
            raise ClaimError((i, key), f"must be an init scheme name (got {value!r}){known}")
        names.append(value)
    if names[0] == names[1]:
        raise ClaimError((i, "than"), f"must differ from faster (both {names[0]!r})")
    by = entry["by"]
    if (
        not isinstance(by, list)
        or len(by) != 2
        or not all(_number(v) for v in by)
        or math.isnan(by[0])
        or math.isnan(by[1])
        or not 0 < by[0] < by[1]
        or math.isinf(by[0])
    ):
        raise ClaimError(
            (i, "by"), f"must be [low, high] with 0 < low < high (high may be .inf); got {by!r}"
        )
    where_raw = entry.get("where", {}) or {}
    if not isinstance(where_raw, dict):
        raise ClaimError((i, "where"), f"must be a mapping column -> value(s) (got {where_raw!r})")
    where: dict[str, tuple[Any, ...]] = {}
    for key, value in where_raw.items():
        if key not in WHERE_KEYS:
            raise ClaimError(
                (i, "where", str(key)), f"unknown column; allowed: {', '.join(WHERE_KEYS)}"
            )
        values = tuple(value) if isinstance(value, list) else (value,)
        if not values or not all(isinstance(v, str | int | float) for v in values):
            raise ClaimError(
                (i, "where", str(key)), f"must be a value or a list of values (got {value!r})"
            )
        where[str(key)] = values
    metric = entry.get("metric", "epochs_to_converge")
    if metric not in METRICS:
        raise ClaimError(
            (i, "metric"), f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}"
        )
    return Comparison(ident, names[0], names[1], float(by[0]), float(by[1]), where, metric)

"""The ``claims:`` list of a study spec: which claims a study is judged on.

A study may declare what it tests. Each entry is either a built-in claim id (``C1`` ..
``C6``, see ``pipeline.analysis.verdicts.CLAIMS``) or a comparison of its own::

    claims:
      - C4
      - {faster: orthogonal, than: xavier, by: [2, 10], where: {hidden: 64}}

A comparison says that scheme ``faster`` needs ``by[0]`` to ``by[1]`` times fewer epochs to
converge than scheme ``than``; ``by: [2, .inf]`` says "at least 2x". ``where`` keeps the
trials whose columns hold the given value (or one of a list of values); ``matrices:
recurrent`` compares schemes of the recurrent matrix alone (``init_recurrent``, the others
fixed by ``init``) instead of the whole network's (``matrices: all``); ``metric`` is
``epochs_to_converge`` (the only one a speedup is defined for); ``id`` names it in the
report (default ``U1``, ``U2``, ... in order). Comparisons are judged by the same speedup
rule as C4.

A reproduction of a published result names arms (trials matching a set of column
values) that must learn the task and arms that must stay at its memoryless baseline::

      - id: le2015
        source: "Le, Jaitly & Hinton 2015"
        learn: [{cell: rnn_relu, init: identity}, {cell: lstm, init: xavier}]
        stay: [{cell: rnn_tanh, init: xavier}]
        where: {seq_len: 100}

It may also state the paper's protocol (``published``: every key optional) and arms that
must learn under the study's protocol for its verdict to mean anything (``control``:
positive controls, looked up in the whole study, not only where ``where`` keeps)::

        published: {optimizer: sgd, hidden: 100, seq_len: [150, 200, 300, 400],
                    steps: 100000, batch_size: 16, note: "at least 10^5 steps"}
        control: [{cell: lstm, seq_len: 10}]

It is judged by the reproduction rule (``pipeline.analysis.reproduction_rule``):
"reproduced", "not reproduced" or "inconclusive" (at this budget, or nothing learns under
this protocol), with the numbers per arm and the paper's protocol beside the study's.

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
    "PublishedProtocol",
    "Reproduction",
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
_KEYS = ("id", "faster", "than", "by", "where", "metric", "matrices")
MATRICES: dict[str, str] = {"all": "init", "recurrent": "init_recurrent"}
"""What a comparison's schemes draw -> the column naming them: every matrix (``init``), or
the recurrent matrix alone (``init_recurrent``, the other matrices fixed by ``init``)."""
_REPRODUCTION_KEYS = ("id", "source", "learn", "stay", "where", "published", "control")
_PUBLISHED_KEYS = ("optimizer", "hidden", "seq_len", "steps", "epochs", "batch_size", "note")
ARM_KEYS: tuple[str, ...] = ("init", *WHERE_KEYS)
"""Columns an arm of a reproduction may name."""
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
    on: str = "init"
    """The column naming the schemes: ``init`` or ``init_recurrent`` (Whh alone)."""

    @property
    def text(self) -> str:
        """The claim in words, e.g. "orthogonal converges 2-10x faster than xavier"."""
        span = (
            f"at least {self.low:g}x" if math.isinf(self.high) else f"{self.low:g}-{self.high:g}x"
        )
        where = f", {where_text(self.where)}" if self.where else ""
        whh = " (Whh only)" if self.on == "init_recurrent" else ""
        return f"{self.faster}{whh} converges {span} faster than {self.than}{whh}{where}"


@dataclass(frozen=True)
class PublishedProtocol:
    """How the paper trained (every field optional): what the study's protocol is set
    beside, and the budget a failing arm's verdict is measured against."""

    optimizer: str | None = None
    hidden: tuple[int, ...] = ()
    seq_len: tuple[int, ...] = ()
    """The sequence lengths T the paper reports."""
    steps: int | None = None
    """Parameter updates (batches) the paper trained for."""
    epochs: int | None = None
    """Epochs the paper trained for (compared with the study's ``max_epochs`` only when
    ``steps`` is not given)."""
    batch_size: int | None = None
    note: str = ""

    @property
    def text(self) -> str:
        """In words: ``sgd, hidden 100, T 150/400, 100,000 steps, batch 16``."""
        parts = []
        if self.optimizer:
            parts.append(self.optimizer)
        if self.hidden:
            parts.append("hidden " + "/".join(str(h) for h in self.hidden))
        if self.seq_len:
            parts.append("T " + "/".join(str(t) for t in self.seq_len))
        if self.steps is not None:
            parts.append(f"{self.steps:,} steps")
        if self.epochs is not None:
            parts.append(f"{self.epochs:,} epochs")
        if self.batch_size is not None:
            parts.append(f"batch {self.batch_size}")
        text = ", ".join(parts) or "not stated"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True)
class Reproduction:
    """A published ordering to reproduce: the ``learn`` arms learn the task, the ``stay``
    arms stay at its memoryless baseline, in the cells ``where`` keeps; ``control`` arms
    (positive controls) must learn under the study's protocol; ``published`` is the
    paper's protocol (None: not stated)."""

    id: str
    source: str
    learn: tuple[dict[str, Any], ...]
    stay: tuple[dict[str, Any], ...]
    where: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    published: PublishedProtocol | None = None
    control: tuple[dict[str, Any], ...] = ()

    @property
    def text(self) -> str:
        """The claim in words, e.g. "Le 2015: rnn_relu/identity learns; ... stays"."""
        parts = []
        if self.learn:
            verb = "learn" if len(self.learn) > 1 else "learns"
            parts.append(f"{' and '.join(arm_label(a) for a in self.learn)} {verb} the task")
        if self.stay:
            verb = "stay" if len(self.stay) > 1 else "stays"
            parts.append(f"{' and '.join(arm_label(a) for a in self.stay)} {verb} at the baseline")
        where = f", {where_text(self.where)}" if self.where else ""
        return f"{self.source}: {', '.join(parts)}{where}"


def where_text(where: dict[str, tuple[Any, ...]]) -> str:
    """A ``where`` in words: ``seq_len 80, hidden 32/64`` ("" for none)."""
    return ", ".join(f"{k} {'/'.join(str(v) for v in vals)}" for k, vals in where.items())


def arm_label(arm: dict[str, Any]) -> str:
    """An arm in words: its column values joined by '/', e.g. ``rnn_relu/identity``."""
    return "/".join(str(v) for v in arm.values())


class ClaimError(ValueError):
    """A ``claims:`` entry is invalid; ``path`` is where in the list, ``msg`` what is wrong."""

    def __init__(self, path: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.path = path
        self.msg = msg


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


Claim = str | Comparison | Reproduction
"""One entry of a spec's ``claims:``: a built-in id, a comparison or a reproduction."""


def parse_claims(raw: Any, schemes: tuple[str, ...] | None = None) -> list[Claim]:
    """Validate a spec's ``claims:`` value.

    Args:
        raw: the YAML value (a list of ids and mappings).
        schemes: the registered init schemes, to check ``faster``/``than`` (None: unchecked).

    Returns:
        Built-in ids, :class:`Comparison` and :class:`Reproduction` records, in order.

    Raises:
        ClaimError: naming the entry, the key and what is allowed.
    """
    if not isinstance(raw, list) or not raw:
        raise ClaimError((), "must be a non-empty list of claim ids and comparisons")
    out: list[Claim] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            if entry not in BUILTIN_IDS:
                raise ClaimError(
                    (i,), f"unknown claim {entry!r}; built-in: {', '.join(BUILTIN_IDS)}"
                )
            item: Claim = entry
            name = entry
        elif isinstance(entry, dict) and ("learn" in entry or "stay" in entry):
            item = _reproduction(i, entry, schemes, default_id=f"R{i + 1}")
            name = item.id
        elif isinstance(entry, dict):
            item = _comparison(i, entry, schemes, default_id=f"U{i + 1}")
            name = item.id
        else:
            raise ClaimError(
                (i,),
                "must be a built-in claim id, a comparison {faster, than, by, where, metric} "
                "or a reproduction {source, learn, stay, where, published, control} "
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
    ident = _ident(i, entry, default_id)
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
    where = _where(i, entry)
    metric = entry.get("metric", "epochs_to_converge")
    if metric not in METRICS:
        raise ClaimError(
            (i, "metric"), f"unknown metric {metric!r}; allowed: {', '.join(METRICS)}"
        )
    matrices = entry.get("matrices", "all")
    if matrices not in MATRICES:
        raise ClaimError(
            (i, "matrices"), f"must be one of {', '.join(MATRICES)} (got {matrices!r})"
        )
    on = MATRICES[matrices]
    if on in where:
        raise ClaimError((i, "where", on), f"cannot filter on the compared column {on!r}")
    return Comparison(
        ident, names[0], names[1], float(by[0]), float(by[1]), where, metric, str(on)
    )


def _ident(i: int, entry: dict[str, Any], default_id: str) -> str:
    ident = entry.get("id", default_id)
    if not isinstance(ident, str) or not _ID_RE.fullmatch(ident) or ident in BUILTIN_IDS:
        raise ClaimError(
            (i, "id"), f"must be 1-32 letters, digits, '_.-' and not C1-C6 (got {ident!r})"
        )
    return ident


def _where(i: int, entry: dict[str, Any]) -> dict[str, tuple[Any, ...]]:
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
    return where


def _reproduction(
    i: int, entry: dict[str, Any], schemes: tuple[str, ...] | None, default_id: str
) -> Reproduction:
    for key in entry:
        if key not in _REPRODUCTION_KEYS:
            raise ClaimError(
                (i, str(key)), f"unknown key; allowed: {', '.join(_REPRODUCTION_KEYS)}"
            )
    ident = _ident(i, entry, default_id)
    source = entry.get("source", ident)
    if not isinstance(source, str) or not source.strip() or len(source) > 80:
        raise ClaimError(
            (i, "source"), f"must be a non-empty text of <= 80 characters (got {source!r})"
        )
    sides: dict[str, tuple[dict[str, Any], ...]] = {}
    for side in ("learn", "stay", "control"):
        arms = entry.get(side, [])
        if not isinstance(arms, list):
            raise ClaimError(
                (i, side),
                f"must be a list of arms such as {{cell: lstm, init: xavier}} (got {arms!r})",
            )
        sides[side] = tuple(_arm(i, side, j, arm, schemes) for j, arm in enumerate(arms))
    every = [*sides["learn"], *sides["stay"]]
    if not every:
        raise ClaimError((i,), "a reproduction needs at least one arm in 'learn' or 'stay'")
    every += sides["control"]
    if len({tuple(sorted(a.items())) for a in every}) < len(every):
        raise ClaimError((i,), "an arm is listed twice (in learn, stay, control or more)")
    published = _published(i, entry["published"]) if "published" in entry else None
    return Reproduction(
        ident,
        source.strip(),
        sides["learn"],
        sides["stay"],
        _where(i, entry),
        published,
        sides["control"],
    )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _published(i: int, raw: Any) -> PublishedProtocol:
    """A reproduction's ``published:`` mapping: the paper's protocol."""
    where = (i, "published")
    if not isinstance(raw, dict) or not raw:
        raise ClaimError(
            where,
            "must be a mapping of the paper's protocol, e.g. {optimizer: sgd, hidden: 100, "
            f"seq_len: [150, 400], steps: 100000}} (got {raw!r})",
        )
    for key in raw:
        if key not in _PUBLISHED_KEYS:
            raise ClaimError(
                (*where, str(key)), f"unknown key; allowed: {', '.join(_PUBLISHED_KEYS)}"
            )
    sizes: dict[str, tuple[int, ...]] = {}
    for key in ("hidden", "seq_len"):
        value = raw.get(key, [])
        values = value if isinstance(value, list) else [value]
        if key in raw and (not values or not all(_positive_int(v) for v in values)):
            raise ClaimError(
                (*where, key), f"must be a positive integer or a list of them (got {value!r})"
            )
        sizes[key] = tuple(values)
    counts: dict[str, int | None] = {}
    for key in ("steps", "epochs", "batch_size"):
        value = raw.get(key)
        if value is not None and not _positive_int(value):
            raise ClaimError((*where, key), f"must be a positive integer (got {value!r})")
        counts[key] = value
    texts: dict[str, str] = {}
    for key, limit in (("optimizer", 32), ("note", 120)):
        value = raw.get(key, "")
        if not isinstance(value, str) or (key in raw and not value.strip()) or len(value) > limit:
            raise ClaimError(
                (*where, key), f"must be a non-empty text of <= {limit} characters (got {value!r})"
            )
        texts[key] = value.strip()
    return PublishedProtocol(
        optimizer=texts["optimizer"] or None,
        hidden=sizes["hidden"],
        seq_len=sizes["seq_len"],
        steps=counts["steps"],
        epochs=counts["epochs"],
        batch_size=counts["batch_size"],
        note=texts["note"],
    )


def _arm(i: int, side: str, j: int, arm: Any, schemes: tuple[str, ...] | None) -> dict[str, Any]:
    if not isinstance(arm, dict) or not arm:
        raise ClaimError(
            (i, side, j),
            f"an arm must be a mapping column -> value, e.g. {{cell: lstm}} (got {arm!r})",
        )
    for key, value in arm.items():
        if key not in ARM_KEYS:
            raise ClaimError(
                (i, side, j, str(key)), f"unknown column; allowed: {', '.join(ARM_KEYS)}"
            )
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ClaimError((i, side, j, str(key)), f"must be one value (got {value!r})")
        if key in ("init", "init_recurrent") and schemes is not None and value not in schemes:
            raise ClaimError(
                (i, side, j, str(key)),
                f"must be an init scheme name (got {value!r}); known: {', '.join(schemes)}",
            )
    return {str(k): v for k, v in arm.items()}

"""C4 across the suite: where the headline holds and where it does not, by condition.

A speedup verdict is one study's answer under one protocol (an optimizer, a task, a cell
type, clipping, an epoch budget, the hidden sizes and lengths it ran). The suite's answer
to C4 is therefore a **map**: every C4 cell of every study, with the conditions it was
measured under (:func:`study_conditions`, read from the study's ``trials`` table), grouped
by what the cell showed ("within 2-10x", "below 2x", "unbounded: uniform01 cannot train",
...). :func:`combine_c4` makes the suite's one C4 record from the studies' (its verdict:
the speedup rule's last sentence over all their cells; its evidence: the map), and
:func:`c4_headline` is the README's "In short" sentence. Records are the suite's
``verdicts.json`` dicts; records written before conditions were recorded still render,
saying so. Like the rest of ``pipeline.analysis`` this reads tables and records only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from pipeline.analysis.judging import C4_RANGE, fmt
from pipeline.analysis.protocol import EDGE_FLAG, ArmPick
from pipeline.analysis.speedup_rule import (
    ABOVE,
    AT_LEAST,
    BELOW,
    CELL_INCONCLUSIVE,
    SMALL_N,
    UNBOUNDED,
    WITHIN,
    combine_cells,
)

__all__ = [
    "CONDITION_KEYS",
    "c4_headline",
    "c4_map",
    "combine_c4",
    "condition_table",
    "lr_edges",
    "speedup_cells",
    "study_conditions",
]

CONDITION_KEYS: tuple[str, ...] = (
    "optimizer",
    "task",
    "cell",
    "hidden",
    "seq_len",
    "clip",
    "max_epochs",
    "batches_per_epoch",
    "lr",
)
"""The trial settings a speedup is conditional on (a column each of the trials table)."""
REGIME = ("hidden", "seq_len")
"""The keys a phrase of the map lists its cells by; the rest name the condition."""
TUNED = "tuned per arm"
"""The ``lr`` condition of a tuned protocol."""
_ORDER = (WITHIN, AT_LEAST, BELOW, ABOVE, UNBOUNDED, CELL_INCONCLUSIVE, SMALL_N)
NOT_RECORDED = "the suite's records predate its conditions; `make reproduce` records them"


def study_conditions(trials: pd.DataFrame, tuned: bool) -> dict[str, Any]:
    """A study's conditions from its ``trials`` table: each of :data:`CONDITION_KEYS` it
    has, as its one value or the sorted list of the values it varies over (``lr``:
    :data:`TUNED` for a tuned protocol, whose arms each run at their own)."""
    out: dict[str, Any] = {}
    for key in CONDITION_KEYS:
        if key not in trials or not len(trials):
            continue
        values = sorted({_plain(v) for v in trials[key]}, key=_sort_key)
        out[key] = values[0] if len(values) == 1 else values
    if tuned:
        out["lr"] = TUNED
    return out


def _sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers in order, then text, then None."""
    if value is None:
        return (2, 0.0, "")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))


def _plain(value: Any) -> Any:
    """A JSON value for a table cell (numpy scalars to Python; NaN to None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def lr_edges(picks: Sequence[ArmPick]) -> list[dict[str, Any]]:
    """The arms of a tuned study whose final lr pick is at an end of their searched range
    (``ArmPick.at_edge``), as JSON: ``{"arm", "lr", "searched"}``."""
    return [
        {"arm": {k: _plain(v) for k, v in p.arm.items()}, "lr": p.lr, "searched": p.searched}
        for p in picks
        if p.at_edge
    ]


def _edge_schemes(record: dict[str, Any], conditions: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's flagged arms that are one of the two compared schemes in this cell."""
    numbers = record["numbers"]
    out = []
    for edge in record.get("lr_edges") or []:
        arm = edge["arm"]
        scheme = next(
            (
                arm[k]
                for k in ("init", "init_recurrent")
                if arm.get(k) in (numbers["faster"], numbers["than"])
            ),
            None,
        )
        same = all(
            _value(conditions[k]) == _value(v)
            for k, v in arm.items()
            if k in conditions and not isinstance(conditions[k], list)
        )
        if scheme is not None and same:
            out.append({"scheme": scheme, "lr": edge["lr"], "searched": edge["searched"]})
    return out


def speedup_cells(records: Sequence[dict[str, Any]], claim: str | None = None) -> list[dict]:
    """Every cell of every speedup verdict (``claim``: of that claim id only), each with
    its study, claim, class, numbers and ``conditions``: the study's, overridden by what
    the cell itself fixes (a setting the study varies). Cells already combined keep
    theirs."""
    out = []
    for r in records:
        numbers = r.get("numbers") or {}
        if "faster" not in numbers or (claim is not None and r["id"] != claim):
            continue
        for cell in numbers.get("cells", []):
            if "conditions" in cell:  # a combined record's cell
                out.append(dict(cell))
                continue
            own = {k: cell[k] for k in CONDITION_KEYS if k in cell}
            where = {**(r.get("conditions") or {}), **own}
            edges = _edge_schemes(r, {**where, **cell})
            out.append(
                {
                    "study": r["study"],
                    "claim": r["id"],
                    "faster": numbers["faster"],
                    "than": numbers["than"],
                    "range": list(numbers.get("range", C4_RANGE)),
                    **{k: cell.get(k) for k in ("estimate", "lo", "hi", "kind")},
                    "classification": cell["classification"],
                    "conditions": where,
                    "lr_edge": edges,
                }
            )
    return out


def _label(cell: dict[str, Any]) -> str:
    low, high = (float(x) for x in cell["range"])
    span = f"at least {low:g}x" if math.isinf(float(high)) else f"within {low:g}-{high:g}x"
    return {
        WITHIN: span,
        BELOW: f"below {low:g}x",
        ABOVE: f"above {high:g}x",
        UNBOUNDED: f"unbounded ({cell['than']} cannot train)",
        AT_LEAST: "a lower bound only, never 'within'",
        SMALL_N: "undecided (too few trials)",
    }.get(cell["classification"], _undecided(cell))


def _undecided(cell: dict[str, Any]) -> str:
    if cell.get("kind") == "none":
        return f"undecided ({cell['faster']}'s median not reached)"
    return "undecided"


def _condition_text(conditions: dict[str, Any], varying: set[str]) -> str:
    """``under adam on adding`` and any other key that differs across the map."""
    parts = []
    if "optimizer" in conditions:
        parts.append(f"under {_value(conditions['optimizer'])}")
    if "task" in conditions:
        parts.append(f"on {_value(conditions['task'])}")
    for key in ("cell", "clip", "max_epochs", "batches_per_epoch", "lr"):
        if key not in varying or key not in conditions:
            continue
        value = conditions[key]
        if key == "clip":
            parts.append("without clipping" if value is None else f"with clip {_value(value)}")
        elif key == "max_epochs":
            parts.append(f"{_value(value)} epochs")
        else:
            parts.append(f"{key} {_value(value)}")
    return " ".join(parts)


def _value(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_value(v) for v in value)
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _regimes(cells: list[dict[str, Any]], show_len: bool) -> str:
    """``hidden 2 (seq_len 5), hidden 8, 32 (seq_len 5, 20)``: hidden sizes that share
    their lengths are listed together."""
    lengths: dict[Any, set[Any]] = {}
    for c in cells:
        lengths.setdefault(c["conditions"].get("hidden"), set()).add(
            str(_value(c["conditions"].get("seq_len")))
        )
    by_lengths: dict[tuple[str, ...], list[Any]] = {}
    for hidden, lens in lengths.items():
        by_lengths.setdefault(tuple(sorted(lens, key=_num)), []).append(hidden)
    parts = []
    for shared, hiddens in by_lengths.items():
        hs = ", ".join(_value(h) for h in sorted(hiddens, key=lambda h: _num(str(h))))
        text = f"hidden {hs}" if hs != "none" else "every hidden size"
        parts.append(text + (f" (seq_len {', '.join(shared)})" if show_len else ""))
    return ", ".join(parts)


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def _numbers(cells: list[dict[str, Any]]) -> str:
    estimates = [
        float(c["estimate"])
        for c in cells
        if c.get("estimate") not in (None, "inf") and math.isfinite(float(c["estimate"]))
    ]
    cls = cells[0]["classification"]
    if cls == AT_LEAST:
        estimates = [float(c["lo"]) for c in cells if c.get("lo") is not None]
    if not estimates or cls not in (WITHIN, BELOW, ABOVE, AT_LEAST):
        return ""
    low, high = min(estimates), max(estimates)
    span = f"{fmt(low)}x" if low == high else f"{fmt(low)}-{fmt(high)}x"
    return f" (at least {span})" if cls == AT_LEAST else f" ({span})"


def c4_map(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The map's phrases, one per (what the cells showed, condition): ``{"class",
    "label", "text", "n"}``, in the order within, lower bound, below, above, unbounded,
    undecided."""
    varying = {
        k
        for k in CONDITION_KEYS
        if len({str(c["conditions"].get(k)) for c in cells}) > 1 and k not in REGIME
    }
    show_len = len({str(c["conditions"].get("seq_len")) for c in cells}) > 1
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in cells:
        where = _condition_text(c["conditions"], varying)
        groups.setdefault((c["classification"], where), []).append(c)

    def order(item: tuple[tuple[str, str], list[dict[str, Any]]]) -> tuple[int, str]:
        cls = item[0][0]
        return (_ORDER.index(cls) if cls in _ORDER else len(_ORDER), item[0][1])

    phrases = []
    for (cls, where), members in sorted(groups.items(), key=order):
        label = _label(members[0]) + _numbers(members)
        at = _regimes(members, show_len)
        text = " ".join(p for p in (label, where, f"at {at}") if p)
        phrases.append({"class": cls, "label": label, "text": text, "n": len(members)})
    return phrases


def _map_text(cells: list[dict[str, Any]]) -> str:
    """The phrases, then a note when the records carry no optimizer or task."""
    text = "; ".join(p["text"] for p in c4_map(cells)) + "."
    edged: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        for edge in c.get("lr_edge") or []:
            edged.setdefault(edge["scheme"], []).append(c)
    if edged:
        show_len = len({str(c["conditions"].get("seq_len")) for c in cells}) > 1
        where = "; ".join(f"{k} at {_regimes(v, show_len)}" for k, v in sorted(edged.items()))
        text += (
            f" {EDGE_FLAG[0].upper()}{EDGE_FLAG[1:]}, so a wider search could move it: {where}."
        )
    if cells and not any({"optimizer", "task"} & set(c["conditions"]) for c in cells):
        text += f" The optimizer, task and budget are not known here: {NOT_RECORDED}."
    return text


def combine_c4(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` with the studies' C4 records made one: its verdict is the speedup
    rule's over all their cells, its evidence the map, its cells carry their conditions
    and study, and ``numbers.studies`` keeps each study's own verdict. Records without a
    C4 speedup are returned as they are."""
    c4 = [r for r in records if r["id"] == "C4" and "faster" in (r.get("numbers") or {})]
    if not c4:
        return list(records)
    cells = speedup_cells(c4)
    studies = list(dict.fromkeys(c["study"] for c in cells))
    shared = {
        k: v
        for k, v in cells[0]["conditions"].items()
        if all(c["conditions"].get(k, object()) == v for c in cells)
    }
    per_study: list[dict[str, Any]] = []
    for r in c4:
        per_study += r["numbers"].get("studies") or [
            {"study": r["study"], "verdict": r["verdict"], "evidence": r["evidence"]}
        ]
    verdict = combine_cells([c["classification"] for c in cells])
    where = f"{len(cells)} cells of {len(studies)} {'study' if len(studies) == 1 else 'studies'}"
    combined = {
        **{k: v for k, v in c4[0].items() if k != "lr_edges"},  # each cell has its own
        "study": ", ".join(studies),
        "verdict": verdict,
        "evidence": f"Across {where}: {_map_text(cells)}",
        "conditions": shared,  # those every cell shares; each cell has its own
        "numbers": {**c4[0]["numbers"], "cells": cells, "studies": per_study},
    }
    first = records.index(c4[0])
    rest = [r for r in records if r not in c4]
    return [*rest[:first], combined, *rest[first:]]


def c4_headline(records: Sequence[dict[str, Any]]) -> str | None:
    """The README's "In short" sentence from the (combined) C4 record; None: no C4."""
    combined = combine_c4(list(records))
    c4 = next((r for r in combined if r["id"] == "C4" and "studies" in r["numbers"]), None)
    if c4 is None:
        return None
    cells = c4["numbers"]["cells"]
    low, high = (float(x) for x in c4["numbers"].get("range", C4_RANGE))
    return (
        f"In short: the headline claim C4 (Xavier cuts epochs-to-convergence {low:g}-{high:g}x"
        f" against uniform[0,1]) is **{c4['verdict']}** as one statement; by condition it is "
        f"{_map_text(cells)}"
    )


def condition_table(records: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Every speedup cell of the suite with its conditions: the suite report's table."""
    rows = []
    for c in speedup_cells(combine_c4(list(records))):
        cond = c["conditions"]
        budget = cond.get("max_epochs")
        if budget is not None and cond.get("batches_per_epoch") is not None:
            budget = f"{_value(budget)} epochs x {_value(cond['batches_per_epoch'])} batches"
        rows.append(
            {
                "claim": c["claim"],
                "study": c["study"],
                "comparison": f"{c['faster']} / {c['than']}",
                **{k: _value(cond.get(k, "?")) for k in ("optimizer", "task", "cell")},
                **{k: _value(cond.get(k, "?")) for k in ("hidden", "seq_len", "clip")},
                "budget": _value(budget) if budget is not None else "?",
                "lr": _value(cond.get("lr", "?")),
                "speedup [95% CI]": _speedup(c),
                "shows": _label(c),
                "lr at the edge": ", ".join(
                    f"{e['scheme']} ({e['lr']:g})" for e in c.get("lr_edge") or []
                )
                or "no",
            }
        )
    columns = ["claim", "study", "comparison", "optimizer", "task", "cell", "hidden"]
    columns += ["seq_len", "clip", "budget", "lr", "speedup [95% CI]", "shows", "lr at the edge"]
    return pd.DataFrame(rows, columns=columns)


def _speedup(cell: dict[str, Any]) -> str:
    estimate = cell.get("estimate")
    if estimate in ("inf", math.inf):
        return "unbounded"
    if estimate is None:
        return "n/a"
    lo, hi = cell.get("lo"), cell.get("hi")
    return f"{fmt(float(estimate))}x [{'n/a' if lo is None else fmt(lo)}, " + (
        f"{'n/a' if hi is None else fmt(hi)}]"
    )

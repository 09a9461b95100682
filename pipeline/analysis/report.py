"""The study report: claim verdicts, censored statistics and figures, as Markdown and HTML.

:func:`write_report` writes, into one folder, ``report.md``, a self-contained
``report.html`` (figures embedded as base64 PNG, inline CSS, no external resources) and
the figures as PNG files (:data:`FIGURES`). The set of files is always the same: a figure
the study's data cannot support is still written, saying "not enough data: ..." and why.
:func:`verdict_table` renders the verdicts for the terminal.

This module reads tables (``pipeline.results``), statistics (``pipeline.analysis.stats``) and
verdicts (``pipeline.analysis.verdicts``); it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import base64
import html
import math
import os
import platform
from collections.abc import Callable
from datetime import UTC, datetime
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
from pipeline.analysis.verdicts import (
    C4_RANGE,
    INCONCLUSIVE,
    NOT_MEASURED,
    PARTLY,
    REFUTED,
    SPEEDUP_RULE,
    SUPPORTED,
    XAVIER,
    Verdict,
    fmt,
    judge,
    plain_scheme,
    with_patience,
    write_verdicts,
    xavier_speedups,
)

if TYPE_CHECKING:
    from rich.table import Table

    from pipeline.results import StudyTables

__all__ = ["FIGURES", "speedup_markdown", "verdict_table", "write_report"]

FIGURES: tuple[str, ...] = (
    "km_curves",
    "speedup_vs_seq_len",
    "phase_diagram",
    "hidden_stats",
    "grad_norm",
)
"""The figures every report has, written as ``<name>.png``."""

FIGURE_TITLES: dict[str, str] = {
    "km_curves": "Kaplan-Meier: fraction of trials not yet converged, by epoch",
    "speedup_vs_seq_len": "Speedup of Xavier over the other schemes vs sequence length",
    "phase_diagram": "Outcome shares: converged, censored, stalled, frozen, diverged",
    "hidden_stats": "Hidden-state variance and saturation share per time step, at init",
    "grad_norm": "Gradient norm |dL/dh_t| per time step, at init",
}

VERDICT_COLOURS: dict[str, str] = {
    SUPPORTED: "green",
    REFUTED: "red",
    PARTLY: "yellow",
    INCONCLUSIVE: "magenta",
    NOT_MEASURED: "dim",
}
"""Rich styles for the terminal table."""

_HTML_COLOURS: dict[str, str] = {
    SUPPORTED: "#1a7f37",
    REFUTED: "#cf222e",
    PARTLY: "#9a6700",
    INCONCLUSIVE: "#8250df",
    NOT_MEASURED: "#6e7781",
}

_DPI = 110


# --------------------------------------------------------------------------- public API


def write_report(
    tables: StudyTables,
    out_dir: Path,
    verdicts: list[Verdict] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Path]:
    """Write report.md, report.html, verdicts.json and the :data:`FIGURES` into ``out_dir``.

    Args:
        tables: the study's tables (``pipeline.results.load_tables``).
        out_dir: the folder to write into (created if missing; files are overwritten).
        verdicts: the claim verdicts; judged here (``pipeline.analysis.verdicts.judge``) if None.
        n_boot: bootstrap resamples for speedup intervals computed here.
        seed: seed for those resamples.

    Returns:
        ``{"markdown": ..., "html": ..., "verdicts": ..., "<figure name>": ...}``: the
        path of every file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if verdicts is None:
        verdicts = judge(tables, n_boot=n_boot, seed=seed)
    speedups = _speedups(tables, verdicts, n_boot=n_boot, seed=seed)

    drawers: dict[str, Callable[[], Figure]] = {
        "km_curves": lambda: km_figure(tables.trials),
        "speedup_vs_seq_len": lambda: speedup_figure(speedups),
        "phase_diagram": lambda: phase_figure(tables.trials),
        "hidden_stats": lambda: hidden_stats_figure(tables.steps),
        "grad_norm": lambda: grad_norm_figure(tables.steps),
    }
    files: dict[str, Path] = {}
    for name in FIGURES:
        path = out_dir / f"{name}.png"
        fig = drawers[name]()
        try:
            fig.savefig(path, dpi=_DPI)
        finally:
            plt.close(fig)
        files[name] = path

    files["verdicts"] = write_verdicts(verdicts, out_dir / "verdicts.json")
    blocks = _blocks(tables, verdicts, speedups, files)
    md_path = out_dir / "report.md"
    md_path.write_text(_to_markdown(blocks), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(_to_html(blocks, title=f"initstudy report: {tables.study}"), "utf-8")
    return {"markdown": md_path, "html": html_path, **files}


def verdict_table(verdicts: list[Verdict]) -> Table:
    """The verdicts as a rich table for the terminal: claim id, claim, verdict, evidence."""
    from rich.table import Table

    table = Table(title="Claim verdicts", show_lines=True)
    table.add_column("id", no_wrap=True)
    table.add_column("claim", ratio=2, overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("evidence", ratio=3, overflow="fold")
    for v in verdicts:
        style = VERDICT_COLOURS.get(v.verdict, "")
        table.add_row(v.claim_id, v.claim, f"[{style}]{v.verdict}[/]", v.evidence)
    return table


def speedup_markdown(tables: StudyTables, *, speedups: pd.DataFrame | None = None) -> str:
    """The speedup of Xavier over each other scheme, one row per cell, as a Markdown table.

    Args:
        tables: the study's tables.
        speedups: a table from :func:`~pipeline.analysis.verdicts.xavier_speedups` (or None).
    """
    frame = xavier_speedups(tables.trials) if speedups is None else speedups
    display = _speedup_display(frame)
    if display is None:
        return _no_speedups(tables)
    return _md_table(display)


# --------------------------------------------------------------------------- tables


def _speedups(
    tables: StudyTables, verdicts: list[Verdict], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """C4's details when they hold every comparison, else computed here."""
    for v in verdicts:
        if v.claim_id == "C4" and v.details is not None and "comparison" in v.details:
            return v.details
    return xavier_speedups(tables.trials, n_boot=n_boot, seed=seed)


def _no_speedups(tables: StudyTables) -> str:
    schemes = (
        sorted(set(plain_scheme(tables.trials)["init"].astype(str))) if len(tables.trials) else []
    )
    return (
        f"_No speedup to show: needs {XAVIER} and another scheme at scale 1 on the same "
        f"cells; this study has {', '.join(schemes) or 'none'}._"
    )


def _speedup_display(frame: pd.DataFrame) -> pd.DataFrame | None:
    if frame is None or frame.empty:
        return None
    dims = [c for c in ("task", "cell", "hidden", "device_type") if frame[c].nunique() > 1]
    out = pd.DataFrame(
        {
            "comparison": frame["comparison"],
            **{c: frame[c] for c in dims},
            "seq_len": frame["seq_len"],
            "n (xavier / other)": [
                f"{a} / {b}" for a, b in zip(frame["n_a"], frame["n_b"], strict=True)
            ],
            "speedup [95% CI]": [_speedup_text(r) for _, r in frame.iterrows()],
            "paired": _a_is_xavier(frame["paired_text"]),
            "C4 cell": [
                v if bool(iv) else "(not in verdict)"
                for v, iv in zip(frame["cell_verdict"], frame["in_verdict"], strict=True)
            ],
        }
    )
    return out.reset_index(drop=True)


def _speedup_text(row: pd.Series) -> str:
    """A speedup cell in words that cannot be misread: a bound says it is one."""
    if row["kind"] == "unbounded":
        return f"unbounded ({row['other']} frozen: cannot train)"
    if row["kind"] == "lower_bound":
        if pd.isna(row["lo"]):
            return f"no bound ({row['other']}'s median not reached; 95% lower limit 0)"
        return f"at least {fmt(row['lo'])}x ({row['other']}'s median not reached)"
    if row["kind"] == "none":
        return f"n/a ({XAVIER}'s median not reached)"
    return str(row["text"])


def _a_is_xavier(texts: pd.Series) -> pd.Series:
    """stats' texts call the faster scheme "A"; here A is always Xavier."""
    return texts.astype(str).str.replace("A did not converge", f"{XAVIER} did not converge")


def _summary_display(trials: pd.DataFrame) -> pd.DataFrame | None:
    from pipeline.analysis.stats import group_summary

    if trials.empty:
        return None
    frame = trials.copy()
    by = ["init"]
    if frame["init_recurrent"].notna().any():
        frame["recurrent"] = frame["init_recurrent"].astype(object).fillna("(same)")
        by.append("recurrent")
    by += [c for c in ("task", "cell", "hidden", "scale") if frame[c].nunique() > 1]
    by.append("seq_len")
    summary = group_summary(frame, by)
    dims = [*by, "device_type"] if summary["device_type"].nunique() > 1 else by
    shares = (
        pd.crosstab([frame[c] for c in [*by, "device_type"]], frame["outcome"], normalize="index")
        .reindex(columns=list(OUTCOMES), fill_value=0.0)
        .reset_index()
    )
    summary = summary.merge(shares, on=[*by, "device_type"], how="left")
    return pd.DataFrame(
        {
            **{c: summary[c] for c in dims},
            "n": summary["n"],
            **{name: [_pct(x) for x in summary[name]] for name in OUTCOMES},
            "KM median epochs [95% CI]": summary["median_text"],
        }
    ).reset_index(drop=True)


def _pct(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{100 * float(value):.0f}%"


# --------------------------------------------------------------------------- document


Block = tuple[str, Any]


def _blocks(
    tables: StudyTables,
    verdicts: list[Verdict],
    speedups: pd.DataFrame,
    files: dict[str, Path],
) -> list[Block]:
    trials = tables.trials
    devices = sorted(set(trials["device_type"].astype(str))) if len(trials) else []
    nodes = sorted(set(trials["node"].astype(str))) if len(trials) else []
    verdict_rows = pd.DataFrame(
        {
            "id": [v.claim_id for v in verdicts],
            "claim": [v.claim for v in verdicts],
            "verdict": [v.verdict for v in verdicts],
            "evidence": [v.evidence for v in verdicts],
            "rule": [v.rule for v in verdicts],
        }
    )
    blocks: list[Block] = [
        ("h1", f"initstudy report: {tables.study}"),
        (
            "meta",
            [
                ("Study", tables.study),
                ("Claim", tables.claim or "(none given)"),
                ("Date", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
                (
                    "Machine",
                    f"{platform.node()}, {os.cpu_count()} CPUs; device types in the study: "
                    f"{', '.join(devices) or 'none'}",
                ),
                ("Trials", f"{len(trials)} complete, run on {', '.join(nodes) or 'n/a'}"),
            ],
        ),
        ("h2", "Verdicts"),
        ("verdicts", verdict_rows),
        ("h2", "Speedup of Xavier over each other scheme"),
        (
            "p",
            "Kaplan-Meier median epochs-to-target of the other scheme divided by Xavier's, "
            "95% bootstrap CI. Where the other scheme's median was not reached the speedup is "
            "only a lower bound ('at least L', L its 95% confidence bound); where most of its "
            "trials are frozen (zero gradient at init) it is unbounded. C4 asks for "
            f"{C4_RANGE[0]:g}-{C4_RANGE[1]:g}x over uniform01; a cell is within only if its "
            "interval lies inside.",
        ),
    ]
    display = _speedup_display(speedups)
    blocks.append(("table", display) if display is not None else ("p", _no_speedups(tables)))
    blocks += _patience_blocks(tables, verdicts)
    blocks.append(("h2", "Outcomes by scheme and sequence length"))
    summary = _summary_display(trials)
    blocks.append(("table", summary) if summary is not None else ("p", "No complete trials."))
    blocks.append(("h2", "Figures"))
    for name in FIGURES:
        blocks.append(("figure", (name, FIGURE_TITLES[name], files[name])))
    blocks.append(("h2", "How to reproduce"))
    blocks.append(
        (
            "p",
            f"Save the study spec below as `{tables.study}.yaml`, then run "
            f"`initstudy run {tables.study}.yaml` and `initstudy report {tables.study}`.",
        )
    )
    if tables.spec_text:
        blocks.append(("code", tables.spec_text.rstrip("\n")))
    return blocks


def _patience_blocks(tables: StudyTables, verdicts: list[Verdict]) -> list[Block]:
    """How the speedup verdicts move when convergence is the first crossing (patience 1)."""
    trials = tables.trials
    speedup_ids = [v.claim_id for v in verdicts if v.rule == SPEEDUP_RULE]
    if trials.empty or not speedup_ids or int(trials["patience"].min()) <= 1:
        return []
    k = int(trials["patience"].min())
    first = judge(with_patience(tables, 1), [c for c in _declared(tables, speedup_ids)])
    rows = []
    for mine, other in zip([v for v in verdicts if v.claim_id in speedup_ids], first, strict=True):
        cells = mine.numbers.get("cells", [])
        cells_1 = other.numbers.get("cells", [])
        rows.append(
            {
                "claim": mine.claim_id,
                f"patience {k}": mine.verdict,
                "patience 1": other.verdict,
                "cells that change": sum(
                    a.get("classification") != b.get("classification")
                    for a, b in zip(cells, cells_1, strict=False)
                ),
            }
        )
    return [
        ("h2", "Sensitivity to the convergence rule"),
        (
            "p",
            f"This study counts a trial converged after {k} consecutive evaluations at or "
            "below the target. Re-read with the first crossing alone (patience 1):",
        ),
        ("table", pd.DataFrame(rows)),
    ]


def _declared(tables: StudyTables, ids: list[str]) -> list[Any]:
    """The claims (ids or declared comparisons) among ``ids``, as ``judge`` takes them."""
    declared = tables.claims or list(ids)
    return [c for c in declared if (c if isinstance(c, str) else c.id) in ids]


def _md_cell(value: Any) -> str:
    text = _cell_text(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _cell_text(value: Any) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return fmt(value) if not value.is_integer() else str(int(value))
    return str(value)


def _md_table(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(False)]
    return "\n".join([header, rule, *rows])


def _to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, body in blocks:
        if kind == "h1":
            out.append(f"# {body}")
        elif kind == "h2":
            out.append(f"## {body}")
        elif kind == "p":
            out.append(str(body))
        elif kind == "meta":
            out.append("\n".join(f"- **{k}:** {v}" for k, v in body))
        elif kind in ("table", "verdicts"):
            out.append(_md_table(body))
        elif kind == "figure":
            name, title, path = body
            out.append(f"### {title}\n\n![{name}]({path.name})")
        elif kind == "code":
            out.append(f"```yaml\n{body}\n```")
    return "\n\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 0.3em 0.6em; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.verdict { font-weight: 600; white-space: nowrap; }
td.rule { color: #57606a; font-size: 0.9em; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
code { background: #f6f8fa; padding: 0 0.2em; }
ul.meta { list-style: none; padding-left: 0; }
"""


def _inline(text: str) -> str:
    """Escape text and turn `code` spans into <code> elements."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(frame: pd.DataFrame, verdicts: bool = False) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for row in frame.itertuples(False):
        cells = []
        for col, value in zip(frame.columns, row, strict=True):
            text = html.escape(_cell_text(value))
            if verdicts and col == "verdict":
                colour = _HTML_COLOURS.get(str(value), "#1f2328")
                cells.append(f'<td class="verdict" style="color: {colour}">{text}</td>')
            elif verdicts and col == "rule":
                cells.append(f'<td class="rule">{text}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _to_html(blocks: list[Block], title: str) -> str:
    out: list[str] = []
    for kind, body in blocks:
        if kind == "h1":
            out.append(f"<h1>{html.escape(body)}</h1>")
        elif kind == "h2":
            out.append(f"<h2>{html.escape(body)}</h2>")
        elif kind == "p":
            out.append(f"<p>{_inline(str(body).strip('_'))}</p>")
        elif kind == "meta":
            items = "".join(
                f"<li><strong>{html.escape(k)}:</strong> {html.escape(str(v))}</li>"
                for k, v in body
            )
            out.append(f'<ul class="meta">{items}</ul>')
        elif kind == "table":
            out.append(_html_table(body))
        elif kind == "verdicts":
            out.append(_html_table(body, verdicts=True))
        elif kind == "figure":
            name, caption, path = body
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            file = html.escape(path.name)
            out.append(
                f'<figure id="{html.escape(name)}"><img src="data:image/png;base64,{data}" '
                f'alt="{file}" data-file="{file}"><figcaption>{html.escape(caption)} '
                f'(<a href="{file}">{file}</a>)</figcaption></figure>'
            )
        elif kind == "code":
            out.append(f"<pre><code>{html.escape(body)}</code></pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(out)
        + "\n</body>\n</html>\n"
    )


# --------------------------------------------------------------------------- figures


def _not_enough(name: str, reason: str) -> Figure:
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


def _grid(n: int, width: float = 5.0, height: float = 3.6) -> tuple[Figure, list[Axes]]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    size = (max(width * cols, 8.0), height * rows + 0.4)  # room for the suptitle
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_axis_off()
    return fig, flat[:n]


def _colours(labels: list[str]) -> dict[str, Any]:
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def km_curve(durations: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival ("not yet converged") as step points, starting at (0, 1)."""
    times = [0.0]
    surv = [1.0]
    s = 1.0
    for t in np.unique(durations[events]):
        at_risk = int(np.sum(durations >= t))
        d = int(np.sum((durations == t) & events))
        if at_risk:
            s *= 1.0 - d / at_risk
        times.append(float(t))
        surv.append(s)
    return np.asarray(times), np.asarray(surv)


def km_figure(trials: pd.DataFrame) -> Figure:
    """KM "fraction not yet converged" vs epoch, one line per scheme, a panel per seq_len."""
    from pipeline.analysis.stats import time_to_event

    if trials.empty:
        return _not_enough("km_curves", "the study has no complete trials")
    frame = trials.assign(label=scheme_label(trials))
    if frame["hidden"].nunique() > 1:
        frame["label"] = frame["label"] + frame["hidden"].map(lambda h: f", h={h}")
    lengths = sorted(frame["seq_len"].unique())
    colours = _colours(sorted(frame["label"].unique()))
    fig, axes = _grid(len(lengths))
    budget = float(frame["max_epochs"].max())
    for ax, seq_len in zip(axes, lengths, strict=True):
        part = frame[frame["seq_len"] == seq_len]
        for label, group in part.groupby("label", sort=True):
            durations, events = time_to_event(group)
            times, surv = km_curve(durations, events)
            times = np.append(times, max(float(durations.max()), times[-1]))
            surv = np.append(surv, surv[-1])
            colour = colours[label]
            ax.step(times, surv, where="post", color=colour, label=f"{label} (n={len(group)})")
            cens = durations[~events]
            if len(cens):
                level = [surv[np.searchsorted(times, c, side="right") - 1] for c in cens]
                ax.plot(cens, level, "|", color=colour, markersize=10, markeredgewidth=1.5)
        ax.set_xlim(0, budget * 1.02)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("epoch")
        ax.set_ylabel("fraction not yet converged")
        ax.set_title(f"seq_len {seq_len}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(FIGURE_TITLES["km_curves"] + " (| = censored)", fontsize=11)
    fig.tight_layout()
    return fig


def speedup_figure(speedups: pd.DataFrame) -> Figure:
    """Speedup of Xavier over each scheme vs seq_len, CI bars, lower bounds as triangles."""
    name = "speedup_vs_seq_len"
    if speedups is None or speedups.empty:
        return _not_enough(name, "needs xavier and at least one other scheme at scale 1")
    est = pd.to_numeric(speedups["speedup"], errors="coerce").astype(float)
    if not np.isfinite(est).any():
        return _not_enough(
            name, "no speedup could be estimated (xavier's median epochs was never reached)"
        )
    frame = speedups.assign(est=est)
    dims = [c for c in ("task", "cell", "hidden", "device_type") if frame[c].nunique() > 1]
    frame["line"] = frame["comparison"].astype(str).str.replace(f"{XAVIER} vs ", "over ")
    for dim in dims:
        frame["line"] = frame["line"] + frame[dim].map(lambda v, d=dim: f", {d} {v}")
    colours = _colours(list(dict.fromkeys(frame["line"])))
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


def phase_figure(trials: pd.DataFrame) -> Figure:
    """Outcome shares over scale x seq_len (or hidden x seq_len, or scheme x seq_len)."""
    name = "phase_diagram"
    if trials.empty:
        return _not_enough(name, "the study has no complete trials")
    frame = trials.copy()
    for outcome in OUTCOMES:
        frame[f"is_{outcome}"] = frame["outcome"] == outcome
    if frame["scale"].nunique() > 1:
        ydim = "scale"
    elif frame["hidden"].nunique() > 1:
        ydim = "hidden"
    else:
        ydim = "scheme"
    if ydim == "scheme":
        frame["scheme"] = scheme_label(frame)
        panels: list[tuple[str, pd.DataFrame]] = [("", frame)]
    else:
        frame["panel"] = scheme_label(frame, with_scale=False)
        panels = [(str(k), g) for k, g in frame.groupby("panel", sort=True)]
    lengths = sorted(frame["seq_len"].unique())
    ys = sorted(frame[ydim].unique())
    fig, axes = plt.subplots(
        len(panels),
        len(PHASE_PANELS),
        figsize=(3.2 * len(PHASE_PANELS) + 1.5, 0.45 * len(ys) * len(panels) + 1.6 * len(panels)),
        squeeze=False,
    )
    for r, (panel, group) in enumerate(panels):
        counts = group.groupby([ydim, "seq_len"]).agg(
            n=("trial_number", "size"),
            **{outcome: (f"is_{outcome}", "mean") for outcome in OUTCOMES},
        )
        for c, (outcome, cmap) in enumerate(PHASE_PANELS):
            ax = axes[r][c]
            grid = np.full((len(ys), len(lengths)), np.nan)
            for (yv, sv), row in counts.iterrows():
                grid[ys.index(yv), lengths.index(sv)] = float(row[outcome])
            ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", origin="lower")
            for i in range(len(ys)):
                for j in range(len(lengths)):
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
            ax.set_xticks(range(len(lengths)), [str(s) for s in lengths])
            ax.set_yticks(range(len(ys)), [_tick(y) for y in ys], fontsize=8)
            ax.set_xlabel("seq_len")
            if c == 0:
                ax.set_ylabel(f"{panel}\n{ydim}" if panel else ydim)
            ax.set_title(outcome if r == 0 else "", fontsize=10)
    fig.suptitle(FIGURE_TITLES[name], fontsize=11)
    fig.tight_layout()
    return fig


def _tick(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _per_step(steps: pd.DataFrame, column: str) -> pd.DataFrame:
    """Median of ``column`` over trials, per scheme label and time step."""
    frame = steps.assign(label=scheme_label(steps))
    return frame.groupby(["label", "step"])[column].median().unstack("label").sort_index()


def _predictions(steps: pd.DataFrame) -> dict[str, Any]:
    """Mean-field predictions (``models.theory``) per scheme label, for its commonest
    (task, cell, hidden, seq_len) (the middle one on a tie, as the plotted medians mix
    them); only where the theory applies."""
    from models.theory import predict

    out: dict[str, Any] = {}
    frame = steps[steps["step"] == 0].assign(label=scheme_label(steps[steps["step"] == 0]))
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
        return _not_enough(name, "the study recorded no per-step init diagnostics")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    variance = _per_step(steps, "hidden_var")
    saturation = _per_step(steps, "hidden_sat")
    colours = _colours(list(variance.columns))
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
    fig.suptitle(FIGURE_TITLES[name], fontsize=11)
    fig.tight_layout()
    return fig


def grad_norm_figure(steps: pd.DataFrame) -> Figure:
    """Median |dL/dh_t| per time step and scheme, log y, a panel per seq_len."""
    name = "grad_norm"
    if steps.empty:
        return _not_enough(name, "the study recorded no per-step init diagnostics")
    values = pd.to_numeric(steps["grad_norm"], errors="coerce").astype(float)
    positive = values.where(values > 0)  # 0 = underflow; a log axis cannot show it
    if not np.isfinite(positive).any():
        return _not_enough(name, "every recorded gradient norm is zero or missing")
    frame = steps.assign(grad_norm=positive)
    lengths = sorted(frame["seq_len"].unique())
    labels = sorted(set(scheme_label(frame)))
    colours = _colours(labels)
    fig, axes = _grid(len(lengths))
    for ax, seq_len in zip(axes, lengths, strict=True):
        table = _per_step(frame[frame["seq_len"] == seq_len], "grad_norm")
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
        predictions = _predictions(frame[frame["seq_len"] == seq_len])
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
    fig.suptitle(FIGURE_TITLES[name] + " (zeros, i.e. underflow, not drawn)", fontsize=11)
    fig.tight_layout()
    return fig

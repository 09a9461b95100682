"""The study report: claim verdicts, censored statistics and figures, as Markdown and HTML.

:func:`write_report` writes, into one folder, ``report.md``, a self-contained
``report.html`` (figures embedded as base64 PNG, inline CSS, no script, no external
resources), ``interactive.html`` (Optuna's plots with plotly.js inline:
:mod:`pipeline.analysis.interactive`; report.html frames and links it) and the figures as
PNG files with an SVG beside each (:data:`FIGURES`, drawn by
:mod:`pipeline.analysis.figures` and :mod:`pipeline.analysis.figures_curves`).
The set of files is always the same: a figure the study's data cannot support is still
written, saying "not enough data: ..." and why. :func:`verdict_table` renders the
verdicts for the terminal.

Both documents are Jinja2 templates (``templates/``, HTML autoescaped) rendered from one
plain data model, :class:`ReportData` (:func:`report_data`). Its "Study summary" is
:func:`pipeline.analysis.summary.study_summary` with the importances of
:func:`pipeline.results.param_importances`. This module imports no Optuna, MLflow or Ray.
"""

from __future__ import annotations

import base64
import math
import os
import platform
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import jinja2
import pandas as pd
from markupsafe import Markup, escape

from models.spec import OUTCOMES
from pipeline.analysis.aft_study import AFTSection, aft_section
from pipeline.analysis.binning import MAX_BINS, bin_labels
from pipeline.analysis.cells import group_summary
from pipeline.analysis.efficiency import Efficiency
from pipeline.analysis.figures import FIGURE_TITLES, FIGURES, save_figure, write_figures
from pipeline.analysis.figures_curves import TUNING_TITLE, tuning_figure
from pipeline.analysis.interactive import InteractiveSection, write_interactive
from pipeline.analysis.judging import XAVIER, fmt, plain_scheme
from pipeline.analysis.summary import MAX_LEVELS, StudySummary, display_tables, study_summary
from pipeline.analysis.verdicts import (
    C4_RANGE,
    INCONCLUSIVE,
    NOT_MEASURED,
    NOT_REPRODUCED,
    PARTLY,
    REFUTED,
    REPRODUCED,
    SPEEDUP_RULE,
    SUPPORTED,
    Verdict,
    judge,
    with_patience,
    write_verdicts,
    xavier_speedups,
)
from pipeline.safeout import (
    Markdown,
    cell,
    md_cell,
    md_code,
    md_fence,
    md_text,
    plain,
    replace_file,
)

if TYPE_CHECKING:
    from rich.table import Table as RichTable

    from pipeline.analysis.protocol import Tuning
    from pipeline.analysis.tables import StudyTables
    from pipeline.results import Importances

__all__ = [
    "FIGURES",
    "SUMMARY_FIGURE",
    "ReportData",
    "SummarySection",
    "Table",
    "report_data",
    "speedup_markdown",
    "verdict_table",
    "write_report",
]

VERDICT_COLOURS: dict[str, str] = {
    SUPPORTED: "green",
    REFUTED: "red",
    PARTLY: "yellow",
    INCONCLUSIVE: "magenta",
    NOT_MEASURED: "dim",
    REPRODUCED: "green",
    NOT_REPRODUCED: "red",
}
"""Rich styles for the terminal table."""

HTML_COLOURS: dict[str, str] = {
    SUPPORTED: "#1a7f37",
    REFUTED: "#cf222e",
    PARTLY: "#9a6700",
    INCONCLUSIVE: "#8250df",
    NOT_MEASURED: "#6e7781",
    REPRODUCED: "#1a7f37",
    NOT_REPRODUCED: "#cf222e",
}
"""Text colours of the verdicts in the HTML report."""


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class Table:
    """A table as the documents print it: column names and rows of cell text."""

    columns: list[str]
    rows: list[list[str]]

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Table:
        return cls(
            [str(c) for c in frame.columns],
            [[_cell_text(v) for v in row] for row in frame.itertuples(False)],
        )


@dataclass(frozen=True)
class FigureData:
    """One figure: its name, caption, file name and PNG bytes (base64, for the HTML)."""

    name: str
    title: str
    file: str
    png_base64: str


@dataclass(frozen=True)
class Sensitivity:
    """How the speedup verdicts move when convergence is the first crossing (patience 1)."""

    patience: int
    table: Table


@dataclass(frozen=True)
class ReportData:
    """Everything the report templates print, as plain values."""

    title: str
    meta: list[tuple[str, str]]
    """(label, value) lines under the title."""
    verdicts: Table
    """Columns id, claim, verdict, evidence, rule."""
    speedup_range: tuple[float, float]
    """C4's claimed range, quoted above the speedup table."""
    speedups: Table | None
    """Xavier's speedups per cell, or None (then :attr:`no_speedups` says why)."""
    no_speedups: str
    sensitivity: Sensitivity | None
    summary: Table | None
    """Outcomes by scheme and sequence length; None: no complete trials."""
    figures: list[FigureData]
    study: str
    spec_text: str
    """The study spec (YAML), without its trailing newlines; "" if unknown."""
    tuning: TuningSection | None = None
    """A tuned protocol's stage 1 (None: a fixed-lr study)."""
    study_summary: SummarySection | None = None
    """The best trial, the objective per searched parameter and the importances."""
    footer: str = ""
    """The study-efficiency line (:meth:`pipeline.analysis.efficiency.Efficiency.line`)."""
    aft: AFTSection | None = None
    """The AFT speedup of the study's comparisons (``pipeline.analysis.aft_study``)."""
    interactive: InteractiveSection | None = None
    """The interactive page beside the report (``pipeline.analysis.interactive``)."""


@dataclass(frozen=True)
class TuningSection:
    """The tuned protocol: chosen lr and KM median per lr per arm, verdicts at a shared lr."""

    study: str
    seeds: int
    curve: Table
    shared: Table
    figure: FigureData | None = None
    """The tuning curve (lr against KM median epochs per arm)."""


SUMMARY_FIGURE = "objective_vs_params"
"""The figure the "Study summary" section shows (not repeated under "Figures")."""


@dataclass(frozen=True)
class SummarySection:
    """The study summary: best trial, objective per searched parameter, importances."""

    best: str
    """One line on the best trial."""
    params: list[tuple[str, Table]]
    """(heading, table) per searched parameter."""
    skipped: str
    """Searched parameters left out, and why ("" if none)."""
    importance: Table | None
    """Parameter, importance (None: see :attr:`importance_note`)."""
    importance_note: str
    evaluator: str
    figure: FigureData | None = None


@overload
def _figure(name: str, title: str, path: Path) -> FigureData: ...
@overload
def _figure(name: str, title: str, path: Path | None) -> FigureData | None: ...
def _figure(name: str, title: str, path: Path | None) -> FigureData | None:
    if path is None:
        return None
    return FigureData(name, title, path.name, base64.b64encode(path.read_bytes()).decode("ascii"))


def report_data(
    tables: StudyTables,
    verdicts: list[Verdict],
    speedups: pd.DataFrame,
    figures: dict[str, Path],
    tuning: Tuning | None = None,
    summary: StudySummary | None = None,
    importances: Importances | None = None,
    efficiency: Efficiency | None = None,
    aft: AFTSection | None = None,
) -> ReportData:
    """The report's data model, from the study, its verdicts, speedups and figure files
    (and, for a tuned study, its stage 1's :class:`~pipeline.analysis.protocol.Tuning`;
    with a summary, the "Study summary" section and its importances). The footer is
    ``efficiency``'s line (none without it)."""
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
    display = _speedup_display(speedups)
    outcomes = _summary_display(trials)
    return ReportData(
        title=f"initstudy report: {tables.study}",
        meta=[
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
        verdicts=Table.of(verdict_rows),
        speedup_range=C4_RANGE,
        speedups=None if display is None else Table.of(display),
        no_speedups=_no_speedups(tables),
        sensitivity=_sensitivity(tables, verdicts),
        summary=None if outcomes is None else Table.of(outcomes),
        figures=[
            _figure(name, FIGURE_TITLES[name], figures[name])
            for name in FIGURES
            if (summary is None or name != SUMMARY_FIGURE)
            and (display is not None or name != "speedup_vs_seq_len")
        ],
        study=tables.study,
        spec_text=tables.spec_text.rstrip("\n"),
        tuning=None
        if tuning is None
        else TuningSection(
            tuning.study,
            tuning.seeds,
            Table.of(tuning.curve),
            Table.of(tuning.shared),
            _figure("tuning_curve", TUNING_TITLE, figures.get("tuning_curve")),
        ),
        study_summary=None
        if summary is None
        else _summary_section(summary, importances, figures.get(SUMMARY_FIGURE)),
        footer="" if efficiency is None else efficiency.line(),
        aft=aft,
    )


# --------------------------------------------------------------------------- public API


def write_report(
    tables: StudyTables,
    out_dir: Path,
    verdicts: list[Verdict] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    tuning: Tuning | None = None,
    importances: Importances | None = None,
    efficiency: Efficiency | None = None,
    interactive: bool = True,
) -> dict[str, Path]:
    """Write report.md, report.html, interactive.html, verdicts.json and the :data:`FIGURES`
    into ``out_dir``.

    Args:
        tables: the study's tables (``pipeline.results.load_tables``).
        out_dir: the folder to write into (created if missing; files are overwritten).
        verdicts: the claim verdicts; judged here (``pipeline.analysis.verdicts.judge``) if None.
        n_boot, seed: bootstrap resamples for speedup intervals computed here, their seed.
        tuning: a tuned study's stage-1 section (``pipeline.analysis.protocol.tuning``).
        importances: the searched parameters' importances; computed here
            (``pipeline.results.param_importances``) if None.
        efficiency: the study's efficiency for the footer, one line
            (``pipeline.results.load_efficiency``); None: no footer.
        interactive: write interactive.html (plotly.js inline, 4.7 MB; the suite's not).

    Returns:
        ``{"markdown": ..., "html": ..., "interactive": ..., "verdicts": ...,
        "<figure name>": ...}``: the path of every file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if verdicts is None:
        verdicts = judge(tables, n_boot=n_boot, seed=seed)
    speedups = _speedups(tables, verdicts, n_boot=n_boot, seed=seed)
    summary = study_summary(tables)
    files = write_figures(
        tables.trials, tables.steps, speedups, out_dir, epochs=tables.epochs, summary=summary
    )
    if tuning is not None:
        files["tuning_curve"] = save_figure(_tuning_figure(tuning), out_dir / "tuning_curve.png")
    files["verdicts"] = write_verdicts(verdicts, out_dir / "verdicts.json")
    if importances is None:
        importances = _importances(tables)
    views = None
    if interactive:
        files["interactive"], views = write_interactive(tables, out_dir, importances)
    data = report_data(
        tables, verdicts, speedups, files, tuning, summary, importances, efficiency,
        aft_section(tables),
    )  # fmt: skip
    data = replace(data, interactive=views)
    # each file replaces what was there: a link planted under its name is not followed
    md_path = replace_file(out_dir / "report.md", _render("report.md", data))
    html_path = replace_file(out_dir / "report.html", _render("report.html", data))
    return {"markdown": md_path, "html": html_path, **files}


def verdict_table(verdicts: list[Verdict]) -> RichTable:
    """The verdicts as a rich table for the terminal: claim id, claim, verdict, evidence.
    Their text is data: never parsed as markup, control characters dropped."""
    from rich.table import Table as RichTable
    from rich.text import Text

    table = RichTable(title="Claim verdicts", show_lines=True)
    table.add_column("id", no_wrap=True)
    table.add_column("claim", ratio=2, overflow="fold")
    table.add_column("verdict", no_wrap=True)
    table.add_column("evidence", ratio=3, overflow="fold")
    for v in verdicts:
        style = VERDICT_COLOURS.get(v.verdict, "")
        verdict = Text(v.verdict, style=style)
        table.add_row(cell(v.claim_id), cell(v.claim), verdict, cell(v.evidence))
    return table


def speedup_markdown(tables: StudyTables, *, speedups: pd.DataFrame | None = None) -> str:
    """The speedup of Xavier over each other scheme, one row per cell, as a Markdown table.
    ``speedups``: a table from :func:`~pipeline.analysis.verdicts.xavier_speedups` (or None).
    """
    frame = xavier_speedups(tables.trials) if speedups is None else speedups
    display = _speedup_display(frame)
    if display is None:
        return f"_{_no_speedups(tables)}_"
    template = _environment().from_string('{% from "table.md" import table %}{{ table(t) }}')
    return template.render(t=Table.of(display))


# --------------------------------------------------------------------------- summary


def _importances(tables: StudyTables) -> Importances:
    from pipeline.results import param_importances  # it builds an Optuna study

    return param_importances(tables)


def _summary_section(
    summary: StudySummary, importances: Importances | None, figure: Path | None
) -> SummarySection:
    imp = None
    note, evaluator = "not computed", ""
    if importances is not None:
        evaluator, note = importances.evaluator, importances.note
        if importances.enough:
            rows = [[k, f"{v:.3f}"] for k, v in importances.values.items()]
            imp = Table(["parameter", "importance"], rows)
    return SummarySection(
        best=summary.best_line(),
        params=[(h, Table.of(t)) for h, t in display_tables(summary)],
        skipped="; ".join(summary.skipped),
        importance=imp,
        importance_note=note,
        evaluator=evaluator,
        figure=_figure(SUMMARY_FIGURE, FIGURE_TITLES[SUMMARY_FIGURE], figure),
    )


# --------------------------------------------------------------------------- rendering


def _tuning_figure(tuning: Tuning) -> Any:
    arms = []
    for pick in tuning.picks:
        label = ", ".join(f"{k} {v}" for k, v in pick.arm.items()) or "(one arm)"
        points = [(s.lr, s.median) for s in pick.scores]
        arms.append((label, points, pick.lr))
    return tuning_figure(arms, tuning.budget)


def _environment() -> jinja2.Environment:
    """The templates' environment: HTML templates autoescaped, Markdown ones not."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md_cell"] = md_cell
    env.filters["md_text"] = md_text
    env.filters["md_code"] = md_code
    env.filters["md_fence"] = md_fence
    env.filters["plain"] = plain
    env.filters["inline"] = _inline
    env.filters["num"] = lambda x: f"{x:g}"
    env.globals["verdict_colours"] = HTML_COLOURS
    return env


def _render(name: str, data: ReportData) -> str:
    return _environment().get_template(name).render(report=data)


def _inline(text: str) -> Markup:
    """Escape text for HTML and turn `code` spans into <code> elements."""
    parts = str(escape(text)).split("`")
    return Markup("".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts)))


def _cell_text(value: Any) -> str:
    if isinstance(value, Markdown):
        return value
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return fmt(value) if not value.is_integer() else str(int(value))
    return str(value)


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
        f"No speedup to show: needs {XAVIER} and another scheme at scale 1 on the same "
        f"cells; this study has {', '.join(schemes) or 'none'}."
    )


def _speedup_display(frame: pd.DataFrame | None) -> pd.DataFrame | None:
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
            "paired": frame["paired_text"].astype(str),
            "C4 cell": [
                v if bool(iv) else "(not in verdict)"
                for v, iv in zip(frame["cell_verdict"], frame["in_verdict"], strict=True)
            ],
        }
    )
    if not frame["in_verdict"].any():  # no uniform01: no cell of C4's
        out = out.drop(columns="C4 cell")
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


def _summary_display(trials: pd.DataFrame) -> pd.DataFrame | None:
    if trials.empty:
        return None
    frame = trials.copy()
    for column in ("hidden", "scale", "seq_len"):  # a sampled parameter: quantile bins
        if frame[column].nunique() > MAX_LEVELS:
            frame[column] = bin_labels(frame[column], MAX_BINS)
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


def _sensitivity(tables: StudyTables, verdicts: list[Verdict]) -> Sensitivity | None:
    """The speedup verdicts re-judged at patience 1, when the study's patience is longer."""
    trials = tables.trials
    speedup_ids = [v.claim_id for v in verdicts if v.rule == SPEEDUP_RULE]
    if trials.empty or not speedup_ids or int(trials["patience"].min()) <= 1:
        return None
    k = int(trials["patience"].min())
    first = judge(with_patience(tables, 1), _declared(tables, speedup_ids))
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
    return Sensitivity(k, Table.of(pd.DataFrame(rows)))


def _declared(tables: StudyTables, ids: list[str]) -> list[Any]:
    """The claims (ids or declared comparisons) among ``ids``, as ``judge`` takes them."""
    declared = tables.claims or list(ids)
    return [c for c in declared if (c if isinstance(c, str) else c.id) in ids]

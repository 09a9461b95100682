"""The commands that read a study's results: ``results``, ``query``, ``report`` and ``ui``."""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pipeline.cli.base import (
    EXIT_FAILED,
    TRACKING_SCHEMES,
    RunDir,
    Storage,
    TrackingUri,
    app,
    check_study_name,
    check_url,
    checked,
    console,
    err_console,
    fail,
    one_line,
    stores,
    study_tables,
)
from pipeline.safeout import cell, plain, term
from pipeline.urls import default_tracking_uri, redact, sqlite_file

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.analysis.efficiency import Efficiency
    from pipeline.analysis.protocol import Tuning
    from pipeline.analysis.verdicts import Verdict
    from pipeline.results import StudyTables

_FORMATS = ("table", "csv", "parquet", "json")
_TABLES = ("trials", "epochs", "steps")
_SUMMARY_COLUMNS = (
    "trial_number",
    "init",
    "init_recurrent",
    "cell",
    "scale",
    "seq_len",
    "hidden",
    "seed",
    "lr",
    "outcome",
    "converged_epoch",
    "diverged_epoch",
    "best_val_loss",
    "spectral_radius",
    "device_type",
)


def _emit(frame: pd.DataFrame, fmt: str, out: Path | None, columns: tuple[str, ...] = ()) -> None:
    """Write a DataFrame as a terminal table, CSV, Parquet or JSON (to --out or stdout)."""
    import pandas as pd

    if fmt not in _FORMATS:
        fail(f"--format: unknown value {fmt!r}; allowed: {', '.join(_FORMATS)}")
    if fmt == "parquet" and out is None:
        fail("--format parquet: needs --out FILE (Parquet is binary)")
    if fmt == "table":
        shown = frame[[c for c in columns if c in frame.columns]] if columns else frame
        table = Table(show_lines=False)
        for col in shown.columns:
            table.add_column(  # a header is never cut to "trial_nu…": cells wrap instead
                cell(col),
                justify="right" if shown[col].dtype.kind in "iuf" else "left",
                min_width=len(str(col)),
                overflow="fold",
            )
        for row in shown.itertuples(index=False):
            table.add_row(*(cell("" if v is None or v is pd.NA else _fmt(v)) for v in row))
        console.print(table)
        if out is None:
            return
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "parquet":
                frame.to_parquet(out, index=False)
            elif fmt == "json":
                frame.to_json(out, orient="records", indent=1)
            else:
                frame.to_csv(out, index=False)
        except OSError as exc:
            fail(f"--out: cannot write {str(out)!r}: {exc.strerror or exc}")
        console.print(f"wrote {len(frame)} rows to {term(str(out))}", highlight=False)
    elif fmt == "csv":
        _write_out(frame.to_csv(index=False))
    elif fmt == "json":
        _write_out(frame.to_json(orient="records", indent=1) + "\n")


def _write_out(text: str) -> None:
    """CSV or JSON to stdout: as it is into a pipe or file, without control characters on
    a terminal (a value holding ESC would otherwise act on it)."""
    sys.stdout.write(plain(text) if sys.stdout.isatty() else text)


def _fmt(value: object) -> str:
    """A table cell: NULL and NaN empty, floats to 4 significant digits."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    text = str(value)
    return "" if text in ("<NA>", "nan") else text


@app.command()
def results(
    study: Annotated[str, typer.Argument(help="Study name.")],
    fmt: Annotated[str, typer.Option("--format", help="table, csv, parquet or json.")] = "table",
    out: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
    table: Annotated[str, typer.Option(help="trials, epochs or steps.")] = "trials",
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """A study's results: one row per trial (or per trial-epoch, or per time step)."""
    check_study_name(study)
    if table not in _TABLES:
        fail(f"--table: unknown value {table!r}; allowed: {', '.join(_TABLES)}")
    if fmt not in _FORMATS:
        fail(f"--format: unknown value {fmt!r}; allowed: {', '.join(_FORMATS)}")
    url, _ = stores(run_dir, storage, None)
    tables = study_tables(study, url)
    frame = getattr(tables, table)
    # the searched parameters first, so a narrow terminal never hides what varies (lr)
    searched = tables.searched
    shown = ("trial_number", *searched, *(c for c in _SUMMARY_COLUMNS[1:] if c not in searched))
    _emit(frame, fmt, out, shown if table == "trials" else ())
    if fmt == "table" and table == "trials":
        _print_summary(tables)


def _print_summary(tables: StudyTables) -> None:
    """After the trials table: the best trial, the objective per searched parameter and
    the parameter importances (``pipeline.analysis.summary``, ``pipeline.results``)."""
    from pipeline.analysis.summary import display_tables, study_summary
    from pipeline.results import param_importances

    summary = study_summary(tables)
    console.print(term(summary.best_line()), highlight=False)
    for heading, shown in display_tables(summary):
        grid = Table(title=cell(heading), title_justify="left", show_lines=False)
        for col in shown.columns:
            grid.add_column(cell(col), justify="left" if col == shown.columns[0] else "right")
        for row in shown.itertuples(index=False):
            grid.add_row(*(cell(v) for v in row))
        console.print(grid)
    if summary.skipped:
        console.print(f"searched but not shown: {term('; '.join(summary.skipped))}")
    imp = param_importances(tables)
    if imp.enough:
        values = ", ".join(f"{k} {v:.3f}" for k, v in imp.values.items())
        note = f" ({term(imp.note)})" if imp.note else ""
        console.print(f"parameter importance ({imp.evaluator}): {values}{note}", highlight=False)
    else:
        console.print(f"parameter importance: {term(imp.note)}", highlight=False)


@app.command()
def query(
    study: Annotated[str, typer.Argument(help="Study name.")],
    sql: Annotated[str, typer.Argument(help="DuckDB SQL over tables trials, epochs, steps.")],
    fmt: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    out: Annotated[Path | None, typer.Option(help="Write to this file.")] = None,
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Run read-only DuckDB SQL over a study's results tables."""
    from pipeline.results import QueryError
    from pipeline.results import query as run_query

    check_study_name(study)
    if not sql.strip():
        fail("SQL: the query is empty; give DuckDB SQL over the tables trials, epochs, steps")
    if fmt not in ("table", "csv", "json"):
        fail(f"--format: unknown value {fmt!r}; allowed: table, csv, json")
    url, _ = stores(run_dir, storage, None)
    tables = study_tables(study, url)
    try:
        frame = run_query(tables, sql)
    except QueryError as exc:
        fail(f"query: {exc}")  # SQL DuckDB refuses (or stops: a limit) is bad input
    _emit(frame, fmt, out)


@app.command()
def report(
    study: Annotated[str, typer.Argument(help="Study name.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: RUN_DIR/reports/STUDY).")
    ] = None,
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Write report.md, report.html and figures; log them to the study's MLflow run."""
    check_study_name(study)
    url, tracking = stores(run_dir, storage, tracking_uri)
    tables = study_tables(study, url)
    folder = out or run_dir / "reports" / study
    tuning = _tuning(tables, url)
    efficiency = _efficiency(study, url)
    try:
        files = _write_report(tables, folder, tracking, tuning, efficiency)
    except OSError as exc:
        option = "--out" if out is not None else "--run-dir"
        fail(f"{option}: cannot write the report to {str(folder)!r}: {exc.strerror or exc}")
    console.print(
        f"wrote {term(str(files['markdown']))}, {term(str(files['html']))}, "
        f"{term(str(files['interactive']))} and {term(str(files['verdicts']))} "
        f"({len(files) - 4} figures)",
        highlight=False,
    )


def publish_verdicts(
    verdicts: list[Verdict], folder: Path, tracking: str | None, tables: StudyTables
) -> Path:
    """Write ``verdicts.json`` into ``folder`` and put it on the study's parent MLflow run."""
    from pipeline.analysis.verdicts import write_verdicts

    path = write_verdicts(verdicts, folder / "verdicts.json")
    if tracking is not None:
        _to_parent_run(tables, tracking, path, verdicts, "verdicts")
    return path


def _to_parent_run(
    tables: StudyTables,
    tracking: str,
    path: Path | list[Path],
    verdicts: list[Verdict],
    what: str,
) -> None:
    """:func:`pipeline.publish.to_parent_run`; a warning, not an error, when nothing was
    logged (MLflow unreachable, or the study has no MLflow run yet)."""
    from pipeline.publish import to_parent_run

    why = to_parent_run(tables, tracking, path, verdicts)
    if why is not None:
        err_console.print(
            f"[yellow]warning:[/] {what} not logged to MLflow: {term(one_line(why))}",
            highlight=False,
        )


def _tuning(tables: StudyTables, url: str) -> Tuning | None:
    """A tuned study's stage-1 section for its report (None: not a tuned study)."""
    from pipeline.publish import tuning_section

    return checked(tuning_section, tables, url)


def _efficiency(study: str, url: str) -> Efficiency:
    """The study's efficiency for its report's footer (``results.load_efficiency``)."""
    from pipeline.results import load_efficiency

    return checked(load_efficiency, study, url)


def _write_report(
    tables: StudyTables,
    folder: Path,
    tracking: str,
    tuning: Tuning | None = None,
    efficiency: Efficiency | None = None,
) -> dict[str, Path]:
    """Write the report and attach it to the study's parent MLflow run (if reachable)."""
    from pipeline.analysis.report import verdict_table, write_report
    from pipeline.analysis.verdicts import judge
    from pipeline.publish import report_files

    verdicts = judge(tables)
    files = write_report(tables, folder, verdicts, tuning=tuning, efficiency=efficiency)
    console.print(verdict_table(verdicts))
    _to_parent_run(tables, tracking, report_files(files), verdicts, "report")
    return files


@app.command()
def ui(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    tracking_uri: TrackingUri = None,
    host: Annotated[str, typer.Option(help="Interface to bind (loopback by default).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
) -> None:
    """Start the MLflow UI on the study's tracking store and print its URL."""
    from pipeline.tracking import Tracker, TrackingError
    from pipeline.ui import experiment_url, exposure_warning, run_url, start_ui

    check_study_name(study)
    if port is not None and not 1 <= port <= 65535:
        fail(f"--port: a port from 1 to 65535, got {port}; leave it out for a free one")
    check_url("--tracking-uri", tracking_uri, TRACKING_SCHEMES)
    tracking = tracking_uri or default_tracking_uri(run_dir)
    db = sqlite_file(tracking)
    if tracking_uri is not None and db is not None and not db.is_file():
        fail(f"--tracking-uri: no database file {str(db)!r}; the UI creates none")
    if tracking_uri is None and not (run_dir / "mlflow.db").exists():
        fail(
            f"no MLflow store in {str(run_dir)!r} (no mlflow.db); give --run-dir or --tracking-uri"
        )
    if db is not None:  # an empty or corrupt mlflow.db: refused, exit 4, never opened to write
        from pipeline.storage import check_store_file

        checked(check_store_file, db, "MLflow store")
    try:
        tracker = Tracker(tracking)
        parent = tracker.attach_study(study)
        experiment = tracker.experiment_id if parent else tracker.experiment_id_of(study)
    except TrackingError as exc:  # unreachable when the command starts: bad input
        fail(str(exc))
    if experiment is None:
        fail(f"no MLflow experiment named {study!r} in {tracking}")

    def where(base: str) -> None:
        shown = term(redact(experiment_url(base, experiment)))  # no password in a URL shown
        console.print(f"experiment: {shown}", highlight=False)
        if parent is not None:
            shown = term(redact(run_url(base, experiment, parent)))
            console.print(f"study run:  {shown}", highlight=False)
        console.print(
            f"The run {term(study)!r} holds the spec, verdicts, summary and report; expand "
            "it (+) for one run per trial, named NUMBER-INIT-T<seq_len>-H<hidden>-lr<lr>-"
            "s<seed>. Add columns (Columns: metrics.converged_epoch, best_val_loss, "
            "outcome tag) and sort by converged_epoch to rank the trials; a run's "
            "duration is its training time.",
            highlight=False,
        )

    if tracking.startswith(("http://", "https://")):
        console.print("the study is on a tracking server:", highlight=False)
        where(tracking)
        return
    exposed = exposure_warning(host, port)
    if exposed is not None:
        err_console.print(f"[yellow]warning:[/] {term(exposed)}", highlight=False, soft_wrap=True)
    try:
        server = start_ui(tracking, host=host, port=port)
    except RuntimeError as exc:
        fail(f"the MLflow UI did not start: {exc}", code=EXIT_FAILED)
    with server:
        console.print(f"MLflow UI: {server.url}  (Ctrl-C stops it)", highlight=False)
        where(server.url)
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()

"""The commands that read a study's results: ``results``, ``query``, ``report`` and ``ui``."""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.base import (
    TRACKING_SCHEMES,
    RunDir,
    Storage,
    TrackingUri,
    app,
    check_study_name,
    check_url,
    console,
    err_console,
    fail,
    one_line,
    stores,
    study_tables,
)
from pipeline.urls import default_tracking_uri, sqlite_file

if TYPE_CHECKING:
    import pandas as pd

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
                str(col),
                justify="right" if shown[col].dtype.kind in "iuf" else "left",
                min_width=len(str(col)),
                overflow="fold",
            )
        for row in shown.itertuples(index=False):
            table.add_row(*("" if v is None or v is pd.NA else _fmt(v) for v in row))
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
        console.print(f"wrote {len(frame)} rows to {escape(str(out))}", highlight=False)
    elif fmt == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif fmt == "json":
        sys.stdout.write(frame.to_json(orient="records", indent=1) + "\n")


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
    _emit(frame, fmt, out, _SUMMARY_COLUMNS if table == "trials" else ())


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
    if fmt not in ("table", "csv", "json"):
        fail(f"--format: unknown value {fmt!r}; allowed: table, csv, json")
    url, _ = stores(run_dir, storage, None)
    tables = study_tables(study, url)
    try:
        frame = run_query(tables, sql)
    except QueryError as exc:
        fail(f"query: {exc}", code=1)
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
    try:
        files = _write_report(tables, folder, tracking, tuning)
    except OSError as exc:
        option = "--out" if out is not None else "--run-dir"
        fail(f"{option}: cannot write the report to {str(folder)!r}: {exc.strerror or exc}")
    console.print(
        f"wrote {escape(str(files['markdown']))}, {escape(str(files['html']))} and "
        f"{escape(str(files['verdicts']))} ({len(files) - 3} figures)",
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
    tables: StudyTables, tracking: str, path: Path, verdicts: list[Verdict], what: str
) -> None:
    """Upload ``path`` (a file or folder) under ``report/`` on the study's parent run and set
    one tag per verdict; a warning, not an error, when MLflow is unreachable."""
    from pipeline.analysis.verdicts import verdict_tags
    from pipeline.tracking import Tracker, TrackingError

    try:
        tracker = Tracker(tracking)
        tracker.open_study(tables.study, tables.spec_text, params={}, tags={})
        tracker.log_parent_artifact(str(path), "report")
        tracker.set_parent_tags(verdict_tags(verdicts))
        tracker.close_study()
    except TrackingError as exc:
        err_console.print(
            f"[yellow]warning:[/] {what} not logged to MLflow: {escape(one_line(str(exc)))}",
            highlight=False,
        )


def _tuning(tables: StudyTables, url: str) -> Tuning | None:
    """A tuned study's stage-1 section for its report (None: not a tuned study)."""
    import yaml

    from pipeline.analysis.protocol import tuning
    from pipeline.protocolspec import TUNE_SUFFIX, arm_params
    from pipeline.studyspec import SpecError, parse_study_spec

    try:
        spec = parse_study_spec(yaml.safe_load(tables.spec_text), f"study {tables.study}")
    except (SpecError, yaml.YAMLError):
        return None
    if not spec.protocol.tuned or tables.study.endswith(TUNE_SUFFIX):
        return None
    stage1 = study_tables(tables.study + TUNE_SUFFIX, url)
    return tuning(stage1, arm_params(spec), spec.protocol.pick)


def _write_report(
    tables: StudyTables, folder: Path, tracking: str, tuning: Tuning | None = None
) -> dict[str, Path]:
    """Write the report and attach it to the study's parent MLflow run (if reachable)."""
    from pipeline.analysis.report import verdict_table, write_report
    from pipeline.analysis.verdicts import judge

    verdicts = judge(tables)
    files = write_report(tables, folder, verdicts, tuning=tuning)
    console.print(verdict_table(verdicts))
    _to_parent_run(tables, tracking, folder, verdicts, "report")
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
    from pipeline.ui import experiment_url, start_ui

    check_study_name(study)
    check_url("--tracking-uri", tracking_uri, TRACKING_SCHEMES)
    tracking = tracking_uri or default_tracking_uri(run_dir)
    db = sqlite_file(tracking)
    if tracking_uri is not None and db is not None and not db.is_file():
        fail(f"--tracking-uri: no database file {str(db)!r}; the UI creates none")
    if tracking_uri is None and not (run_dir / "mlflow.db").exists():
        fail(
            f"no MLflow store in {str(run_dir)!r} (no mlflow.db); give --run-dir or --tracking-uri"
        )
    try:
        experiment = Tracker(tracking).experiment_id_of(study)
    except TrackingError as exc:
        fail(str(exc), code=1)
    if experiment is None:
        fail(f"no MLflow experiment named {study!r} in {tracking}")
    if tracking.startswith(("http://", "https://")):
        console.print(f"the study is on a tracking server: {experiment_url(tracking, experiment)}")
        return
    try:
        server = start_ui(tracking, host=host, port=port)
    except RuntimeError as exc:
        fail(f"the MLflow UI did not start: {exc}", code=1)
    with server:
        console.print(f"MLflow UI: {experiment_url(server.url, experiment)}  (Ctrl-C stops it)")
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()

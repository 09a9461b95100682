"""``initstudy suite``: run every study file of a folder, then write one combined report.

The reproduction suite is ``studies/reproduce/``: ``make reproduce`` runs it and writes
``docs/results/`` and the README's results section. Every file is validated before the
first one starts, so a bad file stops the suite with nothing run. Each study runs as
``initstudy run`` would (resuming what is stored), in file-name order; then every study's
report goes to ``OUT/STUDY/`` and the combined one to ``OUT/report.md`` with
``verdicts.json`` and ``suite.json`` (the machine, the commit, the times).
"""

from __future__ import annotations

import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from pipeline.cli.base import (
    EXIT_FAILED,
    OfflineTracking,
    RunDir,
    Storage,
    TrackingUri,
    app,
    check_run_dir,
    checked,
    console,
    fail,
    study_tables,
)
from pipeline.cli.outputs import _efficiency, _tuning
from pipeline.cli.studies import _load_spec, _size_warning, run_study
from pipeline.frontend import check_run_options, cli_option
from pipeline.safeout import term

if TYPE_CHECKING:
    from pipeline.driver import RunOptions
    from pipeline.studyspec import StudySpec

MAX_FILES = 64
"""Most study files one suite may hold."""


@app.command()
def suite(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="FOLDER", help="Folder of study files (*.yaml), run in name order."
        ),
    ] = Path("studies/reproduce"),
    run_dir: RunDir = Path("runs"),
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the combined report (default: RUN_DIR/reports/suite)."),
    ] = None,
    readme: Annotated[
        Path | None,
        typer.Option(help="Also rewrite this README's generated results section."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="CPUs for the embedded Ray (default: all).")
    ] = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    offline_tracking: OfflineTracking = False,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start Ray here).")
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", metavar="", help="Start studies that `run` would ask --yes for."),
    ] = False,
) -> None:
    """Run a suite of studies (default: the reproduction suite) and write one report.

    ``--storage``, ``--tracking-uri``, ``--offline-tracking`` and ``--address`` are
    ``run``'s: every study of the suite runs on them (a cluster: docs/cluster.md)."""
    from pipeline.analysis.suite_report import README_BEGIN, readme_span
    from pipeline.driver import RunOptions

    options = RunOptions(
        run_dir=run_dir,
        storage=storage,
        tracking_uri=tracking_uri,
        address=address,
        workers=workers,
        offline_tracking=offline_tracking,
    )
    check_run_dir(run_dir)  # the reports go under it whatever the stores
    checked(check_run_options, options, cli_option)
    if not folder.is_dir():
        fail(f"FOLDER: {str(folder)!r} is not a folder of study files")
    files = sorted(p for p in folder.glob("*.yaml") if p.is_file())
    if not files:
        fail(f"FOLDER: {str(folder)!r} holds no study files (*.yaml)")
    if len(files) > MAX_FILES:
        fail(f"FOLDER: {len(files)} study files; a suite holds at most {MAX_FILES}")
    if readme is not None:
        try:
            text = readme.read_text(encoding="utf-8")
        except (OSError, UnicodeError) as exc:
            fail(f"--readme: cannot read {str(readme)!r}: {exc}")
        if readme_span(text) is None:
            fail(f"--readme: {str(readme)!r} has no generated results section ({README_BEGIN})")
    loaded = [(path, *_load_spec(path)) for path in files]
    names: dict[str, Path] = {}
    for path, spec, _ in loaded:
        if spec.name in names:
            fail(f"{path}: study name {spec.name!r} is also the name in {names[spec.name]}")
        names[spec.name] = path
        warning = _size_warning(spec, spec.name)
        if warning is not None and not yes:
            fail(f"{path}: {warning}; add --yes to start it")
    out = out or run_dir / "reports" / "suite"
    for i, (path, spec, text) in enumerate(loaded, 1):
        console.print(f"[bold]study {i}/{len(loaded)}:[/] {term(str(path))}", highlight=False)
        outcome = run_study(spec, text, options)
        if outcome.failed:
            fail(
                f"{path}: {len(outcome.failed)} trials failed; rerun the suite to retry them",
                EXIT_FAILED,
            )
    _write(loaded, out, options, readme, folder)


def _training_seconds(spec: StudySpec, url: str) -> float:
    """A study's training time from its stored trials: first start to last end, per stage
    (a pause between stages or a resume later does not count)."""
    from pipeline.protocolspec import TUNE_SUFFIX
    from pipeline.results import study_span_seconds

    names = [spec.name + TUNE_SUFFIX, spec.name] if spec.protocol.tuned else [spec.name]
    return sum(study_span_seconds(name, url) for name in names)


def machine() -> str:
    """This machine in words: OS, CPU, cores, memory, Python and torch."""
    import torch

    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem = f", {memory:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        mem = ""
    cpu = platform.processor() or platform.machine()
    return (
        f"{platform.system()} {cpu}, {os.cpu_count()} CPU cores{mem}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _write(
    loaded: list[tuple[Path, StudySpec, str]],
    out: Path,
    options: RunOptions,
    readme: Path | None,
    folder: Path,
) -> None:
    from pipeline.analysis.condition_map import lr_edges, study_conditions
    from pipeline.analysis.report import verdict_table, write_report
    from pipeline.analysis.suite_report import (
        SuiteStudy,
        readme_block,
        replace_readme_block,
        write_suite_report,
    )
    from pipeline.analysis.verdicts import judge
    from pipeline.version import code_version

    url = options.storage_url
    studies = []
    for path, spec, _ in loaded:
        tables = study_tables(spec.name, url)
        verdicts = judge(tables, spec.claims)  # the file's claims: judged, not run
        efficiency = _efficiency(spec.name, url)
        tuning = _tuning(tables, url)
        folder = out / spec.name
        write_report(
            tables, folder, verdicts, tuning=tuning, efficiency=efficiency, interactive=False
        )
        (folder / "interactive.html").unlink(missing_ok=True)  # an earlier run's, now stale
        outcomes = tables.trials["outcome"].value_counts().to_dict() if len(tables.trials) else {}
        studies.append(
            SuiteStudy(
                study=spec.name,
                spec_file=path.as_posix(),
                description=spec.description or "",
                verdicts=verdicts,
                trials=spec.n_trials_planned,
                wall_seconds=_training_seconds(spec, url),
                estimated_cpu_seconds=spec.estimated_cpu_seconds(),
                outcomes={str(k): int(v) for k, v in outcomes.items()},
                conditions=study_conditions(tables.trials, tuned=spec.protocol.tuned),
                lr_edges=[] if tuning is None else lr_edges(tuning.picks),
            )
        )
        console.print(verdict_table(verdicts))
    run: dict[str, Any] = {
        "command": _command(),
        "folder": folder.as_posix(),
        "machine": machine(),
        "commit": code_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "wall_seconds": round(sum(s.wall_seconds for s in studies), 1),
        "cpus": os.cpu_count() or 1,
    }
    try:
        paths = write_suite_report(studies, out, run)
        if readme is not None:
            link = os.path.relpath(paths["markdown"], readme.resolve().parent)
            if replace_readme_block(readme, readme_block(out, link=Path(link).as_posix())):
                console.print(f"rewrote the results section of {term(str(readme))}")
    except OSError as exc:
        fail(f"--out: cannot write the suite report to {str(out)!r}: {exc.strerror or exc}")
    console.print(f"suite report: {term(str(paths['markdown']))}", highlight=False)


def _command() -> str:
    """The command line that ran, as a user would type it (a password in a URL hidden)."""
    from pipeline.urls import redact_text

    args = [Path(sys.argv[0]).name, *sys.argv[1:]]
    if args[0] in ("__main__.py", "cli"):
        args[0] = "initstudy"
    return redact_text(shlex.join(args))

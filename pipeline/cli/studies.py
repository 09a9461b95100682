"""The commands that run a study and look after its stores: ``validate``, ``run``,
``status``, ``check``, ``sync``, ``list`` and ``delete``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from pipeline.cli import jsonout
from pipeline.cli.base import (
    CONFIRM_CPU_HOURS,
    CONFIRM_TRIALS,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    STORAGE_SCHEMES,
    OfflineTracking,
    Overrides,
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
    fail_with,
    one_line,
    read_storage,
    stores,
    study_tables,
)
from pipeline.frontend import (
    before_run,
    cli_option,
    design_check,
    load_spec,
    pilot_power,
)
from pipeline.frontend import duration as _duration
from pipeline.frontend import size_warning as _size_warning
from pipeline.safeout import cell, term
from pipeline.urls import default_storage_url

if TYPE_CHECKING:
    from pipeline.driver import RunOptions, StudyOutcome
    from pipeline.studyspec import StudySpec


def _load_spec(path: Path, overrides: Sequence[str] = ()) -> tuple[StudySpec, str]:
    """Load a spec, apply ``--set`` overrides, validate it, and build its task once (a
    charlm corpus is read here). Returns the spec and the text to store with the study: the
    file's, or with overrides the overridden document's."""
    return checked(load_spec, path, overrides)


@app.command()
def validate(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML).")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    overrides: Overrides = None,
    yes: Annotated[bool, typer.Option("--yes", metavar="", help=YES_DESIGN)] = False,
    as_json: Annotated[bool, jsonout.JsonFlag] = False,
) -> None:
    """Check a study spec and whether its design can judge the claims it lists; print its
    trial count, seeds per cell and, from earlier results of the same study (a pilot), the
    seeds needed to tell 2x from 10x and each declared comparison's range."""
    spec, _ = _load_spec(spec_file, overrides or ())
    check_url("--storage", storage, STORAGE_SCHEMES)
    design = checked(design_check, spec, yes, "add --yes")
    warning = _size_warning(spec, spec.name)
    seeds = spec.seeds_per_cell()
    pilot = storage or (default_storage_url(run_dir) if (run_dir / "optuna.db").exists() else None)
    power, per_claim = pilot_power(spec, pilot)
    if as_json:
        _print_warnings([*spec.warnings(), *design])
        jsonout.emit(
            {
                "spec": str(spec_file),
                "study": spec.name,
                "sampler": spec.sampler,
                "trials": spec.n_trials_planned,
                "stages": jsonout.stages(spec) if spec.protocol.tuned else None,
                "estimated_cpu_seconds": spec.estimated_cpu_seconds(),
                "needs_yes": warning is not None,
                "searched": list(spec.searched()),
                "warnings": list(spec.warnings()),
                "seeds_per_cell": seeds,
                "power": power,
                "design": design,
                "comparisons": per_claim,
            }
        )
        return
    console.print(
        f"{term(str(spec_file))}: ok - study {spec.name!r}, {spec.sampler} sampler",
        highlight=False,
    )
    console.print(f"trials: {spec.n_trials_planned}")
    if spec.protocol.tuned:
        _print_stages(spec)
    console.print(
        f"training time: up to about {_duration(spec.estimated_cpu_seconds())} on one CPU core"
        " (every trial at its full epoch budget)"
    )
    if warning is not None:
        console.print(
            f"[yellow]warning:[/] {term(warning)}; `initstudy run` will ask for --yes",
            highlight=False,
        )
    console.print(f"searched: {', '.join(spec.searched()) or 'nothing'}")
    _print_warnings([*spec.warnings(), *design])
    if seeds is not None:
        console.print(f"seeds per cell: {seeds}")
    for head, est in [("power", power)] + [
        (f"power ({e['claim']}: {e['faster']} vs {e['than']})", e) for e in per_claim
    ]:
        verdict = {None: "", True: ": enough", False: ": not enough"}[est["enough"]]  # type: ignore[index]
        note = f" ({seeds if seeds is not None else 'no'} seeds given{verdict})" if verdict else ""
        console.print(f"{head}: {term(str(est['text']))}{note}", highlight=False)


YES_DESIGN = "Only warn when the design cannot judge a claim it lists (refused without it)."


def _print_warnings(lines: Sequence[str]) -> None:
    """Warnings about a spec or a study's results, one line each."""
    for line in lines:
        err_console.print(f"[yellow]warning:[/] {term(line)}", highlight=False, soft_wrap=True)


def _print_stages(spec: StudySpec) -> None:
    """A tuned protocol's two studies and their trials (both counted above)."""
    from pipeline.protocolspec import TUNE_SUFFIX, stage_trials

    p = spec.protocol
    tune, measure = stage_trials(spec)
    lrs = ", ".join(f"{lr:g}" for lr in p.lr or ())
    per_lr = tune // max(1, len(p.lr or ()))  # arms x tuning seeds
    more = (
        f", then up to {per_lr * p.extensions} more where a pick is at an end of its range"
        f" (up to {p.extensions} steps further out each)"
        if p.extensions
        else ""
    )
    console.print(
        f"stage 1 (tune): study {spec.name + TUNE_SUFFIX!r}, {tune} trials: every arm at lr"
        f" {lrs} on tuning seeds {p.tuning_seeds}{more}",
        highlight=False,
    )
    console.print(
        f"stage 2 (measure): study {spec.name!r}, {measure} trials: every arm on the"
        f" measurement seeds {spec.values('seed')} at the lr picked by {p.pick}",
        highlight=False,
    )


@app.command()
def run(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML).")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (default: start Ray here).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="CPUs for the embedded Ray (default: all).")
    ] = None,
    cpus_per_trial: Annotated[
        float, typer.Option(help="CPUs per Ray task (one pack of trials).")
    ] = 1.0,
    gpus_per_trial: Annotated[
        float, typer.Option(help="GPUs per Ray task; fractions share a GPU.")
    ] = 0.0,
    pack_size: Annotated[
        int | None, typer.Option(help="Trials trained together per task (1 = no packing).")
    ] = None,
    study_name: Annotated[
        str | None, typer.Option(help="Study name (default: the spec's name).")
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            metavar="",
            help=f"Start a study of more than {CONFIRM_TRIALS:,} trials or"
            f" {CONFIRM_CPU_HOURS:g} estimated CPU-hours, or whose design cannot judge a"
            " claim it lists (refused without it).",
        ),
    ] = False,
    overrides: Overrides = None,
    dashboard: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Start the embedded Ray's dashboard on 127.0.0.1:PORT (off by default).",
        ),
    ] = None,
    offline_tracking: OfflineTracking = False,
    memory: Annotated[
        float | None,
        typer.Option(
            "--memory-per-task",
            "--memory",
            metavar="GiB",
            help="Memory one Ray task (a pack) may use; a study whose largest pack needs"
            " more is refused (default: this machine's memory).",
        ),
    ] = None,
) -> None:
    """Run (or resume) a study: Optuna asks, Ray trains, MLflow records.

    Ctrl-C once submits nothing more and lets the running trials finish; twice stops them
    too. Either way the finished trials are kept, and the same command resumes."""
    spec, text = _load_spec(spec_file, overrides or ())
    from pipeline.driver import RunOptions

    options = RunOptions(
        run_dir=run_dir,
        storage=storage,
        tracking_uri=tracking_uri,
        address=address,
        workers=workers,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        pack_size=pack_size,
        study_name=study_name,
        dashboard_port=dashboard,
        offline_tracking=offline_tracking,
    )
    found = checked(
        before_run,
        spec,
        str(spec_file),
        options,
        yes=yes,
        confirm="add --yes",
        label=cli_option,
        memory_per_task=memory,
    )
    _print_warnings(found.warnings)
    if (warning := found.size) is not None:
        if not yes:
            fail(f"{warning}; add --yes to start it")
        console.print(f"[yellow]note:[/] {term(warning)}; starting (--yes)", highlight=False)
    _print_warnings(spec.warnings())
    outcome = run_study(spec, text, options)
    for line in outcome.failed:
        err_console.print(f"[red]failed:[/] {term(one_line(line))}", highlight=False)
    if outcome.interrupted is not None:
        _print_interrupted(outcome, spec_file, options, overrides or ())
        terminated = outcome.interrupted == "terminated"
        raise typer.Exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)
    # a tuned study's verdicts are stage 2's: none while stage 1 is unfinished
    if outcome.counts.complete and outcome.study_name == (study_name or spec.name):
        from pipeline.analysis.advice import study_advice
        from pipeline.analysis.report import verdict_table
        from pipeline.analysis.verdicts import judge
        from pipeline.cli.outputs import publish_verdicts

        tables = study_tables(outcome.study_name, options.storage_url)
        verdicts = judge(tables)
        console.print(verdict_table(verdicts))
        _print_warnings(study_advice(tables))
        folder = run_dir / "reports" / outcome.study_name
        tracking = None if offline_tracking else options.tracking
        path = publish_verdicts(verdicts, folder, tracking, tables)
        hint = "" if run_dir == Path("runs") else f" --run-dir {run_dir}"
        console.print(
            f"verdicts: {term(str(path))}; full report: initstudy report "
            f"{outcome.study_name}{hint}",
            highlight=False,
        )
    if outcome.failed:
        raise typer.Exit(EXIT_FAILED)


def run_study(spec: StudySpec, text: str, options: RunOptions) -> StudyOutcome:
    """Run (or resume) one study, both stages of a tuned one, printing each outcome; a
    study error, a busy study or an unreachable storage ends the command."""
    from pipeline.driver import Driver
    from pipeline.progress import Reporter
    from pipeline.storage import StorageUnavailable, StudyBusy, StudyError

    try:
        if spec.protocol.tuned:
            return _run_tuned(spec, text, options)
        outcome = Driver(spec, text, options, Reporter()).run()
    except StudyError as exc:
        fail_with(exc)
    except StudyBusy as exc:
        fail(str(exc), code=EXIT_BUSY)
    except StorageUnavailable as exc:
        fail(str(exc), code=EXIT_FAILED)
    _print_outcome(outcome)
    return outcome


def _print_interrupted(
    outcome: StudyOutcome, spec_file: Path, options: RunOptions, overrides: Sequence[str]
) -> None:
    """After Ctrl-C: what was kept, what was left, and the command that resumes."""
    import shlex

    how = {
        "stopped": "the running trials were stopped",
        "terminated": "SIGTERM: the running trials were stopped",
    }.get(outcome.interrupted or "", "the running trials were let finish")
    words = ["initstudy", "run", str(spec_file)]
    for flag, value, default in (
        ("--run-dir", options.run_dir, Path("runs")),
        ("--storage", options.storage, None),
        ("--tracking-uri", options.tracking_uri, None),
        ("--address", options.address, None),
        ("--study-name", options.study_name, None),
    ):
        if value != default:
            words += [flag, str(value)]
    for override in overrides:
        words += ["--set", override]
    if options.offline_tracking:
        words.append("--offline-tracking")
    c = outcome.counts
    err_console.print(
        f"[yellow]interrupted[/] ({how}): {c.complete}/{c.planned} trials complete, "
        f"{outcome.unfinished} left unfinished; nothing finished is lost. "
        f"Resume with: {term(shlex.join(words))}",
        highlight=False,
        soft_wrap=True,
    )


def _print_outcome(outcome: StudyOutcome, stage: str = "") -> None:
    c = outcome.counts
    console.print(
        f"{stage}study {outcome.study_name!r}: {c.complete}/{c.planned} trials complete "
        f"({c.converged} converged, {c.censored} censored, {c.stalled} stalled, "
        f"{c.frozen} frozen, {c.diverged} diverged); "
        f"{outcome.trained} trained and {outcome.logged} logged by this run",
        highlight=False,
    )


def _run_tuned(spec: StudySpec, text: str, options: RunOptions) -> StudyOutcome:
    """Both stages of a tuned protocol; the outcome of the last stage that ran."""
    from pipeline.progress import Reporter
    from pipeline.protocol import run_protocol

    labels = {"tune": "stage 1 (tune): ", "measure": "stage 2 (measure): "}
    done = run_protocol(
        spec, text, options, Reporter(), on_stage=lambda s, o: _print_outcome(o, labels[s])
    )
    if done.measure is None:
        err_console.print(
            "stage 2 (measure) waits for every stage-1 trial; rerun to resume", highlight=False
        )
        return done.tune
    for pick in done.picks:
        arm = ", ".join(f"{k}={v}" for k, v in pick.arm.items()) or "(one arm)"
        note = "" if pick.reached else " (no lr reached a KM median: tie-breaks chose)"
        note += f"; {pick.flag}" if pick.flag else ""
        console.print(f"chosen lr: {term(arm)}: {pick.lr:g}{note}", highlight=False)
    return done.measure


@app.command()
def status(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    as_json: Annotated[bool, jsonout.JsonFlag] = False,
) -> None:
    """Print a study's trial counts from its Optuna storage."""
    from pipeline import storage as st

    check_study_name(study)
    url = read_storage(run_dir, storage)
    try:
        found = st.load_existing_study(st.make_storage(url), study)
    except st.StudyError as exc:
        fail_with(exc)
    c = st.study_counts(found)
    from pipeline.studystore import DriverLock

    # RUNNING trials with no driver alive were interrupted (Ctrl-C, a killed driver)
    driven = c.running == 0 or DriverLock.live_holder(found) is not None
    if as_json:
        jsonout.emit(jsonout.status(study, c, driven))
        return
    table = Table(title=f"study {study}")
    table.add_column("trials")
    table.add_column("count", justify="right")
    for label, value in (
        ("planned", c.planned),
        ("complete", c.complete),
        ("converged", c.converged),
        ("censored", c.censored),
        ("stalled", c.stalled),
        ("frozen", c.frozen),
        ("diverged", c.diverged),
        ("running" if driven else "interrupted", c.running),
        ("waiting", c.waiting),
        ("failed", c.failed),
        ("remaining", c.remaining),
    ):
        table.add_row(label, str(value))
    console.print(table)
    if not driven:
        console.print(
            f"{c.running} trials were interrupted (no driver runs this study): "
            "rerun `initstudy run SPEC` with the same options to resume",
            highlight=False,
        )


@app.command()
def check(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    as_json: Annotated[bool, jsonout.JsonFlag] = False,
) -> None:
    """Reconcile Optuna and MLflow: one run per trial, no orphans, every grid point once."""
    from pipeline.check import check_study
    from pipeline.storage import StudyError
    from pipeline.tracking import TrackingError

    check_study_name(study)
    url, tracking = stores(run_dir, storage, tracking_uri)
    try:
        report = check_study(study, url, tracking)
    except StudyError as exc:
        fail_with(exc)
    except TrackingError as exc:  # unreachable when the command starts: bad input
        fail(str(exc))
    if as_json:
        jsonout.emit(jsonout.check(report))
        if not report.ok:
            raise typer.Exit(EXIT_FAILED)
        return
    grid = f", {report.grid_points} grid points" if report.grid_points is not None else ""
    console.print(
        f"study {study!r}: {report.trials} complete trials, {report.runs} MLflow runs{grid}"
    )
    for line in report.problems:
        console.print(f"[red]problem:[/] {term(line)}", highlight=False)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)
    console.print("[green]consistent[/]: every trial has exactly one run")


@app.command()
def sync(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Back-fill MLflow with complete trials it is missing (after an outage)."""
    import yaml

    from pipeline import storage as st
    from pipeline.driver import Driver, RunOptions
    from pipeline.progress import Reporter
    from pipeline.protocolspec import as_stored
    from pipeline.studyspec import parse_study_spec

    check_study_name(study)
    url, _ = stores(run_dir, storage, tracking_uri)
    try:
        found = st.load_existing_study(st.make_storage(url), study)
    except st.StudyError as exc:
        fail_with(exc)
    text = found.user_attrs.get(st.SPEC_TEXT, "")
    spec = parse_study_spec(yaml.safe_load(text), source=f"study {study}")
    spec = as_stored(spec, found.user_attrs.get(st.STAGE), found.user_attrs.get(st.CHOSEN_LR))
    options = RunOptions(
        run_dir=run_dir, storage=storage, tracking_uri=tracking_uri, study_name=study
    )
    try:
        outcome = Driver(spec, text, options, Reporter()).sync()
    except st.StudyBusy as exc:
        fail(str(exc), code=EXIT_BUSY)
    except st.StorageUnavailable as exc:
        fail(str(exc), code=EXIT_FAILED)
    if outcome.tracking_error:
        fail(f"MLflow is still unreachable: {outcome.tracking_error}")
    console.print(f"study {study!r}: {outcome.logged} runs back-filled")


@app.command("list")
def list_studies(
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    as_json: Annotated[bool, jsonout.JsonFlag] = False,
) -> None:
    """List the studies in an Optuna storage, with their trial counts."""
    from pipeline import storage as st

    url = read_storage(run_dir, storage)
    store = checked(st.make_storage, url)
    names = st.study_names(store)
    if as_json:
        rows = []
        for name in names:
            found = st.load_existing_study(store, name)
            stage = str(found.user_attrs.get(st.STAGE, ""))
            rows.append(jsonout.list_row(name, stage, st.study_counts(found)))
        jsonout.emit({"studies": rows})
        return
    if not names:
        console.print("no studies in this storage", highlight=False)
        return
    table = Table()
    for column in ("study", "stage", "planned", "complete", "running", "failed"):
        table.add_column(column, justify="left" if column in ("study", "stage") else "right")
    for name in names:
        found = st.load_existing_study(store, name)
        c = st.study_counts(found)
        stage = str(found.user_attrs.get(st.STAGE, ""))
        table.add_row(
            cell(name), cell(stage), str(c.planned), str(c.complete), str(c.running), str(c.failed)
        )
    console.print(table)


@app.command()
def delete(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    yes: Annotated[bool, typer.Option("--yes", metavar="", help="Delete without asking.")] = False,
) -> None:
    """Delete a study: its Optuna trials and its MLflow experiment and runs."""
    from pipeline import storage as st
    from pipeline.studystore import DriverLock
    from pipeline.tracking import Tracker, TrackingError

    check_study_name(study)
    url, tracking = stores(run_dir, storage, tracking_uri)
    store = st.make_storage(url)
    try:
        found = st.load_existing_study(store, study)
    except st.StudyError as exc:
        fail_with(exc)
    holder = DriverLock.live_holder(found)
    if holder is not None:
        fail(
            f"study {study!r} is being run by a driver (host {holder.get('host')}, pid "
            f"{holder.get('pid')}, heartbeat {holder['age']:.0f} s ago); stop it first",
            code=EXIT_BUSY,
        )
    counts = st.study_counts(found)
    what = f"study {study!r} ({counts.complete} complete of {counts.planned} planned trials)"
    if not yes and not typer.confirm(f"delete {what} from Optuna and MLflow?", default=False):
        fail("not deleted: answer y, or pass --yes")
    try:
        mlflow_gone = Tracker(tracking).delete_experiment(study)
    except TrackingError as exc:
        fail(f"MLflow: {exc}; nothing was deleted")  # unreachable: nothing started
    st.delete_study(store, study)
    note = "and its MLflow experiment" if mlflow_gone else "(it had no MLflow experiment)"
    console.print(f"deleted {term(what)} {note}", highlight=False)

"""The ``initstudy`` command line.

Bad input (unknown names, non-positive sizes, unreadable files, malformed specs, option
values the parser refuses, malformed storage URLs, study names that are not names) prints
one line naming the option or field and what is allowed, and exits with code 2 before
anything is started or written. A study larger than :data:`CONFIRM_TRIALS` trials or
:data:`CONFIRM_CPU_HOURS` estimated CPU-hours is bad input too unless ``run`` gets
``--yes``. Exit code 1 means the input was well formed but the work failed: a SQL query
DuckDB refuses or cannot run (``query``: DuckDB's message, one line), MLflow unreachable,
failed trials. Exit code 3: another driver holds the study.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.urls import default_storage_url, default_tracking_uri, sqlite_file

if TYPE_CHECKING:
    import pandas as pd

    from models.spec import TrialResult
    from pipeline.analysis.verdicts import Verdict
    from pipeline.results import StudyTables
    from pipeline.studyspec import StudySpec

app = typer.Typer(
    help="Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_BUSY = 3
CONFIRM_TRIALS = 2_000
"""``run`` asks for ``--yes`` when a study plans more trials than this ..."""
CONFIRM_CPU_HOURS = 48.0
"""... or when its estimated training time (StudySpec.estimated_cpu_seconds) is longer than
this many hours on one CPU core: two days."""


@app.callback()
def _root() -> None:
    """Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one error line to stderr and exit.

    The message is user data as far as Rich is concerned (no markup), and multi-line
    library messages (a database driver's hint lines, SQLAlchemy's link) become one line.
    """
    err_console.print(
        f"[bold red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(code)


def one_line(message: str) -> str:
    """A message on one line: lines stripped and joined, SQLAlchemy's help link dropped."""
    lines = (ln.strip() for ln in str(message).splitlines())
    kept = [ln for ln in lines if ln and not ln.startswith("(Background on this error at")]
    return " ".join(kept) or "failed"


@app.command()
def trial(
    task: Annotated[str, typer.Option(help="Task: adding, copy or charlm.")] = "adding",
    seq_len: Annotated[
        int, typer.Option(help="Sequence length (the blank delay T for copy).")
    ] = 30,
    hidden: Annotated[int, typer.Option(help="Hidden units.")] = 64,
    cell: Annotated[str, typer.Option(help="Cell: rnn_tanh, rnn_relu, lstm or gru.")] = "rnn_tanh",
    init: Annotated[
        str, typer.Option(help="Init scheme for all matrices (see `initstudy schemes`).")
    ] = "xavier",
    init_recurrent: Annotated[
        str | None, typer.Option(help="Init scheme for the recurrent matrix alone.")
    ] = None,
    scale: Annotated[float, typer.Option(help="Gain: multiplies every drawn matrix.")] = 1.0,
    recurrent_scale: Annotated[
        float | None, typer.Option(help="Gain for the recurrent matrix alone (default: --scale).")
    ] = None,
    optimizer: Annotated[str, typer.Option(help="Optimizer: sgd, adam or rmsprop.")] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    clip: Annotated[
        float | None, typer.Option(help="Gradient-norm clipping threshold (default: none).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per batch.")] = 32,
    batches_per_epoch: Annotated[int, typer.Option(help="Batches per epoch.")] = 50,
    max_epochs: Annotated[int, typer.Option(help="Epoch budget (censoring point).")] = 30,
    target: Annotated[
        float | None, typer.Option(help="Target validation loss (default: the task's).")
    ] = None,
    divergence_factor: Annotated[
        float, typer.Option(help="Diverged when val loss > this x the initial loss.")
    ] = 10.0,
    patience: Annotated[
        int | None,
        typer.Option(
            help="Consecutive evaluations at or below the target that count as converged "
            "(default: TrialSpec's, see docs)."
        ),
    ] = None,
    val_size: Annotated[
        int | None, typer.Option(help="Validation sequences (default: TrialSpec's, see docs).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed for the weights.")] = 0,
    data_seed: Annotated[
        int | None, typer.Option(help="Seed for the data stream (default: --seed).")
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="UTF-8 text file for charlm (default: Python's docs).")
    ] = None,
    device: Annotated[str, typer.Option(help="Device: cpu, cuda or cuda:N.")] = "cpu",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the TrialResult as JSON.")
    ] = False,
) -> None:
    """Train one trial here, without Ray, and print its result."""
    from models import TrialSpec, check_spec, get_task, train_trial

    given = {"patience": patience, "val_size": val_size}
    defaults_unless_set: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    spec = TrialSpec(
        task=task,
        seq_len=seq_len,
        hidden=hidden,
        cell=cell,
        init=init,
        init_recurrent=init_recurrent,
        scale=scale,
        recurrent_scale=recurrent_scale,
        optimizer=optimizer,
        lr=lr,
        clip=clip,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        max_epochs=max_epochs,
        target_loss=target,
        divergence_factor=divergence_factor,
        **defaults_unless_set,
        seed=seed,
        data_seed=seed if data_seed is None else data_seed,
        corpus=str(corpus) if corpus is not None else None,
    )
    try:
        check_spec(spec)
        get_task(spec.task, spec.seq_len, spec.corpus)  # reads and checks the corpus
        dev = _check_device(device)
    except ValueError as exc:
        message = str(exc)
        fail(f"--corpus: {message}" if message.startswith("corpus file") else _as_option(message))
    result = train_trial(spec, dev)
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_result(result)


_OPTION_NAMES = {"target_loss": "target"}


def _as_option(message: str) -> str:
    """Turn 'field: what is wrong' from models.check_spec into '--option: what is wrong'."""
    field, sep, rest = message.partition(": ")
    if not sep or " " in field:
        return message
    return f"--{_OPTION_NAMES.get(field, field).replace('_', '-')}: {rest}"


def _check_device(device: str) -> str:
    import torch

    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available here")
        return device
    raise ValueError(f"device: unknown value {device!r}; allowed: cpu, cuda, cuda:N")


def print_result(result: TrialResult) -> None:
    """A readable summary of one TrialResult."""
    s, d = result.spec, result.diagnostics
    outcome = {
        "converged": f"[green]converged[/] at epoch {result.converged_epoch}",
        "diverged": f"[red]diverged[/] at epoch {result.diverged_epoch}",
        "frozen": "[red]frozen[/]: zero gradient into Wxh and Whh at init (cannot train)",
        "stalled": f"[yellow]stalled[/]: never left the task's baseline in {s.max_epochs} epochs",
        "censored": f"[yellow]censored[/]: no convergence within {s.max_epochs} epochs",
    }[result.outcome]
    init = s.init if s.init_recurrent is None else f"{s.init} (Whh: {s.init_recurrent})"
    table = Table(title=f"{s.task} T={s.seq_len}, {s.cell} H={s.hidden}, {init} x{s.scale:g}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("outcome", outcome)
    table.add_row(
        "target / baseline loss", f"{result.target_loss:.4g} / {result.baseline_loss:.4g}"
    )
    table.add_row("initial val loss", f"{d.initial_loss:.4g}")
    table.add_row("best val loss", f"{result.best_val_loss:.4g}")
    table.add_row("epochs run", str(result.epochs_run))
    table.add_row("spectral radius of Whh", f"{d.spectral_radius:.4g}")
    table.add_row(
        "hidden variance, first / last step", f"{d.hidden_var[0]:.3g} / {d.hidden_var[-1]:.3g}"
    )
    table.add_row("saturated share, last step", f"{d.hidden_sat[-1]:.3g}")
    table.add_row("|dL/dh_t|, first / last step", f"{d.grad_norm[0]:.3g} / {d.grad_norm[-1]:.3g}")
    table.add_row(
        "|dL/dWxh|, |dL/dWhh| at init", f"{d.input_grad_norm:.3g}, {d.recurrent_grad_norm:.3g}"
    )
    table.add_row("wall time", f"{result.wall_seconds:.2f} s on {result.device}")
    console.print(table)


RunDir = Annotated[
    Path, typer.Option(help="Run folder for the embedded Optuna and MLflow stores.")
]
Storage = Annotated[
    str | None,
    typer.Option(help="Optuna storage URL, e.g. postgresql://user@host/db (default: SQLite)."),
]
TrackingUri = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: SQLite)."),
]

_STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql")
_TRACKING_SCHEMES = ("sqlite", "postgresql", "http", "https", "databricks")
_ADDRESS_RE = re.compile(r"(ray://)?([A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


def _check_url(option: str, url: str | None, schemes: tuple[str, ...]) -> None:
    """A URL must have one of ``schemes``; a SQLite one must name a database file."""
    if url is None:
        return
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in schemes:
        fail(f"{option}: {url!r} is not a supported URL; allowed schemes: {', '.join(schemes)}")
    if scheme == "sqlite" and sqlite_file(url) is None:
        fail(
            f"{option}: {url!r} names no database file; write sqlite:///relative/path.db or"
            " sqlite:////absolute/path.db (an in-memory database would keep nothing)"
        )


def _check_study(study: str) -> None:
    """A STUDY argument must be a study name (it becomes a folder name under the run dir)."""
    from pipeline.studyspec import STUDY_NAME_RULE, is_study_name

    if not is_study_name(study):
        fail(f"STUDY: {study!r} is not a study name; a name is {STUDY_NAME_RULE}")


def _check_run_dir(run_dir: Path) -> None:
    """The run folder must be creatable and writable; checked before anything starts."""
    import os

    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        fail(f"--run-dir: {str(probe)!r} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"--run-dir: {str(probe)!r} is not writable")


def _load_spec(path: Path) -> tuple[StudySpec, str]:
    """Load and validate a spec, and build its task once (a charlm corpus is read here)."""
    from pipeline.studyspec import SpecError, load_study_spec

    try:
        spec = load_study_spec(path)
    except SpecError as exc:
        fail(str(exc))
    _check_task_data(spec, str(path))
    return spec, path.read_text(encoding="utf-8")


def _check_task_data(spec: StudySpec, source: str) -> None:
    """Build the spec's task at its longest sequence: a charlm corpus file that is missing,
    empty, binary, not UTF-8 or too short is refused now, not in every trial."""
    from models import get_task

    task, corpus = spec.values("task")[0], spec.values("corpus")[0]
    seq_len = max(int(v) for v in spec.values("seq_len"))
    try:
        get_task(task, seq_len, corpus)
    except ValueError as exc:
        if corpus is not None:
            field = "trial.corpus"
        else:
            field = "space.seq_len" if "seq_len" in spec.space else "trial.seq_len"
        fail(f"{source}: {field}: {exc}")


def _duration(seconds: float) -> str:
    """A rough duration for people: 40 s, 13 min, 5.2 h, 3.1 days."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:,.1f} days"


def _size_warning(spec: StudySpec, name: str) -> str | None:
    """The warning for a study too large to start without ``--yes`` (None: not too large)."""
    trials = spec.n_trials_planned
    seconds = spec.estimated_cpu_seconds()
    if trials <= CONFIRM_TRIALS and seconds <= CONFIRM_CPU_HOURS * 3600:
        return None
    return (
        f"study {name!r} plans {trials:,} trials, up to about {_duration(seconds)} of training"
        f" on one CPU core (more than {CONFIRM_TRIALS:,} trials or"
        f" {CONFIRM_CPU_HOURS:g} CPU-hours)"
    )


@app.command()
def validate(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML).")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Check a study spec; print its trial count, seeds per cell and, from earlier
    results of the same study (a pilot), the seeds needed to tell 2x from 10x."""
    spec, _ = _load_spec(spec_file)
    _check_url("--storage", storage, _STORAGE_SCHEMES)
    searched = ", ".join(spec.searched()) or "nothing"
    console.print(
        f"{escape(str(spec_file))}: ok - study {spec.name!r}, {spec.sampler} sampler",
        highlight=False,
    )
    console.print(f"trials: {spec.n_trials_planned}")
    console.print(
        f"training time: up to about {_duration(spec.estimated_cpu_seconds())} on one CPU core"
        " (every trial at its full epoch budget)"
    )
    warning = _size_warning(spec, spec.name)
    if warning is not None:
        console.print(
            f"[yellow]warning:[/] {escape(warning)}; `initstudy run` will ask for --yes",
            highlight=False,
        )
    console.print(f"searched: {searched}")
    seeds = spec.seeds_per_cell()
    if seeds is not None:
        console.print(f"seeds per cell: {seeds}")
    if storage is None and not (run_dir / "optuna.db").exists():
        console.print("power: no earlier results of this study to estimate the noise from")
        return
    _print_power(spec.name, storage or default_storage_url(run_dir), seeds)


def _print_power(study: str, storage_url: str, seeds: int | None) -> None:
    """From a pilot: how many seeds per cell tell a 2x speedup from a 10x one."""
    from pipeline.analysis.stats import power_estimate
    from pipeline.results import load_tables
    from pipeline.storage import StudyError

    try:
        trials = load_tables(study, storage_url).trials
    except StudyError:
        console.print("power: no earlier results of this study to estimate the noise from")
        return
    if trials.empty or not {"xavier", "uniform01"} <= set(trials["init"].astype(str)):
        console.print("power: the pilot has no xavier-vs-uniform01 pairs to estimate noise from")
        return
    uniform = trials[trials["init"] == "uniform01"]
    if len(uniform) and (uniform["outcome"] == "frozen").all():
        console.print(
            "power: uniform01 is frozen (zero gradient at init) in every pilot trial: it "
            "cannot train, so the speedup is unbounded whatever the seeds or the budget"
        )
        return
    est = power_estimate(trials, "xavier", "uniform01", ["seq_len", "hidden"])
    if est["seeds_needed"] is None:
        console.print(f"power: {escape(est['text'])}", highlight=False)
        return
    verdict = "enough" if seeds is not None and seeds >= est["seeds_needed"] else "not enough"
    console.print(
        f"power: {escape(est['text'])} ({seeds if seeds is not None else 'no'} seeds given: "
        f"{verdict})",
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
            help=f"Start a study of more than {CONFIRM_TRIALS:,} trials or"
            f" {CONFIRM_CPU_HOURS:g} estimated CPU-hours (refused without it).",
        ),
    ] = False,
) -> None:
    """Run (or resume) a study: Optuna asks, Ray trains, MLflow records."""
    from pipeline.studyspec import STUDY_NAME_RULE, is_study_name

    spec, text = _load_spec(spec_file)
    _check_url("--storage", storage, _STORAGE_SCHEMES)
    _check_url("--tracking-uri", tracking_uri, _TRACKING_SCHEMES)
    if storage is None or tracking_uri is None:
        _check_run_dir(run_dir)
    if workers is not None and workers < 1:
        fail(f"--workers: must be >= 1, got {workers}")
    if not cpus_per_trial > 0:
        fail(f"--cpus-per-trial: must be > 0, got {cpus_per_trial}")
    if not gpus_per_trial >= 0:
        fail(f"--gpus-per-trial: must be >= 0, got {gpus_per_trial}")
    if pack_size is not None and pack_size < 1:
        fail(f"--pack-size: must be >= 1, got {pack_size}")
    if study_name is not None and not is_study_name(study_name):
        fail(f"--study-name: {study_name!r} is not a study name; a name is {STUDY_NAME_RULE}")
    if address not in (None, "auto", "local") and not _ADDRESS_RE.fullmatch(str(address)):
        fail(
            f"--address: {address!r} is not a Ray address; use auto, HOST:PORT or ray://HOST:PORT"
        )
    warning = _size_warning(spec, study_name or spec.name)
    if warning is not None:
        if not yes:
            fail(f"{warning}; add --yes to start it")
        console.print(f"[yellow]note:[/] {escape(warning)}; starting (--yes)", highlight=False)

    from pipeline.driver import Driver, RunOptions
    from pipeline.progress import Reporter
    from pipeline.storage import StorageUnavailable, StudyBusy, StudyError

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
    )
    try:
        outcome = Driver(spec, text, options, Reporter()).run()
    except StudyError as exc:
        fail(str(exc))
    except StudyBusy as exc:
        fail(str(exc), code=EXIT_BUSY)
    except StorageUnavailable as exc:
        fail(str(exc), code=1)
    c = outcome.counts
    console.print(
        f"study {outcome.study_name!r}: {c.complete}/{c.planned} trials complete "
        f"({c.converged} converged, {c.censored} censored, {c.stalled} stalled, "
        f"{c.frozen} frozen, {c.diverged} diverged); "
        f"{outcome.trained} trained and {outcome.logged} logged by this run"
    )
    for line in outcome.failed:
        err_console.print(f"[red]failed:[/] {escape(one_line(line))}", highlight=False)
    if c.complete:
        from pipeline.analysis.report import verdict_table
        from pipeline.analysis.verdicts import judge

        tables = _tables(outcome.study_name, options.storage_url)
        verdicts = judge(tables)
        console.print(verdict_table(verdicts))
        folder = run_dir / "reports" / outcome.study_name
        path = _publish_verdicts(verdicts, folder, options.tracking, tables)
        hint = "" if run_dir == Path("runs") else f" --run-dir {run_dir}"
        console.print(
            f"verdicts: {escape(str(path))}; full report: initstudy report "
            f"{outcome.study_name}{hint}",
            highlight=False,
        )
    if outcome.failed:
        raise typer.Exit(1)


@app.command()
def status(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
) -> None:
    """Print a study's trial counts from its Optuna storage."""
    from pipeline import storage as st

    _check_study(study)
    url = _read_storage(run_dir, storage)
    try:
        found = st.load_existing_study(st.make_storage(url), study)
    except st.StudyError as exc:
        fail(str(exc))
    c = st.study_counts(found)
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
        ("running", c.running),
        ("waiting", c.waiting),
        ("failed", c.failed),
        ("remaining", c.remaining),
    ):
        table.add_row(label, str(value))
    console.print(table)


def _read_storage(run_dir: Path, storage: str | None) -> str:
    """The Optuna storage URL of an existing study store; reading never creates one."""

    _check_url("--storage", storage, _STORAGE_SCHEMES)
    if storage is None:
        if not (run_dir / "optuna.db").is_file():
            fail(
                f"no study storage in {str(run_dir)!r} (no optuna.db); give --run-dir or --storage"
            )
        return default_storage_url(run_dir)
    db = sqlite_file(storage)
    if db is not None and not db.is_file():
        fail(f"--storage: no database file {str(db)!r}; reading a study creates none")
    return storage


def _stores(run_dir: Path, storage: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """The Optuna storage URL and MLflow tracking URI for reading a study."""
    _check_url("--tracking-uri", tracking_uri, _TRACKING_SCHEMES)
    url = _read_storage(run_dir, storage)
    tracking = tracking_uri or default_tracking_uri(run_dir)
    return url, tracking


def _tables(study: str, storage_url: str) -> StudyTables:
    from pipeline.results import load_tables
    from pipeline.storage import StudyError

    try:
        return load_tables(study, storage_url)
    except StudyError as exc:
        fail(str(exc))


@app.command()
def check(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Reconcile Optuna and MLflow: one run per trial, no orphans, every grid point once."""
    from pipeline.check import check_study
    from pipeline.storage import StudyError
    from pipeline.tracking import TrackingError

    _check_study(study)
    url, tracking = _stores(run_dir, storage, tracking_uri)
    try:
        report = check_study(study, url, tracking)
    except StudyError as exc:
        fail(str(exc))
    except TrackingError as exc:
        fail(str(exc), code=1)
    grid = f", {report.grid_points} grid points" if report.grid_points is not None else ""
    console.print(
        f"study {study!r}: {report.trials} complete trials, {report.runs} MLflow runs{grid}"
    )
    for line in report.problems:
        console.print(f"[red]problem:[/] {escape(line)}", highlight=False)
    if not report.ok:
        raise typer.Exit(1)
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
    from pipeline.studyspec import parse_study_spec

    _check_study(study)
    url, _ = _stores(run_dir, storage, tracking_uri)
    try:
        found = st.load_existing_study(st.make_storage(url), study)
    except st.StudyError as exc:
        fail(str(exc))
    text = found.user_attrs.get(st.SPEC_TEXT, "")
    spec = parse_study_spec(yaml.safe_load(text), source=f"study {study}")
    options = RunOptions(
        run_dir=run_dir, storage=storage, tracking_uri=tracking_uri, study_name=study
    )
    try:
        outcome = Driver(spec, text, options, Reporter()).sync()
    except st.StudyBusy as exc:
        fail(str(exc), code=EXIT_BUSY)
    except st.StorageUnavailable as exc:
        fail(str(exc), code=1)
    if outcome.tracking_error:
        fail(f"MLflow is still unreachable: {outcome.tracking_error}", code=1)
    console.print(f"study {study!r}: {outcome.logged} runs back-filled")


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
            table.add_column(
                str(col), justify="right" if shown[col].dtype.kind in "iuf" else "left"
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
    if isinstance(value, float):
        return f"{value:.4g}"
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
    _check_study(study)
    if table not in _TABLES:
        fail(f"--table: unknown value {table!r}; allowed: {', '.join(_TABLES)}")
    if fmt not in _FORMATS:
        fail(f"--format: unknown value {fmt!r}; allowed: {', '.join(_FORMATS)}")
    url, _ = _stores(run_dir, storage, None)
    tables = _tables(study, url)
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

    _check_study(study)
    if fmt not in ("table", "csv", "json"):
        fail(f"--format: unknown value {fmt!r}; allowed: table, csv, json")
    url, _ = _stores(run_dir, storage, None)
    tables = _tables(study, url)
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
    _check_study(study)
    url, tracking = _stores(run_dir, storage, tracking_uri)
    tables = _tables(study, url)
    folder = out or run_dir / "reports" / study
    try:
        files = _write_report(tables, folder, tracking)
    except OSError as exc:
        option = "--out" if out is not None else "--run-dir"
        fail(f"{option}: cannot write the report to {str(folder)!r}: {exc.strerror or exc}")
    console.print(
        f"wrote {escape(str(files['markdown']))}, {escape(str(files['html']))} and "
        f"{escape(str(files['verdicts']))} ({len(files) - 3} figures)",
        highlight=False,
    )


def _publish_verdicts(
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


def _write_report(tables: StudyTables, folder: Path, tracking: str) -> dict[str, Path]:
    """Write the report and attach it to the study's parent MLflow run (if reachable)."""
    from pipeline.analysis.report import verdict_table, write_report
    from pipeline.analysis.verdicts import judge

    verdicts = judge(tables)
    files = write_report(tables, folder, verdicts)
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

    _check_study(study)
    _check_url("--tracking-uri", tracking_uri, _TRACKING_SCHEMES)
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


def _quiet_libraries() -> None:
    """Keep library chatter off the terminal; errors still come through."""
    import logging
    import os

    # MLflow's HTTP client retries 7 times with backoff by default, minutes for a dead
    # server; the tracker retries on its own, so fail fast and back-fill later.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # No usage telemetry: studies run on closed networks, and we send nothing anywhere
    # (set here too for `ui`'s MLflow server; Ray's is set where Ray starts, in
    # pipeline.execution).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point; ``argv`` defaults to ``sys.argv[1:]``. Exits.

    Options the parser refuses (not an integer, unknown option, missing argument) print
    one line and exit 2, like every other bad input, instead of Typer's usage box.
    """
    _quiet_libraries()
    try:
        code = app(args=argv, prog_name="initstudy", standalone_mode=False)
    except typer.TyperException as exc:  # Click's usage errors (Typer vendors Click)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help())  # `initstudy` alone: the help, as before
        else:
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            err_console.print(
                f"[bold red]error:[/] {escape(one_line(exc.format_message()))}{escape(hint)}",
                highlight=False,
                soft_wrap=True,
            )
        sys.exit(exc.exit_code)
    except typer.Abort:
        err_console.print("aborted")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()

"""The ``initstudy`` command line.

Bad input (unknown names, non-positive sizes, unreadable files, malformed specs) prints
one line naming the option and what is allowed, and exits with code 2 before anything is
started or written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from models.spec import TrialResult
    from pipeline.studyspec import StudySpec

app = typer.Typer(
    help="Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2
EXIT_BUSY = 3


@app.callback()
def _root() -> None:
    """Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one error line to stderr and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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
    val_size: Annotated[int, typer.Option(help="Validation sequences.")] = 256,
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

    spec = TrialSpec(
        task=task,
        seq_len=seq_len,
        hidden=hidden,
        cell=cell,
        init=init,
        init_recurrent=init_recurrent,
        scale=scale,
        optimizer=optimizer,
        lr=lr,
        clip=clip,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        max_epochs=max_epochs,
        target_loss=target,
        divergence_factor=divergence_factor,
        val_size=val_size,
        seed=seed,
        data_seed=seed if data_seed is None else data_seed,
        corpus=str(corpus) if corpus is not None else None,
    )
    try:
        check_spec(spec)
        get_task(spec.task, spec.seq_len, spec.corpus)  # reads and checks the corpus
        dev = _check_device(device)
    except ValueError as exc:
        fail(_as_option(str(exc)))
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
    if result.diverged:
        outcome = f"[red]diverged[/] at epoch {result.diverged_epoch}"
    elif result.converged:
        outcome = f"[green]converged[/] at epoch {result.converged_epoch}"
    else:
        outcome = f"[yellow]censored[/]: no convergence within {s.max_epochs} epochs"
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


def _check_url(option: str, url: str | None, schemes: tuple[str, ...]) -> None:
    if url is None:
        return
    scheme = url.partition("://")[0]
    if "://" not in url or scheme not in schemes:
        fail(f"{option}: {url!r} is not a supported URL; allowed schemes: {', '.join(schemes)}")


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
    from pipeline.studyspec import SpecError, load_study_spec

    try:
        spec = load_study_spec(path)
    except SpecError as exc:
        fail(str(exc))
    return spec, path.read_text(encoding="utf-8")


@app.command()
def validate(
    spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="Study spec (YAML).")],
) -> None:
    """Check a study spec and print how many trials it will run."""
    spec, _ = _load_spec(spec_file)
    searched = ", ".join(spec.searched()) or "nothing"
    console.print(f"{spec_file}: ok - study {spec.name!r}, {spec.sampler} sampler")
    console.print(f"trials: {spec.n_trials_planned}")
    console.print(f"searched: {searched}")
    seeds = spec.seeds_per_cell()
    if seeds is not None:
        console.print(f"seeds per cell: {seeds}")


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
) -> None:
    """Run (or resume) a study: Optuna asks, Ray trains, MLflow records."""
    import re

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
    if study_name is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", study_name):
        fail(f"--study-name: {study_name!r} must be 1-64 of A-Z a-z 0-9 _ . -")

    from pipeline.driver import Driver, RunOptions
    from pipeline.progress import Reporter
    from pipeline.storage import StudyBusy, StudyError

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
    c = outcome.counts
    console.print(
        f"study {outcome.study_name!r}: {c.complete}/{c.planned} trials complete "
        f"({c.converged} converged, {c.diverged} diverged, {c.censored} censored); "
        f"{outcome.trained} trained and {outcome.logged} logged by this run"
    )
    for line in outcome.failed:
        err_console.print(f"[red]failed:[/] {line}", highlight=False)
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

    _check_url("--storage", storage, _STORAGE_SCHEMES)
    url = storage or st.default_storage_url(run_dir)
    if storage is None and not (run_dir / "optuna.db").exists():
        fail(f"no study storage in {str(run_dir)!r} (no optuna.db); give --run-dir or --storage")
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
        ("diverged", c.diverged),
        ("censored", c.censored),
        ("running", c.running),
        ("waiting", c.waiting),
        ("failed", c.failed),
        ("remaining", c.remaining),
    ):
        table.add_row(label, str(value))
    console.print(table)


def _quiet_libraries() -> None:
    """Keep library chatter off the terminal; errors still come through."""
    import logging
    import os

    # MLflow's HTTP client retries 7 times with backoff by default, minutes for a dead
    # server; the tracker retries on its own, so fail fast and back-fill later.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    """Console-script entry point."""
    _quiet_libraries()
    app()


if __name__ == "__main__":
    main()

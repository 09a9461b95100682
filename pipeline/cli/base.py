"""What every ``initstudy`` command shares: the app, the consoles, one-line errors, and
the options and checks of the study stores (run folder, Optuna storage, MLflow URI)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.urls import default_storage_url, default_tracking_uri, sqlite_file

if TYPE_CHECKING:
    from pipeline.results import StudyTables

app = typer.Typer(
    help="Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Piped output (logs, CI) gets wide tables instead of rich's 80-column default.
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

Overrides = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override a spec field, e.g. --set trial.max_epochs=5 (repeatable; VALUE is "
        "YAML; the study's spec hash changes as with an edit).",
    ),
]
EXIT_BAD_INPUT = 2
EXIT_BUSY = 3
CONFIRM_TRIALS = 2_000
"""``run`` asks for ``--yes`` when a study plans more trials than this ..."""
CONFIRM_CPU_HOURS = 48.0
"""... or when its estimated training time (StudySpec.estimated_cpu_seconds) is longer than
this many hours on one CPU core: two days."""


def _print_version(value: bool) -> None:
    if value:
        from pipeline.version import code_version

        console.print(f"initstudy {code_version()}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            metavar="",
            help="Print the version (and, in a git checkout, the commit) and exit.",
        ),
    ] = False,
) -> None:
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

STORAGE_SCHEMES = ("sqlite", "postgresql", "postgresql+psycopg2", "postgresql+psycopg", "mysql")
TRACKING_SCHEMES = ("sqlite", "postgresql", "http", "https", "databricks")


def check_url(option: str, url: str | None, schemes: tuple[str, ...]) -> None:
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


def check_study_name(study: str) -> None:
    """A STUDY argument must be a study name (it becomes a folder name under the run dir)."""
    from pipeline.studyspec import STUDY_NAME_RULE, is_study_name

    if not is_study_name(study):
        fail(f"STUDY: {study!r} is not a study name; a name is {STUDY_NAME_RULE}")


def check_run_dir(run_dir: Path) -> None:
    """The run folder must be creatable and writable; checked before anything starts."""
    import os

    probe = run_dir
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        fail(f"--run-dir: {str(probe)!r} exists and is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        fail(f"--run-dir: {str(probe)!r} is not writable")


def read_storage(run_dir: Path, storage: str | None) -> str:
    """The Optuna storage URL of an existing study store; reading never creates one."""

    check_url("--storage", storage, STORAGE_SCHEMES)
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


def stores(run_dir: Path, storage: str | None, tracking_uri: str | None) -> tuple[str, str]:
    """The Optuna storage URL and MLflow tracking URI for reading a study."""
    check_url("--tracking-uri", tracking_uri, TRACKING_SCHEMES)
    url = read_storage(run_dir, storage)
    tracking = tracking_uri or default_tracking_uri(run_dir)
    return url, tracking


def study_tables(study: str, storage_url: str) -> StudyTables:
    from pipeline.results import load_tables
    from pipeline.storage import StudyError

    try:
        return load_tables(study, storage_url)
    except StudyError as exc:
        fail(str(exc))

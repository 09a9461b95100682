"""What every ``initstudy`` command shares: the app, the consoles, one-line errors, and
the options and checks of the study stores (run folder, Optuna storage, MLflow URI).

The checks are :mod:`pipeline.frontend`'s (the API's too), their errors made ``fail``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec, TypeVar

import typer
from rich.console import Console

from pipeline import frontend
from pipeline.exitcodes import EXIT_BAD_INPUT as EXIT_BAD_INPUT
from pipeline.exitcodes import EXIT_BUSY as EXIT_BUSY
from pipeline.exitcodes import EXIT_FAILED as EXIT_FAILED
from pipeline.exitcodes import EXIT_INTERRUPTED as EXIT_INTERRUPTED
from pipeline.exitcodes import EXIT_STORE_CORRUPT as EXIT_STORE_CORRUPT
from pipeline.exitcodes import EXIT_TERMINATED as EXIT_TERMINATED
from pipeline.frontend import CONFIRM_CPU_HOURS as CONFIRM_CPU_HOURS
from pipeline.frontend import CONFIRM_TRIALS as CONFIRM_TRIALS
from pipeline.frontend import STORAGE_SCHEMES as STORAGE_SCHEMES
from pipeline.frontend import TRACKING_SCHEMES as TRACKING_SCHEMES
from pipeline.frontend import cli_option
from pipeline.frontend import one_line as one_line
from pipeline.safeout import term
from pipeline.urls import default_tracking_uri, redact_text

if TYPE_CHECKING:
    from pipeline.results import StudyTables


def _require_working_folder() -> None:
    """A current folder that was deleted (or moved away) under the shell: one line and exit
    2 now, when the CLI is imported, before PyTorch is (its MKL aborts there with a FATAL
    ERROR instead)."""
    try:
        os.getcwd()
    except FileNotFoundError:
        sys.stderr.write(
            "error: the current folder no longer exists (it was deleted or moved); cd to an"
            " existing folder and run the command again\n"
        )
        sys.exit(EXIT_BAD_INPUT)


_require_working_folder()  # pipeline.cli imports this module before the commands' modules

P = ParamSpec("P")
T = TypeVar("T")

app = typer.Typer(
    help="Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=True,
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

    The message is user data as far as Rich is concerned (no markup, no control
    characters, :func:`pipeline.safeout.term`), a URL's password or secret query
    parameter in it is hidden (:func:`pipeline.urls.redact_text`), and multi-line
    library messages (a database driver's hint lines, SQLAlchemy's link) become one line.
    """
    err_console.print(
        f"[bold red]error:[/] {term(redact_text(one_line(message)))}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(code)


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
OfflineTracking = Annotated[
    bool,
    typer.Option(
        "--offline-tracking",
        metavar="",
        help="Run without MLflow (refused otherwise when MLflow cannot be reached at"
        " start); `initstudy sync` logs the results later.",
    ),
]


def fail_with(exc: Exception) -> NoReturn:
    """:func:`fail` with the exception's text and its own exit code, if it has one (a
    corrupt store's is :data:`EXIT_STORE_CORRUPT`), else :data:`EXIT_BAD_INPUT`."""
    fail(str(exc), getattr(exc, "exit_code", EXIT_BAD_INPUT))


def checked(check: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``check(*args, **kwargs)`` from :mod:`pipeline.frontend`, its ``ValueError`` (a
    ``SpecError``, a ``StudyError``) printed as one line with exit code 2."""
    try:
        return check(*args, **kwargs)
    except ValueError as exc:
        fail_with(exc)


def check_url(option: str, url: str | None, schemes: tuple[str, ...]) -> None:
    """A URL must have one of ``schemes``; a SQLite one must name a database file."""
    checked(frontend.check_url, option, url, schemes)


def check_study_name(study: str) -> None:
    """A STUDY argument must be a study name (it becomes a folder name under the run dir)."""
    checked(frontend.check_study_name, "STUDY", study)


def check_run_dir(run_dir: Path) -> None:
    """The run folder must be creatable and writable; checked before anything starts."""
    checked(frontend.check_run_dir, "--run-dir", run_dir)


def read_storage(run_dir: Path, storage: str | None) -> str:
    """The Optuna storage URL of an existing study store; reading never creates one."""
    return checked(frontend.read_storage, run_dir, storage, cli_option)


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
        fail_with(exc)

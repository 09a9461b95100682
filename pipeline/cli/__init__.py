"""The ``initstudy`` command line.

Bad input (unknown names, non-positive sizes, unreadable files, malformed specs, option
values the parser refuses, malformed storage URLs, study names that are not names) prints
one line naming the option or field and what is allowed, and exits with code 2 before
anything is started or written. A study larger than :data:`CONFIRM_TRIALS` trials or
:data:`CONFIRM_CPU_HOURS` estimated CPU-hours is bad input too unless ``run`` gets
``--yes``; so are a SQL query DuckDB refuses, a store that cannot be reached when the
command starts, and a confirmation not given. Every exit code is one of
:mod:`pipeline.exitcodes` (the table is in docs/cli.md): 1 the work failed (failed trials,
``check`` found problems), 3 another driver holds the study, 4 a store file is not a
database, 130 Ctrl-C.

The commands are grouped in this package's modules: ``trial`` (one trial, its options made
from ``models.fields.FIELDS``, and ``schemes``), ``studies`` (validate, run, status, check,
sync, list, delete), ``outputs`` (results, query, report, ui), ``dashboard``
(optuna-dashboard on a study's store) and ``suite`` (a folder of studies, one report);
``base`` holds what they share, and :mod:`pipeline.frontend` the checks and limits they
share with the notebook API (:mod:`pipeline.api`). ``main`` is the console script;
``python -m pipeline.cli`` runs it too.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

import typer

from pipeline.cli.base import (
    CONFIRM_CPU_HOURS,
    CONFIRM_TRIALS,
    EXIT_BAD_INPUT,
    EXIT_BUSY,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_STORE_CORRUPT,
    app,
    console,
    err_console,
    fail,
    one_line,
)
from pipeline.frontend import quiet_libraries
from pipeline.raysession import RayHost
from pipeline.safeout import term

# The command modules register their commands on ``app`` when imported, in the order
# ``initstudy --help`` lists them.
# isort: split
from pipeline.cli import trial as _trial  # noqa: F401

# isort: split
from pipeline.cli import studies as _studies  # noqa: F401

# isort: split
from pipeline.cli import outputs as _outputs  # noqa: F401

# isort: split
from pipeline.cli import dashboard as _dashboard  # noqa: F401

# isort: split
from pipeline.cli import suite as _suite  # noqa: F401

__all__ = [
    "CONFIRM_CPU_HOURS",
    "CONFIRM_TRIALS",
    "EXIT_BAD_INPUT",
    "EXIT_BUSY",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_STORE_CORRUPT",
    "app",
    "console",
    "err_console",
    "fail",
    "main",
    "one_line",
]


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Console-script entry point; ``argv`` defaults to ``sys.argv[1:]``. Exits.

    Options the parser refuses (not an integer, unknown option, missing argument) print
    one line and exit 2, like every other bad input, instead of Typer's usage box.
    """
    quiet_libraries()  # MLflow fails fast and quietly, as under the API
    try:
        code = app(args=argv, prog_name="initstudy", standalone_mode=False)
    except typer.TyperException as exc:  # Click's usage errors (Typer vendors Click)
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            console.print(ctx.get_help())  # `initstudy` alone: the help, as before
        else:
            hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            err_console.print(
                f"[bold red]error:[/] {term(one_line(exc.format_message()))}{term(hint)}",
                highlight=False,
                soft_wrap=True,
            )
        sys.exit(exc.exit_code)
    except typer.Abort as exc:  # Click's: Ctrl-C anywhere, or no answer to a question
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, EOFError):  # stdin closed at a confirmation: not confirmed
            err_console.print(
                "[bold red]error:[/] no answer (stdin is closed): nothing was done; pass --yes",
                highlight=False,
            )
            sys.exit(EXIT_BAD_INPUT)
        err_console.print("interrupted: nothing more was done", highlight=False)
        sys.exit(EXIT_INTERRUPTED)
    code = code if isinstance(code, int) else 0
    # A Ray start cut short by Ctrl-C still ending on its thread: the interpreter's teardown
    # would abort under it. The stores' last writes are committed; a SQLite store may keep
    # its write-ahead log beside it, which SQLite applies when it is next opened.
    if RayHost.unwinding():
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code)
    sys.exit(code)

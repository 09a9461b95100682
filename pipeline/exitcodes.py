"""The exit codes of every ``initstudy`` command, in one place.

The CLI (:mod:`pipeline.cli`) exits with these and nothing else; ``docs/cli.md`` holds the
same table for people and scripts (``tests/test_exit_codes.py`` checks that they agree and
that each command follows it). A store's exception may carry its code as ``exit_code``
(:class:`pipeline.storage.StoreCorrupt`).
"""

from __future__ import annotations

EXIT_OK = 0
"""Done: the command did what was asked (a study may still be unfinished; see ``status``)."""
EXIT_FAILED = 1
"""The input was good but the work failed: trials that failed for good, ``check`` found
problems, MLflow or the Optuna storage lost for good during a run, the MLflow UI did not
start, or an internal error (a bug: a traceback)."""
EXIT_BAD_INPUT = 2
"""Bad input, refused before anything is started or written: an unknown option or value, a
malformed spec or URL, a store or study that is not there or cannot be reached when the
command starts, a SQL query DuckDB refuses, a confirmation not given (``n``, stdin closed,
or no ``--yes`` for a large study)."""
EXIT_BUSY = 3
"""Busy: another live driver holds the study (``run``, ``sync``, ``delete``)."""
EXIT_STORE_CORRUPT = 4
"""A store file (``optuna.db``, ``mlflow.db``) is empty or not a database; nothing is
written to it."""
EXIT_INTERRUPTED = 130
"""Interrupted by Ctrl-C (SIGINT), as a shell reports it (128 + 2); ``run`` prints the
command that resumes."""
EXIT_TERMINATED = 143
"""Ended by SIGTERM (128 + 15): ``run`` stops its trials as on a second Ctrl-C and prints
the command that resumes."""
SIGNAL_BASE = 128
"""Ended by another signal N (``ui`` on SIGTERM or SIGHUP): 128 + N, as a shell reports it."""

TABLE: tuple[tuple[int, str, str], ...] = (
    (EXIT_OK, "EXIT_OK", "done"),
    (EXIT_FAILED, "EXIT_FAILED", "the work failed (failed trials, `check` found problems)"),
    (EXIT_BAD_INPUT, "EXIT_BAD_INPUT", "bad input, refused before anything started"),
    (EXIT_BUSY, "EXIT_BUSY", "another driver holds the study"),
    (EXIT_STORE_CORRUPT, "EXIT_STORE_CORRUPT", "a store file is not a database"),
    (EXIT_INTERRUPTED, "EXIT_INTERRUPTED", "Ctrl-C"),
    (EXIT_TERMINATED, "EXIT_TERMINATED", "SIGTERM (`run` prints the command that resumes)"),
)
"""``(code, name, meaning)`` of each code a command may exit with (besides 128 + N)."""

"""SQLite files for the embedded stores: write-ahead logging.

The embedded Optuna and MLflow stores are SQLite files written by one process (the driver)
and read by others (``initstudy results``, the MLflow UI) while a study runs. In SQLite's
default rollback-journal mode every commit syncs the journal and the database file, and a
reader blocks the writer. In write-ahead-log mode a commit appends to ``<file>-wal`` (one
sync), readers and the writer do not block each other, and a crash still loses nothing that
was committed (https://www.sqlite.org/wal.html). The mode is stored in the file, so it is set
once, when the driver first opens the file. WAL needs a local disk (not a network file
system), which is what the embedded stores are for; a server (PostgreSQL, an MLflow tracking
server) is the way to share a study between machines.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (``sqlite:///rel.db``,
    ``sqlite:////abs.db``, a ``?query`` dropped); None for other URLs and in-memory SQLite."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").partition("?")[0]
    return None if path in ("", ":memory:") else Path(path)


def use_wal(path: Path) -> bool:
    """Put the SQLite database ``path`` (created if missing) in write-ahead-log mode.

    A performance setting only: if the file cannot be switched (a read-only file, another
    process holds it), it stays as it is and False is returned.
    """
    try:
        connection = sqlite3.connect(path, timeout=5)
    except sqlite3.Error:
        return False
    try:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()
        return bool(mode) and str(mode[0]).lower() == "wal"
    except sqlite3.Error:
        return False
    finally:
        connection.close()

"""Where a study's stores are: their URLs, the embedded defaults, SQLite files, redaction.

The one place that parses a store URL, builds a default one or hides a password in one:
the driver, the CLI, the results reader and the UI all ask here.

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

import contextlib
import fcntl
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

OPTUNA_DB = "optuna.db"
"""The embedded Optuna storage's file in the run folder."""
MLFLOW_DB = "mlflow.db"
"""The embedded MLflow store's file in the run folder."""
ARTIFACTS = "mlartifacts"
"""The embedded MLflow store's artifact folder in the run folder."""

_USERINFO = re.compile(r"(://[^/\s:@]*):[^/\s@]*@")
_SECRET_PARAM = re.compile(
    r"(?i)([?&;](?:[a-z0-9_.-]*(?:password|passwd|pwd|secret|token|key|credential)"
    r"[a-z0-9_.-]*|pass|auth)=)(?:[^&;#\s'\":]|:(?!\s|$))*"
)
"""A query parameter that holds a secret (``?password=``, ``&sslpassword=``, ``&token=``,
``&api_key=``, ``&secret=``...): its value is what :func:`redact` hides."""


POSTGRES_ALIAS = "postgres"
"""PostgreSQL's common short scheme (``postgres://``, as libpq and many hosts write it),
which SQLAlchemy and MLflow do not know: :func:`canonical_url` makes it ``postgresql``."""


def canonical_url(url: str) -> str:
    """``url`` as SQLAlchemy and MLflow take it: ``postgres://`` (and ``postgres+DRIVER://``)
    become ``postgresql...``; every other URL is returned unchanged."""
    scheme, sep, rest = url.partition("://")
    name, plus, driver = scheme.partition("+")
    if sep and name.lower() == POSTGRES_ALIAS:
        return f"postgresql{plus}{driver}://{rest}"
    return url


def default_storage_url(run_dir: Path) -> str:
    """The embedded Optuna storage: a SQLite file in the run folder."""
    return f"sqlite:///{(run_dir / OPTUNA_DB).resolve()}"


def default_tracking_uri(run_dir: Path) -> str:
    """The embedded MLflow store: a SQLite file in the run folder."""
    return f"sqlite:///{(run_dir / MLFLOW_DB).resolve()}"


def default_artifact_location(run_dir: Path) -> str:
    """The embedded MLflow store's artifact folder, as a file URI."""
    return (run_dir / ARTIFACTS).resolve().as_uri()


def redact(url: str) -> str:
    """The URL without its secrets, fit for messages: the password (``scheme://user:***@
    host``) and the value of every query parameter named like one (``?password=***``,
    ``&token=***``; see :data:`_SECRET_PARAM`)."""
    url = _SECRET_PARAM.sub(r"\1***", url)
    if "://" not in url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
        password, port = parts.password, parts.port
    except ValueError:
        return redact_text(url)
    if password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{port}" if port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redact_text(text: str) -> str:
    """Free text (an error message) with every ``://user:password@`` made ``user:***@``
    and every secret query parameter's value (``?password=...``) made ``***``."""
    return _SECRET_PARAM.sub(r"\1***", _USERINFO.sub(r"\1:***@", text))


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


@contextlib.contextmanager
def folder_lock(db: Path) -> Iterator[None]:
    """Hold the creation lock of the folder of SQLite file ``db`` (made if missing): an
    exclusive ``flock`` on the folder itself, so no file is added. The Optuna and MLflow
    stores of a run folder share it; reentrant only across processes, not within one."""
    db.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the flock

"""``initstudy dashboard``: optuna-dashboard on a study's Optuna store (:mod:`pipeline.dashboard`).

optuna-dashboard is the ``dashboard`` extra; without it, or without the study, the command
refuses in one line with exit code 2 before anything starts."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.base import (
    EXIT_FAILED,
    RunDir,
    Storage,
    app,
    check_study_name,
    console,
    err_console,
    fail,
    fail_with,
    read_storage,
)
from pipeline.safeout import term
from pipeline.urls import redact

INSTALL_HINT = 'pip install "initstudy[dashboard]" (or pip install optuna-dashboard)'


@app.command()
def dashboard(
    study: Annotated[str, typer.Argument(help="Study name.")],
    run_dir: RunDir = Path("runs"),
    storage: Storage = None,
    host: Annotated[
        str, typer.Option(help="Interface to bind (loopback by default; others warn).")
    ] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
) -> None:
    """Start optuna-dashboard on the study's Optuna store and print its URL (Ctrl-C stops)."""
    from pipeline import storage as st
    from pipeline.dashboard import installed, is_loopback, start_dashboard, study_url
    from pipeline.optuna_compat import study_id_by_name

    check_study_name(study)
    if port is not None and not 1 <= port <= 65535:
        fail(f"--port: a port from 1 to 65535, got {port}; leave it out for a free one")
    if not installed():
        fail(f"optuna-dashboard is not installed: {INSTALL_HINT}")
    url = read_storage(run_dir, storage)
    try:
        store = st.make_storage(url)
        st.load_existing_study(store, study)
        study_id = study_id_by_name(store, study)
    except st.StudyError as exc:
        fail_with(exc)
    if not is_loopback(host):
        err_console.print(
            f"[yellow]warning:[/] --host {term(host)} is not loopback: anyone who can reach "
            "this machine on that address can read, rename and delete the studies in this "
            "store through the dashboard (it has no login)",
            highlight=False,
        )
    try:
        server = start_dashboard(url, host=host, port=port)
    except RuntimeError as exc:
        fail(f"optuna-dashboard did not start: {exc}", code=EXIT_FAILED)
    with server:
        console.print(f"optuna-dashboard: {server.url}  (Ctrl-C stops it)", highlight=False)
        console.print(f"study {term(study)!r}: {study_url(server.url, study_id)}", highlight=False)
        console.print(f"store: {term(redact(url))}", highlight=False)
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()

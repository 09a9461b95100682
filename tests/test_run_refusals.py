"""What ``run`` (and the API's ``run_study``) refuses at start, in one line, before any
store is written, and how it ends (issue 28, items 6-11).

- a second study started in the same process (another thread) while one runs (item 6);
- two processes creating the MLflow SQLite store of a new run folder at once (item 7);
- a current folder that was deleted (item 8);
- ``ui --host`` off loopback (a warning), a study named like a deleted experiment, SQLite
  URL options, SIGTERM (item 9);
- ``--address`` at something that is not a Ray cluster's GCS (item 10);
- MLflow unreachable at start (refused unless ``--offline-tracking``) (item 11).

The driver and its stores are real; packs train in this process (``InProcessExecutor``)
where a test needs a study to train.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, Done
from ports import free_port

from pipeline import execution, urls
from pipeline.execution import InProcessExecutor
from pipeline.progress import Reporter
from pipeline.storage import StudyBusy, StudyCounts

TRIAL = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8, "val_size": 16}
TRIAL |= {"batches_per_epoch": 2, "max_epochs": 3, "stop_on_converge": False}
DOC = {"name": "tiny", "sampler": "grid", "trial": TRIAL, "space": {"seed": [0, 1]}}

# Each test runs the CLI in a process (a second or more with its imports), and several train
# a study, start a server or wait on a timeout: the whole module is the slow tier's.
pytestmark = pytest.mark.slow


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(DOC), encoding="utf-8")
    return path


def _one_error(done: Done, code: int, says: str) -> str:
    """The command printed one ``error:`` line saying ``says`` and exited ``code``."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code, done.stdout + done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    return lines[0]


def _no_store(run_dir: Path) -> None:
    assert not (run_dir / "optuna.db").exists() and not (run_dir / "mlflow.db").exists()


# --------------------------------------------------------------------------- item 6


def test_a_second_study_in_the_same_process_is_refused_and_the_first_finishes(
    tmp_path: Path, spec: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two threads of a notebook call ``run_study``: the second is refused with one line
    while the first trains (Ray is one per process: a second ``ray.init`` used to fail and
    tear the first study's Ray down, leaving its trials RUNNING); the first completes, and
    nothing of the second was created."""
    from models.train import train_pack
    from pipeline import api
    from pipeline import driver as drv

    training, release = threading.Event(), threading.Event()

    def gated(specs: Sequence[Any], device: str) -> list[Any]:
        training.set()
        release.wait(timeout=60)
        return train_pack(list(specs), device)

    monkeypatch.setattr(drv, "RayExecutor", lambda *a, **k: InProcessExecutor(1, gated))
    first: futures.Future[api.Study]
    with futures.ThreadPoolExecutor(1) as pool:
        first = pool.submit(api.run_study, spec, run_dir=tmp_path / "a", study_name="first")
        assert training.wait(timeout=120), "the first study never started training"
        try:
            with pytest.raises(StudyBusy) as refused:
                api.run_study(spec, run_dir=tmp_path / "b", study_name="second")
        finally:
            release.set()
        study = first.result(timeout=300)
    message = str(refused.value)
    assert "\n" not in message
    assert "study 'second' not started: study 'first' is running in this process" in message
    _no_store(tmp_path / "b")
    counts = study.counts
    assert counts.complete == counts.planned == 2 and counts.running == 0
    # the lock is free again: the second study runs now
    again = api.run_study(spec, run_dir=tmp_path / "b", study_name="second")
    assert again.counts.complete == 2


# --------------------------------------------------------------------------- item 7


def _create_store(uri: str, name: str, barrier: Any, results: Any) -> None:
    """In a fresh process: once every process is ready, open the MLflow store (a new one
    is created and migrated) and create an experiment in it; put the outcome on
    ``results``."""
    from pipeline.tracking_retry import create_experiment, new_client

    barrier.wait(timeout=300)
    try:
        client = new_client(uri)
        results.put(("ok", str(create_experiment(client, name, None, {}))))
    except Exception as exc:
        results.put(("error", f"{type(exc).__name__}: {exc}"[:500]))


def test_two_processes_creating_the_mlflow_store_at_once_both_succeed(tmp_path: Path) -> None:
    """Two drivers of different studies start on a new run folder: both create (and
    migrate) ``mlflow.db`` at once. MLflow's migrations collide (``table
    _alembic_tmp_experiments already exists``) unless creation is serialised."""
    uri = urls.default_tracking_uri(tmp_path / "run")
    context = multiprocessing.get_context("spawn")
    n = 3
    barrier, results = context.Barrier(n), context.Queue()
    procs = [
        context.Process(target=_create_store, args=(uri, f"study{i}", barrier, results))
        for i in range(n)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=300) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert [kind for kind, _ in outcomes] == ["ok"] * n, outcomes
    assert len({what for _, what in outcomes}) == n


# --------------------------------------------------------------------------- item 8


def test_a_deleted_current_folder_is_one_error_line(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    command = f'cd "{gone}" && rmdir "{gone}" && exec "$0" -m pipeline.cli list'
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["sh", "-c", command, sys.executable], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: the current folder no longer exists (it was deleted or moved); cd to an"
        " existing folder and run the command again"
    ]
    assert "FATAL" not in done.stdout + done.stderr


# --------------------------------------------------------------------------- item 9


def test_ui_off_loopback_warns_how_to_protect_it(
    tmp_path: Path, cli_here: Callable[..., Done], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import ui
    from pipeline.tracking import Tracker

    run_dir = tmp_path / "run"
    Tracker(urls.default_tracking_uri(run_dir)).open_study("tiny", "name: tiny\n", {}, {})
    started: list[str] = []

    def start_ui(uri: str, host: str, port: int | None) -> None:
        started.append(host)
        raise RuntimeError("not started by this test")

    monkeypatch.setattr(ui, "start_ui", start_ui)
    exposed = cli_here("ui", "tiny", "--run-dir", str(run_dir), "--host", "0.0.0.0")
    assert started == ["0.0.0.0"] and exposed.returncode == 1
    warning = exposed.stderr.splitlines()[0]
    assert warning.startswith("warning: --host 0.0.0.0: the MLflow UI has no login")
    assert "can delete runs" in warning and "ssh -L" in warning
    local = cli_here("ui", "tiny", "--run-dir", str(run_dir))
    assert started[-1] == "127.0.0.1" and "warning" not in local.stderr
    assert ui.exposure_warning("localhost") is None and ui.exposure_warning("[::1]") is None


def test_a_study_named_like_a_deleted_experiment_is_refused(
    tmp_path: Path,
    spec: Path,
    cli_here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
) -> None:
    """``initstudy delete`` renames a study's experiment NAME.deleted-ID and deletes it: a
    study of that name could never be logged (``sync`` cannot either), so it is refused
    before any store is created, not run with a warning that ``sync`` will log it."""
    from pipeline.tracking import Tracker

    run_dir = tmp_path / "run"
    tracker = Tracker(urls.default_tracking_uri(run_dir))
    experiment = tracker.open_study("tiny", "name: tiny\n", {}, {})
    assert experiment and tracker.delete_experiment("tiny")
    deleted = f"tiny.deleted-{tracker.experiment_id}"
    done = cli_here("run", str(spec), "--run-dir", str(run_dir), "--study-name", deleted)
    line = _one_error(done, 2, f"study {deleted!r}: MLflow at ")
    assert "holds a deleted experiment of that name" in line and "--study-name" in line
    assert not (run_dir / "optuna.db").exists() and not in_process_executor


@pytest.mark.parametrize("command", ["run", "status", "list"])
def test_sqlite_url_options_are_refused_not_ignored(
    tmp_path: Path, spec: Path, cli_here: Callable[..., Done], command: str
) -> None:
    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}?mode=ro"
    args = {"run": [str(spec)], "status": ["tiny"], "list": []}[command]
    done = cli_here(command, *args, "--run-dir", str(tmp_path / "run"), "--storage", url)
    line = _one_error(done, 2, f"--storage: {url!r}: SQLite URL options ('?mode=ro')")
    assert "drop the part from '?'" in line
    assert not db.exists() and not (tmp_path / "run").exists()


def test_sigterm_stops_the_run_and_prints_the_resume_command(
    tmp_path: Path,
    spec: Path,
    cli_here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM (a service manager, ``kill``) while packs train: the running trials are
    stopped at once, as by a second Ctrl-C, and ``run`` says what Ctrl-C says (what was
    kept, the resume command), exit code 143 (128 + 15). Without the driver's handler,
    this test's own (which raises) would end the run."""

    class Terminated(Exception):
        pass

    def unhandled(signum: int, frame: object) -> None:
        raise Terminated

    monkeypatch.setattr(execution, "PROGRESS_SECONDS", 0.0)
    real = Reporter.update
    sent: list[bool] = []

    def update(self: Reporter, counts: StudyCounts, live: Any = None) -> None:
        real(self, counts, live)
        if not sent and live is not None and live.epochs_done:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Reporter, "update", update)
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        run_dir = tmp_path / "run"
        done = cli_here("run", str(spec), "--run-dir", str(run_dir), "--pack-size", "1")
        assert signal.getsignal(signal.SIGTERM) is unhandled  # put back after the run
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sent and done.returncode == 143, done.stdout + done.stderr
    assert "SIGTERM: stopping the running trials now" in done.stderr
    assert "interrupted (SIGTERM: the running trials were stopped)" in done.stderr
    assert f"Resume with: initstudy run {spec} --run-dir {run_dir}" in done.stderr
    again = cli_here("run", str(spec), "--run-dir", str(run_dir))
    assert again.returncode == 0 and "2/2 trials complete" in again.stdout


# --------------------------------------------------------------------------- item 10


@pytest.fixture
def http_server() -> Iterator[str]:
    """A tiny HTTP server on 127.0.0.1 (as Ray's dashboard, on 8265, is); its HOST:PORT."""

    class Hello(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A port that takes connections and never says a word (a proxy, a firewall that
    accepts and drops); its HOST:PORT."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def grpc_server() -> Iterator[str]:
    """A gRPC server with no services (HTTP/2 answers, but not Ray's GCS); its HOST:PORT."""
    import grpc

    server = grpc.server(futures.ThreadPoolExecutor(1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None)


@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("http_server", "it does not answer as a gRPC server does"),
        ("silent_listener", "no reply to a gRPC handshake within 5 s"),
        ("grpc_server", "no Ray GCS answers there: gRPC UNIMPLEMENTED"),
    ],
)
def test_an_address_that_is_not_a_ray_cluster_is_refused_within_seconds(
    tmp_path: Path,
    spec: Path,
    cli_here: Callable[..., Done],
    request: pytest.FixtureRequest,
    where: str,
    says: str,
) -> None:
    address = request.getfixturevalue(where)
    run_dir = tmp_path / "run"
    started = time.monotonic()
    done = cli_here("run", str(spec), "--run-dir", str(run_dir), "--address", address)
    line = _one_error(done, 2, f"--address: {address} is not a Ray cluster ({says}")
    assert "ray://HOST:10001" in line
    assert time.monotonic() - started < 15
    _no_store(run_dir)
    assert not run_dir.exists()


# --------------------------------------------------------------------------- item 11


def test_mlflow_unreachable_at_start_is_refused_unless_offline(
    tmp_path: Path,
    spec: Path,
    cli_here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
) -> None:
    """A wrong ``--tracking-uri`` (nothing listens there) used to train everything and
    log nothing ("0 logged", exit 0); it is refused before any store. With
    ``--offline-tracking`` the study runs without MLflow, and ``sync`` logs it later."""
    run_dir = tmp_path / "run"
    uri = f"http://127.0.0.1:{free_port()}"
    done = cli_here("run", str(spec), "--run-dir", str(run_dir), "--tracking-uri", uri)
    line = _one_error(done, 2, f"--tracking-uri: MLflow cannot be reached (MLflow at {uri}")
    assert "--offline-tracking" in line and "initstudy sync tiny" in line
    _no_store(run_dir)
    assert not in_process_executor

    offline = cli_here("run", str(spec), "--run-dir", str(run_dir), "--offline-tracking")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "2 trained and 0 logged by this run" in offline.stdout
    assert "--offline-tracking: nothing is logged to MLflow by this run" in offline.stderr
    assert not (run_dir / "mlflow.db").exists()  # MLflow was not touched
    synced = cli_here("sync", "tiny", "--run-dir", str(run_dir))
    assert synced.returncode == 0 and "2 runs back-filled" in synced.stdout


def test_suite_is_refused_on_unreachable_mlflow_unless_offline(
    tmp_path: Path,
    spec: Path,
    cli_here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
) -> None:
    """``suite`` takes ``--offline-tracking`` as ``run`` does: refused on a tracking server
    that does not answer, run without MLflow with the flag."""
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "tiny.yaml").write_text(spec.read_text(encoding="utf-8"), encoding="utf-8")
    run_dir = tmp_path / "run"
    uri = f"http://127.0.0.1:{free_port()}"
    base = ("suite", str(folder), "--run-dir", str(run_dir), "--tracking-uri", uri)
    done = cli_here(*base)
    assert done.returncode == 2 and "MLflow cannot be reached" in done.stderr
    assert not in_process_executor
    offline = cli_here(*base, "--offline-tracking")
    assert offline.returncode == 0, offline.stdout + offline.stderr
    assert "2 trained and 0 logged by this run" in offline.stdout
    assert (run_dir / "reports" / "suite" / "report.md").is_file()


def test_the_api_takes_offline_tracking_too(
    tmp_path: Path, spec: Path, in_process_executor: list[InProcessExecutor]
) -> None:
    from pipeline import api
    from pipeline.storage import StudyError

    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(StudyError, match="offline-tracking"):
        api.run_study(spec, run_dir=tmp_path / "a", tracking_uri=uri)
    study = api.run_study(spec, run_dir=tmp_path / "a", tracking_uri=uri, offline_tracking=True)
    assert study.outcome is not None and study.outcome.logged == 0
    assert study.counts.complete == 2

"""``initstudy dashboard``: optuna-dashboard on a tiny study's real Optuna store, fetched
over HTTP, and the one-line refusals (not installed, no such study, bad options)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest

from pipeline.dashboard import installed, start_dashboard, study_url
from pipeline.storage import make_storage
from pipeline.urls import default_storage_url

ROOT = Path(__file__).resolve().parents[1]


def need_dashboard() -> None:
    """Skip without optuna-dashboard (the dev extra installs it); in CI, fail instead."""
    if installed():
        return
    why = 'needs optuna-dashboard: pip install ".[dashboard]"'
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but the test {why}")
    pytest.skip(why)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run folder whose optuna.db holds study ``tiny`` with three complete trials."""
    store = make_storage(default_storage_url(tmp_path))
    study = optuna.create_study(study_name="tiny", storage=store)
    for x in (0.1, 0.5, 0.9):
        study.enqueue_trial({"x": x})
        trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
        study.tell(trial, (trial.params["x"] - 0.3) ** 2)
    store.engine.dispose()
    return tmp_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, host: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_refusals_are_one_line_and_exit_2(run_dir: Path, cli_here) -> None:
    done = cli_here("dashboard", "nope", "--run-dir", str(run_dir))
    assert (
        done.returncode == 2 and "no study named 'nope'" in done.stderr and "tiny" in done.stderr
    )
    assert len(done.stderr.strip().splitlines()) == 1
    done = cli_here("dashboard", "tiny", "--run-dir", str(run_dir / "empty"))
    assert done.returncode == 2 and "no optuna.db" in done.stderr
    done = cli_here("dashboard", "tiny", "--run-dir", str(run_dir), "--port", "70000")
    assert done.returncode == 2 and "--port: a port from 1 to 65535" in done.stderr


def test_without_optuna_dashboard_it_says_how_to_install_it(
    run_dir: Path, cli_here, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(  # this interpreter without the package, as a plain install has
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "optuna_dashboard" else real(name, *a),
    )
    done = cli_here("dashboard", "tiny", "--run-dir", str(run_dir))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        'error: optuna-dashboard is not installed: pip install "initstudy[dashboard]" (or '
        "pip install optuna-dashboard)"
    )


@pytest.mark.slow
def test_serves_the_study_on_loopback_and_stop_frees_the_port(run_dir: Path) -> None:
    need_dashboard()
    port = free_port()
    with start_dashboard(default_storage_url(run_dir), port=port) as server:
        assert server.url == f"http://127.0.0.1:{port}"
        status, body = get(f"{server.url}/api/studies")
        assert status == 200
        studies = json.loads(body)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["tiny"]
        status, page = get(study_url(server.url, studies[0]["study_id"]))
        assert status == 200 and "<html" in page.lower()  # the dashboard's single-page app
        status, body = get(f"{server.url}/api/studies/{studies[0]['study_id']}")
        assert status == 200 and len(json.loads(body)["trials"]) == 3
        # a rebinding page's Host is refused: only loopback names with this port
        assert get(f"{server.url}/api/studies", host=f"evil.example:{port}")[0] == 403
        assert get(f"{server.url}/api/studies", host=f"localhost:{port}")[0] == 200
    assert refuses(port)


@pytest.mark.slow
def test_the_command_prints_the_study_url_and_a_wide_bind_warns(run_dir: Path) -> None:
    need_dashboard()
    port = free_port()
    argv = ["-m", "pipeline.cli", "dashboard", "tiny", "--run-dir", str(run_dir)]
    proc = subprocess.Popen(
        [sys.executable, *argv, "--host", "0.0.0.0", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines: list[str] = []  # what the command printed so far, read on a thread
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while refuses(port) or get(f"http://127.0.0.1:{port}/api/studies")[0] != 200:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the dashboard did not answer"
            time.sleep(0.5)
        # the server answers a moment before the command prints where to look
        while not any("/dashboard/studies/" in line for line in lines):
            assert proc.poll() is None and time.monotonic() < deadline, lines
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        reader.join(timeout=60)
    out, err = "".join(lines), proc.stderr.read()
    assert f"optuna-dashboard: http://127.0.0.1:{port}" in out
    assert f"http://127.0.0.1:{port}/dashboard/studies/" in out
    assert "warning: --host 0.0.0.0 is not loopback" in " ".join(err.split())
    assert refuses(port)  # SIGTERM stopped the server's whole group

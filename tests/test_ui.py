"""The MLflow UI on a study's tracking store: pipeline.ui's server and a real browser on it.

The browser test drives Debian's headless Chromium (``/usr/bin/chromium``, installed by
``.ci/install-browser``) through Playwright's Python package; nothing is downloaded at run
time. Without a browser it skips, except under ``CI=true`` where that is a failure.
Screenshots land in ``test-artifacts/ui/`` at the repository root: the experiment's runs
(with its description and the trials' training durations), a trial's loss curve and
artifacts, and the HTML report ``initstudy report`` writes.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke_cli

from pipeline.tracking import Tracker, read_trials
from pipeline.ui import UiServer, experiment_url, run_url, start_ui

ROOT = Path(__file__).resolve().parents[1]
STUDY = "smoke"
CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = ROOT / "test-artifacts" / "ui"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI containers run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_PREFERENCES = """
localStorage.setItem("mlflow.workflowType_v1", JSON.stringify("machine_learning"));
localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");
localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
"""
"""A user's saved UI choices: the "Model training" view, the assistant side panel closed."""


@pytest.fixture(scope="module")
def study(smoke_study) -> dict[str, Any]:
    """The session's smoke study (tests/conftest.py, run once through the real CLI); the UI
    only reads its tracking store."""
    uri = smoke_study.tracking_uri
    experiment_id = Tracker(uri).experiment_id_of(STUDY)
    assert experiment_id is not None
    trials = sorted(read_trials(uri, STUDY), key=lambda t: t["run_name"])
    assert len(trials) == 6
    return {"uri": uri, "experiment_id": experiment_id, "trials": trials}


@pytest.fixture(scope="module")
def ui(study: dict[str, Any]) -> Iterator[UiServer]:
    with start_ui(study["uri"]) as server:
        yield server


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """The screenshot folder, emptied once for this module's browser tests."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()
    return SCREENSHOTS


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        assert response.status == 200
        return json.load(response)


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_experiment_url() -> None:
    assert (
        experiment_url("http://127.0.0.1:5000/", "7")
        == "http://127.0.0.1:5000/#/experiments/7/runs"
    )
    assert run_url("http://h:1", "7", "abc") == "http://h:1/#/experiments/7/runs/abc"


@pytest.mark.slow
def test_unusable_tracking_uri_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="unsupported URI"):
        start_ui("bogus://nowhere", timeout=60)
    assert time.monotonic() - started < 30

    with pytest.raises(RuntimeError, match="no MLflow database"):
        start_ui(f"sqlite:///{tmp_path / 'missing.db'}")
    assert not (tmp_path / "missing.db").exists()


@pytest.mark.slow
def test_serves_health_on_loopback_and_stop_frees_the_port(study: dict[str, Any]) -> None:
    server = start_ui(study["uri"])
    try:
        assert server.url == f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(f"{server.url}/health", timeout=10) as response:
            assert response.status == 200
        # Bound to 127.0.0.1 only: not even another loopback address answers (on Linux,
        # where all of 127/8 is loopback; elsewhere the connect fails anyway).
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.2", server.port)) != 0
        # A foreign Host header (DNS rebinding) is refused.
        request = urllib.request.Request(
            f"{server.url}/ajax-api/2.0/mlflow/experiments/search?max_results=1",
            headers={"Host": f"attacker.example:{server.port}"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        with pytest.raises(RuntimeError, match="cannot listen"):
            start_ui(study["uri"], port=server.port)
    finally:
        server.stop()
    assert not server.running()
    assert refuses_connections(server.port)
    server.stop()  # idempotent


@pytest.mark.slow
def test_lists_a_trial_runs_local_artifacts(ui: UiServer, study: dict[str, Any]) -> None:
    trial = study["trials"][0]
    listing = get_json(f"{ui.url}/ajax-api/2.0/mlflow/artifacts/list?run_uuid={trial['run_id']}")
    assert listing["root_uri"].startswith("file://")
    assert {"diagnostics.json", "result.json"} <= {f["path"] for f in listing["files"]}
    with urllib.request.urlopen(
        f"{ui.url}/get-artifact?path=result.json&run_uuid={trial['run_id']}", timeout=30
    ) as response:
        assert json.load(response)["spec"]["seed"] == int(trial["params"]["seed"])


def browser_or_skip() -> Any:
    """Playwright's sync API, or skip (fail under CI=true) when the browser is missing."""
    missing = []
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (run .ci/install-browser)")
    if missing:
        reason = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI=true requires it")
        pytest.skip(reason)
    return sync_api


def assert_png(path: Path, min_width: int, min_height: int, min_bytes: int = 20_000) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= min_width and height >= min_height, (path, width, height)
    assert len(data) > min_bytes, f"{path} is only {len(data)} bytes: a blank page?"


@pytest.mark.slow
def test_browser_shows_trials_metrics_and_a_loss_curve(
    ui: UiServer, study: dict[str, Any], screenshots: Path
) -> None:
    sync_api = browser_or_skip()
    trials = study["trials"]
    experiment_id = study["experiment_id"]
    viewport = {"width": 1600, "height": 1000}

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport=viewport)
        page.set_default_timeout(30_000)
        page.add_init_script(UI_PREFERENCES)
        try:
            # The study's experiment: the parent run, expanded to one child run per trial.
            page.goto(experiment_url(ui.url, experiment_id))
            study_link = page.get_by_role("gridcell").get_by_role("link", name=STUDY, exact=True)
            study_link.wait_for()
            parent_row = page.get_by_role("row").filter(has=study_link)
            parent_row.get_by_role("button").first.click()  # the expand (+) button
            for trial in trials:
                page.get_by_role("link", name=trial["run_name"], exact=True).wait_for()
            # The experiment's description (from the spec) heads the page.
            page.get_by_text(f"initstudy study {STUDY}", exact=True).first.wait_for()
            # A trial's duration is its training time, not the time it took to log it.
            for trial in trials:
                link = page.get_by_role("link", name=trial["run_name"], exact=True)
                row_index = page.get_by_role("row").filter(has=link).get_attribute("row-index")
                shown = page.locator(
                    f"[role=row][row-index='{row_index}'] [col-id='duration']"
                ).inner_text()
                seconds = re.fullmatch(r"([\d.]+)(ms|s)", shown.strip())
                assert seconds is not None, shown
                value = float(seconds.group(1)) / (1000 if seconds.group(2) == "ms" else 1)
                wall = trial["metrics"]["wall_seconds"]  # the trial's share of its pack's time
                assert abs(value - wall) <= 0.2 * wall + 0.1, (shown, wall)

            # Metric columns, chosen the way a user does: Columns > search > tick.
            page.get_by_role("button", name="Columns", exact=True).click()
            tree = page.get_by_test_id("column-selector-tree")
            for metric in ("val_loss", "converged_epoch"):
                page.get_by_placeholder("Search columns").fill(metric)
                title = tree.locator("[class$='-tree-title']")
                title.filter(has_text=re.compile(f"^{metric}$")).click()
            page.keyboard.press("Escape")
            header = page.get_by_role("columnheader", name="val_loss", exact=True)
            header.first.wait_for()
            for trial in trials:
                link = page.get_by_role("link", name=trial["run_name"], exact=True)
                row_index = page.get_by_role("row").filter(has=link).get_attribute("row-index")
                cell = page.locator(
                    f"[role=row][row-index='{row_index}'] [col-id='metrics.`val_loss`']"
                )
                shown = float(cell.inner_text())
                assert math.isclose(shown, trial["metrics"]["val_loss"], rel_tol=1e-6), trial
            page.screenshot(path=SCREENSHOTS / "experiment-runs.png")

            # One trial's page: its val_loss curve on the Model metrics tab.
            trial = trials[-1]
            page.get_by_role("link", name=trial["run_name"], exact=True).click()
            page.get_by_role("tab", name="Model metrics").click()
            assert page.url.startswith(run_url(ui.url, experiment_id, trial["run_id"]))
            page.get_by_placeholder("Search metric charts").fill("val_loss")
            chart = (
                page.locator("div")
                .filter(has=page.get_by_text("val_loss", exact=True))
                .filter(has=page.locator(".js-plotly-plot"))
                .last
            )
            line = chart.locator(".scatterlayer path.js-line")
            line.first.wait_for()
            assert chart.get_by_text(f"{trial['run_name']} (val_loss)").count() == 1
            # One marker per epoch (val_loss is logged with step = epoch).
            points = chart.locator(".scatterlayer .point")
            assert points.count() == int(trial["metrics"]["epochs_run"])
            page.screenshot(path=SCREENSHOTS / "trial-val-loss.png")
            chart.screenshot(path=SCREENSHOTS / "trial-val-loss-chart.png")

            # Its artifacts tab lists the files the tracker logged.
            page.get_by_role("tab", name="Artifacts").click()
            page.get_by_text("result.json", exact=True).first.click()
            page.get_by_text('"data_seed"').first.wait_for()  # the file's content, previewed
            page.screenshot(path=SCREENSHOTS / "trial-artifacts.png")
        except Exception:
            page.screenshot(path=SCREENSHOTS / "failure.png")
            raise
        finally:
            browser.close()

    assert_png(SCREENSHOTS / "experiment-runs.png", viewport["width"], viewport["height"])
    assert_png(SCREENSHOTS / "trial-val-loss.png", viewport["width"], viewport["height"])
    assert_png(SCREENSHOTS / "trial-val-loss-chart.png", 200, 150, 5_000)
    assert_png(SCREENSHOTS / "trial-artifacts.png", viewport["width"], viewport["height"])


@pytest.fixture(scope="module")
def report_html(smoke_study, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html as ``initstudy report`` writes it, on a copy of the smoke study."""
    run_dir = smoke_study.copy_to(tmp_path_factory.mktemp("report-ui") / "run")
    assert invoke_cli(["report", STUDY, "--run-dir", str(run_dir)]) == 0
    html = run_dir / "reports" / STUDY / "report.html"
    assert html.is_file()
    return html


@pytest.mark.slow
def test_browser_shows_the_report(report_html: Path, screenshots: Path) -> None:
    sync_api = browser_or_skip()
    verdicts = json.loads((report_html.parent / "verdicts.json").read_text())
    viewport = {"width": 1400, "height": 1000}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport=viewport)
        page.set_default_timeout(30_000)
        try:
            page.goto(report_html.resolve().as_uri())
            page.get_by_role("heading", name="Verdicts", exact=True).wait_for()
            # The verdict table: one row per claim, its verdict in the verdict column.
            table = page.locator("h2:text-is('Verdicts') + table")
            cells = table.locator("td.verdict")
            assert cells.count() == len(verdicts) > 0
            assert [c.inner_text() for c in cells.all()] == [v["verdict"] for v in verdicts]
            for verdict in verdicts:
                assert table.get_by_role("cell", name=verdict["id"], exact=True).count() == 1
            # Every figure's image is decoded (a broken data: URI has no natural width).
            figures = page.locator("figure img")
            assert figures.count() >= 1
            widths = figures.evaluate_all("imgs => imgs.map(i => i.complete && i.naturalWidth)")
            assert all(w and w > 100 for w in widths), widths
            page.screenshot(path=screenshots / "report.png")
            figure = page.locator("figure").first
            figure.scroll_into_view_if_needed()
            figure.screenshot(path=screenshots / "report-figure.png")
            page.screenshot(path=screenshots / "report-full.png", full_page=True)
        except Exception:
            page.screenshot(path=screenshots / "report-failure.png")
            raise
        finally:
            browser.close()
    assert_png(screenshots / "report.png", viewport["width"], viewport["height"])
    assert_png(screenshots / "report-figure.png", 200, 150, 5_000)
    assert_png(screenshots / "report-full.png", viewport["width"], viewport["height"] + 1)


@pytest.mark.slow
def test_the_ui_command_says_where_to_look(
    study: dict[str, Any], smoke_study, cli_here, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(UiServer, "wait", lambda self: 0)  # as if Ctrl-C came at once
    done = cli_here("ui", STUDY, "--run-dir", str(smoke_study.run_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    out = " ".join(done.stdout.split())
    base = re.search(r"MLflow UI: (http://127\.0\.0\.1:\d+)", out)
    assert base is not None, out
    parent = Tracker(study["uri"]).attach_study(STUDY)
    assert parent is not None
    assert f"experiment: {experiment_url(base.group(1), study['experiment_id'])}" in out
    assert f"study run: {run_url(base.group(1), study['experiment_id'], parent)}" in out
    assert "sort by converged_epoch" in out and "NUMBER-INIT-T<seq_len>" in out


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, ppid, pgrp, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _live_pids(match: Callable[[list[str]], bool]) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _proc_stat(int(entry.name))
            if fields is not None and fields[0] != "Z" and match(fields):
                found.append(int(entry.name))
    return found


def _wait(check: Callable[[], object], what: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return value


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM])  # SIGHUP takes the same handler
def test_the_ui_command_stops_its_server_group_on_a_signal(
    smoke_study, tmp_path: Path, sig: signal.Signals
) -> None:
    run_dir = smoke_study.copy_to(tmp_path / "run")
    out = tmp_path / "ui.out"
    with out.open("wb") as sink:
        cli = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "ui", STUDY, "--run-dir", str(run_dir)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    servers: list[int] = []
    try:
        found = _wait(
            lambda: re.search(r"MLflow UI: http://127\.0\.0\.1:(\d+)", out.read_text()),
            "the UI's URL",
            90,
        )
        port = int(found.group(1))  # type: ignore[union-attr]
        servers = _live_pids(lambda f: int(f[1]) == cli.pid)  # the server: its child
        assert len(servers) == 1, servers
        group = servers[0]  # it leads its own process group
        assert _live_pids(lambda f: int(f[2]) == group)
        assert not refuses_connections(port)

        started = time.monotonic()
        cli.send_signal(sig)
        assert cli.wait(timeout=20) == 128 + sig, out.read_text()
        _wait(lambda: not _live_pids(lambda f: int(f[2]) == group), "the server group", 10)
        assert refuses_connections(port)
        assert time.monotonic() - started < 15
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.wait()
        for pid in _live_pids(lambda f: int(f[2]) in {cli.pid, *servers}):
            os.kill(pid, signal.SIGKILL)


# -- stop signals around the spawn (a real process in its own group as the server) ----------


def _sleeper(tmp_path: Path) -> UiServer:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    return UiServer(proc, "127.0.0.1", 1, tmp_path / "server.log")


def test_a_stop_signal_during_the_spawn_is_held_then_stops_the_server(tmp_path: Path) -> None:
    """SIGTERM between the spawn and the server object: held (nothing raised, the
    server not yet stoppable), then acted on when the server takes the signals: stopped,
    exit 143, the handler before put back."""
    from pipeline import ui

    before = signal.getsignal(signal.SIGTERM)
    server: UiServer | None = None
    with pytest.raises(SystemExit) as ended, ui._HeldSignals() as held:
        os.kill(os.getpid(), signal.SIGTERM)
        server = _sleeper(tmp_path)
        assert held.held == [signal.SIGTERM] and server.running()
        held.hand_to(server)
    assert ended.value.code == 128 + signal.SIGTERM
    assert server is not None and not server.running()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stop_signal_before_the_with_block_stops_the_server(tmp_path: Path) -> None:
    """Between start_ui's return and the caller's ``with``: the server's handler stops it
    itself (no block would), and a signal after that is the process's again."""
    before = signal.getsignal(signal.SIGHUP)
    server = _sleeper(tmp_path)
    server._guard()
    with pytest.raises(SystemExit) as ended:
        os.kill(os.getpid(), signal.SIGHUP)
    assert ended.value.code == 128 + signal.SIGHUP
    assert not server.running()
    assert signal.getsignal(signal.SIGHUP) is before

"""A study through a real cluster: PostgreSQL, the MLflow server and a two-node Ray cluster,
each a local process started by the deploy/ script its docker-compose.yml service runs.

The tests share one cluster (module scope) and run in order: a study driven from here,
the same kind of study submitted as a Ray job (deploy/study.sh, the compose ``study``
service), then a check that stopping the cluster leaves nothing running.
"""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from pipeline import storage as st
from pipeline.tracking import read_trials

from .conftest import DEPLOY, ROOT, SERVICE_SCRIPTS, LocalCluster, port_open

pytestmark = [
    pytest.mark.slow,
    # SQLAlchemy 2.1 warns about MLflow's ORM models when MLflow's SQL store is imported.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

CLI = [sys.executable, "-m", "pipeline.cli"]
STUDY = "cluster-tiny"
JOB_STUDY = "cluster-tiny-job"
TRIALS = 6
TINY_SPEC = f"""\
# A tiny study for the cluster tests: 2 init schemes x 3 seeds, a few seconds each.
name: {STUDY}
claim: "xavier converges 2-10x faster than uniform01"
sampler: grid
trial:
  task: adding
  cell: rnn_tanh
  hidden: 8
  batch_size: 16
  batches_per_epoch: 5
  max_epochs: 2
  val_size: 32
  optimizer: adam
  lr: 0.01
space:
  init: [xavier, uniform01]
  seq_len: [5]
  seed: [0, 1, 2]
"""


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "tiny.yaml"
    path.write_text(TINY_SPEC)
    return path


def run_cli(cluster: LocalCluster, *args: str, timeout: float = 240) -> str:
    """Run the initstudy CLI with the cluster's environment; return stdout, fail on error."""
    proc = subprocess.run(
        [*CLI, *args],
        env=cluster.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert proc.returncode == 0, f"initstudy {args[0]} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def complete_trials(cluster: LocalCluster, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(cluster.storage_url())
    try:
        found = optuna.load_study(study_name=study, storage=storage)
        return found.get_trials(states=(TrialState.COMPLETE,))
    finally:
        storage.remove_session()
        storage.engine.dispose()


def node_ids(trials: list[optuna.trial.FrozenTrial]) -> set[str]:
    """The Ray node ids stored in each trial's result ("<hostname>/<node id[:12]>")."""
    nodes = {json.loads(t.user_attrs[st.RESULT])["node"] for t in trials}
    assert all("/" in n for n in nodes), nodes
    return {n.rsplit("/", 1)[1] for n in nodes}


def test_study_runs_on_both_nodes(cluster: LocalCluster, spec: Path) -> None:
    """initstudy run against the cluster: trials spread over both nodes, stored in
    PostgreSQL, one MLflow run each on the server; status and results read it back."""
    out = run_cli(
        cluster,
        "run",
        str(spec),
        "--address",
        cluster.ray_address,
        "--storage",
        cluster.storage_url(),
        "--tracking-uri",
        cluster.mlflow_url,
        "--pack-size",
        "1",
    )
    assert f"{TRIALS}/{TRIALS} trials complete" in out
    assert "View run" not in out  # MLflow's per-run URL lines (and their extra request)

    trials = complete_trials(cluster, STUDY)
    assert len(trials) == TRIALS
    nodes = node_ids(trials)
    assert len(nodes) == 2, f"trials ran on {nodes}; expected both nodes"
    assert nodes == {n[:12] for n in cluster.alive_nodes()}
    assert {json.loads(t.user_attrs[st.RESULT])["device"] for t in trials} == {"cpu"}

    engine = sqlalchemy.create_engine(cluster.storage_url())
    try:
        with engine.connect() as conn:
            names = conn.execute(sqlalchemy.text("SELECT study_name FROM studies")).scalars()
            assert STUDY in set(names)
    finally:
        engine.dispose()

    runs = read_trials(cluster.mlflow_url, STUDY)
    assert len(runs) == TRIALS
    assert {r["status"] for r in runs} == {"FINISHED"}
    assert sorted(r["key"] for r in runs) == sorted(t.user_attrs[st.KEY] for t in trials)

    status = run_cli(cluster, "status", STUDY, "--storage", cluster.storage_url())
    assert re.search(rf"complete\W+{TRIALS}\b", status), status

    table = run_cli(
        cluster, "results", STUDY, "--storage", cluster.storage_url(), "--format", "csv"
    )
    rows = list(csv.DictReader(io.StringIO(table)))
    assert len(rows) == TRIALS
    assert {r["trial_number"] for r in rows} == {str(t.number) for t in trials}
    assert {r["node"].rsplit("/", 1)[1] for r in rows} == nodes
    assert {r["device"] for r in rows} == {"cpu"}


def test_study_as_ray_job(cluster: LocalCluster, spec: Path) -> None:
    """deploy/study.sh (the compose ``study`` service) submits the driver as a Ray job
    through the dashboard, with token authentication, and the study completes."""
    env = cluster.env(
        **cluster.postgres.env(),
        RAY_DASHBOARD_URL=cluster.dashboard_url,
        MLFLOW_TRACKING_URI=cluster.mlflow_url,
        STUDY_WORKING_DIR=str(ROOT),
    )
    proc = subprocess.run(
        [
            str(DEPLOY / SERVICE_SCRIPTS["study"]),
            str(spec),
            "--study-name",
            JOB_STUDY,
            "--pack-size",
            "1",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"study.sh failed:\n{proc.stdout}\n{proc.stderr}"
    assert f"study '{JOB_STUDY}': {TRIALS}/{TRIALS} trials complete" in proc.stdout
    assert "succeeded" in proc.stdout + proc.stderr
    assert cluster.postgres.password not in proc.stdout + proc.stderr

    trials = complete_trials(cluster, JOB_STUDY)
    assert len(trials) == TRIALS
    assert len(node_ids(trials)) == 2
    assert len(read_trials(cluster.mlflow_url, JOB_STUDY)) == TRIALS


def test_ray_dashboard_needs_the_token(cluster: LocalCluster) -> None:
    assert cluster.dashboard("/api/version", token=None)[0] == 401
    assert cluster.dashboard("/api/version", token="not-the-token")[0] in (401, 403)
    assert cluster.dashboard("/api/version")[0] == 200


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--cpus-per-trial", "2", "one node of the Ray cluster and its largest node has 1"),
        ("--gpus-per-trial", "1", "one node of the Ray cluster and it has no GPU"),
    ],
)
def test_a_pack_no_node_can_place_is_refused_before_any_store(
    cluster: LocalCluster, spec: Path, tmp_path: Path, option: str, value: str, says: str
) -> None:
    """Two 1-CPU nodes have 2 CPUs between them, but a 2-CPU pack fits on neither: Ray
    would wait forever. Refused in one line once connected, before a store exists."""
    run_dir = tmp_path / "runs"
    args = ["run", str(spec), "--address", cluster.ray_address, "--run-dir", str(run_dir)]
    proc = subprocess.run(
        [*CLI, *args, option, value],
        env=cluster.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {option}: {value} asked for"), lines
    assert says in lines[0]
    assert not (run_dir / "optuna.db").exists() and not (run_dir / "mlflow.db").exists()


def test_stopping_leaves_nothing_running(cluster: LocalCluster) -> None:
    """Runs last: stop the cluster; no process of ours is left and every port is closed."""
    assert cluster.processes(), "the cluster should be running before it is stopped"
    cluster.stop()
    assert cluster.leftovers() == []
    assert not any(port_open(p) for p in cluster.ports.values())

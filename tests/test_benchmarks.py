"""Smoke runs of the benchmark scripts with tiny budgets: each exits 0, prints its markdown
and writes a valid result file with the machine block and finite, positive numbers.

Speed targets are the scripts' business (machines are noisy); nothing here asserts them.
The three scripts start together and run side by side to keep this module short.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TIMEOUT = 170

sys.path.insert(0, str(BENCH))
import bench_common as bc  # noqa: E402


def _tune_missing() -> str | None:
    try:
        import ray.tune  # noqa: F401
        from ray.air.integrations.mlflow import MLflowLoggerCallback  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError as exc:
        return f"Ray Tune is not installed ({exc}); pip install -e '.[bench]'"
    return None


TUNE_MISSING = _tune_missing()
SCRIPTS = {
    "packing": ["--quick"],
    "overhead": ["--quick"],
    "vs_tune": ["--quick"],
    "efficiency": ["--quick"],
    "scale": ["--quick"],
    "ctrl_c": ["--quick"],
}


@dataclass
class Launched:
    proc: subprocess.Popen[str]
    out: Path


@pytest.fixture(scope="module")
def launched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Launched]]:
    """Start every script at once (each in its own process) and hand them to the tests."""
    tmp = tmp_path_factory.mktemp("bench")
    running = {}
    for name, extra in SCRIPTS.items():
        if name == "vs_tune" and TUNE_MISSING:
            continue
        out = tmp / f"{name}.json"
        proc = subprocess.Popen(
            [sys.executable, str(BENCH / f"{name}.py"), *extra, "--out", str(out)],
            cwd=tmp,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        running[name] = Launched(proc, out)
    yield running
    for item in running.values():
        if item.proc.poll() is None:
            item.proc.kill()
            item.proc.communicate()


def finished(launched: dict[str, Launched], name: str) -> tuple[str, dict[str, Any]]:
    """Wait for a script; check its exit code and result file; return (stdout, result)."""
    item = launched[name]
    stdout, stderr = item.proc.communicate(timeout=TIMEOUT)
    assert item.proc.returncode == 0, f"{name} exited {item.proc.returncode}:\n{stderr[-3000:]}"

    def refuse(constant: str) -> None:
        raise ValueError(f"{name}: non-standard JSON constant {constant}")

    doc = json.loads(item.out.read_text(), parse_constant=refuse)
    assert tuple(doc) == bc.RESULT_KEYS
    assert doc["benchmark"] == name
    machine = doc["machine"]
    assert set(bc.MACHINE_KEYS) <= set(machine)
    assert machine["cores"] >= 1 and machine["cpu_model"]
    assert set(machine["versions"]) == set(bc.PACKAGES)
    assert all(v and v != "not installed" for v in machine["versions"].values())
    for t in doc["targets"]:
        assert {"name", "rule", "value", "passed"} <= set(t)
        assert t["passed"] in (True, False, None)
    assert doc["markdown"].strip() in stdout
    assert "| " in stdout and any(w in stdout for w in ("PASS", "FAIL", "SKIPPED"))
    return stdout, doc


def positive(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_packing(launched: dict[str, Launched]) -> None:
    _, doc = finished(launched, "packing")
    rows = doc["results"]
    assert [(r["k"], r["hidden"], r["seq_len"]) for r in rows] == [(1, 16, 5), (4, 16, 5)]
    for r in rows:
        for key in (
            "packed_steps_per_s",
            "one_by_one_steps_per_s",
            "speedup",
            "speedup_cpu_time",
            "packed_peak_rss_mib",
            "one_by_one_peak_rss_mib",
            "model_steps",
            "flops_per_model_step",
            "packed_gflops",
            "one_by_one_gflops",
            "packed_gflops_cpu_time",
            "one_by_one_gflops_cpu_time",
            "packed_fraction_of_peak",
            "one_by_one_fraction_of_peak",
            "packed_fraction_of_peak_cpu_time",
            "one_by_one_fraction_of_peak_cpu_time",
        ):
            assert positive(r[key]), (key, r[key])
        # Forward and backward make up the count; the rate is the count times steps/s.
        assert r["flops_per_model_step"] == (
            r["flops_per_model_step_forward"] + r["flops_per_model_step_backward"]
        )
        assert math.isclose(
            r["packed_gflops"], r["flops_per_model_step"] * r["packed_steps_per_s"] / 1e9
        )
    settings = doc["settings"]
    assert settings["torch_threads"] == 1
    peak = settings["peak"]
    for key in ("gflops", "gflops_cpu_time", "gflops_before_grid", "gflops_after_grid"):
        assert positive(peak[key]), (key, peak[key])
    assert peak["gflops"] == max(peak["gflops_before_grid"], peak["gflops_after_grid"])
    for r in rows:
        assert math.isclose(r["packed_fraction_of_peak"], r["packed_gflops"] / peak["gflops"])
    assert isinstance(settings["load_avg_1m_end"], float)
    assert "flops_counted" in settings and "GFLOP/s" in doc["markdown"]


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "rnn_linear", "lstm", "gru"])
def test_packing_flop_count_matches_torch_counter(cell: str) -> None:
    """packing.step_flops against torch.utils.flop_counter on one forward and backward of
    a small pack, as models.train runs them (fused recurrences, the loss on the last step).

    FlopCounterMode counts only matmul-like ops (no elementwise gate ops) and does not
    count the in-place ``baddbmm_`` the fused LSTM and GRU use, so it is given baddbmm's
    formula for it. Tolerance: the forward agrees exactly; forward + backward within 3 %
    for every cell (exactly for the Elman cells): the fused LSTM and GRU backward get the
    bias gradient from a column of ones appended to the inputs of the dWxh product,
    2 T B GH flops per member that the analytic count leaves out (the bias is not a
    matmul), under 3 % at this shape and under 1 % at hidden 64, length 10.
    """
    import packing
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from models.cells import CELLS, PackedRNN
    from models.tasks import get_task

    def baddbmm_flops(_self: Any, a: Any, b: Any, *_: Any, **__: Any) -> int:
        batch, m, k = a
        return 2 * batch * m * k * b[-1]

    members, hidden, seq_len, batch = 3, 32, 8, 8
    task = get_task("adding", seq_len, None)
    model = PackedRNN(members, cell, task.input_dim, hidden, task.output_dim)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.2, generator=gen)
    x, y = task.sample(torch.Generator().manual_seed(1), batch)
    x, y = (t.unsqueeze(0).expand(members, *t.shape).contiguous() for t in (x, y))
    mapping = {torch.ops.aten.baddbmm_: baddbmm_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as fwd:
        outputs, _ = model(x, task.loss_steps)
    loss = task.loss(outputs, y, per_member=True).sum()
    with FlopCounterMode(display=False, custom_mapping=mapping) as bwd:
        loss.backward()
    counted = packing.step_flops(cell, hidden, seq_len, batch)
    assert fwd.get_total_flops() == members * counted["forward"]
    measured = fwd.get_total_flops() + bwd.get_total_flops()
    assert measured >= members * counted["total"]
    assert measured == pytest.approx(members * counted["total"], rel=0.03)
    if CELLS[cell].gates == 1:
        assert measured == members * counted["total"]


def test_overhead(launched: dict[str, Launched]) -> None:
    _, doc = finished(launched, "overhead")
    timing = doc["results"]["timing"]
    assert timing["trials"] == 10
    for key in ("wall_s", "ray_startup_s", "training_s", "pipeline_ms_per_trial", "setup_s"):
        assert positive(timing[key]), (key, timing[key])
    assert timing["wall_s"] > timing["ray_startup_s"] + timing["training_s"]
    # Every store call a trial costs was timed, once per trial (attributes: result, outcome).
    calls = {c["call"].rsplit(".", 1)[-1]: c for c in timing["store_calls"]}
    assert calls["_create_new_trial"]["calls"] == 10
    assert calls["set_trial_user_attr"]["calls"] == 20
    assert calls["set_trial_state_values"]["calls"] == 10
    assert calls["log_artifacts"]["calls"] == 10
    for c in calls.values():
        assert positive(c["ms_per_call"]), c
    profile = doc["results"]["profile"]
    groups = {g["group"]: g for g in profile["groups"]}
    assert {"optuna", "mlflow", "ray.wait", "ray.init", "initstudy"} <= set(groups)
    for g in groups.values():
        assert math.isfinite(g["seconds"]) and g["seconds"] >= 0
    assert profile["attributed_s"] <= profile["profiled_wall_s"] * 1.05
    assert doc["targets"][0]["passed"] in (True, False)


def test_overhead_cluster(tmp_path: Path) -> None:
    """``overhead.py --cluster --quick``: PostgreSQL and an MLflow server started on
    loopback, 10 trials through them, every server stopped and its folder removed."""
    if not list(Path("/").glob("usr/lib/postgresql/*/bin/pg_ctl")):
        reason = "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    out = tmp_path / "overhead_cluster.json"
    args = ["--cluster", "--quick", "--no-profile", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "overhead.py"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert tuple(doc) == bc.RESULT_KEYS and doc["markdown"].strip() in proc.stdout
    assert doc["settings"]["cluster"] and doc["settings"]["storage"].startswith("postgresql")
    assert doc["settings"]["tracking"].startswith("http://127.0.0.1:")
    timing = doc["results"]["timing"]
    assert timing["trials"] == 10 and positive(timing["trials_per_s"])
    calls = {c["call"].rsplit(".", 1)[-1]: c for c in timing["store_calls"]}
    assert calls["_create_new_trial"]["calls"] == 10 and calls["log_artifacts"]["calls"] == 10
    assert calls["set_terminated"]["calls"] >= 10
    servers = timing["servers"]
    assert servers["left_after_stop"] == []
    assert not Path(servers["folder"]).exists()
    for port in servers["ports"].values():  # nothing listens there any more
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex(("127.0.0.1", port)) != 0, port
    assert [t["passed"] in (True, False) for t in doc["targets"]] == [True, True]


def test_vs_tune(launched: dict[str, Launched]) -> None:
    if TUNE_MISSING:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {TUNE_MISSING}")
        pytest.skip(TUNE_MISSING)
    _, doc = finished(launched, "vs_tune")
    r = doc["results"]
    assert r["trials"] == 2 and len(r["per_trial"]) == 2
    for key in ("initstudy_wall_s", "tune_wall_s", "tune_over_initstudy"):
        assert positive(r[key]), (key, r[key])
    for t in r["per_trial"]:
        assert t["initstudy"] is not None and t["tune"] is not None
        assert positive(t["initstudy"]["final_val_loss"])
        assert t["equal"] in (True, False)
    assert 0 <= r["equal_results"] <= 2


def test_efficiency(launched: dict[str, Launched]) -> None:
    stdout, doc = finished(launched, "efficiency")
    r = doc["results"]
    assert (r["trials"], r["failed_trials"], r["sessions"]) == (8, 0, 1) and r["measurable"]
    for key in ("command_wall_s", "wall_s", "startup_s", "training_s", "floor_s"):
        assert positive(r[key]), (key, r[key])
    assert r["wall_s"] < r["command_wall_s"] and r["startup_s"] < r["wall_s"]
    assert r["floor_s"] == pytest.approx(r["training_s"] / r["slots"] + r["startup_s"])
    assert r["wall_over_floor"] == pytest.approx(r["wall_s"] / r["floor_s"])
    assert r["slots"] >= 1 and r["packs"] >= 1  # the slots the driver recorded
    assert 0 < r["longest_pack_s"] <= r["training_s"]
    assert r["bound_s"] >= r["floor_s"] - 1e-9
    assert r["line"].startswith(f"Wall {r['wall_s']:.1f} s; training floor")
    assert r["line"] in stdout
    assert doc["targets"][0]["passed"] in (True, False)


def test_scale(launched: dict[str, Launched]) -> None:
    _, doc = finished(launched, "scale")
    assert doc["settings"]["sizes"] == [20]
    (row,) = doc["results"]
    assert row["n"] == row["complete"] == 20
    for key in (
        "wall_s",
        "first_result_s",
        "created_per_s",
        "trials_per_s",
        "ms_per_trial",
        "optuna_bytes_per_trial",
        "mlflow_bytes_per_trial",
        "result_bytes_per_trial",
        "stores_bytes_per_trial_without_results",
        "driver_peak_rss_mib",
    ):
        assert positive(row[key]), (key, row[key])
    assert row["first_result_s"] < row["wall_s"]
    assert row["result_bytes_per_trial"] < row["optuna_bytes_per_trial"]
    names = [t["name"] for t in doc["targets"]]
    assert names == [
        "first result",
        "trials created",
        "storage per finished trial",
        "flat overhead",
    ]
    assert doc["targets"][3]["passed"] is None  # one N: nothing to compare


def test_ctrl_c(launched: dict[str, Launched]) -> None:
    stdout, doc = finished(launched, "ctrl_c")
    points = doc["results"]["points"]
    assert [p["delay_s"] for p in points] == [1.0, 4.0]
    for p in points:
        assert p["returncode"] == 130, p  # every SIGINT ends the run as interrupted
        assert positive(p["answer_s"]) and positive(p["exit_s"])
        assert p["answer_s"] <= p["exit_s"] + 1e-9
        assert p["ray"] in ("up", "not started") and p["left_processes"] >= 0
    assert [t["name"] for t in doc["targets"]] == ["answer", "exit", "left"]
    assert "### Ctrl-C during the start of `smoke.yaml`" in stdout

"""Studies at scale: N near-no-op trials through the real command, for growing N.

Run: python benchmarks/scale.py                  (N = 1,000, 10,000 and 50,000)
     python benchmarks/scale.py --full           (and 100,000)
     python benchmarks/scale.py --sizes 1000     (chosen sizes)
     python benchmarks/scale.py --quick          (N = 20; the tests)

Each N is one grid study, ``init: [xavier, uniform01]`` x ``seed: {low: 0, high: N/2 - 1}``,
of trials that do almost nothing (adding task, hidden 4, seq_len 5, one batch of 8, one
epoch, 8 validation sequences), run from scratch through ``initstudy run SPEC --run-dir
TMP --yes`` (embedded Ray, Optuna and MLflow on SQLite, default packing). Measured:

- time to the first result: from the command's start to the first trial told COMPLETE (an
  upper bound on the first pack's start: imports, the stores' opening, Ray's start and
  that pack's training come before it);
- trials created per second: N over the span of the trials' creation times (the driver
  creates them as slots need them, so this is paced by the training);
- trials per second and ms per trial: over the span from the first result to the last;
- bytes per trial: ``optuna.db`` and ``mlflow.db`` (with their ``-wal`` files) over N,
  and, of ``optuna.db``, the stored results (each trial's TrialResult, histories
  included) separately; the artifacts folder separately;
- the driver's peak RSS: the command's own process (``ru_maxrss`` from ``wait4``; the Ray
  workers are other processes).

Targets (issue 27): first result within 30 s; >= 100 trials created per second; <= 20 KB
per finished trial in the two stores without the stored results; ms per trial at the
largest N within 1.2x of that at the smallest.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

NAME = "scale"
SIZES = (1_000, 10_000, 50_000)
FULL_SIZES = (*SIZES, 100_000)
QUICK_SIZES = (20,)
TRIAL = {
    "task": "adding",
    "hidden": 4,
    "seq_len": 5,
    "batch_size": 8,
    "batches_per_epoch": 1,
    "max_epochs": 1,
    "val_size": 8,
}
FIRST_RESULT_S = 30.0
CREATED_PER_S = 100.0
BYTES_PER_TRIAL = 20 * 1024
FLAT_RATIO = 1.2


def spec_for(n: int, folder: Path) -> Path:
    """The study of ``n`` near-no-op trials (n even), written into ``folder``."""
    doc = {
        "name": f"scale{n}",
        "description": f"benchmarks/scale.py: {n} near-no-op trials",
        "sampler": "grid",
        "trial": TRIAL,
        "space": {"init": ["xavier", "uniform01"], "seed": {"low": 0, "high": n // 2 - 1}},
    }
    path = folder / f"scale{n}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_command(command: list[str], log: Path) -> tuple[float, float, int]:
    """Run ``command``; its start (epoch seconds), wall time and peak RSS in bytes."""
    with log.open("w") as out:
        started, t0 = time.time(), time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=bc.child_env())
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{' '.join(command)} exited {code}; see {log}:\n{tail}")
    return started, wall, int(usage.ru_maxrss) * 1024


def file_bytes(path: Path) -> int:
    """A SQLite file's size with its write-ahead log."""
    wal = path.with_name(path.name + "-wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _seconds(text: str) -> float:
    """Epoch seconds of Optuna's stored datetime (naive UTC in its RDB storage)."""
    from datetime import UTC

    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def read_trials(db: Path) -> dict[str, Any]:
    """Counts, creation and completion times, and the stored results' bytes, by SQL."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT state, datetime_start, datetime_complete FROM trials"
        ).fetchall()
        results = conn.execute(
            "SELECT coalesce(sum(length(value_json)), 0) FROM trial_user_attributes"
            " WHERE key = 'initstudy.result'"
        ).fetchone()[0]
    starts = sorted(_seconds(s) for _, s, _ in rows if s)
    ends = sorted(_seconds(c) for state, _, c in rows if c and state == "COMPLETE")
    return {
        "trials": len(rows),
        "complete": sum(1 for state, _, _ in rows if state == "COMPLETE"),
        "starts": starts,
        "ends": ends,
        "result_bytes": int(results),
    }


def measure(n: int, folder: Path) -> dict[str, Any]:
    """One study of ``n`` trials from scratch; its row of the result."""
    spec = spec_for(n, folder)
    run_dir = folder / f"run{n}"
    started, wall, rss = run_command(bc.initstudy_run(spec, run_dir, "--yes"), folder / f"{n}.log")
    t = read_trials(run_dir / "optuna.db")
    optuna_b, mlflow_b = file_bytes(run_dir / "optuna.db"), file_bytes(run_dir / "mlflow.db")
    done = max(1, t["complete"])
    span = (t["ends"][-1] - t["ends"][0]) if len(t["ends"]) > 1 else None
    created = (t["starts"][-1] - t["starts"][0]) if len(t["starts"]) > 1 else None
    per_trial = 1000 * span / (len(t["ends"]) - 1) if span else None
    stores = optuna_b + mlflow_b - t["result_bytes"]
    return {
        "n": n,
        "complete": t["complete"],
        "wall_s": wall,
        "first_result_s": (t["ends"][0] - started) if t["ends"] else None,
        "created_per_s": (len(t["starts"]) - 1) / created if created else None,
        "trials_per_s": 1000 / per_trial if per_trial else None,
        "ms_per_trial": per_trial,
        "optuna_bytes_per_trial": optuna_b / done,
        "mlflow_bytes_per_trial": mlflow_b / done,
        "result_bytes_per_trial": t["result_bytes"] / done,
        "stores_bytes_per_trial_without_results": stores / done,
        "artifact_bytes_per_trial": folder_bytes(run_dir / "mlartifacts") / done,
        "driver_peak_rss_mib": rss / 2**20,
    }


def targets_of(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    largest, smallest = rows[-1], rows[0]
    first = max((r["first_result_s"] or float("inf")) for r in rows)
    created = min((r["created_per_s"] or 0.0) for r in rows)
    stored = max(r["stores_bytes_per_trial_without_results"] for r in rows)
    ratio = None
    if len(rows) > 1 and largest["ms_per_trial"] and smallest["ms_per_trial"]:
        ratio = largest["ms_per_trial"] / smallest["ms_per_trial"]
    return [
        bc.target(
            "first result", f"<= {FIRST_RESULT_S:.0f} s at every N", first, first <= FIRST_RESULT_S
        ),
        bc.target("trials created", f">= {CREATED_PER_S:.0f} per s", created, created >= 100),
        bc.target(
            "storage per finished trial",
            f"<= {BYTES_PER_TRIAL} bytes, optuna.db + mlflow.db without the stored results",
            stored,
            stored <= BYTES_PER_TRIAL,
        ),
        bc.target(
            "flat overhead",
            f"ms per trial at N={largest['n']} <= {FLAT_RATIO}x that at N={smallest['n']}",
            ratio,
            None if ratio is None else ratio <= FLAT_RATIO,
        ),
    ]


def markdown(rows: list[dict[str, Any]], targets: list[dict[str, Any]], m: dict[str, Any]) -> str:
    def f(value: Any, digits: int = 1) -> str:
        return "n/a" if value is None else f"{value:,.{digits}f}"

    headers = [
        "N",
        "first result (s)",
        "created/s",
        "trials/s",
        "ms/trial",
        "optuna.db B/trial",
        "mlflow.db B/trial",
        "of which results B/trial",
        "driver peak RSS (MiB)",
        "wall (s)",
    ]
    body = [
        [
            f"{r['n']:,}",
            f(r["first_result_s"]),
            f(r["created_per_s"]),
            f(r["trials_per_s"]),
            f(r["ms_per_trial"]),
            f(r["optuna_bytes_per_trial"], 0),
            f(r["mlflow_bytes_per_trial"], 0),
            f(r["result_bytes_per_trial"], 0),
            f(r["driver_peak_rss_mib"], 0),
            f(r["wall_s"]),
        ]
        for r in rows
    ]
    return "\n\n".join([bc.table(headers, body), bc.target_lines(targets), bc.machine_line(m)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"N = {QUICK_SIZES} (the tests)")
    parser.add_argument("--full", action="store_true", help=f"N = {FULL_SIZES}")
    parser.add_argument("--sizes", type=int, nargs="+", help="these N (even numbers)")
    bc.add_common_args(parser)
    args = parser.parse_args(argv)
    sizes = args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES if args.full else SIZES)
    if any(n < 4 or n % 2 for n in sizes):
        parser.error(f"--sizes: each N must be an even number >= 4 (got {sizes})")
    m = bc.machine()
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        for n in sorted(sizes):
            rows.append(measure(n, Path(tmp)))
            print(f"N={n:,}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    targets = targets_of(rows)
    text = markdown(rows, targets, m)
    print(text)
    settings = {"sizes": sorted(sizes), "trial": TRIAL, "command": "initstudy run SPEC --yes"}
    variant = "quick" if args.quick else ""
    bc.write_result(NAME, args.out, m, settings, rows, targets, text, variant)
    return bc.finish(targets, args.check)


if __name__ == "__main__":
    raise SystemExit(main())

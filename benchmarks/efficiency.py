"""Study efficiency: a real study's wall time against its own training floor.

Run: python benchmarks/efficiency.py                          (studies/headline.yaml)
     python benchmarks/efficiency.py --spec studies/smoke.yaml
     python benchmarks/efficiency.py --quick                   (8 tiny trials; the tests)

The study runs from scratch through the real command, ``initstudy run SPEC --run-dir TMP``
(embedded Ray, Optuna and MLflow on SQLite, default packing, ``--workers`` CPUs or all),
so it is one driver run. Its efficiency is then read by
:func:`pipeline.results.load_efficiency`, the function behind the report's footer, from
the run the driver recorded (``initstudy.sessions``) and the COMPLETE trials' results:

- wall: the recorded run, from the entry of ``Driver.run`` to the last pack told;
- start-up: from then to the first pack's start on a worker (``extra["started_at"]``):
  opening the stores, ``ray.init``, the workers' start, the first submission;
- training: the packs' own time on the workers (``wall_seconds``, each pack once);
- slots: as the driver recorded them (``Executor.capacity``);
- floor = training / slots + start-up, and wall / floor.   Target: wall <= 1.15 x floor.
  The longest pack is given too: ``max(longest pack, training / slots) + start-up`` is a
  tighter bound, shown beside the floor.

The command's own wall time is given too: it adds the imports, the CLI's checks,
``ray.shutdown``, the back-fill and the verdicts, which the run's wall leaves out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

NAME = "efficiency"
TARGET_RATIO = 1.15
DEFAULT_SPEC = bc.ROOT / "studies" / "headline.yaml"
QUICK_BASE = bc.ROOT / "studies" / "smoke.yaml"
QUICK_TRIAL = {"batches_per_epoch": 5, "max_epochs": 3, "val_size": 64}
"""Overrides that make the smoke study's trials tiny for ``--quick``."""
QUICK_SPACE = {"init": ["xavier", "uniform01"], "hidden": [4], "seed": [0, 1, 2, 3]}


def quick_spec(folder: Path) -> Path:
    """The ``--quick`` spec: the smoke study, eight tiny trials, in ``folder``."""
    return bc.quick_spec(QUICK_BASE, folder, "efficiency_quick", QUICK_TRIAL, QUICK_SPACE)


def run_study(spec_path: Path, run_dir: Path, workers: int | None, log: Path) -> float:
    """Run ``initstudy run SPEC --run-dir DIR [--workers N]``; return its wall time."""
    extra = ["--workers", str(workers)] if workers else []
    return bc.timed_run(bc.initstudy_run(spec_path, run_dir, *extra), log)


def read_efficiency(study_name: str, run_dir: Path) -> tuple[Any, int]:
    """The study's efficiency (:func:`pipeline.results.load_efficiency`) and its number of
    FAILED trials (their time is in no pack's training), from the Optuna storage."""
    from optuna.trial import TrialState

    from pipeline import storage as st
    from pipeline import urls
    from pipeline.results import load_efficiency

    url = urls.default_storage_url(run_dir)
    study = st.load_existing_study(st.make_storage(url), study_name)
    failed = len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    return load_efficiency(study_name, url), failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=None, help="study spec (default headline)")
    parser.add_argument("--quick", action="store_true", help="8 tiny trials (for the tests)")
    parser.add_argument(
        "--workers", type=int, default=None, help="CPUs for the embedded Ray (default: all)"
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folder here")
    bc.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.quick and args.spec is not None:
        parser.error("--quick runs its own tiny spec; leave out --spec")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers: must be >= 1, got {args.workers}")
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        parser.error(f"--keep: {args.keep} is not empty (the study must start from scratch)")

    from pipeline.studyspec import load_study_spec

    m = bc.machine()
    with tempfile.TemporaryDirectory(prefix="initstudy-efficiency-") as tmp:
        base = args.keep or Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        spec_path = quick_spec(base) if args.quick else (args.spec or DEFAULT_SPEC)
        spec = load_study_spec(spec_path)
        print(f"running {spec_path} ({spec.n_trials_planned} trials)...", file=sys.stderr)
        command_wall = run_study(spec_path, base / "run", args.workers, base / "initstudy.log")
        efficiency, failed = read_efficiency(spec.name, base / "run")

    s = efficiency.session
    results = {
        "study": spec.name,
        "trials": efficiency.trials,
        "failed_trials": failed,
        "packs": efficiency.packs,
        "command_wall_s": command_wall,
        "measurable": efficiency.measurable,
        "reason": efficiency.reason or (s.reason if s else ""),
        "sessions": len(efficiency.sessions),
        "wall_s": None if s is None else s.wall_seconds,
        "startup_s": None if s is None else s.startup_seconds,
        "training_s": efficiency.training_seconds if s is None else s.training_seconds,
        "slots": None if s is None else s.slots,
        "training_floor_s": None if s is None or not s.slots else s.training_seconds / s.slots,
        "floor_s": None if s is None else s.floor_seconds,
        "longest_pack_s": None if s is None else s.longest_pack_seconds,
        "bound_s": None if s is None else s.bound_seconds,
        "wall_over_floor": None if s is None else s.ratio,
        "line": efficiency.line(),
        "efficiency": efficiency.to_dict(),
    }
    ratio = results["wall_over_floor"]
    targets = [
        bc.target(
            "study wall time against its training floor",
            f"wall <= {TARGET_RATIO:g} x (training / slots + start-up)",
            ratio,
            None if ratio is None else ratio <= TARGET_RATIO,
        )
    ]
    settings = {
        "spec": f"{spec_path.name}, written from {QUICK_BASE.name} by --quick"
        if args.quick
        else str(Path(spec_path).resolve()),
        "quick": args.quick,
        "trials_planned": spec.n_trials_planned,
        "command": "initstudy run SPEC --run-dir TMP"
        + (f" --workers {args.workers}" if args.workers else ""),
        "slots": "as the driver recorded them (Executor.capacity; initstudy.sessions)",
        "wall": "the driver's recorded run: Driver.run's entry to the last pack told",
        "startup": "the run's start to the first pack's start on a worker (extra['started_at'])",
        "training": "sum over packs of the pack's wall_seconds, each pack once",
    }
    md = markdown(results, spec_path, m, targets)
    variant = "quick" if args.quick else ("" if spec.name == "headline" else spec.name)
    path = bc.write_result(NAME, args.out, m, settings, results, targets, md, variant)
    print(md)
    print(f"\nwrote {path}", file=sys.stderr)
    return bc.finish(targets, args.check)


def _s(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f} s"


def markdown(
    r: dict[str, Any], spec_path: Path, m: dict[str, Any], targets: list[dict[str, Any]]
) -> str:
    ratio, bound, wall = r["wall_over_floor"], r["bound_s"], r["wall_s"]
    rows = [
        ["study (trials, packs)", f"{r['study']} ({r['trials']}, {r['packs']})"],
        ["wall time of the command", _s(r["command_wall_s"])],
        ["**wall** (the driver's recorded run)", f"**{_s(wall)}**"],
        ["start-up (to the first pack's start)", _s(r["startup_s"])],
        ["training (sum over packs)", _s(r["training_s"])],
        ["slots (recorded)", "n/a" if r["slots"] is None else str(r["slots"])],
        ["training floor (training / slots)", _s(r["training_floor_s"])],
        ["**floor** (+ start-up)", f"**{_s(r['floor_s'])}**"],
        ["**wall / floor**", "n/a" if ratio is None else f"**{ratio:.2f}x**"],
        ["longest pack", _s(r["longest_pack_s"])],
        [
            "max(longest pack, training / slots) + start-up",
            _s(bound) + ("" if not bound or wall is None else f" ({wall / bound:.2f}x)"),
        ],
    ]
    if r["failed_trials"]:
        rows.append(["failed trials (their time is not in training)", r["failed_trials"]])
    if r["reason"]:
        rows.append(["not measured", r["reason"]])
    parts = [
        f"### Study efficiency: `{spec_path.name}`",
        bc.table(["quantity", "value"], rows),
        f"Report footer: {r['line']}",
        bc.machine_line(m),
        bc.target_lines(targets),
    ]
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())

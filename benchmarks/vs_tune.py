"""initstudy vs Ray Tune (OptunaSearch + MLflow logging) on the same list of trials.

Run: python benchmarks/vs_tune.py                               (studies/smoke.yaml)
     python benchmarks/vs_tune.py --spec studies/headline.yaml  (90 trials, ~30+ minutes)
     python benchmarks/vs_tune.py --quick                       (2 tiny trials; the tests)

Needs Ray Tune: ``pip install "ray[tune]"`` (the ``bench`` extra).

The trials are a study spec's grid (``load_study_spec(path).grid_points()``, each turned
into a TrialSpec by ``spec.trial_spec(params)``). They run, one after the other on the
same machine:

a. initstudy: the command ``initstudy run SPEC --run-dir TMP`` (embedded Ray, Optuna and
   MLflow on SQLite, packing); wall time of the whole command;
b. Ray Tune: ``tune.Tuner`` with ``OptunaSearch(space=spec.distributions(),
   points_to_evaluate=<the grid points>, metric, mode="min")``, ``num_samples`` = the
   number of points, and ``MLflowLoggerCallback`` to an MLflow SQLite store; the
   trainable calls the same ``models.train_trial(TrialSpec)`` with one torch thread (as
   initstudy's workers do) and reports every epoch's metrics with the objective value.
   Wall time of the whole command (a Python process running the Tuner).

Then the results are compared trial by trial: converged and diverged epochs equal, final
validation loss within 1e-6 relative (a result depends only on its spec). Target:
initstudy >= 5x faster in wall time.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

NAME = "vs_tune"
TARGET_RATIO = 5.0
REL_TOL = 1e-6
MAX_DIFF_ROWS = 12
"""Differing trials listed in the markdown (all of them are in the JSON)."""
DEFAULT_SPEC = bc.ROOT / "studies" / "smoke.yaml"
QUICK_TRIAL = {"batches_per_epoch": 3, "max_epochs": 2, "val_size": 16, "hidden": 8}
"""Overrides that make the smoke study's trials tiny for ``--quick``."""
QUICK_SPACE = {"init": ["xavier", "uniform01"], "seed": [0]}


def quick_spec(folder: Path) -> Path:
    """The ``--quick`` spec: the smoke study, two tiny trials, in ``folder``."""
    return bc.quick_spec(DEFAULT_SPEC, folder, "vs_tune_quick", QUICK_TRIAL, QUICK_SPACE)


def point_key(params: dict[str, Any]) -> str:
    """A grid point as a stable string, for matching trials across the two runs."""
    return json.dumps(params, sort_keys=True)


def summary(converged: int | None, diverged: int | None, val_loss: float | None) -> dict:
    return {"converged_epoch": converged, "diverged_epoch": diverged, "final_val_loss": val_loss}


# -- a: initstudy ------------------------------------------------------------------------


def run_initstudy(spec_path: Path, run_dir: Path, log: Path) -> tuple[float, dict[str, dict]]:
    """Run the CLI; return its wall time and each grid point's result summary."""
    from pipeline import storage as st
    from pipeline import urls
    from pipeline.studyspec import load_study_spec

    wall = bc.timed_run(bc.initstudy_run(spec_path, run_dir), log)
    spec = load_study_spec(spec_path)
    storage = st.make_storage(urls.default_storage_url(run_dir))
    study = st.load_existing_study(storage, spec.name)
    found = {}
    for t in study.get_trials(deepcopy=False):
        result = st.stored_result(t)
        if result is None:
            continue
        last = result.history[-1].val_loss if result.history else None
        params = dict(t.params)  # the seed is a trial attribute, not a param
        if st.SEED in t.user_attrs:
            params["seed"] = t.user_attrs[st.SEED]
        found[point_key(params)] = summary(result.converged_epoch, result.diverged_epoch, last)
    return wall, found


# -- b: Ray Tune -------------------------------------------------------------------------


def tune_available() -> str | None:
    """None if Ray Tune, OptunaSearch and the MLflow callback import; else the reason."""
    try:
        import ray.tune  # noqa: F401
        from ray.air.integrations.mlflow import MLflowLoggerCallback  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ImportError as exc:
        return f"Ray Tune is not importable ({exc}); pip install 'ray[tune]'"
    return None


def tune_main(spec_path: Path, folder: Path, result_file: Path) -> None:
    """Inside the Tune subprocess: run the grid through a Tuner, write the results."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.optuna import OptunaSearch

    from pipeline.studyspec import load_study_spec

    spec = load_study_spec(spec_path)
    metric = spec.objective.metric
    points = spec.grid_points()
    spec_file = str(spec_path.resolve())

    def trainable(config: dict[str, Any]) -> None:
        import torch

        from models.train import train_trial
        from pipeline.studyspec import load_study_spec

        torch.set_num_threads(1)  # as initstudy's workers do with one CPU per task
        study = load_study_spec(spec_file)
        result = train_trial(study.trial_spec(dict(config)))
        value = study.score(
            {
                "converged_epoch": result.converged_epoch,
                "diverged_epoch": result.diverged_epoch,
                "best_val_loss": result.best_val_loss,
            }
        )
        for record in result.history:
            tune.report(
                {
                    "epoch": record.epoch,
                    "train_loss": record.train_loss,
                    "val_loss": record.val_loss,
                    "grad_norm": record.grad_norm,
                    "hidden_var": record.hidden_var,
                    "hidden_sat": record.hidden_sat,
                    metric: value,
                    # -1 stands for None: Tune and MLflow take numbers only.
                    "converged_epoch": _or_minus_one(result.converged_epoch),
                    "diverged_epoch": _or_minus_one(result.diverged_epoch),
                }
            )

    search = OptunaSearch(
        space=spec.distributions(),
        metric=metric,
        mode="min",
        points_to_evaluate=points,
        seed=spec.sampler_seed,
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=search, num_samples=len(points)),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=str((folder / "ray_results").resolve()),
            callbacks=[
                MLflowLoggerCallback(
                    tracking_uri=f"sqlite:///{(folder / 'tune_mlflow.db').resolve()}",
                    experiment_name=spec.name,
                )
            ],
        ),
    )
    grid = tuner.fit()
    found = {}
    for i in range(len(grid)):
        res = grid[i]
        m = res.metrics or {}
        params = {k: res.config[k] for k in spec.searched()} if res.config else {}
        found[point_key(params)] = summary(
            None if m.get("converged_epoch", -1) == -1 else int(m["converged_epoch"]),
            None if m.get("diverged_epoch", -1) == -1 else int(m["diverged_epoch"]),
            m.get("val_loss"),
        )
        found[point_key(params)]["error"] = None if res.error is None else str(res.error)
    result_file.write_text(json.dumps(found))


def _or_minus_one(epoch: int | None) -> int:
    return -1 if epoch is None else epoch


def run_tune(spec_path: Path, folder: Path, log: Path) -> tuple[float, dict[str, dict]]:
    """Run Tune in a fresh Python process; return its wall time and the result summaries."""
    result_file = folder / "tune_results.json"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--tune-run",
        str(spec_path),
        "--tune-dir",
        str(folder),
    ]
    wall = bc.timed_run(command, log)
    if not result_file.exists():
        raise RuntimeError(f"the Ray Tune run wrote no results; see {log}")
    found: dict[str, dict] = json.loads(result_file.read_text())
    return wall, found


# -- comparison --------------------------------------------------------------------------


def same(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """Equal epochs and final validation losses within REL_TOL (NaN equals NaN)."""
    if a is None or b is None:
        return False
    if a["converged_epoch"] != b["converged_epoch"] or a["diverged_epoch"] != b["diverged_epoch"]:
        return False
    x, y = a["final_val_loss"], b["final_val_loss"]
    if x is None or y is None:
        return x is None and y is None
    if math.isnan(x) or math.isnan(y):
        return math.isnan(x) and math.isnan(y)
    return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=0.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=None, help="study spec (default smoke)")
    parser.add_argument("--quick", action="store_true", help="two tiny trials (for the tests)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--tune-run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--tune-dir", type=Path, help=argparse.SUPPRESS)
    bc.add_common_args(parser)
    args = parser.parse_args(argv)

    if args.tune_run is not None:
        tune_main(args.tune_run, args.tune_dir, args.tune_dir / "tune_results.json")
        return 0
    reason = tune_available()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    if args.quick and args.spec is not None:
        parser.error("--quick runs its own tiny spec; leave out --spec")

    from pipeline.studyspec import load_study_spec

    m = bc.machine()
    with tempfile.TemporaryDirectory(prefix="initstudy-vs-tune-") as tmp:
        base = (args.keep or Path(tmp)).resolve()
        base.mkdir(parents=True, exist_ok=True)
        spec_path = quick_spec(base) if args.quick else (args.spec or DEFAULT_SPEC).resolve()
        spec = load_study_spec(spec_path)
        if not spec.is_grid:
            parser.error(f"--spec: {spec_path} must use the grid sampler")
        points = spec.grid_points()
        (base / "tune").mkdir(exist_ok=True)
        print(f"{len(points)} trials from {spec_path}; running initstudy...", file=sys.stderr)
        ini_wall, ini = run_initstudy(spec_path, base / "initstudy", base / "initstudy.log")
        print(f"initstudy: {ini_wall:.1f} s; running Ray Tune...", file=sys.stderr)
        tune_wall, tun = run_tune(spec_path, base / "tune", base / "tune.log")
        print(f"Ray Tune: {tune_wall:.1f} s", file=sys.stderr)

    trials: list[dict[str, Any]] = []
    for params in points:
        key = point_key(params)
        a, b = ini.get(key), tun.get(key)
        trials.append({"params": params, "initstudy": a, "tune": b, "equal": same(a, b)})
    n_equal = sum(1 for t in trials if t["equal"])
    ratio = tune_wall / ini_wall
    results = {
        "trials": len(points),
        "initstudy_wall_s": ini_wall,
        "tune_wall_s": tune_wall,
        "tune_over_initstudy": ratio,
        "equal_results": n_equal,
        "per_trial": trials,
    }
    targets = [
        bc.target(
            "initstudy vs Ray Tune wall time",
            f"Tune wall / initstudy wall >= {TARGET_RATIO:g}",
            ratio,
            ratio >= TARGET_RATIO,
        ),
        bc.target(
            "same results trial by trial",
            f"converged/diverged epochs equal, final val loss within {REL_TOL:g} relative "
            f"({n_equal}/{len(points)} equal)",
            n_equal / len(points),
            n_equal == len(points),
        ),
    ]
    settings = {
        "spec": str(
            spec_path.relative_to(bc.ROOT) if spec_path.is_relative_to(bc.ROOT) else spec_path.name
        ),
        "study": spec.name,
        "quick": args.quick,
        "initstudy_command": "initstudy run SPEC --run-dir TMP (default packing, all CPUs)",
        "tune": "tune.Tuner(function trainable -> models.train_trial, OptunaSearch(space="
        "spec.distributions(), points_to_evaluate=grid points, mode=min), num_samples="
        "len(points), MLflowLoggerCallback(sqlite)); default resources (1 CPU per trial)",
        "timing": "wall time of each whole command (a fresh Python process each, "
        "interpreter start and imports included), run one after the other",
        "rel_tol_final_val_loss": REL_TOL,
        "tune_version": _version("ray"),
    }
    md = markdown(results, settings, m, targets)
    path = bc.write_result(
        NAME, args.out, m, settings, results, targets, md, variant(args.quick, spec)
    )
    print(md)
    print(f"\nwrote {path}", file=sys.stderr)
    return bc.finish(targets, args.check)


def _show(trial: dict[str, Any], field: str) -> list[str]:
    """The field's value in each run, as table cells ("-" for None, "missing")."""
    cells = []
    for side in ("initstudy", "tune"):
        found = trial[side]
        value = found.get(field) if found is not None else "missing"
        if isinstance(value, float):
            cells.append(f"{value:.7g}")
        else:
            cells.append("-" if value is None else str(value))
    return cells


def variant(quick: bool, spec: Any) -> str:
    """Result file suffix: none for the smoke study, ``quick``, else the study's name."""
    if quick:
        return "quick"
    return "" if spec.name == "smoke" else spec.name


def _version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def markdown(
    r: dict[str, Any], settings: dict[str, Any], m: dict[str, Any], targets: list[dict]
) -> str:
    rows = [
        [
            settings["spec"],
            r["trials"],
            f"{r['initstudy_wall_s']:.1f}",
            f"{r['tune_wall_s']:.1f}",
            f"{r['tune_over_initstudy']:.2f}x",
            f"{r['equal_results']}/{r['trials']}",
        ]
    ]
    table = bc.table(
        [
            "study",
            "trials",
            "initstudy wall (s)",
            "Ray Tune wall (s)",
            "initstudy speedup",
            "identical results",
        ],
        rows,
    )
    note = (
        "Wall time of each whole command on the same machine, one after the other: "
        "`initstudy run SPEC` (embedded Ray, Optuna + MLflow on SQLite, packing) vs a "
        "`tune.Tuner` running the same `models.train_trial` per trial with OptunaSearch "
        "(the grid as `points_to_evaluate`) and `MLflowLoggerCallback` (SQLite)."
    )
    diff = [t for t in r["per_trial"] if not t["equal"]]
    parts = ["### initstudy vs Ray Tune", table, note]
    if diff:
        rows = [
            [
                ", ".join(f"{k}={v}" for k, v in t["params"].items()),
                *(_show(t, "converged_epoch")),
                *(_show(t, "diverged_epoch")),
                *(_show(t, "final_val_loss")),
            ]
            for t in diff[:MAX_DIFF_ROWS]
        ]
        headers = ["trial", "converged (initstudy)", "converged (Tune)"]
        headers += ["diverged (initstudy)", "diverged (Tune)"]
        headers += ["final val loss (initstudy)", "final val loss (Tune)"]
        more = len(diff) - len(rows)
        tail = f"\n\n... and {more} more (see the JSON's per_trial)" if more > 0 else ""
        parts += [f"Trials whose results differ ({len(diff)}):", bc.table(headers, rows) + tail]
    parts += [bc.machine_line(m), bc.target_lines(targets)]
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())

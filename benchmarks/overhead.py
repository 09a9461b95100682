"""Per-trial pipeline overhead: a study of near-no-op trials through the full pipeline.

Run: python benchmarks/overhead.py                 (1000 trials, about two minutes)
     python benchmarks/overhead.py --trials 200
     python benchmarks/overhead.py --quick         (10 trials; used by the tests)
     python benchmarks/overhead.py --cluster --trials 500 --no-profile
                                                   (the cluster path, servers started here)
     python benchmarks/overhead.py --optuna-storages --trials 500
                                                   (Optuna's RDBStorage vs JournalStorage)

A grid study of N trials that train almost nothing (adding task, seq_len 2, hidden 1,
batch 1, 1 batch, 1 epoch, 2 validation sequences (with 1, torch warns on every trial that
the init diagnostics' variance is degenerate); one trial per seed, all on data_seed 0;
they share a shape and get packed) runs through the
real driver, ``pipeline.driver.Driver(...).run()``, in this process: embedded Ray, Optuna
SQLite storage, MLflow SQLite store, default packing. Imports are done before the clock
starts. Reported:

- wall: ``Driver.run()`` from call to return;
- Ray start-up: the ``ray.init`` call (and, separately, ``ray.shutdown``);
- training: the packs' own time, read from the stored results (members of a pack share
  their pack's ``wall_seconds``, so each pack is counted once: sum of
  ``wall_seconds / extra["pack_size"]``);
- pipeline ms per trial = (wall - Ray start-up - training) / N.   Target: <= 25 ms.

Also the fixed costs inside that (opening the Optuna storage and the MLflow store, Ray
shutdown, the wait for the first result while the Ray workers start), and the marginal
per-trial cost without them. Then the same study runs again, in a fresh run folder, under
cProfile (the driver's main thread), and the profile is grouped by the outside system our
code called: Optuna (storage), MLflow, Ray (init, wait, get, ...), other libraries, and
initstudy's own code.

``--cluster`` starts, itself, PostgreSQL (the machine's, a throwaway cluster in a temp
folder) and an MLflow tracking server (``deploy/mlflow-server.sh``, backend store a second
database of the same PostgreSQL, artifacts served) on loopback ports, runs the same study
with Optuna on PostgreSQL and MLflow through the server, and stops and removes both (also on
Ctrl-C, SIGTERM or an error). Targets there: <= 10 ms per trial and >= 100 trials per second,
N / (wall - Ray start-up), through one driver. ``--mlflow-writers N`` sets the Tracker's
writer threads (0: every MLflow call on the driver's thread, as before), for A/B runs.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import functools
import pstats
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc

NAME = "overhead"
TARGET_MS = 25.0
CLUSTER_TARGET_MS = 10.0
CLUSTER_TARGET_RATE = 100.0
"""The cluster path's targets (``--cluster``): ms per trial, and trials per second through
one driver, N / (wall - Ray start-up)."""
DEFAULT_TRIALS = 1000
QUICK_TRIALS = 10
NOOP_TRIAL = {
    "task": "adding",
    "cell": "rnn_tanh",
    "seq_len": 2,
    "hidden": 1,
    "batch_size": 1,
    "batches_per_epoch": 1,
    "max_epochs": 1,
    "val_size": 2,
    "data_seed": 0,
    "optimizer": "sgd",
    "lr": 0.01,
}
OURS = (
    str(bc.ROOT / "pipeline") + "/",
    str(bc.ROOT / "models") + "/",
    str(bc.ROOT / "benchmarks"),
)
"""Files that count as initstudy's own code in the profile."""
WRAPPERS = ("/tenacity/",)
"""Libraries that call back into our code (the retry policy wraps every store call): their
frames count as ours, so a store call is attributed to its store once, not twice."""
GROUPS = (
    ("optuna", "/optuna/"),
    ("mlflow", "/mlflow/"),
    ("ray", "/ray/"),
)
RAY_API = {
    ("worker.py", "init"): "ray.init",
    ("worker.py", "wait"): "ray.wait",
    ("worker.py", "get"): "ray.get",
    ("worker.py", "shutdown"): "ray.shutdown",
    ("worker.py", "cancel"): "ray.cancel",
    ("remote_function.py", "_remote"): "ray submit (.remote)",
}
"""Ray API functions, by file name and function name, and the group each is shown as."""
HOST_START = ("raysession.py", "start")
"""``RayHost.start``: where the driver's thread waits while ``ray.init`` runs on another."""
TOP_CALLS = 8
"""Calls listed per profile group."""
STORE_CALLS = (
    ("optuna", "optuna.storages._rdb.storage:RDBStorage", "_create_new_trial"),
    ("optuna", "optuna.storages._cached_storage:_CachedStorage", "set_trial_user_attr"),
    ("optuna", "optuna.storages._cached_storage:_CachedStorage", "set_trial_state_values"),
    ("mlflow", "mlflow.tracking.client:MlflowClient", "create_run"),
    ("mlflow", "mlflow.tracking.client:MlflowClient", "log_batch"),
    (
        "mlflow",
        "mlflow.store.artifact.local_artifact_repo:LocalArtifactRepository",
        "log_artifacts",
    ),
    ("mlflow", "mlflow.store.artifact.http_artifact_repo:HttpArtifactRepository", "log_artifacts"),
    ("mlflow", "mlflow.tracking.client:MlflowClient", "set_terminated"),
    ("tracker", "pipeline.tracking:Tracker", "start_trials"),
    ("tracker", "pipeline.tracking:Tracker", "log_trial"),
    ("tracker", "pipeline.tracking:Tracker", "logged_trials"),
    ("tracker", "pipeline.tracking:Tracker", "close_study"),
)
"""The store calls a trial costs, timed one by one in the unprofiled run: (store,
"module:class", method). A class that is missing (a renamed module) is left out. The
``tracker`` rows are the time the driver spends in its Tracker, MLflow's calls and all:
with writer threads (a tracking server) the MLflow calls run on them, and these rows are
what the driver still waits for (a run's creation, room in the backlog, the last flush)."""


def study_doc(n: int) -> dict[str, Any]:
    """The study spec (as parsed YAML) of N near-no-op trials."""
    return {
        "name": "overhead",
        "description": f"{n} near-no-op trials: the pipeline's own cost per trial",
        "sampler": "grid",
        "objective": {"metric": "epochs_to_converge"},
        "trial": dict(NOOP_TRIAL),
        "space": {"seed": {"low": 0, "high": n - 1}},
    }


class Clock:
    """Total seconds and number of named calls, and when the first of each started and
    ended."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.first_start: dict[str, float] = {}
        self.first_end: dict[str, float] = {}
        self._lock = threading.Lock()  # store calls may run on the tracker's threads

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            self.first_start.setdefault(name, started)
            try:
                return fn(*args, **kwargs)
            finally:
                end = time.perf_counter()
                with self._lock:
                    self.seconds[name] = self.seconds.get(name, 0.0) + end - started
                    self.calls[name] = self.calls.get(name, 0) + 1
                    self.first_end.setdefault(name, end)

        return timed


def run_study(
    n: int,
    run_dir: Path,
    profile: cProfile.Profile | None,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Run the N-trial study once through ``Driver.run()``; return the timings.

    With a ``storage`` or ``tracking_uri`` server, the study gets a name of its own (the
    servers outlive the run folder, and a study of the same name would resume)."""
    import ray
    import yaml

    from pipeline import storage as st
    from pipeline.driver import Driver, RunOptions
    from pipeline.progress import Reporter
    from pipeline.studyspec import parse_study_spec

    doc = study_doc(n)
    text = yaml.safe_dump(doc, sort_keys=False)
    spec = parse_study_spec(doc, "overhead")
    name = None
    if storage is not None or tracking_uri is not None:
        name = f"overhead-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    options = RunOptions(
        run_dir=run_dir, storage=storage, tracking_uri=tracking_uri, study_name=name
    )
    driver = Driver(spec, text, options, Reporter(enabled=False))
    clock = Clock()
    # Instance attributes shadow the methods, so only this driver is timed; nothing in
    # pipeline/ changes. Missing names (a renamed method) are simply not timed.
    for name in ("_open", "_prepare_tracking", "_finish"):
        if hasattr(driver, name):
            setattr(driver, name, clock.wrap(name, getattr(driver, name)))
    real_init, real_shutdown = ray.init, ray.shutdown
    ray.init = clock.wrap("ray.init", real_init)
    ray.shutdown = clock.wrap("ray.shutdown", real_shutdown)
    restore = [] if profile is not None else time_store_calls(clock)
    try:
        started = time.perf_counter()
        if profile is not None:
            profile.enable()
        outcome = driver.run()
        if profile is not None:
            profile.disable()
        wall = time.perf_counter() - started
    finally:
        ray.init, ray.shutdown = real_init, real_shutdown
        for cls, name, method in restore:
            setattr(cls, name, method)

    study = st.load_existing_study(st.make_storage(options.storage_url), driver.name)
    results = [st.stored_result(t) for t in study.get_trials(deepcopy=False)]
    done = [r for r in results if r is not None]
    if len(done) != n or outcome.trained != n or outcome.logged != n or outcome.failed:
        raise RuntimeError(
            f"study incomplete: {len(done)} results, {outcome.trained} trained, "
            f"{outcome.logged} logged of {n}; failed: {outcome.failed[:3]}"
        )
    sizes = [int(r.extra.get("pack_size", 1)) for r in done]
    training = sum(r.wall_seconds / k for r, k in zip(done, sizes, strict=True))
    packs = round(sum(1 / k for k in sizes))
    ray_init = clock.seconds.get("ray.init", 0.0)
    ray_shutdown = clock.seconds.get("ray.shutdown", 0.0)
    setup = clock.seconds.get("_open", 0.0)
    # MLflow is opened on a thread while Ray starts; reported, not counted as fixed.
    tracking_setup = clock.seconds.get("_prepare_tracking")
    first_wait = None
    if "ray.init" in clock.first_end and "_finish" in clock.first_start:
        # From Ray being up to the first finished pack, less a pack's own training.
        waited = clock.first_start["_finish"] - clock.first_end["ray.init"]
        first_wait = max(0.0, waited - training / max(1, packs))
    fixed = ray_shutdown + setup + (first_wait or 0.0)
    return {
        "trials": n,
        "packs": packs,
        "max_pack_size": max(sizes),
        "wall_s": wall,
        "ray_startup_s": ray_init,
        "ray_shutdown_s": ray_shutdown,
        "training_s": training,
        "pipeline_s": wall - ray_init - training,
        "pipeline_ms_per_trial": 1000 * (wall - ray_init - training) / n,
        "trials_per_s": n / (wall - ray_init),
        "setup_s": setup,
        "tracking_setup_s": tracking_setup,
        "first_result_wait_s": first_wait,
        "marginal_ms_per_trial": 1000 * (wall - ray_init - training - fixed) / n,
        "store_calls": [
            {
                "store": store,
                "call": f"{target.rsplit('.', 1)[-1]}.{name}",
                "calls": clock.calls[label],
                "seconds": clock.seconds[label],
                "ms_per_call": 1000 * clock.seconds[label] / clock.calls[label],
                "ms_per_trial": 1000 * clock.seconds[label] / n,
            }
            for store, target, name in STORE_CALLS
            if (label := f"{target}.{name}") in clock.calls
        ],
    }


def optuna_storages(n: int, folder: Path) -> list[dict[str, Any]]:
    """The Optuna calls a grid trial costs the driver, N times, on the embedded default
    (RDBStorage on SQLite, through Optuna's cache, as the driver has it) and on a
    JournalStorage with a JournalFileBackend: create the trial RUNNING with its params and
    key, store the result and outcome, tell it COMPLETE. Then a fresh storage object on the
    same file reads the whole study back (what a resume, ``status`` or ``report`` do)."""
    import optuna
    from optuna.distributions import BaseDistribution, IntDistribution
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import FrozenTrial, TrialState

    from pipeline import storage as st

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    text = _result_text()
    makers: dict[str, Callable[[], Any]] = {
        "RDBStorage, SQLite (the default)": lambda: RDBStorage(
            f"sqlite:///{folder / 'optuna.db'}", engine_kwargs={"connect_args": {"timeout": 60}}
        ),
        "JournalStorage, JournalFileBackend": lambda: JournalStorage(
            JournalFileBackend(str(folder / "optuna.journal"))
        ),
    }
    rows = []
    distributions: dict[str, BaseDistribution] = {"seed": IntDistribution(0, max(1, n - 1))}
    for kind, make in makers.items():
        clock = Clock()
        opened = time.perf_counter()
        study = optuna.create_study(storage=make(), study_name="journal-vs-rdb")
        storage, sid = study._storage, study._study_id
        opened = time.perf_counter() - opened
        create = clock.wrap("create_new_trial", storage.create_new_trial)
        attr = clock.wrap("set_trial_user_attr", storage.set_trial_user_attr)
        tell = clock.wrap("set_trial_state_values", storage.set_trial_state_values)
        started = time.perf_counter()
        for i in range(n):
            template = FrozenTrial(
                number=-1,
                state=TrialState.RUNNING,
                value=None,
                datetime_start=datetime.datetime.now(),
                datetime_complete=None,
                params={"seed": i},
                distributions=distributions,
                user_attrs={st.KEY: f"key-{i}"},
                system_attrs={},
                intermediate_values={},
                trial_id=-1,
            )
            trial_id = create(sid, template_trial=template)
            attr(trial_id, st.RESULT, text)
            attr(trial_id, st.OUTCOME, "converged")
            tell(trial_id, TrialState.COMPLETE, [float(i)])
        wall = time.perf_counter() - started
        reread = time.perf_counter()
        again = optuna.load_study(study_name="journal-vs-rdb", storage=make())
        assert len(again.get_trials(deepcopy=False)) == n
        reread = time.perf_counter() - reread
        rows.append(
            {
                "storage": kind,
                "trials": n,
                "open_s": opened,
                "ms_per_trial": 1000 * wall / n,
                "calls": {
                    name: 1000 * clock.seconds[name] / clock.calls[name] for name in clock.calls
                },
                "reopen_and_read_all_s": reread,
            }
        )
    return rows


def _result_text() -> str:
    """A near-no-op trial's result JSON, as the driver stores it on its trial."""
    from models import TrialSpec, train_trial

    keep: dict[str, Any] = {k: v for k, v in NOOP_TRIAL.items() if k != "task"}
    return train_trial(TrialSpec(**keep)).to_json()


def time_store_calls(clock: Clock) -> list[tuple[type, str, Any]]:
    """Wrap the classes' methods in :data:`STORE_CALLS` with timers (for every instance in
    this process: only the driver uses these stores here). Returns what to put back."""
    import importlib

    restore: list[tuple[type, str, Any]] = []
    for _, target, name in STORE_CALLS:
        module, _, cls_name = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module), cls_name)
            method = cls.__dict__[name]
        except (ImportError, AttributeError, KeyError):
            continue
        label = f"{target}.{name}"
        setattr(cls, name, clock.wrap(label, method))
        restore.append((cls, name, method))
    return restore


def redact_url(url: str) -> str:
    """A store URL without its password, for the result file."""
    from pipeline.storage import redact

    return redact(url)


def _where(filename: str) -> str:
    """The group of a profiled function: ours, optuna, mlflow, ray or other."""
    if filename.startswith(OURS) or any(w in filename for w in WRAPPERS):
        return "ours"
    for group, marker in GROUPS:
        if marker in filename:
            return group
    return "other"


def _label(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    if filename == "~":
        return name  # a builtin, e.g. <method 'acquire' of '_thread.lock' objects>
    parts = Path(filename).with_suffix("").parts
    for anchor in ("site-packages", "python3.11", "lib"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + 1 :]
            break
    else:
        parts = parts[-2:]
    return ".".join(parts) + ":" + name


def _inside(stats: pstats.Stats, func: Any, limit: int = 4) -> list[dict[str, Any]]:
    """Where a call's time goes: its heaviest direct callees, looking through wrappers.

    Descends into the heaviest callee while it holds over 80% of the time and has no other
    caller (a decorator, a forwarding method): cProfile keeps no call stacks, so below a
    function shared by several callers the time could not be told apart.
    """
    callees: dict[Any, Any] = stats.all_callees  # type: ignore[attr-defined]
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for _ in range(12):
        below = callees.get(func, {})
        if not below:
            return []
        heaviest = max(below, key=lambda c: below[c][3])
        total = raw[func][3]
        only_caller = set(raw[heaviest][4]) == {func}
        if total <= 0 or below[heaviest][3] < 0.8 * total or not only_caller:
            break
        func = heaviest
    top = sorted(callees.get(func, {}).items(), key=lambda kv: -kv[1][3])[:limit]
    return [{"call": _label(c), "seconds": v[3], "calls": int(v[1])} for c, v in top]


def breakdown(profile: cProfile.Profile | str, wall: float, n: int) -> dict[str, Any]:
    """Group the profile by what our code called.

    Every call edge from initstudy's code into another package counts that call's inclusive
    time for the callee's group (Optuna, MLflow, Ray, other); initstudy's own self time is
    the group "initstudy". Ray calls are split by function (init, wait, get, ...). The
    edges would double-count if an outside package called back into our code that then
    called out again; such callbacks are listed under ``callbacks`` (none expected).
    """
    stats = pstats.Stats(profile)
    stats.calc_callees()
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    calls: dict[str, dict[str, list[float]]] = {}
    self_ours: dict[str, float] = {}
    callbacks: set[str] = set()
    keys: dict[str, Any] = {}
    for func, (_, _, tottime, _, callers) in raw.items():
        where = _where(func[0])
        if where == "ours":
            self_ours[_label(func)] = self_ours.get(_label(func), 0.0) + tottime
            if any(_where(c[0]) != "ours" for c in callers):
                callbacks.add(_label(func))
            continue
        for caller, (_, edge_calls, _, edge_ct) in callers.items():
            if _where(caller[0]) != "ours":
                continue
            # ray.init runs on RayHost's thread (outside this profile); the main thread
            # waits for it in RayHost.start, and that wait is Ray's start-up
            into = "ray.init" if (Path(caller[0]).name, caller[2]) == HOST_START else where
            groups[into] = groups.get(into, 0.0) + edge_ct
            entry = calls.setdefault(into, {}).setdefault(_label(func), [0.0, 0])
            entry[0] += edge_ct
            entry[1] += edge_calls
            keys[_label(func)] = func
    # Ray's API functions sit behind decorators (the edge from our code lands on a
    # wrapper), so split the Ray group by the inclusive time of the API functions.
    ray_total = groups.pop("ray", 0.0)
    calls.pop("ray", None)
    for func, (_, ncalls, _, cumtime, _) in raw.items():
        api = RAY_API.get((Path(func[0]).name, func[2]))
        if api is not None and "/ray/" in func[0]:
            groups[api] = groups.get(api, 0.0) + cumtime
            entry = calls.setdefault(api, {}).setdefault(_label(func), [0.0, 0])
            entry[0] += cumtime
            entry[1] += ncalls
            ray_total -= cumtime
    groups["ray (other)"] = max(0.0, ray_total)
    groups["initstudy"] = sum(self_ours.values())
    calls["initstudy"] = {k: [v, 0] for k, v in self_ours.items()}
    total = sum(groups.values())
    order = sorted(groups, key=lambda g: -groups[g])
    rows = []
    for group in order:
        top = sorted(calls.get(group, {}).items(), key=lambda kv: -kv[1][0])[:TOP_CALLS]
        rows.append(
            {
                "group": group,
                "seconds": groups[group],
                "share_of_profiled_wall": groups[group] / wall if wall else None,
                "ms_per_trial": 1000 * groups[group] / n,
                "top_calls": [
                    {
                        "call": name,
                        "seconds": s,
                        "calls": int(c),
                        "inside": _inside(stats, keys[name]) if name in keys else [],
                    }
                    for name, (s, c) in top
                ],
            }
        )
    phases = {}
    for func, (_, ncalls, _, cumtime, _) in raw.items():
        if func[0].endswith("pipeline/driver.py") and func[2] in (
            "_open",
            "open_tracker",
            "_backfill",
            "_recover",
            "create",
            "_execute",
            "_finish",
            "_tell",
            "_log",
        ):
            phases[func[2]] = {"seconds": cumtime, "calls": ncalls}
    return {
        "profiled_wall_s": wall,
        "attributed_s": total,
        "groups": rows,
        "driver_phases": phases,
        "callbacks": sorted(callbacks),
        "note": "cProfile of the driver's main thread (the heartbeat thread is not "
        "profiled); profiling slows Python code, so compare shares, not absolute times. "
        "ray.wait is mostly idle waiting (Ray workers starting, packs training, the "
        "driver's 0.5 s poll), not CPU spent by the driver.",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--trials", type=int, default=None, help=f"N trials (default {DEFAULT_TRIALS})"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_TRIALS} trials (for the tests)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    parser.add_argument(
        "--storage", default=None, help="Optuna storage URL (default: SQLite in a temp folder)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking server, e.g. http://127.0.0.1:5000 (default: SQLite)",
    )
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="start PostgreSQL and an MLflow tracking server (PostgreSQL backend) on "
        "loopback, run through them (Optuna on PostgreSQL too), then remove them",
    )
    parser.add_argument(
        "--mlflow-writers",
        type=int,
        default=None,
        help="the Tracker's writer threads (default: the Tracker's own choice, "
        "pipeline.tracking_base.WRITER_THREADS on a tracking server, none on SQLite; 0: "
        "every MLflow call on the driver's thread, as before background writes; N > 0: N "
        "threads on any store, SQLite too)",
    )
    parser.add_argument(
        "--mlflow-server-workers",
        type=int,
        default=1,
        help="with --cluster: the MLflow server's workers (MLFLOW_WORKERS, default 1)",
    )
    parser.add_argument(
        "--optuna-storages",
        action="store_true",
        help="only compare Optuna's RDBStorage (SQLite) and JournalStorage (file) on the "
        "driver's per-trial calls (N trials); writes overhead_optuna_storages.json",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    parser.add_argument(
        "--pstats", type=Path, default=None, help="also save the raw profile here (pstats)"
    )
    bc.add_common_args(parser)
    args = parser.parse_args(argv)
    n = args.trials or (QUICK_TRIALS if args.quick else DEFAULT_TRIALS)
    if n < 1:
        parser.error(f"--trials: must be >= 1, got {n}")

    started = time.perf_counter()
    import mlflow  # noqa: F401  (imported before the clock, as the CLI has by then)
    import optuna  # noqa: F401
    import ray  # noqa: F401
    import torch  # noqa: F401

    import pipeline.driver
    import pipeline.tracking
    import pipeline.tracking_base

    if args.mlflow_writers is not None:  # this process's Trackers only; nothing is saved
        pipeline.tracking_base.WRITER_THREADS = args.mlflow_writers
        if args.mlflow_writers > 0:  # on any store, SQLite too (an experiment)
            pipeline.tracking_base.writes_in_background = lambda uri: True
    writers = pipeline.tracking_base.WRITER_THREADS
    if args.tracking_uri is None and not args.cluster and args.mlflow_writers is None:
        writers = 0  # the embedded store is written on the driver's thread

    imports = time.perf_counter() - started

    if args.optuna_storages:
        return compare_storages(n, args)
    if args.cluster and (args.storage or args.tracking_uri):
        parser.error("--cluster starts its own servers: no --storage or --tracking-uri")
    m = bc.machine()
    servers: bc.LocalServers | None = None
    if args.cluster:
        # SIGTERM ends the run as Ctrl-C does: the servers are stopped and removed.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        servers = bc.LocalServers(mlflow_workers=args.mlflow_server_workers)
        server_start = time.perf_counter()
        servers.__enter__()
        server_start = time.perf_counter() - server_start
        args.storage, args.tracking_uri = servers.url("optuna"), servers.tracking_uri
    try:
        with tempfile.TemporaryDirectory(prefix="initstudy-overhead-") as tmp:
            base = args.keep or Path(tmp)
            timing = run_study(n, base / "timed", None, args.storage, args.tracking_uri)
            profile = None
            if not args.no_profile:
                prof = cProfile.Profile()
                profiled = run_study(n, base / "profiled", prof, args.storage, args.tracking_uri)
                profile = breakdown(prof, profiled["wall_s"], n)
                if args.pstats is not None:
                    prof.dump_stats(args.pstats)
                profile["run"] = profiled
    finally:
        if servers is not None:
            servers.stop()
    if servers is not None:
        timing["servers"] = {
            "start_s": server_start,
            "left_after_stop": servers.leftovers(),
            "folder": str(servers.root),
            "ports": {"postgres": servers.pg_port, "mlflow": servers.mlflow_port},
            "mlflow_workers": servers.mlflow_workers,
            "postgres": str(servers.bin.parent.name),
        }

    timing["mlflow_writer_threads"] = writers
    value = timing["pipeline_ms_per_trial"]
    rate = timing["trials_per_s"]
    if args.cluster:
        targets = [
            bc.target(
                "cluster path: pipeline time per trial",
                f"(wall - Ray start-up - training) / N <= {CLUSTER_TARGET_MS:g} ms",
                value,
                value <= CLUSTER_TARGET_MS,
            ),
            bc.target(
                "cluster path: trials per second through one driver",
                f"N / (wall - Ray start-up) >= {CLUSTER_TARGET_RATE:g}",
                rate,
                rate >= CLUSTER_TARGET_RATE,
            ),
        ]
    else:
        targets = [
            bc.target(
                "pipeline overhead per trial",
                f"(wall - Ray start-up - training) / N <= {TARGET_MS:g} ms",
                value,
                value <= TARGET_MS,
            )
        ]
    settings = {
        "trials": n,
        "trial": NOOP_TRIAL,
        "driver": "pipeline.driver.Driver(...).run() in this process",
        "storage": redact_url(args.storage)
        if args.storage
        else "Optuna RDBStorage, SQLite in a temporary run folder",
        "tracking": redact_url(args.tracking_uri)
        if args.tracking_uri
        else "MLflow, SQLite in the same run folder",
        "cluster": "PostgreSQL (databases optuna, mlflow) and deploy/mlflow-server.sh "
        "(one worker, artifacts served), started on loopback by this script"
        if args.cluster
        else None,
        "mlflow_writer_threads": writers,
        "mlflow_server_workers": args.mlflow_server_workers if args.cluster else None,
        "ray": "embedded (ray.init by the driver), all CPUs, default pack size",
        "imports_before_clock_s": imports,
        "profile": not args.no_profile,
    }
    results = {"timing": timing, "profile": profile}
    md = markdown(timing, profile, m, targets)
    variant = "quick" if args.quick else ("" if n == DEFAULT_TRIALS else f"n{n}")
    if args.storage or args.tracking_uri:
        kind = "cluster" if args.cluster else "servers"
        variant = "_".join(v for v in (variant, kind) if v)
    path = bc.write_result(NAME, args.out, m, settings, results, targets, md, variant)
    print(md)
    print(f"\nwrote {path}", file=sys.stderr)
    return bc.finish(targets, args.check)


def compare_storages(n: int, args: argparse.Namespace) -> int:
    """``--optuna-storages``: the table, the result file."""
    m = bc.machine()
    with tempfile.TemporaryDirectory(prefix="initstudy-storages-") as tmp:
        rows = optuna_storages(n, Path(tmp))
    names = sorted({c for r in rows for c in r["calls"]})
    table = bc.table(
        [
            "storage",
            "ms per trial",
            *(f"{c} (ms)" for c in names),
            "open (s)",
            "reopen, read all (s)",
        ],
        [
            [
                r["storage"],
                f"{r['ms_per_trial']:.2f}",
                *(f"{r['calls'][c]:.2f}" for c in names),
                f"{r['open_s']:.2f}",
                f"{r['reopen_and_read_all_s']:.2f}",
            ]
            for r in rows
        ],
    )
    md = "\n\n".join(
        [
            f"### Optuna storages: the driver's calls per grid trial ({n} trials)",
            table,
            bc.machine_line(m),
        ]
    )
    settings = {
        "trials": n,
        "calls": "create_new_trial (RUNNING, params, key), "
        "set_trial_user_attr x2 (result, outcome), set_trial_state_values",
    }
    path = bc.write_result(
        NAME, args.out, m, settings, {"storages": rows}, [], md, "optuna_storages"
    )
    print(md)
    print(f"\nwrote {path}", file=sys.stderr)
    return 0


def markdown(
    timing: dict[str, Any],
    profile: dict[str, Any] | None,
    m: dict[str, Any],
    targets: list[dict[str, Any]],
) -> str:
    t = timing
    first = t["first_result_wait_s"]
    summary = bc.table(
        ["quantity", "value"],
        [
            ["trials (N)", t["trials"]],
            ["packs (largest)", f"{t['packs']} ({t['max_pack_size']})"],
            ["wall time of Driver.run()", f"{t['wall_s']:.2f} s"],
            ["Ray start-up (ray.init)", f"{t['ray_startup_s']:.2f} s"],
            ["training (sum over packs)", f"{t['training_s']:.3f} s"],
            ["**pipeline time per trial**", f"**{t['pipeline_ms_per_trial']:.1f} ms**"],
            ["trials per second, N / (wall - Ray start-up)", f"{t['trials_per_s']:.1f}"],
            ["MLflow writer threads (0: on the driver's thread)", t.get("mlflow_writer_threads")],
            ["of which fixed: open the Optuna store", f"{t['setup_s']:.2f} s"],
            ["of which fixed: Ray shutdown", f"{t['ray_shutdown_s']:.2f} s"],
            [
                "of which fixed: wait for the first result (workers starting)",
                "n/a" if first is None else f"{first:.2f} s",
            ],
            [
                "marginal pipeline time per trial (without those)",
                f"{t['marginal_ms_per_trial']:.1f} ms",
            ],
            [
                "(opening MLflow and back-filling, on a thread during Ray start-up)",
                "n/a" if t.get("tracking_setup_s") is None else f"{t['tracking_setup_s']:.2f} s",
            ],
        ],
    )
    title = "### Per-trial pipeline overhead"
    if t.get("servers") is not None:
        left = t["servers"]["left_after_stop"]
        title += (
            " (cluster path: Optuna on PostgreSQL, MLflow tracking server on PostgreSQL)"
            f"\n\nServers started in {t['servers']['start_s']:.1f} s; after the run: "
            + (", ".join(left) if left else "all stopped and removed")
        )
    parts = [title, summary]
    if t.get("store_calls"):

        def row(c: dict[str, Any]) -> list[Any]:
            return [c["store"], c["call"], c["calls"], f"{c['ms_per_call']:.2f}",
                    f"{c['ms_per_trial']:.1f}"]  # fmt: skip

        stores = [c for c in t["store_calls"] if c["store"] != "tracker"]
        driver = [c for c in t["store_calls"] if c["store"] == "tracker"]
        total = sum(c["ms_per_trial"] for c in stores)
        rows = [row(c) for c in stores]
        rows.append(["", "**all of these**", "", "", f"**{total:.1f}**"])
        if driver:
            waits = sum(c["ms_per_trial"] for c in driver)
            rows += [row(c) for c in driver]
            rows.append(["", "**the driver's thread in the Tracker**", "", "", f"**{waits:.1f}**"])
        parts += [
            "The store calls, timed one by one in the same (unprofiled) run (calls made on "
            "the tracker's writer threads overlap: their sum can exceed the wall time):",
            bc.table(["store", "call", "calls", "ms per call", "ms per trial"], rows),
        ]
    if profile is not None:
        n = t["trials"]
        rows = []
        for g in profile["groups"]:
            top = ", ".join(
                f"{c['call'].rsplit('.', 1)[-1]} {c['seconds']:.2f}s" for c in g["top_calls"][:3]
            )
            rows.append(
                [
                    g["group"],
                    f"{g['seconds']:.2f}",
                    f"{100 * g['share_of_profiled_wall']:.0f}%",
                    f"{g['ms_per_trial']:.1f}",
                    top,
                ]
            )
        parts += [
            f"Where the driver's time goes (cProfile, {n} trials, profiled wall "
            f"{profile['profiled_wall_s']:.1f} s; profiling inflates Python-heavy groups):",
            bc.table(["group", "seconds", "share", "ms/trial", "largest calls"], rows),
        ]
    parts += [bc.machine_line(m), bc.target_lines(targets)]
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())

"""A Python API for notebooks: run a study, open one, read its tables and verdicts.

``run_study`` (a spec file, YAML text or a dict) and ``open_study`` return a
:class:`Study`: ``trials``, ``epochs`` and ``steps`` (pandas), ``verdicts`` (one row per
claim), ``query(sql)``, ``report(out)`` and ``counts``; ``list_studies`` is ``initstudy
list``. docs/api.md shows it in use (and tests/test_api.py runs that page's code).

The same machinery as the ``initstudy`` CLI: the driver (both stages of a tuned protocol
through :func:`pipeline.protocol.run_protocol`), :func:`pipeline.results.load_tables`,
:func:`pipeline.analysis.verdicts.judge` and :func:`pipeline.analysis.report.write_report`.
Nothing is printed but the driver's warnings: no progress bar unless ``progress=True``.

Bad input raises before anything starts, with the line the CLI prints (naming the keyword
argument, ``workers:``, where the CLI names its option, ``--workers:``): ``SpecError`` (a
spec or an override), ``StudyError`` (no storage or study there), ``QueryError`` (SQL) or a
plain ``ValueError`` (another argument); all are ``ValueError``. Work that fails is a
``RuntimeError``: ``StudyBusy``, ``StorageUnavailable``. The checks are the CLI's, from
:mod:`pipeline.frontend` (where the CLI turns their errors into its one line and exit 2).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.frontend import CONFIRM_CPU_HOURS as CONFIRM_CPU_HOURS
from pipeline.frontend import CONFIRM_TRIALS as CONFIRM_TRIALS
from pipeline.frontend import STORAGE_SCHEMES as STORAGE_SCHEMES
from pipeline.frontend import TRACKING_SCHEMES as TRACKING_SCHEMES
from pipeline.frontend import SpecInput as SpecInput
from pipeline.frontend import (
    api_option,
    before_run,
    check_study_name,
    check_url,
    load_spec,
    one_line,
    quiet_libraries,
    read_storage,
)
from pipeline.urls import default_tracking_uri

if TYPE_CHECKING:
    import pandas as pd

    from pipeline.analysis.protocol import ArmPick
    from pipeline.analysis.verdicts import Verdict
    from pipeline.driver import StudyOutcome
    from pipeline.results import StudyTables
    from pipeline.storage import StudyCounts

__all__ = ["Study", "list_studies", "open_study", "run_study"]

_LIST_COLUMNS = ("study", "stage", "planned", "complete", "running", "failed")
_VERDICT_COLUMNS = ("claim_id", "claim", "verdict", "evidence", "rule", "numbers")


class Study:
    """One study in its stores: its tables, verdicts, SQL, report and counts.

    Made by :func:`open_study` or :func:`run_study`. The tables (and the verdicts judged
    from them) are read from the Optuna storage on first use and kept; :meth:`refresh`
    drops them (a study another process is still running). :attr:`counts` is always read
    afresh.
    """

    def __init__(
        self,
        name: str,
        *,
        storage_url: str,
        tracking_uri: str | None = None,
        run_dir: str | Path = "runs",
        outcome: StudyOutcome | None = None,
        picks: Sequence[ArmPick] = (),
    ) -> None:
        self.name = name
        """The Optuna study / MLflow experiment name."""
        self.storage_url = storage_url
        """The Optuna storage URL."""
        self.tracking_uri = tracking_uri
        """The MLflow tracking URI (None: no MLflow store known; :meth:`report` logs nothing)."""
        self.run_dir = Path(run_dir)
        """The run folder; the default report folder is ``run_dir/reports/NAME``."""
        self.outcome = outcome
        """What :func:`run_study` did (trained, logged, failed lines); None when opened."""
        self.picks = list(picks)
        """A tuned protocol's chosen lr per arm (:func:`run_study` of a tuned spec)."""
        self._tables: StudyTables | None = None
        self._verdicts: list[Verdict] | None = None

    def __repr__(self) -> str:
        return f"Study({self.name!r}, storage_url={self.storage_url!r})"

    def refresh(self) -> Study:
        """Forget the tables and verdicts read so far; the next use reads them again."""
        self._tables, self._verdicts = None, None
        return self

    @property
    def tables(self) -> StudyTables:
        """The study's :class:`~pipeline.results.StudyTables` (trials, epochs, steps).

        Raises:
            StudyError: as :func:`pipeline.results.load_tables`.
        """
        if self._tables is None:
            from pipeline.results import load_tables

            self._tables = load_tables(self.name, self.storage_url)
        return self._tables

    @property
    def trials(self) -> pd.DataFrame:
        """One row per COMPLETE trial (``pipeline.analysis.tables.TRIAL_COLUMNS``)."""
        return self.tables.trials

    @property
    def epochs(self) -> pd.DataFrame:
        """One row per trial and epoch (``EPOCH_COLUMNS``)."""
        return self.tables.epochs

    @property
    def steps(self) -> pd.DataFrame:
        """One row per trial and init-diagnostics time step (``STEP_COLUMNS``)."""
        return self.tables.steps

    @property
    def verdict_list(self) -> list[Verdict]:
        """The claim verdicts as :class:`~pipeline.analysis.verdicts.Verdict` objects (with
        their ``details`` tables), judged once from :attr:`tables`."""
        if self._verdicts is None:
            from pipeline.analysis.verdicts import judge

            self._verdicts = judge(self.tables)
        return self._verdicts

    @property
    def verdicts(self) -> pd.DataFrame:
        """One row per claim verdict: ``claim_id``, ``claim``, ``verdict``, ``evidence``,
        ``rule`` and ``numbers`` (what decided it, as in ``verdicts.json``)."""
        import pandas as pd

        rows = [
            (v.claim_id, v.claim, v.verdict, v.evidence, v.rule, v.to_dict()["numbers"])
            for v in self.verdict_list
        ]
        return pd.DataFrame(rows, columns=list(_VERDICT_COLUMNS))

    def query(self, sql: str) -> pd.DataFrame:
        """Read-only DuckDB SQL over the tables ``trials``, ``epochs`` and ``steps``.

        Raises:
            QueryError: DuckDB refused or failed the query: ``query: `` and its message, the
                line ``initstudy query`` prints.
        """
        from pipeline.results import QueryError
        from pipeline.results import query as run_query

        try:
            return run_query(self.tables, sql)
        except QueryError as exc:
            raise QueryError(f"query: {exc}") from None

    def report(self, out: str | Path | None = None, *, mlflow: bool = True) -> dict[str, Path]:
        """Write report.md, report.html, verdicts.json and the figures, as ``initstudy
        report`` does; return their paths (``markdown``, ``html``, ``verdicts``, one per
        figure). ``out`` defaults to ``run_dir/reports/NAME``. With ``mlflow`` (and an MLflow
        store known) the files written (nothing else in the folder) and one tag per verdict
        go on the study's parent run; MLflow unreachable is a warning.

        Raises:
            OSError: the folder cannot be written (one line, naming it).
        """
        from pipeline.analysis.report import write_report
        from pipeline.publish import report_files, to_parent_run, tuning_section
        from pipeline.results import load_efficiency

        folder = Path(out) if out is not None else self.run_dir / "reports" / self.name
        tables = self.tables
        tuning = tuning_section(tables, self.storage_url)
        efficiency = load_efficiency(self.name, self.storage_url)
        try:
            files = write_report(
                tables, folder, self.verdict_list, tuning=tuning, efficiency=efficiency
            )
        except OSError as exc:
            what = "out" if out is not None else "run_dir"
            raise OSError(
                f"{what}: cannot write the report to {str(folder)!r}: {exc.strerror or exc}"
            ) from None
        if mlflow and self.tracking_uri is not None:
            why = to_parent_run(tables, self.tracking_uri, report_files(files), self.verdict_list)
            if why is not None:
                warnings.warn(f"report not logged to MLflow: {why}", stacklevel=2)
        return files

    @property
    def counts(self) -> StudyCounts:
        """Where the study stands now (planned, complete, converged, ..., remaining)."""
        from pipeline import storage as st

        return st.study_counts(
            st.load_existing_study(st.make_storage(self.storage_url), self.name)
        )


def open_study(
    name: str,
    *,
    run_dir: str | Path = "runs",
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> Study:
    """An existing study: in ``run_dir``'s stores, or at ``storage`` (an Optuna URL) with its
    MLflow store at ``tracking_uri`` (default: ``run_dir``'s ``mlflow.db``, if there is one).

    Reads only; creates nothing.

    Raises:
        ValueError: ``name`` is not a study name, or a URL is malformed.
        StudyError: no storage there, or no study of that name in it (the message lists the
            studies that are).
    """
    from pipeline import storage as st

    check_study_name("name", name)
    check_url("tracking_uri", tracking_uri, TRACKING_SCHEMES)
    run_dir = Path(run_dir)
    url = read_storage(run_dir, storage, api_option)
    st.load_existing_study(st.make_storage(url), name)
    if tracking_uri is None and (run_dir / "mlflow.db").is_file():
        tracking_uri = default_tracking_uri(run_dir)
    return Study(name, storage_url=url, tracking_uri=tracking_uri, run_dir=run_dir)


def list_studies(*, run_dir: str | Path = "runs", storage: str | None = None) -> pd.DataFrame:
    """The studies in a storage with their trial counts, one row each (``initstudy list``):
    ``study``, ``stage`` ("" unless a stage of a tuned protocol), ``planned``, ``complete``,
    ``running``, ``failed``. No studies: no rows.

    Raises:
        ValueError, StudyError: as :func:`open_study`.
    """
    import pandas as pd

    from pipeline import storage as st

    store = st.make_storage(read_storage(Path(run_dir), storage, api_option))
    rows = []
    for name in st.study_names(store):
        found = st.load_existing_study(store, name)
        c = st.study_counts(found)
        stage = str(found.user_attrs.get(st.STAGE) or "")
        rows.append((name, stage, c.planned, c.complete, c.running, c.failed))
    frame = pd.DataFrame(rows, columns=list(_LIST_COLUMNS))
    return frame.astype({c: "int64" for c in _LIST_COLUMNS[2:]})


def run_study(
    spec: SpecInput,
    *,
    run_dir: str | Path = "runs",
    storage: str | None = None,
    tracking_uri: str | None = None,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_trial: float = 1.0,
    gpus_per_trial: float = 0.0,
    pack_size: int | None = None,
    study_name: str | None = None,
    overrides: Sequence[str] = (),
    yes: bool = False,
    progress: bool = False,
    offline_tracking: bool = False,
    memory_per_task: float | None = None,
) -> Study:
    """Run (or resume) a study, as ``initstudy run`` does, and return it.

    ``spec`` is a spec file, YAML text or a mapping; ``overrides`` are ``--set`` items
    (``"trial.max_epochs=5"``). The other arguments are ``initstudy run``'s options; ``yes``
    is ``--yes`` (a study of more than :data:`CONFIRM_TRIALS` trials or
    :data:`CONFIRM_CPU_HOURS` estimated CPU-hours, or whose design cannot judge a claim it
    lists (:func:`pipeline.frontend.design_check`), is refused without it), ``progress``
    shows the progress bar (off: a notebook is no terminal). MLflow that cannot be reached
    at start refuses the run (a ``StudyError``) unless ``offline_tracking`` (``run
    --offline-tracking``): then nothing is logged, and ``initstudy sync`` logs it later.
    The checks before anything starts are ``run``'s (:func:`pipeline.frontend.before_run`):
    a study whose largest pack would need more than ``memory_per_task`` GiB (default: this
    machine's memory) is refused as ``run --memory-per-task`` refuses it.
    One study runs at a time in a process: a second ``run_study`` from another thread
    while one runs is refused (``StudyBusy``), nothing of it started.

    A tuned protocol runs both stages (:func:`pipeline.protocol.run_protocol`) and returns
    stage 2's study, ``picks`` holding each arm's chosen lr; while stage 1 has trials left
    (failed ones) it warns and returns stage 1's (``NAME.tune``). Failed trials are a
    warning, not an error: ``study.outcome.failed`` lists them, and a rerun retries them.

    Raises:
        SpecError: the spec or an override is bad (the CLI's one line), or its design cannot
            judge a claim it lists and ``yes`` is not given (with it: a warning).
        ValueError: another argument is bad, or the study is too large without ``yes``.
        StudyError: the study exists with a different spec, or cannot be opened, or
            MLflow cannot be reached (without ``offline_tracking``).
        StudyBusy: another live driver holds the study, or another study runs in this
            process.
        StorageUnavailable: the Optuna storage failed for good (rerun to resume).
    """
    from pipeline.driver import Driver, RunOptions
    from pipeline.progress import Reporter
    from pipeline.protocol import run_protocol

    overrides = [overrides] if isinstance(overrides, str) else list(overrides)
    parsed, text = load_spec(spec, overrides)
    run_dir = Path(run_dir)
    options = RunOptions(
        run_dir=run_dir,
        storage=storage,
        tracking_uri=tracking_uri,
        address=address,
        workers=workers,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        pack_size=pack_size,
        study_name=study_name,
        offline_tracking=offline_tracking,
    )
    found = before_run(
        parsed,
        "spec",
        options,
        yes=yes,
        confirm="pass yes=True",
        label=api_option,
        memory_per_task=memory_per_task,
    )
    for line in found.warnings:
        warnings.warn(line, stacklevel=2)
    if found.size is not None and not yes:
        raise ValueError(f"{found.size}; pass yes=True to start it")
    quiet_libraries()
    reporter = Reporter(enabled=progress)
    picks: list[ArmPick] = []
    if parsed.protocol.tuned:
        done = run_protocol(parsed, text, options, reporter)
        outcome, picks = done.measure or done.tune, done.picks
        if done.measure is None:
            warnings.warn(
                "stage 2 (measure) waits for every stage-1 trial; rerun to resume",
                stacklevel=2,
            )
    else:
        outcome = Driver(parsed, text, options, reporter).run()
    if outcome.failed:
        warnings.warn(
            f"study {outcome.study_name!r}: {len(outcome.failed)} trial(s) failed (see "
            f"study.outcome.failed; a rerun retries them): {one_line(outcome.failed[0])}",
            stacklevel=2,
        )
    return Study(
        outcome.study_name,
        storage_url=options.storage_url,
        tracking_uri=options.tracking,
        run_dir=run_dir,
        outcome=outcome,
        picks=picks,
    )

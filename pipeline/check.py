"""Reconcile a study's two records: the Optuna storage and the MLflow tracking store.

Every complete trial must have exactly one finished MLflow run with its key, no run may
lack a trial, and a grid study must have every grid point complete exactly once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import yaml
from optuna.trial import TrialState

from pipeline import storage as st
from pipeline.protocolspec import as_stored
from pipeline.studyspec import parse_study_spec
from pipeline.tracking import read_trials


@dataclass
class CheckReport:
    """What ``initstudy check`` found; ``ok`` when every list is empty."""

    study: str
    trials: int = 0
    runs: int = 0
    grid_points: int | None = None
    missing_runs: list[str] = field(default_factory=list)
    orphan_runs: list[str] = field(default_factory=list)
    duplicate_runs: list[str] = field(default_factory=list)
    unfinished_runs: list[str] = field(default_factory=list)
    duplicate_trials: list[str] = field(default_factory=list)
    missing_grid_points: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        lines = []
        for label, items in (
            ("complete trial without an MLflow run", self.missing_runs),
            ("MLflow run without a complete trial", self.orphan_runs),
            ("trial key logged more than once", self.duplicate_runs),
            ("MLflow run not finished", self.unfinished_runs),
            ("grid point completed more than once", self.duplicate_trials),
            ("grid point not completed", self.missing_grid_points),
        ):
            lines += [f"{label}: {item}" for item in items]
        return lines

    @property
    def ok(self) -> bool:
        return not self.problems


def check_study(study_name: str, storage_url: str, tracking_uri: str) -> CheckReport:
    """Compare the Optuna storage with MLflow for one study.

    Raises:
        storage.StudyError: no such study. tracking.TrackingError: MLflow unreachable.
    """
    study = st.load_existing_study(st.make_storage(storage_url), study_name)
    report = CheckReport(study_name)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    trial_keys = Counter(
        t.user_attrs.get(st.KEY, f"<trial {t.number} has no key>") for t in complete
    )
    report.trials = len(complete)

    runs = read_trials(tracking_uri, study_name)
    report.runs = len(runs)
    run_keys = Counter(r["key"] for r in runs)
    report.missing_runs = sorted(k for k in trial_keys if k not in run_keys)
    report.orphan_runs = sorted(k for k in run_keys if k not in trial_keys)
    report.duplicate_runs = sorted(k for k, n in run_keys.items() if n > 1)
    report.unfinished_runs = sorted(
        f"{r['run_id']} ({r['status']})" for r in runs if r["status"] != "FINISHED"
    )

    spec_text = study.user_attrs.get(st.SPEC_TEXT)
    if spec_text:
        spec = parse_study_spec(yaml.safe_load(spec_text), source=f"study {study_name}")
        attrs = study.user_attrs
        spec = as_stored(spec, attrs.get(st.STAGE), attrs.get(st.CHOSEN_LR))
        if spec.is_grid:
            claim = spec.claim or ""
            expected = {spec.trial_spec(p).key(claim): p for p in spec.grid_points()}
            report.grid_points = len(expected)
            report.duplicate_trials = sorted(k for k, n in trial_keys.items() if n > 1)
            report.missing_grid_points = sorted(
                f"{k} {expected[k]}" for k in expected if k not in trial_keys
            )
    return report

"""What the CLI and the Python API put beside a report: a tuned study's stage-1 section,
and the report, verdicts and summary on the study's parent MLflow run.

Both front ends call these; neither prints here (a warning comes back as its text).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.analysis.protocol import Tuning
    from pipeline.analysis.tables import StudyTables
    from pipeline.analysis.verdicts import Verdict


def tuning_section(tables: StudyTables, url: str) -> Tuning | None:
    """A tuned study's stage-1 section for its report (None: not a tuned study, or the
    stage-1 study itself).

    Raises:
        storage.StudyError: the stage-1 study cannot be read.
    """
    import yaml

    from pipeline.analysis.protocol import tuning
    from pipeline.protocolspec import TUNE_SUFFIX, arm_params
    from pipeline.results import load_tables
    from pipeline.studyspec import SpecError, parse_study_spec

    try:
        spec = parse_study_spec(yaml.safe_load(tables.spec_text), f"study {tables.study}")
    except (SpecError, yaml.YAMLError):
        return None
    if not spec.protocol.tuned or tables.study.endswith(TUNE_SUFFIX):
        return None
    stage1 = load_tables(tables.study + TUNE_SUFFIX, url)
    return tuning(stage1, arm_params(spec), spec.protocol.pick, spec.protocol.lr)


def report_files(files: dict[str, Path]) -> list[Path]:
    """Every file ``write_report`` wrote, from what it returned: the documents
    (``interactive.html`` among them), ``verdicts.json`` and each figure's PNG and the SVG
    beside it. This, and nothing else
    that lies in the report's folder, is what goes to MLflow."""
    out = []
    for path in files.values():
        out.append(path)
        if path.suffix == ".png" and path.with_suffix(".svg").is_file():
            out.append(path.with_suffix(".svg"))
    return out


def to_parent_run(
    tables: StudyTables, tracking: str, path: Path | Sequence[Path], verdicts: list[Verdict]
) -> str | None:
    """Upload ``path`` (one file, or a list of files: :func:`report_files`) under
    ``report/`` on the study's parent run, and set one tag per verdict and the study's
    summary (:func:`parent_summary`). The parent run keeps its status and times (it is not
    reopened). Returns why nothing was logged (MLflow unreachable, or the study has no
    MLflow run yet), or None.

    A list is copied into a fresh folder first and that folder uploaded: only those files,
    and never what a symbolic link among them points to."""
    from pipeline.analysis.verdicts import verdict_tags
    from pipeline.tracking import Tracker, TrackingError
    from pipeline.urls import sqlite_file

    missing = f"study {tables.study!r} has no MLflow run yet (initstudy sync logs it)"
    try:
        db = sqlite_file(tracking)
        tracker = None if db is not None and not db.is_file() else Tracker(tracking)
        if tracker is None or tracker.attach_study(tables.study) is None:
            raise LookupError(missing)
        metrics, tags = parent_summary(tables)
        if isinstance(path, Path):
            tracker.log_parent_artifact(str(path), "report")
        else:
            with tempfile.TemporaryDirectory(prefix="initstudy-report-") as staged:
                for file in path:
                    if file.is_symlink() or not file.is_file():
                        raise LookupError(f"{file} is not a file the report wrote")
                    shutil.copyfile(file, Path(staged) / file.name)
                tracker.log_parent_artifact(staged, "report")
        tracker.set_parent_tags({**verdict_tags(verdicts), **tags})
        tracker.log_parent_metrics(metrics)
    except (TrackingError, LookupError) as exc:
        return " ".join(str(exc).split())
    return None


def parent_summary(tables: StudyTables) -> tuple[dict[str, float], dict[str, str]]:
    """The study's summary for its parent run: metrics ``trials_complete``,
    ``trials_<outcome>`` (every outcome, 0 when none), ``best_value`` and ``best_trial``
    (the objective's minimum over the complete trials: ``value``, or ``best_val_loss`` for
    that objective), and tags ``initstudy.outcomes`` and ``initstudy.best_trial``."""
    from models.spec import OUTCOMES

    trials = tables.trials
    counts = trials["outcome"].value_counts().to_dict() if len(trials) else {}
    metrics = {"trials_complete": float(len(trials))}
    metrics |= {f"trials_{o}": float(counts.get(o, 0)) for o in OUTCOMES}
    tags = {"initstudy.outcomes": ", ".join(f"{counts.get(o, 0)} {o}" for o in OUTCOMES)}
    objective = tables.spec_mapping.get("objective") or {}
    metric = objective.get("metric") if isinstance(objective, dict) else None
    column = "best_val_loss" if metric == "best_val_loss" else "value"
    values = trials[column].dropna() if column in trials else trials.iloc[0:0]
    if len(values):
        best = trials.loc[values.idxmin()]
        metrics |= {"best_value": float(best[column]), "best_trial": float(best.trial_number)}
        tags["initstudy.best_trial"] = str(int(best.trial_number))
    return metrics, tags

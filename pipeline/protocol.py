"""Running a tuned protocol: stage 1 (tune), the pre-registered pick, stage 2 (measure).

Each stage is an ordinary study run by the unchanged :class:`~pipeline.driver.Driver`
(specs from :mod:`pipeline.protocolspec`): ``NAME.tune`` first, then ``NAME``, which is
all that ``results``, ``report``, ``status`` and the verdicts read. Between them the rule
of :mod:`pipeline.analysis.protocol` picks each arm's lr from stage 1's stored results.

Stage 1 runs in rounds: after each, :func:`~pipeline.analysis.protocol.extension_lrs`
reads its trials and names the lrs beyond the grid that arms picked at an end of their
range must also try; the next round (the same study, its grid grown by those points)
trains them, until no arm asks for more (at most ``protocol.extensions`` rounds more).
Resuming reruns nothing that finished: the Driver skips complete trials, and the
extensions and the pick are recomputed from the storage; stage 2's study pins its chosen
lrs, so a pick that came out differently is refused rather than mixed in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pipeline.analysis.protocol import ArmPick, extension_lrs, pick_lr
from pipeline.driver import Driver, RunOptions, StudyOutcome
from pipeline.execution import Executor
from pipeline.progress import Reporter
from pipeline.protocolspec import TUNE_SUFFIX, arm_params, measure_stage, tune_stage
from pipeline.results import load_tables
from pipeline.studyspec import StudySpec

__all__ = ["ProtocolOutcome", "run_protocol", "tune_name"]


@dataclass
class ProtocolOutcome:
    """What a run of both stages did; ``measure`` is None when stage 1 did not finish."""

    tune: StudyOutcome
    measure: StudyOutcome | None = None
    picks: list[ArmPick] = field(default_factory=list)


def tune_name(name: str) -> str:
    """Stage 1's study name."""
    return name + TUNE_SUFFIX


def run_protocol(
    spec: StudySpec,
    spec_text: str,
    options: RunOptions,
    reporter: Reporter,
    executor: Callable[[], Executor] | None = None,
    on_stage: Callable[[str, StudyOutcome], None] = lambda stage, outcome: None,
) -> ProtocolOutcome:
    """Run (or resume) both stages of a tuned spec; ``on_stage`` hears each one's outcome.

    Stage 2 starts only once every stage-1 trial is complete, the extensions included:
    the pick needs them all. ``on_stage`` hears ``tune`` once (trained and logged: every
    round's).

    Raises:
        storage.StudyError: as :meth:`Driver.run`, and when stage 2's stored choice of lrs
            differs from the one recomputed from stage 1.
    """
    name = options.study_name or spec.name
    tune_opts = replace(options, study_name=tune_name(name))
    extra: dict[str, list[float]] = {}
    trained = logged = 0
    for _ in range(spec.protocol.extensions + 1):
        stage = tune_stage(spec, extra)
        tune = Driver(stage, spec_text, tune_opts, reporter, executor).run()
        trained, logged = trained + tune.trained, logged + tune.logged
        tune.trained, tune.logged = trained, logged  # every round of stage 1
        outcome = ProtocolOutcome(tune)
        if tune.failed or tune.counts.remaining or tune.interrupted:
            on_stage("tune", tune)
            return outcome
        trials = load_tables(tune_name(name), options.storage_url).trials
        wanted = extension_lrs(trials, arm_params(spec), spec.protocol)
        if wanted == extra:
            break
        extra = wanted
    on_stage("tune", outcome.tune)
    outcome.picks = pick_lr(trials, arm_params(spec), spec.protocol.pick, spec.protocol.lr)
    measure = measure_stage(spec, {p.key: p.lr for p in outcome.picks})
    measure_opts = replace(options, study_name=name)
    outcome.measure = Driver(measure, spec_text, measure_opts, reporter, executor).run()
    on_stage("measure", outcome.measure)
    return outcome

"""The tuned-lr protocol: its spec, the pre-registered pick, and both stages run on the
in-process executor (tiny trials, a real SQLite Optuna storage and MLflow store, no Ray)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from models.spec import TrialSpec
from pipeline import protocol as proto
from pipeline import storage as st
from pipeline.analysis.protocol import ArmPick, LrScore, pick_lr, tuning, tuning_table
from pipeline.analysis.report import write_report
from pipeline.check import check_study
from pipeline.driver import RunOptions
from pipeline.execution import InProcessExecutor
from pipeline.progress import Reporter
from pipeline.protocolspec import arm_key, measure_stage, stage_trials, tune_stage
from pipeline.results import load_tables
from pipeline.storage import StudyError
from pipeline.studyspec import SpecError, StudySpec, parse_study_spec
from pipeline.tracking import read_trials

TINY = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8}
TINY |= {"batches_per_epoch": 2, "max_epochs": 3, "val_size": 16}
LRS = [1.0e-3, 1.0e-2]
TUNING = [100, 101]
MEASURE = [0, 1]
_names = itertools.count()


def doc(**extra: Any) -> dict[str, Any]:
    """A tiny tuned spec; keys in ``extra`` replace top-level keys (None removes one)."""
    out: dict[str, Any] = {
        "name": "tuned",
        "sampler": "grid",
        "trial": dict(TINY),
        "space": {"init": ["xavier", "uniform01"], "seed": list(MEASURE)},
        # no extensions: every pick of a 2-lr grid is at an end (test_protocol_extensions.py)
        "protocol": {
            "kind": "tuned",
            "lr": list(LRS),
            "tuning_seeds": list(TUNING),
            "extensions": 0,
        },
    }
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


# --------------------------------------------------------------------------- the spec


def test_a_tuned_spec_counts_both_stages_and_hashes_its_protocol() -> None:
    spec = parse_study_spec(doc())
    assert stage_trials(spec) == (2 * 2 * 2, 2 * 2)
    assert spec.n_trials_planned == 12
    other = parse_study_spec(
        doc(protocol={"kind": "tuned", "lr": [1e-3, 3e-3], "tuning_seeds": TUNING})
    )
    assert other.spec_hash() != spec.spec_hash()
    fixed = doc(protocol=None)
    fixed["trial"]["lr"] = 1e-3
    plain = parse_study_spec(fixed)
    assert plain.n_trials_planned == 4
    # an absent section and an explicit fixed one hash the same (old studies resume)
    assert (
        parse_study_spec({**fixed, "protocol": {"kind": "fixed"}}).spec_hash() == plain.spec_hash()
    )


def test_the_stages_specs() -> None:
    spec = parse_study_spec(doc())
    tune = tune_stage(spec)
    assert (tune.name, tune.stage, tune.n_trials_planned) == ("tuned.tune", "tune", 8)
    specs = [tune.trial_spec(p) for p in tune.grid_points()]
    assert {s.seed for s in specs} == set(TUNING)
    assert {s.lr for s in specs} == set(LRS)
    chosen = {arm_key({"init": "xavier"}): 1e-2, arm_key({"init": "uniform01"}): 1e-3}
    measure = measure_stage(spec, chosen)
    assert (measure.name, measure.stage, measure.n_trials_planned) == ("tuned", "measure", 4)
    assert measure.spec_hash() == spec.spec_hash()
    got = {(s.init, s.seed, s.lr) for s in map(measure.trial_spec, measure.grid_points())}
    assert got == {
        (i, seed, lr) for i, lr in (("xavier", 1e-2), ("uniform01", 1e-3)) for seed in MEASURE
    }
    with pytest.raises(ValueError, match="no lr chosen"):
        measure_stage(spec, {arm_key({"init": "xavier"}): 1e-2})


def _protocol(**changes: Any) -> dict[str, Any]:
    return {"kind": "tuned", "lr": list(LRS), "tuning_seeds": list(TUNING), **changes}


BAD: list[tuple[str, dict[str, Any], str, str]] = [
    (
        "lr in space",
        doc(space={"init": ["xavier"], "seed": MEASURE, "lr": [1e-3, 1e-2]}),
        "space.lr",
        "set by protocol",
    ),
    ("lr in trial", doc(trial={**TINY, "lr": 1e-3}), "trial.lr", "set by protocol"),
    (
        "overlapping seeds",
        doc(protocol=_protocol(tuning_seeds=[1, 100])),
        "protocol.tuning_seeds",
        "must not overlap the measurement seeds",
    ),
    ("random sampler", doc(sampler="random", n_trials=4), "protocol.kind", "grid sampler"),
    ("n_trials", doc(n_trials=2), "n_trials", "both stages run their whole grid"),
    ("one lr", doc(protocol=_protocol(lr=[1e-3])), "protocol.lr", "at least 2"),
    ("no lr", doc(protocol=_protocol(lr=None)), "protocol.lr", "at least 2"),
    ("lr <= 0", doc(protocol=_protocol(lr=[0.0, 1e-3])), "protocol.lr[0]", "> 0"),
    ("unknown pick", doc(protocol=_protocol(pick="best")), "protocol.pick", "km_median"),
    ("unknown key", doc(protocol=_protocol(lrs=[1])), "protocol.lrs", "allowed: kind"),
    (
        "lr with a fixed protocol",
        doc(protocol={"kind": "fixed", "lr": [1e-3, 1e-2]}),
        "protocol.lr",
        "only for kind: tuned",
    ),
]


@pytest.mark.parametrize(("spec", "where", "what"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_protocols_are_one_clear_line(spec: dict[str, Any], where: str, what: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_study_spec(spec, "x.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"x.yaml: {where}: "), message
    assert what in message, message


# --------------------------------------------------------------------------- the rule


def rows(
    init: str, lr: float, epochs: list[int | None], losses: list[float]
) -> list[dict[str, Any]]:
    return [
        {"init": init, "lr": lr, "converged_epoch": e, "diverged_epoch": None}
        | {"max_epochs": 10, "best_val_loss": loss}
        for e, loss in zip(epochs, losses, strict=True)
    ]


def test_the_pick_is_the_rule_on_a_synthetic_table() -> None:
    table = pd.DataFrame(
        # xavier: KM medians 6, 4, 4 -> 3e-3 and 1e-2 tie; 1e-2 has the lower val loss
        rows("xavier", 1e-3, [5, 6, 7], [0.1, 0.1, 0.1])
        + rows("xavier", 3e-3, [3, 4, None], [0.2, 0.2, 0.2])
        + rows("xavier", 1e-2, [4, 4, 4], [0.05, 0.05, 0.05])
        # uniform01: no lr reaches a median; 3e-3 and 1e-2 tie on val loss -> the smaller lr
        + rows("uniform01", 1e-3, [None, None, 9], [0.5, 0.5, 0.5])
        + rows("uniform01", 3e-3, [None, None, None], [0.3, 0.3, 0.3])
        + rows("uniform01", 1e-2, [None, None, None], [0.3, 0.2, 0.4])
    )
    picks = {p.arm["init"]: p for p in pick_lr(table, ["init"])}
    assert (picks["xavier"].lr, picks["xavier"].reached) == (1e-2, True)
    assert [s.median for s in picks["xavier"].scores] == [6, 4, 4]
    assert (picks["uniform01"].lr, picks["uniform01"].reached) == (3e-3, False)
    assert [s.median for s in picks["uniform01"].scores] == [None, None, None]
    curve = tuning_table(list(picks.values()))
    assert sorted(curve["chosen lr"]) == ["0.003", "0.01"]
    assert sorted(curve["any median"]) == ["no", "yes"]
    with pytest.raises(ValueError, match="unknown pick rule"):
        pick_lr(table, ["init"], "best")


# --------------------------------------------------------------------------- both stages


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run")


class Protocol:
    """Runs of one tuned study, each on fresh in-process executors that are kept."""

    def __init__(self, run_dir: Path, spec: StudySpec, text: str) -> None:
        self.spec, self.text = spec, text
        self.name = f"{spec.name}-{next(_names)}"
        self.options = RunOptions(run_dir=run_dir, study_name=self.name)
        self.executors: list[InProcessExecutor] = []

    def make(self) -> InProcessExecutor:
        self.executors.append(InProcessExecutor(2))
        return self.executors[-1]

    def run(self) -> proto.ProtocolOutcome:
        return proto.run_protocol(
            self.spec, self.text, self.options, Reporter(enabled=False), self.make
        )

    def trained(self, first: int = 0) -> list[TrialSpec]:
        return [s for e in self.executors[first:] for pack in e.submitted for s in pack]

    def study(self, name: str) -> Any:
        return st.load_existing_study(st.make_storage(self.options.storage_url), name)


@pytest.fixture
def tuned(run_dir: Path) -> Protocol:
    d = doc()
    return Protocol(run_dir, parse_study_spec(d), yaml.safe_dump(d))


@pytest.mark.slow  # it runs a study (in this process)
def test_both_stages_run_once_and_stage_two_uses_the_chosen_lrs(
    tuned: Protocol, tmp_path: Path
) -> None:
    done = tuned.run()
    assert (done.tune.trained, done.tune.failed) == (8, [])
    assert done.measure is not None
    assert (done.measure.trained, done.measure.counts.complete) == (4, 4)
    chosen = {p.arm["init"]: p.lr for p in done.picks}
    assert set(chosen) == {"xavier", "uniform01"} and set(chosen.values()) <= set(LRS)
    stage1, stage2 = tuned.trained()[:8], tuned.trained()[8:]
    assert {(s.seed, s.lr) for s in stage1} == set(itertools.product(TUNING, LRS))
    assert sorted((s.init, s.seed, s.lr) for s in stage2) == sorted(
        (i, seed, chosen[i]) for i in chosen for seed in MEASURE
    )
    # what the verdicts read: stage 2 alone, tagged and pinned
    measure = tuned.study(tuned.name)
    assert measure.user_attrs[st.STAGE] == "measure"
    assert measure.user_attrs[st.CHOSEN_LR] == {p.key: p.lr for p in done.picks}
    assert len(measure.trials) == 4
    assert {t.user_attrs[st.SEED] for t in measure.trials} == set(MEASURE)
    assert all("lr" not in t.params for t in measure.trials)
    assert tuned.study(proto.tune_name(tuned.name)).user_attrs[st.STAGE] == "tune"
    runs = read_trials(tuned.options.tracking, tuned.name)
    assert len(runs) == 4 and {r["tags"][st.STAGE] for r in runs} == {"measure"}
    tune_runs = read_trials(tuned.options.tracking, proto.tune_name(tuned.name))
    assert len(tune_runs) == 8 and {r["tags"][st.STAGE] for r in tune_runs} == {"tune"}

    # check reads each stage's grid (the measure stage at its chosen lrs)
    for name in (tuned.name, proto.tune_name(tuned.name)):
        assert check_study(name, tuned.options.storage_url, tuned.options.tracking).ok

    # the report's section, from stage 1's tables
    stage1 = load_tables(proto.tune_name(tuned.name), tuned.options.storage_url)
    section = tuning(stage1, ["init"])
    assert {p.key: p.lr for p in section.picks} == {p.key: p.lr for p in done.picks}
    assert sorted(section.shared["lr"]) == sorted(f"{lr:g}" for lr in LRS)
    out = tmp_path / "report"
    stage2 = load_tables(tuned.name, tuned.options.storage_url)
    files = write_report(stage2, out, tuning=section, n_boot=100)
    markdown = files["markdown"].read_text()
    assert "## Tuned learning rate" in markdown and "chosen lr" in markdown
    assert "how the verdicts would change at a shared lr" in markdown.lower()
    assert "Tuned learning rate" in files["html"].read_text()

    again = tuned.run()
    assert again.measure is not None
    assert (again.tune.trained, again.measure.trained) == (0, 0)
    assert {p.key: p.lr for p in again.picks} == {p.key: p.lr for p in done.picks}


@pytest.mark.slow  # it runs a study (in this process)
def test_a_changed_pick_on_resume_is_refused(
    tuned: Protocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    tuned.run()
    started = len(tuned.executors)

    def other(trials: pd.DataFrame, arms: list[str], rule: str, *base: Any) -> list[ArmPick]:
        picks = pick_lr(trials, arms, rule, *base)
        flip = {LRS[0]: LRS[1], LRS[1]: LRS[0]}
        return [ArmPick(p.arm, flip[p.lr], p.reached, p.scores) for p in picks]

    monkeypatch.setattr(proto, "pick_lr", other)
    with pytest.raises(StudyError, match="chosen_lr"):
        tuned.run()
    assert not tuned.trained(first=started), "nothing is trained by a refused resume"


@pytest.mark.parametrize(
    ("medians", "chosen", "edge"),
    [
        ([30.0, 12.0, 20.0], 3e-3, False),  # an interior minimum
        ([30.0, 20.0, 12.0], 1e-2, True),  # still falling at the largest lr
        ([12.0, 20.0, 30.0], 1e-3, True),  # and at the smallest
        ([None, None, None], 1e-3, True),  # nothing reached: flagged all the same
    ],
)
def test_a_pick_at_the_end_of_the_grid_is_flagged(
    medians: list[float | None], chosen: float, edge: bool
) -> None:
    scores = [
        LrScore(lr, 3, m, "x", 0.1) for lr, m in zip((1e-3, 3e-3, 1e-2), medians, strict=True)
    ]
    pick = ArmPick({"init": "xavier"}, chosen, any(m is not None for m in medians), scores)
    assert pick.at_edge is edge
    column = tuning_table([pick])["best lr at the edge of the searched range"]
    assert column.tolist() == ["yes" if edge else "no"]

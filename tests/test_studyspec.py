"""Tests for pipeline/studyspec.py: loading and validating study specs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from models.spec import TrialSpec
from pipeline.protocolspec import stage_trials
from pipeline.studyspec import (
    DIVERGED_LOSS,
    MAX_GRID,
    Choice,
    Fixed,
    Range,
    SpecError,
    StudySpec,
    load_study_spec,
    parse_study_spec,
)

STUDIES = Path(__file__).resolve().parent.parent / "studies"
SHIPPED = sorted(STUDIES.glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def base(**overrides: Any) -> dict[str, Any]:
    """A small valid grid spec; keys in ``overrides`` replace (None removes) top-level keys."""
    spec: dict[str, Any] = {
        "name": "t",
        "sampler": "grid",
        "trial": {"task": "adding", "hidden": 8, "max_epochs": 5},
        "space": {"init": ["xavier", "uniform01"], "seed": [0, 1, 2]},
    }
    for key, value in overrides.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    return spec


def tpe_spec() -> StudySpec:
    return parse_study_spec(
        {
            "name": "tpe",
            "sampler": "tpe",
            "n_trials": 6,
            "trial": {"max_epochs": 3, "data_seed": 7},
            "space": {
                "init": ["xavier", "orthogonal"],
                "init_recurrent": [None, "identity"],
                "scale": {"low": 0.5, "high": 2.0, "log": True},
                "seq_len": {"low": 5, "high": 50, "step": 5},
                "lr": 0.01,
                "seed": [0, 1],
            },
        }
    )


# --------------------------------------------------------------------------- shipped specs


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_specs_load(path: Path) -> None:
    spec = load_study_spec(path)
    head = path.read_text().splitlines()[:8]
    assert head[0].startswith("#")
    assert any("Question" in line for line in head)
    assert any(f"initstudy run studies/{path.name}" in line for line in head)
    assert spec.name == path.stem
    if spec.is_grid and spec.protocol.tuned:  # both stages: tune and measure
        assert spec.n_trials_planned == sum(stage_trials(spec))
        assert stage_trials(spec)[1] == len(spec.grid_points())
    elif spec.is_grid:
        raw_space = yaml.safe_load(path.read_text())["space"]
        expected = math.prod(len(v) for v in raw_space.values() if isinstance(v, list))
        assert spec.n_trials_planned == expected == len(spec.grid_points())
    for params in spec.grid_points() if spec.is_grid else []:  # (sampled.yaml: no grid)
        spec.trial_spec(params)


def test_shipped_set_is_complete() -> None:
    assert {p.stem for p in SHIPPED} >= {"smoke", "headline", "scale_sweep", "hidden_sweep"}
    smoke = load_study_spec(STUDIES / "smoke.yaml")
    assert smoke.n_trials_planned == 48
    assert load_study_spec(STUDIES / "headline.yaml").n_trials_planned == 90
    assert smoke.claim_hash() == load_study_spec(STUDIES / "headline.yaml").claim_hash()


# --------------------------------------------------------------------------- bad specs

BAD_SPECS: list[tuple[str, Any, str, str]] = [
    # (id, spec dict or YAML text, fragment of the path, another fragment of the message)
    ("unknown top key", base(colour="red"), "colour", "allowed: name"),
    ("claims not a list", base(claims="C4"), "claims", "non-empty list"),
    ("unknown claim id", base(claims=["C9"]), "claims[0]", "built-in: C1, C2"),
    ("claim twice", base(claims=["C4", "C4"]), "claims[1]", "listed twice"),
    (
        "claim unknown scheme",
        base(claims=[{"faster": "xavierr", "than": "uniform01", "by": [2, 10]}]),
        "claims[0].faster",
        "known: glorot_normal",
    ),
    (
        "claim range reversed",
        base(claims=[{"faster": "xavier", "than": "uniform01", "by": [10, 2]}]),
        "claims[0].by",
        "0 < low < high",
    ),
    (
        "claim where column",
        base(
            claims=[{"faster": "xavier", "than": "orthogonal", "by": [2, 10], "where": {"x": 1}}]
        ),
        "claims[0].where.x",
        "allowed: task",
    ),
    (
        "claim unknown key",
        base(claims=[{"faster": "xavier", "than": "orthogonal", "by": [2, 10], "on": 1}]),
        "claims[0].on",
        "allowed: id, faster",
    ),
    ("patience 0", base(trial={"patience": 0}), "trial.patience", ">= 1"),
    (
        "recurrent_scale < 0",
        base(trial={"recurrent_scale": -1.0}),
        "trial.recurrent_scale",
        ">= 0",
    ),
    ("unknown trial key", base(trial={"hiden": 8}), "trial.hiden", "allowed:"),
    ("unknown space key", base(space={"batch_size": [1, 2]}), "space.batch_size", "init, "),
    ("wrong type int", base(trial={"hidden": "big"}), "trial.hidden", "integer"),
    ("float for int", base(trial={"max_epochs": 2.5}), "trial.max_epochs", "integer"),
    ("bool for int", base(space={"seed": [True, 2]}), "space.seed[0]", "integer"),
    ("lr as text", base(trial={"lr": "1e-3"}), "trial.lr", "1.0e-3"),
    ("empty choices", base(space={"init": []}), "space.init", "empty"),
    ("duplicate choices", base(space={"seq_len": [10, 20, 10]}), "space.seq_len[2]", "dup"),
    (
        "low > high",
        base(sampler="tpe", n_trials=3, space={"scale": {"low": 2.0, "high": 1.0}}),
        "space.scale.low",
        "must be <= high (got low=2.0, high=1.0)",
    ),
    (
        "log low 0",
        base(sampler="random", n_trials=3, space={"lr": {"low": 0, "high": 1, "log": True}}),
        "space.lr.low",
        "> 0",
    ),
    (
        "step <= 0",
        base(space={"seq_len": {"low": 5, "high": 10, "step": 0}}),
        "space.seq_len.step",
        "> 0",
    ),
    (
        "unknown range key",
        base(space={"seq_len": {"low": 5, "high": 10, "steps": 2}}),
        "space.seq_len.steps",
        "allowed: low",
    ),
    ("range on a name", base(space={"init": {"low": 1, "high": 2}}), "space.init", "list"),
    ("bad scheme", base(space={"init": ["xavier", "kaiming"]}), "space.init[1]", "orthogonal"),
    ("bad recurrent", base(trial={"init_recurrent": "nope"}), "trial.init_recurrent", "xavier"),
    ("bad task", base(trial={"task": "parity"}), "trial.task", "adding, charlm, copy"),
    ("bad cell", base(space={"cell": ["lstm", "transformer"]}), "space.cell[1]", "rnn_tanh"),
    ("bad optimizer", base(trial={"optimizer": "lion"}), "trial.optimizer", "rmsprop"),
    (
        "grid float range",
        base(space={"scale": {"low": 0.5, "high": 2.0}}),
        "space.scale",
        "grid sampler needs lists or int ranges",
    ),
    ("n_trials missing tpe", base(sampler="tpe"), "n_trials", "required"),
    ("n_trials > grid", base(n_trials=7), "n_trials", "grid size 6"),
    ("n_trials zero", base(sampler="random", n_trials=0), "n_trials", ">= 1"),
    ("bad sampler", base(sampler="cmaes"), "sampler", "'tpe'"),
    ("bad metric", base(objective={"metric": "accuracy"}), "objective.metric", "best_val_loss"),
    ("unknown objective key", base(objective={"goal": "min"}), "objective.goal", "metric"),
    ("negative hidden", base(trial={"hidden": -4}), "trial.hidden", ">= 1"),
    ("zero seq_len choice", base(space={"seq_len": [0, 10]}), "space.seq_len[0]", ">= 1"),
    (
        "range low 0",
        base(space={"hidden": {"low": 0, "high": 4}}),
        "space.hidden.low",
        ">= 1",
    ),
    ("lr zero", base(trial={"lr": 0.0}), "trial.lr", "> 0"),
    ("clip negative", base(space={"clip": [1.0, -1.0]}), "space.clip[1]", "> 0"),
    ("negative seed", base(space={"seed": [0, -1]}), "space.seed[1]", "[0, 2**32 - 1]"),
    ("lr inf", base(trial={"lr": math.inf}), "trial.lr", "finite"),
    ("both trial and space", base(trial={"seed": 3}), "space.seed", "not both"),
    ("name traversal", base(name="../evil"), "name", "path separators"),
    ("name missing", base(name=None), "name", "required"),
    ("corpus on adding", base(trial={"corpus": "x.txt"}), "trial.corpus", "charlm"),
    ("space not mapping", base(space=["init"]), "space", "mapping"),
    ("bad yaml", "name: x\nspace: [unclosed\n", "invalid YAML", "line"),
    ("top-level list", "- name: x\n- sampler: grid\n", "<top>", "mapping"),
    ("empty file", "", "<top>", "empty"),
    (
        "yaml unknown nested",
        "name: y\nspace:\n  init: [xavier]\n  scale: {low: 1, high: 2, lg: true}\n",
        "space.scale.lg",
        "allowed",
    ),
]


@pytest.mark.parametrize(
    ("spec", "where", "what"),
    [case[1:] for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_bad_spec_is_one_clear_error(tmp_path: Path, spec: Any, where: str, what: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    with pytest.raises(SpecError) as info:
        load_study_spec(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ")
    assert "\n" not in msg
    assert where in msg
    assert what in msg
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="file not found"):
        load_study_spec(tmp_path / "nope.yaml")
    assert list(tmp_path.iterdir()) == []


def test_parse_names_the_source() -> None:
    with pytest.raises(SpecError, match=r"^mine: trial\.hidden: "):
        parse_study_spec(base(trial={"hidden": 0}), source="mine")
    with pytest.raises(SpecError, match=r"^<spec>: <top>: must be a mapping"):
        parse_study_spec([1, 2])


# --------------------------------------------------------------------------- views


def test_space_entries_are_parsed_into_models() -> None:
    spec = tpe_spec()
    assert isinstance(spec.space["init"], Choice)
    assert isinstance(spec.space["scale"], Range) and spec.space["scale"].type == "float"
    assert isinstance(spec.space["seq_len"], Range) and spec.space["seq_len"].type == "int"
    assert spec.space["lr"] == Fixed(value=0.01)


def test_trial_spec_data_seed_follows_seed_unless_fixed() -> None:
    spec = parse_study_spec(base(trial={"hidden": 8, "max_epochs": 5, "lr": 1}))
    ts = spec.trial_spec({"init": "uniform01", "seed": 2})
    assert isinstance(ts, TrialSpec)
    assert (ts.seed, ts.data_seed) == (2, 2)
    assert (ts.init, ts.hidden, ts.max_epochs) == ("uniform01", 8, 5)
    assert ts.lr == 1.0 and isinstance(ts.lr, float)
    assert ts.batch_size == TrialSpec().batch_size  # untouched fields keep their defaults

    fixed = tpe_spec().trial_spec(
        {"init": "xavier", "init_recurrent": None, "scale": 1.5, "seq_len": 10, "seed": 1}
    )
    assert (fixed.seed, fixed.data_seed, fixed.lr, fixed.max_epochs) == (1, 7, 0.01, 3)

    no_seed = parse_study_spec(base(space={"init": ["xavier"]}, trial={"seed": 4}))
    assert no_seed.trial_spec({"init": "xavier"}).data_seed == 4


def test_trial_spec_rejects_wrong_params() -> None:
    spec = parse_study_spec(base())
    with pytest.raises(ValueError, match="missing"):
        spec.trial_spec({"init": "xavier"})
    with pytest.raises(ValueError, match="unexpected"):
        spec.trial_spec({"init": "xavier", "seed": 0, "hidden": 3})


def test_grid_points_cover_the_grid() -> None:
    spec = parse_study_spec(
        base(
            space={
                "init": ["xavier", "orthogonal"],
                "seq_len": {"low": 5, "high": 15, "step": 5},
                "init_recurrent": [None, "identity"],
                "seed": [0, 1],
                "lr": 0.1,
            }
        )
    )
    points = spec.grid_points()
    assert spec.grid() == {
        "init": ["xavier", "orthogonal"],
        "init_recurrent": [None, "identity"],
        "seed": [0, 1],
        "seq_len": [5, 10, 15],
    }
    assert len(points) == spec.n_trials_planned == spec.grid_size == 24
    assert len({tuple(sorted(p.items(), key=str)) for p in points}) == 24
    assert all(set(p) == set(spec.grid()) for p in points)
    assert points == spec.grid_points()  # deterministic
    assert spec.seeds_per_cell() == 2
    assert len({spec.trial_spec(p).key() for p in points}) == 24


def test_grid_n_trials_subset() -> None:
    spec = parse_study_spec(base(n_trials=4))
    assert spec.n_trials_planned == 4 and spec.grid_size == 6


def test_distributions_for_tpe() -> None:
    spec = tpe_spec()
    dists = spec.distributions()
    assert set(dists) == {"init", "init_recurrent", "scale", "seq_len", "seed"}
    assert dists["init_recurrent"] == CategoricalDistribution([None, "identity"])
    assert dists["scale"] == FloatDistribution(0.5, 2.0, log=True)
    assert dists["seq_len"] == IntDistribution(5, 50, step=5)
    assert isinstance(dists["seed"], CategoricalDistribution)
    assert spec.n_trials_planned == 6
    assert spec.seeds_per_cell() == 2
    assert isinstance(spec.make_sampler(), optuna.samplers.TPESampler)


def test_grid_spec_runs_with_optuna_ask_tell() -> None:
    spec = load_study_spec(STUDIES / "smoke.yaml")
    study = optuna.create_study(direction=spec.direction, sampler=spec.make_sampler())
    asked = [study.ask(spec.distributions()) for _ in range(spec.n_trials_planned)]
    seen = [t.params for t in asked]
    for trial in asked:
        spec.trial_spec(trial.params)
        study.tell(trial, spec.score({"converged_epoch": 3, "diverged_epoch": None}))
    key = sorted(map(str, seen))
    assert key == sorted(map(str, spec.grid_points()))


@pytest.mark.parametrize("sampler", ["random", "qmc", "tpe"])
def test_other_samplers_run_with_optuna(sampler: str) -> None:
    data = base(sampler=sampler, n_trials=3)
    data["space"] = {"scale": {"low": 0.5, "high": 2.0}, "seed": {"low": 0, "high": 9}}
    spec = parse_study_spec(data)
    study = optuna.create_study(sampler=spec.make_sampler())
    for _ in range(spec.n_trials_planned):
        trial = study.ask(spec.distributions())
        ts = spec.trial_spec(trial.params)
        assert 0.5 <= ts.scale <= 2.0 and ts.data_seed == ts.seed
        study.tell(trial, 1.0)
    assert spec.seeds_per_cell() is None


def test_hashes() -> None:
    a = parse_study_spec(base(claim="c"))
    b = parse_study_spec(yaml.safe_load(yaml.safe_dump(base(claim="c"))))
    reordered = base(claim="c")
    reordered["space"] = dict(reversed(list(reordered["space"].items())))
    assert a.spec_hash() == b.spec_hash() == parse_study_spec(reordered).spec_hash()
    assert len(a.spec_hash()) == 16
    assert a.spec_hash() != parse_study_spec(base(claim="d")).spec_hash()
    assert a.claim_hash() != parse_study_spec(base()).claim_hash()
    assert parse_study_spec(base()).claim_hash() == parse_study_spec(base(claim="")).claim_hash()


# --------------------------------------------------------------------------- scoring


def test_score_epochs_to_converge() -> None:
    spec = parse_study_spec(base())  # max_epochs 5
    assert spec.score({"converged_epoch": 3, "diverged_epoch": None, "best_val_loss": 0.1}) == 3
    censored = {"converged_epoch": None, "diverged_epoch": None, "best_val_loss": 0.4}
    assert spec.score(censored) == 6
    diverged = {"converged_epoch": None, "diverged_epoch": 2, "best_val_loss": math.nan}
    assert spec.score(diverged) == 6
    assert spec.direction == "minimize"


def test_score_best_val_loss() -> None:
    spec = parse_study_spec(base(objective={"metric": "best_val_loss"}))
    assert (
        spec.score({"converged_epoch": None, "diverged_epoch": None, "best_val_loss": 0.25})
        == 0.25
    )
    assert (
        spec.score({"converged_epoch": None, "diverged_epoch": 3, "best_val_loss": 0.2})
        == DIVERGED_LOSS
    )
    assert (
        spec.score({"converged_epoch": None, "diverged_epoch": None, "best_val_loss": math.nan})
        == DIVERGED_LOSS
    )


# --------------------------------------------------------------------------- property

GOOD = {
    "init": ["xavier", "orthogonal", "uniform01", "he_normal"],
    "init_recurrent": [None, "identity", "xavier"],
    "cell": ["rnn_tanh", "lstm", "gru"],
    "optimizer": ["sgd", "adam"],
    "seq_len": [1, 5, 10, 50],
    "hidden": [1, 8, 64],
    "seed": [0, 1, 2, 3],
    "scale": [0.0, 0.5, 1.0, 2],
    "lr": [1e-4, 0.01, 1],
    "clip": [None, 0.5, 1.0],
}
BAD = ["nope", -1, 0, 2.5, None, True, "", [1], {"a": 1}, math.nan, 10**40]


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` seven times in eight, else ``bad``: most generated specs should load."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 0 else good)


numbers = mostly(
    st.one_of(st.integers(0, 60), st.floats(0.001, 60.0)),
    st.one_of(st.integers(-3, 0), st.floats(-1.0, 0.0), st.sampled_from(BAD)),
)


@st.composite
def entries(draw: st.DrawFn, key: str) -> Any:
    pool = GOOD.get(key, [1, 2])
    kind = draw(st.sampled_from(["list", "list", "range", "scalar"]))
    if kind == "list":
        item = mostly(st.sampled_from(pool), st.sampled_from(BAD))
        good_list = st.lists(item, min_size=1, max_size=4, unique_by=repr)
        return draw(mostly(good_list, st.lists(item, max_size=3)))
    if kind == "scalar":
        return draw(mostly(st.sampled_from(pool), st.sampled_from(BAD)))
    low, high = draw(numbers), draw(numbers)
    rng: dict[str, Any] = {"low": low, "high": high}
    if draw(st.booleans()):
        rng["low"], rng["high"] = high, low
    if draw(st.booleans()):
        rng["log"] = draw(mostly(st.booleans(), st.just("yes")))
    if draw(st.booleans()):
        rng["step"] = draw(mostly(st.sampled_from([1, 2, 5, 0.5]), st.sampled_from([0, -1])))
    if draw(st.integers(0, 9)) == 0:
        rng["type"] = draw(st.sampled_from(["int", "float", "str"]))
    return rng


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(
        st.lists(
            mostly(st.sampled_from(list(GOOD)), st.sampled_from(["batch_size", "bogus"])),
            max_size=4,
            unique=True,
        )
    )
    sampler = draw(mostly(st.sampled_from(["grid", "random", "qmc", "tpe"]), st.just("bogus")))
    spec: dict[str, Any] = {
        "name": draw(mostly(st.sampled_from(["ok", "a.b-c_1"]), st.sampled_from(["../x", ""]))),
        "sampler": sampler,
        "space": {k: draw(entries(k)) for k in keys},
    }
    if sampler != "grid" or draw(st.booleans()):
        good_n = st.sampled_from([1, 3, 10, 1000])
        n_trials = draw(mostly(good_n, st.sampled_from([0, -2, "5", 2.0, None])))
        if n_trials is not None:
            spec["n_trials"] = n_trials
    if draw(st.integers(0, 4)) == 0:
        spec["trial"] = {draw(st.sampled_from([*GOOD, "bogus"])): draw(st.sampled_from([1, 8]))}
    return spec


def expected_grid_size(spec: StudySpec) -> int:
    size = 1
    for param in spec.space.values():
        if isinstance(param, Choice):
            size *= len(param.choices)
        elif isinstance(param, Range):
            assert param.type == "int"
            size *= len(range(int(param.low), int(param.high) + 1, int(param.step or 1)))
    return size


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_generated_specs_load_or_raise_spec_error(data: dict[str, Any]) -> None:
    try:
        spec = parse_study_spec(data)
    except SpecError as exc:
        assert "\n" not in str(exc)
        event("SpecError")
        return
    event(f"loaded ({spec.sampler})")
    if spec.is_grid:
        size = expected_grid_size(spec)
        assert size <= MAX_GRID
        assert spec.n_trials_planned == data.get("n_trials", size)
        points = spec.grid_points()
        assert len(points) == size
        spec.trial_spec(points[0])
    else:
        assert spec.n_trials_planned == data["n_trials"]
        dists = spec.distributions()
        assert set(dists) == set(spec.searched())
        assert type(spec.make_sampler()).__name__.lower().startswith(spec.sampler)


def test_declared_claims_load_and_stay_out_of_the_spec_hash() -> None:
    plain = parse_study_spec(base(), "x.yaml")
    declared = parse_study_spec(
        base(claims=["C4", {"faster": "xavier", "than": "uniform01", "by": [2, 10]}]), "x.yaml"
    )
    assert declared.claims is not None and len(declared.claims) == 2
    assert declared.spec_hash() == plain.spec_hash()  # judging differently reruns nothing


def test_description_is_outside_the_spec_hash() -> None:
    """Editing only the description must not block a resume; a spec without one keeps the
    hash it always had."""
    plain = parse_study_spec(base())
    assert plain.spec_hash() == "e38f17c4eb199c79"
    one, other = (
        parse_study_spec(base(description="first")),
        parse_study_spec(base(description="2")),
    )
    assert one.spec_hash() == other.spec_hash() == plain.spec_hash()
    assert parse_study_spec(base(name="u")).spec_hash() != plain.spec_hash()


def test_sizes_are_capped_so_the_estimate_stays_finite() -> None:
    with pytest.raises(SpecError, match=r"n_trials: must be <= 1000000"):
        parse_study_spec(base(sampler="random", n_trials=10**400))
    with pytest.raises(SpecError, match=r"trial\.hidden: must be <= 4096 \(got 1000"):
        parse_study_spec(base(trial={"hidden": 10**400}))
    with pytest.raises(SpecError, match=r"trial\.batch_size: batch_size x seq_len x hidden"):
        parse_study_spec(base(trial={"batch_size": 4096}, space={"hidden": [8, 4096]}))
    largest = parse_study_spec(
        base(sampler="random", n_trials=10**6, trial={"max_epochs": 10**5}, space={})
    )
    assert math.isfinite(largest.estimated_cpu_seconds())

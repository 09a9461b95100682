"""The private names of Optuna and Ray that initstudy uses live in two compat modules,
and each one is checked here on the installed versions: an upgrade that moves one fails
in this file, naming it, instead of in the middle of a run."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import FrozenTrial, TrialState

from pipeline import optuna_compat as compat

ROOT = Path(__file__).resolve().parents[1]
COMPAT = {"pipeline/optuna_compat.py", "pipeline/ray_compat.py"}
PRIVATE = re.compile(r"\._storage|_study_id|_trial_id|_suggest|_private|_raylet|_rdb\b|_contains")


def test_no_private_name_of_a_library_outside_the_compat_modules() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for folder in ("pipeline", "models")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.relative_to(ROOT).as_posix() not in COMPAT
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert found == [], "use pipeline/optuna_compat.py or pipeline/ray_compat.py:\n" + "\n".join(
        found
    )


@pytest.mark.parametrize(
    ("owner", "name"),
    [
        ("optuna.study.Study", "_storage"),
        ("optuna.study.Study", "_study_id"),
        ("optuna.trial.FrozenTrial", "_trial_id"),
        ("optuna.trial.Trial", "_suggest"),
        ("optuna.storages._cached_storage._CachedStorage", "_backend"),
        ("optuna.storages.RDBStorage", "_get_trials"),
        ("optuna.storages.RDBStorage", "_create_new_trial"),
        ("optuna.distributions.BaseDistribution", "_contains"),
        ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER"),
        ("ray._private.parameter.RayParams", "__init__"),
        ("ray._raylet.Config", "initialize"),
        ("ray._raylet.AuthenticationTokenLoader", "instance"),
    ],
)
def test_each_private_name_is_where_the_compat_modules_expect_it(owner: str, name: str) -> None:
    import importlib

    module_name, _, attr = owner.rpartition(".")
    try:
        target = importlib.import_module(owner)
    except ImportError:
        target = getattr(importlib.import_module(module_name), attr)
    if name in ("_storage", "_study_id", "_trial_id", "_backend"):  # set on instances
        source = Path(importlib.import_module(target.__module__).__file__ or "").read_text()
        assert f"self.{name} =" in source, f"{owner}.{name} is gone: update the compat module"
    else:
        assert hasattr(target, name), f"{owner}.{name} is gone: update the compat module"


def test_the_optuna_helpers_on_a_real_sqlite_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    dist = {"x": FloatDistribution(0.0, 1.0)}
    template = FrozenTrial(
        number=-1, state=TrialState.RUNNING, value=None, datetime_start=None,
        datetime_complete=None, params={"x": 0.5}, distributions=dist, user_attrs={"k": 1},
        system_attrs={}, intermediate_values={}, trial_id=-1,
    )  # fmt: skip
    created = compat.create_trial(study, template)
    assert created.number == 0 and compat.trial_id(created) >= 0
    assert compat.study_id(study) == compat.study_id_by_name(compat.storage(study), "s")
    assert compat.engine(study) is not None
    running = compat.trials_in_states(study, [TrialState.RUNNING])
    assert [t.params for t in running] == [{"x": 0.5}]
    assert compat.trials_in_states(study, [TrialState.COMPLETE]) == []
    models = compat.rdb_models()
    assert models.TrialModel.__tablename__ == "trials"

    live = study.ask()
    assert 0 <= compat.suggest(live, "y", FloatDistribution(0.0, 1.0)) <= 1
    assert compat.contains(IntDistribution(1, 3), 2)
    assert not compat.contains(IntDistribution(1, 3), 7)

"""Every use of Optuna's private names, in one place.

Optuna's public API has no way to do a few things the driver needs at 100,000 trials:
read only the RUNNING trials from the database (``get_trials`` loads every trial into the
cache first), create a trial in one write, count trials in SQL, or take the study's lock
with a compare-and-swap on its attribute row. Those go through the functions here, and
``tests/test_compat.py`` checks each private name on the installed Optuna, so an upgrade
that moves one fails there, with the name, instead of deep inside a run.

What is used, and why:

- ``Study._storage``, ``Study._study_id``: the storage and id a loaded study holds (the
  public way is to keep both beside the study, which every caller would then carry);
- ``FrozenTrial._trial_id``, ``Trial._suggest``: a trial's storage id; drawing a trial's
  missing params as its interrupted ``ask`` would have;
- ``_CachedStorage._backend``, ``RDBStorage._get_trials``, ``_create_new_trial``: the
  database under Optuna's cache, to read trials by state and create one trial in one write;
- ``optuna.storages._rdb.models``: the tables, for counts and the lock in SQL;
- ``BaseDistribution._contains``: whether a stored value lies in a distribution.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "backend",
    "contains",
    "create_trial",
    "engine",
    "rdb_models",
    "storage",
    "study_id",
    "study_id_by_name",
    "suggest",
    "trial_id",
    "trials_in_states",
]


def storage(study: optuna.Study) -> Any:
    """The storage a loaded study reads and writes (Optuna's cache around a database)."""
    return study._storage


def study_id(study: optuna.Study) -> int:
    """The study's id in its storage."""
    return int(study._study_id)


def study_id_by_name(store: Any, name: str) -> int:
    """The id of the study ``name`` in a storage (public; here as the study's id is)."""
    return int(store.get_study_id_from_name(name))


def trial_id(trial: FrozenTrial | optuna.trial.Trial) -> int:
    """A trial's id in its storage (its number counts within the study)."""
    return int(trial._trial_id)


def backend(study: optuna.Study) -> Any:
    """The storage under Optuna's cache (the storage itself when it has no cache)."""
    held = storage(study)
    return getattr(held, "_backend", held)


def engine(study: optuna.Study) -> Any:
    """The SQLAlchemy engine of a study's database storage (None: another kind)."""
    return getattr(backend(study), "engine", None)


def trials_in_states(study: optuna.Study, states: Collection[TrialState]) -> list[FrozenTrial]:
    """The study's trials in ``states``, from the database alone where there is one (the
    cache would load every trial first); else from ``get_trials``."""
    under = backend(study)
    if hasattr(under, "_get_trials"):
        return list(under._get_trials(study_id(study), tuple(states), set(), -1))
    return study.get_trials(deepcopy=False, states=tuple(states))


def create_trial(study: optuna.Study, template: FrozenTrial) -> FrozenTrial:
    """Create one trial from ``template`` in one write (``enqueue_trial`` then ``ask``
    scan the waiting trials); the new trial with its number and id."""
    created: FrozenTrial = backend(study)._create_new_trial(study_id(study), template)
    return created


def suggest(trial: optuna.trial.Trial, name: str, distribution: BaseDistribution) -> Any:
    """Draw (or take the enqueued value of) one param of a live trial."""
    return trial._suggest(name, distribution)


def rdb_models() -> Any:
    """Optuna's SQLAlchemy models (``TrialModel``, ``TrialUserAttributeModel``, ...)."""
    from optuna.storages._rdb import models

    return models


def contains(distribution: BaseDistribution, value: Any) -> bool:
    """Whether ``value`` (external form) lies in ``distribution``."""
    return bool(distribution._contains(distribution.to_internal_repr(value)))

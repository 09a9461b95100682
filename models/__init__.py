"""initstudy's models: pure PyTorch RNNs, init schemes, tasks and training.

This package knows nothing of Ray, Optuna or MLflow and can be used from a notebook::

    from models import TrialSpec, train_trial
    result = train_trial(TrialSpec(task="adding", seq_len=10, hidden=64, init="xavier"))
    print(result.converged_epoch)

Registries (name -> plug-in): ``INIT_SCHEMES``, ``CELLS``, ``TASKS``, ``OPTIMIZERS``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.cells import CELLS, PackedRNN, get_cell, init_weights
    from models.init import INIT_SCHEMES, get_init_scheme, init_bias, init_matrix
    from models.optim import OPTIMIZERS, get_optimizer
    from models.spec import EpochRecord, InitDiagnostics, TrialResult, TrialSpec
    from models.tasks import TASKS, Task, get_task
    from models.train import check_spec, init_diagnostics, train_pack, train_trial

# Where each public name lives. The names are loaded on first use, so that importing a
# torch-free module of this package (models.spec, models.fields) does not import torch.
_WHERE = {
    "CELLS": "models.cells",
    "PackedRNN": "models.cells",
    "get_cell": "models.cells",
    "init_weights": "models.cells",
    "INIT_SCHEMES": "models.init",
    "get_init_scheme": "models.init",
    "init_bias": "models.init",
    "init_matrix": "models.init",
    "OPTIMIZERS": "models.optim",
    "get_optimizer": "models.optim",
    "EpochRecord": "models.spec",
    "InitDiagnostics": "models.spec",
    "TrialResult": "models.spec",
    "TrialSpec": "models.spec",
    "TASKS": "models.tasks",
    "Task": "models.tasks",
    "get_task": "models.tasks",
    "check_spec": "models.train",
    "init_diagnostics": "models.train",
    "train_pack": "models.train",
    "train_trial": "models.train",
}

__all__ = [
    "CELLS",
    "INIT_SCHEMES",
    "OPTIMIZERS",
    "TASKS",
    "EpochRecord",
    "InitDiagnostics",
    "PackedRNN",
    "Task",
    "TrialResult",
    "TrialSpec",
    "check_spec",
    "get_cell",
    "get_init_scheme",
    "get_optimizer",
    "get_task",
    "init_bias",
    "init_diagnostics",
    "init_matrix",
    "init_weights",
    "train_pack",
    "train_trial",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use (PEP 562)."""
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value

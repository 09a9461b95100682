"""initstudy's models: pure PyTorch RNNs, init schemes, tasks and training.

This package knows nothing of Ray, Optuna or MLflow and can be used from a notebook::

    from models import TrialSpec, train_trial
    result = train_trial(TrialSpec(task="adding", seq_len=10, hidden=64, init="xavier"))
    print(result.converged_epoch)

Registries (name -> plug-in): ``INIT_SCHEMES``, ``CELLS``, ``TASKS``, ``OPTIMIZERS``.
"""

from models.cells import CELLS, PackedRNN, get_cell, init_weights
from models.init import INIT_SCHEMES, get_init_scheme, init_bias, init_matrix
from models.optim import OPTIMIZERS, get_optimizer
from models.spec import EpochRecord, InitDiagnostics, TrialResult, TrialSpec
from models.tasks import TASKS, Task, get_task
from models.train import check_spec, init_diagnostics, train_pack, train_trial

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

"""NaN and infinity in the data, the loss or the gradients are diverged results, never
crashes; a study in which every trial diverges still completes and reports."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import invoke_cli
from torch import Tensor

from models import TASKS, Task, TrialSpec, train_trial
from models.tasks import AddingTask
from pipeline.execution import InProcessExecutor

TINY = {
    "seq_len": 6,
    "hidden": 8,
    "batch_size": 8,
    "batches_per_epoch": 3,
    "max_epochs": 3,
    "val_size": 16,
}


class NanInputTask(AddingTask):
    """The adding task with a NaN in every training batch's input."""

    def _sample(
        self, generator: torch.Generator, batch_size: int, split: str
    ) -> tuple[Tensor, Tensor]:
        x, y = super()._sample(generator, batch_size, split)
        if split == "train":
            x[0, 0, 0] = math.nan
        return x, y


class InfLossTask(AddingTask):
    """The adding task whose loss is +inf (its gradients stay finite)."""

    def _loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        return super()._loss(outputs, y) + math.inf


class NanGradTask(AddingTask):
    """The adding task with a finite loss whose gradient is NaN: d sqrt(u)/du at 0 is inf,
    times du/d(outputs) = 0."""

    def _loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        poison = torch.sqrt((outputs * 0).sum(dim=(1, 2, 3)).to(torch.float32))
        return super()._loss(outputs, y) + poison


FAULTY: dict[str, type[AddingTask]] = {
    "nan_input": NanInputTask,
    "inf_loss": InfLossTask,
    "nan_grad": NanGradTask,
}


@pytest.mark.parametrize("name", sorted(FAULTY))
def test_non_finite_data_loss_or_gradient_is_a_divergence(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def factory(seq_len: int) -> Task:
        return FAULTY[name](seq_len)

    monkeypatch.setitem(TASKS, name, factory)  # the plug-in API: one registry line
    result = train_trial(TrialSpec(task=name, **TINY))
    assert result.diverged_epoch == 1
    assert result.converged_epoch is None and result.epochs_run == 1


@pytest.mark.parametrize(
    "change",
    [{"lr": 1e6}, {"lr": 1e4, "optimizer": "sgd"}, {"scale": 1e6}],
    ids=["adam-lr-1e6", "sgd-lr-1e4", "scale-1e6"],
)
def test_exploding_training_is_a_divergence(change: dict[str, object]) -> None:
    result = train_trial(TrialSpec(task="adding", **TINY, **change))  # type: ignore[arg-type]
    assert result.diverged_epoch is not None
    assert result.converged_epoch is None


EVERY_TRIAL_DIVERGES = """
name: boom
sampler: grid
trial: {task: adding, cell: rnn_relu, hidden: 8, batches_per_epoch: 3, max_epochs: 2,
        val_size: 16, batch_size: 8, optimizer: sgd, lr: 1.0e+9, scale: 3.0}
space: {init: [xavier, uniform01], seq_len: [4], seed: [0, 1]}
"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")
def test_study_where_every_trial_diverges_completes_and_reports(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    in_process_executor: list[InProcessExecutor],
) -> None:
    """``run``, ``report`` and ``check`` through the CLI's ``main`` in this process, the
    trials trained by the real driver on the in-process executor: what a diverged trial's
    NaN and infinity do to the stores, the summary and the report is the CLI's and the
    driver's business, not Ray's (tests/test_pipeline.py runs studies through Ray)."""
    spec = tmp_path / "boom.yaml"
    spec.write_text(EVERY_TRIAL_DIVERGES)
    run_dir = tmp_path / "run"
    monkeypatch.chdir(tmp_path)

    code = invoke_cli(["run", str(spec), "--run-dir", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert sum(len(pack) for e in in_process_executor for pack in e.submitted) == 4
    assert "4/4 trials complete (0 converged, 0 censored, 0 stalled, 0 frozen, 4 diverged)" in (
        out
    )
    assert "Claim verdicts" in out
    assert "Traceback" not in err

    code = invoke_cli(["report", "boom", "--run-dir", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "Claim verdicts" in out
    assert (run_dir / "reports" / "boom" / "report.md").is_file()
    code = invoke_cli(["check", "boom", "--run-dir", str(run_dir)])
    out, err = capsys.readouterr()
    assert code == 0, out + err

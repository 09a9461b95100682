"""The ``initstudy`` command line.

Bad input (unknown names, non-positive sizes, unreadable files, malformed specs) prints
one line naming the option and what is allowed, and exits with code 2 before anything is
started or written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from models.spec import TrialResult

app = typer.Typer(
    help="Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_BAD_INPUT = 2


@app.callback()
def _root() -> None:
    """Test claims about RNN initialization with Optuna studies on Ray, tracked in MLflow."""


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print one error line to stderr and exit."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def trial(
    task: Annotated[str, typer.Option(help="Task: adding, copy or charlm.")] = "adding",
    seq_len: Annotated[
        int, typer.Option(help="Sequence length (the blank delay T for copy).")
    ] = 30,
    hidden: Annotated[int, typer.Option(help="Hidden units.")] = 64,
    cell: Annotated[str, typer.Option(help="Cell: rnn_tanh, rnn_relu, lstm or gru.")] = "rnn_tanh",
    init: Annotated[
        str, typer.Option(help="Init scheme for all matrices (see `initstudy schemes`).")
    ] = "xavier",
    init_recurrent: Annotated[
        str | None, typer.Option(help="Init scheme for the recurrent matrix alone.")
    ] = None,
    scale: Annotated[float, typer.Option(help="Gain: multiplies every drawn matrix.")] = 1.0,
    optimizer: Annotated[str, typer.Option(help="Optimizer: sgd, adam or rmsprop.")] = "adam",
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-3,
    clip: Annotated[
        float | None, typer.Option(help="Gradient-norm clipping threshold (default: none).")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Sequences per batch.")] = 32,
    batches_per_epoch: Annotated[int, typer.Option(help="Batches per epoch.")] = 50,
    max_epochs: Annotated[int, typer.Option(help="Epoch budget (censoring point).")] = 30,
    target: Annotated[
        float | None, typer.Option(help="Target validation loss (default: the task's).")
    ] = None,
    divergence_factor: Annotated[
        float, typer.Option(help="Diverged when val loss > this x the initial loss.")
    ] = 10.0,
    val_size: Annotated[int, typer.Option(help="Validation sequences.")] = 256,
    seed: Annotated[int, typer.Option(help="Seed for the weights.")] = 0,
    data_seed: Annotated[
        int | None, typer.Option(help="Seed for the data stream (default: --seed).")
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="UTF-8 text file for charlm (default: Python's docs).")
    ] = None,
    device: Annotated[str, typer.Option(help="Device: cpu, cuda or cuda:N.")] = "cpu",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the TrialResult as JSON.")
    ] = False,
) -> None:
    """Train one trial here, without Ray, and print its result."""
    from models import TrialSpec, check_spec, get_task, train_trial

    spec = TrialSpec(
        task=task,
        seq_len=seq_len,
        hidden=hidden,
        cell=cell,
        init=init,
        init_recurrent=init_recurrent,
        scale=scale,
        optimizer=optimizer,
        lr=lr,
        clip=clip,
        batch_size=batch_size,
        batches_per_epoch=batches_per_epoch,
        max_epochs=max_epochs,
        target_loss=target,
        divergence_factor=divergence_factor,
        val_size=val_size,
        seed=seed,
        data_seed=seed if data_seed is None else data_seed,
        corpus=str(corpus) if corpus is not None else None,
    )
    try:
        check_spec(spec)
        get_task(spec.task, spec.seq_len, spec.corpus)  # reads and checks the corpus
        dev = _check_device(device)
    except ValueError as exc:
        fail(_as_option(str(exc)))
    result = train_trial(spec, dev)
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_result(result)


_OPTION_NAMES = {"target_loss": "target"}


def _as_option(message: str) -> str:
    """Turn 'field: what is wrong' from models.check_spec into '--option: what is wrong'."""
    field, sep, rest = message.partition(": ")
    if not sep or " " in field:
        return message
    return f"--{_OPTION_NAMES.get(field, field).replace('_', '-')}: {rest}"


def _check_device(device: str) -> str:
    import torch

    if device == "cpu":
        return device
    if device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available here")
        return device
    raise ValueError(f"device: unknown value {device!r}; allowed: cpu, cuda, cuda:N")


def print_result(result: TrialResult) -> None:
    """A readable summary of one TrialResult."""
    s, d = result.spec, result.diagnostics
    if result.diverged:
        outcome = f"[red]diverged[/] at epoch {result.diverged_epoch}"
    elif result.converged:
        outcome = f"[green]converged[/] at epoch {result.converged_epoch}"
    else:
        outcome = f"[yellow]censored[/]: no convergence within {s.max_epochs} epochs"
    init = s.init if s.init_recurrent is None else f"{s.init} (Whh: {s.init_recurrent})"
    table = Table(title=f"{s.task} T={s.seq_len}, {s.cell} H={s.hidden}, {init} x{s.scale:g}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("outcome", outcome)
    table.add_row(
        "target / baseline loss", f"{result.target_loss:.4g} / {result.baseline_loss:.4g}"
    )
    table.add_row("initial val loss", f"{d.initial_loss:.4g}")
    table.add_row("best val loss", f"{result.best_val_loss:.4g}")
    table.add_row("epochs run", str(result.epochs_run))
    table.add_row("spectral radius of Whh", f"{d.spectral_radius:.4g}")
    table.add_row(
        "hidden variance, first / last step", f"{d.hidden_var[0]:.3g} / {d.hidden_var[-1]:.3g}"
    )
    table.add_row("saturated share, last step", f"{d.hidden_sat[-1]:.3g}")
    table.add_row("|dL/dh_t|, first / last step", f"{d.grad_norm[0]:.3g} / {d.grad_norm[-1]:.3g}")
    table.add_row("wall time", f"{result.wall_seconds:.2f} s on {result.device}")
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()

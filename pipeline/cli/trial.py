"""``initstudy trial``: train one trial here, without Ray, and print its result.

The command has one option per TrialSpec field, made from :data:`models.fields.FIELDS`:
its name (``--seq-len`` for ``seq_len``; ``--target`` for ``target_loss``), type, default
and help line are the table's, and the values are checked by ``models.check_spec``, so
the command accepts exactly the values a study spec's ``trial:`` section does.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from models.fields import FIELDS, Field, size_problem
from pipeline.cli.base import app, console, fail

if TYPE_CHECKING:
    from models.spec import TrialResult, TrialSpec

OPTION_NAMES = {"target_loss": "target"}
"""Fields whose option is not named after them."""
FIELD_PANEL = "TrialSpec fields (as in a study spec's trial: section)"


def option_name(field: str) -> str:
    """The ``trial`` option of a TrialSpec field: ``seq_len`` -> ``--seq-len``."""
    return "--" + OPTION_NAMES.get(field, field).replace("_", "-")


def _help(field: Field) -> str:
    text = field.help.replace("(null: ", "(not given: ")
    if field.name == "data_seed":
        text += " (not given: --seed)"
    return text[:1].upper() + text[1:] + "."


def _parameter(field: Field) -> inspect.Parameter:
    """The typer parameter of one field: its type, default and help from the table.

    An optional field's option defaults to None (not given), and so does ``--data-seed``
    (then the trial's seed); a bool takes ``true`` or ``false``, as a spec does.
    """
    name, text = option_name(field.name), _help(field)
    kind: Any
    default: Any
    if field.kind is bool:
        kind, default = str, "true" if field.default else "false"
        option = typer.Option(
            name,
            help=text,
            rich_help_panel=FIELD_PANEL,
            parser=_true_or_false,
            metavar="<bool>",
        )
    else:
        optional = field.optional or field.name == "data_seed"
        kind = field.kind | None if optional else field.kind
        default = None if optional else field.default
        # an integer's text is an integer's, as in a spec: 2.0 is not one
        parser = _integer if field.kind is int else None
        option = typer.Option(name, help=text, rich_help_panel=FIELD_PANEL, parser=parser)
    return inspect.Parameter(
        field.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[kind, option],
    )


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        got = repr(text) if len(text) <= 60 else repr(text[:40]) + f"... ({len(text)} chars)"
        raise typer.BadParameter(f"must be an integer (got {got})") from None


def _true_or_false(text: str) -> bool:
    if text not in ("true", "false"):
        raise typer.BadParameter(f"must be true or false (got {text!r})")
    return text == "true"


_OTHER_OPTIONS = [
    inspect.Parameter(
        "device",
        inspect.Parameter.KEYWORD_ONLY,
        default="cpu",
        annotation=Annotated[str, typer.Option(help="Device: cpu, cuda or cuda:N.")],
    ),
    inspect.Parameter(
        "as_json",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--json", help="Print the TrialResult as JSON.")],
    ),
]


def trial(**options: Any) -> None:
    """Train one trial here, without Ray, and print its result."""
    from models import train_trial

    device, as_json = options.pop("device"), options.pop("as_json")
    try:
        spec = trial_spec(options)
        dev = _check_device(device)
    except ValueError as exc:
        message = str(exc)
        fail(f"--corpus: {message}" if message.startswith("corpus file") else _as_option(message))
    result = train_trial(spec, dev)
    if as_json:
        sys.stdout.write(result.to_json() + "\n")
    else:
        print_result(result)


trial.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [_parameter(field) for field in FIELDS.values()] + _OTHER_OPTIONS
)
app.command()(trial)


def trial_spec(options: dict[str, Any]) -> TrialSpec:
    """The checked TrialSpec of the ``trial`` command's field options.

    ``data_seed`` not given is ``seed``. The spec is checked by ``models.check_spec`` and
    ``models.fields.size_problem`` (one trial's sizes together fit in memory), then its
    task is built (a charlm corpus file is read and checked).

    Raises:
        ValueError: ``field: what is wrong``, or the corpus file's problem.
    """
    from models import TrialSpec, check_spec, get_task

    values = dict(options)
    if values.get("data_seed") is None:
        values["data_seed"] = values["seed"]
    spec = TrialSpec(**values)
    check_spec(spec)
    too_large = size_problem(values)  # each size within bounds; together too large?
    if too_large is not None:
        raise ValueError(": ".join(too_large))
    get_task(spec.task, spec.seq_len, spec.corpus)  # reads and checks the corpus
    return spec


def _as_option(message: str) -> str:
    """Turn 'field: what is wrong' from models.check_spec into '--option: what is wrong'."""
    field, sep, rest = message.partition(": ")
    if not sep or (field not in FIELDS and field != "device"):
        return message
    return f"{option_name(field)}: {rest}"


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
    outcome = {
        "converged": f"[green]converged[/] at epoch {result.converged_epoch}",
        "diverged": f"[red]diverged[/] at epoch {result.diverged_epoch}",
        "frozen": "[red]frozen[/]: zero gradient into Wxh and Whh at init (cannot train)",
        "stalled": f"[yellow]stalled[/]: never left the task's baseline in {s.max_epochs} epochs",
        "censored": f"[yellow]censored[/]: no convergence within {s.max_epochs} epochs",
    }[result.outcome]
    init = s.init if s.init_recurrent is None else f"{s.init} (Whh: {s.init_recurrent})"
    table = Table(title=f"{s.task} T={s.seq_len}, {s.cell} H={s.hidden}, {init} x{s.scale:g}")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("outcome", outcome)
    table.add_row("init diagnosis", _diagnosis(result))
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
    table.add_row(
        "|dL/dWxh|, |dL/dWhh| at init", f"{d.input_grad_norm:.3g}, {d.recurrent_grad_norm:.3g}"
    )
    table.add_row("wall time", f"{result.wall_seconds:.2f} s on {result.device}")
    console.print(table)


def _diagnosis(result: TrialResult) -> str:
    """The init diagnosis in words, apart from the outcome (a frozen trial may diverge)."""
    d = result.diagnostics
    if result.frozen_at_init:
        return "[red]frozen[/]: zero gradient into Wxh and Whh at init"
    if math.isnan(d.input_grad_norm) or math.isnan(d.recurrent_grad_norm):
        return "not measured (no finite loss at init, or a result from before it was)"
    return "trainable: gradient reaches Wxh or Whh at init"


def _first_line(obj: object) -> str:
    """The first paragraph of ``obj``'s docstring on one line, without reST markup."""
    paragraph = (inspect.getdoc(obj) or "").strip().split("\n\n")[0]
    text = " ".join(line.strip() for line in paragraph.splitlines())
    return re.sub(r":\w+:`([^`]*)`", r"\1", text).replace("``", "")


def catalog() -> dict[str, list[tuple[str, str]]]:
    """What a spec or ``trial`` can name: per registry, each name with one line on it."""
    from models import CELLS, INIT_SCHEMES, OPTIMIZERS, TASKS

    return {
        "init schemes (init, init_recurrent)": [
            (n, _first_line(f)) for n, f in INIT_SCHEMES.items()
        ],
        "cells (cell)": [(n, c.doc) for n, c in CELLS.items()],
        "tasks (task)": [(n, _first_line(f)) for n, f in TASKS.items()],
        "optimizers (optimizer)": [(n, _first_line(o)) for n, o in OPTIMIZERS.items()],
    }


@app.command()
def schemes() -> None:
    """List the init schemes, cells, tasks and optimizers a spec or trial can name."""
    for title, rows in catalog().items():
        table = Table(title=title, title_justify="left", show_header=False, box=None)
        table.add_column("name", style="bold", no_wrap=True)
        table.add_column("what it is")
        for name, line in rows:
            table.add_row(name, line)
        console.print(table)
        console.print()

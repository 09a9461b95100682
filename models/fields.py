"""One table of :class:`~models.spec.TrialSpec`'s fields: what each accepts and what it is.

Everything that lists TrialSpec's fields reads them here instead of typing them out: the
checks of ``models.check_spec`` and of a study spec's ``trial:``/``space:`` values (so a
spec and ``initstudy trial`` accept and refuse the same values), the ``initstudy trial``
command's options, the columns of the results tables and the analysis' lists of factors
and settings. A test checks that the table and the dataclass name the same fields with the
same types and defaults.

Like :mod:`models.spec`, this module imports nothing beyond the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from typing import Any, Literal

from models.spec import TrialSpec

Role = Literal["factor", "setting", "seed"]
"""What a field is to a study: a ``factor`` of the design a claim is about (the task, the
architecture, the init scheme and its gains), a ``setting`` of the training protocol held
equal between the arms of a comparison, or the replicate ``seed``."""

MAX_SEED = 2**32 - 1
"""Largest seed (NumPy's and PyTorch's generators take 32-bit seeds)."""
MAX_SEQ_LEN = 10_000
"""Longest sequence (a trial steps through it one time step at a time, in Python)."""
MAX_HIDDEN = 4096
"""Widest cell (an LSTM's weights and Adam's state are then about 1 GB)."""
MAX_BATCH = 4096
"""Most sequences in a training batch."""
MAX_VAL_SIZE = 65_536
"""Most validation sequences (the fixed validation set is held in memory)."""
MAX_COUNT = 100_000
"""Most epochs, batches per epoch or evaluations of patience (a budget, not a size)."""
MAX_BATCH_STEPS = 2**22
"""Most sequence steps in one training batch (``batch_size x seq_len``): the batch's
inputs and targets are held at once (a charlm batch one-hot over the vocabulary)."""
MAX_BATCH_UNITS = 2**26
"""Most hidden activations one training batch keeps for backpropagation through time
(``batch_size x seq_len x hidden``; a few GB for an LSTM at the cap)."""
MAX_VAL_STEPS = 2**24
"""Most sequence steps in the validation set (``val_size x seq_len``), held at once."""


@dataclass(frozen=True)
class Field:
    """The rules of one TrialSpec field."""

    name: str
    kind: type
    """int, float, str or bool (a float field also takes an int, read as a float)."""
    role: Role
    help: str
    """One line for the ``trial`` command's option and the docs."""
    optional: bool = False
    """Whether None is allowed (its meaning is in ``help``)."""
    low: float | None = None
    """The smallest value allowed (numbers only)."""
    low_open: bool = False
    """Whether ``low`` itself is refused (``> low`` rather than ``>= low``)."""
    high: float | None = None
    """The largest value allowed (numbers only)."""
    cap: int | None = None
    """A limit on size or time rather than on meaning (ints only): a larger value would
    exhaust the machine. Stated only when exceeded (``must be <= 4096``), and not part of
    :attr:`bounds`."""
    registry: str | None = None
    """The ``models`` registry a name must be in (``TASKS``, ``CELLS``, ...)."""
    searchable: bool = False
    """Whether a study may search over it (a key of ``space:``)."""
    column: str | None = None
    """The pandas dtype of its column in the ``trials`` table (None: no column)."""

    @property
    def default(self) -> Any:
        return _DEFAULTS[self.name]

    @property
    def bounds(self) -> str:
        """The bounds in words, as error messages state them: ``>= 1``, ``> 0``,
        ``in [0, 2**32 - 1]``; empty if none."""
        if self.low is not None and self.high is not None:
            high = "2**32 - 1" if self.high == MAX_SEED else _num(self.high)
            return f"in [{_num(self.low)}, {high}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"<= {_num(self.high)}"
        return ""

    def out_of_bounds(self, value: float) -> bool:
        """Whether a number (of the right type) is outside the field's bounds."""
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return True
        return self.high is not None and value > self.high

    def over_cap(self, value: float) -> bool:
        """Whether a number (of the right type) is above the field's :attr:`cap`."""
        return self.cap is not None and value > self.cap

    def cap_words(self, value: float) -> str:
        """The problem of a value above :attr:`cap`, in words."""
        return f"must be <= {self.cap} (got {_short(value)}), the most one trial may take"

    def problem(self, value: Any, known: Collection[str] = ()) -> str | None:
        """What is wrong with ``value`` for this field, in words (``must be ...``), or None.

        Checks the type, finiteness and bounds, and for a field with a ``registry`` that
        the name is one of ``known`` (the caller passes the registry: the registries live
        with the models, which import torch).
        """
        if value is None:
            return None if self.optional else f"must be {self.type_words} (got None)"
        if not self._right_type(value):
            return f"must be {self.type_words} (got {_short(value)})"
        if self.kind is float and not math.isfinite(value):
            return f"must be finite (got {value!r})"
        if self.kind in (int, float) and self.out_of_bounds(value):
            return f"must be {self.bounds} (got {_short(value)})"
        if self.over_cap(value):
            return self.cap_words(value)
        if self.registry is not None and value not in known:
            return unknown_name(value, known)
        return None

    @property
    def type_words(self) -> str:
        words = _TYPE_WORDS[self.kind]
        return f"{words} or null" if self.optional else words

    def _right_type(self, value: Any) -> bool:
        if isinstance(value, bool):
            return self.kind is bool
        if self.kind is float:
            return isinstance(value, int | float)
        return isinstance(value, self.kind)


def unknown_name(value: Any, known: Collection[str]) -> str:
    """The problem of a name that is not in its registry, listing the ``known`` ones."""
    return f"unknown name {_short(value)}; known: {', '.join(sorted(known))}"


def size_problem(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """What makes one trial too large for memory, or None: the products of its sizes.

    ``values`` maps ``batch_size``, ``seq_len``, ``hidden`` and ``val_size`` to valid
    numbers (a missing one is TrialSpec's default; a study passes the largest it allows).
    Each field is within its own bounds already; together they may still be too large.

    Returns:
        ``(field, problem)``: the field to name (``batch_size`` or ``val_size``, never
        searched, so always the ``trial:`` section's) and what is wrong, in words.
    """
    batch, steps, hidden, val = (
        int(values.get(n, _DEFAULTS[n])) for n in ("batch_size", "seq_len", "hidden", "val_size")
    )
    caps = (
        ("batch_size", "batch_size x seq_len", (batch, steps), MAX_BATCH_STEPS),
        ("batch_size", "batch_size x seq_len x hidden", (batch, steps, hidden), MAX_BATCH_UNITS),
        ("val_size", "val_size x seq_len", (val, steps), MAX_VAL_STEPS),
    )
    for name, what, factors, cap in caps:
        total = math.prod(factors)
        if total > cap:
            got = " x ".join(str(f) for f in factors)
            return name, (
                f"{what} must be <= {cap} to fit one trial in memory (got {got} = {total});"
                f" use smaller values"
            )
    return None


_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_DEFAULTS: dict[str, Any] = {f.name: f.default for f in dataclass_fields(TrialSpec)}

FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field("task", str, "factor", "task name (models.TASKS)", registry="TASKS",
              column="string"),
        Field("seq_len", int, "factor", "sequence length (copy: the blank delay T)",
              low=1, cap=MAX_SEQ_LEN, searchable=True, column="int64"),
        Field("hidden", int, "factor", "hidden units", low=1, cap=MAX_HIDDEN,
              searchable=True, column="int64"),
        Field("cell", str, "factor", "recurrent cell (models.CELLS)", registry="CELLS",
              searchable=True, column="string"),
        Field("init", str, "factor", "init scheme for every matrix (models.INIT_SCHEMES)",
              registry="INIT_SCHEMES", searchable=True, column="string"),
        Field("init_recurrent", str, "factor", "init scheme for Whh alone (null: as init)",
              optional=True, registry="INIT_SCHEMES", searchable=True, column="string"),
        Field("scale", float, "factor", "gain on every matrix the scheme draws",
              low=0, searchable=True, column="float64"),
        Field("recurrent_scale", float, "factor", "gain on Whh alone (null: scale)",
              optional=True, low=0, searchable=True, column="float64"),
        Field("optimizer", str, "setting", "optimizer (models.OPTIMIZERS)",
              registry="OPTIMIZERS", searchable=True, column="string"),
        Field("lr", float, "setting", "learning rate", low=0, low_open=True, searchable=True,
              column="float64"),
        Field("clip", float, "setting", "gradient-norm clipping threshold (null: none)",
              optional=True, low=0, low_open=True, searchable=True, column="float64"),
        Field("batch_size", int, "setting", "sequences per training batch", low=1,
              cap=MAX_BATCH,
              column="int64"),
        Field("batches_per_epoch", int, "setting", "training batches per epoch", low=1,
              cap=MAX_COUNT,
              column="int64"),
        Field("max_epochs", int, "setting", "epoch budget (not converged by then: censored)",
              low=1, cap=MAX_COUNT, column="int64"),
        Field("target_loss", float, "setting",
              "validation loss that counts as converged (null: the task's target)",
              optional=True, low=0, low_open=True, column="float64"),
        Field("patience", int, "setting",
              "consecutive evaluations at or below the target that count as converged",
              low=1, cap=MAX_COUNT, column="int64"),
        Field("divergence_factor", float, "setting",
              "validation loss above this times the initial loss is divergence",
              low=1, low_open=True, column="float64"),
        Field("val_size", int, "setting", "sequences in the fixed validation set", low=1,
              cap=MAX_VAL_SIZE,
              column="int64"),
        Field("seed", int, "seed", "seed of the weights (the replicate)", low=0,
              high=MAX_SEED, searchable=True, column="int64"),
        Field("data_seed", int, "setting", "seed of the data stream", low=0, high=MAX_SEED,
              column="int64"),
        Field("corpus", str, "setting", "text file for charlm (null: the built-in corpus)",
              optional=True, column="string"),
        Field("stop_on_converge", bool, "setting",
              "stop training once converged (false: train the whole budget)"),
    )
}  # fmt: skip
"""Every TrialSpec field's rules, in TrialSpec's order."""

SEARCHABLE: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.searchable)
"""The fields a study may search over (the allowed keys of ``space:``)."""
FACTORS: tuple[str, ...] = tuple(n for n, f in FIELDS.items() if f.role == "factor")
"""The design's fields (see :data:`Role`)."""
SETTINGS: tuple[str, ...] = tuple(
    n for n, f in FIELDS.items() if f.role == "setting" and f.column is not None
)
"""The protocol's fields that have a column (see :data:`Role`)."""
COLUMNS: dict[str, str] = {n: f.column for n, f in FIELDS.items() if f.column is not None}
"""Field -> pandas dtype of its column in the ``trials`` table."""

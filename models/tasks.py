"""Sequence tasks for the recurrent models, by name: ``adding``, ``copy`` and ``charlm``.

Plug-in API
-----------
A task is a :class:`Task` object. Adding one takes two steps: write a factory::

    def my_task(seq_len: int) -> Task                          # synthetic data
    def my_text_task(seq_len: int, corpus: str | None) -> Task  # reads a text file

(usually a subclass of :class:`Task` that implements ``_sample`` and ``_loss``) and add
one line to :data:`TASKS`. :func:`get_task` validates ``seq_len`` and passes ``corpus``
only to factories that have a ``corpus`` parameter; every other factory refuses one.

A task exposes

* ``name``, ``seq_len`` (the user's sequence-length parameter) and ``steps`` (how many
  time steps the RNN actually sees);
* ``input_dim`` and ``output_dim`` for the model;
* ``baseline_loss``: the loss of the best *memoryless* predictor (one that ignores the
  input history), so a model only beats it by remembering; and ``default_target``: the
  validation loss that counts as converged unless a trial sets its own;
* ``sample(generator, batch_size, split)`` -> ``(x, y)``: ``x`` is float32
  ``(batch, steps, input_dim)``; ``y`` holds the targets (task-specific shape). Both are
  CPU tensors; the caller moves them to its device;
* ``loss(outputs, y)`` -> ``(K,)``: ``outputs`` is ``(K, batch, steps, output_dim)``, the
  predictions of K independent models (a "pack") for one shared batch. Each entry is that
  member's mean loss, differentiable and computed independently of the other members (a
  NaN in one member never reaches another's value). ``loss(outputs, y, per_member=True)``
  takes one batch's targets per member instead, stacked: ``(K, *y.shape)``;
* ``loss_steps``: how many final steps the loss reads (None: all). A task whose loss reads
  only the last step (``adding``) sets 1, and then ``loss`` also takes outputs for those
  steps alone, ``(K, batch, loss_steps, output_dim)``, so the model need not compute the
  output layer at every step.

``_loss(outputs, y)`` always receives per-member targets ``(K, batch, ...)`` on
``outputs``' device (``loss`` expands shared ones), already validated.

Randomness comes only from the ``torch.Generator`` passed to ``sample`` (a CPU one). Each
call draws exactly one 62-bit seed from it and samples the batch from a private generator
seeded with that value (salted for ``split="val"``): the same generator state gives the
same batch, train and val batches differ even from the same state, and the generator
advances by the same amount whatever the batch size.

This module is pure PyTorch: it must not import Ray, Optuna or MLflow, and downloads
nothing (the default ``charlm`` corpus is text that ships with CPython).
"""

from __future__ import annotations

import functools
import inspect
import math
import operator
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "ADDING_TARGET",
    "CHARLM_TARGET_FRACTION",
    "COPY_ALPHABET",
    "COPY_BLANK",
    "COPY_DELIMITER",
    "COPY_LENGTH",
    "COPY_TARGET_FRACTION",
    "MAX_CORPUS_BYTES",
    "SPLITS",
    "TASKS",
    "AddingTask",
    "CharLMTask",
    "CopyTask",
    "Task",
    "TaskFactory",
    "adding_task",
    "charlm_min_corpus_length",
    "charlm_task",
    "copy_task",
    "get_task",
]

SPLITS: tuple[str, ...] = ("train", "val")
"""The data splits ``Task.sample`` accepts."""

ADDING_TARGET = 0.01
"""Default convergence target (validation MSE) for the adding task."""

COPY_ALPHABET = 8
"""Number of distinct symbols to copy (ids 0..7)."""
COPY_BLANK = 8
"""Id of the blank symbol in the copy task."""
COPY_DELIMITER = 9
"""Id of the delimiter ("start recalling now") in the copy task."""
COPY_LENGTH = 10
"""Number of symbols to remember in the copy task."""
COPY_TARGET_FRACTION = 0.1
"""Copy task's default target, as a fraction of its memoryless baseline."""

CHARLM_TARGET_FRACTION = 0.75
"""charlm's default target, as a fraction of its unigram-entropy baseline."""

_VAL_SALT = 0x5DEECE66D_A5A5A5
"""XORed into the per-call seed for ``split="val"`` so val batches differ from train ones."""

_SEED_HIGH = 2**62

MAX_CORPUS_BYTES = 64 * 2**20
"""Largest charlm corpus file read, in bytes; every trial holds its corpus in memory
(about 17 bytes per character while it is encoded: 1.1 GB peak at 64 MiB)."""


# --------------------------------------------------------------------------- base class


class Task(ABC):
    """A sequence task: data sampler, per-member loss and baseline (see module docstring)."""

    name: str
    seq_len: int
    """The user's sequence-length parameter."""
    steps: int
    """Number of time steps the RNN sees."""
    input_dim: int
    output_dim: int
    baseline_loss: float
    """Loss of the best memoryless predictor."""
    default_target: float
    """Validation loss that counts as converged by default."""
    loss_steps: int | None
    """How many final steps the loss reads (None: all of them)."""

    def __init__(
        self,
        *,
        name: str,
        seq_len: int,
        steps: int,
        input_dim: int,
        output_dim: int,
        baseline_loss: float,
        default_target: float,
        loss_steps: int | None = None,
    ) -> None:
        self.name = name
        self.loss_steps = loss_steps
        self.seq_len = seq_len
        self.steps = steps
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.baseline_loss = float(baseline_loss)
        self.default_target = float(default_target)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, seq_len={self.seq_len}, "
            f"steps={self.steps}, input_dim={self.input_dim}, output_dim={self.output_dim}, "
            f"baseline_loss={self.baseline_loss:.6g}, default_target={self.default_target:.6g})"
        )

    def sample(
        self, generator: torch.Generator, batch_size: int, split: str = "train"
    ) -> tuple[Tensor, Tensor]:
        """Draw a batch.

        Args:
            generator: a CPU generator; the only source of randomness. One value is drawn
                from it per call.
            batch_size: number of sequences, >= 1.
            split: ``"train"`` or ``"val"``.

        Returns:
            ``x``: float32 ``(batch_size, steps, input_dim)`` and the targets ``y``, both on
            the CPU.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
        batch_size = operator.index(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if generator.device.type != "cpu":
            raise ValueError(
                f"sample() needs a CPU torch.Generator, got one on {generator.device}"
            )
        seed = int(torch.randint(0, _SEED_HIGH, (1,), generator=generator).item())
        if split == "val":
            seed ^= _VAL_SALT
        local = torch.Generator().manual_seed(seed)
        return self._sample(local, batch_size, split)

    def loss(self, outputs: Tensor, y: Tensor, *, per_member: bool = False) -> Tensor:
        """Each member's mean loss.

        Args:
            outputs: ``(K, batch, steps, output_dim)``, K members' predictions (or only
                the last ``loss_steps`` steps of them).
            y: the batch's targets, as returned by :meth:`sample` (on ``outputs``' device),
                shared by all members; or, with ``per_member``, K such targets stacked,
                ``(K, *y.shape)``, member k's in ``y[k]``.
            per_member: whether ``y`` has the leading member axis.

        Returns:
            A ``(K,)`` float tensor (at least float32), differentiable; entry k depends only
            on ``outputs[k]`` (and ``y[k]``).
        """
        steps = {self.steps, self.loss_steps or self.steps}
        if (
            outputs.dim() != 4
            or outputs.shape[2] not in steps
            or outputs.shape[3] != (self.output_dim)
        ):
            allowed = " or ".join(str(n) for n in sorted(steps))
            raise ValueError(
                f"{self.name}: outputs must have shape (K, batch, {allowed}, "
                f"{self.output_dim}), got {tuple(outputs.shape)}"
            )
        k = outputs.shape[0]
        if per_member:
            if y.dim() < 2 or y.shape[0] != k:
                raise ValueError(
                    f"{self.name}: per-member targets must have shape ({k}, batch, ...), "
                    f"got {tuple(y.shape)}"
                )
            batch = y.shape[1]
        else:
            batch = y.shape[0]
            y = y.unsqueeze(0).expand(k, *y.shape)
        if outputs.shape[1] != batch:
            raise ValueError(
                f"{self.name}: outputs have batch {outputs.shape[1]} but y has {batch}"
            )
        return self._loss(outputs, y)

    @abstractmethod
    def _sample(
        self, generator: torch.Generator, batch_size: int, split: str
    ) -> tuple[Tensor, Tensor]:
        """Draw a batch from ``generator`` (arguments already validated)."""

    @abstractmethod
    def _loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        """Per-member loss of ``outputs`` against per-member targets ``y`` (K, batch, ...).

        Shapes are already validated.
        """


def _loss_dtype(outputs: Tensor) -> torch.dtype:
    """Compute losses in at least float32 even for half-precision outputs."""
    return torch.promote_types(outputs.dtype, torch.float32)


def _cross_entropy_per_member(outputs: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy over batch and steps, separately for each of the K members.

    ``outputs``: (K, B, T, C) logits; ``y``: (K, B, T) class ids, member k's in ``y[k]``.
    Rows are independent, so a NaN in one member's logits only reaches that member's mean.
    """
    k, b, t, c = outputs.shape
    logits = outputs.reshape(k * b * t, c).to(_loss_dtype(outputs))
    target = y.to(device=outputs.device, dtype=torch.long).reshape(-1)
    return F.cross_entropy(logits, target, reduction="none").view(k, b * t).mean(dim=1)


# --------------------------------------------------------------------------- adding


class AddingTask(Task):
    """The adding problem (Hochreiter & Schmidhuber 1997, in the variant of Le et al. 2015).

    Input: two channels over ``T = seq_len`` steps: values drawn from U[0, 1), and a marker
    channel holding exactly one 1 in the first half (positions ``[0, T//2)``) and one 1 in
    the second half (``[T//2, T)``). Target: the sum of the two marked values, shape
    ``(batch,)`` float32. The loss is the MSE of the last step's output (output_dim 1).

    Baseline: always predicting the mean, 1.0, gives MSE = Var(u1 + u2) = 2/12 = 1/6.
    """

    def __init__(self, seq_len: int) -> None:
        if seq_len < 2:
            raise ValueError(f"seq_len must be >= 2 for the adding task, got {seq_len}")
        super().__init__(
            name="adding",
            seq_len=seq_len,
            steps=seq_len,
            input_dim=2,
            output_dim=1,
            baseline_loss=1.0 / 6.0,
            default_target=ADDING_TARGET,
            loss_steps=1,
        )

    def _sample(
        self, generator: torch.Generator, batch_size: int, split: str
    ) -> tuple[Tensor, Tensor]:
        t, half = self.seq_len, self.seq_len // 2
        values = torch.rand(batch_size, t, generator=generator, dtype=torch.float32)
        first = torch.randint(0, half, (batch_size,), generator=generator)
        second = torch.randint(half, t, (batch_size,), generator=generator)
        markers = torch.zeros(batch_size, t, dtype=torch.float32)
        rows = torch.arange(batch_size)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=2)
        y = values[rows, first] + values[rows, second]
        return x, y

    def _loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        dtype = _loss_dtype(outputs)
        pred = outputs[:, :, -1, 0].to(dtype)  # (K, B)
        target = y.to(device=outputs.device, dtype=dtype)  # (K, B)
        return (pred - target).square().mean(dim=1)


def adding_task(seq_len: int) -> Task:
    """The adding problem: sum the two marked numbers of a sequence (:class:`AddingTask`;
    ``seq_len >= 2``)."""
    return AddingTask(seq_len)


# --------------------------------------------------------------------------- copy


class CopyTask(Task):
    """The copy-memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al. 2016).

    With ``T = seq_len``, the input (one-hot over 10 ids) is: 10 symbols drawn uniformly
    from an alphabet of 8 (ids 0..7), then ``T - 1`` blanks (id 8), the delimiter (id 9)
    at position ``T + 9``, and 10 more blanks: ``T + 20`` steps in all. The target, shape
    ``(batch, T + 20)`` long, is blank everywhere except the last 10 steps, which must
    reproduce the 10 symbols in order. The loss is the mean cross-entropy over all steps
    (output_dim 10, classes 0..9).

    Baseline: the memoryless predictor outputs blank with certainty for the first ``T + 10``
    steps and a uniform guess over the 8 symbols for the last 10, so its loss is
    ``10 * ln(8) / (T + 20)``.
    """

    def __init__(self, seq_len: int) -> None:
        steps = seq_len + 2 * COPY_LENGTH
        baseline = COPY_LENGTH * math.log(COPY_ALPHABET) / steps
        super().__init__(
            name="copy",
            seq_len=seq_len,
            steps=steps,
            input_dim=COPY_ALPHABET + 2,
            output_dim=COPY_ALPHABET + 2,
            baseline_loss=baseline,
            default_target=COPY_TARGET_FRACTION * baseline,
        )

    def _sample(
        self, generator: torch.Generator, batch_size: int, split: str
    ) -> tuple[Tensor, Tensor]:
        symbols = torch.randint(0, COPY_ALPHABET, (batch_size, COPY_LENGTH), generator=generator)
        ids = torch.full((batch_size, self.steps), COPY_BLANK, dtype=torch.long)
        ids[:, :COPY_LENGTH] = symbols
        ids[:, self.seq_len + COPY_LENGTH - 1] = COPY_DELIMITER
        y = torch.full((batch_size, self.steps), COPY_BLANK, dtype=torch.long)
        y[:, -COPY_LENGTH:] = symbols
        x = F.one_hot(ids, self.input_dim).to(torch.float32)
        return x, y

    def _loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        return _cross_entropy_per_member(outputs, y)


def copy_task(seq_len: int) -> Task:
    """The copy-memory task: recall 10 symbols after ``seq_len`` blanks (:class:`CopyTask`)."""
    return CopyTask(seq_len)


# --------------------------------------------------------------------------- charlm


@dataclass(frozen=True)
class _Corpus:
    """A text encoded as character ids."""

    source: str
    """How to name the text in messages."""
    vocab: str
    """The distinct characters, sorted."""
    ids: Tensor
    """int64 (len(text),): index of each character in ``vocab``."""
    entropy: float
    """Unigram entropy of the character frequencies, in nats."""


def _encode(text: str, source: str) -> _Corpus:
    """The vocabulary, ids and unigram entropy of ``text``, in linear time (no sort)."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
    counts = np.bincount(codes)
    vocab_codes = np.flatnonzero(counts)
    if len(vocab_codes) < 2:
        raise ValueError(f"{source} has only one distinct character: there is nothing to predict")
    lookup = np.zeros(len(counts), dtype=np.int64)
    lookup[vocab_codes] = np.arange(len(vocab_codes))
    ids = lookup[codes]
    p = counts[vocab_codes] / len(ids)
    entropy = float(-(p * np.log(p)).sum())
    vocab = "".join(chr(int(c)) for c in vocab_codes)
    return _Corpus(source, vocab, torch.from_numpy(ids), entropy)


@functools.lru_cache(maxsize=1)
def _default_corpus() -> _Corpus:
    """Python's own topic docs (``pydoc_data.topics``), joined in sorted-key order."""
    source = "the default corpus (pydoc_data.topics)"
    try:
        from pydoc_data.topics import topics
    except ImportError as e:  # pragma: no cover - only on stripped-down Pythons
        raise ValueError(f"{source} is not available in this Python: {e}") from None
    return _encode("".join(topics[key] for key in sorted(topics)), source)


def _load_corpus(path: str | os.PathLike[str]) -> _Corpus:
    """Read and validate a UTF-8 text file (a leading byte-order mark is dropped): only a
    regular file of at most :data:`MAX_CORPUS_BYTES`, ``os.stat``-ed first (a FIFO or a
    device is refused unopened: nothing blocks), opened non-blocking, checked again on the
    descriptor; at most one byte past the limit is ever read."""
    p = Path(path).expanduser()
    source = f"corpus file {str(path)!r}"
    try:
        kind = _file_kind(os.stat(p).st_mode)
        if kind == "directory":
            raise ValueError(f"{source} is a directory, not a text file")
        if kind != "file":
            raise ValueError(f"{source} is {kind}, not a regular file; give a text file")
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if _file_kind(st.st_mode) != "file":  # replaced between stat and open
                raise ValueError(f"{source} is not a regular file; give a text file")
            # at most one byte past the limit, even when the size is unknown (/proc) or grows
            data = b"" if st.st_size > MAX_CORPUS_BYTES else f.read(MAX_CORPUS_BYTES + 1)
            if max(st.st_size, len(data)) > MAX_CORPUS_BYTES:
                raise ValueError(
                    f"{source} is too large: {max(st.st_size, len(data)):,} bytes; a corpus"
                    f" may hold at most {MAX_CORPUS_BYTES:,} bytes"
                    f" ({MAX_CORPUS_BYTES // 2**20} MiB)"
                )
    except FileNotFoundError:
        raise ValueError(f"{source} does not exist") from None
    except OSError as e:
        raise ValueError(f"{source} could not be read: {e.strerror or e}") from None
    if not data:
        raise ValueError(f"{source} is empty")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise ValueError(f"{source} looks binary: it contains a NUL byte (byte offset {nul})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{source} is not valid UTF-8 text (byte offset {e.start})") from None
    text = text.removeprefix("\ufeff")
    if not text:
        raise ValueError(f"{source} is empty (it holds only a byte-order mark)")
    return _encode(text, source)


def _file_kind(mode: int) -> str:
    """What a stat mode describes, for messages: ``file``, ``directory``, ``a FIFO`` ..."""
    for test, kind in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return kind
    return "a special file"


def _split_point(n: int) -> int:
    """Number of characters in the train split of an n-character text (the first 90%)."""
    return (9 * n) // 10


def charlm_min_corpus_length(seq_len: int) -> int:
    """Fewest characters a corpus needs for ``seq_len``.

    Both splits (first 90% train, last 10% val) must be longer than ``seq_len + 1``
    characters, the length of one window. The val split (``n - 9n//10 = ceil(n/10)``
    characters) is the binding one: ``ceil(n/10) >= seq_len + 2`` iff
    ``n >= 10 * (seq_len + 1) + 1``, and then the train split has ``9 * (seq_len + 1)``.
    """
    return 10 * (seq_len + 1) + 1


class CharLMTask(Task):
    """Character-level language modelling: predict each next character of a UTF-8 text.

    The vocabulary is the sorted set of the corpus's characters; inputs are one-hot
    (``input_dim = output_dim = len(vocab)``). The first 90% of the text is the train split
    and the last 10% the val split. A sample is a random window of ``seq_len + 1``
    characters from the split: ``x`` one-hot encodes the first ``seq_len``, ``y`` (``(batch,
    seq_len)`` long) holds the next character at each step. The loss is the mean
    cross-entropy over all steps.

    Baseline: the best memoryless predictor predicts the unigram character distribution,
    whose loss is the unigram entropy ``-sum_c p(c) ln p(c)`` of the whole corpus, in nats.

    The default corpus (``corpus=None``) is the text of ``pydoc_data.topics``, which ships
    with CPython, so the task works offline.
    """

    def __init__(self, seq_len: int, corpus: str | os.PathLike[str] | None = None) -> None:
        data = _default_corpus() if corpus is None else _load_corpus(corpus)
        n = len(data.ids)
        need = charlm_min_corpus_length(seq_len)
        if n < need:
            raise ValueError(
                f"{data.source} is too short for seq_len={seq_len}: it has {n} characters, "
                f"needs at least {need} (the 90%/10% train/val splits must each be longer "
                f"than seq_len + 1 = {seq_len + 1} characters)"
            )
        cut = _split_point(n)
        self.corpus = None if corpus is None else os.fspath(corpus)
        """The corpus file (None = the default corpus)."""
        self.vocab = data.vocab
        """The characters that ids 0.. stand for."""
        self._splits = {"train": data.ids[:cut], "val": data.ids[cut:]}
        super().__init__(
            name="charlm",
            seq_len=seq_len,
            steps=seq_len,
            input_dim=len(data.vocab),
            output_dim=len(data.vocab),
            baseline_loss=data.entropy,
            default_target=CHARLM_TARGET_FRACTION * data.entropy,
        )

    def _sample(
        self, generator: torch.Generator, batch_size: int, split: str
    ) -> tuple[Tensor, Tensor]:
        ids = self._splits[split]
        window = self.seq_len + 1
        starts = torch.randint(0, len(ids) - window + 1, (batch_size, 1), generator=generator)
        chunk = ids[starts + torch.arange(window)]  # (B, seq_len + 1)
        x = F.one_hot(chunk[:, :-1], self.input_dim).to(torch.float32)
        return x, chunk[:, 1:].contiguous()

    def _loss(self, outputs: Tensor, y: Tensor) -> Tensor:
        return _cross_entropy_per_member(outputs, y)


def charlm_task(seq_len: int, corpus: str | os.PathLike[str] | None = None) -> Task:
    """Character-level language modelling of a UTF-8 text (:class:`CharLMTask`; ``corpus``
    None: Python's bundled docs)."""
    return CharLMTask(seq_len, corpus)


# --------------------------------------------------------------------------- registry

TaskFactory = Callable[..., Task]
"""``factory(seq_len)``, or ``factory(seq_len, corpus)`` for tasks that read a text."""

TASKS: dict[str, TaskFactory] = {
    "adding": adding_task,
    "copy": copy_task,
    "charlm": charlm_task,
}
"""Task name -> factory. Adding a task is one line here (see the module docstring)."""


def _reads_corpus(factory: TaskFactory) -> bool:
    return "corpus" in inspect.signature(factory).parameters


def get_task(name: str, seq_len: int, corpus: str | os.PathLike[str] | None = None) -> Task:
    """Build the task ``name`` for sequence length ``seq_len``.

    Args:
        name: a key of :data:`TASKS`.
        seq_len: the sequence-length parameter, >= 1 (the adding task needs >= 2).
        corpus: a UTF-8 text file, only for tasks that read one (charlm); None = default.

    Raises:
        ValueError: unknown name, bad ``seq_len``, a corpus for a task that reads none, or
            an unusable corpus file.
    """
    factory = TASKS.get(name)
    if factory is None:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    seq_len = operator.index(seq_len)
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    if not _reads_corpus(factory):
        if corpus is not None:
            readers = ", ".join(sorted(k for k, f in TASKS.items() if _reads_corpus(f)))
            raise ValueError(
                f"corpus: the {name!r} task reads no corpus (only {readers or 'none'} do)"
            )
        return factory(seq_len)
    return factory(seq_len, corpus=corpus)

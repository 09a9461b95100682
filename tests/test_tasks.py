"""Tests for models.tasks: shapes, determinism, per-member losses, baselines, corpus errors."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
import torch

from models.tasks import (
    ADDING_TARGET,
    CHARLM_TARGET_FRACTION,
    COPY_TARGET_FRACTION,
    TASKS,
    CharLMTask,
    Task,
    charlm_min_corpus_length,
    get_task,
)

SEQ_LEN = 12
K = 3
BATCH = 8


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _default_text() -> str:
    from pydoc_data.topics import topics

    return "".join(topics[key] for key in sorted(topics))


def _entropy(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log(c / n) for c in counts.values())


def _random_text(n: int, seed: int = 0, alphabet: str = "abcdefghij é\n") -> str:
    g = _gen(seed)
    idx = torch.randint(0, len(alphabet), (n,), generator=g).tolist()
    return "".join(alphabet[i] for i in idx)


def _charlm(seq_len: int, corpus: str | Path | None = None) -> CharLMTask:
    task = get_task("charlm", seq_len, corpus=corpus)
    assert isinstance(task, CharLMTask)
    return task


def _write(tmp_path: Path, content: str | bytes, name: str = "corpus.txt") -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- every task


@pytest.fixture(params=sorted(TASKS))
def task(request: pytest.FixtureRequest) -> Task:
    return get_task(request.param, SEQ_LEN)


def test_registry_builds_each_task_by_name_and_refuses_unknown_names() -> None:
    assert {"adding", "copy", "charlm"} <= set(TASKS)  # the tasks the README documents
    for name in TASKS:
        built = get_task(name, SEQ_LEN)
        assert built.name == name and built.seq_len == SEQ_LEN
    known = ", ".join(sorted(TASKS))
    for bad in ("addition", "Adding", ""):
        with pytest.raises(ValueError, match=f"unknown task {bad!r}; known: {known}"):
            get_task(bad, SEQ_LEN)


def test_steps_per_task() -> None:
    assert get_task("adding", SEQ_LEN).steps == SEQ_LEN
    assert get_task("copy", SEQ_LEN).steps == SEQ_LEN + 20
    assert get_task("charlm", SEQ_LEN).steps == SEQ_LEN


def test_shapes_and_dtypes(task: Task) -> None:
    assert task.name in TASKS
    assert task.seq_len == SEQ_LEN
    x, y = task.sample(_gen(0), BATCH)
    assert x.dtype == torch.float32
    assert x.shape == (BATCH, task.steps, task.input_dim)
    assert x.device.type == "cpu" and y.device.type == "cpu"
    if task.name == "adding":
        assert y.dtype == torch.float32 and y.shape == (BATCH,)
    else:
        assert y.dtype == torch.long and y.shape == (BATCH, task.steps)
        assert int(y.min()) >= 0 and int(y.max()) < task.output_dim
    outputs = torch.randn(K, BATCH, task.steps, task.output_dim, requires_grad=True)
    losses = task.loss(outputs, y)
    assert losses.shape == (K,)
    assert losses.dtype == torch.float32
    assert bool(torch.isfinite(losses).all())
    losses.sum().backward()
    assert outputs.grad is not None
    assert bool(torch.isfinite(outputs.grad).all()) and float(outputs.grad.abs().sum()) > 0


def test_loss_rejects_wrong_shapes(task: Task) -> None:
    _, y = task.sample(_gen(0), BATCH)
    with pytest.raises(ValueError, match="outputs must have shape"):
        task.loss(torch.zeros(BATCH, task.steps, task.output_dim), y)
    with pytest.raises(ValueError, match="outputs must have shape"):
        task.loss(torch.zeros(K, BATCH, task.steps + 1, task.output_dim), y)
    with pytest.raises(ValueError, match="batch"):
        task.loss(torch.zeros(K, BATCH + 1, task.steps, task.output_dim), y)


def test_sample_rejects_bad_arguments(task: Task) -> None:
    with pytest.raises(ValueError, match="split"):
        task.sample(_gen(0), BATCH, split="test")
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        task.sample(_gen(0), 0)


def test_determinism(task: Task) -> None:
    x1, y1 = task.sample(_gen(1), BATCH)
    x2, y2 = task.sample(_gen(1), BATCH)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, y3 = task.sample(_gen(2), BATCH)
    assert not torch.equal(x1, x3)
    assert not torch.equal(y1, y3)


def test_successive_batches_differ_and_replay(task: Task) -> None:
    g = _gen(3)
    first = task.sample(g, BATCH)
    second = task.sample(g, BATCH)
    assert not torch.equal(first[0], second[0])
    g = _gen(3)
    assert torch.equal(task.sample(g, BATCH)[0], first[0])
    assert torch.equal(task.sample(g, BATCH)[0], second[0])


def test_generator_advance_does_not_depend_on_batch_size(task: Task) -> None:
    g1, g2 = _gen(4), _gen(4)
    task.sample(g1, 1)
    task.sample(g2, 50)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_train_and_val_differ(task: Task) -> None:
    x_train, y_train = task.sample(_gen(5), BATCH, split="train")
    x_val, y_val = task.sample(_gen(5), BATCH, split="val")
    assert not torch.equal(x_train, x_val)
    assert not torch.equal(y_train, y_val)


def test_loss_is_per_member(task: Task) -> None:
    _, y = task.sample(_gen(6), BATCH)
    outputs = torch.randn(K, BATCH, task.steps, task.output_dim, generator=_gen(7))
    losses = task.loss(outputs, y)
    # Each member's loss equals the loss of that member evaluated alone.
    for k in range(K):
        alone = task.loss(outputs[k : k + 1], y)
        torch.testing.assert_close(alone[0], losses[k], rtol=1e-6, atol=1e-7)
    # Members differ (they got different outputs), so nothing is averaged across K.
    assert len(set(losses.tolist())) == K
    poisoned = outputs.clone()
    poisoned[0, 0, -1, 0] = float("nan")
    poisoned_losses = task.loss(poisoned, y)
    assert math.isnan(float(poisoned_losses[0]))
    assert bool(torch.isfinite(poisoned_losses[1:]).all())
    assert torch.equal(poisoned_losses[1:], losses[1:])


def test_loss_takes_per_member_targets(task: Task) -> None:
    ys = [task.sample(_gen(20 + k), BATCH)[1] for k in range(K)]
    outputs = torch.randn(K, BATCH, task.steps, task.output_dim, generator=_gen(10))
    losses = task.loss(outputs, torch.stack(ys), per_member=True)
    assert losses.shape == (K,)
    # Member k's loss is its outputs against its own targets.
    for k in range(K):
        alone = task.loss(outputs[k : k + 1], ys[k])
        torch.testing.assert_close(alone[0], losses[k], rtol=1e-6, atol=1e-7)
    # Shared targets given per member (repeated) give the shared loss.
    shared = task.loss(outputs, ys[0])
    repeated = task.loss(outputs, torch.stack([ys[0]] * K), per_member=True)
    torch.testing.assert_close(repeated, shared, rtol=1e-6, atol=1e-7)
    assert not torch.equal(losses, shared)
    with pytest.raises(ValueError, match="per-member targets"):
        task.loss(outputs, torch.stack(ys[:-1]), per_member=True)


def test_loss_is_float32_for_half_outputs(task: Task) -> None:
    _, y = task.sample(_gen(8), BATCH)
    outputs = torch.randn(K, BATCH, task.steps, task.output_dim, generator=_gen(9))
    half = task.loss(outputs.to(torch.bfloat16), y)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, task.loss(outputs, y), rtol=0.05, atol=0.05)


def test_baseline_positive_and_target_below_it(task: Task) -> None:
    assert task.baseline_loss > 0
    assert 0 < task.default_target < task.baseline_loss


# --------------------------------------------------------------------------- adding


def test_adding_baseline_formula_and_empirical() -> None:
    task = get_task("adding", 4)
    assert task.baseline_loss == pytest.approx(1 / 6, abs=1e-12)
    assert task.default_target == ADDING_TARGET
    _, y = task.sample(_gen(10), 20_000)
    outputs = torch.zeros(2, 20_000, task.steps, 1)
    outputs[0, :, -1, 0] = 1.0  # the constant baseline predictor
    # Member 1 predicts 0 at the last step but 1.0 at earlier steps: only the last counts.
    outputs[1, :, :-1, 0] = 1.0
    losses = task.loss(outputs, y)
    # Std of the estimate is about 0.2 / sqrt(20000) = 0.0014.
    assert float(losses[0]) == pytest.approx(1 / 6, abs=0.007)
    assert float(losses[1]) == pytest.approx(1 + 1 / 6, abs=0.02)  # E[s^2] = Var + 1


@pytest.mark.parametrize("seq_len", [2, 3, 7, 10])
def test_adding_structure(seq_len: int) -> None:
    task = get_task("adding", seq_len)
    x, y = task.sample(_gen(11), 2000)
    values, markers = x[..., 0], x[..., 1]
    half = seq_len // 2
    assert bool(((values >= 0) & (values < 1)).all())
    assert bool(((markers == 0) | (markers == 1)).all())
    assert torch.equal(markers[:, :half].sum(dim=1), torch.ones(2000))
    assert torch.equal(markers[:, half:].sum(dim=1), torch.ones(2000))
    torch.testing.assert_close(y, (values * markers).sum(dim=1))
    # Every position of each half is used as a marker position.
    assert bool((markers.sum(dim=0) > 0).all())


def test_adding_needs_two_steps() -> None:
    with pytest.raises(ValueError, match="seq_len must be >= 2 for the adding task, got 1"):
        get_task("adding", 1)


# --------------------------------------------------------------------------- copy


@pytest.mark.parametrize("seq_len", [1, 5, 50])
def test_copy_baseline_formula_and_memoryless_predictor(seq_len: int) -> None:
    task = get_task("copy", seq_len)
    expected = 10 * math.log(8) / (seq_len + 20)
    assert task.baseline_loss == pytest.approx(expected, rel=1e-12)
    assert task.default_target == pytest.approx(COPY_TARGET_FRACTION * expected, rel=1e-12)
    _, y = task.sample(_gen(12), 64)
    logits = torch.full((1, 64, task.steps, 10), -1e9)
    logits[..., : seq_len + 10, 8] = 0.0  # blank with certainty
    logits[..., seq_len + 10 :, :8] = 0.0  # uniform over the 8 symbols
    assert float(task.loss(logits, y)[0]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("seq_len", [1, 4, 30])
def test_copy_structure(seq_len: int) -> None:
    task = get_task("copy", seq_len)
    x, y = task.sample(_gen(13), 200)
    assert task.steps == seq_len + 20
    assert torch.equal(x.sum(dim=2), torch.ones(200, task.steps))  # one-hot
    ids = x.argmax(dim=2)
    symbols = ids[:, :10]
    assert int(symbols.max()) <= 7
    assert set(symbols.flatten().tolist()) == set(range(8))
    delimiter = seq_len + 9
    assert bool((ids[:, 10:delimiter] == 8).all())
    assert bool((ids[:, delimiter] == 9).all())
    assert bool((ids[:, delimiter + 1 :] == 8).all())
    assert int((ids == 9).sum()) == 200  # exactly one delimiter per sequence
    assert bool((y[:, : seq_len + 10] == 8).all())
    assert torch.equal(y[:, -10:], symbols)


# --------------------------------------------------------------------------- charlm


def test_charlm_default_corpus_baseline() -> None:
    task = _charlm(64)
    text = _default_text()
    assert task.vocab == "".join(sorted(set(text)))
    assert task.input_dim == task.output_dim == len(set(text))
    expected = _entropy(text)
    assert task.baseline_loss == pytest.approx(expected, rel=1e-9)
    assert task.default_target == pytest.approx(CHARLM_TARGET_FRACTION * expected, rel=1e-9)
    # A unigram predictor (log-frequency logits) scores about the baseline on val data.
    counts = Counter(text)
    freq = torch.tensor([counts[c] for c in task.vocab], dtype=torch.float64)
    logits = (freq / freq.sum()).log().float()
    _, y = task.sample(_gen(14), 512, split="val")
    outputs = logits.expand(1, 512, 64, task.output_dim)
    assert float(task.loss(outputs, y)[0]) == pytest.approx(expected, rel=0.05)


def test_charlm_default_corpus_is_cached() -> None:
    a, b = _charlm(8), _charlm(9)
    # Both tasks' ids are views of the one cached tensor, not separate loads.
    assert a._splits["train"].data_ptr() == b._splits["train"].data_ptr()


def test_charlm_file_corpus(tmp_path: Path) -> None:
    text = _random_text(3000)
    path = _write(tmp_path, text)
    task = _charlm(16, str(path))
    assert task.vocab == "".join(sorted(set(text)))
    assert task.input_dim == task.output_dim == len(task.vocab)
    assert task.baseline_loss == pytest.approx(_entropy(text), rel=1e-9)
    cut = (9 * len(text)) // 10
    parts = {"train": text[:cut], "val": text[cut:]}
    for split, part in parts.items():
        x, y = task.sample(_gen(15), 32, split=split)
        assert torch.equal(x.sum(dim=2), torch.ones(32, 16))
        for i in range(32):
            inp = "".join(task.vocab[j] for j in x[i].argmax(dim=1).tolist())
            nxt = "".join(task.vocab[j] for j in y[i].tolist())
            assert inp[1:] == nxt[:-1]  # y is x shifted by one
            assert inp + nxt[-1] in part
    # Path objects work too.
    assert _charlm(16, path).vocab == task.vocab


def test_charlm_windows_reach_both_ends_of_a_split(tmp_path: Path) -> None:
    seq_len = 5
    text = _random_text(charlm_min_corpus_length(seq_len), seed=1)
    task = _charlm(seq_len, str(_write(tmp_path, text)))
    val = text[(9 * len(text)) // 10 :]
    assert len(val) == seq_len + 2  # the minimum: two possible windows
    x, y = task.sample(_gen(16), 200, split="val")
    firsts = {task.vocab[int(j)] for j in x[:, 0].argmax(dim=1)}
    lasts = {task.vocab[int(j)] for j in y[:, -1]}
    assert firsts == {val[0], val[1]} or val[0] == val[1]
    assert val[-1] in lasts and val[-2] in lasts


def test_charlm_min_corpus_length_is_tight() -> None:
    for seq_len in range(1, 60):
        n = charlm_min_corpus_length(seq_len)
        for m, ok in ((n, True), (n - 1, False)):
            cut = (9 * m) // 10
            fits = min(cut, m - cut) > seq_len + 1
            assert fits == ok, (seq_len, m)


def test_charlm_utf8_bom_is_dropped(tmp_path: Path) -> None:
    text = _random_text(500)
    path = _write(tmp_path, b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert _charlm(4, str(path)).vocab == "".join(sorted(set(text)))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"corpus file '.*missing\.txt' does not exist"),
        (b"", r"corpus file '.*' is empty"),
        (b"hello world\xff\xfe\xfa more text", r"not valid UTF-8 text \(byte offset 11\)"),
        (b"hello\x00world" * 100, r"looks binary: it contains a NUL byte \(byte offset 5\)"),
        (b"abc" * 10, r"too short for seq_len=16: it has 30 characters, needs at least 171"),
        (b"a" * 1000, r"only one distinct character"),
    ],
    ids=["missing", "empty", "not-utf8", "nul", "too-short", "one-char"],
)
def test_charlm_corpus_errors(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "missing.txt" if content is None else _write(tmp_path, content)
    with pytest.raises(ValueError, match=message) as info:
        get_task("charlm", 16, corpus=str(path))
    assert "\n" not in str(info.value)


def test_charlm_directory_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        get_task("charlm", 4, corpus=str(tmp_path))


def test_charlm_default_corpus_too_short_for_huge_seq_len() -> None:
    with pytest.raises(ValueError, match=r"default corpus .* too short for seq_len=1000000"):
        get_task("charlm", 1_000_000)


# --------------------------------------------------------------------------- get_task


def test_unknown_task_lists_known() -> None:
    with pytest.raises(ValueError) as info:
        get_task("nope", 10)
    assert str(info.value) == "unknown task 'nope'; known: adding, charlm, copy"


@pytest.mark.parametrize("name", sorted(TASKS))
def test_seq_len_zero_refused(name: str) -> None:
    with pytest.raises(ValueError, match="seq_len must be >= 1, got 0"):
        get_task(name, 0)


@pytest.mark.parametrize("name", ["adding", "copy"])
def test_corpus_refused_for_synthetic_tasks(name: str, tmp_path: Path) -> None:
    path = _write(tmp_path, _random_text(500))
    with pytest.raises(ValueError, match=rf"corpus: the '{name}' task reads no corpus"):
        get_task(name, 10, corpus=str(path))


def test_adding_loss_reads_only_the_last_step() -> None:
    """loss_steps=1: the loss of the last step's outputs alone equals the full one, and a
    model asked for the last step only gives (nearly) the same outputs there."""
    from models.cells import PackedRNN

    task = get_task("adding", 12)
    assert task.loss_steps == 1
    x, y = task.sample(torch.Generator().manual_seed(0), 16)
    model = PackedRNN(3, "rnn_tanh", task.input_dim, 8, task.output_dim)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
        full, _ = model(x)
        last, _ = model(x, last=1)
    assert full.shape == (3, 16, 12, 1) and last.shape == (3, 16, 1, 1)
    torch.testing.assert_close(last[:, :, 0], full[:, :, -1], rtol=1e-6, atol=1e-6)
    assert torch.equal(task.loss(full[:, :, -1:], y), task.loss(full, y))
    with pytest.raises(ValueError, match="outputs must have shape"):
        task.loss(full[:, :, -2:], y)
    assert get_task("copy", 5).loss_steps is None


# --------------------------------------------------------------------------- corpus bounds


@pytest.mark.parametrize(
    ("path", "kind"), [("/dev/zero", "a device"), ("/dev/null", "a device")], ids=["zero", "null"]
)
def test_charlm_device_corpus_refused_unread(path: str, kind: str) -> None:
    # /dev/zero is endless: reading it whole took 5 GiB in 5 s before the check
    with pytest.raises(ValueError, match=rf"corpus file '{path}' is {kind}, not a regular file"):
        get_task("charlm", 4, corpus=path)


def test_charlm_fifo_corpus_refused_without_blocking(tmp_path: Path) -> None:
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    caught: list[BaseException] = []
    worker = threading.Thread(target=lambda: _catch(caught, str(fifo)), daemon=True)
    worker.start()
    worker.join(10)  # opening a FIFO with no writer blocks forever without the stat check
    assert not worker.is_alive(), "reading a FIFO corpus blocked"
    assert len(caught) == 1 and "is a FIFO (named pipe), not a regular file" in str(caught[0])


def _catch(caught: list[BaseException], corpus: str) -> None:
    try:
        get_task("charlm", 4, corpus=corpus)
    except ValueError as exc:
        caught.append(exc)


def test_charlm_symlink_to_device_refused(tmp_path: Path) -> None:
    link = tmp_path / "corpus.txt"
    link.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="is a device"):
        get_task("charlm", 4, corpus=str(link))


def test_charlm_corpus_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from models import tasks

    assert tasks.MAX_CORPUS_BYTES == 64 * 2**20
    # a sparse file one byte over the real limit is refused from its size, unread
    big = tmp_path / "big.txt"
    with big.open("wb") as f:
        f.truncate(tasks.MAX_CORPUS_BYTES + 1)
    with pytest.raises(ValueError, match=r"is too large: 67,108,865 bytes; .* at most 67,108,864"):
        get_task("charlm", 4, corpus=str(big))
    # exactly at the limit is read; one byte more is not
    monkeypatch.setattr(tasks, "MAX_CORPUS_BYTES", 1000)
    text = _random_text(1000, seed=3, alphabet="abcdef \n")
    assert len(_charlm(4, _write(tmp_path, text, "at.txt")).vocab) == 8
    with pytest.raises(ValueError, match=r"too large: 1,001 bytes; .* at most 1,000 bytes"):
        get_task("charlm", 4, corpus=str(_write(tmp_path, text + "a", "over.txt")))


def test_charlm_encoding_matches_a_sorted_vocabulary(tmp_path: Path) -> None:
    text = _random_text(5000, seed=4, alphabet="zyx\u00e9\u4e2d\U0001f600 \n")
    task = _charlm(8, _write(tmp_path, text))
    assert task.vocab == "".join(sorted(set(text)))
    ids = torch.cat([task._splits["train"], task._splits["val"]])
    assert ids.dtype == torch.int64
    assert "".join(task.vocab[i] for i in ids.tolist()) == text
    assert task.baseline_loss == pytest.approx(_entropy(text), rel=1e-12)

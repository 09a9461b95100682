"""Training, packing, divergence and diagnostics of models/ (pure PyTorch, no Ray)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from models import (
    CELLS,
    OPTIMIZERS,
    PackedRNN,
    TrialResult,
    TrialSpec,
    check_spec,
    get_optimizer,
    init_weights,
    train_pack,
    train_trial,
)
from models.optim import clip_member_grads, member_grad_norms

TINY = TrialSpec(
    task="adding",
    seq_len=6,
    hidden=16,
    batch_size=16,
    batches_per_epoch=5,
    max_epochs=3,
    val_size=64,
    lr=0.01,
)


def test_same_spec_gives_identical_results() -> None:
    a, b = train_trial(TINY), train_trial(TINY)
    assert a.numbers() == b.numbers()
    assert len(a.history) == 3


@pytest.mark.slow  # it trains two trials: seconds
def test_different_seeds_give_different_results() -> None:
    a = train_trial(TINY)
    b = train_trial(dataclasses.replace(TINY, seed=1))
    assert a.history[-1].val_loss != b.history[-1].val_loss


def test_result_round_trips_through_json() -> None:
    spec = dataclasses.replace(TINY, scale=1e6, max_epochs=2)
    result = train_trial(spec)
    again = TrialResult.from_json(result.to_json())
    assert again.to_json() == result.to_json()
    assert again.spec == spec


@pytest.mark.slow  # it trains until the loss falls: seconds
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_every_cell_learns(cell: str) -> None:
    spec = dataclasses.replace(TINY, cell=cell, max_epochs=4, batches_per_epoch=10)
    result = train_trial(spec)
    assert result.diverged_epoch is None
    assert result.history[-1].val_loss < 0.7 * result.diagnostics.initial_loss


@pytest.mark.slow  # it trains until the loss falls: seconds
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_every_optimizer_learns(optimizer: str) -> None:
    lr = {"sgd": 0.1, "adam": 0.01, "rmsprop": 0.003}[optimizer]
    spec = dataclasses.replace(TINY, optimizer=optimizer, lr=lr, max_epochs=4)
    result = train_trial(spec)
    assert result.history[-1].val_loss < result.diagnostics.initial_loss


def test_absurd_scale_is_a_diverged_result_not_an_error() -> None:
    result = train_trial(dataclasses.replace(TINY, scale=1e6))
    assert result.diverged_epoch == 1
    assert result.converged_epoch is None
    assert len(result.history) == 1


def test_non_finite_loss_is_diverged_with_its_epoch() -> None:
    spec = dataclasses.replace(TINY, optimizer="sgd", lr=1e9, scale=3.0, cell="rnn_relu")
    result = train_trial(spec)
    assert result.diverged_epoch is not None
    assert result.diverged_epoch <= spec.max_epochs
    assert result.converged_epoch is None


def test_an_exploding_frozen_trial_is_diverged_with_its_epoch_and_diagnosis() -> None:
    # The expert review's case (issue 24): uniform01 at hidden 128 saturates tanh to
    # exactly +-1 (frozen at init); plain SGD at lr 0.01 without clipping then blows the
    # loss up through the output layer. It is diverged, and still diagnosed frozen.
    spec = dataclasses.replace(
        TINY, hidden=128, init="uniform01", optimizer="sgd", lr=0.01, clip=None, max_epochs=2
    )
    result = train_trial(spec)
    assert result.frozen_at_init and result.diagnostics.frozen
    assert result.diverged_epoch == 1 and result.exploded
    assert result.history[0].val_loss > 5 * result.diagnostics.initial_loss
    assert result.outcome == "diverged"
    # Clipped at 1, the same trial does not explode: the divergence rule still ends it
    # (a loss thousands of times the baseline that does not come down), but it is frozen.
    clipped = train_trial(dataclasses.replace(spec, clip=1.0))
    assert clipped.frozen_at_init and not clipped.exploded
    assert clipped.history[0].val_loss <= clipped.diagnostics.initial_loss
    assert clipped.outcome == "frozen"


def test_a_linear_rnn_with_gain_above_one_explodes_and_is_diverged() -> None:
    # rnn_linear has no nonlinearity to bound the state: with Whh orthogonal at gain 1.5
    # the state grows as 1.5^t, and plain SGD takes the loss to non-finite in one epoch.
    spec = dataclasses.replace(
        TINY, cell="rnn_linear", init="orthogonal", recurrent_scale=1.5, seq_len=20,
        optimizer="sgd", lr=0.1,
    )  # fmt: skip
    result = train_trial(spec)
    assert result.diagnostics.spectral_radius == pytest.approx(1.5, rel=1e-5)
    assert result.diverged_epoch == 1 and result.exploded and result.outcome == "diverged"
    assert not math.isfinite(result.history[0].train_loss)
    # The same cell at gain 0.5 under Adam trains without diverging.
    calm = train_trial(dataclasses.replace(spec, recurrent_scale=0.5, optimizer="adam", lr=0.01))
    assert calm.diverged_epoch is None and not calm.exploded
    assert calm.history[-1].val_loss < calm.diagnostics.initial_loss


def test_convergence_stops_training_after_patience_evaluations_at_the_target() -> None:
    spec = dataclasses.replace(TINY, target_loss=10.0, patience=2)  # every epoch is below
    result = train_trial(spec)
    assert result.converged_epoch == 1  # the first of the two
    assert len(result.history) == 2
    assert result.outcome == "converged"
    keep_going = train_trial(dataclasses.replace(spec, stop_on_converge=False))
    assert keep_going.converged_epoch == 1
    assert len(keep_going.history) == spec.max_epochs
    first_crossing = train_trial(dataclasses.replace(spec, patience=1))
    assert (first_crossing.converged_epoch, len(first_crossing.history)) == (1, 1)


def _first_streak(hits: list[bool], k: int) -> int | None:
    """1-based first epoch of k consecutive hits (the rule, written out independently)."""
    for i in range(len(hits) - k + 1):
        if all(hits[i : i + k]):
            return i + 1
    return None


@pytest.mark.slow  # it trains packs or long trials: seconds
def test_a_streak_broken_before_patience_does_not_converge() -> None:
    """Convergence needs `patience` consecutive evaluations: a lone crossing is not enough."""
    probe = train_trial(dataclasses.replace(TINY, stop_on_converge=False, max_epochs=8))
    losses = [r.val_loss for r in probe.history]
    # A target some epoch reaches and the next one misses (the loss rose after it).
    rises = [i for i in range(len(losses) - 1) if losses[i + 1] > losses[i]]
    assert rises, f"this probe trial's loss never rose: {losses}"
    target = losses[rises[0]]
    hits = [v <= target for v in losses]
    assert _first_streak(hits, 1) != _first_streak(hits, 2)
    for k in (1, 2, 3):
        spec = dataclasses.replace(
            TINY, stop_on_converge=False, max_epochs=8, target_loss=target, patience=k
        )
        assert train_trial(spec).converged_epoch == _first_streak(hits, k), k


def test_patience_above_the_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="patience: must be at most max_epochs"):
        train_trial(dataclasses.replace(TINY, patience=TINY.max_epochs + 1))


@pytest.mark.slow  # it trains packs or long trials: seconds
def test_pack_members_match_solo_training() -> None:
    """A member's result equals the same spec trained alone, bit for bit (same CPU build)."""
    specs = [
        dataclasses.replace(TINY, init="xavier", seed=0),
        dataclasses.replace(TINY, init="uniform01", seed=1, lr=0.003),
        dataclasses.replace(TINY, init="orthogonal", seed=2, clip=0.5),
        dataclasses.replace(TINY, init="xavier", seed=3, scale=1e6),  # diverges at epoch 1
        dataclasses.replace(TINY, init="he_normal", seed=4, max_epochs=2),
    ]
    solo = [train_trial(spec) for spec in specs]
    assert solo[3].diverged_epoch == 1
    for size in (2, 3, len(specs)):
        packed = train_pack(specs[:size])
        for alone, member in zip(solo, packed, strict=False):
            assert member.numbers() == alone.numbers()
            assert member.extra["pack_size"] == size
    assert solo[0].extra["pack_size"] == 1


@pytest.mark.slow  # it trains a pack and solo trials of every cell: seconds
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_packing_is_exact_for_every_cell(cell: str) -> None:
    specs = [
        dataclasses.replace(TINY, cell=cell, seed=s, init=i)
        for s, i in ((0, "xavier"), (1, "orthogonal"), (2, "uniform01"))
    ]
    packed = train_pack(specs)
    for spec, member in zip(specs, packed, strict=True):
        assert member.numbers() == train_trial(spec).numbers()


@pytest.mark.slow  # it trains packs or long trials: seconds
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pack_compacts_as_members_stop_and_stays_exact(optimizer: str) -> None:
    """Members that stop at different epochs leave the pack; results stay bit-exact."""
    base = dataclasses.replace(TINY, optimizer=optimizer, lr=0.01 if optimizer != "sgd" else 0.1)
    specs = [
        dataclasses.replace(base, seed=0, max_epochs=2),
        dataclasses.replace(base, seed=1, scale=1e6, max_epochs=3),  # may diverge
        dataclasses.replace(base, seed=2, target_loss=10.0, max_epochs=5),  # converges at 1
        dataclasses.replace(base, seed=3, init="orthogonal", max_epochs=5, clip=0.5),
        dataclasses.replace(base, seed=4, init="he_normal", max_epochs=4, data_seed=1),
        dataclasses.replace(base, seed=5, target_loss=10.0, stop_on_converge=False),
    ]
    solo = [train_trial(spec) for spec in specs]
    lengths = [len(r.history) for r in solo]
    assert len(set(lengths)) >= 4 and max(lengths) == 5  # members stop at different epochs
    assert any(r.diverged for r in solo)
    assert (solo[2].converged_epoch, lengths[2]) == (1, specs[2].patience)
    assert (solo[5].converged_epoch, lengths[5]) == (1, 3)
    packed = train_pack(specs)
    for alone, member in zip(solo, packed, strict=True):
        assert member.numbers() == alone.numbers()
        assert member.extra["pack_size"] == len(specs)
    # Each epoch trains the members still running (a lone one beside a copy of itself).
    running = [sum(n >= epoch for n in lengths) for epoch in range(1, 6)]
    assert running[-1] == 1
    expected = sum(max(n, 2) for n in running)
    assert packed[0].extra["member_epochs"] == expected < len(specs) * 5
    # A lone trial is a pack of two copies for all its epochs.
    assert solo[3].extra["member_epochs"] == 2 * lengths[3]


@pytest.mark.slow  # it trains packs or long trials: seconds
@pytest.mark.parametrize(
    ("cell", "task"), [(c, "adding") for c in sorted(CELLS)] + [("gru", "copy")]
)
def test_pack_may_mix_data_seeds_and_stays_exact(cell: str, task: str) -> None:
    base = dataclasses.replace(TINY, cell=cell, task=task)
    specs = [
        dataclasses.replace(base, seed=0, data_seed=3),
        dataclasses.replace(base, seed=1, data_seed=0, init="orthogonal"),
        dataclasses.replace(base, seed=2, data_seed=3, init="uniform01", max_epochs=2),
        dataclasses.replace(base, seed=3, data_seed=7, lr=0.003),
        dataclasses.replace(base, seed=0, data_seed=0),
    ]
    packed = train_pack(specs)
    solo = [train_trial(spec) for spec in specs]
    for alone, member in zip(solo, packed, strict=True):
        assert member.numbers() == alone.numbers()
    # Same weights, different data streams: different numbers (so the streams are used).
    assert packed[0].history[0].train_loss != packed[4].history[0].train_loss
    assert packed[0].diagnostics.initial_loss != packed[4].diagnostics.initial_loss


def test_members_sharing_a_data_seed_see_the_same_data() -> None:
    """Two copies of a spec in a pack of other data seeds get identical numbers."""
    a = dataclasses.replace(TINY, seed=4, data_seed=2)
    packed = train_pack([a, dataclasses.replace(TINY, data_seed=9), a])
    assert packed[0].numbers() == packed[2].numbers()
    assert packed[0].numbers() != packed[1].numbers()


def test_data_seed_is_not_part_of_the_shape() -> None:
    assert dataclasses.replace(TINY, data_seed=5).shape_key() == TINY.shape_key()


def test_pack_refuses_mixed_shapes() -> None:
    with pytest.raises(ValueError, match="share a shape"):
        train_pack([TINY, dataclasses.replace(TINY, hidden=8)])
    with pytest.raises(ValueError, match="share a shape"):
        train_pack([TINY, dataclasses.replace(TINY, data_seed=1, optimizer="sgd")])


def test_diagnostics_follow_the_theory() -> None:
    """C1-C3 inputs: xavier's Whh has spectral radius near 1, uniform01's near H/2."""
    h = 64
    base = dataclasses.replace(TINY, hidden=h, seq_len=20, max_epochs=1, batches_per_epoch=1)
    xavier = train_trial(base).diagnostics
    uniform = train_trial(dataclasses.replace(base, init="uniform01")).diagnostics
    assert len(xavier.hidden_var) == len(xavier.hidden_sat) == len(xavier.grad_norm) == 20
    assert 0.8 < xavier.spectral_radius < 1.3
    assert uniform.spectral_radius == pytest.approx(h / 2, rel=0.1)
    assert uniform.hidden_sat[-1] > 0.9 > xavier.hidden_sat[-1]
    assert all(math.isfinite(g) for g in xavier.grad_norm)
    # The adding task's loss reads the last step, so the gradient is largest there.
    assert xavier.grad_norm[-1] > xavier.grad_norm[0]


@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_hidden_spread_matches_float64(shift: float) -> None:
    """The per-epoch hidden variance and saturated share, reduced in float32, agree with
    a float64 computation (a shifted, ReLU-like row too, where a one-pass variance would
    cancel), and count exactly the entries above the saturation threshold."""
    from models.theory import SATURATION
    from models.train import _spread

    gen = torch.Generator().manual_seed(0)
    h = torch.tanh(2 * torch.randn(3, 200_000, generator=gen)) + shift
    h[1, :1000] = SATURATION  # at the threshold: not saturated
    variance, saturated = _spread(h)
    reference = h.double()
    assert torch.allclose(variance, reference.var(dim=1), rtol=1e-6, atol=0)
    exact = (h.abs() > SATURATION).sum(dim=1, dtype=torch.float64) / h.shape[1]
    assert torch.equal(saturated, exact)
    assert variance.dtype == saturated.dtype == torch.float64


def test_recurrent_override_applies_to_whh_alone() -> None:
    spec = dataclasses.replace(TINY, init="uniform01", init_recurrent="orthogonal")
    model = PackedRNN(1, "rnn_tanh", 2, spec.hidden, 1)
    init_weights(model, [spec])
    whh = model.Whh[0].detach()
    torch.testing.assert_close(whh.T @ whh, torch.eye(spec.hidden), atol=1e-5, rtol=0)
    assert bool((model.Wxh >= 0).all()) and bool((model.Why >= 0).all())


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_fast_forward_matches_the_step_by_step_graph(cell: str) -> None:
    """forward (a fused recurrence for the Elman cells) equals forward_steps, grads too."""
    gen = torch.Generator().manual_seed(3)
    model = PackedRNN(3, cell, 2, 8, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    x = torch.randn(3, 4, 5, 2, generator=gen, dtype=torch.float64)
    grads = []
    for run in (model.forward, model.forward_steps):
        model.zero_grad(set_to_none=True)
        outputs, hidden = run(x)
        states = hidden if isinstance(hidden, torch.Tensor) else torch.stack(hidden, dim=1)
        (outputs.square().sum() + states.sin().sum()).backward()
        grads.append([outputs.detach(), states.detach()] + [p.grad for p in model.parameters()])
    assert states.shape == (3, 5, 4, 8)
    for fast, slow in zip(*grads, strict=True):
        assert fast is not None and slow is not None
        torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)
        assert float(slow.abs().sum()) > 0


def test_member_weights_do_not_depend_on_pack_mates() -> None:
    a = dataclasses.replace(TINY, init="he_normal", seed=5)
    b = dataclasses.replace(TINY, init="uniform01", seed=9)
    solo, pair = PackedRNN(1, "lstm", 2, 16, 1), PackedRNN(2, "lstm", 2, 16, 1)
    init_weights(solo, [a])
    init_weights(pair, [b, a])
    for name, p in solo.named_parameters():
        assert torch.equal(p[0], dict(pair.named_parameters())[name][1]), name


@pytest.mark.parametrize(
    ("name", "torch_cls"),
    [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("rmsprop", torch.optim.RMSprop)],
)
def test_packed_optimizer_matches_torch(name: str, torch_cls: type) -> None:
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(2, 5, 3, generator=gen)
    packed_p = start.clone().requires_grad_()
    ref = [start[i].clone().requires_grad_() for i in range(2)]
    lrs = [0.01, 0.05]
    packed = get_optimizer(name)([packed_p], torch.tensor(lrs))
    refs = [torch_cls([p], lr=lr) for p, lr in zip(ref, lrs, strict=True)]
    for _ in range(5):
        target = torch.randn(5, 3, generator=gen)
        packed_p.grad = None
        ((packed_p - target) ** 2).sum().backward()
        packed.step(torch.tensor([True, True]))
        for p, opt in zip(ref, refs, strict=True):
            opt.zero_grad()
            ((p - target) ** 2).sum().backward()
            opt.step()
    for i in range(2):
        torch.testing.assert_close(packed_p[i].detach(), ref[i].detach(), rtol=1e-5, atol=1e-6)


def test_optimizer_leaves_inactive_members_untouched() -> None:
    p = torch.ones(2, 3, requires_grad=True)
    p.grad = torch.full((2, 3), float("nan"))
    get_optimizer("adam")([p], torch.tensor([0.1, 0.1])).step(torch.tensor([False, True]))
    assert torch.equal(p[0].detach(), torch.ones(3))
    assert bool(torch.isnan(p[1]).all())


def test_per_member_clipping_matches_torch() -> None:
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(3, 4, 4, generator=gen) * 5, torch.randn(3, 4, generator=gen)]
    params = [torch.zeros_like(g, requires_grad=True) for g in grads]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    norms = member_grad_norms(params)
    clip_member_grads(params, norms, torch.tensor([1.0, math.inf, 100.0]))
    for k, max_norm in enumerate([1.0, math.inf, 100.0]):
        ref = [torch.zeros_like(g[k], requires_grad=True) for g in grads]
        for r, g in zip(ref, grads, strict=True):
            r.grad = g[k].clone()
        ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm)
        assert float(norms[k]) == pytest.approx(float(ref_norm), rel=1e-5)
        for p, r in zip(params, ref, strict=True):
            assert p.grad is not None and r.grad is not None
            torch.testing.assert_close(p.grad[k], r.grad)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"task": "bogus"}, "task"),
        ({"cell": "bogus"}, "cell"),
        ({"init": "bogus"}, "init"),
        ({"init_recurrent": "bogus"}, "init_recurrent"),
        ({"optimizer": "adagrad"}, "optimizer"),
        ({"hidden": 0}, "hidden"),
        ({"seq_len": -3}, "seq_len"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_epochs": 0}, "max_epochs"),
        ({"lr": 0.0}, "lr"),
        ({"lr": math.nan}, "lr"),
        ({"clip": -1.0}, "clip"),
        ({"scale": math.inf}, "scale"),
        ({"seed": -1}, "seed"),
        ({"corpus": "x.txt"}, "corpus"),
        # the rules a study spec has always had, now the same for every trial
        ({"scale": -0.5}, "scale"),
        ({"recurrent_scale": -1.0}, "recurrent_scale"),
        ({"divergence_factor": 1.0}, "divergence_factor"),
        ({"seed": 2**32}, "seed"),
        ({"data_seed": -1}, "data_seed"),
        ({"target_loss": 0.0}, "target_loss"),
        ({"val_size": 0}, "val_size"),
        ({"hidden": 2.0}, "hidden"),
        ({"stop_on_converge": 1}, "stop_on_converge"),
    ],
)
def test_check_spec_names_the_field(change: dict[str, object], field: str) -> None:
    spec = dataclasses.replace(TINY, **change)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=rf"^{field}: "):
        check_spec(spec)

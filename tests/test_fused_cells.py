"""The fused LSTM and GRU recurrences (models/recurrences.py) against autograd.

- gradcheck of each autograd.Function in float64 on small sizes (the Elman cells'
  ``models.cells._ElmanRecurrence`` too, for tanh, relu and the linear cell);
- the fused forward/backward equal a step-by-step autograd reference written out here
  from PyTorch's equations (float64 to 1e-10, float32 to float tolerance), and equal
  ``PackedRNN.forward_steps`` through the model;
- packs stay bit-identical to trials trained alone for both cells (and rnn_linear).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
import torch
from test_train import TINY
from torch import Tensor

from models import PackedRNN, train_pack, train_trial
from models.cells import _ACTIVATIONS, _ElmanRecurrence
from models.recurrences import GRURecurrence, LSTMRecurrence

K, B, T, H, IN = 2, 3, 4, 5, 2  # members, batch, steps, hidden, input


def _projection(xs: Tensor, wxh: Tensor, bias: Tensor) -> Tensor:
    """x_t Wxh + bias for all steps: (K, T, B, G*H), as PackedRNN._input_projection."""
    k, t, b, n_in = xs.shape
    flat = xs.reshape(k, t * b, n_in)
    return torch.baddbmm(bias.unsqueeze(1), flat, wxh).view(k, t, b, -1)


def reference_lstm(xs: Tensor, wxh: Tensor, bias: Tensor, whh: Tensor) -> Tensor:
    """The LSTM step by step in plain autograd ops (PyTorch's equations)."""
    xw = _projection(xs, wxh, bias)
    k, t, b, gh = xw.shape
    h = torch.zeros(k, b, gh // 4, dtype=xw.dtype)
    c = torch.zeros_like(h)
    hs = []
    for s in range(t):
        a_i, a_f, a_g, a_o = (xw[:, s] + h @ whh).chunk(4, dim=-1)
        c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        h = torch.sigmoid(a_o) * torch.tanh(c)
        hs.append(h)
    return torch.stack(hs, dim=1)


def reference_gru(xs: Tensor, wxh: Tensor, bx: Tensor, whh: Tensor, bh: Tensor) -> Tensor:
    """The GRU step by step in plain autograd ops (PyTorch's formulation)."""
    xw = _projection(xs, wxh, bx)
    k, t, b, gh = xw.shape
    h = torch.zeros(k, b, gh // 3, dtype=xw.dtype)
    hs = []
    for s in range(t):
        x_r, x_z, x_n = xw[:, s].chunk(3, dim=-1)
        u_r, u_z, u_n = (h @ whh + bh.unsqueeze(1)).chunk(3, dim=-1)
        r, z = torch.sigmoid(x_r + u_r), torch.sigmoid(x_z + u_z)
        n = torch.tanh(x_n + r * u_n)
        h = (1 - z) * n + z * h
        hs.append(h)
    return torch.stack(hs, dim=1)


def inputs(cell: str, dtype: torch.dtype, seed: int = 0, t: int = T) -> list[Tensor]:
    """Random leaf tensors for the cell's recurrence: LSTM (xs, Wxh, bias, Whh), GRU
    (xs, Wxh, bx, Whh, bh); xs is (K, T, B, input_dim)."""
    gen = torch.Generator().manual_seed(seed)
    gh = (4 if cell == "lstm" else 3) * H
    shapes = [(K, t, B, IN), (K, IN, gh), (K, gh), (K, H, gh)]
    if cell == "gru":
        shapes.append((K, gh))
    return [
        (torch.randn(s, generator=gen, dtype=torch.float64) * 0.8).to(dtype).requires_grad_()
        for s in shapes
    ]


class _WrongGrad(torch.autograd.Function):
    """The identity, with a backward 1% off."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad * 1.01


FUSED = {"lstm": LSTMRecurrence.apply, "gru": GRURecurrence.apply}
REFERENCE = {"lstm": reference_lstm, "gru": reference_gru}


@pytest.mark.slow  # gradcheck in float64: seconds per cell
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradcheck(cell: str) -> None:
    """Gradients w.r.t. the inputs, Wxh, the input bias, Whh (and GRU's recurrent bias).

    The initial state is always zero, so it has no gradient to check.
    """
    args = inputs(cell, torch.float64)
    assert torch.autograd.gradcheck(FUSED[cell], tuple(args), eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.slow  # gradcheck in float64: seconds per cell
@pytest.mark.parametrize("cell", sorted(_ACTIVATIONS))
def test_elman_recurrence_gradcheck_and_forward(cell: str) -> None:
    """The fused Elman recurrence: gradcheck, and its forward equals the cell's own step."""
    act = _ACTIVATIONS[cell]
    gen = torch.Generator().manual_seed(7)
    xw = torch.randn(K, T, B, H, generator=gen, dtype=torch.float64, requires_grad=True)
    whh = (0.5 * torch.randn(K, H, H, generator=gen, dtype=torch.float64)).requires_grad_()
    fn = lambda xw, whh: _ElmanRecurrence.apply(xw, whh, act)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (xw, whh), eps=1e-6, atol=1e-8, rtol=1e-6)
    phi = {"tanh": torch.tanh, "relu": torch.relu, "linear": lambda a: a}[act]
    h = torch.zeros(K, B, H, dtype=torch.float64)
    for s in range(T):
        h = phi(xw[:, s] + h @ whh)
        torch.testing.assert_close(fn(xw, whh)[:, s], h, rtol=1e-12, atol=1e-12)


@pytest.mark.slow  # gradcheck in float64: seconds per cell
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_gradcheck_catches_a_wrong_gradient(cell: str) -> None:
    """The check above can fail: a backward scaled by 1.01 does not pass."""
    fused = FUSED[cell]

    def scaled(*args: Tensor) -> Tensor:
        out: Tensor = fused(_WrongGrad.apply(args[0]), *args[1:])
        return out

    args = inputs(cell, torch.float64)
    assert not torch.autograd.gradcheck(scaled, tuple(args), raise_exception=False)


def _compare(cell: str, dtype: torch.dtype, seed: int, t: int) -> list[tuple[Tensor, Tensor]]:
    """(fused, reference) pairs: outputs and every input gradient, for one random loss."""
    fused_args = inputs(cell, dtype, seed, t)
    ref_args = [a.detach().clone().requires_grad_() for a in fused_args]
    gen = torch.Generator().manual_seed(seed + 100)
    weight = torch.randn(K, t, B, H, generator=gen, dtype=torch.float64).to(dtype)
    pairs = []
    outs = []
    for fn, args in ((FUSED[cell], fused_args), (REFERENCE[cell], ref_args)):
        hs = fn(*args)
        (hs * weight).sum().backward()  # a gradient on every step's h_t
        outs.append(hs.detach())
    pairs.append((outs[0], outs[1]))
    for a, r in zip(fused_args, ref_args, strict=True):
        assert a.grad is not None and r.grad is not None
        pairs.append((a.grad, r.grad))
    return pairs


@pytest.mark.parametrize("t", [1, 4, 12])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_equals_the_reference_in_float64(cell: str, t: int) -> None:
    for seed in range(3):
        for fused, ref in _compare(cell, torch.float64, seed, t):
            assert fused.shape == ref.shape
            # Nothing trivially zero (at one step, h_{-1} = 0 gives Whh no gradient).
            assert float(ref.abs().max()) > 0 or (t == 1 and ref.shape[1:2] == (H,))
            torch.testing.assert_close(fused, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_fused_equals_the_reference_in_float32(cell: str) -> None:
    for fused, ref in _compare(cell, torch.float32, 1, 12):
        assert fused.dtype == torch.float32
        torch.testing.assert_close(fused, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_reference_is_the_models_step_function(cell: str) -> None:
    """The reference above is PackedRNN._step: forward_steps gives the same hidden states."""
    gen = torch.Generator().manual_seed(7)
    model = PackedRNN(K, cell, IN, H, 1).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    x = torch.randn(K, B, T, IN, generator=gen, dtype=torch.float64)
    xs = x.transpose(1, 2)
    if cell == "lstm":
        ref = reference_lstm(xs, model.Wxh, model.bx + model.bh, model.Whh)
    else:
        ref = reference_gru(xs, model.Wxh, model.bx, model.Whh, model.bh)
    _, steps = model.forward_steps(x)
    torch.testing.assert_close(torch.stack(steps, dim=1), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_model_forward_uses_the_fused_recurrence(cell: str) -> None:
    """PackedRNN.forward's hidden states come from one fused autograd node."""
    model = PackedRNN(K, cell, IN, H, 1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    x = torch.randn(K, B, T, IN)
    _, hidden = model(x)
    assert float(hidden.detach().abs().min()) > 0
    assert hidden.grad_fn is not None
    assert type(hidden.grad_fn).__name__.startswith(("LSTMRecurrence", "GRURecurrence"))
    # Under no_grad (validation) the same forward runs without saving anything.
    with torch.no_grad():
        _, again = model(x)
    assert again.grad_fn is None
    assert torch.equal(again, hidden.detach())


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_model_gradients_match_forward_steps(cell: str) -> None:
    """Through the model, the last `last` steps only: every parameter's gradient agrees."""
    gen = torch.Generator().manual_seed(11)
    model = PackedRNN(3, cell, IN, 8, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
    x = torch.randn(B, 6, IN, generator=gen, dtype=torch.float64)  # one batch, shared
    grads = []
    for fused in (True, False):
        model.zero_grad(set_to_none=True)
        out = model(x, last=1)[0] if fused else model.forward_steps(x)[0][:, :, -1:]
        out.square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    for name, g in grads[0].items():
        assert g is not None and grads[1][name] is not None, name
        assert float(g.abs().sum()) > 0, name
        torch.testing.assert_close(g, grads[1][name], rtol=1e-10, atol=1e-12)


def _text(numbers: dict[str, Any]) -> str:
    return json.dumps(numbers, sort_keys=True)


@pytest.mark.slow  # it trains packs and solo trials
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_linear"])
def test_pack_members_match_solo_training_bit_for_bit(cell: str) -> None:
    """Packs of 2, 3 and 5 of the fused cells give each member's solo numbers exactly."""
    base = dataclasses.replace(TINY, cell=cell)
    specs = [
        dataclasses.replace(base, init="xavier", seed=0),
        dataclasses.replace(base, init="uniform01", seed=1, lr=0.003),
        dataclasses.replace(base, init="orthogonal", seed=2, clip=0.5, data_seed=4),
        dataclasses.replace(base, init="xavier", seed=3, scale=1e6),
        dataclasses.replace(base, init="he_normal", seed=4, max_epochs=2, seq_len=6),
    ]
    solo = [train_trial(spec) for spec in specs]
    assert len({r.history[-1].train_loss for r in solo}) == len(specs)  # all different
    for size in (2, 3, len(specs)):
        packed = train_pack(specs[:size])
        for alone, member in zip(solo, packed, strict=False):
            # as JSON text, where NaN equals NaN: rnn_linear at scale 1e6 overflows
            assert _text(member.numbers()) == _text(alone.numbers())

"""Fused LSTM and GRU recurrences with hand-written backward passes (BPTT).

``models.cells.PackedRNN.forward`` runs the whole recurrence of a pack through one of
these ``torch.autograd.Function``\\ s instead of a per-step autograd graph, as it does for
the Elman cells (``models.cells._ElmanRecurrence``). The maths is that of
``PackedRNN._step`` (PyTorch's gate order and formulation), so the results agree with the
step-by-step graph up to float rounding; ``PackedRNN.forward_steps`` keeps the per-step
graph for per-step gradients.

Shapes: K members, T steps, batch B, hidden H, G gate blocks. ``xs`` (K, T, B, input_dim)
are the inputs, step-major; ``wxh`` (K, input_dim, G*H) and ``whh`` (K, H, G*H) are the
input and recurrent matrices, input-major (``h @ whh``). The initial state is zero
(h_{-1} = c_{-1} = 0).

How both are organised, for speed on small matrices (hidden 32-256, where one op's fixed
cost is comparable to its arithmetic, and a pack's (K, T, B, G*H) buffers no longer fit
in cache):

- the input projection x_t Wxh + b is computed per step inside the loop (input_dim is a
  few units), so the (K, T, B, G*H) tensor of it is never stored, and its gradients
  (dWxh and the bias's) come from one bmm at the end;
- the forward writes each step's results straight into (K, T, B, .) buffers: h_t, and
  in training the local derivatives that do not depend on the incoming gradient
  (sigmoid'(.), tanh'(.), times the other factor of each product), computed while the
  step's activations are in cache;
- the backward's loop over time is then one baddbmm (the gradient through ``whh``) and a
  few elementwise multiplications per step;
- dL/dwhh is one bmm over all steps at the end, h_{t-1}^T times the gradient of the
  recurrent pre-activations, instead of one product per step;
- tanh is computed as 2 sigmoid(2x) - 1 (:func:`_tanh`), several times faster on the CPU;
- under no_grad (validation), :func:`lstm` and :func:`gru` run the forward alone.

Ops that could round differently depending on where an element sits in a tensor
(transcendental functions, fused multiply-adds: the vectorised loop and the scalar tail
of PyTorch's CPU kernels may differ) write into per-member slices (:func:`_strided`,
or a step of a (K, T, ...) buffer), whose inner loops are the same for every member;
the other ops are plain products, sums and differences, exact IEEE operations either
way. So a member's numbers do not depend on its pack mates, and packs stay bit-identical
to trials trained alone (tests/test_train.py, tests/test_fused_cells.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


def lstm(xs: Tensor, wxh: Tensor, bias: Tensor, whh: Tensor) -> Tensor:
    """The LSTM's hidden states (K, T, B, H): :class:`LSTMRecurrence`, or under no_grad
    (validation) the same forward without the derivative factors."""
    args = (xs, wxh, bias, whh)
    if torch.is_grad_enabled() and any(a.requires_grad for a in args):
        out: Tensor = LSTMRecurrence.apply(*args)
        return out
    return _lstm_forward(*args, train=False)[0]


def gru(xs: Tensor, wxh: Tensor, bx: Tensor, whh: Tensor, bh: Tensor) -> Tensor:
    """The GRU's hidden states (K, T, B, H): :class:`GRURecurrence`, or under no_grad
    (validation) the same forward without the derivative factors."""
    args = (xs, wxh, bx, whh, bh)
    if torch.is_grad_enabled() and any(a.requires_grad for a in args):
        out: Tensor = GRURecurrence.apply(*args)
        return out
    return _gru_forward(*args, train=False)[0]


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """tanh(x) into ``out`` (which may be x), computed as 2 sigmoid(2x) - 1.

    The same function; on the CPU torch.sigmoid is about 6x faster than torch.tanh, so
    this is about 3x faster. In float32 it is within 2e-7 of torch.tanh (1e-16 in
    float64), an absolute difference at the level of float32 rounding of O(1) values.
    """
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


def _strided(k: int, b: int, n: int, like: Tensor) -> Tensor:
    """A (K, B, n) scratch tensor laid out per member (a slice of a (K, 2, B, n) one).

    Ops writing into it run one inner loop per member, so their rounding cannot depend
    on the pack size (see the module docstring).
    """
    return torch.empty(k, 2, b, n, dtype=like.dtype, device=like.device)[:, 0]


def _input_grads(
    ctx: Any, xs: Tensor, wxh: Tensor, dxw: Tensor
) -> tuple[Tensor | None, Tensor, Tensor]:
    """dL/dx, dL/dWxh and dL/d(input bias) from dL/dxw (K, T, B, G*H), xw = x Wxh + b.

    dWxh and the bias gradient come from one bmm, [x, 1]^T dxw, so dxw (the largest
    tensor of the backward) is read once for both.
    """
    k, t, b, n_in = xs.shape
    flat = dxw.reshape(k, t * b, dxw.shape[-1])
    ones = torch.ones(k, t * b, 1, dtype=xs.dtype, device=xs.device)
    x1 = torch.cat([xs.reshape(k, t * b, n_in), ones], dim=-1)
    both = torch.bmm(x1.transpose(1, 2), flat)  # (K, input_dim + 1, G*H)
    dxs = None
    if ctx.needs_input_grad[0]:
        dxs = torch.bmm(flat, wxh.transpose(1, 2)).view(k, t, b, n_in)
    return dxs, both[:, :n_in], both[:, n_in]


class LSTMRecurrence(torch.autograd.Function):
    """The LSTM over all steps, h_{-1} = c_{-1} = 0, with hand-written BPTT.

    ``xs`` (K, T, B, input_dim) are the inputs, ``wxh`` (K, input_dim, 4H) and ``bias``
    (K, 4H) (= bx + bh) their projection; gate blocks in PyTorch's order i, f, g, o::

        [a_i, a_f, a_g, a_o] = (x_t Wxh + bias) + h_{t-1} Whh
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);  g = tanh(a_g)
        c_t = f * c_{t-1} + i * g          (c_0 = i * g)
        h_t = o * tanh(c_t)

    Backward, with dh_t = dL/dh_t (direct) + da_{t+1} Whh^T and
    dc_t = dh_t * o (1 - tanh(c_t)^2) + dc_{t+1} * f_{t+1}::

        da_i = dc_t * g i (1 - i)          da_f = dc_t * c_{t-1} f (1 - f)
        da_g = dc_t * i (1 - g^2)          da_o = dh_t * tanh(c_t) o (1 - o)
        dL/dWhh = sum_t h_{t-1}^T da_t,    dL/dWxh = sum_t x_t^T da_t,
        dL/dbias = sum over t and the batch of da_t

    The input projection x_t Wxh + bias is computed step by step inside the loop (it is
    tiny: input_dim is a few units), so no (K, T, B, 4H) tensor of it is ever stored.
    The forward stores the factors right of ``dc_t *`` and ``dh_t *`` (K, T, B, 4H),
    o (1 - tanh(c_t)^2) and f_t (K, T, B, H each), computed while each step is in cache;
    the backward's loop is then one baddbmm and four multiplications per step.
    Returns h (K, T, B, H).
    """

    @staticmethod
    def forward(ctx: Any, xs: Tensor, wxh: Tensor, bias: Tensor, whh: Tensor) -> Tensor:
        hs, saved = _lstm_forward(xs, wxh, bias, whh, train=True)
        ctx.save_for_backward(xs, wxh, whh, *saved)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dhs: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor]:
        xs, wxh, whh, fac, dc_dh, fs, hs = ctx.saved_tensors
        k, t, b, h = hs.shape
        dpre = torch.empty_like(fac)  # dL/da; fac stays as saved (gradcheck reuses it)
        whh_t = whh.transpose(1, 2).contiguous()  # a contiguous matrix is ~25% faster here
        dc = _strided(k, b, h, hs)
        for s in range(t - 1, -1, -1):
            dh = dhs[:, s] if s == t - 1 else torch.baddbmm(dhs[:, s], dpre[:, s + 1], whh_t)
            if s == t - 1:
                torch.mul(dh, dc_dh[:, s], out=dc)
            else:
                dc.mul_(fs[:, s + 1]).addcmul_(dh, dc_dh[:, s])
            torch.mul(  # da_i, da_f, da_g
                fac[:, s, :, : 3 * h].view(k, b, 3, h),
                dc.unsqueeze(2),
                out=dpre[:, s, :, : 3 * h].view(k, b, 3, h),
            )
            torch.mul(fac[:, s, :, 3 * h :], dh, out=dpre[:, s, :, 3 * h :])  # da_o
        prev = hs[:, :-1].reshape(k, (t - 1) * b, h)
        dwhh = torch.bmm(prev.transpose(1, 2), dpre[:, 1:].reshape(k, (t - 1) * b, 4 * h))
        dxs, dwxh, dbias = _input_grads(ctx, xs, wxh, dpre)
        return dxs, dwxh, dbias, dwhh


def _lstm_forward(
    xs: Tensor, wxh: Tensor, bias: Tensor, whh: Tensor, train: bool
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """h (K, T, B, H), and with ``train`` the tensors LSTMRecurrence.backward needs."""
    k, t, b, _ = xs.shape
    gh = whh.shape[-1]
    h = gh // 4
    hs = torch.empty(k, t, b, h, dtype=xs.dtype, device=xs.device)
    if train:
        dpre = torch.empty(k, t, b, gh, dtype=xs.dtype, device=xs.device)
        dc_dh, fs = torch.empty_like(hs), torch.empty_like(hs)
    act = _strided(k, b, gh, xs)  # i, f, g, o of this step
    i, f, g, o = act.chunk(4, dim=-1)
    cells = [_strided(k, b, h, xs), _strided(k, b, h, xs)]  # c_{t-1} and c_t, in turn
    tc = _strided(k, b, h, xs)  # tanh(c_t)
    bias1 = bias.unsqueeze(1)
    for s in range(t):
        pre = torch.baddbmm(bias1, xs[:, s], wxh)  # x_t Wxh + bias
        if s > 0:
            pre.baddbmm_(hs[:, s - 1], whh)
        pre[..., 2 * h : 3 * h].mul_(2)  # g = tanh(a) = 2 sigmoid(2a) - 1, as in _tanh
        torch.sigmoid(pre, out=act)
        g.mul_(2).sub_(1)
        ig = i * g
        c_prev, c = cells[(s + 1) % 2], cells[s % 2]
        if s == 0:
            c.copy_(ig)
        else:
            torch.addcmul(ig, f, c_prev, out=c)
        _tanh(c, out=tc)
        torch.mul(o, tc, out=hs[:, s])
        if train:
            fac = dpre[:, s]
            torch.addcmul(act, act, act, value=-1, out=fac)  # sigmoid' = s - s^2; g below
            fi, ff, fg, fo = fac.chunk(4, dim=-1)
            fi.mul_(g)
            if s == 0:
                ff.zero_()  # c_{-1} = 0: the forget gate has no effect at the first step
            else:
                ff.mul_(c_prev)
            torch.addcmul(i, ig, g, value=-1, out=fg)  # i (1 - g^2)
            fo.mul_(tc)
            torch.addcmul(o, hs[:, s], tc, value=-1, out=dc_dh[:, s])  # o (1 - tanh(c)^2)
            fs[:, s].copy_(f)
    return hs, ((dpre, dc_dh, fs, hs) if train else ())


class GRURecurrence(torch.autograd.Function):
    """The GRU over all steps, h_{-1} = 0, with hand-written BPTT.

    PyTorch's formulation, gate blocks r, z, n. ``xs`` (K, T, B, input_dim) are the
    inputs, ``wxh`` (K, input_dim, 3H) and ``bx`` (K, 3H) their projection; the recurrent
    bias ``bh`` (K, 3H) is added to h_{t-1} Whh (b_hn sits inside the reset gate)::

        [x_r, x_z, x_n] = x_t Wxh + bx;  [u_r, u_z, u_n] = h_{t-1} Whh + bh
        r = sigmoid(x_r + u_r);  z = sigmoid(x_z + u_z)
        n = tanh(x_n + r * u_n)
        h_t = (1 - z) * n + z * h_{t-1}  (computed as lerp(n, h_{t-1}, z))

    Backward, with dh_t = dL/dh_t (direct) + dh_{t+1} * z_{t+1} + du_{t+1} Whh^T::

        dn~ = dh_t * (1 - z) (1 - n^2)      (the gradient of n's pre-activation)
        dz~ = dh_t * (h_{t-1} - n) z (1 - z)
        dr~ = dn~ * u_n r (1 - r)
        dxw_t = [dr~, dz~, dn~],   du_t = [dr~, dz~, dn~ * r]
        dL/dWhh = sum_t h_{t-1}^T du_t,   dL/dbh = sum over t and the batch of du_t
        dL/dWxh = sum_t x_t^T dxw_t,      dL/dbx = sum over t and the batch of dxw_t

    The input projection is computed step by step inside the loop, as for the LSTM.
    The forward stores the factors [r, u_n r (1 - r), (h_{t-1} - n) z (1 - z),
    (1 - z)(1 - n^2)] side by side (K, T, B, 4H) and z_t (K, T, B, H); the backward
    multiplies them into [dn~ r, dr~, dz~, dn~] (two multiplications per step), so
    that dxw_t is the slice of blocks 1-3 and du_t that of blocks 0-2 (in the order n,
    r, z, against Whh^T's rows permuted to match). Returns h (K, T, B, H).
    """

    @staticmethod
    def forward(ctx: Any, xs: Tensor, wxh: Tensor, bx: Tensor, whh: Tensor, bh: Tensor) -> Tensor:
        hs, saved = _gru_forward(xs, wxh, bx, whh, bh, train=True)
        ctx.save_for_backward(xs, wxh, whh, *saved)
        return hs

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, dhs: Tensor) -> tuple[Tensor | None, Tensor, Tensor, Tensor, Tensor]:
        xs, wxh, whh, fac, zs, hs = ctx.saved_tensors
        k, t, b, h = hs.shape
        grad = torch.empty_like(fac)  # [dn~ r, dr~, dz~, dn~]; fac stays as saved
        wr, wz, wn = whh.chunk(3, dim=-1)
        whh_t = torch.cat([wn, wr, wz], dim=-1).transpose(1, 2).contiguous()  # rows n, r, z
        dh = torch.empty(k, b, h, dtype=hs.dtype, device=hs.device)
        for s in range(t - 1, -1, -1):
            if s == t - 1:
                dh.copy_(dhs[:, s])
            else:
                dh.mul_(zs[:, s + 1]).add_(dhs[:, s])
                dh.baddbmm_(grad[:, s + 1, :, : 3 * h], whh_t)
            f_s, g_s = fac[:, s], grad[:, s]
            torch.mul(  # dz~, dn~
                f_s[..., 2 * h :].view(k, b, 2, h),
                dh.unsqueeze(2),
                out=g_s[..., 2 * h :].view(k, b, 2, h),
            )
            torch.mul(  # dn~ r, dr~
                f_s[..., : 2 * h].view(k, b, 2, h),
                g_s[..., 3 * h :].unsqueeze(2),
                out=g_s[..., : 2 * h].view(k, b, 2, h),
            )
        du = grad[..., : 3 * h]  # blocks n, r, z
        dwhh = torch.bmm(
            hs[:, :-1].reshape(k, (t - 1) * b, h).transpose(1, 2),
            du[:, 1:].reshape(k, (t - 1) * b, 3 * h),
        )
        dbh = du.reshape(k, t * b, 3 * h).sum(1)

        def rzn(x: Tensor) -> Tensor:  # blocks n, r, z -> r, z, n
            un, ur, uz = x.chunk(3, dim=-1)
            return torch.cat([ur, uz, un], dim=-1)

        dxs, dwxh, dbx = _input_grads(ctx, xs, wxh, grad[..., h:])
        return dxs, dwxh, dbx, rzn(dwhh), rzn(dbh)


def _gru_forward(
    xs: Tensor, wxh: Tensor, bx: Tensor, whh: Tensor, bh: Tensor, train: bool
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """h (K, T, B, H), and with ``train`` the tensors GRURecurrence.backward needs."""
    k, t, b, _ = xs.shape
    gh = whh.shape[-1]
    h = gh // 3
    hs = torch.empty(k, t, b, h, dtype=xs.dtype, device=xs.device)
    if train:
        fac = torch.empty(k, t, b, 4 * h, dtype=xs.dtype, device=xs.device)
        zs = torch.empty_like(hs)
    act = _strided(k, b, gh, xs)  # r, z, n of this step
    r, z, n = act.chunk(3, dim=-1)
    bx1, bh1 = bx.unsqueeze(1), bh.unsqueeze(1)
    zero = torch.zeros(k, b, h, dtype=xs.dtype, device=xs.device)
    for s in range(t):
        prev = zero if s == 0 else hs[:, s - 1]
        x_t = torch.baddbmm(bx1, xs[:, s], wxh)  # x_t Wxh + bx
        u = bh1.expand(k, b, gh) if s == 0 else torch.baddbmm(bh1, prev, whh)
        u_n = u[..., 2 * h :]
        torch.sigmoid(x_t[..., : 2 * h] + u[..., : 2 * h], out=act[..., : 2 * h])
        _tanh(torch.addcmul(x_t[..., 2 * h :], r, u_n, out=n), out=n)
        torch.lerp(n, prev, z, out=hs[:, s])  # n + z (h_{t-1} - n)
        if train:
            f_un, f_r, f_z, f_n = fac[:, s].chunk(4, dim=-1)
            f_un.copy_(r)
            rz = act[..., : 2 * h]
            d = torch.addcmul(rz, rz, rz, value=-1)  # sigmoid' of r and z, s - s^2
            torch.mul(u_n, d[..., :h], out=f_r)
            torch.mul(prev - n, d[..., h:], out=f_z)
            one_z = 1 - z
            torch.addcmul(one_z, one_z * n, n, value=-1, out=f_n)  # (1 - z)(1 - n^2)
            zs[:, s].copy_(z)
    return hs, ((fac, zs, hs) if train else ())

"""Recurrent cells as *packed* models: K independent networks stacked along a leading axis.

Every weight has a leading member axis ``K``; one forward pass runs all K members, each on
its own input batch (or all on one shared batch), with batched matmuls. A single trial is
simply a pack of one, so there is one code path for training alone and training in a pack
(``models.train`` trains a lone trial beside a copy of itself, for bit-exact results).

Matrices are stored input-major (``h @ W``), named as in the papers:

- ``Wxh`` (K, input_dim, G*H): input to hidden, G gate blocks side by side
- ``Whh`` (K, H, G*H): hidden to hidden (the recurrent matrix)
- ``Why`` (K, H, output_dim): hidden to output
- ``bx``, ``bh`` (K, G*H) and ``by`` (K, output_dim): biases

G is 1 for the Elman cells, 4 for LSTM (gates i, f, g, o) and 3 for GRU (r, z, n), in
PyTorch's gate order. Adding a cell is one ``CellDef`` line in ``CELLS`` plus its step
function in ``PackedRNN._step`` (and, for an Elman cell, its activation in
``_ACTIVATIONS``, which the fused recurrence reads). The Elman cells are rnn_tanh,
rnn_relu and rnn_linear, the linear-transition RNN (no nonlinearity) of Henaff, Szlam &
LeCun 2016.

``PackedRNN.forward`` runs the whole recurrence as one autograd node with a hand-written
backward pass: ``_ElmanRecurrence`` below, ``LSTMRecurrence`` and ``GRURecurrence`` in
``models.recurrences``. A cell without one falls back to the step-by-step graph of
``_step``, which ``forward_steps`` always uses (it gives per-step gradients).

Init is applied in one place, :func:`init_weights`, which walks the matrices by name.
This module knows nothing of Ray, Optuna or MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.init import init_bias, init_matrix
from models.recurrences import gru, lstm
from models.spec import TrialSpec


@dataclass(frozen=True)
class CellDef:
    """A recurrent cell type."""

    name: str
    gates: int
    """Number of gate blocks in Wxh and Whh."""
    doc: str


CELLS: dict[str, CellDef] = {
    "rnn_tanh": CellDef("rnn_tanh", 1, "Elman RNN, h' = tanh(x Wxh + h Whh + b)"),
    "rnn_relu": CellDef("rnn_relu", 1, "Elman RNN, h' = relu(x Wxh + h Whh + b)"),
    "rnn_linear": CellDef(
        "rnn_linear",
        1,
        "Linear RNN, h' = x Wxh + h Whh + b (no nonlinearity; Henaff, Szlam & LeCun 2016)",
    ),
    "lstm": CellDef("lstm", 4, "LSTM (Hochreiter & Schmidhuber 1997), PyTorch gate order"),
    "gru": CellDef("gru", 3, "GRU (Cho et al. 2014), PyTorch formulation"),
}


def get_cell(name: str) -> CellDef:
    """Look up a cell type by name."""
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; known: {', '.join(sorted(CELLS))}") from None


class PackedRNN(nn.Module):
    """K independent RNNs of one shape, trained together with batched matmuls."""

    def __init__(self, members: int, cell: str, input_dim: int, hidden: int, output_dim: int):
        super().__init__()
        self.cell = get_cell(cell)
        self.members, self.input_dim, self.hidden, self.output_dim = (
            members,
            input_dim,
            hidden,
            output_dim,
        )
        gh = self.cell.gates * hidden
        self.Wxh = nn.Parameter(torch.zeros(members, input_dim, gh))
        self.Whh = nn.Parameter(torch.zeros(members, hidden, gh))
        self.bx = nn.Parameter(torch.zeros(members, gh))
        self.bh = nn.Parameter(torch.zeros(members, gh))
        self.Why = nn.Parameter(torch.zeros(members, hidden, output_dim))
        self.by = nn.Parameter(torch.zeros(members, output_dim))

    def forward(self, x: Tensor, last: int | None = None) -> tuple[Tensor, Tensor]:
        """Run all members on a batch (the fast path, for training and validation).

        Args:
            x: (K, batch, steps, input_dim), one batch per member, or (batch, steps,
                input_dim), one batch shared by all members.
            last: compute the outputs of the last ``last`` steps only (a task whose loss
                reads only the final step sets ``Task.loss_steps``); None: every step.

        Returns:
            outputs (K, batch, steps or last, output_dim) and the hidden states
            (K, steps, batch, H).
        """
        name = self.cell.name
        if name == "lstm":  # the input projection is fused into the recurrence too
            hidden = lstm(self._inputs(x), self.Wxh, self.bx + self.bh, self.Whh)
        elif name == "gru":
            hidden = gru(self._inputs(x), self.Wxh, self.bx, self.Whh, self.bh)
        elif self.cell.gates == 1:
            xw = self._input_projection(x)
            hidden = _ElmanRecurrence.apply(xw, self.Whh, _ACTIVATIONS[name])
        else:
            hidden = torch.stack(self._steps(self._input_projection(x)), dim=1)
        return self._readout(hidden if last is None else hidden[:, -last:]), hidden

    def forward_steps(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Like :meth:`forward`, but one autograd node per step, for per-step gradients.

        This is the plain step-by-step graph of :meth:`_step`, which the fused
        recurrences of :meth:`forward` (``_ElmanRecurrence``, ``models.recurrences``)
        reproduce up to float rounding.

        Returns:
            outputs (K, batch, steps, output_dim) and the hidden states, one (K, batch, H)
            tensor per step, whose ``.grad`` (after ``retain_grad``) is dL/dh_t.
        """
        hs = self._steps(self._input_projection(x))
        return self._readout(torch.stack(hs, dim=1)), hs

    def _inputs(self, x: Tensor) -> Tensor:
        """The input batch checked and laid out step-major: (K, steps, batch, input_dim)."""
        k = self.members
        if x.dim() == 3:
            x = x.unsqueeze(0).expand(k, *x.shape)
        if x.dim() != 4 or x.shape[0] != k or x.shape[3] != self.input_dim:
            raise ValueError(
                f"x must be (batch, steps, {self.input_dim}) or ({k}, batch, steps, "
                f"{self.input_dim}), got {tuple(x.shape)}"
            )
        return x.transpose(1, 2).contiguous()

    def _input_projection(self, x: Tensor) -> Tensor:
        """x W_xh plus the biases, for all steps at once: (K, steps, batch, G*H).

        Both biases are added here, except for GRU, whose b_hn sits inside the reset gate.
        """
        xs = self._inputs(x)
        k, t, b, _ = xs.shape
        flat = xs.view(k, t * b, self.input_dim)
        bias = self.bx if self.cell.name == "gru" else self.bx + self.bh
        return torch.baddbmm(bias.unsqueeze(1), flat, self.Wxh).view(k, t, b, -1)

    def _readout(self, hidden: Tensor) -> Tensor:
        """The output layer on (K, steps, batch, H) hidden states: (K, batch, steps, out)."""
        k, t, b, h = hidden.shape
        flat = hidden.reshape(k, t * b, h)
        outputs = torch.baddbmm(self.by.unsqueeze(1), flat, self.Why)
        return outputs.view(k, t, b, self.output_dim).transpose(1, 2)

    def _steps(self, xw: Tensor) -> list[Tensor]:
        """Run the recurrence step by step on (K, steps, batch, G*H) input projections."""
        h: Tensor | None = None
        c: Tensor | None = None
        hs: list[Tensor] = []
        # unbind gives one view per step whose backward is a single stack, not T
        # full-size zero tensors (as indexing xw[:, step] would).
        for xw_t in xw.unbind(1):
            h, c = self._step(xw_t, h, c)
            hs.append(h)
        return hs

    def _step(
        self, xw_t: Tensor, h: Tensor | None, c: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """One step from h (None = the zero initial state); xw_t holds the biases."""
        name = self.cell.name
        if name == "gru":
            if h is None:
                h = torch.zeros_like(xw_t[..., : self.hidden])
            hw = torch.baddbmm(self.bh.unsqueeze(1), h, self.Whh)
            xr, xz, xn = xw_t.chunk(3, dim=-1)
            hr, hz, hn = hw.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h, None
        pre = xw_t if h is None else torch.baddbmm(xw_t, h, self.Whh)
        if name == "rnn_tanh":
            return torch.tanh(pre), None
        if name == "rnn_relu":
            return torch.relu(pre), None
        if name == "rnn_linear":
            return pre, None
        if name == "lstm":
            i, f, g, o = pre.chunk(4, dim=-1)
            ig = torch.sigmoid(i) * torch.tanh(g)
            c = ig if c is None else torch.sigmoid(f) * c + ig
            return torch.sigmoid(o) * torch.tanh(c), c
        raise AssertionError(f"cell {name} has no step function")

    def recurrent_blocks(self, member: int) -> list[Tensor]:
        """The member's recurrent matrix split into its (H, H) gate blocks."""
        return list(self.Whh[member].detach().chunk(self.cell.gates, dim=-1))

    def select(self, index: Tensor) -> PackedRNN:
        """A new pack of the members at ``index`` (a 1-D long tensor; repeats allowed).

        The new pack's parameters are copies, on the same device; member j of the new
        pack is member ``index[j]`` of this one, bit for bit.
        """
        out = PackedRNN(len(index), self.cell.name, self.input_dim, self.hidden, self.output_dim)
        with torch.no_grad():
            for name, p in self.named_parameters():
                setattr(out, name, nn.Parameter(p.index_select(0, index)))
        return out


_ACTIVATIONS = {"rnn_tanh": "tanh", "rnn_relu": "relu", "rnn_linear": "linear"}
"""The activation of each Elman cell in ``_ElmanRecurrence``."""


class _ElmanRecurrence(torch.autograd.Function):
    """h_t = act(xw_t + h_{t-1} Whh) for all steps, h_{-1} = 0, with hand-written BPTT.

    ``act`` is tanh, relu or the identity ("linear": the linear-transition RNN, whose
    dL/d(pre-activation) is dL/dh_t itself).

    ``xw`` (K, T, batch, H) holds the input projections with both biases. The forward
    writes every h_t straight into one (K, T, batch, H) buffer; the backward runs one
    baddbmm and one activation-gradient op per step (dL/dh_t) and gets dL/dWhh with a
    single bmm over all steps, instead of autograd's per-step graph nodes, per-step
    dWhh products and stacks of per-step tensors.
    """

    @staticmethod
    def forward(ctx: Any, xw: Tensor, whh: Tensor, act: str) -> Tensor:
        hs = torch.empty_like(xw, memory_format=torch.contiguous_format)
        for s in range(xw.shape[1]):
            pre = xw[:, s] if s == 0 else torch.baddbmm(xw[:, s], hs[:, s - 1], whh)
            if act == "relu":
                torch.clamp_min(pre, 0.0, out=hs[:, s])
            elif act == "tanh":
                torch.tanh(pre, out=hs[:, s])
            else:
                hs[:, s].copy_(pre)
        ctx.save_for_backward(hs, whh)
        ctx.act = act
        return hs

    @staticmethod
    def backward(ctx: Any, dhs: Tensor) -> tuple[Tensor, Tensor, None]:
        hs, whh = ctx.saved_tensors
        k, t, b, h = hs.shape
        dpre = torch.empty_like(hs)  # dL/d(pre-activation) = dL/dxw
        whh_t = whh.transpose(1, 2).contiguous()  # a contiguous matrix is ~25% faster here
        for s in range(t - 1, -1, -1):
            dh = dhs[:, s] if s == t - 1 else torch.baddbmm(dhs[:, s], dpre[:, s + 1], whh_t)
            if ctx.act == "relu":
                torch.ops.aten.threshold_backward.grad_input(
                    dh, hs[:, s], 0, grad_input=dpre[:, s]
                )
            elif ctx.act == "tanh":
                torch.ops.aten.tanh_backward.grad_input(dh, hs[:, s], grad_input=dpre[:, s])
            else:
                dpre[:, s].copy_(dh)
        prev = hs[:, :-1].reshape(k, (t - 1) * b, h)
        dwhh = torch.bmm(prev.transpose(1, 2), dpre[:, 1:].reshape(k, (t - 1) * b, h))
        return dpre, dwhh, None


# The matrices the init scheme is applied to: name, role, fan-in attribute, blocks.
_MATRICES = (("Wxh", "input"), ("Whh", "recurrent"), ("Why", "output"))


def init_weights(model: PackedRNN, specs: Sequence[TrialSpec]) -> None:
    """Initialize each member from its own spec and seed, on the CPU, in a fixed order.

    Member k's weights depend only on ``specs[k]`` (its init, init_recurrent, scale and
    seed), never on its pack mates. Each gate block is drawn separately so that schemes
    such as ``orthogonal`` and ``identity`` apply per block, as they would to a plain RNN.
    The recurrent overrides (``init_recurrent``, ``recurrent_scale``) apply to Whh alone;
    biases are zero except for ``torch_default``, which mimics nn.RNN (see
    ``models.init.init_bias``).
    """
    if len(specs) != model.members:
        raise ValueError(f"got {len(specs)} specs for a pack of {model.members}")
    gates, hidden = model.cell.gates, model.hidden
    with torch.no_grad():
        for k, spec in enumerate(specs):
            gen = torch.Generator().manual_seed(spec.seed)
            for name, role in _MATRICES:
                scheme = (
                    spec.init_recurrent
                    if role == "recurrent" and spec.init_recurrent
                    else (spec.init)
                )
                scale = (
                    spec.recurrent_scale
                    if role == "recurrent" and spec.recurrent_scale is not None
                    else spec.scale
                )
                weight: Tensor = getattr(model, name)
                fan_in = weight.shape[1]
                n_blocks = 1 if role == "output" else gates
                block_out = weight.shape[2] // n_blocks
                blocks = [
                    init_matrix(scheme, fan_in, block_out, role=role, scale=scale, generator=gen)
                    for _ in range(n_blocks)
                ]
                weight[k].copy_(torch.cat(blocks, dim=1))
            for name in ("bx", "bh", "by"):
                bias: Tensor = getattr(model, name)
                bias[k].copy_(init_bias(spec.init, bias.shape[1], hidden=hidden, generator=gen))

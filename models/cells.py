"""Recurrent cells as *packed* models: K independent networks stacked along a leading axis.

Every weight has a leading member axis ``K``; one forward pass runs all K members on the
same input batch with batched matmuls. A single trial is simply a pack of one, so there
is one code path for training alone and training in a pack.

Matrices are stored input-major (``h @ W``), named as in the papers:

- ``Wxh`` (K, input_dim, G*H): input to hidden, G gate blocks side by side
- ``Whh`` (K, H, G*H): hidden to hidden (the recurrent matrix)
- ``Why`` (K, H, output_dim): hidden to output
- ``bx``, ``bh`` (K, G*H) and ``by`` (K, output_dim): biases

G is 1 for the Elman cells, 4 for LSTM (gates i, f, g, o) and 3 for GRU (r, z, n), in
PyTorch's gate order. Adding a cell is one ``CellDef`` line in ``CELLS`` plus its step
function in ``PackedRNN._step``.

Init is applied in one place, :func:`init_weights`, which walks the matrices by name.
This module knows nothing of Ray, Optuna or MLflow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.init import init_bias, init_matrix
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

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Run all members on one batch.

        Args:
            x: (batch, steps, input_dim), shared by all members.

        Returns:
            outputs (K, batch, steps, output_dim) and the hidden states, one (K, batch, H)
            tensor per step (kept separate so diagnostics can take gradients per step).
        """
        k, (b, t, _) = self.members, x.shape
        # Input projections for all steps at once: (K, batch*steps, G*H).
        flat = x.reshape(1, b * t, self.input_dim).expand(k, b * t, self.input_dim)
        xw = torch.baddbmm(self.bx.unsqueeze(1), flat, self.Wxh).reshape(k, b, t, -1)
        h = x.new_zeros(k, b, self.hidden)
        c = x.new_zeros(k, b, self.hidden) if self.cell.name == "lstm" else None
        hs: list[Tensor] = []
        # unbind gives one view per step whose backward is a single stack, not T
        # full-size zero tensors (as indexing xw[:, :, step] would).
        for xw_t in xw.unbind(2):
            h, c = self._step(xw_t, h, c)
            hs.append(h)
        stacked = torch.stack(hs, dim=2).reshape(k, b * t, self.hidden)
        outputs = torch.baddbmm(self.by.unsqueeze(1), stacked, self.Why)
        return outputs.reshape(k, b, t, self.output_dim), hs

    def _step(self, xw_t: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        hw = torch.baddbmm(self.bh.unsqueeze(1), h, self.Whh)
        name = self.cell.name
        if name == "rnn_tanh":
            return torch.tanh(xw_t + hw), None
        if name == "rnn_relu":
            return torch.relu(xw_t + hw), None
        if name == "lstm":
            assert c is not None
            i, f, g, o = (xw_t + hw).chunk(4, dim=-1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if name == "gru":
            xr, xz, xn = xw_t.chunk(3, dim=-1)
            hr, hz, hn = hw.chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return (1 - z) * n + z * h, None
        raise AssertionError(f"cell {name} has no step function")

    def recurrent_blocks(self, member: int) -> list[Tensor]:
        """The member's recurrent matrix split into its (H, H) gate blocks."""
        return list(self.Whh[member].detach().chunk(self.cell.gates, dim=-1))


# The matrices the init scheme is applied to: name, role, fan-in attribute, blocks.
_MATRICES = (("Wxh", "input"), ("Whh", "recurrent"), ("Why", "output"))


def init_weights(model: PackedRNN, specs: Sequence[TrialSpec]) -> None:
    """Initialize each member from its own spec and seed, on the CPU, in a fixed order.

    Member k's weights depend only on ``specs[k]`` (its init, init_recurrent, scale and
    seed), never on its pack mates. Each gate block is drawn separately so that schemes
    such as ``orthogonal`` and ``identity`` apply per block, as they would to a plain RNN.
    The recurrent override (``init_recurrent``) applies to Whh alone; biases are zero
    except for ``torch_default``, which mimics nn.RNN (see ``models.init.init_bias``).
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
                weight: Tensor = getattr(model, name)
                fan_in = weight.shape[1]
                n_blocks = 1 if role == "output" else gates
                block_out = weight.shape[2] // n_blocks
                blocks = [
                    init_matrix(
                        scheme, fan_in, block_out, role=role, scale=spec.scale, generator=gen
                    )
                    for _ in range(n_blocks)
                ]
                weight[k].copy_(torch.cat(blocks, dim=1))
            for name in ("bx", "bh", "by"):
                bias: Tensor = getattr(model, name)
                bias[k].copy_(init_bias(spec.init, bias.shape[1], hidden=hidden, generator=gen))

"""Optimizers for packed models: per-member learning rate, state and clipping.

Each parameter has a leading member axis K. A step updates only the members marked
active, so a frozen (converged or diverged) member never changes again and its
non-finite values can never reach the others. The update rules follow PyTorch's
``torch.optim.SGD`` (no momentum), ``Adam`` and ``RMSprop`` with their default
hyperparameters. Adding an optimizer is one class and one ``OPTIMIZERS`` line.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def _member_view(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a (K,) tensor so it broadcasts against a (K, ...) parameter."""
    return t.reshape((-1,) + (1,) * (like.dim() - 1))


class PackedOptimizer(ABC):
    """Base class: holds the parameters and the per-member learning rates."""

    def __init__(self, params: Sequence[Tensor], lr: Tensor):
        self.params = list(params)
        self.lr = lr
        self.steps = 0

    def step(self, active: Tensor) -> None:
        """Apply one update to the members where ``active`` (a (K,) bool tensor) is true."""
        self.steps += 1
        with torch.no_grad():
            for i, p in enumerate(self.params):
                if p.grad is None:
                    continue
                delta = self._delta(i, p.grad)
                mask = _member_view(active, p)
                p.sub_(torch.where(mask, _member_view(self.lr, p) * delta, 0.0))

    def select(self, params: Sequence[Tensor], index: Tensor) -> None:
        """Keep only the members at ``index`` (a 1-D long tensor; repeats allowed).

        ``params`` are the new pack's parameters (see ``PackedRNN.select``), in the same
        order as before. The learning rates and every per-member state tensor are
        indexed the same way; the shared step counter is kept.
        """
        self.params = list(params)
        self.lr = self.lr.index_select(0, index)
        for states in self._state():
            states[:] = [s.index_select(0, index) for s in states]

    def _state(self) -> list[list[Tensor]]:
        """The per-member state: lists of tensors shaped like the parameters."""
        return []

    @abstractmethod
    def _delta(self, i: int, grad: Tensor) -> Tensor:
        """The update direction for parameter ``i`` (the step is lr times this)."""


class SGD(PackedOptimizer):
    """Plain stochastic gradient descent: p -= lr * g."""

    def _delta(self, i: int, grad: Tensor) -> Tensor:
        return grad


class Adam(PackedOptimizer):
    """Adam (Kingma & Ba 2015), betas (0.9, 0.999), eps 1e-8, as torch.optim.Adam."""

    beta1, beta2, eps = 0.9, 0.999, 1e-8

    def __init__(self, params: Sequence[Tensor], lr: Tensor):
        super().__init__(params, lr)
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def _state(self) -> list[list[Tensor]]:
        return [self.m, self.v]

    def _delta(self, i: int, grad: Tensor) -> Tensor:
        m, v = self.m[i], self.v[i]
        m.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
        v.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        m_hat = m / (1 - self.beta1**self.steps)
        v_hat = v / (1 - self.beta2**self.steps)
        return m_hat / (v_hat.sqrt() + self.eps)


class RMSprop(PackedOptimizer):
    """RMSprop (Tieleman & Hinton 2012), alpha 0.99, eps 1e-8, as torch.optim.RMSprop."""

    alpha, eps = 0.99, 1e-8

    def __init__(self, params: Sequence[Tensor], lr: Tensor):
        super().__init__(params, lr)
        self.v = [torch.zeros_like(p) for p in self.params]

    def _state(self) -> list[list[Tensor]]:
        return [self.v]

    def _delta(self, i: int, grad: Tensor) -> Tensor:
        v = self.v[i]
        v.mul_(self.alpha).addcmul_(grad, grad, value=1 - self.alpha)
        return grad / (v.sqrt() + self.eps)


OPTIMIZERS: dict[str, Callable[[Sequence[Tensor], Tensor], PackedOptimizer]] = {
    "sgd": SGD,
    "adam": Adam,
    "rmsprop": RMSprop,
}


def get_optimizer(name: str) -> Callable[[Sequence[Tensor], Tensor], PackedOptimizer]:
    """Look up an optimizer by name."""
    try:
        return OPTIMIZERS[name]
    except KeyError:
        known = ", ".join(sorted(OPTIMIZERS))
        raise ValueError(f"unknown optimizer {name!r}; known: {known}") from None


def member_grad_norms(params: Sequence[Tensor]) -> Tensor:
    """Per-member L2 norm of the gradient over all parameters: a (K,) tensor."""
    total: Tensor | None = None
    for p in params:
        if p.grad is None:
            continue
        sq = p.grad.pow(2).reshape(p.shape[0], -1).sum(dim=1)
        total = sq if total is None else total + sq
    if total is None:
        raise ValueError("no parameter has a gradient")
    return total.sqrt()


def clip_member_grads(params: Sequence[Tensor], norms: Tensor, max_norm: Tensor) -> None:
    """Scale each member's gradient so its norm is at most ``max_norm`` (inf = no clipping).

    Same rule as ``torch.nn.utils.clip_grad_norm_``: coefficient max_norm / (norm + 1e-6),
    capped at 1.
    """
    coef = torch.clamp(max_norm / (norms + 1e-6), max=1.0)
    coef = torch.where(torch.isfinite(coef), coef, torch.ones_like(coef))
    with torch.no_grad():
        for p in params:
            if p.grad is not None:
                p.grad.mul_(_member_view(coef, p.grad))

"""Weight-initialization schemes for the recurrent models, by name.

Plug-in API
-----------
An init scheme is one small function::

    def xavier(fan_in: int, fan_out: int, *, role: str, scale: float,
               generator: torch.Generator) -> torch.Tensor

that returns a float32 CPU tensor of shape ``(fan_in, fan_out)``. The models compute
``h @ W``, so rows are inputs and columns are outputs. ``role`` is one of :data:`ROLES`:

* ``"input"``: the input-to-hidden matrix Wxh, or one gate block of it;
* ``"recurrent"``: the hidden-to-hidden matrix Whh, or one gate block of it;
* ``"output"``: the hidden-to-output matrix Why.

All randomness must come from ``generator`` (a CPU :class:`torch.Generator`), never from
torch's global RNG, so a matrix is a pure function of its arguments and the generator's
state. Every scheme multiplies what it draws by ``scale`` (the gain). To add a scheme,
write such a function and add one line to :data:`INIT_SCHEMES`.

Callers should go through :func:`init_matrix` (which validates its arguments) and
:func:`init_bias`. This module is pure PyTorch: it must not import Ray, Optuna or MLflow.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

__all__ = [
    "INIT_SCHEMES",
    "ROLES",
    "InitFn",
    "get_init_scheme",
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "identity",
    "init_bias",
    "init_matrix",
    "normal001",
    "orthogonal",
    "torch_default",
    "uniform01",
    "xavier",
]

ROLES: tuple[str, ...] = ("input", "recurrent", "output")
"""The roles a matrix can play; passed to every scheme as ``role``."""


class InitFn(Protocol):
    """Signature of an init scheme (see the module docstring)."""

    def __call__(
        self, fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
    ) -> torch.Tensor: ...


# --------------------------------------------------------------------------- helpers


def _normal(fan_in: int, fan_out: int, std: float, generator: torch.Generator) -> torch.Tensor:
    """Draw an i.i.d. N(0, std^2) float32 matrix of shape (fan_in, fan_out)."""
    return torch.randn(fan_in, fan_out, generator=generator, dtype=torch.float32) * std


def _uniform(
    fan_in: int, fan_out: int, low: float, high: float, generator: torch.Generator
) -> torch.Tensor:
    """Draw an i.i.d. U(low, high) float32 matrix of shape (fan_in, fan_out)."""
    out = torch.empty(fan_in, fan_out, dtype=torch.float32)
    return out.uniform_(low, high, generator=generator)


def _torch_default_hidden(fan_in: int, fan_out: int, role: str) -> int:
    """The ``hidden_size`` nn.RNN / nn.Linear would use for the bound of a matrix in ``role``."""
    if role in ("input", "recurrent"):
        return fan_out
    if role == "output":
        return fan_in
    raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")


# --------------------------------------------------------------------------- schemes


def xavier(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """N(0, 1/fan_in): std sqrt(1/fan_in), the note's "Xavier" (LeCun-style fan-in scaling)."""
    return _normal(fan_in, fan_out, math.sqrt(1.0 / fan_in), generator) * scale


def glorot_normal(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """N(0, 2/(fan_in+fan_out)) (Glorot & Bengio 2010, normal variant)."""
    return _normal(fan_in, fan_out, math.sqrt(2.0 / (fan_in + fan_out)), generator) * scale


def glorot_uniform(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """U(-a, a), a = sqrt(6/(fan_in+fan_out)) (Glorot & Bengio 2010; = xavier_uniform_)."""
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(fan_in, fan_out, -a, a, generator) * scale


def he_normal(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """N(0, 2/fan_in) (He et al. 2015, for ReLU units)."""
    return _normal(fan_in, fan_out, math.sqrt(2.0 / fan_in), generator) * scale


def orthogonal(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Orthogonal via sign-corrected QR of a Gaussian (Saxe et al. 2014; = orthogonal_).

    Square: W^T W = I. Tall (fan_in > fan_out): orthonormal columns. Wide: orthonormal rows.
    """
    wide = fan_in < fan_out
    rows, cols = (fan_out, fan_in) if wide else (fan_in, fan_out)
    gauss = torch.randn(rows, cols, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)  # q: (rows, cols) with orthonormal columns
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0  # measure-zero case; keep q orthogonal regardless
    q = q * signs  # makes the distribution Haar (uniform over orthogonal matrices)
    if wide:
        q = q.T
    return q.to(torch.float32).contiguous() * scale


def identity(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """Recurrent: I (must be square); other roles: N(0, 0.001^2) (IRNN, Le et al. 2015)."""
    if role == "recurrent":
        if fan_in != fan_out:
            raise ValueError(
                f"identity init needs a square recurrent matrix, got {fan_in}x{fan_out}"
            )
        return torch.eye(fan_in, dtype=torch.float32) * scale
    return _normal(fan_in, fan_out, 0.001, generator) * scale


def uniform01(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """U[0, 1]: the naive baseline (mean 1/2, variance 1/12)."""
    return _uniform(fan_in, fan_out, 0.0, 1.0, generator) * scale


def normal001(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """N(0, 0.01^2): the classic char-RNN default (Karpathy's min-char-rnn)."""
    return _normal(fan_in, fan_out, 0.01, generator) * scale


def torch_default(
    fan_in: int, fan_out: int, *, role: str, scale: float, generator: torch.Generator
) -> torch.Tensor:
    """U(-k, k), k = 1/sqrt(hidden): PyTorch's nn.RNN (and nn.Linear for the output layer).

    ``hidden`` is ``fan_out`` for roles input/recurrent and ``fan_in`` for role output.
    """
    k = 1.0 / math.sqrt(_torch_default_hidden(fan_in, fan_out, role))
    return _uniform(fan_in, fan_out, -k, k, generator) * scale


INIT_SCHEMES: dict[str, InitFn] = {
    "xavier": xavier,  # N(0, 1/fan_in)
    "glorot_normal": glorot_normal,  # N(0, 2/(fan_in+fan_out))
    "glorot_uniform": glorot_uniform,  # U(±sqrt(6/(fan_in+fan_out)))
    "he_normal": he_normal,  # N(0, 2/fan_in)
    "orthogonal": orthogonal,  # Haar-orthogonal (semi-orthogonal if non-square)
    "identity": identity,  # I for recurrent, N(0, 1e-6) otherwise
    "uniform01": uniform01,  # U[0, 1]
    "normal001": normal001,  # N(0, 1e-4)
    "torch_default": torch_default,  # U(±1/sqrt(hidden)), like nn.RNN
}
"""Registry of init schemes by name. Add one line per new scheme."""


# --------------------------------------------------------------------------- public helpers


def get_init_scheme(name: str) -> InitFn:
    """Return the scheme registered as ``name``; ValueError listing known names otherwise."""
    try:
        return INIT_SCHEMES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown init scheme {name!r}; known: {', '.join(sorted(INIT_SCHEMES))}"
        ) from None


def _check_generator(generator: torch.Generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if generator.device.type != "cpu":
        raise ValueError(f"generator must be a CPU generator, got device {generator.device}")


def _check_size(label: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{label} must be an integer >= 1, got {value!r}")


def init_matrix(
    name: str,
    fan_in: int,
    fan_out: int,
    *,
    role: str,
    scale: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Draw a (fan_in, fan_out) float32 CPU matrix with scheme ``name``, after validation.

    Raises ValueError for an unknown scheme, a role not in :data:`ROLES`, a fan below 1,
    a non-finite ``scale`` (any finite value, including 0 and negatives, is allowed) or a
    non-CPU generator, and TypeError if ``generator`` is not a :class:`torch.Generator`.
    """
    fn = get_init_scheme(name)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
    _check_size("fan_in", fan_in)
    _check_size("fan_out", fan_out)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a finite float, got {scale!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale!r}")
    _check_generator(generator)
    out = fn(fan_in, fan_out, role=role, scale=float(scale), generator=generator)
    if out.shape != (fan_in, fan_out) or out.dtype != torch.float32 or out.device.type != "cpu":
        raise RuntimeError(
            f"init scheme {name!r} returned {tuple(out.shape)} {out.dtype} on {out.device}; "
            f"expected ({fan_in}, {fan_out}) torch.float32 on cpu"
        )
    return out


def init_bias(name: str, size: int, *, hidden: int, generator: torch.Generator) -> torch.Tensor:
    """Return a float32 CPU bias vector of length ``size`` for scheme ``name``.

    Zeros for every scheme except ``torch_default``, which draws U(-1/sqrt(hidden),
    1/sqrt(hidden)) as nn.RNN does for its biases (pass the output layer's fan-in as
    ``hidden`` for the output bias, as nn.Linear does). Only ``torch_default`` consumes
    ``generator``; zeros do not advance it.
    """
    get_init_scheme(name)
    _check_size("size", size)
    _check_size("hidden", hidden)
    _check_generator(generator)
    if name == "torch_default":
        k = 1.0 / math.sqrt(hidden)
        return torch.empty(size, dtype=torch.float32).uniform_(-k, k, generator=generator)
    return torch.zeros(size, dtype=torch.float32)

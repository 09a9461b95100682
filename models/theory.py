"""Mean-field predictions for the Elman cells at initialization, to set beside measurements.

What the diagnostics of ``models.train.init_diagnostics`` measure at init (the variance
of h_t over batch and units, the share of saturated units, how dL/dh_t shrinks or grows
through time, the spectral radius of Whh) has a large-width prediction for the Elman
cells with i.i.d. weights. This module computes it, so a study can say whether a result
is what the theory expects for that init or something else.

The theory is the signal-propagation mean field of Poole et al. 2016 ("Exponential
expressivity in deep neural networks through transient chaos") applied to the unrolled
recurrence, as in Chen, Pennington & Schoenholz 2018 ("Dynamical isometry and a mean
field theory of RNNs"). For ``h_t = phi(x_t Wxh + h_{t-1} Whh + b)`` with N hidden units
and i.i.d. weights, the pre-activations at step t are, across units and sequences,
Gaussian with mean ``mu_t`` and variance ``v_t``::

    mu_t = m_x + N mean(Whh) E[h_{t-1}]
    v_t  = s   + N var(Whh)  E[h_{t-1}^2]          h_{-1} = 0

where the input drive is ``m_x = mean(Wxh) E[sum_j x_j]`` and ``s = var(Wxh) E|x|^2 +
mean(Wxh)^2 Var(sum_j x_j) + Var(b)``. The gain is ``g = sqrt(N var(Whh))``. For zero-mean
Whh and tanh the recursion has one fixed point ``q*`` of ``q = E[tanh(sqrt(g^2 q + s)
z)^2]``, and the squared norm of dL/dh_t changes per step by ``chi = g^2 E[tanh'(pre)^2]``
at that point: it vanishes for chi < 1 and explodes for chi > 1 (the edge of chaos is
chi = 1). Orthogonal Whh has the same forward mean field as a Gaussian one of the same
gain (Chen et al.); the theory does not describe identity Whh (each unit only sees itself)
nor the gated cells, and :func:`predict` says so in ``applies`` and ``note``.

Gaussian expectations use Gauss-Hermite quadrature in z (96 nodes) for pre-activation
standard deviations up to 1. Beyond that tanh(mu + sigma z) is too steep in z for it (96
nodes are off by 2e-6 in E[tanh^2] at sigma = 1.5 and by 0.04 at sigma = 6), so the
integrals are taken in the pre-activation y instead, where the Gaussian density is the
smooth factor and sech^2 (which vanishes beyond |y| = 20) the weight: ``E[tanh^2] = 1 -
int sech^2(y) p(y) dy``, ``E[tanh] = 1 - int sech^2(y) Phi((y - mu)/sigma) dy`` (by parts),
on 20 Gauss-Legendre panels of 10 nodes over [-20, 20]. Both are good to ~1e-8.

The input enters as a mixture: given x, the input term of a pre-activation is Gaussian
across units with variance var(Wxh) |x|^2, and |x|^2 varies from step to step (the adding
task's u^2 + m spans 0 to 2). Averaging the recursion over the distribution of (|x|^2,
sum x) over a handful of support points (:class:`InputStats`), instead of pooling it
into one Gaussian, brings the adding task's predicted variance from 6% above the measured
one to within 1% (xavier, scale 1, N = 512, 128 sequences of 40 steps).

Pure numpy/scipy; it never imports torch, Ray, Optuna or MLflow itself.
"""

from __future__ import annotations

import functools
import math
import numbers
import operator
from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss
from numpy.polynomial.legendre import leggauss
from scipy.optimize import brentq
from scipy.special import ndtr

from models.init import INIT_SCHEMES, ROLES
from models.tasks import COPY_ALPHABET, COPY_LENGTH, get_task

__all__ = [
    "ELMAN_CELLS",
    "SATURATION",
    "InputStats",
    "MeanField",
    "Point",
    "Prediction",
    "Trajectory",
    "chi",
    "critical_gain",
    "depth_scale",
    "fixed_point",
    "hidden_trajectory",
    "input_moments",
    "mean_field",
    "perron_root",
    "predict",
    "q_star",
    "relu_chi",
    "relu_q_star",
    "scheme_moments",
]

SATURATION = 0.99
"""A unit counts as saturated when abs(h) exceeds this (as in ``models.train``)."""

ELMAN_CELLS: tuple[str, ...] = ("rnn_tanh", "rnn_relu", "rnn_linear")
"""The cells the mean field describes. For ``rnn_linear`` (phi the identity) the
recursion needs no Gaussian integral: E[h] = mu and E[h^2] = mu^2 + v at every point, so
it is the i.i.d. weights' second-moment recursion itself, with q* = s/(1 - g^2) below
g = 1 and no fixed point (the state grows as g^t) from g = 1 up."""

_GATED_CELLS = ("lstm", "gru")

_TASKS = ("adding", "copy", "charlm")

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_ATANH_SAT = math.atanh(SATURATION)
_HERMITE_MAX_STD = 1.0
"""Pre-activation std up to which Gauss-Hermite in z is used (see the module docstring)."""

_HZ, _HW = hermegauss(96)
_HW = _HW / _SQRT_2PI  # weights of E over z ~ N(0, 1)


def _panels(half_width: float, panels: int, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Composite Gauss-Legendre nodes and weights on [-half_width, half_width]."""
    x, w = leggauss(nodes)
    edges = np.linspace(-half_width, half_width, panels + 1)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    return (mid[:, None] + half[:, None] * x).ravel(), (half[:, None] * w).ravel()


_PY, _PW = _panels(20.0, 20, 10)  # pre-activation values y and weights
_PSECH2 = 1.0 / np.cosh(_PY) ** 2
_PWSECH2 = _PW * _PSECH2  # weights for int sech^2(y) f(y) dy
_PWSECH4 = _PWSECH2 * _PSECH2

_MAX_ITER = 2000
"""Steps of the recursion tried when a fixed point has no closed form or 1-D root."""


# --------------------------------------------------------------------------- validation


def _finite(label: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{label} must be a finite number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{label} must be finite, got {value!r}")
    return float(value)


def _nonnegative(label: str, value: float) -> float:
    value = _finite(label, value)
    if value < 0:
        raise ValueError(f"{label} must be >= 0, got {value!r}")
    return value


def _size(label: str, value: int, least: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"{label} must be an integer >= {least}, got {value!r}")
    return operator.index(value)


def _scheme(name: str) -> str:
    if not isinstance(name, str) or name not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {name!r}; known: {', '.join(sorted(INIT_SCHEMES))}")
    return name


def _cell(name: str) -> str:
    known = (*ELMAN_CELLS, *_GATED_CELLS)
    if name not in known:
        raise ValueError(f"unknown cell {name!r}; known: {', '.join(sorted(known))}")
    return name


# --------------------------------------------------------------------------- weights


def scheme_moments(
    name: str, fan_in: int, fan_out: int, *, role: str, scale: float = 1.0
) -> tuple[float, float]:
    """Mean and variance of one entry of a (fan_in, fan_out) matrix drawn by scheme ``name``.

    The moments are over the draw (and, equivalently for large matrices, over the entries
    of one matrix), for the scheme as ``models.init.init_matrix`` draws it, ``scale``
    included. Gaussian schemes: mean 0 and their variance. Uniform U(a, b): (a+b)/2 and
    (b-a)^2/12. ``orthogonal``: mean 0 and exactly ``scale^2 / max(fan_in, fan_out)``
    (every row or column of a (semi-)orthogonal matrix has unit norm, so the mean square
    entry is min/(fan_in fan_out)). ``identity`` in role recurrent: the entrywise moments
    of ``scale * I`` (mean scale/N, variance scale^2 (1/N)(1 - 1/N)); the matrix is not
    i.i.d., so the mean field does not describe it (see :func:`predict`).

    Raises:
        ValueError: unknown scheme (the known ones are listed), unknown role, a fan below
            1, a non-finite scale, or a non-square identity recurrent matrix.
    """
    _scheme(name)
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
    _size("fan_in", fan_in)
    _size("fan_out", fan_out)
    s = _finite("scale", scale)
    s2 = s * s
    if name == "xavier":
        return 0.0, s2 / fan_in
    if name in ("glorot_normal", "glorot_uniform"):
        return 0.0, 2.0 * s2 / (fan_in + fan_out)
    if name == "he_normal":
        return 0.0, 2.0 * s2 / fan_in
    if name == "orthogonal":
        return 0.0, s2 / max(fan_in, fan_out)
    if name == "identity":
        if role != "recurrent":
            return 0.0, 1e-6 * s2
        if fan_in != fan_out:
            raise ValueError(
                f"identity init needs a square recurrent matrix, got {fan_in}x{fan_out}"
            )
        p = 1.0 / fan_in
        return s * p, s2 * p * (1.0 - p)
    if name == "uniform01":
        return s / 2.0, s2 / 12.0
    if name == "normal001":
        return 0.0, 1e-4 * s2
    if name == "torch_default":
        hidden = fan_in if role == "output" else fan_out
        return 0.0, s2 / (3.0 * hidden)
    raise ValueError(
        f"init scheme {name!r} has no moments in models.theory; add them to scheme_moments"
    )


def perron_root(n: int, scale: float = 1.0) -> float:
    """Predicted largest eigenvalue of an n x n matrix drawn by ``uniform01`` at ``scale``.

    The leading term ``n * scale / 2`` (n times the entry mean). For this non-symmetric
    matrix the next correction is O(scale / n), not the ``var/mean = scale/6`` of the
    symmetric (Furedi-Komlos) case: writing W = (scale/2) 11^T + D, the outlier moves by
    the zero-mean ``1^T D 1 / n``, whose standard deviation is the entry's,
    ``|scale| / sqrt(12)``. That is the sampling spread of the root around this value.
    For negative scale the eigenvalue is negative; its magnitude is the spectral radius.
    """
    _size("n", n)
    return n * _finite("scale", scale) / 2.0


# --------------------------------------------------------------------------- inputs

Point = tuple[float, float, float]
"""(weight, |x|^2, sum_j x_j): one support point of a step's input distribution."""

_ADDING_U, _ADDING_W = leggauss(6)
_ADDING_U, _ADDING_W = (_ADDING_U + 1.0) / 2.0, _ADDING_W / 2.0  # E over u ~ U[0, 1]


@dataclass(frozen=True)
class InputStats:
    """The input statistics the theory uses, pooled over sequences and steps."""

    dim: int
    """Number of input channels (the fan-in of Wxh)."""
    steps: int
    """Time steps the network sees."""
    sq_norm: float
    """E|x_t|^2, the mean squared norm of an input vector."""
    mean: tuple[float, ...]
    """E[x_t] per channel."""
    sum_var: float
    """Var(sum_j x_tj), which a nonzero-mean Wxh turns into pre-activation variance."""
    points: tuple[Point, ...] = ()
    """The joint distribution of (|x_t|^2, sum_j x_tj) as weighted support points, when
    it is not one point: given x the input term of a pre-activation is Gaussian across
    units with variance var(Wxh) |x|^2, so over sequences it is a mixture of Gaussians,
    and the recursion averages over these points. () = one Gaussian with the pooled
    moments above."""

    def __post_init__(self) -> None:
        _size("dim", self.dim)
        _size("steps", self.steps)
        _nonnegative("sq_norm", self.sq_norm)
        _nonnegative("sum_var", self.sum_var)
        if len(self.mean) != self.dim:
            raise ValueError(f"mean must have dim = {self.dim} entries, got {len(self.mean)}")
        for value in self.mean:
            _finite("mean", value)
        if self.points:
            for w, sq, total in self.points:
                if _finite("point weight", w) <= 0:
                    raise ValueError(f"point weights must be > 0, got {w!r}")
                _nonnegative("point |x|^2", sq)
                _finite("point sum", total)
            weight = sum(p[0] for p in self.points)
            if abs(weight - 1.0) > 1e-9:
                raise ValueError(f"point weights must sum to 1, got {weight!r}")

    @property
    def sum_mean(self) -> float:
        """E[sum_j x_tj], which a nonzero-mean Wxh turns into a pre-activation mean."""
        return float(sum(self.mean))


@functools.lru_cache(maxsize=256)
def input_moments(task: str, seq_len: int, corpus: str | None = None) -> InputStats:
    """Input statistics of a task of ``models.tasks``, pooled over sequences and steps.

    ``adding``: value channel u ~ U[0, 1) (mean 1/2, second moment 1/3) and a marker
    channel with two 1s in T steps (mean = second moment = 2/T), so E|x|^2 = 1/3 + 2/T and
    Var(sum x) = 1/12 + 2/T - 4/T^2; its points are (u^2 + m, u + m) for m in {0, 1} (m = 1
    with probability 2/T) and u at 6 Gauss-Legendre nodes. ``copy``: one-hot, so |x|^2 =
    sum x = 1; the channel means follow from its layout (10 random symbols, blanks, the
    delimiter). ``charlm``: one-hot too; the channel means are given as 1/vocab (the
    corpus's character frequencies are not used: the theory needs only sum x = 1).

    Raises:
        ValueError: unknown task or a ``seq_len`` (or corpus) the task refuses.
    """
    if task not in _TASKS:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(sorted(_TASKS))}")
    if task != "charlm" and corpus is not None:
        raise ValueError(f"corpus: the {task!r} task reads no corpus (only charlm does)")
    if task == "adding":
        seq_len = _size("seq_len for the adding task", seq_len, least=2)
        p = 2.0 / seq_len
        points = tuple(
            (float(w * pm), float(u * u + m), float(u + m))
            for m, pm in ((0.0, 1.0 - p), (1.0, p))
            if pm > 0.0  # T = 2: every step is marked
            for u, w in zip(_ADDING_U, _ADDING_W, strict=True)
        )
        return InputStats(2, seq_len, 1.0 / 3.0 + p, (0.5, p), 1.0 / 12.0 + p - p * p, points)
    seq_len = _size("seq_len", seq_len)
    one_hot = ((1.0, 1.0, 1.0),)
    if task == "copy":
        steps = seq_len + 2 * COPY_LENGTH
        symbol = COPY_LENGTH / COPY_ALPHABET / steps
        blank = (seq_len - 1 + COPY_LENGTH) / steps
        mean = (symbol,) * COPY_ALPHABET + (blank, 1.0 / steps)
        return InputStats(COPY_ALPHABET + 2, steps, 1.0, mean, 0.0, one_hot)
    dim = get_task(task, seq_len, corpus).input_dim  # reads (and validates) the corpus
    return InputStats(dim, seq_len, 1.0, (1.0 / dim,) * dim, 0.0, one_hot)


# --------------------------------------------------------------------------- mean field


@dataclass(frozen=True)
class MeanField:
    """The weight and input moments one step of the recursion needs.

    A step's pre-activation is, over sequences and units, a mixture over the input points
    k (weights ``weights``) of Gaussians with mean ``in_means[k] + rec_mean E[h]`` and
    variance ``in_vars[k] + rec_var E[h^2]``.
    """

    rec_mean: float
    """N * mean(Whh entry): how E[h_{t-1}] shifts the pre-activation mean."""
    rec_var: float
    """g^2 = N * var(Whh entry): how E[h_{t-1}^2] adds pre-activation variance."""
    weights: tuple[float, ...]
    """Weight of each input point."""
    in_means: tuple[float, ...]
    """Pre-activation mean from the input at each point: mean(Wxh) sum x."""
    in_vars: tuple[float, ...]
    """Pre-activation variance from the input at each point: var(Wxh) |x|^2 + Var(bias)."""

    @property
    def gain(self) -> float:
        """g = sqrt(N var(Whh entry))."""
        return math.sqrt(self.rec_var)

    @property
    def in_mean(self) -> float:
        """The input's mean drive, pooled over the points."""
        return float(np.dot(self.weights, self.in_means))

    @property
    def in_var(self) -> float:
        """s: the variance the input and bias add to a pre-activation, pooled over the points
        (var(Wxh) E|x|^2 + mean(Wxh)^2 Var(sum x) + Var(bias))."""
        w, mu = np.asarray(self.weights), np.asarray(self.in_means)
        return float(w @ np.asarray(self.in_vars) + w @ (mu - w @ mu) ** 2)


def mean_field(
    inputs: InputStats,
    hidden: int,
    init: str,
    init_recurrent: str | None = None,
    scale: float = 1.0,
    recurrent_scale: float | None = None,
) -> MeanField:
    """The :class:`MeanField` of an Elman cell initialized as ``models.cells.init_weights`` does.

    ``init`` draws Wxh (and the biases: zero, or U(+-1/sqrt(N)) for each of bx and bh under
    ``torch_default``, which ignores ``scale``); ``init_recurrent`` (None: ``init``) draws
    Whh. ``recurrent_scale`` (None: ``scale``) is the gain applied to Whh alone.
    """
    hidden = _size("hidden", hidden)
    _scheme(init)
    rec_scheme = init if init_recurrent is None else _scheme(init_recurrent)
    scale = _finite("scale", scale)
    rec_scale = scale if recurrent_scale is None else _finite("recurrent_scale", recurrent_scale)
    m_in, v_in = scheme_moments(init, inputs.dim, hidden, role="input", scale=scale)
    m_rec, v_rec = scheme_moments(rec_scheme, hidden, hidden, role="recurrent", scale=rec_scale)
    bias_var = 2.0 / (3.0 * hidden) if init == "torch_default" else 0.0
    if inputs.points:
        w, sq, total = (tuple(float(c) for c in col) for col in zip(*inputs.points, strict=True))
        means = tuple(m_in * t for t in total)
        variances = tuple(v_in * q + bias_var for q in sq)
    else:
        w, means = (1.0,), (m_in * inputs.sum_mean,)
        variances = (v_in * inputs.sq_norm + m_in * m_in * inputs.sum_var + bias_var,)
    return MeanField(hidden * m_rec, hidden * v_rec, w, means, variances)


Moments = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _tanh_moments(mu: np.ndarray, v: np.ndarray) -> Moments:
    """Per point: E[tanh(a)], E[tanh(a)^2], E[tanh'(a)^2], P(|tanh(a)| > 0.99), a ~ N(mu, v)."""
    sd = np.sqrt(np.maximum(v, 0.0))
    m1, m2, d2, sat = (np.empty(mu.shape) for _ in range(4))
    point = v <= 0.0
    if point.any():
        th = np.tanh(mu[point])
        m1[point], m2[point] = th, th * th
        d2[point], sat[point] = (1.0 - th * th) ** 2, np.abs(th) > SATURATION
    spread = ~point
    if spread.any():
        mu_s, sd_s = mu[spread], sd[spread]
        sat[spread] = ndtr((mu_s - _ATANH_SAT) / sd_s) + ndtr((-_ATANH_SAT - mu_s) / sd_s)
    hermite = spread & (sd <= _HERMITE_MAX_STD)
    if hermite.any():
        t = np.tanh(mu[hermite, None] + sd[hermite, None] * _HZ)
        t2 = t * t
        m1[hermite], m2[hermite], d2[hermite] = t @ _HW, t2 @ _HW, (1.0 - t2) ** 2 @ _HW
    wide = spread & (sd > _HERMITE_MAX_STD)
    if wide.any():
        sd_w = sd[wide, None]
        u = (_PY - mu[wide, None]) / sd_w
        dens = np.exp(-0.5 * u * u) / (sd_w * _SQRT_2PI)  # the density of a at y
        m1[wide] = 1.0 - ndtr(u) @ _PWSECH2
        m2[wide] = 1.0 - dens @ _PWSECH2
        d2[wide] = dens @ _PWSECH4
    return m1, m2, d2, sat


def _relu_moments(mu: np.ndarray, v: np.ndarray) -> Moments:
    """Per point: E[relu(a)], E[relu(a)^2], E[relu'(a)^2] = P(a > 0), P(relu(a) > 0.99)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.maximum(v, 0.0))
        point = v <= 0.0
        a = np.where(point, 0.0, mu / np.where(point, 1.0, sd))
        cdf, pdf = ndtr(a), np.exp(-0.5 * a * a) / _SQRT_2PI
        m1 = np.where(point, np.maximum(mu, 0.0), mu * cdf + sd * pdf)
        m2 = np.where(point, np.maximum(mu, 0.0) ** 2, (mu * mu + v) * cdf + mu * sd * pdf)
        d2 = np.where(point, mu > 0.0, cdf)
        sat = np.where(point, mu > SATURATION, ndtr((mu - SATURATION) / np.where(point, 1, sd)))
    return m1, m2, d2.astype(float), sat.astype(float)


def _linear_moments(mu: np.ndarray, v: np.ndarray) -> Moments:
    """Per point: E[a], E[a^2], 1 (the identity's derivative), P(|a| > 0.99), a ~ N(mu, v)."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        sd = np.sqrt(np.maximum(v, 0.0))
        point = v <= 0.0
        safe = np.where(point, 1.0, sd)
        spread = ndtr((mu - SATURATION) / safe) + ndtr((-SATURATION - mu) / safe)
        sat = np.where(point, np.abs(mu) > SATURATION, spread)
    return mu.astype(float), mu * mu + v, np.ones(mu.shape), sat.astype(float)


def _moments(cell: str, mu: np.ndarray, v: np.ndarray) -> Moments:
    if cell == "rnn_tanh":
        return _tanh_moments(mu, v)
    if cell == "rnn_linear":
        return _linear_moments(mu, v)
    return _relu_moments(mu, v)


@dataclass(frozen=True)
class Trajectory:
    """Predicted per-step statistics of h_t (t = 0 is the first step, from h_{-1} = 0)."""

    pre_mean: tuple[float, ...]
    """mu_t, the mean of the pre-activation, pooled over the input points."""
    pre_var: tuple[float, ...]
    """v_t, the variance of the pre-activation, pooled over the input points."""
    mean: tuple[float, ...]
    """E[h_t]."""
    second: tuple[float, ...]
    """q_t = E[h_t^2]."""
    var: tuple[float, ...]
    """Var(h_t) over sequences and units together, q_t - E[h_t]^2: what the diagnostics'
    hidden_var measures (for a nonzero-mean Whh the units share a large common mean, and
    this is the spread around it)."""
    sat: tuple[float, ...]
    """Share of units with abs(h_t) > SATURATION."""


def hidden_trajectory(field: MeanField, steps: int, cell: str = "rnn_tanh") -> Trajectory:
    """Run the mean-field recursion of ``field`` for ``steps`` steps of an Elman cell.

    Each step, at every input point k: ``mu_k = in_means[k] + rec_mean E[h]`` and ``v_k =
    in_vars[k] + rec_var E[h^2]``; the moments of ``phi(a)``, ``a ~ N(mu_k, v_k)``, are
    then averaged over the points. For rnn_relu with an exploding recursion the moments
    overflow to inf (all inf from there; saturation stays at its last finite value).

    Raises:
        ValueError: ``steps`` below 1 or a cell other than rnn_tanh / rnn_relu /
            rnn_linear.
    """
    _size("steps", steps)
    if cell not in ELMAN_CELLS:
        raise ValueError(f"hidden_trajectory describes {', '.join(ELMAN_CELLS)}, not {cell!r}")
    w, in_means, in_vars = _arrays(field)
    rows: list[tuple[float, float, float, float, float, float]] = []
    m, q, sat = 0.0, 0.0, 0.0
    with np.errstate(over="ignore", invalid="ignore"):
        while len(rows) < steps:
            mu = in_means + field.rec_mean * m
            v = in_vars + field.rec_var * q
            pre_mean = float(w @ mu)
            pre_var = float(w @ v + w @ (mu - pre_mean) ** 2)
            if not (math.isfinite(pre_mean) and math.isfinite(pre_var)):
                # only rnn_relu and rnn_linear get here: the scale has overflowed, for good
                lost = (math.inf, math.inf, math.inf, math.inf, math.inf, sat)
                rows.extend([lost] * (steps - len(rows)))
                break
            m1, m2, _, sats = _moments(cell, mu, v)
            m, q, sat = (float(x) for x in np.stack((m1, m2, sats)) @ w)
            var = max(q - m * m, 0.0) if math.isfinite(q) else math.inf
            rows.append((pre_mean, pre_var, m, q, var, sat))
            for period in (1, 2):  # a fixed point, or the 2-cycle of a negative-mean Whh
                if len(rows) > period and _same(rows[-1], rows[-1 - period]):
                    cycle = rows[-period:]
                    while len(rows) < steps:
                        rows.extend(cycle[: steps - len(rows)])
                    break
    return Trajectory(*(tuple(col) for col in zip(*rows, strict=True)))


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether two states of the recursion agree to ~1e-12 (relative)."""
    return all(abs(x - y) <= 1e-12 * max(1.0, abs(x)) for x, y in zip(a, b, strict=True))


def _arrays(field: MeanField) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.asarray(field.weights), np.asarray(field.in_means), np.asarray(field.in_vars)


def _tanh_fixed_point(field: MeanField) -> float:
    """The stable root of ``q = sum_k w_k E[tanh(mu_k + sqrt(g^2 q + s_k) z)^2]`` in [0, 1]
    (zero-mean Whh)."""
    w, mu, s = _arrays(field)
    g2 = field.rec_var

    def gap(q: float) -> float:
        return float(w @ _tanh_moments(mu, g2 * q + s)[1]) - q

    low = 0.0
    if not (s.any() or mu.any()):
        if g2 <= 1.0:
            return 0.0  # q = 0 is the only fixed point, and stable
        low = 1e-12  # q = 0 is unstable; the positive root is the attractor
        if gap(low) <= 0.0:
            return 0.0
    if gap(1.0) >= 0.0:
        return 1.0
    return float(brentq(gap, low, 1.0, xtol=1e-13, rtol=1e-12))


def _single(g: float, s: float) -> MeanField:
    g = _finite("g", g)
    return MeanField(0.0, g * g, (1.0,), (0.0,), (_nonnegative("s", s),))


def q_star(g: float, s: float) -> float:
    """Fixed point q* of ``q = E[tanh(sqrt(g^2 q + s) z)^2]``, z ~ N(0, 1) (tanh cell).

    q is the second moment of h; ``g^2 q* + s`` is the stationary pre-activation variance.
    For s = 0 and |g| <= 1 it is 0; for s = 0 and |g| > 1 the stable, positive root.

    Raises:
        ValueError: non-finite g or s, or s < 0.
    """
    return _tanh_fixed_point(_single(g, s))


def chi(g: float, s: float) -> float:
    """``g^2 E[tanh'(sqrt(g^2 q* + s) z)^2]``: the per-step factor of ||dL/dh_t||^2.

    Below 1 the gradient vanishes through time, above 1 it explodes (tanh cell, zero-mean
    Whh with N var(entry) = g^2, input drive s).
    """
    field = _single(g, s)
    v = field.rec_var * _tanh_fixed_point(field) + field.in_vars[0]
    return field.rec_var * float(_tanh_moments(np.zeros(1), np.full(1, v))[2][0])


@functools.lru_cache(maxsize=1024)
def _tanh_critical_gain(
    weights: tuple[float, ...], in_means: tuple[float, ...], in_vars: tuple[float, ...]
) -> float:
    """The gain at which chi = 1 for these input points (zero-mean Whh).

    At the edge, with u = g^2 q* the recurrent share of the pre-activation variance,
    ``g^2 = 1 / sum_k w_k E[tanh'^2](u + s_k)`` and ``q* = sum_k w_k E[tanh^2](u + s_k)``,
    so u solves ``u = (sum_k w_k E[tanh^2]) / (sum_k w_k E[tanh'^2])``: one root, found with
    brentq (u = 0 and g = 1 when there is no input). NaN if no finite gain reaches it.
    """
    w, mu, s = np.asarray(weights), np.asarray(in_means), np.asarray(in_vars)
    if not (s.any() or mu.any()):
        return 1.0

    def excess(u: float) -> float:  # u - q*/E[tanh'^2], times E[tanh'^2] > 0
        _, m2, d2, _ = _tanh_moments(mu, u + s)
        return u * float(w @ d2) - float(w @ m2)

    low, high = 0.0, 1.0
    while excess(high) <= 0.0:
        if high > 1e300:
            return math.nan
        low, high = high, 2.0 * high
    u = float(brentq(excess, low, high, xtol=1e-13, rtol=1e-12))
    return 1.0 / math.sqrt(float(w @ _tanh_moments(mu, u + s)[2]))


def critical_gain(s: float) -> float:
    """The recurrent gain g at which ``chi(g, s) = 1`` (the edge of chaos), tanh cell.

    Exactly 1 for s = 0; it grows with the input drive, since the input's share of the
    pre-activation variance saturates units without adding recurrent gain.

    Raises:
        ValueError: non-finite or negative s.
    """
    return _tanh_critical_gain((1.0,), (0.0,), (_nonnegative("s", s),))


def _depth(chi_value: float) -> float:
    if math.isnan(chi_value):
        return math.nan
    if chi_value <= 0.0 or math.isinf(chi_value):
        return 0.0
    if chi_value == 1.0:
        return math.inf
    return 1.0 / abs(math.log(chi_value))


def depth_scale(g: float, s: float) -> float:
    """Steps over which ||dL/dh_t||^2 changes by a factor e: ``1/|ln chi(g, s)|``.

    For chi < 1 it is the decay length ``-1/ln chi`` (Schoenholz et al.'s depth scale:
    signal back from more than a few of these steps is lost); for chi > 1 it is the growth
    length ``1/ln chi`` of an exploding gradient; inf at chi = 1. ``chi`` tells which.
    """
    return _depth(chi(g, s))


def relu_q_star(g: float, s: float) -> float:
    """Fixed point of ``q = E[relu(sqrt(g^2 q + s) z)^2] = (g^2 q + s) / 2``: s / (2 - g^2).

    inf for g^2 >= 2 with s > 0 (the recursion grows without bound); 0 when s = 0.
    """
    field = _single(g, s)
    s = field.in_vars[0]
    if s == 0.0:
        return 0.0
    return s / (2.0 - field.rec_var) if field.rec_var < 2.0 else math.inf


def relu_chi(g: float) -> float:
    """``g^2 / 2``: the per-step factor of ||dL/dh_t||^2 in a ReLU cell with zero-mean
    pre-activations (relu' is 1 on half of them). Critical at g = sqrt(2) (He init)."""
    g = _finite("g", g)
    return g * g / 2.0


def _stationary(field: MeanField, cell: str) -> tuple[float, float]:
    """(q*, E[phi'^2]) where the recursion settles (q* = inf: a ReLU or linear recursion
    explodes)."""
    w, mu_in, s = _arrays(field)
    g2 = field.rec_var
    if cell == "rnn_linear":  # closed form: m* = E[mu_in]/(1 - a), q* = E[mu*^2 + s]/(1 - g^2)
        a = field.rec_mean
        if abs(a) >= 1.0 or g2 >= 1.0:
            return math.inf, 1.0
        m = float(w @ mu_in) / (1.0 - a)
        return float(w @ ((mu_in + a * m) ** 2 + s)) / (1.0 - g2), 1.0
    if field.rec_mean == 0.0 and (cell == "rnn_tanh" or not mu_in.any()):
        if cell == "rnn_tanh":
            q = _tanh_fixed_point(field)
        else:  # E[relu(a)^2] = v/2 for zero-mean a: q = (g^2 q + s)/2
            s_mean = float(w @ s)
            q = 0.0 if s_mean == 0.0 else (s_mean / (2.0 - g2) if g2 < 2.0 else math.inf)
            if math.isinf(q):
                return q, 0.5
        d2 = _moments(cell, mu_in, g2 * q + s)[2]
        return q, float(w @ d2)
    states: list[tuple[float, float, float]] = [(0.0, 0.0, 0.0)]  # (E[h], q, E[phi'^2])
    for _ in range(_MAX_ITER):
        m, q, d2_mean = states[-1]
        with np.errstate(over="ignore", invalid="ignore"):
            mu, v = mu_in + field.rec_mean * m, s + g2 * q
            if not (np.isfinite(mu).all() and np.isfinite(v).all()):
                return math.inf, d2_mean
            m1, m2, d2, _ = _moments(cell, mu, v)
        state = (float(w @ m1), float(w @ m2), float(w @ d2))
        if not math.isfinite(state[1]):
            return math.inf, state[2]
        states.append(state)
        # a fixed point, or (a negative-mean Whh) a 2-cycle whose mean alternates in sign;
        # its q and E[phi'^2] are then the same on both steps to within the tolerance
        if _same(state, states[-2]) or (len(states) > 2 and _same(state, states[-3])):
            return state[1], state[2]
    return states[-1][1], states[-1][2]


def fixed_point(field: MeanField, cell: str = "rnn_tanh") -> tuple[float, float]:
    """(q*, chi) where the recursion of ``field`` settles: the stationary E[h^2] and the
    per-step factor ``rec_var E[phi'(a)^2]`` of ||dL/dh_t||^2 there.

    For zero-mean Whh and tanh, q* is the root of the (mixture) fixed-point equation;
    otherwise the recursion is iterated until it settles. q* = inf for an exploding ReLU
    recursion (chi then from its last finite step). For rnn_linear both are closed forms:
    chi = g^2 (the identity's derivative is 1), and q* is finite only for g < 1 and
    |N mean(Whh)| < 1.

    Raises:
        ValueError: a cell other than rnn_tanh / rnn_relu / rnn_linear.
    """
    if cell not in ELMAN_CELLS:
        raise ValueError(f"fixed_point describes {', '.join(ELMAN_CELLS)}, not {cell!r}")
    q, d2 = _stationary(field, cell)
    return q, field.rec_var * d2


# --------------------------------------------------------------------------- predict


@dataclass(frozen=True)
class Prediction:
    """The mean-field prediction for one trial's init (see :func:`predict`)."""

    gain: float
    """g = sqrt(N var(Whh entry)), the effective recurrent gain."""
    input_drive: float
    """s, the pre-activation variance the input (and bias) contributes per step, pooled."""
    q_star: float
    """Stationary E[h^2] (inf when a ReLU or linear recursion explodes)."""
    chi: float
    """Per-step factor of ||dL/dh_t||^2 at the stationary point (the i.i.d. bulk of Whh)."""
    critical_gain: float
    """The gain g at which chi = 1 for this input (sqrt(2) for ReLU, 1 for linear)."""
    depth_scale: float
    """1/|ln chi|: steps over which the squared gradient norm changes by a factor e."""
    perron_root: float
    """Predicted spectral radius of Whh: g for zero-mean i.i.d. (circular law), |N mean|
    for a nonzero mean (the Perron outlier), exactly |scale| for orthogonal and identity."""
    hidden_var: tuple[float, ...]
    """Predicted Var(h_t) over batch and units, per step."""
    hidden_sat: tuple[float, ...]
    """Predicted share of units with abs(h_t) > 0.99, per step."""
    applies: bool
    """Whether the mean field describes this cell and init."""
    note: str
    """Why it does not apply, or caveats; empty when none."""


@functools.lru_cache(maxsize=4096)
def predict(
    task: str,
    cell: str,
    hidden: int,
    seq_len: int,
    init: str,
    init_recurrent: str | None = None,
    scale: float = 1.0,
    recurrent_scale: float | None = None,
    corpus: str | None = None,
) -> Prediction:
    """Mean-field prediction for a trial of ``task`` with an untrained ``cell``.

    Arguments are a ``TrialSpec``'s fields (``recurrent_scale``: a gain for Whh alone,
    None = ``scale``), as plain values or numpy scalars from a table row; a NaN in
    ``init_recurrent``, ``recurrent_scale`` or ``corpus`` (a table's missing value) means
    None. q_star, chi and critical_gain come from the same recursion as hidden_var
    (averaged over the task's input points), so for the adding task they differ a little
    from :func:`q_star` etc. at the pooled ``input_drive``. For lstm and gru only the
    weight-level numbers (gain, input drive, spectral radius of a gate block) are given,
    the rest NaN; for an identity Whh the spectral radius is exact, the critical gain is
    given and the rest is NaN. Cached (on the raw and on the normalized arguments): a
    repeated call is free.

    Raises:
        ValueError: unknown task, cell or scheme, or invalid sizes or scales.
    """

    def missing(value: object) -> bool:
        return value is None or (isinstance(value, float) and math.isnan(value))

    rec_scale = None
    if recurrent_scale is not None and not missing(recurrent_scale):
        rec_scale = _finite("recurrent_scale", recurrent_scale)
    return _predict(
        str(task),
        str(cell),
        _size("hidden", hidden),
        _size("seq_len", seq_len),
        str(init),
        None if missing(init_recurrent) else init_recurrent,
        _finite("scale", scale),
        rec_scale,
        None if missing(corpus) else corpus,
    )


@functools.lru_cache(maxsize=4096)
def _predict(
    task: str,
    cell: str,
    hidden: int,
    seq_len: int,
    init: str,
    init_recurrent: str | None,
    scale: float,
    recurrent_scale: float | None,
    corpus: str | None,
) -> Prediction:
    """:func:`predict` on normalized arguments, cached."""
    _cell(cell)
    inputs = input_moments(task, seq_len, corpus)
    field = mean_field(inputs, hidden, init, init_recurrent, scale, recurrent_scale)
    rec_scheme = init if init_recurrent is None else init_recurrent
    rec_scale = float(scale if recurrent_scale is None else recurrent_scale)
    if rec_scheme in ("orthogonal", "identity"):
        radius = abs(rec_scale)
    elif field.rec_mean != 0.0:
        radius = abs(field.rec_mean)
    else:
        radius = field.gain
    if cell == "rnn_relu":
        crit = math.sqrt(2.0)
    elif cell == "rnn_linear":
        crit = 1.0  # chi = g^2
    elif cell == "rnn_tanh":
        crit = _tanh_critical_gain(field.weights, field.in_means, field.in_vars)
    else:
        crit = math.nan
    if cell in _GATED_CELLS or rec_scheme == "identity":
        nan_steps = (math.nan,) * inputs.steps
        note = (
            f"the mean field here covers the Elman cells only, not {cell}"
            if cell in _GATED_CELLS
            else "identity Whh is not i.i.d. (each unit feeds only itself): no mean-field state"
        )
        return Prediction(
            gain=field.gain,
            input_drive=field.in_var,
            q_star=math.nan,
            chi=math.nan,
            critical_gain=crit,
            depth_scale=math.nan,
            perron_root=radius,
            hidden_var=nan_steps,
            hidden_sat=nan_steps,
            applies=False,
            note=note,
        )
    traj = hidden_trajectory(field, inputs.steps, cell)
    q, chi_value = fixed_point(field, cell)
    notes = []
    if field.rec_mean != 0.0:
        notes.append(
            "nonzero-mean Whh: the common drive N mean(Whh) E[h] dominates; chi is the i.i.d. "
            "bulk's, without the Perron outlier"
        )
    if cell == "rnn_linear":
        notes.append(
            "linear: no nonlinearity, so the recursion is the i.i.d. weights' own second "
            "moment (no Gaussian approximation); from gain 1 up the state grows as g^t"
        )
    if cell == "rnn_relu":
        notes.append(
            "ReLU: h has a nonzero mean, so the column sums of the one Whh act as per-unit "
            "biases and one draw's hidden variance scatters by ~+-8% around this at N = 512"
        )
    return Prediction(
        gain=field.gain,
        input_drive=field.in_var,
        q_star=q,
        chi=chi_value,
        critical_gain=crit,
        depth_scale=_depth(chi_value),
        perron_root=radius,
        hidden_var=traj.var,
        hidden_sat=traj.sat,
        applies=True,
        note="; ".join(notes),
    )

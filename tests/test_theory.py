"""Tests for models/theory.py: closed forms, and Monte-Carlo runs of the project's own cells.

The Monte-Carlo tests build ``PackedRNN`` packs at N = 512, initialize them with
``init_weights`` from ``TrialSpec``s, feed real task inputs (and a synthetic Gaussian
input), and compare what they measure with the mean-field predictions. Each tolerance is
stated next to its test with where it comes from.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.optimize import brentq

from models import theory as th
from models.cells import CELLS, PackedRNN, init_weights
from models.init import INIT_SCHEMES, ROLES, init_matrix
from models.spec import TrialSpec
from models.tasks import get_task
from models.train import SATURATION

N = 512  # hidden units of the Monte-Carlo packs
T = 24  # steps of the Monte-Carlo runs
WINDOW = slice(4, T)  # steps averaged over (past the first few, where q is still moving)
SCALES = (0.5, 1.0, 1.5, 2.0)
GAUSS_DIM = 128  # channels of the synthetic input x ~ N(0, 1) per channel


# --------------------------------------------------------------------------- helpers


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Run torch on one thread here: on a shared 2-core machine, two threads per process
    oversubscribe the cores and made these runs 2-3 times slower (16 s against 6 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _expect(fn, mu: float, v: float) -> float:
    """E[fn(a)], a ~ N(mu, v), by adaptive quadrature (independent of the module's nodes)."""
    sd = math.sqrt(v)

    def integrand(y: float) -> float:
        return fn(y) * math.exp(-0.5 * ((y - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))

    lo, hi = mu - 12 * sd, mu + 12 * sd
    points = [0.0] if lo < 0 < hi else None
    return integrate.quad(integrand, lo, hi, points=points, limit=400, epsabs=1e-13)[0]


def _quad_q_star(g: float, s: float) -> float:
    def gap(q: float) -> float:
        return _expect(lambda y: math.tanh(y) ** 2, 0.0, g * g * q + s) - q

    return brentq(gap, 0.0, 1.0, xtol=1e-12)


@dataclass(frozen=True)
class Run:
    """What one pack measured, per member: statistics of h_t in float64."""

    var: np.ndarray  # (K, T): variance of h_t over batch and units, as init_diagnostics
    sat: np.ndarray  # (K, T): share of abs(h_t) > 0.99
    grad2: np.ndarray | None  # (K, T): ||dL/dh_t||^2 for L = <r, h_{T-1}>, r random
    d2: np.ndarray  # (K,): mean of tanh'(pre)^2 = (1 - h^2)^2 over the window


def _run(
    cell: str,
    x: torch.Tensor,
    specs: list[TrialSpec],
    whh_gain: dict[int, float] | None = None,
    grads: bool = True,
) -> Run:
    """Initialize a pack from ``specs`` (Whh of member k times ``whh_gain[k]``) and run x."""
    k = len(specs)
    model = PackedRNN(k, cell, x.shape[-1], specs[0].hidden, 1)
    init_weights(model, specs)
    with torch.no_grad():
        for member, gain in (whh_gain or {}).items():
            model.Whh[member] *= gain
    if grads:
        _, hs = model.forward_steps(x)
        for h in hs:
            h.retain_grad()
        r = torch.randn(hs[-1].shape, generator=torch.Generator().manual_seed(123))
        (hs[-1] * r).sum().backward()  # members are independent: one backward for all
        grad2 = np.array(
            [[float(h.grad[m].double().square().sum()) for h in hs] for m in range(k)]
        )
        hidden = torch.stack([h.detach() for h in hs], dim=1)  # (K, T, B, H)
    else:
        with torch.no_grad():
            _, hidden = model(x)
        grad2 = None
    flat = hidden.double().reshape(k, hidden.shape[1], -1)
    var = flat.var(dim=2).numpy()
    sat = (flat.abs() > SATURATION).double().mean(dim=2).numpy()
    d2 = (1 - flat[:, WINDOW] ** 2).square().mean(dim=(1, 2)).numpy()
    return Run(var, sat, grad2, d2)


def _grad_chi(grad2: np.ndarray, t0: int = 8, t1: int = T - 2) -> float:
    """Measured chi: the per-step factor of ||dL/dh_t||^2, from step t1 back to step t0."""
    return float((grad2[t0] / grad2[t1]) ** (1.0 / (t1 - t0)))


@functools.cache
def _adding_x(batch: int) -> torch.Tensor:
    x, _ = get_task("adding", T).sample(torch.Generator().manual_seed(0), batch)
    return x


@functools.cache
def _gauss_x(batch: int) -> torch.Tensor:
    return torch.randn(batch, T, GAUSS_DIM, generator=torch.Generator().manual_seed(1))


GAUSS_STATS = th.InputStats(GAUSS_DIM, T, float(GAUSS_DIM), (0.0,) * GAUSS_DIM, float(GAUSS_DIM))
"""The synthetic input's statistics, as one pooled Gaussian (|x|^2 = 128 +- 12%)."""

ADDING_CRIT = th.predict("adding", "rnn_tanh", N, T, "xavier").critical_gain
GAUSS_CRIT = th.critical_gain(1.0)  # xavier input at scale 1: s = 128 * 1/128 = 1

# (scale, recurrent_scale) per configuration: xavier at SCALES; scale 1 with Whh at the
# critical gain; (adding) scale 1 with Whh times 1.5 alone, which checks recurrent_scale
CONFIGS = {
    "adding": [(s, None) for s in SCALES] + [(1.0, ADDING_CRIT), (1.0, 1.5)],
    "gauss": [(s, None) for s in SCALES] + [(1.0, GAUSS_CRIT)],
}
CRITICAL = len(SCALES)  # index of the critical configuration
# The adding task's Wxh has 2 rows, so its realized variance wanders by sqrt(2/N) = 6%
# from draw to draw: three draws per configuration. The Gaussian input's 128 rows: 0.6%.
SEEDS = {"adding": (0, 1, 2), "gauss": (0,)}
BATCH = {"adding": 64, "gauss": 32}


@dataclass(frozen=True)
class Measured:
    """One configuration's measurements, averaged over its draws (seeds)."""

    var: np.ndarray  # (T,)
    sat: np.ndarray  # (T,)
    chi_grad: float
    chi_local: float  # N var(Whh) E[(1 - h^2)^2] over the window, nominal g^2


def _tanh_prediction(inputs: str, config: int) -> tuple[th.Trajectory, th.MeanField]:
    scale, rec = CONFIGS[inputs][config]
    stats = th.input_moments("adding", T) if inputs == "adding" else GAUSS_STATS
    field = th.mean_field(stats, N, "xavier", scale=scale, recurrent_scale=rec)
    return th.hidden_trajectory(field, T), field


@functools.cache
def _tanh_measured(inputs: str) -> list[Measured]:
    """Run every configuration and draw of ``inputs`` as one pack."""
    configs, seeds = CONFIGS[inputs], SEEDS[inputs]
    specs, gains = [], {}
    for c, (scale, rec) in enumerate(configs):
        for seed in seeds:
            if rec is not None:
                gains[len(specs)] = rec / scale
            specs.append(TrialSpec(init="xavier", scale=scale, seed=100 * c + seed, hidden=N))
    x = _adding_x(BATCH[inputs]) if inputs == "adding" else _gauss_x(BATCH[inputs])
    run = _run("rnn_tanh", x, specs, gains)
    assert run.grad2 is not None
    out = []
    for c in range(len(configs)):
        rows = slice(c * len(seeds), (c + 1) * len(seeds))
        g2 = _tanh_prediction(inputs, c)[1].rec_var
        out.append(
            Measured(
                run.var[rows].mean(axis=0),
                run.sat[rows].mean(axis=0),
                float(np.mean([_grad_chi(g) for g in run.grad2[rows]])),
                g2 * float(run.d2[rows].mean()),
            )
        )
    return out


# --------------------------------------------------------------------------- closed forms


def test_q_star_known_values() -> None:
    # q*(1, 1) = 0.46385 (the fixed point of q = E tanh^2(sqrt(q + 1) z)); +-0.002 as asked
    assert th.q_star(1.0, 1.0) == pytest.approx(0.464, abs=0.002)
    # g = 0: no recurrence, q = E tanh^2(sqrt(s) z) exactly
    for s in (0.1, 1.0, 9.0):
        expected = _expect(lambda y: math.tanh(y) ** 2, 0.0, s)
        assert th.q_star(0.0, s) == pytest.approx(expected, abs=1e-6)
    # s = 0: q* = 0 up to g = 1 (the only fixed point), positive beyond
    assert th.q_star(0.9, 0.0) == 0.0
    assert th.q_star(1.0, 0.0) == 0.0
    assert th.q_star(1.5, 0.0) > 0.1


@pytest.mark.parametrize(("g", "s"), [(0.5, 0.2), (1.0, 1.0), (2.0, 0.3), (4.0, 0.1), (8.0, 2.0)])
def test_q_star_and_chi_match_adaptive_quadrature(g: float, s: float) -> None:
    # 1e-5: the module's Gauss-Hermite / Gauss-Legendre nodes are good to ~1e-6; g = 4, 8
    # put the pre-activation std (1.9 .. 8) on the Legendre side, where plain Gauss-Hermite
    # would be off by up to 0.04
    q = _quad_q_star(g, s)
    assert th.q_star(g, s) == pytest.approx(q, abs=1e-5)
    d2 = _expect(lambda y: (1 - math.tanh(y) ** 2) ** 2, 0.0, g * g * q + s)
    assert th.chi(g, s) == pytest.approx(g * g * d2, rel=1e-4)


def test_chi_without_input() -> None:
    # s = 0, g < 1: q* = 0, so chi = g^2 tanh'(0)^2 = g^2 exactly
    for g in (0.0, 0.3, 0.9):
        assert th.chi(g, 0.0) == pytest.approx(g * g, abs=1e-12)
    assert th.chi(1.0, 0.0) == pytest.approx(1.0, abs=1e-12)
    assert th.chi(1.3, 0.0) > 1.0  # chaotic beyond the edge
    assert th.chi(1.0, 0.5) < 1.0  # input drive saturates: ordered at g = 1


def test_critical_gain() -> None:
    assert th.critical_gain(0.0) == pytest.approx(1.0, abs=1e-6)
    previous = 1.0
    for s in (0.05, 0.2, 1.0, 4.0):
        g = th.critical_gain(s)
        assert th.chi(g, s) == pytest.approx(1.0, abs=1e-8)
        assert g > previous  # more input drive, more gain needed to reach the edge
        previous = g
    # the adding task's xavier-input drive (0.2 .. 0.37 for T = 30 .. 5): g_c 1.5 .. 1.7
    for seq_len in (5, 10, 30):
        s = th.mean_field(th.input_moments("adding", seq_len), 64, "xavier").in_var
        assert 1.45 < th.critical_gain(s) < 1.7
        # predict averages over the input's two channels rather than pooling them
        assert th.predict("adding", "rnn_tanh", 64, seq_len, "xavier").critical_gain == (
            pytest.approx(th.critical_gain(s), rel=0.02)
        )


def test_depth_scale() -> None:
    assert th.depth_scale(1.0, 0.0) == math.inf  # chi = 1
    assert th.depth_scale(0.5, 0.0) == pytest.approx(-1.0 / math.log(0.25))
    chaotic = th.chi(2.0, 0.0)
    assert th.depth_scale(2.0, 0.0) == pytest.approx(1.0 / math.log(chaotic))


def test_relu_closed_forms() -> None:
    for g in (0.0, 0.5, 1.0, math.sqrt(2.0), 3.0):
        assert th.relu_chi(g) == pytest.approx(g * g / 2)
    assert th.relu_q_star(1.0, 0.4) == pytest.approx(0.4)  # s / (2 - g^2)
    assert th.relu_q_star(0.0, 0.4) == pytest.approx(0.2)  # E relu(sqrt(s) z)^2 = s/2
    assert th.relu_q_star(math.sqrt(2.0), 0.4) == math.inf
    assert th.relu_q_star(2.0, 0.0) == 0.0
    # the recursion reaches the closed form: relu cell, zero-mean weights
    field = th.MeanField(0.0, 1.0, (1.0,), (0.0,), (0.4,))
    assert th.hidden_trajectory(field, 200, "rnn_relu").second[-1] == pytest.approx(0.4)


def test_perron_root_formula() -> None:
    assert th.perron_root(512, 1.0) == 256.0
    assert th.perron_root(64, 0.5) == 16.0


# --------------------------------------------------------------------------- weights


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", sorted(INIT_SCHEMES))
def test_scheme_moments_match_drawn_matrices(name: str, role: str) -> None:
    fan_in, fan_out = {"input": (200, 300), "recurrent": (256, 256), "output": (300, 200)}[role]
    scale = 1.7
    gen = torch.Generator().manual_seed(7)
    w = init_matrix(name, fan_in, fan_out, role=role, scale=scale, generator=gen).double()
    mean, var = th.scheme_moments(name, fan_in, fan_out, role=role, scale=scale)
    n = w.numel()
    if name == "identity" and role == "recurrent":
        # scale * I is deterministic: its entrywise moments are exact
        assert float(w.mean()) == pytest.approx(mean, rel=1e-6)  # float32 scale
        assert float(w.var(unbiased=False)) == pytest.approx(var, rel=1e-6)
        return
    # 5 standard errors: of the mean, sqrt(var/n); of the variance, sqrt(2/n) relative
    # (Gaussian; uniform entries have a smaller one), n = 51200 .. 65536 entries
    assert abs(float(w.mean()) - mean) <= 5 * math.sqrt(var / n)
    assert float(w.var()) == pytest.approx(var, rel=5 * math.sqrt(2 / n))


def test_orthogonal_variance_is_exact() -> None:
    # a (semi-)orthogonal matrix has Frobenius norm^2 = min(fans): mean square 1/max(fans)
    for fans in ((200, 300), (300, 200), (64, 64)):
        w = init_matrix("orthogonal", *fans, role="input", scale=1.0, generator=torch.Generator())
        _, var = th.scheme_moments("orthogonal", *fans, role="input")
        assert float(w.double().square().mean()) == pytest.approx(var, rel=1e-5)


def test_scheme_moments_rejects_unknown() -> None:
    with pytest.raises(ValueError, match=r"unknown init scheme 'kaiming'; known: ") as info:
        th.scheme_moments("kaiming", 4, 4, role="input")
    for name in INIT_SCHEMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="unknown role"):
        th.scheme_moments("xavier", 4, 4, role="gate")
    with pytest.raises(ValueError, match="square"):
        th.scheme_moments("identity", 4, 5, role="recurrent")
    with pytest.raises(ValueError, match="scale must be finite"):
        th.scheme_moments("xavier", 4, 4, role="input", scale=math.nan)


# --------------------------------------------------------------------------- inputs


@pytest.mark.parametrize("seq_len", [7, 10])
def test_adding_input_moments(seq_len: int) -> None:
    stats = th.input_moments("adding", seq_len)
    x, _ = get_task("adding", seq_len).sample(torch.Generator().manual_seed(3), 4096)
    x = x.double().reshape(-1, 2)
    n = x.shape[0]
    assert stats.dim == 2 and stats.steps == seq_len
    # 5 standard errors over n = 4096 * T pooled steps (the marker channel is exact)
    sq = x.square().sum(dim=1)
    assert abs(float(sq.mean()) - stats.sq_norm) <= 5 * float(sq.std()) / math.sqrt(n)
    assert abs(float(x[:, 0].mean()) - 0.5) <= 5 * math.sqrt(1 / 12 / n)
    assert stats.mean == (0.5, pytest.approx(2 / seq_len))
    assert float(x[:, 1].mean()) == pytest.approx(2 / seq_len, rel=1e-12)
    assert float(x.sum(dim=1).var()) == pytest.approx(stats.sum_var, rel=5 * math.sqrt(2 / n))
    # the support points reproduce the pooled moments (6 Legendre nodes are exact here)
    w, sq_p, sum_p = (np.array(c) for c in zip(*stats.points, strict=True))
    assert w.sum() == pytest.approx(1.0)
    assert w @ sq_p == pytest.approx(stats.sq_norm)
    assert w @ sum_p == pytest.approx(stats.sum_mean)
    assert w @ (sum_p - stats.sum_mean) ** 2 == pytest.approx(stats.sum_var)


def test_copy_and_charlm_input_moments() -> None:
    stats = th.input_moments("copy", 5)
    x, _ = get_task("copy", 5).sample(torch.Generator().manual_seed(4), 4096)
    x = x.double().reshape(-1, x.shape[-1])
    assert (stats.dim, stats.steps) == (10, 25)
    assert torch.all(x.square().sum(dim=1) == 1) and stats.sq_norm == 1.0
    # symbol channels: 10 draws of 8 equally likely symbols per sequence, 5 standard errors
    p = 10 / 8 / 25
    tolerance = 5 * math.sqrt(p * (1 - p) / x.shape[0])
    assert np.allclose(x.mean(dim=0).numpy(), stats.mean, atol=tolerance)
    assert stats.sum_mean == pytest.approx(1.0)
    charlm = th.input_moments("charlm", 20)
    assert charlm.dim == get_task("charlm", 20).input_dim
    assert charlm.sq_norm == 1.0 and charlm.sum_mean == pytest.approx(1.0)


def test_input_moments_rejects() -> None:
    with pytest.raises(ValueError, match="unknown task 'sort'"):
        th.input_moments("sort", 10)
    with pytest.raises(ValueError, match="seq_len for the adding task must be an integer >= 2"):
        th.input_moments("adding", 1)
    with pytest.raises(ValueError, match="reads no corpus"):
        th.input_moments("copy", 10, "x.txt")
    with pytest.raises(ValueError, match="weights must sum to 1"):
        th.InputStats(1, 1, 1.0, (0.0,), 0.0, ((0.5, 1.0, 0.0),))


# --------------------------------------------------------------------------- Monte Carlo


def _adding_tolerance(config: int) -> float:
    """Relative tolerance on the window-mean variance of the adding runs.

    1.5% for the theory itself (finite N; the mixture over the input's points), plus 3
    standard errors of two noises, both scaled by the input's share s/v of the
    pre-activation variance (0.8 at scale 0.5, 0.25 at scale 2): the realized variance
    of the 2-row Wxh, sqrt(2/N) per draw over 3 draws, and the 64 sequences' |x|^2 = u^2
    + m (relative std 0.97 per step) over the 20 window steps.
    """
    traj, field = _tanh_prediction("adding", config)
    share = field.in_var / float(np.mean(traj.pre_var[WINDOW]))
    draws = len(SEEDS["adding"])
    noise = math.sqrt(2 / N / draws + 0.97**2 / (BATCH["adding"] * (T - WINDOW.start)))
    return 0.015 + 3 * share * noise


@pytest.mark.parametrize("config", range(len(CONFIGS["adding"])))
def test_tanh_hidden_variance_adding(config: int) -> None:
    measured = _tanh_measured("adding")[config]
    traj, _ = _tanh_prediction("adding", config)
    predicted = float(np.mean(traj.var[WINDOW]))
    assert float(measured.var[WINDOW].mean()) == pytest.approx(
        predicted, rel=_adding_tolerance(config)
    )
    scale, rec = CONFIGS["adding"][config]
    pred = th.predict("adding", "rnn_tanh", N, T, "xavier", scale=scale, recurrent_scale=rec)
    assert pred.hidden_var == pytest.approx(traj.var, rel=1e-12)  # the same recursion
    if config < CRITICAL:  # ordered or mildly chaotic: stationary at q* well before step T
        assert pred.hidden_var[-1] == pytest.approx(pred.q_star, rel=1e-3)


@pytest.mark.parametrize("config", range(len(CONFIGS["gauss"])))
def test_tanh_hidden_variance_gauss(config: int) -> None:
    # 2%: the batch x unit sample (32 x 512 x 20 values) has a standard error ~0.1%; what
    # is left is finite N (~1/N) and pooling |x|^2 (+-12%) into one Gaussian (~0.5%)
    measured = _tanh_measured("gauss")[config]
    traj, field = _tanh_prediction("gauss", config)
    assert float(measured.var[WINDOW].mean()) == pytest.approx(
        float(np.mean(traj.var[WINDOW])), rel=0.02
    )
    # the synthetic input is one pooled Gaussian: its stationary state is q_star(g, s),
    # and the last step alone (32 x 512 values) is within the same 2%
    q = th.q_star(field.gain, field.in_var)
    assert traj.var[-1] == pytest.approx(q, rel=1e-3)
    assert float(measured.var[-1]) == pytest.approx(q, rel=0.02)


@pytest.mark.parametrize("inputs", ["adding", "gauss"])
@pytest.mark.parametrize("config", range(len(SCALES) + 1))
def test_tanh_chi(inputs: str, config: int) -> None:
    # Measured two ways: the per-step factor of ||dL/dh_t||^2 over 14 backward steps, and
    # g^2 E[(1 - h^2)^2] over the window's units and sequences. 4%: the squared norms sum
    # 16k-64k entries (~1% per step, less over 14 steps) and finite N; for adding, also
    # the realized input variance (see SEEDS), which moves saturation and so chi
    measured = _tanh_measured(inputs)[config]
    traj, field = _tanh_prediction(inputs, config)
    q, predicted = th.fixed_point(field)
    if inputs == "gauss":
        assert predicted == pytest.approx(th.chi(field.gain, field.in_var), rel=1e-6)
    assert measured.chi_grad == pytest.approx(predicted, rel=0.04)
    assert measured.chi_local == pytest.approx(predicted, rel=0.04)
    if config == CRITICAL:  # Whh at the critical gain: the gradient neither grows nor fades
        assert predicted == pytest.approx(1.0, abs=1e-6)
        assert measured.chi_grad == pytest.approx(1.0, abs=0.04)
    else:
        assert traj.var[-1] == pytest.approx(q, rel=1e-3)


@pytest.mark.parametrize("inputs", ["adding", "gauss"])
@pytest.mark.parametrize("config", range(len(SCALES)))
def test_tanh_saturation(inputs: str, config: int) -> None:
    # 0.003 absolute + 5% (gauss) or 12% (adding): the tail P(|pre| > 2.65) is where the
    # input distribution's shape and the realized input variance (adding) show most
    measured = _tanh_measured(inputs)[config]
    traj, _ = _tanh_prediction(inputs, config)
    share = float(measured.sat[WINDOW].mean())
    predicted = float(np.mean(traj.sat[WINDOW]))
    assert abs(share - predicted) <= 0.003 + (0.12 if inputs == "adding" else 0.05) * predicted
    if inputs == "adding" and SCALES[config] <= 1.0:  # xavier at scale <= 1: ~none saturated
        assert share < 0.005 and predicted < 0.005


@functools.cache
def _relu_pack(inputs: str, scale: float) -> Run:
    specs = [
        TrialSpec(init="xavier", scale=scale, seed=s, hidden=N, cell="rnn_relu")
        for s in (0, 1, 2, 3)
    ]
    x = _adding_x(64)[:32] if inputs == "adding" else _gauss_x(32)
    return _run("rnn_relu", x, specs, grads=inputs == "gauss")


@pytest.mark.parametrize("g", [0.0, 0.5, 0.9, 1.0, 1.5])
def test_linear_fixed_point_and_chi_are_closed_forms(g: float) -> None:
    # phi = identity: q = s + g^2 q, so q* = s / (1 - g^2) below g = 1, none from 1 up;
    # chi = g^2 whatever q (the derivative is 1 everywhere); the edge of chaos is g = 1.
    s = 0.7
    field = th.MeanField(0.0, g * g, (1.0,), (0.0,), (s,))
    q, chi = th.fixed_point(field, "rnn_linear")
    assert chi == pytest.approx(g * g)
    if g < 1.0:
        assert q == pytest.approx(s / (1.0 - g * g), rel=1e-12)
        traj = th.hidden_trajectory(field, 400, "rnn_linear")
        assert traj.second[-1] == pytest.approx(q, rel=1e-9)
        assert traj.var[0] == pytest.approx(s)  # the first step sees the input alone
    else:
        assert q == math.inf
        traj = th.hidden_trajectory(field, 30, "rnn_linear")
        assert traj.second[-1] == pytest.approx(
            s * 30 if g == 1.0 else s * sum(g ** (2 * k) for k in range(30)), rel=1e-9
        )
    pred = th.predict("adding", "rnn_linear", 64, 20, "xavier", recurrent_scale=max(g, 1e-3))
    assert pred.applies and pred.critical_gain == 1.0
    assert "linear" in pred.note


@functools.cache
def _linear_pack(scale: float) -> Run:
    specs = [
        TrialSpec(init="xavier", recurrent_scale=scale, seed=s, hidden=N, cell="rnn_linear")
        for s in (0, 1, 2, 3)
    ]
    return _run("rnn_linear", _gauss_x(32), specs)


@pytest.mark.parametrize(("scale", "rtol"), [(0.5, 0.06), (0.9, 0.05), (1.1, 0.10)])
def test_linear_hidden_variance_and_chi(scale: float, rtol: float) -> None:
    # No nonlinearity: the recursion is the second moment's own, step by step, including
    # the transient and a growing state (g > 1). What is left is the i.i.d. approximation
    # (E over Whh of |h Whh^k|^2 is g^(2k) |h|^2 up to O(k/N)) and the draw: 4 draws of
    # N = 512, 32 sequences. Measured: within 4.3% at g = 0.5 and 2% at 0.9; at g = 1.1
    # the state grows as the largest eigenvalues of the one draw do, 8% above the mean
    # field by step 23.
    run = _linear_pack(scale)
    field = th.mean_field(GAUSS_STATS, N, "xavier", recurrent_scale=scale)
    traj = th.hidden_trajectory(field, T, "rnn_linear")
    measured = run.var.mean(axis=0)
    np.testing.assert_allclose(measured, np.array(traj.var), rtol=rtol)
    assert run.grad2 is not None  # chi = g^2: the squared gradient norm per step
    measured_chi = float(np.mean([_grad_chi(g) for g in run.grad2]))
    assert measured_chi == pytest.approx(th.fixed_point(field, "rnn_linear")[1], rel=0.05)


@pytest.mark.parametrize(("inputs", "scale"), [("gauss", 0.5), ("gauss", 1.0), ("adding", 1.0)])
def test_relu_hidden_variance_and_chi(inputs: str, scale: float) -> None:
    # ReLU's h has a nonzero mean, so the column sums of the one fixed Whh act as a bias
    # per unit: the variance differs by +-8% from draw to draw at N = 512 (+-1% for tanh)
    # and shrinks with N (+-1% at N = 2048). Averaged over 4 draws (+-4%): 10%, and 15% for
    # the adding task, whose two-channel input has a sign per unit (u >= 0), a further +5%.
    run = _relu_pack(inputs, scale)
    stats = th.input_moments("adding", T) if inputs == "adding" else GAUSS_STATS
    field = th.mean_field(stats, N, "xavier", scale=scale)
    traj = th.hidden_trajectory(field, T, "rnn_relu")
    measured = float(run.var[:, WINDOW].mean())
    predicted = float(np.mean(traj.var[WINDOW]))
    assert measured == pytest.approx(predicted, rel=0.10 if inputs == "gauss" else 0.15)
    if run.grad2 is not None:
        # chi = g^2 / 2 (relu' is 1 on half the units); 5%: per-draw spread of ~2%
        measured_chi = float(np.mean([_grad_chi(g) for g in run.grad2]))
        assert measured_chi == pytest.approx(th.relu_chi(field.gain), rel=0.05)


@pytest.mark.parametrize("hidden", [32, 512])
def test_uniform01_saturates(hidden: int) -> None:
    x = _adding_x(64)
    run = _run("rnn_tanh", x, [TrialSpec(init="uniform01", hidden=hidden)], grads=False)
    pred = th.predict("adding", "rnn_tanh", hidden, T, "uniform01")
    # step 0 sees only the input: pre <= u + m <= 2 < atanh(0.99), so nothing saturates
    assert run.sat[0, 0] == 0.0 and pred.hidden_sat[0] < 1e-3
    # after it, the common drive N/2 E[h] saturates every unit: predicted ~1 from step 1.
    # Measured, step 1 is 0.98 at N = 512 but 0.74 at N = 32, where a sequence with a small
    # u_0 needs a step longer (the mean field sees the average sequence only); from step 2
    # on all units saturate at both sizes (0.99: a margin for 1 unit in 100)
    assert min(pred.hidden_sat[1:]) > 0.99
    assert run.sat[0, 1] >= (0.95 if hidden == 512 else 0.5)
    assert run.sat[0, 2:].min() >= 0.99
    assert run.var[0, 3:].max() < 1e-3 and max(pred.hidden_var[2:]) < 1e-3
    assert pred.applies and "nonzero-mean" in pred.note


@pytest.mark.parametrize("hidden", [64, 256])
@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_uniform01_perron_root(hidden: int, scale: float) -> None:
    # the outlier sits at N scale/2 + 1^T D 1/N (D the zero-mean part): standard deviation
    # scale/sqrt(12) = the entry's (not the symmetric case's +scale/6 shift); 5 of them
    for seed in (0, 1):
        model = PackedRNN(1, "rnn_tanh", 2, hidden, 1)
        init_weights(model, [TrialSpec(init="uniform01", scale=scale, seed=seed, hidden=hidden)])
        radius = float(torch.linalg.eigvals(model.Whh[0].detach()).abs().max())
        pred = th.predict("adding", "rnn_tanh", hidden, T, "uniform01", scale=scale)
        assert pred.perron_root == th.perron_root(hidden, scale)
        assert radius == pytest.approx(pred.perron_root, abs=5 * scale / math.sqrt(12))


@pytest.mark.parametrize("init", ["xavier", "glorot_uniform", "orthogonal", "identity"])
def test_spectral_radius_zero_mean(init: str) -> None:
    # circular law: radius -> g at large N; at N = 256 the edge still wanders by a few %,
    # so 8%; orthogonal and identity have every eigenvalue at |scale| exactly
    model = PackedRNN(1, "rnn_tanh", 2, 256, 1)
    init_weights(model, [TrialSpec(init=init, scale=1.3, hidden=256)])
    radius = float(torch.linalg.eigvals(model.Whh[0].detach()).abs().max())
    pred = th.predict("adding", "rnn_tanh", 256, T, init, scale=1.3)
    exact = init in ("orthogonal", "identity")
    assert radius == pytest.approx(pred.perron_root, rel=1e-4 if exact else 0.08)  # float32 eig


# --------------------------------------------------------------------------- predict


@pytest.mark.parametrize("cell", sorted(CELLS))
@pytest.mark.parametrize("init", sorted(INIT_SCHEMES))
def test_predict_covers_the_registries(cell: str, init: str) -> None:
    pred = th.predict("copy", cell, 32, 10, init)
    assert len(pred.hidden_var) == len(pred.hidden_sat) == 30  # the copy task's T + 20 steps
    elman = cell in th.ELMAN_CELLS
    assert pred.applies == (elman and init != "identity")
    if not pred.applies:
        assert pred.note  # it says why
    assert math.isfinite(pred.gain) and math.isfinite(pred.perron_root)
    if pred.applies:
        assert all(0.0 <= s <= 1.0 for s in pred.hidden_sat)
        assert all(v >= 0.0 for v in pred.hidden_var)
    else:
        assert all(math.isnan(v) for v in pred.hidden_var)


def test_predict_is_cheap_and_cached() -> None:
    th.predict.cache_clear()
    th._predict.cache_clear()
    th._tanh_critical_gain.cache_clear()
    start = time.perf_counter()
    for scale in (0.5, 0.8, 1.0, 1.25, 2.0, 4.0):
        th.predict("adding", "rnn_tanh", 64, 60, "xavier", scale=scale)
    per_call = (time.perf_counter() - start) / 6
    # ~1-3 ms each uncached on an idle core; 50 ms leaves room for a loaded test machine
    assert per_call < 0.05
    first = th.predict("adding", "rnn_tanh", 64, 60, "xavier", scale=2.0)
    assert th.predict("adding", "rnn_tanh", 64, 60, "xavier", scale=2.0) is first


def test_predict_recurrent_scale_and_relu() -> None:
    base = th.predict("adding", "rnn_tanh", 64, 30, "xavier", scale=1.0)
    hot = th.predict("adding", "rnn_tanh", 64, 30, "xavier", scale=1.0, recurrent_scale=2.0)
    assert hot.gain == pytest.approx(2.0) and hot.input_drive == base.input_drive
    assert hot.chi > 1 > base.chi
    he = th.predict("adding", "rnn_relu", 64, 30, "he_normal")
    assert he.chi == pytest.approx(1.0) and he.critical_gain == pytest.approx(math.sqrt(2))
    assert he.q_star == math.inf  # at the ReLU edge the variance grows without bound
    exploding = th.predict("adding", "rnn_relu", 512, 30, "uniform01")
    assert exploding.hidden_var[-1] > 1e30 and exploding.hidden_sat[-1] == 1.0


def test_predict_takes_table_values() -> None:
    # a results table gives numpy scalars, and NaN where a value is missing
    plain = th.predict("adding", "rnn_tanh", 64, 30, "xavier", None, 1.25, None)
    row = th.predict(
        task="adding",
        cell="rnn_tanh",
        hidden=np.int64(64),
        seq_len=np.int64(30),
        init="xavier",
        init_recurrent=math.nan,
        scale=np.float64(1.25),
        recurrent_scale=math.nan,
        corpus=math.nan,
    )
    assert row == plain
    assert th.input_moments("adding", 2).points  # T = 2: both steps marked, one-sided points


def test_predict_rejects() -> None:
    with pytest.raises(ValueError, match="unknown cell 'rnn'"):
        th.predict("adding", "rnn", 64, 10, "xavier")
    with pytest.raises(ValueError, match="unknown init scheme"):
        th.predict("adding", "rnn_tanh", 64, 10, "xavier", init_recurrent="he")
    with pytest.raises(ValueError, match="hidden must be an integer >= 1"):
        th.predict("adding", "rnn_tanh", 0, 10, "xavier")
    with pytest.raises(ValueError, match="scale must be finite"):
        th.predict("adding", "rnn_tanh", 64, 10, "xavier", scale=math.inf)
    with pytest.raises(ValueError, match="s must be >= 0"):
        th.critical_gain(-0.1)

"""Tests for models/init.py: the init scheme registry."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from scipy.stats import ks_2samp

from models.init import (
    INIT_SCHEMES,
    ROLES,
    get_init_scheme,
    init_bias,
    init_matrix,
)

ALL_NAMES = sorted(INIT_SCHEMES)
SHAPES = {"input": (7, 5), "recurrent": (6, 6), "output": (5, 3)}


def gen(seed: int) -> torch.Generator:
    """A fresh CPU generator seeded with ``seed``."""
    return torch.Generator().manual_seed(seed)


def draw(name: str, fan_in: int, fan_out: int, role: str, seed: int = 0, scale: float = 1.0):
    return init_matrix(name, fan_in, fan_out, role=role, scale=scale, generator=gen(seed))


# --------------------------------------------------------------------------- plug-in API


@pytest.mark.parametrize("name", ALL_NAMES)
def test_scheme_signature_and_docstring(name: str) -> None:
    fn = INIT_SCHEMES[name]
    params = inspect.signature(fn).parameters
    assert list(params) == ["fan_in", "fan_out", "role", "scale", "generator"]
    for kw in ("role", "scale", "generator"):
        assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY
    assert fn.__doc__ and fn.__doc__.strip()


def test_every_role_draws_and_an_unknown_role_is_refused_by_name() -> None:
    for role in ROLES:
        fan_in, fan_out = SHAPES[role]  # SHAPES must know every role init_matrix accepts
        assert draw("xavier", fan_in, fan_out, role).shape == (fan_in, fan_out)
    for bad in ("hidden", "Recurrent", ""):
        with pytest.raises(ValueError, match=f"unknown role {bad!r}; allowed: input, recurrent"):
            draw("xavier", 4, 4, bad)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("role", ROLES)
def test_shape_dtype_device(name: str, role: str) -> None:
    fan_in, fan_out = SHAPES[role]
    w = draw(name, fan_in, fan_out, role)
    assert w.shape == (fan_in, fan_out)
    assert w.dtype == torch.float32
    assert w.device.type == "cpu"
    assert torch.isfinite(w).all()


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("role", ROLES)
def test_reproducible(name: str, role: str) -> None:
    fan_in, fan_out = SHAPES[role]
    a = draw(name, fan_in, fan_out, role, seed=1)
    b = draw(name, fan_in, fan_out, role, seed=1)
    c = draw(name, fan_in, fan_out, role, seed=2)
    assert torch.equal(a, b)
    if name == "identity" and role == "recurrent":
        assert torch.equal(a, c)
    else:
        assert not torch.equal(a, c)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("role", ROLES)
def test_randomness_only_from_generator(name: str, role: str) -> None:
    fan_in, fan_out = SHAPES[role]
    with torch.random.fork_rng():
        torch.manual_seed(123)
        state = torch.get_rng_state()
        a = draw(name, fan_in, fan_out, role, seed=5)
        assert torch.equal(torch.get_rng_state(), state), "scheme touched the global RNG"
        torch.manual_seed(456)
        b = draw(name, fan_in, fan_out, role, seed=5)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ALL_NAMES)
@pytest.mark.parametrize("role", ROLES)
def test_scale_multiplies(name: str, role: str) -> None:
    fan_in, fan_out = SHAPES[role]
    one = draw(name, fan_in, fan_out, role, seed=3, scale=1.0)
    assert one.abs().max() > 0
    assert torch.equal(draw(name, fan_in, fan_out, role, seed=3, scale=2.0), 2 * one)
    neg = draw(name, fan_in, fan_out, role, seed=3, scale=-0.5)
    torch.testing.assert_close(neg, -0.5 * one, rtol=1e-6, atol=0.0)
    assert torch.equal(
        draw(name, fan_in, fan_out, role, seed=3, scale=0.0).abs(), torch.zeros(fan_in, fan_out)
    )


# --------------------------------------------------------------------------- statistics

_U = 1.0 / math.sqrt(3.0)  # std of U(-1, 1)

# (name, role, fan_in, fan_out, expected mean, expected std)
STATS = [
    ("xavier", "input", 2000, 500, 0.0, math.sqrt(1 / 2000)),
    ("xavier", "recurrent", 500, 2000, 0.0, math.sqrt(1 / 500)),
    ("glorot_normal", "input", 2000, 500, 0.0, math.sqrt(2 / 2500)),
    ("glorot_uniform", "input", 2000, 500, 0.0, math.sqrt(6 / 2500) * _U),
    ("he_normal", "input", 2000, 500, 0.0, math.sqrt(2 / 2000)),
    ("he_normal", "output", 500, 2000, 0.0, math.sqrt(2 / 500)),
    ("orthogonal", "recurrent", 1000, 1000, 0.0, math.sqrt(1 / 1000)),
    ("orthogonal", "input", 2000, 500, 0.0, math.sqrt(1 / 2000)),
    ("orthogonal", "input", 500, 2000, 0.0, math.sqrt(1 / 2000)),
    ("identity", "input", 2000, 500, 0.0, 0.001),
    ("identity", "output", 500, 2000, 0.0, 0.001),
    ("uniform01", "recurrent", 1000, 1000, 0.5, math.sqrt(1 / 12)),
    ("normal001", "input", 2000, 500, 0.0, 0.01),
    ("torch_default", "input", 2000, 500, 0.0, _U / math.sqrt(500)),
    ("torch_default", "recurrent", 1000, 1000, 0.0, _U / math.sqrt(1000)),
    ("torch_default", "output", 2000, 500, 0.0, _U / math.sqrt(2000)),
]


def test_stats_table_covers_every_scheme() -> None:
    assert {row[0] for row in STATS} == set(INIT_SCHEMES)


@pytest.mark.parametrize(("name", "role", "fan_in", "fan_out", "mean", "std"), STATS)
def test_statistics(name: str, role: str, fan_in: int, fan_out: int, mean: float, std: float):
    w = draw(name, fan_in, fan_out, role, seed=11).double()
    n = w.numel()
    # 6-sigma bounds from the sample size: sd(mean) = std/sqrt(n); sd(std) <= std/sqrt(2n)
    # (equality for Gaussians; uniforms and orthogonal entries fluctuate less).
    assert abs(w.mean().item() - mean) < 6 * std / math.sqrt(n)
    assert abs(w.std().item() - std) < 6 * std / math.sqrt(2 * n)


def test_identity_recurrent_is_exactly_identity() -> None:
    w = draw("identity", 300, 300, "recurrent")
    assert torch.equal(w, torch.eye(300))
    assert torch.equal(draw("identity", 4, 4, "recurrent", scale=0.5), 0.5 * torch.eye(4))


def test_identity_recurrent_must_be_square() -> None:
    with pytest.raises(ValueError, match="square"):
        draw("identity", 4, 5, "recurrent")
    assert draw("identity", 4, 5, "input").shape == (4, 5)


@pytest.mark.parametrize(
    ("name", "role", "low", "high"),
    [
        ("glorot_uniform", "input", -math.sqrt(6 / 2500), math.sqrt(6 / 2500)),
        ("uniform01", "input", 0.0, 1.0),
        ("torch_default", "input", -1 / math.sqrt(500), 1 / math.sqrt(500)),
        ("torch_default", "recurrent", -1 / math.sqrt(500), 1 / math.sqrt(500)),
        ("torch_default", "output", -1 / math.sqrt(2000), 1 / math.sqrt(2000)),
    ],
)
def test_uniform_bounds(name: str, role: str, low: float, high: float) -> None:
    fan_in, fan_out = (500, 500) if role == "recurrent" else (2000, 500)
    w = draw(name, fan_in, fan_out, role, seed=4)
    width = high - low
    assert w.min().item() >= low
    assert w.max().item() <= high
    assert w.min().item() < low + 1e-3 * width
    assert w.max().item() > high - 1e-3 * width


# --------------------------------------------------------------------------- orthogonal


@pytest.mark.parametrize(("fan_in", "fan_out"), [(64, 64), (80, 30), (30, 80)])
def test_orthogonal_is_orthogonal(fan_in: int, fan_out: int) -> None:
    w = draw("orthogonal", fan_in, fan_out, "recurrent", seed=7).double()
    if fan_in >= fan_out:
        gram, k = w.T @ w, fan_out
    else:
        gram, k = w @ w.T, fan_in
    torch.testing.assert_close(gram, torch.eye(k, dtype=torch.float64), atol=1e-5, rtol=0)


def test_orthogonal_sign_correction_is_unbiased() -> None:
    # Without the sign correction, Householder QR makes Q[0, 0] negative every time;
    # with it, Q is Haar-distributed and Q[0, 0] is symmetric about 0.
    g = gen(0)
    first = torch.stack(
        [
            INIT_SCHEMES["orthogonal"](8, 8, role="recurrent", scale=1.0, generator=g)[0, 0]
            for _ in range(200)
        ]
    )
    frac_positive = (first > 0).double().mean().item()
    assert 0.35 < frac_positive < 0.65


# --------------------------------------------------------------------------- spectra


def spectral_radius(w: torch.Tensor) -> float:
    return torch.linalg.eigvals(w.double()).abs().max().item()


@pytest.mark.slow  # eigenvalues of large matrices: seconds
def test_spectral_radius_xavier_close_to_one() -> None:
    # Circular law: N(0, 1/N) entries -> eigenvalues fill the unit disk.
    assert abs(spectral_radius(draw("xavier", 500, 500, "recurrent", seed=0)) - 1.0) < 0.1


@pytest.mark.slow  # eigenvalues of large matrices: seconds
def test_spectral_radius_uniform01_close_to_half_n() -> None:
    # Perron root of a positive matrix with mean entry 1/2 is about N/2.
    n = 500
    rho = spectral_radius(draw("uniform01", n, n, "recurrent", seed=0))
    assert abs(rho - n / 2) < 0.03 * n / 2


def test_spectral_radius_orthogonal_is_one() -> None:
    w = draw("orthogonal", 200, 200, "recurrent", seed=0).double()
    moduli = torch.linalg.eigvals(w).abs()
    torch.testing.assert_close(moduli, torch.ones(200, dtype=torch.float64), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- vs torch


def test_glorot_uniform_matches_torch_xavier_uniform() -> None:
    fan_in, fan_out = 200, 300
    a = math.sqrt(6 / (fan_in + fan_out))
    ours = draw("glorot_uniform", fan_in, fan_out, "input", seed=21).flatten()
    ref = torch.empty(fan_out, fan_in)
    torch.nn.init.xavier_uniform_(ref, generator=gen(22))
    ref = ref.flatten()
    assert ours.abs().max().item() <= a
    assert ours.abs().max().item() > a * (1 - 1e-3)
    assert ref.abs().max().item() <= a
    assert ks_2samp(ours.numpy(), ref.numpy()).pvalue > 0.01
    assert abs(ours.std().item() / ref.std().item() - 1) < 0.02
    # The KS test has power: a Gaussian of the same variance is rejected.
    normal = draw("glorot_normal", fan_in, fan_out, "input", seed=21).flatten()
    assert ks_2samp(normal.numpy(), ref.numpy()).pvalue < 0.01


def test_torch_default_matches_nn_rnn() -> None:
    input_size, hidden, out = 40, 256, 10
    with torch.random.fork_rng():
        torch.manual_seed(0)
        rnn = torch.nn.RNN(input_size, hidden)
        head = torch.nn.Linear(hidden, out)
    # nn.RNN stores (out_features, in_features); ours is (fan_in, fan_out).
    pairs = [
        ("recurrent", hidden, hidden, rnn.get_parameter("weight_hh_l0")),
        ("input", input_size, hidden, rnn.get_parameter("weight_ih_l0")),
        ("output", hidden, out, head.weight),
    ]
    for role, fan_in, fan_out, ref in pairs:
        ours = draw("torch_default", fan_in, fan_out, role, seed=1)
        k = 1 / math.sqrt(hidden)
        assert ours.abs().max().item() <= k
        assert ours.abs().max().item() > 0.98 * k
        assert ks_2samp(ours.flatten().numpy(), ref.detach().flatten().numpy()).pvalue > 0.01
    # Bias: nn.RNN draws U(-1/sqrt(hidden), 1/sqrt(hidden)) too.
    bias = init_bias("torch_default", hidden, hidden=hidden, generator=gen(1))
    ref_bias = torch.cat([rnn.get_parameter("bias_ih_l0"), rnn.get_parameter("bias_hh_l0")])
    ref_bias = ref_bias.detach()
    assert ks_2samp(bias.numpy(), ref_bias.numpy()).pvalue > 0.01
    # Power check: weights 2x too large are rejected against nn.RNN's.
    wrong = draw("torch_default", hidden, hidden, "recurrent", seed=1, scale=2.0)
    ref_hh = rnn.get_parameter("weight_hh_l0").detach().flatten()
    pvalue = ks_2samp(wrong.flatten().numpy(), ref_hh.numpy()).pvalue
    assert pvalue < 0.01


# --------------------------------------------------------------------------- validation


def test_get_init_scheme_known() -> None:
    for name, fn in INIT_SCHEMES.items():
        assert get_init_scheme(name) is fn


def test_get_init_scheme_unknown_lists_known_names() -> None:
    with pytest.raises(ValueError) as exc:
        get_init_scheme("kaiming_magic")
    msg = str(exc.value)
    assert "'kaiming_magic'" in msg
    assert msg.endswith(", ".join(sorted(INIT_SCHEMES)))
    for name in INIT_SCHEMES:
        assert name in msg
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_matrix("nope", 3, 3, role="input", scale=1.0, generator=gen(0))


def test_bad_role_raises() -> None:
    with pytest.raises(ValueError) as exc:
        init_matrix("xavier", 3, 3, role="hidden", scale=1.0, generator=gen(0))
    for role in ROLES:
        assert role in str(exc.value)
    with pytest.raises(ValueError, match="role"):
        INIT_SCHEMES["torch_default"](3, 3, role="hidden", scale=1.0, generator=gen(0))


@pytest.mark.parametrize(("fan_in", "fan_out"), [(0, 3), (3, 0), (-1, 3)])
def test_bad_fans_raise(fan_in: int, fan_out: int) -> None:
    with pytest.raises(ValueError, match="fan_"):
        init_matrix("xavier", fan_in, fan_out, role="input", scale=1.0, generator=gen(0))


@pytest.mark.parametrize("scale", [math.nan, math.inf, -math.inf])
def test_non_finite_scale_raises(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        init_matrix("xavier", 3, 3, role="input", scale=scale, generator=gen(0))


def test_bad_generator_raises() -> None:
    with pytest.raises(TypeError, match="generator"):
        init_matrix("xavier", 3, 3, role="input", scale=1.0, generator=0)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- biases


@pytest.mark.parametrize("name", [n for n in ALL_NAMES if n != "torch_default"])
def test_init_bias_zeros(name: str) -> None:
    g = gen(0)
    state = g.get_state()
    b = init_bias(name, 17, hidden=64, generator=g)
    assert b.shape == (17,)
    assert b.dtype == torch.float32
    assert torch.equal(b, torch.zeros(17))
    assert torch.equal(g.get_state(), state)


def test_init_bias_torch_default_in_bounds() -> None:
    hidden = 64
    k = 1 / math.sqrt(hidden)
    b = init_bias("torch_default", 4096, hidden=hidden, generator=gen(0))
    assert b.shape == (4096,)
    assert b.dtype == torch.float32
    assert b.abs().max().item() <= k
    assert b.abs().max().item() > 0.99 * k
    assert abs(b.mean().item()) < 6 * k * _U / math.sqrt(4096)
    assert torch.equal(b, init_bias("torch_default", 4096, hidden=hidden, generator=gen(0)))
    assert not torch.equal(b, init_bias("torch_default", 4096, hidden=hidden, generator=gen(1)))


def test_init_bias_validation() -> None:
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_bias("nope", 3, hidden=3, generator=gen(0))
    with pytest.raises(ValueError, match="size"):
        init_bias("xavier", 0, hidden=3, generator=gen(0))
    with pytest.raises(ValueError, match="hidden"):
        init_bias("torch_default", 3, hidden=0, generator=gen(0))

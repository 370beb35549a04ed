"""Activations, std/var and norm at extreme inputs: sweeps against float64 NumPy, and torch's values
at ±inf / NaN / huge magnitudes (skipped cleanly without torch). Gradients too: where torch's
subgradient is 0 (std of a constant row, norm at zero) mmu must not give NaN."""
import math

import numpy as np
import pytest

import mmu
import mmu.functional as F  # noqa: N812
from gradcheck import assert_close, torch_or_skip

FLT_MIN = float(np.finfo(np.float32).tiny)


def _fwd_bwd(fn, x):
    t = mmu.tensor(np.asarray(x, np.float32), requires_grad=True)
    y = fn(t)
    y.sum().backward()
    return y.numpy().astype(np.float64), t.grad.numpy().astype(np.float64)


# ------------------------------------------------------------------ softplus
def np_softplus(x, beta, threshold):
    """torch's rule in float64: z = beta·x (rounded to float32 like torch), x where z > threshold."""
    x = x.astype(np.float64)
    z = (x.astype(np.float32) * np.float32(beta)).astype(np.float64)
    y = np.where(z > threshold, x, (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))) / beta)
    e = np.exp(-np.abs(z))
    g = np.where(z > threshold, 1.0, np.where(z >= 0, 1.0, e) / (1.0 + e))
    return y, g


@pytest.mark.parametrize("beta,threshold", [(1.0, 20.0), (2.0, 20.0), (0.5, 5.0), (1.0, 1e30), (-1.5, 20.0)])
def test_softplus_relative_accuracy_over_the_whole_range(beta, threshold):
    """Before the C softplus: 3.7e-6 at x = -14 (true 8.3e-7) and a floor of 1.4e-6 below -20."""
    x = np.linspace(-120.0, 40.0, 3201).astype(np.float32)
    y, g = _fwd_bwd(lambda t: F.softplus(t, beta, threshold), x)
    ry, rg = np_softplus(x, beta, threshold)
    ok = np.abs(ry) > FLT_MIN  # exp(z) below FLT_MIN flushes to 0 (torch keeps denormals)
    assert_close(y[ok], ry[ok], rtol=5e-7, atol=0, what="softplus")
    assert np.all(np.abs(y[~ok]) <= FLT_MIN)
    okg = np.abs(rg) > FLT_MIN
    assert_close(g[okg], rg[okg], rtol=5e-7, atol=0, what="softplus grad")


def test_softplus_at_minus_14_and_the_gan_losses_helper():
    ref = math.log1p(math.exp(-14.0))
    assert abs(F.softplus(mmu.tensor([-14.0])).item() - ref) < 1e-6 * ref
    assert abs(mmu.losses.softplus(mmu.tensor([-14.0])).item() - ref) < 1e-6 * ref
    assert abs(mmu.losses.softplus(mmu.tensor([-30.0])).item() - math.exp(-30.0)) < 1e-6 * math.exp(-30.0)


def test_softplus_nonfinite_and_module():
    x = [-np.inf, np.inf, np.nan, 0.0]
    y, g = _fwd_bwd(F.softplus, x)
    assert y[0] == 0 and y[1] == np.inf and np.isnan(y[2]) and y[3] == pytest.approx(math.log(2))
    assert g[0] == 0 and g[1] == 1 and np.isnan(g[2]) and g[3] == 0.5
    m = mmu.nn.Softplus(beta=2.0, threshold=3.0)
    assert "beta=2.0" in repr(m)
    assert_close(m(mmu.tensor([1.0, 2.0])).numpy(), [math.log1p(math.exp(2.0)) / 2, 2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="softplus"):
        F.softplus(mmu.tensor([1.0]), beta=0)
    with pytest.raises(TypeError, match="Softplus"):
        mmu.nn.Softplus(beta="2")


def test_softplus_double_backward_matches_second_derivative():
    x = mmu.tensor(np.array([-3.0, -0.5, 0.0, 1.0, 25.0], np.float32), requires_grad=True)
    (g,) = mmu.autograd.grad(F.softplus(x).sum(), [x], create_graph=True)
    (gg,) = mmu.autograd.grad(g.sum(), [x])
    s = 1 / (1 + np.exp(-x.detach().numpy().astype(np.float64)))
    s[-1] = 1.0  # above the threshold: the identity, second derivative 0
    assert_close(g.numpy(), s, rtol=1e-6, atol=1e-7)
    expect = s * (1 - s)
    expect[-1] = 0.0
    assert_close(gg.numpy(), expect, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------- other activations
EXTREMES = np.array([-np.inf, -1e30, -100.0, -88.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 88.0, 100.0, 1e30,
                     np.inf, np.nan], np.float32)


def test_gelu_at_plus_inf_is_inf():
    """oneDNN's gelu_erf gave NaN at +inf (torch's float64 / scalar path: inf), at every size."""
    for n in (1, 7, 16, 33):
        x = np.full(n, np.inf, np.float32)
        assert np.all(F.gelu(mmu.tensor(x)).numpy() == np.inf)
        assert np.all(F.gelu(mmu.tensor(x), approximate="tanh").numpy() == np.inf)
    assert F.gelu(mmu.tensor([1e30, 50.0])).numpy().tolist() == [float(np.float32(1e30)), 50.0]


def _torch_acts(torch):
    tf = torch.nn.functional
    return {
        "gelu": (F.gelu, tf.gelu),
        "gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), lambda t: tf.gelu(t, approximate="tanh")),
        "silu": (F.silu, tf.silu), "sigmoid": (F.sigmoid, torch.sigmoid), "tanh": (F.tanh, torch.tanh),
        "relu": (F.relu, torch.relu), "exp": (mmu.exp, torch.exp),
        "leaky_relu": (lambda t: F.leaky_relu(t, 0.2), lambda t: tf.leaky_relu(t, 0.2)),
        "softplus": (F.softplus, tf.softplus),
        "softplus_beta": (lambda t: F.softplus(t, 2.0, 10.0), lambda t: tf.softplus(t, 2.0, 10.0)),
    }


@pytest.mark.parametrize("name", ["gelu", "gelu_tanh", "silu", "sigmoid", "tanh", "relu", "exp", "leaky_relu",
                                  "softplus", "softplus_beta"])
def test_activations_at_extremes_match_torch_float64(name):
    """Values and gradients at ±inf, ±1e30, ±100, NaN... equal torch's float64 results (rounded to
    float32), NaN where torch gives NaN (gelu(-inf), silu(-inf), every gradient at ±inf of x·f(x)).
    torch's own float32 vector path is not the reference: it gives gelu(+inf) = NaN."""
    torch = torch_or_skip()
    mf, tf = _torch_acts(torch)[name]
    y, g = _fwd_bwd(mf, EXTREMES)
    t = torch.tensor(EXTREMES.astype(np.float64), requires_grad=True)
    ty = tf(t)
    ty.sum().backward()
    with np.errstate(over="ignore"):  # exp(100) is inf in float32
        ry = ty.detach().numpy().astype(np.float32).astype(np.float64)
        rg = t.grad.numpy().astype(np.float32).astype(np.float64)
    # exp(-88) and below sit at the float32 denormal edge: mmu flushes them to 0
    assert_close(y, ry, rtol=2e-6, atol=1e-36, what=f"{name} forward")
    # sigmoid and tanh differentiate from their output, y·(1 - y) and 1 - y², which round to 0
    # once y rounds to 1 (x > 16.6 / 9), as torch's float32 backward does: an absolute tolerance
    assert_close(g, rg, rtol=2e-6, atol=1e-8, what=f"{name} backward")


# -------------------------------------------------------------- std, var, norm
@pytest.mark.parametrize("fn", ["std", "var"])
@pytest.mark.parametrize("correction", [0, 1])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (1, False), (1, True), ((0, 1), False)])
def test_std_var_of_constant_rows_have_zero_gradient(fn, correction, dim, keepdim):
    """std(correction=0) of a constant row gave NaN gradients (sqrt'(0) · 0); torch's is 0."""
    a = np.array([[3.0, 3.0, 3.0], [1.0, 2.0, 4.0]], np.float32)
    if dim is None or dim == (0, 1):
        a[1] = 3.0  # the whole tensor is constant
    y, g = _fwd_bwd(lambda t: getattr(mmu, fn)(t, dim, correction=correction, keepdim=keepdim), a)
    ref = getattr(np, fn)(a.astype(np.float64), axis=dim, ddof=correction, keepdims=keepdim)
    assert_close(y, ref, rtol=1e-6, atol=1e-6)
    if fn == "std" and dim == 1:  # the non-constant row: d std / dx = (x - mean) / ((n - c) std)
        c = a[1].astype(np.float64) - a[1].mean()
        assert_close(g[1], c / ((3 - correction) * ref.reshape(-1)[1]), rtol=1e-5, atol=1e-6)
    constant = g[0] if dim == 1 else g
    assert np.all(constant == 0), f"{fn} gradient of a constant row: {g}"


def _same(got, want, what):
    """Equal up to float32 rounding, with inf and NaN in the same places (signs of inf included)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-6, equal_nan=True), \
        f"{what}: got {got.ravel()}, want {want.ravel()}"


def test_var_without_degrees_of_freedom_has_torchs_gradient():
    """N - correction <= 0: the composed gradient was NaN everywhere (inf - inf through the mean's
    term); torch's var_backward gives grad·(inf or NaN at x == mean) over the whole tensor, and
    grad·2/(N - correction)·(x - mean) with explicit dims (±inf at 0, finite below 0)."""
    inf, nan = np.inf, np.nan
    a = np.float32([1.0, 2.0, 3.0])
    for correction in (3, 4):  # whole tensor: +inf·grad whatever the sign of x - mean, NaN at x == mean
        y, g = _fwd_bwd(lambda t: mmu.var(t, correction=correction), a)
        _same(y, inf, "var value")
        _same(g, [inf, nan, inf], f"var grad, correction={correction}")
    y, g = _fwd_bwd(lambda t: mmu.var(t, 0, correction=3), a)  # dim given, N - c == 0: ±inf
    _same(g, [-inf, nan, inf], "var grad, dim=0, correction=3")
    y, g = _fwd_bwd(lambda t: mmu.var(t, 0, correction=5), a)  # N - c = -2: finite, 2/(-2)·(x - mean)
    _same(y, inf, "var value")
    _same(g, [1.0, 0.0, -1.0], "var grad, dim=0, correction=5")
    y, g = _fwd_bwd(lambda t: mmu.std(t, 0, correction=5), a)  # std: grad_var = grad / (2·inf) = 0
    _same(g, [0.0, 0.0, 0.0], "std grad, dim=0, correction=5")
    y, g = _fwd_bwd(lambda t: mmu.var(t, correction=1), np.float32([3.0]))  # one element: NaN as torch
    _same(y, nan, "var of one element")
    _same(g, [nan], "var grad of one element")


def test_var_std_without_degrees_of_freedom_match_torch():
    torch = torch_or_skip()
    import itertools
    import warnings
    arrays = [np.float32([1, 2, 4]), np.float32([[1, 2, 3], [5, 5, 5]]), np.float32(2.5), np.float32([[1], [1]])]
    for fn, a in itertools.product(("var", "std"), arrays):
        # (dim=() is left out: torch's backward divides by 1 - correction there, not by N - correction)
        dims = [None] + list(range(-a.ndim, a.ndim)) + ([tuple(range(a.ndim))] if a.ndim else [])
        for dim, correction, keepdim in itertools.product(dims, range(0, 6), (False, True)):
            t = torch.tensor(a, requires_grad=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "degrees of freedom is <= 0"
                ty = getattr(torch, fn)(t, dim=dim, correction=correction, keepdim=keepdim)
            weight = -torch.arange(1.0, ty.numel() + 1).reshape(ty.shape)  # a grad of either sign
            (ty * weight).sum().backward()
            x = mmu.tensor(a, requires_grad=True)
            y = getattr(mmu, fn)(x, dim, correction=correction, keepdim=keepdim)
            (y * mmu.tensor(weight.numpy())).sum().backward()
            what = f"{fn}({a.tolist()}, dim={dim}, correction={correction}, keepdim={keepdim})"
            _same(y.detach().numpy(), ty.detach().numpy(), what)
            _same(x.grad.numpy(), t.grad.numpy(), what + " grad")


@pytest.mark.parametrize("p", [2, 1, 3, 1.5, 0.5, np.inf, -np.inf, 0, "fro"])
def test_norm_values_and_zero_subgradient(p):
    """norm at the zero vector (and at zero entries) has gradient 0 for every p, as torch; values
    against NumPy's vector norms."""
    a = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, -2.0]], np.float32)
    y, g = _fwd_bwd(lambda t: mmu.norm(t, p, dim=1), a)
    pn = 2 if p == "fro" else p
    assert_close(y, np.linalg.norm(a.astype(np.float64), ord=pn, axis=1), rtol=1e-6, atol=1e-7)
    assert np.all(np.isfinite(g)) and np.all(g[0] == 0) and g[1, 0] == 0
    nz = np.array([1.0, -2.0])
    if pn not in (0, np.inf, -np.inf):  # d/dx ||x||_p = sign(x) |x|^(p-1) / ||x||^(p-1)
        expect = np.sign(nz) * np.abs(nz) ** (pn - 1) / y[1] ** (pn - 1)
        assert_close(g[1, 1:], expect, rtol=1e-5, atol=1e-7)
    y0, g0 = _fwd_bwd(lambda t: mmu.norm(t, p), np.zeros(4, np.float32))
    assert y0 == 0 and np.all(g0 == 0)


def test_norm_std_match_torch_at_zero():
    torch = torch_or_skip()
    a = np.array([[0.0, 0.0, 0.0], [3.0, -1.0, 0.5]], np.float32)
    for p in (2, 1, 3, 0.5, float("inf"), -float("inf")):
        y, g = _fwd_bwd(lambda t: mmu.norm(t, p, dim=1), a)
        t = torch.tensor(a, requires_grad=True)
        ty = torch.norm(t, p, dim=1)
        ty.sum().backward()
        assert_close(y, ty.detach().numpy(), rtol=1e-5, atol=1e-6, what=f"norm p={p}")
        assert_close(g, t.grad.numpy(), rtol=1e-5, atol=1e-6, what=f"norm p={p} grad")
    y, g = _fwd_bwd(lambda t: mmu.std(t, 1, correction=0), a)
    t = torch.tensor(a, requires_grad=True)
    torch.std(t, 1, correction=0).sum().backward()
    assert_close(g, t.grad.numpy(), rtol=1e-5, atol=1e-6, what="std grad")


def test_norm_bad_p_names_norm():
    for p in (-1, float("nan"), "nuc"):
        with pytest.raises(ValueError, match="norm"):
            mmu.norm(mmu.ones(3), p)
    with pytest.raises(TypeError, match="norm"):
        mmu.norm(mmu.ones(3), object())
    assert mmu.norm(mmu.tensor([3.0, 4.0]), None).item() == pytest.approx(5.0)  # torch: None is 'fro'
    with pytest.raises(TypeError, match="norm"):
        mmu.norm(mmu.ones(3, dtype=mmu.int64))


def test_inf_norm_of_a_0d_tensor_over_its_dim():
    # torch: the +-inf norm of a 0-d tensor over dim 0 / -1 is |x| (the API fuzz found an IndexError)
    t = mmu.tensor(-3.0)
    for p in (float("inf"), -float("inf")):
        for dim in (0, -1):
            assert float(t.norm(p, dim=dim).numpy()) == 3.0
            assert t.norm(p, dim=dim, keepdim=True).shape == ()

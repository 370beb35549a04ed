"""window_attention and temporal_attention: forward vs float64 NumPy references (the windows /
per-location sequences cut out explicitly), gradients (q, k, v, bias) vs finite differences and
vs torch SDPA with the equivalent materialised boolean mask, several shapes, bad inputs."""
import numpy as np
import pytest

import mmu
import mmu.functional as F
from gradcheck import assert_close, check_mmu_grads, torch_or_skip


def rnd(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- references (float64)

def ref_softmax_attention(q, k, v, bias=None, causal=False, scale=None):
    """softmax(q kᵀ·scale + bias) v over the last two dims, float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if bias is not None:
        s = s + np.asarray(bias, np.float64)
    if causal:
        n = s.shape[-1]
        s = np.where(np.tril(np.ones((n, n), bool)), s, -np.inf)
    s = s - s.max(-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(-1, keepdims=True)) @ v


def ref_window(q, k, v, grid, window, bias=None, scale=None):
    """Each window's rows gathered by a Python loop over the windows (no reshape tricks)."""
    (gh, gw), (wh, ww) = grid, window
    B, H, N, _ = q.shape
    out = np.zeros((B, H, N, v.shape[-1]))
    for y0 in range(0, gh, wh):
        for x0 in range(0, gw, ww):
            idx = np.array([(y0 + r) * gw + x0 + c for r in range(wh) for c in range(ww)])
            b = None if bias is None else bias[None]
            out[:, :, idx] = ref_softmax_attention(q[:, :, idx], k[:, :, idx], v[:, :, idx], b, scale=scale)
    return out


def ref_temporal(q, k, v, frames, causal=True, scale=None):
    B, H, N, _ = q.shape
    L = N // frames
    out = np.zeros((B, H, N, v.shape[-1]))
    for loc in range(L):
        idx = np.arange(frames) * L + loc
        out[:, :, idx] = ref_softmax_attention(q[:, :, idx], k[:, :, idx], v[:, :, idx], causal=causal, scale=scale)
    return out


def window_mask(grid, window):
    """(N, N) bool: token i sees token j iff both lie in the same window."""
    (gh, gw), (wh, ww) = grid, window
    y, x = np.divmod(np.arange(gh * gw), gw)
    wid = (y // wh) * (gw // ww) + x // ww
    return wid[:, None] == wid[None, :]


def window_bias_dense(bias, grid, window):
    """(H, N, N) float: bias[h, r_i, r_j] where i and j share a window (their in-window positions r), else 0."""
    (gh, gw), (wh, ww) = grid, window
    y, x = np.divmod(np.arange(gh * gw), gw)
    r = (y % wh) * ww + x % ww
    return bias[:, r[:, None], r[None, :]]


def temporal_mask(frames, L, causal=True):
    t, loc = np.divmod(np.arange(frames * L), L)
    m = loc[:, None] == loc[None, :]
    return m & (t[None, :] <= t[:, None]) if causal else m


# ---------------------------------------------------------------- window attention

WINDOW_CASES = [
    # (B, H, grid, window, d, dv)
    (2, 3, (4, 6), (2, 3), 8, 8),      # window not square
    (1, 2, (4, 4), (4, 4), 16, 16),    # one window = the whole grid
    (2, 2, (6, 4), (1, 2), 5, 7),      # tiny windows, d and dv odd and different
    (1, 2, (16, 16), (8, 8), 32, 32),  # OmniTokenizer-like: 64-token windows, 4 of them
    (1, 1, (9, 20), (3, 10), 20, 12),  # more columns of windows than rows
    (2, 1, (3, 3), (1, 1), 4, 4),      # a window of one token: out = v
]


def _run_window(q, k, v, g, grid, window, bias=None, scale=None):
    tq, tk, tv = (mmu.tensor(a, requires_grad=True) for a in (q, k, v))
    tb = None if bias is None else mmu.tensor(bias, requires_grad=True)
    out = F.window_attention(tq, tk, tv, grid, window, bias=tb, scale=scale)
    out.backward(mmu.tensor(g))
    grads = [t.grad.numpy().copy() for t in (tq, tk, tv)] + ([] if tb is None else [tb.grad.numpy().copy()])
    return out.numpy().copy(), grads


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("case", WINDOW_CASES, ids=str)
def test_window_forward_backward_vs_reference_and_torch(case, with_bias):
    B, H, grid, window, d, dv = case
    N, n = grid[0] * grid[1], window[0] * window[1]
    rng = np.random.default_rng(0)
    q, k, v, g = rnd(rng, B, H, N, d), rnd(rng, B, H, N, d), rnd(rng, B, H, N, dv), rnd(rng, B, H, N, dv)
    bias = rnd(rng, H, n, n) if with_bias else None
    out, grads = _run_window(q, k, v, g, grid, window, bias)
    assert out.shape == (B, H, N, dv)
    assert_close(out, ref_window(q, k, v, grid, window, bias), 1e-4, 1e-5, "out vs float64")
    if n == 1:
        assert_close(out, v, 1e-6, 1e-6, "one-token windows: out = v")
    # torch SDPA with the materialised (N, N) mask: bool, or float (-inf outside the windows, bias inside)
    torch = torch_or_skip()
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    if bias is None:
        tm = torch.tensor(window_mask(grid, window))
        tb = None
    else:
        tb = torch.tensor(bias, requires_grad=True)
        r = np.divmod(np.arange(N), grid[1])
        pos = torch.tensor((r[0] % window[0]) * window[1] + r[1] % window[1])
        dense = tb[:, pos[:, None], pos[None, :]]
        tm = dense.masked_fill(~torch.tensor(window_mask(grid, window)), float("-inf"))
    t_out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm)
    t_out.backward(torch.tensor(g))
    assert_close(out, t_out.detach().numpy(), 1e-4, 1e-5, "out vs torch")
    t_grads = [t.grad.numpy() for t in (tq, tk, tv)] + ([] if tb is None else [tb.grad.numpy()])
    for name, a, b in zip(["q", "k", "v", "bias"], grads, t_grads):
        assert_close(a, b, 1e-3, 1e-4, f"d{name} vs torch")


def test_window_gradients_finite_differences():
    rng = np.random.default_rng(1)
    grid, window = (2, 4), (2, 2)
    q, k, v, bias = rnd(rng, 1, 2, 8, 3), rnd(rng, 1, 2, 8, 3), rnd(rng, 1, 2, 8, 2), rnd(rng, 2, 4, 4)
    check_mmu_grads(lambda m, q, k, v, b: m.F.window_attention(q, k, v, grid, window, bias=b, scale=0.8),
                    lambda q, k, v, b: ref_window(q, k, v, grid, window, b, scale=0.8), [q, k, v, bias])
    check_mmu_grads(lambda m, q, k, v: m.F.window_attention(q, k, v, (4, 2), (2, 1)),
                    lambda q, k, v: ref_window(q, k, v, (4, 2), (2, 1)), [q, k, v])


def test_window_bias_is_the_dense_bias_of_sdpa():
    """the per-window bias equals scaled_dot_product_attention with the (H, N, N) float mask it stands for"""
    rng = np.random.default_rng(2)
    grid, window = (4, 6), (2, 3)
    q, k, v, bias = rnd(rng, 2, 2, 24, 8), rnd(rng, 2, 2, 24, 8), rnd(rng, 2, 2, 24, 8), rnd(rng, 2, 6, 6)
    dense = np.where(window_mask(grid, window), window_bias_dense(bias, grid, window), -np.inf).astype(np.float32)
    a = F.window_attention(q, k, v, grid, window, bias=bias).numpy()
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=dense).numpy()
    assert_close(a, b, 1e-5, 1e-6, "window_attention vs sdpa with the dense mask")


def test_window_non_contiguous_numpy_inputs():
    rng = np.random.default_rng(3)
    base = rnd(rng, 2, 24, 3, 8)  # (B, N, H, d): the heads axis swapped in, a strided view
    q = base.transpose(0, 2, 1, 3)
    k = q[..., ::-1]
    assert not q.flags.c_contiguous and not k.flags.c_contiguous
    out = F.window_attention(q, k, q, (4, 6), (2, 2)).numpy()
    assert_close(out, ref_window(q, k, q, (4, 6), (2, 2)), 1e-4, 1e-5)


def test_window_attention_errors():
    rng = np.random.default_rng(4)
    q = rnd(rng, 1, 2, 24, 4)
    wa = F.window_attention
    with pytest.raises(ValueError, match=r"window_attention: grid \(4, 5\) has 20 tokens .* N = 24"):
        wa(q, q, q, (4, 5), (2, 5))
    with pytest.raises(ValueError, match=r"window_attention: window \(3, 3\) must divide grid \(4, 6\)"):
        wa(q, q, q, (4, 6), (3, 3))
    with pytest.raises(ValueError, match=r"window_attention: bias must be \(H, wh\*ww, wh\*ww\) = \(2, 4, 4\), "
                                         r"got \(2, 4, 5\)"):
        wa(q, q, q, (4, 6), (2, 2), bias=rnd(rng, 2, 4, 5))
    with pytest.raises(ValueError, match=r"window_attention: key \(1, 2, 24, 5\) must have query's shape"):
        wa(q, rnd(rng, 1, 2, 24, 5), q, (4, 6), (2, 2))
    with pytest.raises(ValueError, match=r"window_attention: value must be \(B, H, N, d\), got shape \(2, 24, 4\)"):
        wa(q, q, rnd(rng, 2, 24, 4), (4, 6), (2, 2))
    with pytest.raises(TypeError, match=r"window_attention: window must be a pair of ints"):
        wa(q, q, q, (4, 6), 2)
    with pytest.raises(ValueError, match=r"window_attention: grid must be positive"):
        wa(q, q, q, (0, 6), (2, 2))
    with pytest.raises(TypeError, match=r"window_attention: scale must be a float or None"):
        wa(q, q, q, (4, 6), (2, 2), scale="x")


# ---------------------------------------------------------------- temporal attention

TEMPORAL_CASES = [
    # (B, H, T, L, d, dv)
    (2, 3, 5, 4, 8, 8),
    (1, 2, 1, 6, 16, 16),     # T = 1: out = v
    (2, 1, 17, 3, 5, 7),      # T = 17, d and dv odd and different
    (1, 2, 9, 64, 32, 32),    # OmniTokenizer-like
]


def _run_temporal(q, k, v, g, frames, causal, scale=None):
    tq, tk, tv = (mmu.tensor(a, requires_grad=True) for a in (q, k, v))
    out = F.temporal_attention(tq, tk, tv, frames, causal=causal, scale=scale)
    out.backward(mmu.tensor(g))
    return out.numpy().copy(), [t.grad.numpy().copy() for t in (tq, tk, tv)]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("case", TEMPORAL_CASES, ids=str)
def test_temporal_forward_backward_vs_reference_and_torch(case, causal):
    B, H, T, L, d, dv = case
    N = T * L
    rng = np.random.default_rng(5)
    q, k, v, g = rnd(rng, B, H, N, d), rnd(rng, B, H, N, d), rnd(rng, B, H, N, dv), rnd(rng, B, H, N, dv)
    out, grads = _run_temporal(q, k, v, g, T, causal)
    assert out.shape == (B, H, N, dv)
    assert_close(out, ref_temporal(q, k, v, T, causal), 1e-4, 1e-5, "out vs float64")
    if T == 1:
        assert_close(out, v, 1e-6, 1e-6, "one frame: out = v")
    torch = torch_or_skip()
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    t_out = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv,
                                                             attn_mask=torch.tensor(temporal_mask(T, L, causal)))
    t_out.backward(torch.tensor(g))
    assert_close(out, t_out.detach().numpy(), 1e-4, 1e-5, "out vs torch")
    for name, a, t in zip("qkv", grads, (tq, tk, tv)):
        assert_close(a, t.grad.numpy(), 1e-3, 1e-4, f"d{name} vs torch")


def test_temporal_gradients_finite_differences():
    rng = np.random.default_rng(6)
    q, k, v = rnd(rng, 1, 2, 12, 3), rnd(rng, 1, 2, 12, 3), rnd(rng, 1, 2, 12, 2)
    for causal in (True, False):
        check_mmu_grads(lambda m, q, k, v: m.F.temporal_attention(q, k, v, 4, causal=causal, scale=0.9),
                        lambda q, k, v: ref_temporal(q, k, v, 4, causal, scale=0.9), [q, k, v])


def test_temporal_non_contiguous_numpy_inputs():
    rng = np.random.default_rng(7)
    q = rnd(rng, 2, 15, 3, 8).transpose(0, 2, 1, 3)
    assert not q.flags.c_contiguous
    out = F.temporal_attention(q, q, q, 5, causal=True).numpy()
    assert_close(out, ref_temporal(q, q, q, 5, True), 1e-4, 1e-5)


def test_temporal_attention_errors():
    rng = np.random.default_rng(8)
    q = rnd(rng, 1, 2, 12, 4)
    ta = F.temporal_attention
    with pytest.raises(ValueError, match=r"temporal_attention: frames \(5\) must be >= 1 and divide the token count "
                                         r"N = 12 of query \(1, 2, 12, 4\)"):
        ta(q, q, q, 5)
    with pytest.raises(ValueError, match=r"temporal_attention: frames \(0\)"):
        ta(q, q, q, 0)
    with pytest.raises(TypeError, match=r"temporal_attention: frames must be an int"):
        ta(q, q, q, 2.0)
    with pytest.raises(TypeError, match=r"temporal_attention: causal must be a bool"):
        ta(q, q, q, 3, causal=1)
    with pytest.raises(ValueError, match=r"temporal_attention: query must be \(B, H, N, d\), got shape \(2, 12, 4\)"):
        ta(q[0], q[0], q[0], 3)
    with pytest.raises(ValueError, match=r"temporal_attention: key \(1, 2, 6, 4\) must have query's shape"):
        ta(q, q[:, :, :6], q, 3)

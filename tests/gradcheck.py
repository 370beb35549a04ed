"""Helpers for checking mmu against float64 NumPy references and PyTorch.

* ``numeric_grad``  - central finite differences of a float64 NumPy reference.
* ``MmuBackend`` / ``TorchBackend`` - build leaf tensors from NumPy arrays, run
  an op forward, backpropagate a given upstream gradient and hand back NumPy
  copies of the output and of every input gradient.
* ``assert_close`` - allclose with a message that says where and by how much.
* ``torch_or_skip`` - import torch lazily, skip the calling test without it.

Nothing in here imports mmu or torch at module import time, so the helpers can
be used by tests that need neither.
"""

import numpy as np
import pytest

FLOAT_KINDS = ("f",)  # numpy dtype kinds we treat as differentiable inputs


def torch_or_skip():
    """Return the torch module, or skip the current test cleanly."""
    try:
        import torch  # lazy on purpose
    except ImportError:
        pytest.skip("torch is not installed; skipping comparison against torch")
    return torch


# --------------------------------------------------------------------------
# comparison
# --------------------------------------------------------------------------

def assert_close(actual, expected, rtol=1e-5, atol=1e-5, what="value"):
    """Assert |actual - expected| <= atol + rtol * |expected| elementwise.

    Both sides are converted to float64 NumPy arrays. Shapes must match
    exactly (no broadcasting: a (3,) result is not a (1, 3) result).
    NaN/inf must appear at the same places on both sides.
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(
            f"{what}: shape mismatch: got {a.shape}, expected {e.shape}")
    a_fin, e_fin = np.isfinite(a), np.isfinite(e)
    if not np.array_equal(a_fin, e_fin) or not np.array_equal(a[~a_fin], e[~e_fin],
                                                              equal_nan=True):
        bad = np.argwhere(a_fin != e_fin)
        raise AssertionError(
            f"{what}: non-finite values differ (first mismatching index "
            f"{tuple(bad[0]) if len(bad) else '?'});\n got      {a}\n expected {e}")
    if a.size == 0:
        return
    a_f, e_f = np.where(a_fin, a, 0.0), np.where(e_fin, e, 0.0)
    err = np.abs(a_f - e_f)
    allowed = atol + rtol * np.abs(e_f)
    if np.all(err <= allowed):
        return
    n_bad = int(np.sum(err > allowed))
    worst = np.unravel_index(int(np.argmax(err - allowed)), err.shape)
    rel = err / np.maximum(np.abs(e_f), 1e-300)
    lines = [
        f"{what}: {n_bad} of {a.size} elements out of tolerance "
        f"(rtol={rtol:g}, atol={atol:g})",
        f"  worst at index {tuple(int(i) for i in worst)}: got {float(a[worst])!r}, "
        f"expected {float(e[worst])!r}, abs err {err[worst]:.3e}, rel err {rel[worst]:.3e}",
        f"  max abs err {err.max():.3e}, max rel err {rel.max():.3e}",
    ]
    if a.size <= 64:
        lines.append(f"  got:\n{a}\n  expected:\n{e}")
    raise AssertionError("\n".join(lines))


# --------------------------------------------------------------------------
# finite differences
# --------------------------------------------------------------------------

def is_float_array(x):
    return isinstance(x, np.ndarray) and x.dtype.kind in FLOAT_KINDS


def numeric_grad(f64_fn, inputs, upstream, wrt=None, eps=1e-6):
    """Central finite differences of ``sum(f64_fn(*inputs) * upstream)``.

    ``inputs`` is a list of NumPy arrays (float arrays are promoted to float64;
    integer / bool arrays and non-arrays are passed through unchanged).
    ``wrt`` lists the positions to differentiate (default: every float array).
    Returns a list parallel to ``inputs``: a float64 gradient array for every
    position in ``wrt`` and None elsewhere.
    """
    xs = [np.array(x, dtype=np.float64, order="C") if is_float_array(x) else x
          for x in inputs]
    g = np.asarray(upstream, dtype=np.float64)
    if wrt is None:
        wrt = [i for i, x in enumerate(xs) if is_float_array(x)]

    def scalar_loss():
        out = np.asarray(f64_fn(*xs), dtype=np.float64)
        if out.shape != g.shape:
            raise AssertionError(
                f"reference output shape {out.shape} != upstream shape {g.shape}")
        return float(np.sum(out * g))

    grads = [None] * len(xs)
    for i in wrt:
        x = xs[i]
        gi = np.zeros_like(x)
        flat, gflat = x.reshape(-1), gi.reshape(-1)  # views into x / gi
        assert np.shares_memory(flat, x) and np.shares_memory(gflat, gi)
        for k in range(flat.size):
            orig = flat[k]
            flat[k] = orig + eps
            up = scalar_loss()
            flat[k] = orig - eps
            down = scalar_loss()
            flat[k] = orig
            gflat[k] = (up - down) / (2.0 * eps)
        grads[i] = gi
    return grads


# --------------------------------------------------------------------------
# running an op forward + backward on a backend
# --------------------------------------------------------------------------

class MmuBackend:
    """Runs ``fn(mmu, *tensors)``; raw inputs are passed as NumPy arrays."""

    name = "mmu"

    def __init__(self):
        import mmu
        self.mmu = mmu
        # ``m.F`` is how test cases spell the functional namespace; mmu itself
        # does not need to export ``F`` -- see ``MmuLib``.
        self.lib = MmuLib(mmu)

    def tensor(self, arr, requires_grad):
        return self.mmu.tensor(arr, requires_grad=requires_grad)

    def to_numpy(self, t):
        return np.array(t.numpy(), copy=True)

    def grad_of(self, t):
        g = t.grad
        return None if g is None else np.array(g.numpy(), copy=True)

    def backward(self, out, upstream):
        out.backward(self.mmu.tensor(upstream))

    def dtype_of(self, t):
        return np.dtype(t.dtype)


class MmuLib:
    """``m`` inside a test case when running on mmu: mmu plus ``m.F``."""

    def __init__(self, mmu):
        import mmu.functional as F  # noqa: N812
        self._mmu = mmu
        self.F = F

    def __getattr__(self, name):
        return getattr(self._mmu, name)


class TorchLib:
    """``m`` inside a test case when running on torch: torch plus ``m.F``."""

    def __init__(self, torch):
        import torch.nn.functional as F  # noqa: N812
        self._torch = torch
        self.F = F

    def __getattr__(self, name):
        return getattr(self._torch, name)


class TorchBackend:
    """Runs the same case code on torch (float32 by default, or float64)."""

    name = "torch"

    def __init__(self, torch, float_dtype=None):
        self.torch = torch
        self.float_dtype = torch.float32 if float_dtype is None else float_dtype
        self.lib = TorchLib(torch)

    def tensor(self, arr, requires_grad):
        arr = np.asarray(arr)
        if arr.dtype.kind == "f":
            t = self.torch.tensor(arr, dtype=self.float_dtype)
        else:
            t = self.torch.tensor(arr)
        return t.requires_grad_(requires_grad) if requires_grad else t

    def to_numpy(self, t):
        return t.detach().cpu().numpy().copy()

    def grad_of(self, t):
        return None if t.grad is None else t.grad.detach().numpy().copy()

    def backward(self, out, upstream):
        out.backward(self.torch.tensor(np.asarray(upstream), dtype=out.dtype))

    def dtype_of(self, t):
        return np.dtype(str(t.dtype).replace("torch.", ""))


def run_case(backend, fn, arrays, grad_flags, raw_flags=None, upstream_fn=None):
    """Build inputs on ``backend``, run ``fn(lib, *inputs)``, maybe backprop.

    arrays      list of NumPy arrays (float32 / int64 / bool)
    grad_flags  per input: True -> leaf tensor with requires_grad=True
    raw_flags   per input: True -> pass the NumPy array itself to mmu (torch
                always gets a tensor, since torch does not accept ndarrays in
                operator expressions)
    upstream_fn callable(out_shape) -> float32 NumPy upstream gradient; if
                given, ``out.backward(upstream)`` is run.
    Returns (out_tensor, out_numpy, upstream_or_None, grads) where grads is a
    list parallel to ``arrays`` (None for inputs without requires_grad).
    """
    raw_flags = raw_flags or [False] * len(arrays)
    inputs = []
    for arr, rg, raw in zip(arrays, grad_flags, raw_flags):
        if raw and backend.name == "mmu":
            inputs.append(arr.copy())
        else:
            inputs.append(backend.tensor(arr, requires_grad=rg))
    out = fn(backend.lib, *inputs)
    out_np = backend.to_numpy(out)
    upstream = None
    grads = [None] * len(arrays)
    if upstream_fn is not None:
        upstream = upstream_fn(tuple(out_np.shape))
        backend.backward(out, upstream)
        grads = [backend.grad_of(t) if rg else None
                 for t, rg in zip(inputs, grad_flags)]
    return out, out_np, upstream, grads, inputs


def random_upstream(seed=0):
    """An ``upstream_fn`` for ``run_case``: float32 N(0, 1) of the output shape."""
    rng = np.random.default_rng(seed)
    return lambda shape: np.asarray(rng.standard_normal(shape), dtype=np.float32)


def check_mmu_grads(fn, ref, arrays, grad_flags=None, seed=0, rtol=1e-3, atol=1e-4):
    """One-call gradient check: run ``fn(m, *inputs)`` on mmu with a random
    upstream gradient g (i.e. backprop of ``(out * g).sum()``) and compare
    every input gradient with finite differences of the float64 ``ref``."""
    if grad_flags is None:
        grad_flags = [is_float_array(a) for a in arrays]
    _, _, upstream, grads, _ = run_case(MmuBackend(), fn, arrays, grad_flags,
                                        upstream_fn=random_upstream(seed))
    wrt = [k for k, g in enumerate(grad_flags) if g]
    expected = numeric_grad(ref, arrays, upstream, wrt=wrt)
    for k in wrt:
        assert grads[k] is not None, f"input {k} got no .grad"
        assert_close(grads[k], expected[k], rtol, atol, what=f"grad of input {k}")

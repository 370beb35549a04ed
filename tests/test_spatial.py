"""Tests of the spatial family: group_norm, rms_norm, normalize, dropout, leaky_relu, pad,
avg_pool2d, interpolate, pixel_shuffle / pixel_unshuffle.

Every entry of CASES runs three ways: forward vs a float64 NumPy reference, gradients vs central
finite differences of that reference, and forward + gradients vs torch float32 (skipped without
torch). Dropout (random) and the argument checks have their own tests below.
"""
import math

import numpy as np
import pytest

import mmu
import mmu.functional as F

try:
    from gradcheck import (MmuBackend, TorchBackend, assert_close, check_mmu_grads, random_upstream,
                           run_case, torch_or_skip)
except ImportError:
    from tests.gradcheck import (MmuBackend, TorchBackend, assert_close, check_mmu_grads, random_upstream,
                                 run_case, torch_or_skip)


def rnd(*shape, seed=0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) + offset).astype(np.float32)


# ======================================================================
# float64 references
# ======================================================================

def group_norm_ref(x, groups, w=None, b=None, eps=1e-5):
    n, c = x.shape[:2]
    xg = x.reshape(n, groups, -1)
    mu = xg.mean(-1, keepdims=True)
    var = ((xg - mu) ** 2).mean(-1, keepdims=True)
    y = ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    shape = (1, c) + (1,) * (x.ndim - 2)
    if w is not None:
        y = y * w.reshape(shape)
    if b is not None:
        y = y + b.reshape(shape)
    return y


def rms_norm_ref(x, k, w=None, eps=None):
    eps = np.finfo(np.float32).eps if eps is None else eps
    axes = tuple(range(x.ndim - k, x.ndim))
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return y if w is None else y * w


def normalize_ref(x, p=2.0, dim=1, eps=1e-12):
    n = (np.abs(x) ** p).sum(axis=dim, keepdims=True) ** (1.0 / p)
    return x / np.maximum(n, eps)


def leaky_ref(x, slope=0.01):
    return np.where(x > 0, x, slope * x)


def pad_ref(x, pad, mode="constant", value=0.0):
    nd, k = x.ndim, len(pad) // 2
    lo, hi = [0] * nd, [0] * nd
    for i in range(k):
        lo[nd - 1 - i], hi[nd - 1 - i] = pad[2 * i], pad[2 * i + 1]
    # crop the negative sides first, then pad the positive ones
    x = x[tuple(slice(max(-a, 0), x.shape[d] - max(-b, 0)) for d, (a, b) in enumerate(zip(lo, hi)))]
    widths = [(max(a, 0), max(b, 0)) for a, b in zip(lo, hi)]
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=value)
    return np.pad(x, widths, mode={"reflect": "reflect", "replicate": "edge", "circular": "wrap"}[mode])


def replicate_ref(x, pad):
    """replicate padding of the last len(pad)//2 dims as torch's kernel: each output index clamped
    into the input (negative pads included)."""
    for i in range(len(pad) // 2):
        axis, lo, hi = x.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]
        n = x.shape[axis]
        x = np.take(x, np.clip(np.arange(n + lo + hi) - lo, 0, n - 1), axis=axis)
    return x


def circular_ref(x, pad):
    """circular padding as torch: crop by the negative pads, then wrap around what is left."""
    for i in range(len(pad) // 2):
        axis, lo, hi = x.ndim - 1 - i, pad[2 * i], pad[2 * i + 1]
        n = x.shape[axis]
        x = np.take(x, np.arange(max(-lo, 0), n - max(-hi, 0)), axis=axis)
        k = x.shape[axis]
        x = np.take(x, (np.arange(k + max(lo, 0) + max(hi, 0)) - max(lo, 0)) % k, axis=axis)
    return x


def _pool_out(n, k, s, p, ceil_mode):
    o = (n + 2 * p - k + ((s - 1) if ceil_mode else 0)) // s + 1
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


def avg_pool2d_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
                   divisor_override=None):
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    stride = kernel_size if stride is None else stride
    sh, sw = (stride, stride) if isinstance(stride, int) else stride
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    H, W = x.shape[-2:]
    OH, OW = _pool_out(H, kh, sh, ph, ceil_mode), _pool_out(W, kw, sw, pw, ceil_mode)
    out = np.zeros(x.shape[:-2] + (OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            hs, ws = oh * sh - ph, ow * sw - pw
            he, we = min(hs + kh, H + ph), min(ws + kw, W + pw)
            pool = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, H), min(we, W)
            div = divisor_override or (pool if count_include_pad else (he - hs) * (we - ws))
            out[..., oh, ow] = x[..., hs:he, ws:we].sum(axis=(-1, -2)) / div
    return out


def _nearest_index(n_in, n_out, sf, shortcuts):
    """torch's 'nearest' rule: floor(dst * scale) in float32, scale = 1/scale_factor or in/out;
    torch's 2-D kernel first copies an unchanged size and halves the index of a doubled one."""
    if shortcuts and n_out == n_in:
        return np.arange(n_out)
    if shortcuts and n_out == 2 * n_in:
        return np.arange(n_out) // 2
    scale = np.float32(1.0 / sf) if sf else np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(src, n_in - 1)


def nearest_ref(x, size, sf=None):
    for k, o in enumerate(size):
        axis = x.ndim - len(size) + k
        x = np.take(x, _nearest_index(x.shape[axis], o, sf[k] if sf else None, len(size) == 2), axis=axis)
    return x


def _linear_weights(n_in, n_out, align, sf):
    """(n_out, n_in) interpolation matrix of torch's 'linear' rule (an unchanged size is a copy)."""
    if n_in == n_out:
        return np.eye(n_in)
    if align:
        scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        src = scale * np.arange(n_out)
    else:
        scale = 1.0 / sf if sf else n_in / n_out
        src = np.maximum(scale * (np.arange(n_out) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = np.clip(src - i0, 0, 1)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), i0] += 1 - lam
    m[np.arange(n_out), i1] += lam
    return m


def bilinear_ref(x, size, align=False, sf=None):
    mh = _linear_weights(x.shape[2], size[0], align, sf[0] if sf else None)
    mw = _linear_weights(x.shape[3], size[1], align, sf[1] if sf else None)
    return np.einsum("oh,nchw,pw->ncop", mh, x, mw)


def pixel_shuffle_ref(x, r):
    *b, c, h, w = x.shape
    y = x.reshape(*b, c // (r * r), r, r, h, w)
    nb = len(b)
    y = y.transpose(*range(nb), nb, nb + 3, nb + 1, nb + 4, nb + 2)
    return y.reshape(*b, c // (r * r), h * r, w * r)


def pixel_unshuffle_ref(x, r):
    *b, c, h, w = x.shape
    nb = len(b)
    y = x.reshape(*b, c, h // r, r, w // r, r)
    y = y.transpose(*range(nb), nb, nb + 2, nb + 4, nb + 1, nb + 3)
    return y.reshape(*b, c * r * r, h // r, w // r)


# ======================================================================
# cases: (id, fn(m, *tensors) on mmu or torch, ref(*arrays) in float64, arrays)
# ======================================================================

X4 = rnd(2, 6, 3, 4, seed=1)
W6, B6 = rnd(6, seed=2) + 1.0, rnd(6, seed=3)

CASES = [
    # group_norm: affine or not, groups = 1 / 2 / C, 2-D / 3-D / 4-D / 5-D input, large mean
    ("group_norm_affine_g2", lambda m, x, w, b: m.F.group_norm(x, 2, w, b),
     lambda x, w, b: group_norm_ref(x, 2, w, b), [X4, W6, B6]),
    ("group_norm_g1", lambda m, x, w, b: m.F.group_norm(x, 1, w, b, eps=1e-6),
     lambda x, w, b: group_norm_ref(x, 1, w, b, 1e-6), [X4, W6, B6]),
    ("group_norm_gC", lambda m, x, w, b: m.F.group_norm(x, 6, w, b),
     lambda x, w, b: group_norm_ref(x, 6, w, b), [X4, W6, B6]),
    ("group_norm_no_affine", lambda m, x: m.F.group_norm(x, 3), lambda x: group_norm_ref(x, 3), [X4]),
    ("group_norm_weight_only", lambda m, x, w: m.F.group_norm(x, 3, w), lambda x, w: group_norm_ref(x, 3, w),
     [X4, W6]),
    ("group_norm_2d", lambda m, x, w, b: m.F.group_norm(x, 3, w, b), lambda x, w, b: group_norm_ref(x, 3, w, b),
     [rnd(4, 6, seed=4), W6, B6]),
    ("group_norm_3d", lambda m, x: m.F.group_norm(x, 2), lambda x: group_norm_ref(x, 2), [rnd(2, 6, 5, seed=5)]),
    ("group_norm_5d", lambda m, x, w, b: m.F.group_norm(x, 2, w, b), lambda x, w, b: group_norm_ref(x, 2, w, b),
     [rnd(2, 6, 2, 3, 2, seed=6), W6, B6]),
    ("group_norm_offset", lambda m, x: m.F.group_norm(x, 2), lambda x: group_norm_ref(x, 2),
     [rnd(2, 4, 3, 3, seed=7, offset=100.0)]),
    ("group_norm_offset10", lambda m, x, w, b: m.F.group_norm(x, 2, w, b), lambda x, w, b: group_norm_ref(x, 2, w, b),
     [rnd(2, 4, 3, 3, seed=7, offset=10.0), rnd(4, seed=1), rnd(4, seed=2)]),
    # many groups: the fused one-group-per-task path
    ("group_norm_many_groups", lambda m, x, w, b: m.F.group_norm(x, 4, w, b),
     lambda x, w, b: group_norm_ref(x, 4, w, b), [rnd(8, 8, 2, 3, seed=8), rnd(8, seed=9), rnd(8, seed=10)]),
    # rms_norm
    ("rms_norm_weight", lambda m, x, w: m.F.rms_norm(x, (4,), w), lambda x, w: rms_norm_ref(x, 1, w),
     [X4, rnd(4, seed=11)]),
    ("rms_norm_2dims_eps", lambda m, x: m.F.rms_norm(x, [3, 4], eps=1e-3), lambda x: rms_norm_ref(x, 2, eps=1e-3),
     [X4]),
    ("rms_norm_list_shape", lambda m, x: m.F.rms_norm(x, [4]), lambda x: rms_norm_ref(x, 1), [X4]),
    # normalize: p = 1, 2, 3, 0.5 on several dims, and the eps branch
    ("normalize_p2_dim1", lambda m, x: m.F.normalize(x), lambda x: normalize_ref(x), [X4]),
    ("normalize_p1_dim-1", lambda m, x: m.F.normalize(x, p=1, dim=-1), lambda x: normalize_ref(x, 1, -1), [X4]),
    ("normalize_p3_dim0", lambda m, x: m.F.normalize(x, p=3.0, dim=0), lambda x: normalize_ref(x, 3.0, 0), [X4]),
    ("normalize_p0.5_dim2", lambda m, x: m.F.normalize(x, p=0.5, dim=2), lambda x: normalize_ref(x, 0.5, 2),
     [rnd(2, 3, 4, seed=12)]),
    ("normalize_eps_branch", lambda m, x: m.F.normalize(x, p=2, dim=1, eps=1.5),
     lambda x: normalize_ref(x, 2, 1, 1.5), [np.concatenate([X4[:1] * 0.2, X4[1:] * 3.0])]),
    ("normalize_1d", lambda m, x: m.F.normalize(x, dim=0), lambda x: normalize_ref(x, 2, 0), [rnd(7, seed=13)]),
    # the last dim (norm.c's row path): rows of 8 (one lane block), 67 (blocks and a tail), 12 around eps, p = 3
    ("normalize_rows8_lastdim", lambda m, x: m.F.normalize(x, dim=-1), lambda x: normalize_ref(x, 2, -1),
     [rnd(3, 4, 8, seed=14)]),
    ("normalize_rows67_lastdim", lambda m, x: m.F.normalize(x, dim=-1), lambda x: normalize_ref(x, 2, -1),
     [rnd(5, 67, seed=15)]),
    ("normalize_eps_branch_lastdim", lambda m, x: m.F.normalize(x, dim=-1, eps=1.5),
     lambda x: normalize_ref(x, 2, -1, 1.5), [rnd(4, 12, seed=16) * np.array([[0.2], [3.0], [0.2], [3.0]], np.float32)]),
    ("normalize_p3_lastdim", lambda m, x: m.F.normalize(x, p=3.0, dim=-1), lambda x: normalize_ref(x, 3.0, -1),
     [rnd(3, 10, seed=17)]),
    # leaky_relu
    ("leaky_relu_default", lambda m, x: m.F.leaky_relu(x), lambda x: leaky_ref(x), [X4]),
    ("leaky_relu_0.2", lambda m, x: m.F.leaky_relu(x, 0.2), lambda x: leaky_ref(x, 0.2), [X4]),
    # pad: constant (any dims, negative crops), reflect / replicate / circular (last 1-3 dims)
    ("pad_last", lambda m, x: m.F.pad(x, (1, 2)), lambda x: pad_ref(x, (1, 2)), [X4]),
    ("pad_two_value", lambda m, x: m.F.pad(x, (0, 1, 2, 0), value=-1.5),
     lambda x: pad_ref(x, (0, 1, 2, 0), value=-1.5), [X4]),
    ("pad_crop", lambda m, x: m.F.pad(x, (-1, 2, 1, -2)), lambda x: pad_ref(x, (-1, 2, 1, -2)), [X4]),
    ("pad_all_dims", lambda m, x: m.F.pad(x, (1, 0, 0, 1, -1, 1, 1, 1)),
     lambda x: pad_ref(x, (1, 0, 0, 1, -1, 1, 1, 1)), [X4]),
    # a left pad wider than the output (the right side crops more): torch's index clamp
    ("pad_replicate_wider_than_output", lambda m, x: m.F.pad(x, (3, -5), mode="replicate"),
     lambda x: replicate_ref(x, (3, -5)), [rnd(2, 3, 4, seed=39)]),
    ("pad_reflect_1d", lambda m, x: m.F.pad(x, (2, 3), mode="reflect"), lambda x: pad_ref(x, (2, 3), "reflect"),
     [rnd(2, 3, 5, seed=14)]),
    ("pad_reflect_2d", lambda m, x: m.F.pad(x, (1, 3, 2, 1), mode="reflect"),
     lambda x: pad_ref(x, (1, 3, 2, 1), "reflect"), [X4]),
    ("pad_replicate_2d", lambda m, x: m.F.pad(x, (3, 1, 0, 2), mode="replicate"),
     lambda x: pad_ref(x, (3, 1, 0, 2), "replicate"), [X4]),
    ("pad_replicate_3d", lambda m, x: m.F.pad(x, (1, 1, 2, 0, 0, 1), mode="replicate"),
     lambda x: pad_ref(x, (1, 1, 2, 0, 0, 1), "replicate"), [rnd(1, 2, 2, 3, 3, seed=15)]),
    ("pad_replicate_negative", lambda m, x: m.F.pad(x, (2, -2, -1, 1), mode="replicate"),
     lambda x: replicate_ref(x, (2, -2, -1, 1)), [X4]),
    ("pad_reflect_negative", lambda m, x: m.F.pad(x, (-4, 3), mode="reflect"),
     lambda x: x[..., [2, 1, 0]], [rnd(2, 3, 4, seed=38)]),
    ("pad_circular_negative", lambda m, x: m.F.pad(x, (2, -1, -1, 1), mode="circular"),
     lambda x: circular_ref(x, (2, -1, -1, 1)), [X4]),
    ("pad_circular_2d", lambda m, x: m.F.pad(x, (2, 1, 1, 3), mode="circular"),
     lambda x: pad_ref(x, (2, 1, 1, 3), "circular"), [X4]),
    ("pad_reflect_3d_unbatched", lambda m, x: m.F.pad(x, (1, 2, 1, 0, 0, 1), mode="reflect"),
     lambda x: pad_ref(x, (1, 2, 1, 0, 0, 1), "reflect"), [rnd(2, 3, 3, 4, seed=16)]),
    # avg_pool2d options
    ("avg_pool_k2", lambda m, x: m.F.avg_pool2d(x, 2), lambda x: avg_pool2d_ref(x, 2), [rnd(2, 3, 5, 6, seed=17)]),
    ("avg_pool_k2_odd_ceil", lambda m, x: m.F.avg_pool2d(x, 2, ceil_mode=True),
     lambda x: avg_pool2d_ref(x, 2, ceil_mode=True), [rnd(1, 2, 5, 7, seed=33)]),
    ("avg_pool_k2_odd", lambda m, x: m.F.avg_pool2d(x, 2), lambda x: avg_pool2d_ref(x, 2), [rnd(1, 2, 5, 7, seed=34)]),
    ("avg_pool_k3_s2_p1", lambda m, x: m.F.avg_pool2d(x, 3, 2, 1), lambda x: avg_pool2d_ref(x, 3, 2, 1),
     [rnd(2, 3, 5, 6, seed=18)]),
    ("avg_pool_ceil", lambda m, x: m.F.avg_pool2d(x, 3, 2, 1, ceil_mode=True),
     lambda x: avg_pool2d_ref(x, 3, 2, 1, ceil_mode=True), [rnd(1, 2, 6, 7, seed=19)]),
    ("avg_pool_no_pad_count", lambda m, x: m.F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False),
     lambda x: avg_pool2d_ref(x, 3, 2, 1, True, False), [rnd(1, 2, 6, 7, seed=20)]),
    ("avg_pool_rect_divisor", lambda m, x: m.F.avg_pool2d(x, (2, 3), stride=(1, 2), divisor_override=4),
     lambda x: avg_pool2d_ref(x, (2, 3), (1, 2), divisor_override=4), [rnd(2, 5, 7, seed=21)]),
    ("avg_pool_overlap", lambda m, x: m.F.avg_pool2d(x, 3, stride=1, padding=(1, 0)),
     lambda x: avg_pool2d_ref(x, 3, 1, (1, 0)), [rnd(1, 2, 4, 5, seed=22)]),
    # interpolate nearest: up / down, size / scale_factor, 3-D / 4-D / 5-D
    ("nearest_x2", lambda m, x: m.F.interpolate(x, scale_factor=2), lambda x: nearest_ref(x, (6, 8)), [X4]),
    ("nearest_size_up", lambda m, x: m.F.interpolate(x, size=(7, 5)), lambda x: nearest_ref(x, (7, 5)), [X4]),
    ("nearest_size_down", lambda m, x: m.F.interpolate(x, size=(2, 3)),
     lambda x: nearest_ref(x, (2, 3)), [rnd(1, 2, 5, 7, seed=23)]),
    ("nearest_scale_1.7", lambda m, x: m.F.interpolate(x, scale_factor=1.7),
     lambda x: nearest_ref(x, (5, 6), (1.7, 1.7)), [X4]),
    ("nearest_scale_down", lambda m, x: m.F.interpolate(x, scale_factor=(0.5, 0.4)),
     lambda x: nearest_ref(x, (2, 2), (0.5, 0.4)), [rnd(1, 2, 5, 7, seed=24)]),
    # 10 -> floor(10 * 1.02) = 10 and 5 -> floor(5 * 2.1) = 10: the 2-D kernel copies / halves,
    # the 1-D and 3-D ones let the scale factor pick the sources (torch's behaviour)
    ("nearest_same_size_scale_2d", lambda m, x: m.F.interpolate(x, scale_factor=(1.02, 2.1)),
     lambda x: nearest_ref(x, (10, 10), (1.02, 2.1)), [rnd(1, 2, 10, 5, seed=35)]),
    ("nearest_same_size_scale_1d", lambda m, x: m.F.interpolate(x, scale_factor=1.02),
     lambda x: nearest_ref(x, (10,), (1.02,)), [rnd(1, 2, 10, seed=36)]),
    ("nearest_same_size_scale_3d", lambda m, x: m.F.interpolate(x, scale_factor=(1.02, 2.1, 1.0)),
     lambda x: nearest_ref(x, (10, 10, 2), (1.02, 2.1, 1.0)), [rnd(1, 1, 10, 5, 2, seed=37)]),
    ("nearest_recompute", lambda m, x: m.F.interpolate(x, scale_factor=1.7, recompute_scale_factor=True),
     lambda x: nearest_ref(x, (5, 6)), [X4]),
    ("nearest_1d", lambda m, x: m.F.interpolate(x, scale_factor=2.5), lambda x: nearest_ref(x, (12,), (2.5,)),
     [rnd(2, 3, 5, seed=25)]),
    ("nearest_3d", lambda m, x: m.F.interpolate(x, size=(3, 5, 2)), lambda x: nearest_ref(x, (3, 5, 2)),
     [rnd(1, 2, 2, 3, 4, seed=26)]),
    # interpolate bilinear: both align_corners, up / down, size / scale_factor
    ("bilinear_x2", lambda m, x: m.F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False),
     lambda x: bilinear_ref(x, (6, 8), False, (2.0, 2.0)), [X4]),
    ("bilinear_x2_align", lambda m, x: m.F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True),
     lambda x: bilinear_ref(x, (6, 8), True), [X4]),
    ("bilinear_size", lambda m, x: m.F.interpolate(x, size=(5, 7), mode="bilinear"),
     lambda x: bilinear_ref(x, (5, 7)), [X4]),
    ("bilinear_down", lambda m, x: m.F.interpolate(x, size=(3, 2), mode="bilinear"),
     lambda x: bilinear_ref(x, (3, 2)), [rnd(1, 2, 7, 5, seed=27)]),
    ("bilinear_down_align", lambda m, x: m.F.interpolate(x, size=(3, 1), mode="bilinear", align_corners=True),
     lambda x: bilinear_ref(x, (3, 1), True), [rnd(1, 2, 7, 5, seed=28)]),
    # W: 4 -> floor(4 * 1.2) = 4: torch copies an axis of unchanged size, whatever the scale factor
    ("bilinear_same_width", lambda m, x: m.F.interpolate(x, scale_factor=(1.5, 1.2), mode="bilinear"),
     lambda x: bilinear_ref(x, (4, 4), False, (1.5, 1.2)), [X4]),
    ("bilinear_scale_1.5", lambda m, x: m.F.interpolate(x, scale_factor=(1.5, 0.75), mode="bilinear"),
     lambda x: bilinear_ref(x, (4, 3), False, (1.5, 0.75)), [X4]),
    # pixel shuffle
    ("pixel_shuffle", lambda m, x: m.F.pixel_shuffle(x, 2), lambda x: pixel_shuffle_ref(x, 2),
     [rnd(2, 8, 2, 3, seed=29)]),
    ("pixel_shuffle_3d", lambda m, x: m.F.pixel_shuffle(x, 3), lambda x: pixel_shuffle_ref(x, 3),
     [rnd(9, 2, 2, seed=30)]),
    ("pixel_unshuffle", lambda m, x: m.F.pixel_unshuffle(x, 2), lambda x: pixel_unshuffle_ref(x, 2),
     [rnd(2, 3, 4, 6, seed=31)]),
    ("pixel_unshuffle_5d", lambda m, x: m.F.pixel_unshuffle(x, 2), lambda x: pixel_unshuffle_ref(x, 2),
     [rnd(2, 1, 2, 2, 4, seed=32)]),
]

IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward(case):
    _, fn, ref, arrays = case
    _, out, _, _, _ = run_case(MmuBackend(), fn, arrays, [False] * len(arrays))
    assert out.dtype == np.float32
    assert_close(out, ref(*[a.astype(np.float64) for a in arrays]), rtol=1e-5, atol=2e-6, what="forward")


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_backward(case):
    _, fn, ref, arrays = case
    check_mmu_grads(fn, ref, arrays, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_vs_torch(case):
    torch = torch_or_skip()
    name, fn, _, arrays = case
    if name == "group_norm_offset":
        pytest.skip("torch's own float32 error at mean 100 is ~2e-5 (group_norm_offset10 compares instead)")
    # torch's 1-D / 3-D nearest forward lets the scale factor pick the sources of an unchanged size
    # but its backward copies (the 2-D shortcut): mmu's gradient is the one of its (torch's) forward,
    # checked against finite differences in test_backward
    grads_too = name not in ("nearest_same_size_scale_1d", "nearest_same_size_scale_3d")
    flags = [True] * len(arrays)
    _, out_m, _, grads_m, _ = run_case(MmuBackend(), fn, arrays, flags, upstream_fn=random_upstream(3))
    _, out_t, _, grads_t, _ = run_case(TorchBackend(torch), fn, arrays, flags, upstream_fn=random_upstream(3))
    assert_close(out_m, out_t, rtol=1e-5, atol=1e-5, what="forward vs torch")
    for k, (gm, gt) in enumerate(zip(grads_m, grads_t) if grads_too else ()):
        assert_close(gm, gt, rtol=1e-4, atol=1e-5, what=f"grad of input {k} vs torch")


def test_group_norm_vqgan_shape_vs_torch():
    """The VQGAN case at a smaller size: 32 groups, eps 1e-6, both the fused and the split paths."""
    torch = torch_or_skip()
    for n in (1, 4):  # 32 or 128 (sample, group) pairs
        x, w, b = rnd(n, 64, 6, 6, seed=40, offset=0.5), rnd(64, seed=41), rnd(64, seed=42)
        g = rnd(n, 64, 6, 6, seed=43)
        xm, wm, bm = (mmu.tensor(a, requires_grad=True) for a in (x, w, b))
        xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ym = F.group_norm(xm, 32, wm, bm, eps=1e-6)
        yt = torch.nn.functional.group_norm(xt, 32, wt, bt, eps=1e-6)
        ym.backward(mmu.tensor(g))
        yt.backward(torch.tensor(g))
        assert_close(ym.numpy(), yt.detach().numpy(), 1e-5, 1e-5, "forward")
        for a, t in ((xm, xt), (wm, wt), (bm, bt)):
            assert_close(a.grad.numpy(), t.grad.numpy(), 1e-4, 2e-5, "grad")


def test_normalize_zero_rows_last_dim():
    """A zero row (norm 0 < eps) maps to zeros and passes g / eps back; its neighbours are normalised as usual
    (the row path of norm.c at dim = -1, for p = 2 and p = 1)."""
    x = rnd(4, 9, seed=18)
    x[1] = 0.0
    g = rnd(4, 9, seed=19)
    for p in (2.0, 1.0):
        xm = mmu.tensor(x, requires_grad=True)
        y = F.normalize(xm, p=p, dim=-1, eps=0.5)
        y.backward(mmu.tensor(g))
        assert_close(y.numpy(), normalize_ref(x.astype(np.float64), p, -1, 0.5), 1e-6, 1e-6)
        np.testing.assert_array_equal(y.numpy()[1], np.zeros(9, np.float32))
        np.testing.assert_allclose(xm.grad.numpy()[1], g[1] / 0.5, rtol=1e-6)


def test_deterministic_across_threads():
    """group_norm, rms_norm and the scatter backwards give the same bits on 1 and 2 threads."""
    x, g = rnd(4, 32, 16, 16, seed=50), rnd(4, 32, 32, 32, seed=51)
    results = []
    old = mmu.get_num_threads()
    try:
        for t in (1, 2):
            mmu.set_num_threads(t)
            xm = mmu.tensor(x, requires_grad=True)
            w = mmu.tensor(rnd(32, seed=52), requires_grad=True)
            y = F.group_norm(xm, 8, w)
            y2 = F.interpolate(y, scale_factor=2, mode="bilinear")
            y3 = F.avg_pool2d(F.pad(y2, (1, 1, 1, 1), mode="reflect"), 3, 1)
            (y3 * mmu.tensor(g)).sum().backward()
            # 3 (sample, group) pairs: one task per group on 1 thread, channels spread on 2
            x2 = mmu.tensor(x[:1, :6], requires_grad=True)
            z = F.group_norm(x2, 3)
            (z * z * z).sum().backward()
            results.append((y3.numpy().copy(), xm.grad.numpy().copy(), w.grad.numpy().copy(), z.numpy().copy(),
                            x2.grad.numpy().copy()))
    finally:
        mmu.set_num_threads(old)
    for a, b in zip(*results):
        assert np.array_equal(a, b)


# ======================================================================
# dropout
# ======================================================================

def test_dropout_same_seed_same_mask():
    x = mmu.tensor(np.ones((50, 40), np.float32))
    mmu.manual_seed(7)
    a = F.dropout(x, 0.3).numpy().copy()
    b = F.dropout(x, 0.3).numpy().copy()
    mmu.manual_seed(7)
    c = F.dropout(x, 0.3).numpy().copy()
    assert np.array_equal(a, c)
    assert not np.array_equal(a, b)  # the stream moved on


def test_dropout_values_and_keep_fraction():
    mmu.manual_seed(0)
    x = rnd(200, 500, seed=60)
    y = F.dropout(mmu.tensor(x), p=0.25).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01  # 100k draws: 4 sigma is ~0.006
    assert_close(y[kept], x[kept] / 0.75, rtol=1e-6, atol=0, what="kept values")


def test_dropout_thread_count_independent():
    x = mmu.tensor(rnd(300, 301, seed=61))  # odd size: a partial Philox block at the end
    old = mmu.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            mmu.set_num_threads(t)
            mmu.manual_seed(11)
            outs.append(F.dropout(x, 0.5).numpy().copy())
    finally:
        mmu.set_num_threads(old)
    assert np.array_equal(outs[0], outs[1])


def test_dropout_p0_eval_return_input():
    x = mmu.tensor(rnd(3, 4), requires_grad=True)
    assert F.dropout(x, 0.0) is x
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 1.0, training=False) is x


def test_dropout_p1_zeros_and_zero_grad():
    x = mmu.tensor(rnd(3, 4), requires_grad=True)
    y = F.dropout(x, 1.0)
    assert np.array_equal(y.numpy(), np.zeros((3, 4), np.float32))
    y.sum().backward()
    assert np.array_equal(x.grad.numpy(), np.zeros((3, 4), np.float32))


def test_dropout_grad_is_mask_times_scale():
    mmu.manual_seed(5)
    x = mmu.tensor(rnd(37, 29, seed=62), requires_grad=True)
    g = rnd(37, 29, seed=63)
    y = F.dropout(x, 0.4)
    mmu.randn(10)  # other draws between forward and backward must not change the mask
    y.backward(mmu.tensor(g))
    mask = y.numpy() != 0
    assert_close(x.grad.numpy(), np.where(mask, g / 0.6, 0.0), rtol=1e-6, atol=0, what="dropout grad")


# ======================================================================
# bad inputs
# ======================================================================

BAD = [
    (ValueError, lambda: F.group_norm(X4, 4)),  # 4 does not divide 6
    (ValueError, lambda: F.group_norm(X4, 0)),
    (TypeError, lambda: F.group_norm(X4, 2.0)),
    (ValueError, lambda: F.group_norm(rnd(6), 2)),  # 1-D
    (ValueError, lambda: F.group_norm(X4, 2, rnd(5))),  # weight of the wrong size
    (ValueError, lambda: F.group_norm(X4, 2, None, rnd(6, 1))),
    (ValueError, lambda: F.rms_norm(X4, (3,))),
    (ValueError, lambda: F.rms_norm(X4, (4,), rnd(3))),
    (TypeError, lambda: F.rms_norm(X4, "4")),
    (ValueError, lambda: F.normalize(X4, p=0)),
    (ValueError, lambda: F.normalize(X4, p=-1.0)),
    (IndexError, lambda: F.normalize(X4, dim=4)),
    (TypeError, lambda: F.normalize(X4, dim=1.0)),
    (ValueError, lambda: F.dropout(X4, 1.5)),
    (ValueError, lambda: F.dropout(X4, -0.1)),
    (TypeError, lambda: F.dropout(X4, "0.5")),
    (TypeError, lambda: F.leaky_relu(X4, "0.1")),
    (ValueError, lambda: F.leaky_relu(X4, 0.1, inplace=True)),
    (ValueError, lambda: F.dropout(X4, 0.1, inplace=True)),
    (ValueError, lambda: F.pad(X4, (1, 2, 3))),  # odd length
    (ValueError, lambda: F.pad(X4, (1,) * 10)),  # more than 2 * ndim
    (ValueError, lambda: F.pad(X4, (-3, -2))),  # negative output size
    (ValueError, lambda: F.pad(X4, (-5, 3))),  # the crop alone is larger than the dim (torch narrows first)
    (ValueError, lambda: F.pad(X4, (-5, 2, 0, 0), mode="circular")),  # crops more than the dim, then wraps
    (ValueError, lambda: F.pad(X4, (-4, 1, 0, 0), mode="circular")),  # nothing left to wrap around
    (ValueError, lambda: F.pad(X4, (1, 1), mode="bogus")),
    (TypeError, lambda: F.pad(X4, 1)),
    (ValueError, lambda: F.pad(X4, (4, 0), mode="reflect")),  # 1 pair on a 4-D input
    (ValueError, lambda: F.pad(X4, (4, 0, 0, 0), mode="reflect")),  # pad >= size
    (ValueError, lambda: F.pad(X4, (-10, 8, 0, 0), mode="reflect")),  # |pad| >= size
    (ValueError, lambda: F.pad(X4, (5, 0, 0, 0), mode="circular")),  # pad > size
    (ValueError, lambda: F.pad(X4, (-3, 2, 0, 0), mode="circular")),  # wraps more than once around 1 kept
    (ValueError, lambda: F.pad(X4, (1, 1, 1, 1), mode="replicate", value=2.0)),
    (ValueError, lambda: F.avg_pool2d(rnd(3, 4), 2)),  # 2-D input
    (ValueError, lambda: F.avg_pool2d(X4, 2, padding=2)),  # pad > kernel / 2
    (ValueError, lambda: F.avg_pool2d(X4, 5)),  # output too small
    (ValueError, lambda: F.avg_pool2d(X4, 0)),
    (ValueError, lambda: F.avg_pool2d(X4, 2, divisor_override=0)),
    (TypeError, lambda: F.avg_pool2d(X4, 2.5)),
    (ValueError, lambda: F.interpolate(X4, size=(4, 4), scale_factor=2)),  # both
    (ValueError, lambda: F.interpolate(X4)),  # neither
    (ValueError, lambda: F.interpolate(X4, size=(4, 4, 4))),  # wrong length
    (ValueError, lambda: F.interpolate(X4, scale_factor=(2, 2, 2))),
    (ValueError, lambda: F.interpolate(X4, size=(0, 3))),
    (ValueError, lambda: F.interpolate(X4, scale_factor=0.1)),  # output size 0
    (ValueError, lambda: F.interpolate(X4, scale_factor=2, mode="bicubic")),
    (ValueError, lambda: F.interpolate(X4, scale_factor=2, align_corners=True)),  # nearest
    (ValueError, lambda: F.interpolate(rnd(2, 3, 4), scale_factor=2, mode="bilinear")),  # 3-D
    (ValueError, lambda: F.interpolate(rnd(4, 4), scale_factor=2)),  # 2-D
    (TypeError, lambda: F.interpolate(X4, size=(2.5, 3))),
    (ValueError, lambda: F.pixel_shuffle(X4, 4)),  # 6 channels, not divisible by 16
    (ValueError, lambda: F.pixel_shuffle(rnd(4, 4), 2)),
    (ValueError, lambda: F.pixel_unshuffle(X4, 2)),  # H = 3
    (ValueError, lambda: F.pixel_shuffle(X4, 0)),
    (TypeError, lambda: F.pixel_shuffle(X4, 2.0)),
]


@pytest.mark.parametrize("exc,call", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_inputs(exc, call):
    with pytest.raises(exc):
        call()


def test_int_input_rejected_by_c_ops():
    xi = mmu.tensor(np.arange(24).reshape(1, 6, 2, 2))
    for call in (lambda: F.group_norm(xi, 2), lambda: F.leaky_relu(xi), lambda: F.pad(xi, (1, 1)),
                 lambda: F.interpolate(xi, scale_factor=2), lambda: F.avg_pool2d(xi, 2)):
        with pytest.raises(TypeError):
            call()


def test_rms_norm_int_shape():
    assert_close(F.rms_norm(X4, 4).numpy(), rms_norm_ref(X4.astype(np.float64), 1), 1e-5, 1e-6, "rms_norm")


def test_rms_norm_default_eps_is_float32_eps():
    x = np.full((1, 4), 1e-4, np.float32)
    y = F.rms_norm(x, (4,)).numpy()
    expected = 1e-4 / math.sqrt(1e-8 + float(np.finfo(np.float32).eps))
    assert_close(y, np.full((1, 4), expected), rtol=1e-5, atol=0, what="rms_norm eps")

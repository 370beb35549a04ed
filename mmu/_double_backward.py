"""create_graph=True for mmu.autograd.grad: a backward whose gradients are themselves differentiable.

The C engine runs each node's C backward with grad mode off, so its gradients have no graph. For
double backward (an R1 gradient penalty, a gradient-norm regulariser) this module walks the same
graph from Python through the introspection handles of mmu._C (`graph_node`, `Node`: op name, input
edges, saved tensors, and `ctx`, the op's small parameters decoded by name in C from the op table's
field lists, csrc/core/op_table.h) and applies one rule per op, written with
mmu's differentiable ops under grad mode ON — so the gradients it returns record their own graph.

The schedule is the C engine's: collect the nodes reachable from the outputs, keep only those on a
path to a requested input (pruning: a rule is asked only for the gradients that lead somewhere),
and run each node once all its consumers are done (Kahn's algorithm). A saved output (a detached
view in C) comes back from `Node.saved` attached to its node, so a rule that uses it (exp, sigmoid,
tanh, sqrt, relu) differentiates through the op again, as torch's SavedVariable does.

An op without a rule raises NotImplementedError naming it.
"""
import numpy as np

from . import _C
from .autograd import enable_grad


def _T():
    import sys
    return sys.modules["mmu.tensor"]  # (mmu.tensor the attribute is the tensor() function)


# ---------------------------------------------------------------- helpers
def _reduce_to(g, shape):
    """Sum a broadcast gradient down to `shape` (the backward of broadcasting)."""
    shape = tuple(shape)
    if tuple(g.shape) == shape:
        return g
    lead = g.ndim - len(shape)
    dims = tuple(range(lead)) + tuple(lead + d for d, s in enumerate(shape) if s == 1 and g.shape[lead + d] != 1)
    if dims:
        g = g.sum(dim=dims, keepdim=True)
    return g.reshape(shape)


def _const(arr):
    """A float32 constant (no graph) from a NumPy array."""
    return _T().tensor(np.ascontiguousarray(arr, dtype=np.float32))


def _np(t):
    return t.detach().numpy()


class _Ctx:
    """What a rule sees of one node: its saved tensors (outputs attached), parameters, input shapes."""

    def __init__(self, node, edges, needs):
        self.node = node
        self.op = node.op
        self.saved = node.saved
        self.ctx = node.ctx  # {field name: value}, names from csrc/core/op_table.h
        self.shapes = [e[2] for e in edges]
        self.out_shape = node.out_shape
        self.needs = needs


def _not_implemented(op, why=""):
    raise NotImplementedError(f"double backward of {op} is not implemented (autograd.grad(create_graph=True))"
                              + (f": {why}" if why else "; compute this gradient without create_graph, or "
                                 "express the op with differentiable primitives"))


# ------------------------------------------------------------------ rules
# rule(c, g) -> list of gradients, one per input (None where not needed); g the output's gradient.

def _binary(c, g):
    a, b = c.saved[0], c.saved[1]
    sa, sb = c.shapes
    ga = gb = None
    op = c.op
    if op == "ADD":
        ga, gb = (g if c.needs[0] else None), (g if c.needs[1] else None)
    elif op == "SUB":
        ga, gb = (g if c.needs[0] else None), (-g if c.needs[1] else None)
    elif op == "MUL":
        ga = g * b if c.needs[0] else None
        gb = g * a if c.needs[1] else None
    elif op == "DIV":
        ga = g / b if c.needs[0] else None
        gb = -g * a / (b * b) if c.needs[1] else None
    else:  # MAXIMUM / MINIMUM: the larger (smaller) input takes g, ties split it
        an, bn = np.broadcast_arrays(_np(a), _np(b))
        wins = an > bn if op == "MAXIMUM" else an < bn
        wa = np.where(an == bn, 0.5, wins.astype(np.float32))
        ga = g * _const(wa) if c.needs[0] else None
        gb = g * _const(1.0 - wa) if c.needs[1] else None
    return [None if ga is None else _reduce_to(ga, sa), None if gb is None else _reduce_to(gb, sb)]


def _swiglu(c, g):
    # silu(a)·b: d a = g·b·silu'(a), silu'(a) = s·(1 + a·(1 - s)), s = sigmoid(a); d b = g·silu(a)
    a, b = c.saved[0], c.saved[1]
    s = a.sigmoid()
    return [g * b * (s * (1.0 + a * (1.0 - s))) if c.needs[0] else None, g * (a * s) if c.needs[1] else None]


def _where(c, g):
    cond = _np(c.saved[0])
    m = np.broadcast_to(cond, tuple(g.shape)).astype(np.float32)
    out = [None, None, None]
    if c.needs[1]:
        out[1] = _reduce_to(g * _const(m), c.shapes[1])
    if c.needs[2]:
        out[2] = _reduce_to(g * _const(1.0 - m), c.shapes[2])
    return out


def _eltwise(c, g):
    """The unary ops of csrc/ops/unary.c: ctx saved_output says whether saved[0] is the output (use-dst backward)."""
    op, s0, from_out = c.op, c.saved[0], bool(c.ctx["saved_output"])
    if op == "NEG":
        return [-g]
    if op == "EXP":
        return [g * (s0 if from_out else s0.exp())]
    if op == "RELU":
        return [_T().where(s0.detach() > 0, g, 0.0)]
    if op == "SIGMOID":
        y = s0 if from_out else s0.sigmoid()
        return [g * y * (1.0 - y)]
    if op == "TANH":
        y = s0 if from_out else s0.tanh()
        return [g * (1.0 - y * y)]
    if op == "SQRT":
        y = s0 if from_out else s0.sqrt()
        return [g / (2.0 * y)]
    if op == "LOG":
        x = s0.exp() if from_out else s0
        return [g / x]
    if op == "ABS":
        if from_out:
            _not_implemented(op, "abs saved its output")
        x = _np(s0)
        return [g * _const(np.sign(x))]
    if op == "SILU":
        if from_out:
            _not_implemented(op, "silu saved its output")
        s = s0.sigmoid()
        return [g * (s * (1.0 + s0 * (1.0 - s)))]
    if op == "GELU_TANH":  # 0.5·x·(1 + tanh(u)), u = √(2/π)·(x + 0.044715·x³): composite, exact at every order
        if from_out:
            _not_implemented(op, "gelu saved its output")
        k = float(np.sqrt(2.0 / np.pi))
        t = ((s0 + s0 * s0 * s0 * 0.044715) * k).tanh()
        return [g * ((1.0 + t) * 0.5 + s0 * (1.0 - t * t) * (1.0 + s0 * s0 * (3 * 0.044715)) * (0.5 * k))]
    _not_implemented(op)


def _pow(c, g):
    p, x = c.ctx["exponent"], c.saved[0]
    if p == 0.0:
        return [g * 0.0]
    if p == 1.0:
        return [g]
    if p == 2.0:
        return [g * x * 2.0]
    return [g * (x ** (p - 1.0)) * p]


def _clamp(c, g):
    x = c.saved[0].detach()
    lo, hi = float(np.float32(c.ctx["min"])), float(np.float32(c.ctx["max"]))
    inside = x >= lo if np.isfinite(lo) else None
    if np.isfinite(hi):
        inside = x <= hi if inside is None else inside & (x <= hi)
    return [g if inside is None else _T().where(inside, g, 0.0)]


def _leaky_relu(c, g):
    # masks by C ops (no NumPy round trip): the discriminator's activations can be large
    return [_T().where(c.saved[0].detach() > 0, g, g * c.ctx["negative_slope"])]


def _softplus(c, g):
    # d/dx softplus = sigmoid(beta·x), and 1 above the threshold
    z = c.saved[0] * c.ctx["beta"]
    return [_T().where(z.detach() > c.ctx["threshold"], g, g * z.sigmoid())]


def _kept_shape(c):
    mask, shape = c.ctx["dim_mask"], c.shapes[0]
    kshape = tuple(1 if mask >> d & 1 else s for d, s in enumerate(shape))
    count = 1
    for d, s in enumerate(shape):
        if mask >> d & 1:
            count *= s
    return kshape, count


def _reduce(c, g):
    shape = tuple(c.shapes[0])
    kshape, count = _kept_shape(c)
    gx = g.reshape(kshape)
    if c.op == "MEAN":
        gx = gx * (1.0 / count) if count else gx
    elif c.op in ("AMAX", "AMIN"):  # ties share the gradient equally (torch's amax backward)
        x, y = _np(c.saved[0]), _np(c.saved[1]).reshape(kshape)
        hit = (x == y).astype(np.float32)
        mask_dims = tuple(d for d in range(len(shape)) if c.ctx["dim_mask"] >> d & 1)
        hit = hit / hit.sum(axis=mask_dims, keepdims=True)
        return [gx.expand(*shape) * _const(hit)] if shape else [gx * _const(hit)]
    return [gx.expand(*shape) if shape else gx]


def _reshape(c, g):
    return [g.reshape(tuple(c.shapes[0]))]


def _expand(c, g):
    return [_reduce_to(g, c.shapes[0])]


def _permute(c, g):
    perm = c.ctx["perm"]
    nd = len(perm)
    inv = [0] * nd
    for d, p in enumerate(perm):
        inv[p] = d
    return [g.permute(*inv)]


def _zero_pad(g, lo, hi):
    if not any(lo) and not any(hi):
        return g
    return _C.pad(g, tuple(lo), tuple(hi), 0, 0.0)


def _slice(c, g):
    shape = tuple(c.shapes[0])
    nd = len(shape)
    start, step = c.ctx["start"], c.ctx["step"]
    for d in range(nd):
        n, a, s, L = shape[d], start[d], step[d], g.shape[d]
        if s > 1 and L > 0:  # put s - 1 zeros after each kept element: (.., L, ..) -> (.., L*s, ..)
            sh = tuple(g.shape)
            g = g.reshape(sh[:d + 1] + (1,) + sh[d + 1:])
            hi = [0] * (nd + 1)
            hi[d + 1] = s - 1
            g = _zero_pad(g, [0] * (nd + 1), hi).reshape(sh[:d] + (L * s,) + sh[d + 1:])
            L *= s
        lo, hi = [0] * nd, [0] * nd
        lo[d], hi[d] = a, n - a - L  # hi < 0 crops the zeros past the end
        g = _zero_pad(g, lo, hi)
    return [g]


def _pad(c, g):
    if c.ctx["mode"] != 0:
        _not_implemented("PAD", "only constant padding has a double-backward rule")
    lo, hi = c.ctx["lo"], c.ctx["hi"]
    return [_zero_pad(g, [-v for v in lo], [-v for v in hi])]


def _cat(c, g):
    dim, sizes = c.ctx["dim"], c.ctx["sizes"]
    out, off = [], 0
    for i, size in enumerate(sizes):
        if size < 0:
            out.append(None)
            continue
        if c.needs[i]:
            idx = (slice(None),) * dim + (slice(off, off + size),)
            out.append(g[idx])
        else:
            out.append(None)
        off += size
    return out


def _matmul(c, g):
    a, b = c.saved[0], c.saved[1]
    sa, sb = tuple(c.shapes[0]), tuple(c.shapes[1])
    a2 = (1,) + sa if len(sa) == 1 else sa
    b2 = sb + (1,) if len(sb) == 1 else sb
    batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    g2 = g.reshape(tuple(batch) + (a2[-2], b2[-1]))
    out = [None, None]
    if c.needs[0]:
        bt = b.reshape(b2).transpose(-1, -2)
        out[0] = _reduce_to(g2 @ bt, a2).reshape(sa)
    if c.needs[1]:
        at = a.reshape(a2).transpose(-1, -2)
        out[1] = _reduce_to(at @ g2, b2).reshape(sb)
    return out


def _linear(c, g):
    x, w = c.saved[0], c.saved[1]
    sx, sw = tuple(c.shapes[0]), tuple(c.shapes[1])
    out = [None, None, None]
    if c.needs[0]:
        out[0] = g @ w
    if c.needs[1]:
        out[1] = g.reshape(-1, sw[0]).transpose(0, 1) @ x.reshape(-1, sw[1])
    if c.needs[2]:
        out[2] = g.reshape(-1, sw[0]).sum(dim=0)
    return out


def _conv(c, g):
    geo = c.ctx  # the conv geometry (MMU_CONV_GEOM_FIELDS)
    if geo["G"] != 1:
        _not_implemented(c.op, f"groups={geo['G']} (only groups=1 has a rule)")
    sp = geo["sp"]
    x, w = c.saved[0], c.saved[1]
    sx = tuple(c.shapes[0])
    unbatched = len(sx) == sp + 1
    if unbatched:
        g = g.reshape((1,) + tuple(g.shape))
        if x is not None:
            x = x.reshape((1,) + sx)
    k, s, d = geo["k"], geo["stride"], geo["dilation"]
    pl, pr, size_in, size_out = geo["pad_l"], geo["pad_r"], geo["in"], geo["out"]
    out = [None, None, None]
    perm = (1, 0) + tuple(range(2, sp + 2))
    crop = (slice(None), slice(None))
    if geo["transposed"]:
        # y = conv_transpose(x, w), w (IC, OC, k): dx = conv(g, w) (w is already a conv weight OC -> IC),
        # dw = the weight gradient of that conv with g as its input and x as its output gradient
        if c.needs[0]:
            gx = _C.conv(sp, g, w, None, s, pl, pl, d, 1)
            gx = gx[crop + tuple(slice(0, i) for i in size_in)]
            out[0] = gx.reshape(sx) if unbatched else gx
        if c.needs[1]:
            r = _C.conv(sp, g.permute(*perm), x.permute(*perm), None, d, pl, pl, s, 1)
            out[1] = r[crop + tuple(slice(0, kk) for kk in k)].permute(*perm)
        if c.needs[2]:
            out[2] = g.sum(dim=(0,) + tuple(range(2, sp + 2)))
        return out
    if c.needs[0]:
        # dx = conv_transpose(g, w): the full output (out-1)*s + d*(k-1) + 1 (+ output_padding),
        # cropped by pad_l on the left; the cells past pad_l + in are dropped
        full = [(o - 1) * st + dl * (kk - 1) + 1 for o, st, dl, kk in zip(size_out, s, d, k)]
        if pl == pr:
            op = [i - (f - 2 * p) for i, f, p in zip(size_in, full, pl)]
            gx = _C.conv_transpose(sp, g, w, None, s, pl, tuple(op), 1, d)
        else:
            op = [max(0, p + i - f) for p, i, f in zip(pl, size_in, full)]
            gx = _C.conv_transpose(sp, g, w, None, s, (0,) * sp, tuple(op), 1, d)
            lo = [0, 0] + [-p for p in pl]
            hi = [0, 0] + [-(f + o - p - i) for f, o, p, i in zip(full, op, pl, size_in)]
            gx = _zero_pad(gx, lo, hi)
        out[0] = gx.reshape(sx) if unbatched else gx
    if c.needs[1]:
        # dw[oc, c, kk] = sum_{n, o} g[n, oc, o] x[n, c, o*s + kk*d - p]: a conv of x (as C images of
        # N channels) with g (as OC filters of N channels), stride and dilation swapped
        r = _C.conv(sp, x.permute(*perm), g.permute(*perm), None, d, pl, pr, s, 1)
        r = r[(slice(None), slice(None)) + tuple(slice(0, kk) for kk in k)]
        out[1] = r.permute(*perm)
    if c.needs[2]:
        out[2] = g.sum(dim=(0,) + tuple(range(2, sp + 2)))
    return out


def _group_norm(c, g):
    ctx = c.ctx
    N, C, S, G, eps = ctx["N"], ctx["C"], ctx["S"], ctx["G"], ctx["eps"]
    x, w = c.saved[0], c.saved[1]
    sx = tuple(c.shapes[0])
    # the forward again, differentiably: per (n, group) statistics over cpg * S values
    xg = x.reshape(N, G, -1)
    xc = xg - xg.mean(dim=-1, keepdim=True)
    rstd = ((xc * xc).mean(dim=-1, keepdim=True) + eps) ** -0.5
    xhat = xc * rstd
    cshape = (1, C) + (1,) * (len(sx) - 2)
    if c.op == "GROUP_NORM_SILU":
        # silu(z), z = xhat·w + b: the GroupNorm rule below runs on dz = g·silu'(z), itself a
        # differentiable function of x, w, b (saved[4] is the bias, None without one)
        b = c.saved[4]
        z = xhat.reshape(sx)
        if w is not None:
            z = z * w.reshape(cshape)
        if b is not None:
            z = z + b.reshape(cshape)
        s = z.sigmoid()
        g = g * (s * (1.0 + z * (1.0 - s)))
    out = [None, None, None]
    if c.needs[0]:
        gxh = (g * w.reshape(cshape) if w is not None else g).reshape(N, G, -1)
        gx = rstd * (gxh - gxh.mean(dim=-1, keepdim=True) - xhat * (gxh * xhat).mean(dim=-1, keepdim=True))
        out[0] = gx.reshape(sx)
    red = (0,) + tuple(range(2, len(sx)))
    if c.needs[1]:
        out[1] = (g * xhat.reshape(sx)).sum(dim=red)
    if c.needs[2]:
        out[2] = g.sum(dim=red)
    return out


def _avg_pool2d(c, g):
    (kh, kw), (sh, sw), (ph, pw) = c.ctx["kernel"], c.ctx["stride"], c.ctx["padding"]
    divisor, include_pad = c.ctx["divisor"], c.ctx["count_include_pad"]
    sx = tuple(c.shapes[0])
    H, W = sx[-2], sx[-1]
    OH, OW = c.out_shape[-2], c.out_shape[-1]
    plain = (OH == (H + 2 * ph - kh) // sh + 1 and OW == (W + 2 * pw - kw) // sw + 1)
    if divisor or not plain or not (include_pad or (ph == 0 and pw == 0)):
        _not_implemented("AVG_POOL2D", "only the fixed k*k divisor (no ceil_mode, count_include_pad or no "
                         "padding, no divisor_override) has a rule")
    # dx = conv_transpose of each channel with a constant 1/(kh*kw) kernel
    gg = g.reshape(-1, 1, OH, OW)
    wk = _const(np.full((1, 1, kh, kw), 1.0 / (kh * kw), np.float32))
    op = (H - ((OH - 1) * sh - 2 * ph + kh), W - ((OW - 1) * sw - 2 * pw + kw))
    gx = _C.conv_transpose(2, gg, wk, None, (sh, sw), (ph, pw), op, 1, (1, 1))
    return [gx.reshape(sx)]


def _batch_norm(c, g):
    """BATCH_NORM (csrc/ops/batch_norm.c): inputs (x, weight, bias); saved x, weight, mean (C),
    rstd (C), mean_lo; ctx N, C, S, training, eps. Training: the batch statistics recomputed
    differentiably, dx = w·rstd·(g - mean(g) - xhat·mean(g·xhat)) per channel; eval: the running
    statistics are constants, dx = w·rstd·g."""
    C, training = c.ctx["C"], c.ctx["training"]
    x, w = c.saved[0], c.saved[1]
    sx = tuple(c.shapes[0])
    red = (0,) + tuple(range(2, len(sx)))
    cshape = (1, C) + (1,) * (len(sx) - 2)
    out = [None, None, None]
    if training:
        eps = c.ctx["eps"]
        xc = x - x.mean(dim=red, keepdim=True)
        rstd = ((xc * xc).mean(dim=red, keepdim=True) + eps) ** -0.5
        xhat = xc * rstd
        if c.needs[0]:
            gxh = g * w.reshape(cshape) if w is not None else g
            out[0] = rstd * (gxh - gxh.mean(dim=red, keepdim=True)
                             - xhat * (gxh * xhat).mean(dim=red, keepdim=True))
    else:
        rstd = _const(_np(c.saved[3]).reshape(cshape))
        xhat = (x - _const(_np(c.saved[2]).reshape(cshape))) * rstd if c.needs[1] else None
        if c.needs[0]:
            out[0] = g * (w.reshape(cshape) * rstd if w is not None else rstd)
    if c.needs[1]:
        out[1] = (g * xhat).sum(dim=red)
    if c.needs[2]:
        out[2] = g.sum(dim=red)
    return out


def _softmax(c, g):
    d, y = c.ctx["dim"], c.saved[0]  # the output, attached to this node
    if c.op == "SOFTMAX":
        return [y * (g - (g * y).sum(dim=d, keepdim=True))]
    return [g - y.exp() * g.sum(dim=d, keepdim=True)]


def _layer_norm(c, g):
    rows, cols, eps = c.ctx["rows"], c.ctx["cols"], c.ctx["eps"]
    x, w = c.saved[0], c.saved[1]
    sx = tuple(c.shapes[0])
    x2, g2 = x.reshape(rows, cols), g.reshape(rows, cols)
    xc = x2 - x2.mean(dim=1, keepdim=True)
    rstd = ((xc * xc).mean(dim=1, keepdim=True) + eps) ** -0.5
    xhat = xc * rstd
    out = [None, None, None]
    if c.needs[0]:
        gxh = g2 * w.reshape(1, cols) if w is not None else g2
        gx = rstd * (gxh - gxh.mean(dim=1, keepdim=True) - xhat * (gxh * xhat).mean(dim=1, keepdim=True))
        out[0] = gx.reshape(sx)
    if c.needs[1]:
        out[1] = (g2 * xhat).sum(dim=0).reshape(tuple(c.shapes[1]))
    if c.needs[2]:
        out[2] = g2.sum(dim=0).reshape(tuple(c.shapes[2]))
    return out


def _regression_loss(c, g):
    """MSE / L1 / SMOOTH_L1 / HUBER (csrc/loss/reconstruction.c): ctx reduction (0 none, 1 mean,
    2 sum), kind (0 mse, 1 l1, 2 smooth l1, 3 huber), param (beta / delta); saved
    input, target. The elementwise derivative in d = x - t, differentiable where it is not constant."""
    x, t = c.saved[0], c.saved[1]
    red, kind, p = c.ctx["reduction"], c.ctx["kind"], c.ctx["param"]
    if kind == 0:
        d = (x - t) * 2.0
    else:
        dn = _np(x) - _np(t)
        sign = np.sign(dn)
        if kind == 1:
            d = _const(sign)
        else:
            inside = _const(np.abs(dn) < p)
            d = (x - t) * inside * (1.0 / p if kind == 2 else 1.0) + _const(
                np.where(np.abs(dn) < p, 0.0, sign * (1.0 if kind == 2 else p)))
    if red == 1:
        d = d * (1.0 / max(x.numel(), 1))
    gx = d * g  # g is () for mean / sum: it broadcasts
    return [gx if c.needs[0] else None, -gx if c.needs[1] else None]


def _upsample_nearest(c, g):
    nsp, scales = c.ctx["nsp"], c.ctx["scale"]
    sx, so = tuple(c.shapes[0]), tuple(c.out_shape)
    ks = []
    for k in range(nsp):
        i, o, sf = sx[-nsp + k], so[-nsp + k], scales[k]
        if i == 0 or o % i or (sf > 0 and sf != o // i):
            _not_implemented("UPSAMPLE_NEAREST", "only integer scale factors have a rule")
        ks.append(o // i)
    lead = sx[:len(sx) - nsp]
    split = lead + tuple(v for k in range(nsp) for v in (sx[-nsp + k], ks[k]))
    dims = tuple(len(lead) + 2 * k + 1 for k in range(nsp))
    return [g.reshape(split).sum(dim=dims).reshape(sx)]


def _rms_norm(c, g):
    rows, cols, eps = c.ctx["rows"], c.ctx["cols"], c.ctx["eps"]
    x, w = c.saved[0], c.saved[1]
    sx = tuple(c.shapes[0])
    x2, g2 = x.reshape(rows, cols), g.reshape(rows, cols)
    rstd = ((x2 * x2).mean(dim=1, keepdim=True) + eps) ** -0.5
    xhat = x2 * rstd
    out = [None, None]
    if c.needs[0]:
        gxh = g2 * w.reshape(1, cols) if w is not None else g2
        out[0] = (rstd * (gxh - xhat * (gxh * xhat).mean(dim=1, keepdim=True))).reshape(sx)
    if c.needs[1]:
        out[1] = (g2 * xhat).sum(dim=0).reshape(tuple(c.shapes[1]))
    return out


def _sort(c, g):
    """SORT, TOPK: the backward puts g[j] at indices[j] along dim (distinct positions, zeros elsewhere).
    Written as a gather, which is differentiable: each input position reads its slot of g, or a zero
    appended after the k slots when topk did not select it."""
    shape = tuple(c.shapes[0])
    if not shape:
        return [g]
    dim, idx = c.ctx["dim"], _np(c.saved[0])
    k = idx.shape[dim]
    slot = np.full(shape, k, np.int64)
    ranks = np.arange(k, dtype=np.int64).reshape([k if d == dim else 1 for d in range(len(shape))])
    np.put_along_axis(slot, idx, np.broadcast_to(ranks, idx.shape), axis=dim)
    T = _T()
    zero = T.zeros(*[1 if d == dim else s for d, s in enumerate(shape)])
    return [T.gather(T.cat([g, zero], dim), dim, T.tensor(slot))]


def _cumsum(c, g):
    """CUMSUM: the backward is the running sum taken the other way (linear in g)."""
    return [_C.cumsum(g, c.ctx["dim"], not c.ctx["reverse"])]


def _masked_fill(c, g):
    return [_reduce_to(_T().where(c.saved[0], 0.0, g), c.shapes[0])]


_RULES = {
    "ADD": _binary, "SUB": _binary, "MUL": _binary, "DIV": _binary, "MAXIMUM": _binary, "MINIMUM": _binary,
    "WHERE": _where,
    "NEG": _eltwise, "EXP": _eltwise, "LOG": _eltwise, "SQRT": _eltwise, "ABS": _eltwise, "TANH": _eltwise,
    "SIGMOID": _eltwise, "RELU": _eltwise, "SILU": _eltwise, "GELU_TANH": _eltwise,
    "POW": _pow, "CLAMP": _clamp, "LEAKY_RELU": _leaky_relu, "SOFTPLUS": _softplus, "SWIGLU": _swiglu,
    "SUM": _reduce, "MEAN": _reduce, "AMAX": _reduce, "AMIN": _reduce, "CUMSUM": _cumsum,
    "SORT": _sort, "TOPK": _sort,
    "RESHAPE": _reshape, "EXPAND": _expand, "PERMUTE": _permute, "SLICE": _slice, "CAT": _cat, "PAD": _pad,
    "MATMUL": _matmul, "LINEAR": _linear, "CONV": _conv, "CONV_TRANSPOSE": _conv,
    "GROUP_NORM": _group_norm, "GROUP_NORM_SILU": _group_norm, "AVG_POOL2D": _avg_pool2d, "BATCH_NORM": _batch_norm,
    "SOFTMAX": _softmax, "LOG_SOFTMAX": _softmax, "LAYER_NORM": _layer_norm,
    "RMS_NORM": _rms_norm, "MASKED_FILL": _masked_fill,
    "MSE_LOSS": _regression_loss, "L1_LOSS": _regression_loss, "SMOOTH_L1_LOSS": _regression_loss,
    "HUBER_LOSS": _regression_loss, "UPSAMPLE_NEAREST": _upsample_nearest,
}


# The ops of the op table with no rule, and why: grad(create_graph=True) through one of them raises
# NotImplementedError naming the op and this reason (tests/test_op_table.py checks that every op has a
# rule above or an entry here).
_NO_RULE_FUSED = ("a fused C kernel forward and backward; no differentiable rule is written (compose the "
                  "loss from mmu ops to differentiate its gradient)")
_NO_RULE_SCATTER = "its backward is a scatter-add, and mmu has no differentiable scatter op to write the rule with"
NO_DOUBLE_BACKWARD = {
    "GELU": "exact (erf) GELU has no rule yet; approximate='tanh' (GELU_TANH) has one",
    "GATHER": _NO_RULE_SCATTER, "INDEX_SELECT": _NO_RULE_SCATTER, "EMBEDDING": _NO_RULE_SCATTER,
    "MASKED_SELECT": _NO_RULE_SCATTER, "MAX_POOL2D": _NO_RULE_SCATTER,
    "NORMALIZE": "no rule written yet; x / x.norm(p, dim, keepdim=True).clamp(min=eps) composes it",
    "UPSAMPLE_BILINEAR": "its backward (a transposed bilinear resampling) has no differentiable mmu op yet",
    "DROPOUT": "the mask is regenerated from the Philox stream inside the C backward; no rule reuses it yet",
    "SDPA": "fused attention; softmax(q @ k.transpose(-1, -2) * scale) @ v composes it differentiably",
    "ROTARY": "no rule written yet; x * cos + rotate_half(x) * sin composes it",
    "QKV_HEADS": "fused heads + QK-norm + RoPE; reshape, permute, split, layer_norm / rms_norm and apply_rotary "
                 "compose it",
    "SDPA_PACKED": "fused attention over packed heads; slicing q, k, v and softmax(q @ k.transpose(-1, -2) * scale) "
                   "@ v compose it",
    "WINDOW_ATTENTION": "fused window attention; reshape/permute into windows and softmax(q @ k.transpose(-1, -2) * "
                        "scale + bias) @ v compose it",
    "TEMPORAL_ATTENTION": "fused per-location attention; permuting to (B, H, L, T, d) and scaled_dot_product_attention "
                          "compose it",
    "FSQ": "straight-through rounding; no rule written",
    "LFQ_ENTROPY": _NO_RULE_FUSED, "CROSS_ENTROPY": _NO_RULE_FUSED, "LOGIT_LAPLACE_LOSS": _NO_RULE_FUSED,
    "CLIP_LOSS": _NO_RULE_FUSED, "SIGLIP_LOSS": _NO_RULE_FUSED, "LPIPS_DISTANCE": _NO_RULE_FUSED,
}


def has_rule(op):
    """Whether op (an op-table name such as 'CONV') has a double-backward rule."""
    return op in _RULES


# ----------------------------------------------------------------- engine
def _acc(a, b):
    return b if a is None else a + b


def grad_create_graph(outs, gouts, ins, retain_graph, allow_unused):
    """autograd.grad(create_graph=True): see mmu.autograd.grad."""
    T = _T()
    n_in = len(ins)
    results = [None] * n_in
    reached = [False] * n_in
    leaf_targets, node_targets = {}, {}
    for k, t in enumerate(ins):
        if not t.requires_grad:
            raise RuntimeError(f"autograd.grad: input {k} (shape {tuple(t.shape)}) does not require grad; only "
                               "tensors with requires_grad=True (or produced from them) can be differentiated")
        node, tid = _C.graph_node(t)
        if node is None:
            leaf_targets.setdefault(tid, []).append(k)
        else:
            node_targets.setdefault(node, []).append(k)

    roots = []
    for i, y in enumerate(outs):
        if not y.requires_grad:
            raise RuntimeError(f"autograd.grad: output {i} (shape {tuple(y.shape)}) does not require grad and "
                               "does not have a grad_fn")
        go = gouts[i] if gouts is not None else None
        if go is None:
            if y.numel() != 1:
                raise RuntimeError(f"autograd.grad: grad can be implicitly created only for scalar outputs; output "
                                   f"{i} has shape {tuple(y.shape)}, pass grad_outputs")
            go = T.ones_like(y)
        elif tuple(go.shape) != tuple(y.shape) or go.dtype != T.float32:
            raise ValueError(f"autograd.grad: grad_outputs[{i}] has shape {tuple(go.shape)} ({go.dtype}) but output "
                             f"{i} has shape {tuple(y.shape)} (float32)")
        node, tid = _C.graph_node(y)
        if node is None:
            for k in leaf_targets.get(tid, ()):
                results[k] = _acc(results[k], go)
                reached[k] = True
            continue
        if node.released:
            raise RuntimeError("autograd.grad: trying to backward through the graph a second time; its saved "
                               "tensors were freed (pass retain_graph=True to the first backward or grad)")
        roots.append((node, go))

    # 1. collect in post-order (producers before consumers)
    edges, order, seen = {}, [], set()
    for root, _ in roots:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, 0)]
        edges[root] = root.inputs
        while stack:
            n, i = stack[-1]
            es = edges[n]
            if i < len(es):
                stack[-1] = (n, i + 1)
                fn = es[i][0]
                if isinstance(fn, _C.Node) and fn not in seen:
                    seen.add(fn)
                    edges[fn] = fn.inputs
                    stack.append((fn, 0))
                continue
            order.append(n)
            stack.pop()

    # 2. prune: a node runs if an edge leads to a requested leaf or to a wanted node
    want, run, keep = {}, {}, {}
    for n in order:
        kept = []
        for fn, tid, _ in edges[n]:
            if isinstance(fn, _C.Node):
                kept.append(want.get(fn, False))
            else:
                kept.append(fn is not None and tid in leaf_targets)
        keep[n] = kept
        run[n] = any(kept)
        want[n] = run[n] or n in node_targets
        if n.released and n not in node_targets:
            raise RuntimeError(f"autograd.grad: trying to backward through the graph a second time (node {n.op} "
                               "was already freed; pass retain_graph=True)")
        if run[n] and n.op not in _RULES:
            _not_implemented(n.op, NO_DOUBLE_BACKWARD.get(n.op, ""))
        for (fn, tid, _), kp in zip(edges[n], kept):
            if kp and not isinstance(fn, _C.Node):
                for k in leaf_targets[tid]:
                    reached[k] = True
    pending = {n: 0 for n in order}
    for n in order:
        if run[n]:
            for (fn, _, _), kp in zip(edges[n], keep[n]):
                if kp and isinstance(fn, _C.Node):
                    pending[fn] += 1

    # 3. Kahn, with grad mode on so every gradient records its graph
    acc = {}
    for node, go in roots:
        acc[node] = _acc(acc.get(node), go)
    ready = [n for n in reversed(order) if want[n] and pending[n] == 0]
    with enable_grad():
        while ready:
            n = ready.pop()
            g = acc.pop(n, None)
            for k in node_targets.get(n, ()):
                reached[k] = True
                if g is not None:
                    results[k] = _acc(results[k], g)
            if not run[n]:
                continue
            es, kept = edges[n], keep[n]
            gin = [None] * len(es)
            if g is not None:
                if n.released:
                    raise RuntimeError(f"autograd.grad: trying to backward through the graph a second time (node "
                                       f"{n.op} was already freed; pass retain_graph=True)")
                gin = _RULES[n.op](_Ctx(n, es, kept), g)
            for (fn, tid, shape), kp, gi in zip(es, kept, gin):
                if not kp:
                    continue
                if gi is not None and tuple(gi.shape) != tuple(shape):
                    raise RuntimeError(f"double backward of {n.op} produced a gradient of shape {tuple(gi.shape)} "
                                       f"for an input of shape {tuple(shape)} (internal error)")
                if isinstance(fn, _C.Node):
                    if gi is not None:
                        acc[fn] = _acc(acc.get(fn), gi)
                    pending[fn] -= 1
                    if pending[fn] == 0:
                        ready.append(fn)
                elif gi is not None:
                    for k in leaf_targets[tid]:
                        results[k] = _acc(results[k], gi)
            if not retain_graph:
                n.release()

    out = []
    for k in range(n_in):
        if not reached[k]:
            if allow_unused:
                out.append(None)
                continue
            raise RuntimeError(f"autograd.grad: input {k} (shape {tuple(ins[k].shape)}) appears to not have been "
                               "used in the graph (the outputs do not depend on it); set allow_unused=True if this "
                               "is the desired behavior")
        out.append(results[k] if results[k] is not None else T.zeros(*ins[k].shape))
    return tuple(out)

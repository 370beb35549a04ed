"""Optimizer cases: one AdamW step and one clip_grad_norm_ over ~25M parameters shaped like a
small transformer (3 blocks of 768-wide attention + 768x3072 MLP, an embedding, biases, norms).

The AdamW update is memory-bound: per element it reads p, g, m, v and writes p, m, v (28 bytes).
mmu does that in one fused pass over all tensors (one C call per param group); torch is timed
in its three CPU modes: the default single-tensor loop, foreach=True, and fused=True.
clip_grad_norm_ is timed below max_norm (the reduction alone) and above it (reduction + scaling);
the EMA update against torch._foreach_lerp_ (what timm's ModelEmaV3 runs).
"""
import numpy as np

D, HID, VOCAB, BLOCKS = 768, 3072, 4096, 3


def _shapes():
    shapes = [(VOCAB, D)]
    for _ in range(BLOCKS):
        shapes += [(D,), (D,), (3 * D, D), (3 * D,), (D, D), (D,),  # norm1, qkv, proj
                   (D,), (D,), (HID, D), (HID,), (D, HID), (D,)]    # norm2, fc1, fc2
    return shapes + [(D,), (D,)]


def _inputs(rng):
    out = {}
    for i, s in enumerate(_shapes()):
        out[f"p{i}"] = rng.standard_normal(s, dtype=np.float32) * 0.02
        out[f"g{i}"] = rng.standard_normal(s, dtype=np.float32) * 1e-3
    return out


def _params(fw, x):
    n = len(_shapes())
    ps = [fw.tensor(x[f"p{i}"], requires_grad=True) for i in range(n)]
    for i, p in enumerate(ps):
        p.grad = fw.tensor(x[f"g{i}"])
    # weight decay on matrices only, as usual: two param groups
    return [{"params": [p for p in ps if p.ndim >= 2]}, {"params": [p for p in ps if p.ndim < 2], "weight_decay": 0.0}]


def _adamw(**torch_kw):
    def setup(fw, x):
        groups = _params(fw, x)
        kw = torch_kw if fw.name == "torch" else {}
        opt = fw.mod.optim.AdamW(groups, lr=1e-3, weight_decay=0.1, **kw)
        opt.step()  # creates the state: the timed calls are steady-state steps
        return opt.step
    return setup


def _clip(fw, x):
    ps = [p for g in _params(fw, x) for p in g["params"]]
    clip = fw.mod.optim.clip_grad_norm_ if fw.name == "mmu" else fw.mod.nn.utils.clip_grad_norm_
    # max_norm above the norm: the timed work is the reduction (the scaling is a plain multiply)
    return lambda: clip(ps, 1e9)


def _clip_scale(fw, x):
    ps = [p for g in _params(fw, x) for p in g["params"]]
    clip = fw.mod.optim.clip_grad_norm_ if fw.name == "mmu" else fw.mod.nn.utils.clip_grad_norm_
    return lambda: clip(ps, 1.0)  # norm ~5 > 1: reduction + in-place scaling every call


class _Model:
    """Just named_parameters(): what mmu.optim.EMA needs."""

    def __init__(self, ps):
        self.ps = ps

    def named_parameters(self):
        return ((f"p{i}", p) for i, p in enumerate(self.ps))


def _ema(fw, x):
    ps = [p for g in _params(fw, x) for p in g["params"]]
    if fw.name == "mmu":
        ema = fw.mod.optim.EMA(_Model(ps), decay=0.999, warmup=False)
        return ema.update
    # torch: the usual fast EMA (timm's ModelEmaV3): one foreach lerp over the shadow copies
    torch = fw.mod
    shadow = [p.detach().clone() for p in ps]
    live = [p.detach() for p in ps]

    def update():
        with torch.no_grad():
            torch._foreach_lerp_(shadow, live, 1.0 - 0.999)
    return update


def cases(h):
    n = sum(int(np.prod(s)) for s in _shapes())
    assert 24e6 < n < 26e6, n
    return [
        h.Case("adamw_step_25m", None, _inputs, _adamw(), _adamw()),
        h.Case("adamw_step_25m_foreach", None, _inputs, _adamw(), _adamw(foreach=True)),
        h.Case("adamw_step_25m_fused", None, _inputs, _adamw(), _adamw(fused=True)),
        h.Case("clip_grad_norm_25m", None, _inputs, _clip, _clip),
        h.Case("clip_grad_norm_scale_25m", None, _inputs, _clip_scale, _clip_scale),
        h.Case("ema_update_25m", None, _inputs, _ema, _ema),
    ]

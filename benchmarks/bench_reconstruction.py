"""Reconstruction loss cases, forward+backward on decoder-output-sized maps (8×3×64×64 and
32×3×256×256): smooth L1, Huber and DALL-E's logit-Laplace NLL.

mmu runs one fused C kernel each (csrc/loss/reconstruction.c); torch runs its own fused
smooth_l1_loss / huber_loss, and for logit-Laplace (which torch lacks) the formula as a
composition of ops, the way a torch dVAE computes it."""
import math

import numpy as np

SHAPES = {"small": (8, 3, 64, 64), "large": (32, 3, 256, 256)}


def _pair(shape):
    def inputs(rng):
        return {"x": rng.standard_normal(shape, dtype=np.float32),
                "y": rng.standard_normal(shape, dtype=np.float32)}
    return inputs


def _robust(h, name, p):
    def make(fw, d):
        x, y = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["y"])
        f = getattr(fw.mod.losses if fw.name == "mmu" else fw.mod.nn.functional, name)
        kw = {"beta": p} if name == "smooth_l1_loss" else {"delta": p}
        return h.fwd_bwd([x], lambda: f(x, y, **kw))
    return make


def _ll_inputs(shape):
    def inputs(rng):
        return {"x": rng.uniform(0, 1, shape).astype(np.float32),
                "mu": rng.standard_normal(shape, dtype=np.float32),
                "lb": (0.5 * rng.standard_normal(shape)).astype(np.float32)}
    return inputs


def _logit_laplace(h):
    def make(fw, d):
        x = fw.tensor(d["x"])
        mu, lb = fw.tensor(d["mu"], requires_grad=True), fw.tensor(d["lb"], requires_grad=True)
        if fw.name == "mmu":
            f = fw.mod.losses.logit_laplace_loss
            return h.fwd_bwd([mu, lb], lambda: f(x, mu, lb))

        def fwd():
            xp = x * 0.8 + 0.1
            lx, l1x = xp.log(), (1 - xp).log()
            return (lb + math.log(2.0) + (lx - l1x - mu).abs() * (-lb).exp() + lx + l1x).mean()
        return h.fwd_bwd([mu, lb], fwd)
    return make


def cases(h):
    out = []
    for tag, shape in SHAPES.items():
        out += [
            h.Case(f"smooth_l1_fwd_bwd_{tag}", None, _pair(shape), _robust(h, "smooth_l1_loss", 1.0),
                   _robust(h, "smooth_l1_loss", 1.0)),
            h.Case(f"huber_fwd_bwd_{tag}", None, _pair(shape), _robust(h, "huber_loss", 0.5),
                   _robust(h, "huber_loss", 0.5)),
            h.Case(f"logit_laplace_fwd_bwd_{tag}", None, _ll_inputs(shape), _logit_laplace(h), _logit_laplace(h)),
        ]
    return out

"""Contrastive loss cases: CLIP (symmetric InfoNCE, clamped learnable scale) and SigLIP (sigmoid,
learnable t and b) forward+backward at B = 1024, D = 512 on L2-normalised embeddings.

mmu runs one fused op each (one GEMM forward, one pass over the (B, B) similarities for the
log-sum-exps / softplus, one pass + two GEMMs backward); torch runs the formula: matmul, scale,
cross_entropy on the logits and their transpose (CLIP) / eye labels, logsigmoid, sum (SigLIP)."""
import math

import numpy as np

B, D = 1024, 512


def _inputs(rng):
    a = rng.standard_normal((B, D), dtype=np.float32)
    t = rng.standard_normal((B, D), dtype=np.float32)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return {"img": a, "txt": t}


def _clip(h):
    def make(fw, d):
        img, txt = (fw.tensor(d[k], requires_grad=True) for k in ("img", "txt"))
        ls = fw.tensor(np.float32(math.log(1 / 0.07)), requires_grad=True)
        if fw.name == "mmu":
            f = fw.mod.losses.clip_loss
            return h.fwd_bwd([img, txt, ls], lambda: f(img, txt, ls))
        F, labels = fw.mod.nn.functional, fw.mod.arange(B)

        def fwd():
            logits = ls.exp().clamp(max=100) * img @ txt.T
            return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
        return h.fwd_bwd([img, txt, ls], fwd)
    return make


def _siglip(h):
    def make(fw, d):
        img, txt = (fw.tensor(d[k], requires_grad=True) for k in ("img", "txt"))
        t = fw.tensor(np.float32(math.log(10.0)), requires_grad=True)
        b = fw.tensor(np.float32(-10.0), requires_grad=True)
        if fw.name == "mmu":
            f = fw.mod.losses.siglip_loss
            return h.fwd_bwd([img, txt, t, b], lambda: f(img, txt, t, b))
        torch = fw.mod
        F, labels = torch.nn.functional, 2 * torch.eye(B) - 1

        def fwd():
            logits = t.exp() * img @ txt.T + b
            return -F.logsigmoid(labels * logits).sum() / B
        return h.fwd_bwd([img, txt, t, b], fwd)
    return make


def cases(h):
    gemm = 3 * 2 * B * B * D  # one forward and two backward (B x D) x (D x B)-sized products
    return [
        h.Case("clip_loss_fwd_bwd_1024", gemm, _inputs, _clip(h), _clip(h)),
        h.Case("siglip_loss_fwd_bwd_1024", gemm, _inputs, _siglip(h), _siglip(h)),
    ]

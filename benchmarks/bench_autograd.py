"""autograd.grad cases: VQGAN's adaptive weight and an R1 gradient-penalty step.

adaptive_weight_decoder: a small conv decoder (z (4, 64, 16, 16) -> 3x3 convs 64 -> 64 -> 64 -> 3)
with an L1 reconstruction loss and a PatchGAN-like generator loss; the timed work is taming's
calculate_adaptive_weight on the retained graph: the gradients of both losses w.r.t. the last conv
weight, their norms and the clamped ratio. mmu.autograd.grad prunes the graph to the last layer
(one conv weight-gradient per loss, no input gradients); torch.autograd.grad does the same pruning.

r1_step_conv_d: the R1 penalty of a small conv discriminator (x (8, 3, 32, 32), 4x4 stride-2 convs
3 -> 32 -> 64 + GroupNorm, LeakyReLU 0.2, 3x3 conv to one logit map): forward, the input gradient
with create_graph=True, the penalty, and its backward to the discriminator's parameters (a double
backward through conv_transpose, group norm and leaky ReLU)."""
import numpy as np

B, C, H = 4, 64, 16


def _dec_inputs(rng):
    s = 0.05
    return {"z": rng.standard_normal((B, C, H, H), dtype=np.float32),
            "target": rng.standard_normal((B, 3, H, H), dtype=np.float32),
            "w0": rng.standard_normal((C, C, 3, 3), dtype=np.float32) * s,
            "w1": rng.standard_normal((C, C, 3, 3), dtype=np.float32) * s,
            "w2": rng.standard_normal((3, C, 3, 3), dtype=np.float32) * s,
            "d": rng.standard_normal((1, 3, 4, 4), dtype=np.float32) * s}


def _adaptive(fw, d):
    F = fw.F
    ws = [fw.tensor(d[k], requires_grad=True) for k in ("w0", "w1", "w2")]
    dw = fw.tensor(d["d"], requires_grad=True)
    z, target = fw.tensor(d["z"]), fw.tensor(d["target"])
    h = z
    for i, w in enumerate(ws):
        h = F.conv2d(h, w, None, padding=1)
        if i < 2:
            h = h.relu()
    nll = (h - target).abs().mean()
    g_loss = -F.conv2d(h, dw, None, stride=2, padding=1).mean()
    last = ws[-1]
    if fw.name == "mmu":
        from mmu.losses import adaptive_weight
        return lambda: adaptive_weight(nll, g_loss, last)
    torch = fw.mod

    def step():  # taming-transformers' calculate_adaptive_weight
        gn = torch.autograd.grad(nll, last, retain_graph=True)[0]
        gg = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
        return torch.clamp(torch.norm(gn) / (torch.norm(gg) + 1e-4), 0.0, 1e4).detach()
    return step


def _r1_inputs(rng):
    s = 0.05
    return {"x": rng.standard_normal((8, 3, 32, 32), dtype=np.float32),
            "w0": rng.standard_normal((32, 3, 4, 4), dtype=np.float32) * s,
            "b0": rng.standard_normal((32,), dtype=np.float32) * s,
            "w1": rng.standard_normal((64, 32, 4, 4), dtype=np.float32) * s,
            "g1": 1 + rng.standard_normal((64,), dtype=np.float32) * s,
            "b1": rng.standard_normal((64,), dtype=np.float32) * s,
            "w2": rng.standard_normal((1, 64, 3, 3), dtype=np.float32) * s}


def _r1(fw, d):
    F = fw.F
    p = {k: fw.tensor(d[k], requires_grad=True) for k in ("w0", "b0", "w1", "g1", "b1", "w2")}
    x = fw.tensor(d["x"], requires_grad=True)

    def disc(x):
        h = F.leaky_relu(F.conv2d(x, p["w0"], p["b0"], stride=2, padding=1), 0.2)
        h = F.group_norm(F.conv2d(h, p["w1"], None, stride=2, padding=1), 8, p["g1"], p["b1"])
        return F.conv2d(F.leaky_relu(h, 0.2), p["w2"], None, padding=1)

    if fw.name == "mmu":
        from mmu.losses import r1_penalty

        def step():
            for t in p.values():
                t.grad = None
            r1_penalty(disc(x), x).backward()
        return step
    torch = fw.mod

    def step():
        for t in p.values():
            t.grad = None
        (g,) = torch.autograd.grad(disc(x).sum(), x, create_graph=True)
        g.pow(2).reshape(g.shape[0], -1).sum(1).mean().backward()
    return step


def cases(h):
    # adaptive weight: two weight-gradient convs (3 <- 64, 3x3 over 16x16 maps, batch 4) + the D input grad
    aw_flops = 2 * 2 * B * 3 * C * 9 * H * H
    return [
        h.Case("adaptive_weight_decoder", aw_flops, _dec_inputs, _adaptive, _adaptive),
        h.Case("r1_step_conv_d", None, _r1_inputs, _r1, _r1),
    ]

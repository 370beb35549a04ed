"""GAN cases: batch_norm forward+backward (training mode, running stats updated) at 8 x 128 x 32 x 32
(and (N, C) = 4096 x 512),
and one PatchGAN discriminator step at 8 x 3 x 64 x 64 — taming-transformers' D update
(taming/modules/losses/vqperceptual.py): D forward on the real batch and on the (detached) fake
batch, hinge loss 0.5·(mean relu(1 - D(x)) + mean relu(1 + D(x̂))), backward, Adam step
(lr 2e-4, betas (0.5, 0.9) as VQGAN). NLayerDiscriminator(3, ndf=64, n_layers=3, BatchNorm).

mmu: one fused batch_norm op per norm layer (statistics + normalise per channel while it is in
L2; one fused backward), oneDNN convolutions, a fused Adam. torch: its own CPU kernels."""
import math

import numpy as np

BN_SHAPE = (8, 128, 32, 32)
GAN_SHAPE = (8, 3, 64, 64)


BN1D_SHAPE = (4096, 512)  # (N, C): the column-sum path of the kernel


def _bn_inputs(shape):
    def make(rng):
        C = shape[1]
        return {"x": rng.standard_normal(shape, dtype=np.float32), "w": rng.standard_normal(C, dtype=np.float32),
                "b": rng.standard_normal(C, dtype=np.float32), "g": rng.standard_normal(shape, dtype=np.float32)}
    return make


def _bn(h):
    def make(fw, d):
        x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
        C = d["x"].shape[1]
        rm, rv = fw.tensor(np.zeros(C, np.float32)), fw.tensor(np.ones(C, np.float32))
        return h.fwd_bwd([x, w, b], lambda: fw.F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5), fw.tensor(d["g"]))
    return make


def _gan_inputs(rng):
    return {"real": rng.standard_normal(GAN_SHAPE, dtype=np.float32),
            "fake": rng.standard_normal(GAN_SHAPE, dtype=np.float32)}


def _gan(h):
    def make(fw, d):
        real, fake = fw.tensor(d["real"]), fw.tensor(d["fake"])
        if fw.name == "mmu":
            mmu = fw.mod
            mmu.manual_seed(0)
            D = mmu.losses.NLayerDiscriminator(3, 64, 3, "batch")
            opt = mmu.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9))
            relu = mmu.relu if hasattr(mmu, "relu") else (lambda t: t.relu())
        else:
            from torch_twins import TwinNLayerDiscriminator  # taming's PatchGAN, the same layout
            torch = fw.mod
            D = TwinNLayerDiscriminator(3, 64, 3, "batch")
            opt = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.9))
            relu = torch.relu

        def step():
            opt.zero_grad()
            lr_, lf = D(real), D(fake)
            loss = 0.5 * (relu(1.0 - lr_).mean() + relu(1.0 + lf).mean())
            loss.backward()
            opt.step()
        return step
    return make


def _conv_flops(ndf=64, n_layers=3, size=64, batch=8):
    """forward FLOPs of the D convolutions (x3 for forward + backward), two batches."""
    fl, c_in, s, mult = 0, 3, size, 1
    chans = [ndf] + [ndf * min(2 ** n, 8) for n in range(1, n_layers + 1)] + [1]
    strides = [2] * n_layers + [1, 1]
    for c_out, st in zip(chans, strides):
        s = (s + 2 - 4) // st + 1
        fl += 2 * batch * c_out * s * s * c_in * 16
        c_in = c_out
    return 2 * 3 * fl


def cases(h):
    return [
        h.Case("batch_norm_fwd_bwd_8x128x32x32", None, _bn_inputs(BN_SHAPE), _bn(h), _bn(h)),
        h.Case("batch_norm_fwd_bwd_4096x512", None, _bn_inputs(BN1D_SHAPE), _bn(h), _bn(h)),
        h.Case("patchgan_d_step_8x3x64x64", _conv_flops(), _gan_inputs, _gan(h), _gan(h)),
    ]

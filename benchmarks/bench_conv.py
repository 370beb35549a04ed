"""Convolution cases, forward + backward (gradients of input, weight and bias): conv2d 3x3,
conv_transpose2d k4 s2 (a VQGAN-style upsampler) and a ViT patch embedding (k16 s16)."""


def conv2d_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fw_step(fw, [x, w, b], lambda: fw.F.conv2d(x, w, b, padding=1), d)


def conv_transpose2d_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fw_step(fw, [x, w, b], lambda: fw.F.conv_transpose2d(x, w, b, stride=2, padding=1), d)


def patch_embed_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fw_step(fw, [x, w, b], lambda: fw.F.conv2d(x, w, b, stride=16), d)


def fw_step(fw, leaves, forward, d):
    g = fw.tensor(d["g"])

    def step():
        for t in leaves:
            t.grad = None
        forward().backward(g)
    return step


def cases(h):
    # 2 * N * OC * OH * OW * IC * kh * kw per pass; forward, grad input, grad weight
    conv_flops = 3 * 2 * 8 * 128 * 64 * 64 * 128 * 9
    tconv_flops = 3 * 2 * 8 * 128 * 32 * 32 * 64 * 16
    return [
        h.Case("conv2d_3x3_fwd_bwd", conv_flops,
               lambda rng: {"x": h.randn(rng, 8, 128, 64, 64), "w": h.randn(rng, 128, 128, 3, 3) / 34,
                            "b": h.randn(rng, 128), "g": h.randn(rng, 8, 128, 64, 64)},
               conv2d_fwd_bwd, conv2d_fwd_bwd, report_peak=True),
        h.Case("conv_transpose2d_k4s2_fwd_bwd", tconv_flops,
               lambda rng: {"x": h.randn(rng, 8, 128, 32, 32), "w": h.randn(rng, 128, 64, 4, 4) / 45,
                            "b": h.randn(rng, 64), "g": h.randn(rng, 8, 64, 64, 64)},
               conv_transpose2d_fwd_bwd, conv_transpose2d_fwd_bwd, report_peak=True),
        # a ViT patch embedding (stride == kernel: mmu runs it as matmuls over the patches)
        h.Case("conv2d_patch16_fwd_bwd", 3 * 2 * 8 * 768 * 16 * 16 * 768,
               lambda rng: {"x": h.randn(rng, 8, 3, 256, 256), "w": h.randn(rng, 768, 3, 16, 16) / 28,
                            "b": h.randn(rng, 768), "g": h.randn(rng, 8, 768, 16, 16)},
               patch_embed_fwd_bwd, patch_embed_fwd_bwd),
    ]

"""Convolution cases, forward + backward (gradients of input, weight and bias): conv2d 3x3,
conv_transpose2d k4 s2 (a VQGAN-style upsampler) and a ViT patch embedding (k16 s16); and the depthwise
conv3d 3x3x3 of OmniTokenizer's PEG (groups == channels, padding 1) at the benchmark model's shape
(4 clips x 128 channels x 3 latent frames x 8 x 8), forward alone (no_grad) and forward + backward.

Depthwise conv3d before conv.c's direct kernel (oneDNN ran gemm:jit, an im2col and a one-channel gemm per
group) and after, 1 thread, ms (best of 15 x 20 calls, main and the branch alternating, load 11.5-12.5 on
2 cores); torch 2.13 in the same conditions (its backward of a depthwise conv3d is a slow path):
    shape                mmu before -> after           torch
    (4, 128, 3, 8, 8)    forward 5.1-6.7 -> 0.17-0.18   0.19-0.22
                         fwd + bwd 17-22 -> 1.8         7-20
    (2, 512, 5, 16, 16)  forward 46-71 -> 5.3-7.3 (*)   21-51
                         fwd + bwd 148-210 -> 20-26     143-251
(*) before the four-vector forward (0.42-0.69 -> 0.17 ms at the PEG shape); 2 threads at the PEG shape (load 11):
forward 4.5 -> 0.26, forward + backward 6.2 -> 0.90 ms.
"""


def conv2d_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fw_step(fw, [x, w, b], lambda: fw.F.conv2d(x, w, b, padding=1), d)


def conv_transpose2d_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fw_step(fw, [x, w, b], lambda: fw.F.conv_transpose2d(x, w, b, stride=2, padding=1), d)


def patch_embed_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fw_step(fw, [x, w, b], lambda: fw.F.conv2d(x, w, b, stride=16), d)


def depthwise_conv3d_fwd_bwd(fw, d):
    x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
    return fw_step(fw, [x, w, b], lambda: fw.F.conv3d(x, w, b, padding=1, groups=w.shape[0]), d)


def depthwise_conv3d_forward(fw, d):
    x, w, b = (fw.tensor(d[k]) for k in ("x", "w", "b"))

    def run():
        with fw.mod.no_grad():
            return fw.F.conv3d(x, w, b, padding=1, groups=w.shape[0])
    return run


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
    ] + [h.Case(f"depthwise_conv3d_peg_{kind}", 3 * 2 * 4 * 128 * 3 * 8 * 8 * 27 // (3 if kind == "forward" else 1),
                lambda rng: {"x": h.randn(rng, 4, 128, 3, 8, 8), "w": h.randn(rng, 128, 1, 3, 3, 3) / 5,
                             "b": h.randn(rng, 128), "g": h.randn(rng, 4, 128, 3, 8, 8)}, fn, fn)
         for kind, fn in (("forward", depthwise_conv3d_forward), ("fwd_bwd", depthwise_conv3d_fwd_bwd))]

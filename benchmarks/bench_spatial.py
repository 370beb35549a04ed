"""Benchmarks of the spatial family (norms, dropout, resampling): `python benchmarks/run.py --filter spatial`
or a case name. Every case runs forward + backward unless its name says fwd."""



def cases(h):
    def group_norm_fwd_bwd(fw, d):
        x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
        return h.fwd_bwd([x, w, b], lambda: fw.F.group_norm(x, 32, w, b, eps=1e-6), fw.tensor(d["g"]))

    def group_norm_fwd(fw, d):
        x, w, b = (fw.tensor(d[k]) for k in ("x", "w", "b"))
        return lambda: fw.F.group_norm(x, 32, w, b, eps=1e-6)

    def group_norm_silu_fwd_bwd(fw, d):  # mmu's fused op
        x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
        return h.fwd_bwd([x, w, b], lambda: fw.F.group_norm_silu(x, 32, w, b, eps=1e-6), fw.tensor(d["g"]))

    def group_norm_then_silu_fwd_bwd(fw, d):  # torch: the two ops taming's ResnetBlock runs
        x, w, b = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w", "b"))
        return h.fwd_bwd([x, w, b], lambda: fw.F.silu(fw.F.group_norm(x, 32, w, b, eps=1e-6)), fw.tensor(d["g"]))

    def rms_norm_fwd_bwd(fw, d):
        x, w = (fw.tensor(d[k], requires_grad=True) for k in ("x", "w"))
        return h.fwd_bwd([x, w], lambda: fw.F.rms_norm(x, (d["x"].shape[-1],), w), fw.tensor(d["g"]))

    def nearest_fwd(fw, d):
        x = fw.tensor(d["x"])
        return lambda: fw.F.interpolate(x, scale_factor=2, mode="nearest")

    def nearest_fwd_bwd(fw, d):
        x = fw.tensor(d["x"], requires_grad=True)
        return h.fwd_bwd([x], lambda: fw.F.interpolate(x, scale_factor=2, mode="nearest"), fw.tensor(d["g"]))

    def dropout_fwd_bwd(fw, d):
        x = fw.tensor(d["x"], requires_grad=True)
        return h.fwd_bwd([x], lambda: fw.F.dropout(x, 0.1, training=True), fw.tensor(d["g"]))

    def gn_inputs(rng):
        return {"x": h.randn(rng, 8, 128, 64, 64), "w": 1 + 0.1 * h.randn(rng, 128),
                "b": 0.1 * h.randn(rng, 128), "g": h.randn(rng, 8, 128, 64, 64)}

    return [
        # the case: VQGAN's GroupNorm(32, eps=1e-6) on an (8, 128, 64, 64) map
        h.Case("spatial_group_norm_fwd_bwd", None, gn_inputs, group_norm_fwd_bwd, group_norm_fwd_bwd),
        h.Case("spatial_group_norm_fwd", None, gn_inputs, group_norm_fwd, group_norm_fwd),
        # the same map through silu(norm(x)), as every taming ResnetBlock runs it
        h.Case("spatial_group_norm_silu_fwd_bwd", None, gn_inputs, group_norm_silu_fwd_bwd,
               group_norm_then_silu_fwd_bwd),
        h.Case("spatial_rms_norm_fwd_bwd", None,
               lambda rng: {"x": h.randn(rng, 4096, 768), "w": 1 + 0.1 * h.randn(rng, 768),
                            "g": h.randn(rng, 4096, 768)},
               rms_norm_fwd_bwd, rms_norm_fwd_bwd),
        # the VQGAN decoder's Upsample: nearest x2 of an (8, 256, 32, 32) map
        h.Case("spatial_interpolate_nearest2x_fwd", None,
               lambda rng: {"x": h.randn(rng, 8, 256, 32, 32)}, nearest_fwd, nearest_fwd),
        h.Case("spatial_interpolate_nearest2x_fwd_bwd", None,
               lambda rng: {"x": h.randn(rng, 8, 256, 32, 32), "g": h.randn(rng, 8, 256, 64, 64)},
               nearest_fwd_bwd, nearest_fwd_bwd),
        h.Case("spatial_dropout_fwd_bwd", None,
               lambda rng: {"x": h.randn(rng, 4096, 3072), "g": h.randn(rng, 4096, 3072)},
               dropout_fwd_bwd, dropout_fwd_bwd),
    ]

"""Benchmarks of max pooling and LPIPS: `python benchmarks/run.py --filter lpips`.

The LPIPS case is the tokenizer-training use: LPIPS-VGG(x, y).mean() forward + backward to x
(y constant, all weights frozen) at 8x3x64x64, against a torch re-implementation of the lpips
package (torch_twins.lpips_twin: torch.nn layers in torchvision's layout) with the same weights."""
import numpy as np


def cases(h):
    def pool_inputs(shape):
        def make(rng):
            x = h.randn(rng, *shape)
            return {"x": x}
        return make

    def pool_case(k, s):
        def setup(fw, d):
            x = fw.tensor(d["x"], requires_grad=True)
            g = None

            def fwd():
                return fw.F.max_pool2d(x, k, s)
            g = fw.tensor(np.ones(tuple(fwd().shape), np.float32))
            return h.fwd_bwd([x], fwd, g)
        return setup

    def dist_inputs(rng):
        return {"a": h.randn(rng, 8, 64, 64, 64), "b": h.randn(rng, 8, 64, 64, 64),
                "w": np.abs(h.randn(rng, 64)).astype(np.float32)}

    def dist_mmu(fw, d):
        a, b, w = fw.tensor(d["a"], requires_grad=True), fw.tensor(d["b"]), fw.tensor(d["w"])
        return h.fwd_bwd([a], lambda: fw.F.lpips_distance(a, b, w).mean())

    def dist_torch(fw, d):
        torch = fw.mod
        a, b, w = fw.tensor(d["a"], requires_grad=True), fw.tensor(d["b"]), fw.tensor(d["w"]).reshape(1, -1, 1, 1)

        def nt(x, eps=1e-10):
            return x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + eps)
        return h.fwd_bwd([a], lambda: fw.F.conv2d((nt(a) - nt(b)) ** 2, w).mean([2, 3], keepdim=True).mean())

    def lpips_inputs(net, size):
        def make(rng):
            from mmu.losses import LPIPS
            state = {k: v.numpy().copy() for k, v in LPIPS(net=net, pretrained=False, seed=0).state_dict().items()}
            x = rng.uniform(-1, 1, (8, 3, size, size)).astype(np.float32)
            y = np.clip(x + 0.2 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
            return {"x": x, "y": y, "state": state, "net": net}
        return make

    def lpips_mmu(fw, d):
        from mmu.losses import LPIPS
        model = LPIPS(net=d["net"], pretrained=False)
        model.load_state_dict(d["state"])
        x, y = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["y"])
        return h.fwd_bwd([x], lambda: model(x, y).mean())

    def lpips_torch(fw, d):
        from torch_twins import lpips_twin
        forward, _, _ = lpips_twin(d["state"], d["net"])
        x, y = fw.tensor(d["x"], requires_grad=True), fw.tensor(d["y"])
        return h.fwd_bwd([x], lambda: forward(x, y).mean())

    return [
        # VGG's pool: 2x2 / stride 2 after relu1_2 at 64x64
        h.Case("lpips_max_pool2d_2x2_fwd_bwd", None, pool_inputs((8, 64, 64, 64)), pool_case(2, 2),
               pool_case(2, 2)),
        # AlexNet's pool: 3x3 / stride 2 (overlapping) after relu1 at 224x224
        h.Case("lpips_max_pool2d_3x3s2_fwd_bwd", None, pool_inputs((8, 64, 55, 55)), pool_case(3, 2),
               pool_case(3, 2)),
        # one layer term (relu1_2 at 64x64): normalise, difference, lin, mean; grad to f0
        h.Case("lpips_distance_fwd_bwd", None, dist_inputs, dist_mmu, dist_torch),
        h.Case("lpips_vgg_fwd_bwd", None, lpips_inputs("vgg", 64), lpips_mmu, lpips_torch),
        h.Case("lpips_alex_fwd_bwd", None, lpips_inputs("alex", 64), lpips_mmu, lpips_torch),
    ]

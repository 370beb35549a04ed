"""Benchmarks of max pooling and LPIPS: `python benchmarks/run.py --filter lpips`.

The LPIPS case is the tokenizer-training use: LPIPS-VGG(x, y).mean() forward + backward to x
(y constant, all weights frozen) at 8x3x64x64, against a torch re-implementation of the lpips
package (torch.nn layers in torchvision's layout, no torchvision needed) with the same weights."""
import numpy as np


def _torch_lpips(torch, state, net):
    """The lpips package's forward (v0.1, lin=True, eval) built from torch.nn with `state`'s weights."""
    from mmu.losses.lpips import _NETS
    nn = torch.nn
    layers, taps, chans, _ = _NETS[net]
    mods = []
    for l in layers:
        if l[0] == "conv":
            mods.append(nn.Conv2d(l[1], l[2], l[3], stride=l[4], padding=l[5]))
        elif l[0] == "relu":
            mods.append(nn.ReLU(inplace=True))  # torchvision uses in-place ReLUs
        else:
            mods.append(nn.MaxPool2d(l[1], l[2]))
    features = nn.Sequential(*mods[: taps[-1] + 1])
    lins = nn.ModuleList([nn.Sequential(nn.Dropout(), nn.Conv2d(c, 1, 1, bias=False)) for c in chans])
    features.load_state_dict({k[len("net.features."):]: torch.tensor(v) for k, v in state.items()
                              if k.startswith("net.")})
    lins.load_state_dict({f"{k[3]}.1.weight": torch.tensor(v) for k, v in state.items() if k.startswith("lin")})
    features.eval(), lins.eval()
    features.requires_grad_(False), lins.requires_grad_(False)
    shift = torch.tensor([-.030, -.088, -.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).reshape(1, 3, 1, 1)

    def feats(x):
        outs, h = [], (x - shift) / scale
        for i, m in enumerate(features):
            h = m(h)
            if i in taps:
                outs.append(h)
        return outs

    def nt(x, eps=1e-10):
        return x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + eps)

    def forward(x, y):
        val = 0
        for k, (a, b) in enumerate(zip(feats(x), feats(y))):
            val = val + lins[k]((nt(a) - nt(b)) ** 2).mean([2, 3], keepdim=True)
        return val

    return forward


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
        forward = _torch_lpips(fw.mod, d["state"], d["net"])
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

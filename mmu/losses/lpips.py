"""LPIPS perceptual distance (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a
Perceptual Metric"; github.com/richzhang/PerceptualSimilarity, the `lpips` package, version 0.1).

    LPIPS(net="vgg", pretrained=True, weights=None, lin=True)
    forward(x, y, normalize=False): x, y (B, 3, H, W) in [-1, 1] (normalize=True: in [0, 1])
        -> (B, 1, 1, 1), like the lpips package (`.mean()` for a scalar loss)

The computation is the lpips package's: a scaling layer ((x - shift) / scale, shift = [-.030, -.088,
-.188], scale = [.458, .448, .450]), a torchvision-layout feature stack (VGG16: taps relu1_2, relu2_2,
relu3_3, relu4_3, relu5_3; AlexNet: relu1 ... relu5), per tap a unit normalisation over channels
(eps 1e-10), the squared difference, a non-negative 1x1 "lin" conv without bias (dropout is the
identity in eval), a spatial mean, and the sum over the five taps. Each tap's normalise + difference
+ lin + mean runs as one fused C kernel (mmu.functional.lpips_distance). The module is frozen: its
parameters have requires_grad False and it is always in eval mode (no layer in it behaves
differently in training anyway); gradients flow to the inputs only.

Weights
-------
Pretrained weights cannot be downloaded by mmu. `LPIPS(pretrained=True, weights=path)` loads a
safetensors (.safetensors) or NumPy (.npz) file whose keys are this module's state_dict keys:

    net.features.{N}.weight, net.features.{N}.bias   torchvision's `features.{N}.weight/bias`
                                                     (VGG16: N = 0 2 5 7 10 12 14 17 19 21 24 26 28;
                                                      AlexNet: N = 0 3 6 8 10)
    lin{K}.weight  (1, C_K, 1, 1)                    the lpips package's `lin{K}.model.1.weight`
                                                     (K = 0..4; C = 64 128 256 512 512 for VGG16,
                                                      64 192 384 256 256 for AlexNet)

Make the file once where torch, torchvision and lpips are installed:

    import os, torch, torchvision, lpips
    from mmu.losses.lpips import convert_torch_weights
    vgg = torchvision.models.vgg16(weights="IMAGENET1K_V1").state_dict()
    lin = torch.load(os.path.join(os.path.dirname(lpips.__file__), "weights/v0.1/vgg.pth"), map_location="cpu")
    convert_torch_weights(vgg, lin, "lpips_vgg.safetensors")

convert_torch_weights also takes the lpips package's own network keys (`net.slice{K}.{N}.weight`,
i.e. `lpips.LPIPS().state_dict()` as one dict for both arguments), lin keys `lin{K}.model.0.weight`
(use_dropout=False) or `lin{K}.weight`, and torch tensors or NumPy arrays; torch is never imported
by mmu. `LPIPS(pretrained=False)` builds seeded random weights (tests, benchmarks).
"""
import os

import numpy as np

from .. import functional as F
from .._args import foreign_array
from .. import nn
from ..tensor import _as_tensor, float32

__all__ = ["LPIPS", "frozen_lpips", "PerceptualLPIPS"]

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10

# torchvision's `features` stacks: ("conv", in, out, kernel, stride, padding) / ("relu",) / ("pool", k, s)
_C3 = lambda i, o: ("conv", i, o, 3, 1, 1)  # noqa: E731
_VGG16 = [_C3(3, 64), ("relu",), _C3(64, 64), ("relu",), ("pool", 2, 2),
          _C3(64, 128), ("relu",), _C3(128, 128), ("relu",), ("pool", 2, 2),
          _C3(128, 256), ("relu",), _C3(256, 256), ("relu",), _C3(256, 256), ("relu",), ("pool", 2, 2),
          _C3(256, 512), ("relu",), _C3(512, 512), ("relu",), _C3(512, 512), ("relu",), ("pool", 2, 2),
          _C3(512, 512), ("relu",), _C3(512, 512), ("relu",), _C3(512, 512), ("relu",), ("pool", 2, 2)]
_ALEXNET = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
            ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
            ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
            ("conv", 256, 256, 3, 1, 1), ("relu",), ("pool", 3, 2)]
# net -> (layers, indices of the tapped ReLUs, channels at the taps, file name in messages)
_NETS = {
    "vgg": (_VGG16, (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), "vgg16"),
    "alex": (_ALEXNET, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), "alexnet"),
}


def _spec(net):
    """{state_dict key: shape} of LPIPS(net) with lin=True."""
    layers, _, chans, _ = _NETS[net]
    out = {}
    for i, l in enumerate(layers):
        if l[0] == "conv":
            out[f"net.features.{i}.weight"] = (l[2], l[1], l[3], l[3])
            out[f"net.features.{i}.bias"] = (l[2],)
    for k, c in enumerate(chans):
        out[f"lin{k}.weight"] = (1, c, 1, 1)
    return out


def _net_name(net):
    if net not in _NETS:
        raise ValueError(f"LPIPS: net must be 'vgg' or 'alex' (the nets mmu implements), got {net!r}")
    return net


def _missing_weights_message(net, weights):
    fname = f"lpips_{net}.safetensors"
    head = (f"LPIPS(net={net!r}, pretrained=True) needs pretrained weights, which mmu cannot download: "
            if weights is None else f"LPIPS: the weights file {weights!r} does not exist. ")
    return (head + f"pass weights='{fname}', a safetensors or .npz file holding torchvision's "
            f"{_NETS[net][3]} features ('net.features.N.weight' / '.bias') and the lpips package's v0.1 lin "
            "layers ('lin0.weight' ... 'lin4.weight'). Make it once where torch, torchvision and lpips are "
            "installed: mmu.losses.lpips.convert_torch_weights(torchvision.models."
            f"{'vgg16' if net == 'vgg' else 'alexnet'}(weights='IMAGENET1K_V1').state_dict(), "
            f"torch.load(<lpips package dir>/weights/v0.1/{net}.pth), '{fname}') "
            "(see the mmu.losses.lpips docstring). LPIPS(pretrained=False) gives random weights.")



def _map_net_key(k):
    """torchvision `features.N.x`, lpips `net.sliceK.N.x` or mmu `net.features.N.x` -> mmu key, else None."""
    parts = k.split(".")
    if k.startswith("module."):
        parts = parts[1:]
    if len(parts) == 3 and parts[0] == "features":
        return "net." + ".".join(parts)
    if len(parts) == 4 and parts[0] == "net" and (parts[1] == "features" or parts[1].startswith("slice")):
        return f"net.features.{parts[2]}.{parts[3]}"
    return None


def _map_lin_key(k):
    """lpips `linK.model.{0,1}.weight` or `linK.weight` -> `linK.weight`, else None."""
    parts = k.split(".")
    if k.startswith("module."):
        parts = parts[1:]
    if parts and parts[0].startswith("lin") and parts[0][3:].isdigit() and parts[-1] == "weight":
        if len(parts) == 2 or (len(parts) == 4 and parts[1] == "model" and parts[2] in ("0", "1")):
            return f"{parts[0]}.weight"
    return None


def convert_torch_weights(torchvision_state_dict, lpips_lin_state_dict, out_path, net=None):
    """Writes an LPIPS weight file for LPIPS(weights=out_path) from torch state dicts.

    torchvision_state_dict: torchvision's vgg16() / alexnet() state_dict (`features.N.weight/bias`;
    `classifier.*` is ignored), or the lpips package's network keys (`net.sliceK.N.weight`).
    lpips_lin_state_dict: the lpips package's lin weights (`linK.model.1.weight`, as in its
    weights/v0.1/{vgg,alex}.pth), or None to write the network only (for LPIPS(lin=False)).
    Values: torch tensors, NumPy arrays or anything with .numpy(). out_path ending in .npz writes
    NumPy's format, anything else safetensors. net: 'vgg' or 'alex', inferred from the first conv when
    None. Every expected key must be present with its shape. Returns {key: shape} of what was written."""
    arrays = {}
    for src, mapper, what in ((torchvision_state_dict, _map_net_key, "torchvision_state_dict"),
                              (lpips_lin_state_dict, _map_lin_key, "lpips_lin_state_dict")):
        if src is None:
            if what == "torchvision_state_dict":
                raise TypeError("convert_torch_weights: torchvision_state_dict is required")
            continue
        if not hasattr(src, "items"):
            raise TypeError(f"convert_torch_weights: {what} must be a dict of tensors, got {type(src).__name__}")
        for k, v in src.items():
            key = mapper(str(k))
            if key is not None:
                arrays[key] = np.ascontiguousarray(foreign_array(v, "convert_torch_weights", k), dtype=np.float32)
    first = arrays.get("net.features.0.weight")
    if first is None:
        raise ValueError("convert_torch_weights: no first conv ('features.0.weight') in torchvision_state_dict; "
                         f"keys seen: {sorted(torchvision_state_dict)[:8]}")
    if net is None:
        net = "vgg" if first.shape[-1] == 3 else "alex" if first.shape[-1] == 11 else None
        if net is None:
            raise ValueError(f"convert_torch_weights: cannot tell the net from features.0.weight {first.shape}; "
                             "pass net='vgg' or net='alex'")
    _net_name(net)
    spec = _spec(net)
    if lpips_lin_state_dict is None:
        spec = {k: s for k, s in spec.items() if not k.startswith("lin")}
    missing = [k for k in spec if k not in arrays]
    wrong = [f"{k}: {arrays[k].shape} (expected {spec[k]})" for k in spec if k in arrays and arrays[k].shape != spec[k]]
    if missing or wrong:
        raise ValueError(f"convert_torch_weights: the state dicts do not hold LPIPS-{net} weights: "
                         + (f"missing {missing}; " if missing else "") + (f"wrong shapes {wrong}" if wrong else ""))
    out = {k: arrays[k] for k in spec}
    out_path = os.fspath(out_path)
    if out_path.endswith(".npz"):
        np.savez(out_path, **out)
    else:
        from ..io import safetensors
        safetensors.save_file(out, out_path, metadata={"format": "mmu-lpips", "net": net})
    return {k: v.shape for k, v in out.items()}


def _load_file(path):
    path = os.fspath(path)
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from ..io import safetensors
    return safetensors.load_file(path)


class _Conv2d(nn.Conv2d):
    """nn.Conv2d without torch's default init: LPIPS fills every weight itself (file or seed)."""

    def reset_parameters(self):
        pass


class _Features(nn.Module):
    """torchvision's `features` Sequential (same indices, so the same state_dict keys), run up to
    the last tapped ReLU; returns the five tapped activations."""

    def __init__(self, net):
        super().__init__()
        layers, self._taps, _, _ = _NETS[net]
        mods = []
        for l in layers:
            if l[0] == "conv":
                mods.append(_Conv2d(l[1], l[2], l[3], stride=l[4], padding=l[5]))
            elif l[0] == "relu":
                mods.append(nn.ReLU())
            else:
                mods.append(nn.MaxPool2d(l[1], l[2]))
        self.features = nn.Sequential(*mods)
        self._layers = layers

    def forward(self, x):
        outs = []
        for i in range(self._taps[-1] + 1):
            x = self.features[i](x)
            if i in self._taps:
                outs.append(x)
        return outs

    def check_size(self, h, w):
        """The spatial size after every layer up to the last tap must be >= 1 (torch's rules)."""
        for l in self._layers[: self._taps[-1] + 1]:
            if l[0] == "conv":
                h, w = ((s + 2 * l[5] - l[3]) // l[4] + 1 if s + 2 * l[5] >= l[3] else 0 for s in (h, w))
            elif l[0] == "pool":
                h, w = ((s - l[1]) // l[2] + 1 if s >= l[1] else 0 for s in (h, w))
            if h < 1 or w < 1:
                return False
        return True


class LPIPS(nn.Module):
    """LPIPS perceptual distance, the lpips package's v0.1 computation (see the module docstring for
    the layout, the weight file keys and how to make it).

    net: 'vgg' (VGG16, the taming-transformers / VQGAN choice) or 'alex'. pretrained=True needs
    weights= a file (FileNotFoundError otherwise, saying which file and how to make it);
    pretrained=False builds random weights from `seed` (convs U(+-sqrt(6/fan_in)), biases 0, lin
    weights uniform [0, 1)). lin=False sums the channels with weight 1 (the package's lin=False).
    forward(x, y, normalize=False) -> (B, 1, 1, 1)."""

    def __init__(self, net="vgg", pretrained=True, weights=None, lin=True, seed=0):
        super().__init__()
        net = _net_name(net)
        self.net_name, self.lin = net, bool(lin)
        self.net = _Features(net)
        chans = _NETS[net][2]
        for k, c in enumerate(chans):
            if self.lin:
                setattr(self, f"lin{k}", _Conv2d(c, 1, 1, bias=False))
        shift = np.asarray(_SHIFT, np.float32).reshape(1, 3, 1, 1)
        scale = np.asarray(_SCALE, np.float32).reshape(1, 3, 1, 1)
        self.register_buffer("shift", _as_tensor(shift, "LPIPS"), persistent=False)
        self.register_buffer("scale", _as_tensor(scale, "LPIPS"), persistent=False)
        if weights is not None:
            if not isinstance(weights, (str, os.PathLike)):
                raise TypeError(f"LPIPS: weights must be a file path (str or os.PathLike) or None, "
                                f"got {type(weights).__name__}")
            if not os.path.exists(os.fspath(weights)):
                raise FileNotFoundError(_missing_weights_message(net, os.fspath(weights)))
            self._load(os.fspath(weights))
        elif pretrained:
            raise FileNotFoundError(_missing_weights_message(net, None))
        else:
            self._random(seed)
        self.requires_grad_(False)
        super().train(False)

    def _random(self, seed):
        rng = np.random.default_rng(seed)
        sd = {}
        for k, shape in _spec(self.net_name).items():
            if not self.lin and k.startswith("lin"):
                continue
            if k.startswith("lin"):
                sd[k] = rng.random(shape, dtype=np.float32)
            elif k.endswith(".bias"):
                sd[k] = np.zeros(shape, np.float32)
            else:
                fan_in = shape[1] * shape[2] * shape[3]  # He: variance 2 / fan_in, uniform (fast to draw)
                sd[k] = (rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(np.sqrt(6.0 / fan_in))
        self.load_state_dict(sd)

    def _load(self, path):
        sd = _load_file(path)
        if not self.lin:
            sd = {k: v for k, v in sd.items() if not k.startswith("lin")}
        first = sd.get("net.features.0.weight")
        if first is not None:
            ks = tuple(first.shape)[-1]
            want = 3 if self.net_name == "vgg" else 11
            if ks != want:
                raise ValueError(f"LPIPS: {path!r} holds {'vgg' if ks == 3 else 'alex'} weights "
                                 f"(features.0.weight {tuple(first.shape)}), not net={self.net_name!r}")
        try:
            self.load_state_dict(sd)
        except RuntimeError as e:
            raise ValueError(f"LPIPS: {path!r} is not an LPIPS-{self.net_name} weight file (make it with "
                             f"mmu.losses.lpips.convert_torch_weights): {e}") from None

    def train(self, mode=True):
        """LPIPS stays in eval mode whatever `mode` is (it is a frozen metric)."""
        return super().train(False)

    def _check(self, x, y):
        x = _as_tensor(x, "LPIPS", "x")
        y = _as_tensor(y, "LPIPS", "y")
        for name, t in (("x", x), ("y", y)):
            if t.dtype != float32:
                raise TypeError(f"LPIPS: {name} must be float32, got {t.dtype}")
            if t.ndim != 4 or t.shape[1] != 3:
                raise ValueError(f"LPIPS: {name} must be (B, 3, H, W) RGB images, got shape {tuple(t.shape)}")
        if tuple(x.shape) != tuple(y.shape):
            raise ValueError(f"LPIPS: x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"LPIPS: empty batch, shape {tuple(x.shape)}")
        if not self.net.check_size(x.shape[2], x.shape[3]):
            raise ValueError(f"LPIPS: images of {x.shape[2]}x{x.shape[3]} are too small for net={self.net_name!r} "
                             f"(at least {'16x16' if self.net_name == 'vgg' else '31x31'})")
        return x, y

    def forward(self, x, y, normalize=False):
        """x, y (B, 3, H, W) in [-1, 1] (in [0, 1] with normalize=True) -> (B, 1, 1, 1)."""
        x, y = self._check(x, y)
        if normalize:
            x, y = x * 2.0 - 1.0, y * 2.0 - 1.0
        fx = self.net((x - self.shift) / self.scale)
        fy = self.net((y - self.shift) / self.scale)
        total = None
        for k, (a, b) in enumerate(zip(fx, fy)):
            w = getattr(self, f"lin{k}").weight if self.lin else None
            d = F.lpips_distance(a, b, w, _EPS)
            total = d if total is None else total + d
        return total

    def extra_repr(self):
        return f"net={self.net_name!r}, lin={self.lin}"


def frozen_lpips(weights=None):
    """The LPIPS of a model's perceptual term (LPIPS is always frozen: eval mode, no gradient to its own
    weights): VGG with the converted weights in the file `weights` (see convert_torch_weights), or seeded
    random weights when weights is None (tests and benchmarks: the tokenizer configs' lpips_random)."""
    if weights is None:
        return LPIPS(pretrained=False)
    if not isinstance(weights, (str, os.PathLike)):
        raise TypeError(f"frozen_lpips: weights must be a file path (str or os.PathLike) or None, "
                        f"got {type(weights).__name__}")
    if not os.path.exists(os.fspath(weights)):
        raise FileNotFoundError(f"frozen_lpips: the weights file {os.fspath(weights)!r} does not exist "
                                "(convert torchvision's VGG16 and the lpips package's weights with "
                                "mmu.losses.lpips.convert_torch_weights)")
    return LPIPS(net="vgg", pretrained=True, weights=weights)


class PerceptualLPIPS:
    """Mixin for a model whose loss has an LPIPS term: `lpips()` is the frozen LPIPS (frozen_lpips of
    config.lpips_weights), built on first use and kept outside the module tree (not in the state_dict),
    or None when the term's weight (the config field named by `perceptual_weight_field`) is 0."""
    perceptual_weight_field = "perceptual_weight"

    def lpips(self):
        """The frozen LPIPS network of the perceptual term (built on first use; None when its weight is 0)."""
        c = self.config
        if getattr(c, self.perceptual_weight_field) <= 0:
            return None
        lp = self.__dict__.get("_lpips")
        if lp is None:
            lp = self.__dict__["_lpips"] = frozen_lpips(c.lpips_weights)
        return lp

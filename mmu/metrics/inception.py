"""Inception-v3 feature extractor of FID, in pytorch-fid's layout (github.com/mseitzer/pytorch-fid,
src/pytorch_fid/inception.py: `fid_inception_v3()` wrapped by `InceptionV3`).

    InceptionV3(pretrained=True, weights=None, resize_input=True, normalize_input=True, seed=0)
    forward(x) with x (N, 3, H, W) in [0, 1]  -> (N, 2048) pool3 features (float32 Tensor)
    features(x, dims=2048)                     -> (N, dims) for dims in 64, 192, 768, 2048

The network is torchvision's Inception3 with pytorch-fid's patches, which reproduce the TensorFlow
graph of the original FID code (the "pt_inception-2015-12-05" weights):

- every conv is BasicConv2d: Conv2d without bias, BatchNorm2d(eps=0.001) with running statistics
  (eval), ReLU;
- the pooling branch of Mixed_5b/5c/5d (FIDInceptionA), Mixed_6b..6e (FIDInceptionC) and Mixed_7b
  (FIDInceptionE_1) is avg_pool2d(3, stride 1, padding 1, count_include_pad=False) (TensorFlow does
  not count the padded zeros); Mixed_7c (FIDInceptionE_2) pools with max_pool2d(3, 1, 1) instead;
- Mixed_6a / Mixed_7a (torchvision's InceptionB / InceptionD) and the two stem pools use
  max_pool2d(3, stride 2);
- the input is resized to 299 x 299 bilinearly (align_corners=False, no antialiasing) and scaled
  from [0, 1] to [-1, 1] (2x - 1), in that order; the 2048-d features are the adaptive average pool
  (a mean over H, W) after Mixed_7c. fc (1008 classes) is not part of the feature extractor.

pytorch-fid's blocks (its `output_blocks`): 0 ends at the first max pool (64-d), 1 at the second
(192-d), 2 after Mixed_6e (768-d), 3 after the final average pool (2048-d). Smaller `dims` are
pooled over H, W like pytorch-fid's get_activations.

Weights
-------
mmu downloads nothing. `InceptionV3(weights=path)` loads a safetensors (.safetensors) or NumPy
(.npz) file whose keys are this module's state_dict keys, which are the keys of pytorch-fid's weight
file pt_inception-2015-12-05-6726825d.pth (torchvision's Inception3 names):

    Conv2d_1a_3x3.conv.weight, Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}, ...,
    Mixed_5b.branch1x1.conv.weight, Mixed_5b.branch_pool.bn.running_var, ..., Mixed_7c.branch_pool.*

Make the file once where torch is installed (pytorch-fid itself is not needed):

    import torch
    from mmu.metrics.inception import convert_torch_weights
    sd = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    convert_torch_weights(sd, "pt_inception.safetensors")

convert_torch_weights also takes a pytorch-fid `InceptionV3().state_dict()` (keys `blocks.B.I.*`),
drops `fc.*` and `num_batches_tracked`, accepts torch tensors or NumPy arrays and never imports
torch. `InceptionV3(pretrained=False)` builds seeded random weights (tests, benchmarks).
"""
import os

import numpy as np

from .. import functional as F
from .._args import foreign_array
from .. import nn
from ..tensor import _as_tensor, cat, float32

__all__ = ["InceptionV3", "convert_torch_weights", "BLOCK_INDEX_BY_DIM", "FID_WEIGHTS_NAME"]

# pytorch-fid's feature sizes -> the block whose output they are
BLOCK_INDEX_BY_DIM = {64: 0, 192: 1, 768: 2, 2048: 3}
FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
_BN_EPS = 0.001      # torchvision's BasicConv2d
_SIZE = 299          # the input side the weights were trained at (pytorch-fid's resize target)
# (name, in_channels, kind, argument) of torchvision's Inception3 as fid_inception_v3() patches it
_MIXED = [("Mixed_5b", 192, "A", 32), ("Mixed_5c", 256, "A", 64), ("Mixed_5d", 288, "A", 64),
          ("Mixed_6a", 288, "B", None),
          ("Mixed_6b", 768, "C", 128), ("Mixed_6c", 768, "C", 160), ("Mixed_6d", 768, "C", 160),
          ("Mixed_6e", 768, "C", 192),
          ("Mixed_7a", 768, "D", None), ("Mixed_7b", 1280, "E", "avg"), ("Mixed_7c", 2048, "E", "max")]


class _Conv2d(nn.Conv2d):
    """nn.Conv2d without torch's default init: the network fills every weight itself (file or seed)."""

    def reset_parameters(self):
        pass


class BasicConv2d(nn.Module):
    """torchvision's BasicConv2d: conv (no bias) -> BatchNorm2d(eps=0.001) -> ReLU; keys conv.*, bn.*."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = _Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=_BN_EPS)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_tf(x):
    # TensorFlow's average pool ignores the padded zeros (pytorch-fid's "Patch")
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """FIDInceptionA (Mixed_5b/5c/5d): 1x1 | 1x1 -> 5x5 | 1x1 -> 3x3 -> 3x3 | TF avg pool -> 1x1."""

    def __init__(self, in_channels, pool_features):
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_tf(x))
        return cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """torchvision's InceptionB (Mixed_6a): 3x3 stride 2 | 1x1 -> 3x3 -> 3x3 stride 2 | max pool 3 s2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return cat([b3, bd, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """FIDInceptionC (Mixed_6b..6e): factorised 7x7 branches (1x7, 7x1) and a TF avg pool branch."""

    def __init__(self, in_channels, channels_7x7):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for m in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = m(bd)
        bp = self.branch_pool(_avg_pool_tf(x))
        return cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):
    """torchvision's InceptionD (Mixed_7a): 1x1 -> 3x3 s2 | 1x1 -> 1x7 -> 7x1 -> 3x3 s2 | max pool 3 s2."""

    def __init__(self, in_channels):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """FIDInceptionE_1 (Mixed_7b, pool="avg": the TF average pool) and FIDInceptionE_2 (Mixed_7c,
    pool="max": max_pool2d(3, 1, 1), the quirk of the FID graph pytorch-fid reproduces)."""

    def __init__(self, in_channels, pool):
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = _avg_pool_tf(x) if self.pool == "avg" else F.max_pool2d(x, 3, stride=1, padding=1)
        return cat([b1, b3, bd, self.branch_pool(pooled)], 1)

    def extra_repr(self):
        return f"pool={self.pool!r}"


def _spec():
    """{state_dict key: shape} of InceptionV3 (built once without weights, from the module tree)."""
    return {k: tuple(v.shape) for k, v in InceptionV3(pretrained=False, seed=None).state_dict().items()}


def _missing_weights_message(weights):
    head = ("InceptionV3(pretrained=True) needs the FID Inception weights, which mmu cannot download: "
            if weights is None else f"InceptionV3: the weights file {weights!r} does not exist. ")
    return (head + "pass weights='pt_inception.safetensors', a safetensors or .npz file holding pytorch-fid's "
            f"{FID_WEIGHTS_NAME} (keys 'Conv2d_1a_3x3.conv.weight', ..., 'Mixed_7c.branch_pool.bn.running_var'). "
            "Make it once where torch is installed: mmu.metrics.inception.convert_torch_weights("
            f"torch.load('{FID_WEIGHTS_NAME}', map_location='cpu'), 'pt_inception.safetensors') (the file is "
            "pytorch-fid's release asset fid_weights; see the mmu.metrics.inception docstring). "
            "InceptionV3(pretrained=False) gives random weights (tests only: its FID means nothing).")


def _load_file(path):
    if path.endswith(".npz"):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    from ..io import safetensors
    return safetensors.load_file(path)


class InceptionV3(nn.Module):
    """The FID Inception-v3 (pytorch-fid's InceptionV3 with use_fid_inception=True), eval-only.

    pretrained=True needs weights= a file (FileNotFoundError otherwise, saying which file and how to
    make it; see the module docstring); pretrained=False fills seeded random weights (seed: an int;
    None leaves them uninitialised). resize_input: bilinear resize to 299 x 299 first (pytorch-fid's
    default; without it any side >= 75 px runs). normalize_input: the input is in [0, 1] and is
    scaled to [-1, 1]. forward(x (N, 3, H, W)) -> (N, 2048) pool3 features; features(x, dims)."""

    def __init__(self, pretrained=True, weights=None, resize_input=True, normalize_input=True, seed=0):
        super().__init__()
        self.resize_input, self.normalize_input = bool(resize_input), bool(normalize_input)
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        for name, cin, kind, arg in _MIXED:
            block = {"A": lambda: InceptionA(cin, arg), "B": lambda: InceptionB(cin),
                     "C": lambda: InceptionC(cin, arg), "D": lambda: InceptionD(cin),
                     "E": lambda: InceptionE(cin, arg)}[kind]()
            setattr(self, name, block)
        if weights is not None:
            weights = os.fspath(weights)
            if not os.path.exists(weights):
                raise FileNotFoundError(_missing_weights_message(weights))
            self._load(weights)
        elif pretrained:
            raise FileNotFoundError(_missing_weights_message(None))
        elif seed is not None:
            self._random(seed)
        self.requires_grad_(False)
        super().train(False)

    def _random(self, seed):
        # He-uniform convs, BN affine near (1, 0), running mean near 0 and var near 1: activations keep a
        # usable scale through the 94 conv layers, so parity tests compare numbers that are not all ~0
        rng = np.random.default_rng(seed)
        sd = {}
        for k, v in self.state_dict().items():
            shape = tuple(v.shape)
            if k.endswith("num_batches_tracked"):
                sd[k] = np.zeros(shape, np.int64)
            elif k.endswith("conv.weight"):
                fan_in = shape[1] * shape[2] * shape[3]
                sd[k] = (rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(np.sqrt(6.0 / fan_in))
            elif k.endswith("bn.weight"):
                sd[k] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
            elif k.endswith("bn.bias") or k.endswith("running_mean"):
                sd[k] = rng.uniform(-0.1, 0.1, shape).astype(np.float32)
            else:  # running_var
                sd[k] = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        self.load_state_dict(sd)

    def _load(self, path):
        sd = _load_file(path)
        # BatchNorm's counter is not used in eval; pytorch-fid's file (an old torch) does not have it
        own = self.state_dict()
        for k, v in own.items():
            if k.endswith("num_batches_tracked") and k not in sd:
                sd[k] = np.zeros(tuple(v.shape), np.int64)
        try:
            self.load_state_dict(sd)
        except RuntimeError as e:
            raise ValueError(f"InceptionV3: {path!r} is not an FID Inception weight file (make it with "
                             f"mmu.metrics.inception.convert_torch_weights): {e}") from None

    def train(self, mode=True):
        """InceptionV3 stays in eval mode whatever `mode` is (BatchNorm uses its running statistics)."""
        return super().train(False)

    def _prepare(self, x, op):
        x = _as_tensor(x, op, "x")
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"{op}: x must be (N, 3, H, W) images in [0, 1], got shape {tuple(x.shape)}")
        if x.dtype != float32:
            raise TypeError(f"{op}: x must be float32, got {x.dtype}")
        if x.shape[0] == 0:
            raise ValueError(f"{op}: x is an empty batch, shape {tuple(x.shape)}")
        h, w = x.shape[2], x.shape[3]
        if self.resize_input:
            x = F.interpolate(x, size=(_SIZE, _SIZE), mode="bilinear", align_corners=False)
        elif min(h, w) < 75:
            raise ValueError(f"{op}: without resize_input the images must be at least 75 x 75 (the network's "
                             f"smallest input), got {h} x {w}")
        if self.normalize_input:
            x = x * 2.0 - 1.0
        return x

    def features(self, x, dims=2048):
        """(N, dims) float32 features of x (N, 3, H, W) in [0, 1]: pytorch-fid's block
        BLOCK_INDEX_BY_DIM[dims] output, averaged over H, W (dims 64, 192, 768 or 2048)."""
        op = "InceptionV3.features"
        if isinstance(dims, bool) or dims not in BLOCK_INDEX_BY_DIM:
            raise ValueError(f"{op}: dims must be one of {sorted(BLOCK_INDEX_BY_DIM)}, got {dims!r}")
        last = BLOCK_INDEX_BY_DIM[dims]
        x = self._prepare(x, op)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        if last >= 1:
            x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        if last >= 2:
            for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                         "Mixed_6e"):
                x = getattr(self, name)(x)
        if last >= 3:
            x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return x.mean(dim=(2, 3))   # the adaptive average pool to 1 x 1 (pytorch-fid's, for every block)

    def forward(self, x):
        """(N, 2048) pool3 features of x (N, 3, H, W) in [0, 1] (pytorch-fid's default block 3)."""
        return self.features(x, 2048)

    def extra_repr(self):
        return f"resize_input={self.resize_input}, normalize_input={self.normalize_input}"


# pytorch-fid's InceptionV3 wrapper: blocks.B.I -> the Inception3 module (the pools have no weights)
_WRAPPER_BLOCKS = {("0", "0"): "Conv2d_1a_3x3", ("0", "1"): "Conv2d_2a_3x3", ("0", "2"): "Conv2d_2b_3x3",
                   ("1", "0"): "Conv2d_3b_1x1", ("1", "1"): "Conv2d_4a_3x3",
                   **{("2", str(i)): n for i, n in enumerate(["Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a",
                                                             "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"])},
                   ("3", "0"): "Mixed_7a", ("3", "1"): "Mixed_7b", ("3", "2"): "Mixed_7c"}


def _map_key(k):
    """pytorch-fid / torchvision Inception3 key -> mmu key; None for keys the extractor has no use for."""
    parts = k.split(".")
    if parts[0] == "module":          # saved from DataParallel
        parts = parts[1:]
    if len(parts) > 3 and parts[0] == "blocks":
        name = _WRAPPER_BLOCKS.get((parts[1], parts[2]))
        if name is None:
            raise ValueError(f"convert_torch_weights: {k!r} names no block of pytorch-fid's InceptionV3")
        parts = [name] + parts[3:]
    if parts[0] in ("fc", "AuxLogits") or parts[-1] == "num_batches_tracked":
        return None                    # the classifier heads and BatchNorm's counter: not features
    return ".".join(parts)


def convert_torch_weights(state_dict, out_path):
    """Writes an FID Inception weight file for InceptionV3(weights=out_path) from a torch state dict.

    state_dict: pytorch-fid's pt_inception-2015-12-05 weights as torch.load gives them (torchvision
    Inception3 keys), or a pytorch-fid InceptionV3().state_dict() (`blocks.B.I.*` keys); torch
    tensors, NumPy arrays or anything with .numpy(). `fc.*`, `AuxLogits.*` and `num_batches_tracked`
    are dropped; every other expected key must be present with its shape, and no key may be left
    over. out_path ending in .npz writes NumPy's format, anything else safetensors. Returns
    {key: shape} of what was written."""
    if not hasattr(state_dict, "items"):
        raise TypeError(f"convert_torch_weights: state_dict must be a dict of tensors, got "
                        f"{type(state_dict).__name__}")
    spec = {k: s for k, s in _spec().items() if not k.endswith("num_batches_tracked")}
    arrays, extra = {}, []
    for k, v in state_dict.items():
        key = _map_key(str(k))
        if key is None:
            continue
        if key not in spec:
            extra.append(str(k))
            continue
        arrays[key] = np.ascontiguousarray(foreign_array(v, "convert_torch_weights", k), dtype=np.float32)
    missing = [k for k in spec if k not in arrays]
    wrong = [f"{k}: {arrays[k].shape} (expected {spec[k]})" for k in spec if k in arrays and arrays[k].shape != spec[k]]
    if missing or wrong or extra:
        raise ValueError("convert_torch_weights: the state dict does not hold pytorch-fid's Inception weights: "
                         + (f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''} ({len(missing)}); "
                            if missing else "")
                         + (f"wrong shapes {wrong[:8]}; " if wrong else "")
                         + (f"unexpected keys {extra[:8]}{' ...' if len(extra) > 8 else ''}" if extra else ""))
    out = {k: arrays[k] for k in spec}
    out_path = os.fspath(out_path)
    if out_path.endswith(".npz"):
        np.savez(out_path, **out)
    else:
        from ..io import safetensors
        safetensors.save_file(out, out_path, metadata={"format": "mmu-fid-inception"})
    return {k: v.shape for k, v in out.items()}

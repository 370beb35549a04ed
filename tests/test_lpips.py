"""LPIPS: the fused layer distance (mmu.functional.lpips_distance) vs a float64 NumPy reference,
finite differences and torch; mmu.losses.LPIPS (VGG16 and AlexNet, random weights) vs a torch
re-implementation of the lpips package (benchmarks/torch_twins.py's lpips_twin, shared with the
benchmark); the weight file round trip through
convert_torch_weights; the errors (missing weights, wrong channels, mismatched shapes, small images)."""
import os
import sys

import numpy as np
import pytest

import mmu
import mmu.functional as F
from mmu.losses import LPIPS
from mmu.losses.lpips import convert_torch_weights

try:
    from gradcheck import assert_close, numeric_grad, torch_or_skip
except ImportError:
    from tests.gradcheck import assert_close, numeric_grad, torch_or_skip


def ref_distance(f0, f1, w=None, eps=1e-10):
    f0, f1 = np.asarray(f0, np.float64), np.asarray(f1, np.float64)
    n0 = f0 / (np.sqrt((f0 ** 2).sum(1, keepdims=True)) + eps)
    n1 = f1 / (np.sqrt((f1 ** 2).sum(1, keepdims=True)) + eps)
    w = np.ones(f0.shape[1]) if w is None else np.asarray(w, np.float64).reshape(-1)
    return ((n0 - n1) ** 2 * w[None, :, None, None]).sum(1, keepdims=True).mean((2, 3), keepdims=True)


def _feats(shape, seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32),
            rng.random(shape[1]).astype(np.float32))


_MODELS = {}


def _model(net, seed=1):
    """Random-weight models are built once per test session (a VGG16 is 14.7M parameters)."""
    if (net, seed) not in _MODELS:
        _MODELS[(net, seed)] = LPIPS(net=net, pretrained=False, seed=seed)
    return _MODELS[(net, seed)]


# ------------------------------------------------------------------------------- fused distance
@pytest.mark.parametrize("shape", [(2, 5, 3, 4), (3, 64, 20, 21), (2, 512, 2, 3), (1, 1, 1, 1)])
def test_distance_forward(shape):
    f0, f1, w = _feats(shape, 0)
    d = F.lpips_distance(f0, f1, w)
    assert d.shape == (shape[0], 1, 1, 1)
    assert_close(d.numpy(), ref_distance(f0, f1, w), 1e-5, 1e-6)
    assert_close(F.lpips_distance(f0, f1).numpy(), ref_distance(f0, f1), 1e-5, 1e-6)
    assert_close(F.lpips_distance(f0, f1, w.reshape(1, -1, 1, 1)).numpy(), ref_distance(f0, f1, w), 1e-5, 1e-6)
    assert np.all(F.lpips_distance(f0, f0, w).numpy() == 0)


def test_distance_backward_finite_differences():
    f0, f1, w = _feats((2, 4, 3, 2), 1)
    t = [mmu.tensor(a, requires_grad=True) for a in (f0, f1, w)]
    d = F.lpips_distance(*t)
    g = np.array([0.7, -1.3], np.float32).reshape(2, 1, 1, 1)
    d.backward(mmu.tensor(g))
    num = numeric_grad(ref_distance, [f0, f1, w], g)
    for a, n, name in zip(t, num, ("df0", "df1", "dw")):
        assert_close(a.grad.numpy(), n, 1e-4, 1e-5, name)


def test_distance_partial_grads_and_determinism():
    f0, f1, w = _feats((3, 32, 24, 24), 2)
    a = mmu.tensor(f0, requires_grad=True)
    F.lpips_distance(a, f1, w).sum().backward()  # only f0 needs a gradient (LPIPS' case)
    a2, b2 = mmu.tensor(f0, requires_grad=True), mmu.tensor(f1, requires_grad=True)
    F.lpips_distance(a2, b2, w).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), a2.grad.numpy())
    b = mmu.tensor(f1, requires_grad=True)
    F.lpips_distance(f0, b, w).sum().backward()  # only f1
    np.testing.assert_array_equal(b.grad.numpy(), b2.grad.numpy())
    wm = mmu.tensor(w, requires_grad=True)
    F.lpips_distance(f0, f1, wm).sum().backward()  # only w
    dw = ((ref_norm(f0) - ref_norm(f1)) ** 2).mean((2, 3)).sum(0)
    assert_close(wm.grad.numpy(), dw, 1e-5, 1e-6, "dw")


def ref_norm(f):
    f = np.asarray(f, np.float64)
    return f / (np.sqrt((f ** 2).sum(1, keepdims=True)) + 1e-10)


def test_distance_same_bits_at_any_thread_count():
    f0, f1, w = _feats((2, 64, 33, 35), 9)
    out = []
    prev = mmu.get_num_threads()
    try:
        for n in (1, 2):
            mmu.set_num_threads(n)
            a = mmu.tensor(f0, requires_grad=True)
            d = F.lpips_distance(a, f1, w)
            d.sum().backward()
            out.append((d.numpy().copy(), a.grad.numpy().copy()))
    finally:
        mmu.set_num_threads(prev)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][1], out[1][1])


def test_distance_zero_pixel_is_finite():
    f0, f1, w = _feats((1, 3, 2, 2), 3)
    f0[0, :, 1, 1] = 0  # a pixel where every channel is 0 (dead ReLUs)
    a = mmu.tensor(f0, requires_grad=True)
    d = F.lpips_distance(a, f1, w)
    assert_close(d.numpy(), ref_distance(f0, f1, w), 1e-5, 1e-6)
    d.sum().backward()
    assert np.all(np.isfinite(a.grad.numpy()))


def test_distance_vs_torch():
    torch = torch_or_skip()
    f0, f1, w = _feats((2, 16, 5, 7), 4)
    t = [torch.tensor(a, requires_grad=True) for a in (f0, f1, w)]

    def nt(x):
        return x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + 1e-10)

    dt = torch.nn.functional.conv2d((nt(t[0]) - nt(t[1])) ** 2, t[2].reshape(1, -1, 1, 1)).mean([2, 3], keepdim=True)
    g = np.array([1.5, -0.5], np.float32).reshape(2, 1, 1, 1)
    dt.backward(torch.tensor(g))
    m = [mmu.tensor(a, requires_grad=True) for a in (f0, f1, w)]
    d = F.lpips_distance(*m)
    d.backward(mmu.tensor(g))
    assert_close(d.numpy(), dt.detach().numpy(), 1e-5, 1e-6)
    for a, b, name in zip(m, t, ("df0", "df1", "dw")):
        assert_close(a.grad.numpy(), b.grad.numpy(), 1e-4, 1e-6, name)


def test_distance_bad_inputs():
    f0, f1, w = _feats((2, 4, 3, 3), 5)
    with pytest.raises(ValueError, match="same shape"):
        F.lpips_distance(f0, f1[:, :3])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        F.lpips_distance(f0[0], f1[0])
    with pytest.raises(ValueError, match="weight"):
        F.lpips_distance(f0, f1, w[:3])
    with pytest.raises(ValueError, match="eps"):
        F.lpips_distance(f0, f1, w, eps=-1.0)
    with pytest.raises(TypeError):
        F.lpips_distance(f0.astype(np.int64), f1)


# ------------------------------------------------------------------- torch re-implementation
def torch_lpips(model):
    """The lpips package's forward with torch.nn layers and model's weights: benchmarks/torch_twins.py's
    lpips_twin (the benchmark's reference too). Import only after torch_or_skip()."""
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from torch_twins import lpips_twin
    return lpips_twin({k: v.numpy() for k, v in model.state_dict().items()}, model.net_name)


@pytest.mark.parametrize("net,size", [("vgg", 32), ("alex", 64)])
def test_lpips_vs_torch(net, size):
    torch = torch_or_skip()
    torch.manual_seed(0)
    model = _model(net)
    ref, _, _ = torch_lpips(model)
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    xt, yt = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    dt = ref(xt, yt)
    dt.sum().backward()
    xm, ym = mmu.tensor(x, requires_grad=True), mmu.tensor(y, requires_grad=True)
    d = model(xm, ym)
    assert d.shape == (2, 1, 1, 1)
    d.sum().backward()
    assert_close(d.numpy(), dt.detach().numpy(), 1e-4, 1e-5)
    scale = np.abs(xt.grad.numpy()).max()
    assert_close(xm.grad.numpy(), xt.grad.numpy(), 1e-3, 1e-3 * scale, "dx")
    assert_close(ym.grad.numpy(), yt.grad.numpy(), 1e-3, 1e-3 * scale, "dy")
    # frozen: no parameter got a gradient
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    # only x needs a gradient (tokenizer training): the same dx
    xm2 = mmu.tensor(x, requires_grad=True)
    model(xm2, y).mean().backward()
    assert_close(xm2.grad.numpy(), xm.grad.numpy() / 2, 1e-6, 1e-9, "dx (y constant)")


def test_lpips_normalize_lin_false_and_eval():
    model = LPIPS(pretrained=False, lin=False)
    rng = np.random.default_rng(7)
    x01, y01 = rng.random((1, 3, 16, 16), dtype=np.float32), rng.random((1, 3, 16, 16), dtype=np.float32)
    a = model(x01, y01, normalize=True).numpy()
    b = model(x01 * 2 - 1, y01 * 2 - 1).numpy()
    assert_close(a, b, 1e-5, 1e-6)
    assert not any(k.startswith("lin") for k in model.state_dict())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    assert_close(model(x01, x01).numpy(), np.zeros((1, 1, 1, 1)), 0, 0)
    # seeded random weights
    w1 = LPIPS("alex", pretrained=False, seed=3).state_dict()["net.features.0.weight"].numpy()
    w2 = _model("alex", 3).state_dict()["net.features.0.weight"].numpy()
    np.testing.assert_array_equal(w1, w2)
    assert not np.array_equal(w1, _model("alex", 1).state_dict()["net.features.0.weight"].numpy())


# ------------------------------------------------------------------------------ weight files
def _torch_style_dicts(model):
    """model's weights as torchvision (`features.N.*`) and lpips lin (`linK.model.1.weight`) dicts."""
    sd = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    tv = {k[len("net."):]: v for k, v in sd.items() if k.startswith("net.")}
    tv["classifier.0.weight"] = np.zeros((2, 2), np.float32)  # ignored
    lin = {f"{k.split('.')[0]}.model.1.weight": v for k, v in sd.items() if k.startswith("lin")}
    return tv, lin


@pytest.mark.parametrize("net,suffix", [("vgg", ".safetensors"), ("alex", ".npz")])
def test_weight_file_round_trip(tmp_path, net, suffix):
    src = _model(net)
    tv, lin = _torch_style_dicts(src)
    path = tmp_path / f"lpips_{net}{suffix}"
    written = convert_torch_weights(tv, lin, path)
    assert "lin4.weight" in written and "net.features.0.weight" in written
    loaded = LPIPS(net=net, pretrained=True, weights=path)
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k].numpy(), v.numpy())
    x = np.random.default_rng(8).uniform(-1, 1, (1, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x, -x).numpy(), src(x, -x).numpy())
    with pytest.raises(ValueError, match="not net="):
        LPIPS(net="alex" if net == "vgg" else "vgg", weights=path)


def test_convert_from_torch_tensors_and_lpips_keys(tmp_path):
    torch = torch_or_skip()
    src = _model("alex")
    tv, lin = _torch_style_dicts(src)
    # the lpips package's own keys: net.sliceK.N.weight and linK.model.1.weight, torch tensors
    slices = {f"net.slice1.{k[len('features.'):]}": torch.tensor(v) for k, v in tv.items() if k.startswith("features.")}
    path = tmp_path / "w.safetensors"
    convert_torch_weights(slices, {k: torch.tensor(v) for k, v in lin.items()}, path)
    loaded = LPIPS(net="alex", weights=str(path))
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k].numpy(), v.numpy())


def test_convert_errors(tmp_path):
    src = _model("alex")
    tv, lin = _torch_style_dicts(src)
    del lin["lin2.model.1.weight"]
    with pytest.raises(ValueError, match="lin2.weight"):
        convert_torch_weights(tv, lin, tmp_path / "a.safetensors")
    tv2, lin2 = _torch_style_dicts(src)
    tv2["features.3.weight"] = tv2["features.3.weight"][:32]
    with pytest.raises(ValueError, match="wrong shapes"):
        convert_torch_weights(tv2, lin2, tmp_path / "b.safetensors")
    with pytest.raises(ValueError, match="first conv"):
        convert_torch_weights({}, lin2, tmp_path / "c.safetensors")
    # network only, for lin=False
    tv3, _ = _torch_style_dicts(src)
    convert_torch_weights(tv3, None, tmp_path / "net.npz")
    LPIPS("alex", weights=tmp_path / "net.npz", lin=False)
    with pytest.raises(ValueError, match="not an LPIPS-alex weight file"):
        LPIPS("alex", weights=tmp_path / "net.npz", lin=True)


def test_missing_weights_message():
    with pytest.raises(FileNotFoundError) as e:
        LPIPS()
    msg = str(e.value)
    assert "lpips_vgg.safetensors" in msg and "convert_torch_weights" in msg and "vgg16" in msg
    assert "lin0.weight" in msg and "pretrained=False" in msg
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LPIPS(net="alex", weights="/nonexistent/lpips_alex.safetensors")
    with pytest.raises(ValueError, match="'vgg' or 'alex'"):
        LPIPS(net="squeeze", pretrained=False)


def test_lpips_bad_inputs():
    model = _model("vgg")
    x = np.zeros((2, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(np.zeros((2, 1, 16, 16), np.float32), np.zeros((2, 1, 16, 16), np.float32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(x[0], x[0])
    with pytest.raises(ValueError, match="same shape"):
        model(x, x[:1])
    with pytest.raises(ValueError, match="too small"):
        model(np.zeros((1, 3, 15, 16), np.float32), np.zeros((1, 3, 15, 16), np.float32))
    with pytest.raises(ValueError, match="too small"):
        _model("alex")(np.zeros((1, 3, 30, 30), np.float32), np.zeros((1, 3, 30, 30), np.float32))
    _model("alex")(np.zeros((1, 3, 31, 31), np.float32), np.zeros((1, 3, 31, 31), np.float32))
    with pytest.raises(TypeError, match="float32"):
        model(x.astype(np.int64), x.astype(np.int64))


def test_frozen_lpips_is_the_random_lpips_frozen_and_passes_gradients_to_its_inputs():
    from mmu.losses import LPIPS, frozen_lpips
    lp = frozen_lpips()
    assert not lp.training
    assert all(not p.requires_grad for p in lp.parameters())
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    y = rng.uniform(-1, 1, (2, 3, 16, 16)).astype(np.float32)
    ref = LPIPS(pretrained=False)
    ref.eval()
    np.testing.assert_array_equal(lp(mmu.tensor(x), mmu.tensor(y)).numpy(), ref(mmu.tensor(x), mmu.tensor(y)).numpy())
    a = mmu.tensor(x, requires_grad=True)
    lp(a, mmu.tensor(y)).sum().backward()
    assert a.grad is not None and np.abs(a.grad.numpy()).sum() > 0
    assert all(p.grad is None for p in lp.parameters())


@pytest.mark.parametrize("bad", [np.zeros(3, np.float32), 3, [], ("a",)])
def test_lpips_weights_that_are_not_paths_are_refused_by_name(bad):
    from mmu.losses import frozen_lpips
    with pytest.raises(TypeError, match="frozen_lpips: weights must be a file path"):
        frozen_lpips(bad)
    with pytest.raises(TypeError, match="LPIPS: weights must be a file path"):
        LPIPS(pretrained=True, weights=bad)
    with pytest.raises(FileNotFoundError, match="frozen_lpips: the weights file"):
        frozen_lpips("/nonexistent/lpips.safetensors")

"""mmu.losses.NLayerDiscriminator (taming-transformers' PatchGAN): torch parity of logits and of the
parameter / input gradients for every norm, state_dict keys, shapes, init statistics, bad inputs."""
import math
import os
import sys

import numpy as np
import pytest

import mmu
from gradcheck import assert_close, torch_or_skip
from mmu.losses import NLayerDiscriminator, weights_init

NORMS = ["batch", "actnorm", "group", "none"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _torch_disc(torch, input_nc, ndf, n_layers, norm):
    """taming's NLayerDiscriminator (taming/modules/discriminator/model.py) in torch: the benchmarks'
    TwinNLayerDiscriminator, with taming's ActNorm (rewritten in test_batch_norm) for norm "actnorm"."""
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from test_batch_norm import _taming_actnorm
    from torch_twins import TwinNLayerDiscriminator
    actnorm = (lambda c: _taming_actnorm(torch)(c)) if norm == "actnorm" else None
    return TwinNLayerDiscriminator(input_nc, ndf, n_layers, norm, norm_layer=actnorm)


def _pair(torch, norm, n_layers=3, ndf=8, input_nc=3):
    mmu.manual_seed(0)
    d = NLayerDiscriminator(input_nc=input_nc, ndf=ndf, n_layers=n_layers, norm=norm)
    t = _torch_disc(torch, input_nc, ndf, n_layers, norm)
    sd = d.state_dict()
    assert list(sd.keys()) == list(t.state_dict().keys())
    t.load_state_dict({k: torch.tensor(np.asarray(v.numpy())) for k, v in sd.items()})
    return d, t


@pytest.mark.parametrize("norm", NORMS)
def test_logits_and_grads_vs_torch(norm):
    torch = torch_or_skip()
    d, t = _pair(torch, norm)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    mx, tx = mmu.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    y, ty = d(mx), t.main(tx)
    assert y.shape == tuple(ty.shape) == (2, 1, 2, 2)
    assert_close(y.numpy(), ty.detach().numpy(), rtol=1e-4, atol=1e-4, what="logits")
    # a hinge-style scalar of the logits, so that every parameter gets a gradient
    g = rng.standard_normal(y.shape).astype(np.float32)
    (y * mmu.tensor(g)).sum().backward()
    (ty * torch.tensor(g)).sum().backward()
    assert_close(mx.grad.numpy(), tx.grad.numpy(), rtol=1e-3, atol=1e-5, what="dx")
    tp = dict(t.named_parameters())
    for name, p in d.named_parameters():
        assert_close(p.grad.numpy(), tp[name].grad.numpy(), rtol=1e-3, atol=2e-5, what=f"d{name}")
    # the running statistics (batch) / the data-dependent init (actnorm) moved the same way
    tsd = t.state_dict()
    for k, v in d.state_dict().items():
        assert_close(v.numpy(), tsd[k].numpy(), rtol=1e-5, atol=1e-5, what=k)
    # eval mode: running statistics
    d.eval(), t.eval()
    x2 = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    assert_close(d(x2).numpy(), t.main(torch.tensor(x2)).detach().numpy(), rtol=1e-4, atol=1e-4, what="eval")


@pytest.mark.parametrize("n_layers,size,out", [(1, 16, 6), (2, 16, 2), (3, 32, 2), (3, 48, 4)])
def test_shapes(n_layers, size, out):
    torch = torch_or_skip()
    d, t = _pair(torch, "batch", n_layers=n_layers, ndf=4, input_nc=2)
    x = np.random.default_rng(1).standard_normal((3, 2, size, size)).astype(np.float32)
    y = d(x)
    assert y.shape == (3, 1, out, out) == tuple(t.main(torch.tensor(x)).shape)
    convs = [m for m in d.main if isinstance(m, mmu.nn.Conv2d)]
    assert len(convs) == n_layers + 2
    assert [c.out_channels for c in convs] == [4 * min(2 ** n, 8) for n in range(n_layers + 1)] + [1]


def test_taming_layout_and_keys():
    d = NLayerDiscriminator()
    convs = [m for m in d.main if isinstance(m, mmu.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == \
        [(3, 64, (2, 2)), (64, 128, (2, 2)), (128, 256, (2, 2)), (256, 512, (1, 1)), (512, 1, (1, 1))]
    assert all(c.kernel_size == (4, 4) and c.padding == (1, 1) for c in convs)
    keys = list(d.state_dict().keys())
    assert keys[:5] == ["main.0.weight", "main.0.bias", "main.2.weight", "main.3.weight", "main.3.bias"]
    assert "main.2.bias" not in keys and "main.3.running_mean" in keys
    assert all(m.negative_slope == 0.2 for m in d.main if isinstance(m, mmu.nn.LeakyReLU))
    a = NLayerDiscriminator(norm="actnorm").state_dict()
    assert "main.2.bias" in a and "main.3.loc" in a and "main.3.initialized" in a  # taming: bias with actnorm
    gn = [m for m in NLayerDiscriminator(ndf=8, norm="group").main if isinstance(m, mmu.nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in gn] == [(16, 16), (32, 32), (32, 64)]


def test_init_statistics_and_seed():
    mmu.manual_seed(123)
    d = NLayerDiscriminator()
    w = np.concatenate([m.weight.numpy().ravel() for m in d.main if isinstance(m, mmu.nn.Conv2d)])
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.02) < 5e-4
    bn = [m for m in d.main if isinstance(m, mmu.nn.BatchNorm2d)]
    nw = np.concatenate([m.weight.numpy() for m in bn])
    assert abs(nw.mean() - 1.0) < 3e-3 and abs(nw.std() - 0.02) < 3e-3
    assert all(np.all(m.bias.numpy() == 0) for m in bn)
    # conv biases keep torch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (taming's weights_init leaves them)
    b0 = d.main[0].bias.numpy()
    assert np.all(np.abs(b0) <= 1 / math.sqrt(3 * 16)) and np.any(b0 != 0)
    mmu.manual_seed(123)
    d2 = NLayerDiscriminator()
    for k, v in d.state_dict().items():
        assert np.array_equal(v.numpy(), d2.state_dict()[k].numpy()), k
    gn = NLayerDiscriminator(norm="group").main[3]
    assert abs(gn.weight.numpy().mean() - 1.0) < 0.01 and np.all(gn.bias.numpy() == 0)
    # weights_init on its own, as taming's model.apply(weights_init)
    conv = mmu.nn.Conv2d(16, 32, 4)
    weights_init(conv)
    assert abs(conv.weight.numpy().std() - 0.02) < 2e-3


def test_bad_inputs():
    with pytest.raises(ValueError, match="norm must be one of"):
        NLayerDiscriminator(norm="instance")
    with pytest.raises(TypeError, match="ndf"):
        NLayerDiscriminator(ndf=64.0)
    with pytest.raises(ValueError, match="n_layers"):
        NLayerDiscriminator(n_layers=0)
    with pytest.raises(ValueError, match="input_nc"):
        NLayerDiscriminator(input_nc=0)
    d = NLayerDiscriminator(ndf=4)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        d(np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        d(np.zeros((3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="too small"):
        d(np.zeros((2, 3, 16, 16), np.float32))

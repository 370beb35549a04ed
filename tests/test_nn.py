"""mmu.nn: Module mechanics (registration, naming, state_dict, load_state_dict,
modes, save/from_pretrained), Parameter, init distributions, and every layer
against its torch twin (same weights via state_dict -> same outputs and
gradients; skipped cleanly without torch)."""
import collections
import copy
import json
import math
import os
import sys
import pickle

import numpy as np
import pytest

import mmu
import mmu.nn as nn
import mmu.nn.functional as F
from mmu.nn import init

try:
    from gradcheck import assert_close, torch_or_skip
except ImportError:
    from tests.gradcheck import assert_close, torch_or_skip


def _rng(seed=0):
    return np.random.default_rng(seed)


class Block(nn.Module):
    """A small custom module: a parameter, a persistent and a non-persistent buffer, children."""

    def __init__(self, dim=4, hidden=6):
        super().__init__()
        self.scale = nn.Parameter(mmu.ones(dim))
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.register_buffer("running", mmu.zeros(dim))
        self.register_buffer("scratch", mmu.zeros(2), persistent=False)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x * self.scale))) + self.running


class Tied(nn.Module):
    def __init__(self, vocab=7, dim=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight  # weight tying: one parameter, two names

    def forward(self, idx):
        return self.head(self.emb(idx))


# ============================================================ Parameter
def test_parameter_is_a_tensor_subclass_sharing_memory():
    t = mmu.randn(2, 3)
    p = nn.Parameter(t)
    assert isinstance(p, mmu.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf and p.shape == (2, 3)
    p.numpy()[0, 0] = 42.0  # shares t's memory, as torch's Parameter(t) does
    assert t.numpy()[0, 0] == 42.0
    y = p * 2 + 1
    assert type(y) is mmu.Tensor  # ops return plain tensors
    assert type(F.linear(mmu.randn(4, 3), p)) is mmu.Tensor
    (p * p).sum().backward()
    assert_close(p.grad.numpy(), 2 * p.numpy())
    assert not nn.Parameter(mmu.randn(2), requires_grad=False).requires_grad
    assert nn.Parameter().shape == (0,)
    assert repr(p).startswith("Parameter containing:\ntensor(")
    with pytest.raises(TypeError, match="float32"):
        nn.Parameter(mmu.arange(3))
    assert nn.Parameter(mmu.arange(3), requires_grad=False).dtype == mmu.int64


def test_tensor_constructor_and_plain_subclasses():
    t = mmu.randn(3, requires_grad=True)
    a = mmu.Tensor(t)  # like torch.Tensor(t): an alias of the data, cut from the graph
    assert type(a) is mmu.Tensor and a._data_ptr() == t._data_ptr() and not a.requires_grad
    arr = np.arange(4, dtype=np.float64)
    c = mmu.Tensor(arr)  # anything else is copied (float64 -> float32)
    assert c.dtype == mmu.float32 and c.numpy().tolist() == [0, 1, 2, 3]
    arr[0] = 9
    assert c.numpy()[0] == 0

    class Tagged(mmu.Tensor):
        __slots__ = ()

    x = Tagged(t)
    assert isinstance(x, mmu.Tensor) and type(x + 1) is mmu.Tensor
    assert type(pickle.loads(pickle.dumps(x))) is mmu.Tensor  # Tensor's own reduce: a plain tensor
    with pytest.raises(TypeError):
        mmu.Tensor("abc")


def test_parameter_from_graph_tensor_is_a_new_leaf():
    a = mmu.randn(3, requires_grad=True)
    p = nn.Parameter(a * 2)
    assert p.is_leaf and p.grad_fn is None and p.requires_grad


def test_parameter_pickle_and_deepcopy_keep_the_class():
    p = nn.Parameter(mmu.randn(3, 2))
    for q in (pickle.loads(pickle.dumps(p)), copy.deepcopy(p)):
        assert type(q) is nn.Parameter and q.requires_grad
        np.testing.assert_array_equal(q.numpy(), p.numpy())
        assert q._data_ptr() != p._data_ptr()
    q = pickle.loads(pickle.dumps(nn.Parameter(mmu.randn(2), requires_grad=False)))
    assert not q.requires_grad


def test_parameter_gc_and_attributes():
    import gc
    import weakref
    p = nn.Parameter(mmu.randn(4))
    p.tag = "decay"  # Parameters take attributes (optimizer hints), like torch's
    p.me = p  # a cycle through the instance dict
    r = weakref.ref(p)
    del p
    gc.collect()
    assert r() is None


# ========================================================= registration
def test_registration_and_attribute_access():
    m = Block()
    assert list(m._parameters) == ["scale"]
    assert list(m._modules) == ["fc1", "act", "fc2"]
    assert list(m._buffers) == ["running", "scratch"]
    assert m.fc1.weight.shape == (6, 4)
    with pytest.raises(AttributeError, match="'Block' object has no attribute 'nope'"):
        m.nope
    with pytest.raises(TypeError, match="parameter 'scale'"):
        m.scale = mmu.randn(4)  # a plain tensor cannot replace a parameter
    m.scale = None
    assert m.scale is None and "scale" in m._parameters
    with pytest.raises(TypeError, match="child module 'fc1'"):
        m.fc1 = 3
    with pytest.raises(TypeError, match="buffer 'running'"):
        m.running = np.zeros(4)
    m.running = mmu.ones(4)
    assert m.running.numpy().sum() == 4
    m.fc1 = nn.Parameter(mmu.randn(2))  # a parameter replaces a module of the same name
    assert "fc1" not in m._modules and "fc1" in m._parameters
    del m.fc1
    assert "fc1" not in m._parameters
    with pytest.raises(AttributeError):
        m.fc1
    m.plain = 3
    assert m.plain == 3 and "plain" not in m._parameters
    assert "fc2" in dir(m)


def test_assign_before_init_and_bad_names():
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(mmu.randn(2))
            super().__init__()

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Bad()
    m = nn.Module()
    with pytest.raises(KeyError, match="contain"):
        m.register_parameter("a.b", None)
    with pytest.raises(KeyError, match="empty"):
        m.register_buffer("", None)
    with pytest.raises(TypeError):
        m.register_buffer("b", [1, 2])
    with pytest.raises(TypeError):
        m.register_parameter("p", mmu.randn(2))
    with pytest.raises(TypeError):
        m.add_module("x", object())
    m.x = 1
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("x", mmu.zeros(1))
    with pytest.raises(NotImplementedError, match="forward"):
        m(1)


def test_named_members_order_and_dedup():
    m = Block()
    assert [n for n, _ in m.named_parameters()] == ["scale", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in m.named_parameters(recurse=False)] == ["scale"]
    assert [n for n, _ in m.named_parameters(prefix="enc")][:2] == ["enc.scale", "enc.fc1.weight"]
    assert [n for n, _ in m.named_buffers()] == ["running", "scratch"]
    assert [n for n, _ in m.named_children()] == ["fc1", "act", "fc2"]
    assert [n for n, _ in m.named_modules()] == ["", "fc1", "act", "fc2"]
    assert len(list(m.parameters())) == 5 and len(list(m.buffers())) == 2
    assert m.get_submodule("fc2") is m.fc2
    with pytest.raises(AttributeError):
        m.get_submodule("fc3")
    t = Tied()
    assert [n for n, _ in t.named_parameters()] == ["emb.weight"]  # shared once
    assert t.num_parameters() == 7 * 4
    assert list(t.state_dict()) == ["emb.weight", "head.weight"]  # both names, like torch
    shared = nn.Linear(2, 2)
    seq = nn.Sequential(shared, nn.ReLU(), shared)
    assert [n for n, _ in seq.named_modules()] == ["", "0", "1"]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias"]
    assert [n for n, _ in seq.named_parameters(remove_duplicate=False)] == \
        ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_state_dict_shares_memory_and_is_detached():
    m = Block()
    sd = m.state_dict()
    assert list(sd) == ["scale", "running", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert isinstance(sd, collections.OrderedDict)
    w = sd["fc1.weight"]
    assert type(w) is mmu.Tensor and not w.requires_grad
    assert w._data_ptr() == m.fc1.weight._data_ptr()
    assert m.state_dict(keep_vars=True)["fc1.weight"] is m.fc1.weight


def test_state_dict_keys_match_torch():
    torch = torch_or_skip()
    for build in (lambda n: n.Sequential(n.Conv2d(3, 4, 3), n.GroupNorm(2, 4), n.SiLU(), n.Flatten(),
                                         n.Linear(4, 2)),
                  lambda n: n.MultiheadAttention(8, 2, kdim=6, vdim=5),
                  lambda n: n.MultiheadAttention(8, 2, bias=False),
                  lambda n: n.ModuleDict({"a": n.LayerNorm(3, bias=False), "b": n.ModuleList([n.Embedding(4, 2)])}),
                  lambda n: n.ConvTranspose2d(4, 2, 3, bias=False)):
        ours, theirs = build(nn).state_dict(), build(torch.nn).state_dict()
        assert list(ours) == list(theirs)
        assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]


def test_transformer_block_state_dict_keys_equal_torch_encoder_layer():
    torch = torch_or_skip()
    ours = nn.TransformerBlock(16, 4, mlp_ratio=2.0).state_dict()
    theirs = torch.nn.TransformerEncoderLayer(16, 4, dim_feedforward=32, dropout=0.0, activation="gelu",
                                              batch_first=True, norm_first=True).state_dict()
    assert list(ours) == list(theirs)
    assert [tuple(v.shape) for v in ours.values()] == [tuple(v.shape) for v in theirs.values()]


# ======================================================== load_state_dict
def test_load_state_dict_round_trip_and_sources():
    a, b = Block(), Block()
    for v in a.state_dict().values():
        v.numpy()[...] = _rng(1).standard_normal(v.shape)
    res = b.load_state_dict(a.state_dict())
    assert res.missing_keys == [] and res.unexpected_keys == []
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k].numpy(), v.numpy())
    # NumPy arrays (float64 is cast) are accepted
    b.load_state_dict({k: v.numpy().astype(np.float64) * 2 for k, v in a.state_dict().items()})
    assert_close(b.fc1.weight.numpy(), 2 * a.fc1.weight.numpy())
    # the loaded values are copies: changing the source later does not touch the module
    src = {k: v.numpy().copy() for k, v in a.state_dict().items()}
    b.load_state_dict(src)
    src["scale"][...] = 123
    assert not np.any(b.scale.numpy() == 123)


def test_load_state_dict_accepts_torch_tensors():
    torch = torch_or_skip()
    t = torch.nn.Linear(3, 2)
    m = nn.Linear(3, 2)
    m.load_state_dict(t.state_dict())
    np.testing.assert_array_equal(m.weight.numpy(), t.weight.detach().numpy())
    m.load_state_dict({k: v.to(torch.bfloat16) for k, v in t.state_dict().items()})
    assert_close(m.weight.numpy(), t.weight.detach().numpy(), rtol=1e-2, atol=1e-2)


def test_load_state_dict_strict_errors_list_everything_and_load_nothing():
    m = Block()
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    bad = {k: np.full(v.shape, 7.0, np.float32) for k, v in m.state_dict().items()}
    del bad["fc2.bias"]
    bad["fc3.weight"] = np.zeros(2, np.float32)
    bad["fc1.weight"] = np.zeros((4, 6), np.float32)  # transposed: mis-shaped
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(bad)
    msg = str(e.value)
    assert "Missing key(s) in state_dict: \"fc2.bias\"" in msg
    assert "Unexpected key(s) in state_dict: \"fc3.weight\"" in msg
    assert "size mismatch for fc1.weight" in msg and "(4, 6)" in msg and "(6, 4)" in msg
    for k, v in m.state_dict().items():  # nothing half-loaded
        np.testing.assert_array_equal(v.numpy(), before[k])
    # strict=False: missing / unexpected are returned, shape mismatches still raise
    del bad["fc1.weight"]
    res = m.load_state_dict(bad, strict=False)
    assert res == (["fc1.weight", "fc2.bias"], ["fc3.weight"])
    assert res.missing_keys == ["fc1.weight", "fc2.bias"]
    assert np.all(m.scale.numpy() == 7.0)
    with pytest.raises(RuntimeError, match="size mismatch"):
        m.load_state_dict({"scale": np.zeros(5, np.float32)}, strict=False)
    with pytest.raises(TypeError):
        m.load_state_dict([1, 2])
    with pytest.raises(RuntimeError, match="dtype mismatch"):
        nn.Embedding(3, 2).load_state_dict({"weight": np.zeros((3, 2), np.complex64)})
    assert repr(nn.Linear(2, 2).load_state_dict(nn.Linear(2, 2).state_dict())) == "<All keys matched successfully>"


# =============================================================== modes etc
def test_train_eval_zero_grad_apply_requires_grad():
    m = nn.Sequential(Block(), nn.Dropout(0.5), nn.Sequential(nn.Linear(4, 4)))
    assert all(x.training for x in m.modules())
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m[2].train()
    assert m[2][0].training and not m[0].training
    m.train()
    m.eval()
    x = mmu.randn(3, 4)
    m(x).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad(set_to_none=False)
    assert all(np.all(p.grad.numpy() == 0) for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())
    seen = []
    assert m.apply(lambda mod: seen.append(type(mod).__name__)) is m
    assert seen == ["Linear", "GELU", "Linear", "Block", "Dropout", "Linear", "Sequential", "Sequential"]
    m.apply(lambda mod: init.zeros_(mod.weight) if isinstance(mod, nn.Linear) else None)
    assert np.all(m[2][0].weight.numpy() == 0)
    assert m.requires_grad_(False) is m
    assert not any(p.requires_grad for p in m.parameters())
    with pytest.raises(ValueError):
        m.train("yes")


def test_module_pickle_deepcopy_and_to():
    m = Tied()
    m.emb.weight.numpy()[0, 0] = 5.0
    for c in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert type(c) is Tied and c.head.weight is c.emb.weight  # the tie survives
        assert type(c.emb.weight) is nn.Parameter and c.emb.weight.requires_grad
        assert c.emb.weight.numpy()[0, 0] == 5.0 and c.emb.weight._data_ptr() != m.emb.weight._data_ptr()
        idx = mmu.tensor(np.array([1, 2]))
        np.testing.assert_array_equal(c(idx).numpy(), m(idx).numpy())
    b = copy.deepcopy(Block())
    assert list(b.state_dict()) == list(Block().state_dict()) and "scratch" in b._buffers
    assert m.to("cpu") is m and m.to(mmu.float32) is m and m.cpu() is m and m.float() is m
    with pytest.raises(ValueError, match="CPU"):
        m.to("cuda")


def test_forward_hooks():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    feats = []
    h = m[1].register_forward_hook(lambda mod, args, out: feats.append(out))
    pre = m[0].register_forward_pre_hook(lambda mod, args: (args[0] * 0,))
    x = mmu.randn(5, 3)
    y = m(x)
    assert len(feats) == 1 and feats[0].shape == (5, 4)
    np.testing.assert_array_equal(feats[0].numpy(), np.maximum(m[0].bias.numpy(), 0)[None].repeat(5, 0))
    pre.remove()
    h.remove()
    m(x)
    assert len(feats) == 1
    with m[2].register_forward_hook(lambda mod, args, out: out * 0):
        assert np.all(m(x).numpy() == 0)
    assert not np.all(m(x).numpy() == 0)
    assert y.shape == (5, 2)


def test_repr_matches_torch():
    torch = torch_or_skip()
    build = lambda n: n.Sequential(  # noqa: E731
        n.Conv2d(3, 8, 3, padding=1), n.GroupNorm(4, 8, eps=1e-6), n.SiLU(),
        n.Conv2d(8, 8, (3, 1), stride=2, bias=False, groups=2), n.ConvTranspose2d(8, 4, 4, stride=2, padding=1),
        n.Flatten(), n.Linear(16, 4), n.LayerNorm(4), n.GELU(approximate="tanh"), n.Dropout(0.1),
        n.LeakyReLU(0.2), n.Embedding(10, 3, padding_idx=0), n.ReLU(), n.Tanh(), n.Sigmoid(), n.Identity(),
        n.Upsample(scale_factor=2, mode="nearest"), n.Softmax(dim=-1), n.RMSNorm(4),
        n.ModuleList([n.Linear(2, 2)]), n.ModuleDict({"x": n.Conv1d(2, 2, 1)}), n.AvgPool2d(2), n.PixelShuffle(2),
        n.PixelUnshuffle(2))
    assert repr(build(nn)) == repr(build(torch.nn))


# ================================================================ init
def test_same_seed_same_weights():
    mmu.manual_seed(7)
    a = nn.Sequential(nn.Linear(8, 8), nn.TransformerBlock(8, 2))
    mmu.manual_seed(7)
    b = nn.Sequential(nn.Linear(8, 8), nn.TransformerBlock(8, 2))
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=k)
    c = nn.Linear(8, 8)
    assert not np.array_equal(c.weight.numpy(), a[0].weight.numpy())


def test_init_distributions_match_torch_formulas():
    mmu.manual_seed(0)
    shape = (256, 128, 3, 3)
    fan_in, fan_out = 128 * 9, 256 * 9
    t = mmu.zeros(*shape)
    x = init.uniform_(t, -2.0, 3.0).numpy()
    assert x.min() >= -2.0 and x.max() < 3.0
    assert abs(x.mean() - 0.5) < 0.01 and abs(x.std() - 5 / math.sqrt(12)) < 0.01
    x = init.normal_(t, 1.0, 2.0).numpy()
    assert abs(x.mean() - 1.0) < 0.01 and abs(x.std() - 2.0) < 0.01
    x = init.xavier_uniform_(t, gain=2.0).numpy()
    a = 2.0 * math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(x).max() <= a and np.abs(x).max() > 0.999 * a
    assert abs(x.std() - a / math.sqrt(3)) < 0.01 * a
    x = init.xavier_normal_(t).numpy()
    assert abs(x.std() - math.sqrt(2.0 / (fan_in + fan_out))) < 0.01 * x.std()
    x = init.kaiming_uniform_(t, a=math.sqrt(5)).numpy()
    bound = 1 / math.sqrt(fan_in)  # what Linear/Conv use
    assert np.abs(x).max() <= bound and np.abs(x).max() > 0.999 * bound
    x = init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu").numpy()
    assert abs(x.std() - math.sqrt(2.0 / fan_out)) < 0.01 * x.std() and abs(x.mean()) < 1e-3
    x = init.trunc_normal_(t, mean=0.5, std=1.0, a=-1.0, b=1.5).numpy()
    assert x.min() >= -1.0 and x.max() <= 1.5
    # the truncated normal's mean / std (closed form)
    from math import erf, exp, pi, sqrt
    al, be = -1.5, 1.0
    phi = lambda z: exp(-z * z / 2) / sqrt(2 * pi)  # noqa: E731
    cdf = lambda z: 0.5 * (1 + erf(z / sqrt(2)))  # noqa: E731
    zm = cdf(be) - cdf(al)
    mean = 0.5 + (phi(al) - phi(be)) / zm
    var = 1 + (al * phi(al) - be * phi(be)) / zm - ((phi(al) - phi(be)) / zm) ** 2
    assert abs(x.mean() - mean) < 0.01 and abs(x.std() - sqrt(var)) < 0.01
    assert np.all(init.constant_(t, 0.25).numpy() == 0.25)
    assert np.all(init.zeros_(t).numpy() == 0) and np.all(init.ones_(t).numpy() == 1)
    np.testing.assert_array_equal(init.eye_(mmu.zeros(2, 3)).numpy(), np.eye(2, 3))
    with pytest.raises(ValueError, match="fewer than 2"):
        init.xavier_uniform_(mmu.zeros(5))
    with pytest.raises(ValueError):
        init.kaiming_uniform_(t, mode="fan_avg")
    with pytest.raises(TypeError):
        init.normal_(np.zeros(3))


def test_init_is_in_place_without_grad():
    p = nn.Parameter(mmu.zeros(3, 4))
    ptr = p._data_ptr()
    assert init.normal_(p) is p and p._data_ptr() == ptr
    assert p.is_leaf and p.requires_grad and p.grad_fn is None


def test_calculate_gain_matches_torch():
    torch = torch_or_skip()
    for args in (("linear",), ("conv2d",), ("sigmoid",), ("tanh",), ("relu",), ("leaky_relu",),
                 ("leaky_relu", 0.2), ("selu",), ("conv_transpose2d",)):
        assert init.calculate_gain(*args) == pytest.approx(torch.nn.init.calculate_gain(*args))
    with pytest.raises(ValueError):
        init.calculate_gain("swish")


_INIT_LAYERS = [
    lambda n: n.Linear(300, 200),
    lambda n: n.Conv2d(32, 64, 3),
    lambda n: n.Conv1d(16, 64, 5, groups=4),
    lambda n: n.ConvTranspose2d(64, 32, 4, stride=2),  # transposed fan-in quirk: fan_in = 32 * 16
    lambda n: n.ConvTranspose3d(16, 24, 3, groups=2),
    lambda n: n.Embedding(500, 64),
    lambda n: n.MultiheadAttention(128, 4),
    lambda n: n.MultiheadAttention(64, 4, kdim=32, vdim=48),
    lambda n: n.LayerNorm(16),
    lambda n: n.GroupNorm(4, 16),
    lambda n: n.RMSNorm(16),
]


@pytest.mark.parametrize("i", range(len(_INIT_LAYERS)))
def test_default_init_matches_torch_distribution(i):
    """Each parameter of the default-initialised layer has torch's distribution: same
    bounds (max |w|), mean and std within sampling error."""
    torch = torch_or_skip()
    torch.manual_seed(0)
    mmu.manual_seed(0)
    ours = _INIT_LAYERS[i](nn).state_dict()
    theirs = _INIT_LAYERS[i](torch.nn).state_dict()
    for k, t in theirs.items():
        a, b = ours[k].numpy().astype(np.float64), t.detach().numpy().astype(np.float64)
        if np.all(b == b.flat[0]):  # constant init (zeros / ones)
            np.testing.assert_array_equal(a, b, err_msg=k)
            continue
        # sampling error of the std ~ std / sqrt(2n), of a difference of means ~ std * sqrt(2 / n)
        assert a.std() == pytest.approx(b.std(), rel=4 / math.sqrt(2 * a.size) + 0.01), k
        assert abs(a.mean() - b.mean()) < 4 * b.std() * math.sqrt(2 / a.size), k
        assert np.abs(a).max() == pytest.approx(np.abs(b).max(), rel=0.35), k


def test_embedding_padding_idx_row_is_zero_and_gets_no_grad():
    e = nn.Embedding(5, 3, padding_idx=-1)
    assert e.padding_idx == 4 and np.all(e.weight.numpy()[4] == 0)
    with mmu.no_grad():
        e.weight.numpy()[4] = 1.0
    idx = mmu.tensor(np.array([[4, 1], [1, 4]]))
    out = e(idx)
    assert np.all(out.numpy()[0, 0] == 1.0)  # the forward shows the row
    out.sum().backward()
    g = e.weight.grad.numpy()
    assert np.all(g[4] == 0) and np.all(g[1] == 2)
    np.testing.assert_array_equal(e(np.array([4, 1])).numpy(), e(mmu.tensor(np.array([4, 1]))).numpy())
    with pytest.raises(ValueError):
        nn.Embedding(5, 3, padding_idx=5)


# ====================================================== layers vs torch
def _param_names(mod):
    return [k for k, _ in mod.named_parameters()]


def _compare(mmu_mod, torch_mod, inputs, call=None, rtol=1e-4, atol=1e-5, load_as="numpy"):
    """Loads torch_mod's weights into mmu_mod, runs both on the same inputs (float
    arrays require grad), backpropagates the same upstream gradient, and compares
    outputs, input gradients and parameter gradients."""
    torch = torch_or_skip()
    sd = torch_mod.state_dict()
    mmu_mod.load_state_dict({k: v.detach().numpy() for k, v in sd.items()} if load_as == "numpy" else sd)
    call = call or (lambda m, *xs: m(*xs))
    m_in = [mmu.tensor(x, requires_grad=x.dtype.kind == "f") for x in inputs]
    t_in = [torch.tensor(x, requires_grad=x.dtype.kind == "f") for x in inputs]
    m_out, t_out = call(mmu_mod, *m_in), call(torch_mod, *t_in)
    if not isinstance(m_out, tuple):
        m_out, t_out = (m_out,), (t_out,)
    rng = _rng(99)
    m_loss, t_loss = 0, 0
    for i, (a, b) in enumerate(zip(m_out, t_out)):
        if b is None:
            assert a is None
            continue
        b_np = b.detach().numpy()
        assert a.shape == tuple(b_np.shape), f"output {i}: {a.shape} vs {tuple(b_np.shape)}"
        assert_close(a.numpy(), b_np, rtol, atol, what=f"output {i}")
        up = rng.standard_normal(b_np.shape).astype(np.float32)
        m_loss = m_loss + (a * mmu.tensor(up)).sum()
        t_loss = t_loss + (b * torch.tensor(up)).sum()
    m_loss.backward()
    t_loss.backward()
    for i, (a, b) in enumerate(zip(m_in, t_in)):
        if b.requires_grad:
            assert_close(a.grad.numpy(), b.grad.numpy(), rtol, atol, what=f"grad of input {i}")
    theirs = dict(torch_mod.named_parameters())
    for k, p in mmu_mod.named_parameters():
        tg = theirs[k].grad
        if tg is None:
            assert p.grad is None or np.all(p.grad.numpy() == 0), k
        else:
            assert_close(p.grad.numpy(), tg.numpy(), rtol, atol, what=f"grad of {k}")


def _x(*shape, seed=0):
    return _rng(seed).standard_normal(shape).astype(np.float32)


# (id, constructor taking the nn namespace, input arrays[, call(module, *inputs)])
LAYER_CASES = [
    ("Linear", lambda n: n.Linear(5, 3), [_x(2, 4, 5)]),
    ("Linear_nobias", lambda n: n.Linear(5, 3, bias=False), [_x(4, 5)]),
    ("Conv1d", lambda n: n.Conv1d(3, 4, 3, stride=2, padding=1), [_x(2, 3, 9)]),
    ("Conv1d_unbatched_same", lambda n: n.Conv1d(3, 4, 4, padding="same", dilation=2), [_x(3, 11)]),
    ("Conv2d", lambda n: n.Conv2d(3, 4, 3, padding=1), [_x(2, 3, 6, 6)]),
    ("Conv2d_groups", lambda n: n.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2,
                                         bias=False), [_x(2, 4, 7, 6)]),
    ("Conv2d_valid", lambda n: n.Conv2d(2, 3, 3, padding="valid"), [_x(1, 2, 5, 5)]),
    ("Conv2d_reflect", lambda n: n.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), [_x(1, 2, 5, 6)]),
    ("Conv2d_replicate_same", lambda n: n.Conv2d(2, 3, 4, padding="same", padding_mode="replicate"),
     [_x(1, 2, 5, 6)]),
    ("Conv1d_circular", lambda n: n.Conv1d(2, 3, 3, padding=2, padding_mode="circular"), [_x(2, 2, 7)]),
    ("Conv3d", lambda n: n.Conv3d(2, 3, 3, stride=(1, 2, 2), padding=1), [_x(1, 2, 4, 5, 5)]),
    ("ConvTranspose1d", lambda n: n.ConvTranspose1d(3, 2, 4, stride=2, padding=1), [_x(2, 3, 5)]),
    ("ConvTranspose2d", lambda n: n.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1),
     [_x(2, 4, 4, 5)]),
    ("ConvTranspose2d_groups", lambda n: n.ConvTranspose2d(4, 6, 3, groups=2, dilation=2, bias=False),
     [_x(1, 4, 3, 3)]),
    ("ConvTranspose2d_output_size", lambda n: n.ConvTranspose2d(3, 2, 3, stride=2, padding=1), [_x(1, 3, 4, 4)],
     lambda m, x: m(x, output_size=(8, 8))),
    ("ConvTranspose3d", lambda n: n.ConvTranspose3d(2, 3, 2, stride=2), [_x(1, 2, 2, 3, 3)]),
    ("LayerNorm", lambda n: n.LayerNorm(6), [_x(2, 3, 6)]),
    ("LayerNorm_2d_nobias", lambda n: n.LayerNorm((3, 6), eps=1e-6, bias=False), [_x(2, 3, 6)]),
    ("LayerNorm_noaffine", lambda n: n.LayerNorm(6, elementwise_affine=False), [_x(4, 6)]),
    ("GroupNorm", lambda n: n.GroupNorm(2, 4, eps=1e-6), [_x(2, 4, 3, 3)]),
    ("GroupNorm_noaffine", lambda n: n.GroupNorm(4, 4, affine=False), [_x(2, 4, 5)]),
    ("GroupNorm_nobias", lambda n: n.GroupNorm(1, 4, bias=False), [_x(2, 4, 5)]),
    ("RMSNorm", lambda n: n.RMSNorm(6), [_x(2, 3, 6)]),
    ("RMSNorm_eps", lambda n: n.RMSNorm((3, 6), eps=1e-6), [_x(2, 3, 6)]),
    ("Embedding", lambda n: n.Embedding(7, 3), [np.array([[1, 2, 6], [0, 1, 1]])]),
    ("Embedding_padding", lambda n: n.Embedding(7, 3, padding_idx=1), [np.array([[1, 2, 6], [0, 1, 1]])]),
    ("ReLU", lambda n: n.ReLU(), [_x(3, 4)]),
    ("GELU", lambda n: n.GELU(), [_x(3, 4)]),
    ("GELU_tanh", lambda n: n.GELU(approximate="tanh"), [_x(3, 4)]),
    ("SiLU", lambda n: n.SiLU(), [_x(3, 4)]),
    ("Sigmoid", lambda n: n.Sigmoid(), [_x(3, 4)]),
    ("Tanh", lambda n: n.Tanh(), [_x(3, 4)]),
    ("LeakyReLU", lambda n: n.LeakyReLU(0.2), [_x(3, 4)]),
    ("Softmax", lambda n: n.Softmax(dim=-1), [_x(3, 4)]),
    ("Softmax_legacy_dim", lambda n: n.Softmax(), [_x(2, 3, 4)]),
    ("Identity", lambda n: n.Identity(5, foo=1), [_x(3, 4)]),
    ("Flatten", lambda n: n.Flatten(), [_x(2, 3, 4)]),
    ("Unflatten", lambda n: n.Unflatten(1, (2, 3)), [_x(4, 6)]),
    ("Upsample_nearest", lambda n: n.Upsample(scale_factor=2), [_x(1, 2, 3, 4)]),
    ("Upsample_nearest_size", lambda n: n.Upsample(size=(5, 7)), [_x(1, 2, 3, 4)]),
    ("Upsample_bilinear", lambda n: n.Upsample(scale_factor=2, mode="bilinear"), [_x(1, 2, 3, 4)]),
    ("Upsample_bilinear_ac", lambda n: n.Upsample(size=(5, 6), mode="bilinear", align_corners=True),
     [_x(1, 2, 3, 4)]),
    ("AvgPool2d", lambda n: n.AvgPool2d(2), [_x(1, 2, 4, 6)]),
    ("AvgPool2d_pad", lambda n: n.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), [_x(1, 2, 5, 5)]),
    ("PixelShuffle", lambda n: n.PixelShuffle(2), [_x(1, 8, 2, 3)]),
    ("PixelUnshuffle", lambda n: n.PixelUnshuffle(2), [_x(1, 2, 4, 6)]),
    ("Sequential", lambda n: n.Sequential(n.Linear(4, 8), n.SiLU(), n.Linear(8, 2)), [_x(3, 4)]),
]


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_layer_matches_torch(case):
    torch = torch_or_skip()
    _, build, inputs, *call = case
    torch.manual_seed(0)
    _compare(build(nn), build(torch.nn), inputs, call[0] if call else None)


def test_load_torch_state_dict_objects_directly():
    torch = torch_or_skip()
    build = lambda n: n.Sequential(n.Linear(4, 8), n.LayerNorm(8), n.Linear(8, 2))  # noqa: E731
    _compare(build(nn), build(torch.nn), [_x(3, 4)], load_as="torch")


def _mha_call(**kw):
    def call(m, q, k, v, *masks):
        extra = dict(kw)
        names = [n for n in ("attn_mask", "key_padding_mask") if n in extra and extra[n] is True]
        for n, mask in zip(names, masks):
            extra[n] = mask
        return m(q, k, v, **extra)
    return call


def _bool(*shape, seed=0, p=0.3):
    m = _rng(seed).random(shape) < p
    return m


def _causal_bool(l, s):
    return ~np.tril(np.ones((l, s), bool))


MHA_CASES = [
    ("weights_batch_first", dict(batch_first=True), (2, 5, 8), (2, 5, 8), dict(), []),
    ("weights_per_head", dict(batch_first=True), (2, 5, 8), (2, 5, 8), dict(average_attn_weights=False), []),
    ("fused_seq_first", dict(), (5, 2, 8), (5, 2, 8), dict(need_weights=False), []),
    ("cross_attention_lq_ne_lk", dict(batch_first=True), (2, 3, 8), (2, 6, 8), dict(need_weights=False), []),
    ("kdim_vdim", dict(batch_first=True, kdim=6, vdim=5), (2, 4, 8), None, dict(), []),
    ("nobias", dict(batch_first=True, bias=False), (2, 4, 8), (2, 4, 8), dict(need_weights=False), []),
    ("bool_attn_mask", dict(batch_first=True), (2, 5, 8), (2, 5, 8), dict(attn_mask=True, need_weights=False),
     [_causal_bool(5, 5)]),
    ("bool_attn_mask_weights", dict(batch_first=True), (2, 5, 8), (2, 5, 8), dict(attn_mask=True),
     [_causal_bool(5, 5)]),
    ("float_attn_mask_3d", dict(batch_first=True), (2, 4, 8), (2, 6, 8), dict(attn_mask=True, need_weights=False),
     [_x(4, 4, 6, seed=3)]),
    ("key_padding_mask", dict(batch_first=True), (2, 4, 8), (2, 6, 8),
     dict(key_padding_mask=True, need_weights=False), [np.array([[0, 0, 0, 0, 1, 1], [0, 1, 0, 0, 0, 0]], bool)]),
    ("both_masks_weights", dict(batch_first=True), (2, 5, 8), (2, 5, 8),
     dict(attn_mask=True, key_padding_mask=True), [_causal_bool(5, 5),
                                                   np.array([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], bool)]),
    ("float_kpm", dict(batch_first=True), (2, 4, 8), (2, 4, 8), dict(key_padding_mask=True, need_weights=False),
     [_x(2, 4, seed=5)]),
    ("causal_hint_with_mask", dict(batch_first=True), (2, 5, 8), (2, 5, 8),
     dict(attn_mask=True, is_causal=True, need_weights=False), [_causal_bool(5, 5)]),
    ("unbatched", dict(), (5, 8), (5, 8), dict(), []),
]


@pytest.mark.parametrize("case", MHA_CASES, ids=[c[0] for c in MHA_CASES])
def test_multihead_attention_matches_torch(case):
    torch = torch_or_skip()
    _, kw, qshape, kshape, call_kw, masks = case
    torch.manual_seed(0)
    q = _x(*qshape, seed=1)
    if kshape is None:  # kdim / vdim differ: separate key and value widths
        k, v = _x(2, 6, kw["kdim"], seed=2), _x(2, 6, kw["vdim"], seed=3)
    else:
        k, v = _x(*kshape, seed=2), _x(*kshape, seed=3)
    _compare(nn.MultiheadAttention(8, 2, **kw), torch.nn.MultiheadAttention(8, 2, **kw), [q, k, v] + masks,
             _mha_call(**call_kw), rtol=1e-4, atol=2e-5)


def test_multihead_attention_self_attention_same_object():
    torch = torch_or_skip()
    torch.manual_seed(0)
    _compare(nn.MultiheadAttention(8, 4, batch_first=True), torch.nn.MultiheadAttention(8, 4, batch_first=True),
             [_x(2, 5, 8)], lambda m, x: m(x, x, x, need_weights=False))


def test_multihead_attention_errors():
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = mmu.randn(2, 4, 8)
    with pytest.raises(ValueError, match="divisible"):
        nn.MultiheadAttention(8, 3)
    with pytest.raises(ValueError, match="embedding dimension"):
        m(mmu.randn(2, 4, 6), x, x)
    with pytest.raises(ValueError, match="2D attn_mask"):
        m(x, x, x, attn_mask=np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="key_padding_mask"):
        m(x, x, x, key_padding_mask=np.zeros((2, 5), bool))
    with pytest.raises(ValueError):
        m(mmu.randn(8), x, x)
    with pytest.raises(TypeError):
        m(x, x, x, attn_mask=np.zeros((4, 4), np.int64))


def test_multihead_attention_causal_without_mask_equals_explicit_mask():
    mmu.manual_seed(0)
    m = nn.MultiheadAttention(8, 2, batch_first=True)
    x = mmu.randn(2, 5, 8)
    a = m(x, x, x, is_causal=True, need_weights=False)[0]
    b = m(x, x, x, attn_mask=_causal_bool(5, 5), need_weights=False)[0]
    c, w = m(x, x, x, is_causal=True)
    assert_close(a.numpy(), b.numpy(), 1e-5, 1e-6)
    assert_close(c.numpy(), b.numpy(), 1e-5, 1e-6)
    assert np.all(np.triu(w.numpy()[0], 1) == 0)


def test_multihead_attention_qk_norm_and_rope():
    mmu.manual_seed(0)
    for qk_type in ("rmsnorm", "layernorm"):
        m = nn.MultiheadAttention(16, 2, batch_first=True, qk_norm=True, qk_norm_type=qk_type)
        assert [k for k in m.state_dict() if "norm" in k][:1] == ["q_norm.weight"]
        x = mmu.randn(2, 5, 16, requires_grad=True)
        out, _ = m(x, x, x, need_weights=False)
        # reference: q/k normalised over head_dim before the scores
        ref, _ = _manual_mha(m, x.detach().numpy(), qk_type=qk_type)
        assert_close(out.numpy(), ref, 1e-4, 1e-5)
        out.sum().backward()
        assert m.q_norm.weight.grad is not None and x.grad.shape == x.shape
    m = nn.MultiheadAttention(16, 2, batch_first=True, rope=True)
    x = mmu.randn(2, 6, 16)
    out = m(x, x, x, need_weights=False)[0]
    cos, sin = F.rotary_cos_sin(mmu.arange(6), 8)
    out2 = m(x, x, x, need_weights=False, rope=(cos, sin))[0]
    assert_close(out.numpy(), out2.numpy(), 1e-6, 1e-6)
    ref, _ = _manual_mha(m, x.numpy(), rope=(cos.numpy(), sin.numpy()))
    assert_close(out.numpy(), ref, 1e-4, 1e-5)
    # rope changes the result but keeps shapes; a shifted sequence is rotation-invariant in its scores
    plain = nn.MultiheadAttention(16, 2, batch_first=True)
    plain.load_state_dict(m.state_dict())
    assert not np.allclose(plain(x, x, x, need_weights=False)[0].numpy(), out.numpy())


def test_rotary_embedding_module_and_cached_prefix_positions():
    rot = nn.RotaryEmbedding(8)
    cos, sin = rot(5)
    c2, s2 = F.rotary_cos_sin(mmu.arange(5), 8)
    np.testing.assert_array_equal(cos.numpy(), c2.numpy())
    grid = np.stack(np.meshgrid(np.arange(2), np.arange(3), indexing="ij"), -1).reshape(-1, 2)
    gcos, gsin = rot(mmu.tensor(grid))
    assert gcos.shape == (6, 8)
    with pytest.raises(ValueError):
        nn.RotaryEmbedding(7)
    # rope=True with Lq < Lk: the queries sit at the last positions of the keys
    mmu.manual_seed(1)
    m = nn.MultiheadAttention(16, 2, batch_first=True, rope=True)
    q, kv = mmu.randn(1, 2, 16), mmu.randn(1, 5, 16)
    out = m(q, kv, kv, need_weights=False)[0]
    qc, qs = F.rotary_cos_sin(mmu.arange(3, 5), 8)
    kc, ks = F.rotary_cos_sin(mmu.arange(5), 8)
    out2 = m(q, kv, kv, need_weights=False, rope=((qc, qs), (kc, ks)))[0]
    np.testing.assert_array_equal(out.numpy(), out2.numpy())
    # the same query as the last rows of a full causal pass
    full = mmu.cat([kv[:, :3], q], 1)
    ref = m(full, full, full, need_weights=False, is_causal=True)[0]
    out3 = m(q, full, full, need_weights=False, attn_mask=_causal_bool(5, 5)[3:])[0]
    assert_close(out3.numpy(), ref.numpy()[:, 3:], 1e-5, 1e-6)


def _manual_mha(m, x, qk_type=None, rope=None):
    """NumPy float64 reference of MultiheadAttention self-attention (no masks)."""
    w = m.in_proj_weight.numpy().astype(np.float64)
    b = m.in_proj_bias.numpy().astype(np.float64)
    n, l, e = x.shape
    h, d = m.num_heads, m.head_dim
    qkv = x.astype(np.float64) @ w.T + b
    q, k, v = (qkv[..., i * e:(i + 1) * e].reshape(n, l, h, d) for i in range(3))

    def norm(t, mod):
        if qk_type == "rmsnorm":
            y = t / np.sqrt((t * t).mean(-1, keepdims=True) + mod.eps)
            return y * mod.weight.numpy()
        mu = t.mean(-1, keepdims=True)
        y = (t - mu) / np.sqrt(((t - mu) ** 2).mean(-1, keepdims=True) + mod.eps)
        return y * mod.weight.numpy() + mod.bias.numpy()

    if qk_type:
        q, k = norm(q, m.q_norm), norm(k, m.k_norm)
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    if rope is not None:
        cos, sin = (np.asarray(t, np.float64) for t in rope)

        def rot(t):
            half = t.shape[-1] // 2
            rotated = np.concatenate([-t[..., half:], t[..., :half]], -1)
            return t * cos + rotated * sin

        q, k = rot(q), rot(k)
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = (p @ v).transpose(0, 2, 1, 3).reshape(n, l, e)
    wo, bo = m.out_proj.weight.numpy().astype(np.float64), m.out_proj.bias.numpy().astype(np.float64)
    return o @ wo.T + bo, p


BLOCK_CASES = [
    ("plain", dict(), dict(), []),
    ("causal", dict(), dict(is_causal=True, attn_mask=True), [_causal_bool(6, 6)]),
    ("padding", dict(), dict(key_padding_mask=True), [np.array([[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]], bool)]),
    ("relu_nobias_ratio2", dict(activation="relu", bias=False, mlp_ratio=2.0), dict(), []),
]


@pytest.mark.parametrize("case", BLOCK_CASES, ids=[c[0] for c in BLOCK_CASES])
def test_transformer_block_matches_torch_encoder_layer(case):
    torch = torch_or_skip()
    _, kw, call_kw, masks = case
    dim, heads = 16, 4
    torch.manual_seed(0)
    ratio = kw.get("mlp_ratio", 4.0)
    theirs = torch.nn.TransformerEncoderLayer(dim, heads, dim_feedforward=int(ratio * dim), dropout=0.0,
                                              activation=kw.get("activation", "gelu"), batch_first=True,
                                              norm_first=True, bias=kw.get("bias", True))
    ours = nn.TransformerBlock(dim, heads, **kw)

    def call(m, x, *ms):
        extra = {}
        if isinstance(m, nn.Module):
            names = [n for n in ("attn_mask", "key_padding_mask") if call_kw.get(n)]
            extra = dict(zip(names, ms), is_causal=call_kw.get("is_causal", False))
            return m(x, **extra)
        names = {"attn_mask": "src_mask", "key_padding_mask": "src_key_padding_mask"}
        extra = {names[n]: mk for n, mk in zip([n for n in names if call_kw.get(n)], ms)}
        return m(x, is_causal=call_kw.get("is_causal", False), **extra)

    _compare(ours, theirs, [_x(2, 6, dim)] + masks, call, rtol=1e-4, atol=3e-5)


def test_transformer_block_options():
    mmu.manual_seed(0)
    b = nn.TransformerBlock(16, 2, qk_norm=True, norm="rmsnorm", rope=True, dropout=0.1, attn_dropout=0.1)
    keys = list(b.state_dict())
    assert "self_attn.q_norm.weight" in keys and "norm1.weight" in keys and "norm1.bias" not in keys
    x = mmu.randn(2, 5, 16, requires_grad=True)
    b.eval()
    y1, y2 = b(x), b(x)
    np.testing.assert_array_equal(y1.numpy(), y2.numpy())  # eval: no dropout
    b.train()
    y = b(x)
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in b.parameters())
    with pytest.raises(ValueError):
        nn.TransformerBlock(16, 2, activation="swish")
    with pytest.raises(ValueError):
        nn.TransformerBlock(16, 2, norm="batchnorm")


def test_dropout_module():
    mmu.manual_seed(0)
    d = nn.Dropout(0.25)
    x = mmu.ones(200, 100, requires_grad=True)
    y = d(x)
    kept = y.numpy() != 0
    assert abs(kept.mean() - 0.75) < 0.02
    assert np.allclose(y.numpy()[kept], 1 / 0.75)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), np.where(kept, 1 / 0.75, 0).astype(np.float32))
    d.eval()
    assert d(x) is x
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def test_layer_constructor_errors():
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2d(3, 4, 3, padding="full")
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(3, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(3, 4, (3, 3, 3))
    with pytest.raises(TypeError):
        nn.Linear(3.5, 2)
    with pytest.raises(ValueError, match="divisible"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match="output_padding"):
        nn.ConvTranspose2d(2, 2, 3, stride=1, output_padding=1)
    with pytest.raises(ValueError, match="exactly one"):
        nn.Upsample()
    with pytest.raises(ValueError):
        nn.GELU(approximate="fast")
    with pytest.raises(ValueError, match="output size"):
        nn.ConvTranspose2d(2, 2, 3, stride=2)(mmu.randn(1, 2, 4, 4), output_size=(20, 20))


# ============================================================ containers
def test_sequential_indexing_slicing_append():
    a, b, c = nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)
    s = nn.Sequential(a, b)
    assert len(s) == 2 and s[0] is a and s[-1] is b
    s.append(c)
    assert len(s) == 3 and s[2] is c and list(s) == [a, b, c]
    sub = s[1:]
    assert isinstance(sub, nn.Sequential) and list(sub) == [b, c]
    assert list(sub._modules) == ["1", "2"]  # torch keeps the original names in a slice
    s[1] = nn.Tanh()
    assert isinstance(s[1], nn.Tanh)
    del s[0]
    assert list(s._modules) == ["0", "1"] and s[1] is c
    with pytest.raises(IndexError):
        s[5]
    with pytest.raises(TypeError):
        s["a"]
    od = nn.Sequential(collections.OrderedDict([("enc", nn.Linear(2, 2)), ("act", nn.ReLU())]))
    assert list(od._modules) == ["enc", "act"] and od.enc is od[0]
    x = mmu.randn(4, 2)
    assert_close(od(x).numpy(), np.maximum(F.linear(x, od.enc.weight, od.enc.bias).numpy(), 0))
    s.insert(0, nn.Identity())
    assert isinstance(s[0], nn.Identity) and len(s) == 3


def test_module_list_and_dict():
    ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
    assert len(ml) == 3 and [n for n, _ in ml.named_parameters()][:2] == ["0.weight", "0.bias"]
    ml.append(nn.ReLU())
    ml.extend([nn.Tanh()])
    ml += [nn.SiLU()]
    assert len(ml) == 6 and isinstance(ml[-1], nn.SiLU)
    assert isinstance(ml[1:3], nn.ModuleList) and len(ml[1:3]) == 2
    ml.insert(0, nn.Identity())
    assert isinstance(ml[0], nn.Identity) and len(ml) == 7
    del ml[0]
    assert list(ml._modules)[:2] == ["0", "1"]
    with pytest.raises(TypeError):
        ml.extend(5)
    md = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.ReLU()})
    md["c"] = nn.Tanh()
    assert list(md.keys()) == ["a", "b", "c"] and "a" in md and len(md) == 3
    assert [n for n, _ in md.named_parameters()] == ["a.weight", "a.bias"]
    assert isinstance(md.pop("b"), nn.ReLU) and list(md) == ["a", "c"]
    md.update([("d", nn.SiLU())])
    assert list(md) == ["a", "c", "d"]


# ================================================= save / from_pretrained
class Classifier(nn.Module):
    """A module-level class (importable by from_pretrained) with JSON-able arguments."""

    def __init__(self, in_dim, classes, hidden=(8, 8), act="gelu", *, dropout=0.0):
        super().__init__()
        dims = (in_dim,) + tuple(hidden)
        self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:])])
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], classes)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("count", mmu.tensor(np.array([3], np.int64)))
        self.act = act

    def forward(self, x):
        for layer in self.layers:
            x = F.gelu(layer(x))
        return self.head(self.drop(self.norm(x)))


class WithLayers(nn.Module):
    """timm-style: classes and functions as constructor arguments."""

    def __init__(self, dim=4, norm_layer=nn.LayerNorm, act=F.silu):
        super().__init__()
        self.norm = norm_layer(dim)
        self.fc = nn.Linear(dim, dim)
        self.act = act

    def forward(self, x):
        return self.act(self.fc(self.norm(x)))


class WithArray(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.w = nn.Parameter(mmu.tensor(table))


def test_config_records_constructor_arguments():
    m = Classifier(4, 3, hidden=[5], dropout=0.1)
    cfg = m.get_config()
    assert cfg["class"].endswith("test_nn.Classifier")
    assert cfg["args"] == {"in_dim": 4, "classes": 3, "hidden": [5], "act": "gelu", "dropout": 0.1}
    assert nn.Linear(2, 3, bias=False).get_config() == {"class": "mmu.nn.layers.Linear",
                                                        "args": {"in_features": 2, "out_features": 3, "bias": False}}
    s = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    assert s.get_config()["args"]["*args"][0]["__module__"]["class"] == "mmu.nn.layers.Linear"
    with pytest.raises(ValueError, match="'table' is a ndarray"):
        WithArray(np.zeros(3, np.float32)).get_config()

    assert WithLayers(norm_layer=nn.RMSNorm).get_config()["args"]["norm_layer"] == {"__import__": "mmu.nn.norm.RMSNorm"}
    with pytest.raises(ValueError, match="not importable by name"):
        WithLayers(act=lambda x: x).get_config()

    def local():
        class Local(nn.Module):
            def __init__(self, n):
                super().__init__()

        return Local(1)

    with pytest.raises(ValueError, match="inside a function"):
        local().get_config()


def test_save_pretrained_round_trip_is_bit_exact(tmp_path):
    mmu.manual_seed(3)
    m = Classifier(4, 3, hidden=[6, 5], dropout=0.1)
    m.count.numpy()[0] = 11
    m.save_pretrained(tmp_path / "ckpt")
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert files == ["config.json", "model.safetensors"]
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg["args"]["hidden"] == [6, 5]
    for loader in (Classifier, nn.Module):
        r = loader.from_pretrained(tmp_path / "ckpt")
        assert type(r) is Classifier and r.drop.p == 0.1
        for (k, v), w in zip(m.state_dict().items(), r.state_dict().values()):
            np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=k)
            assert v.dtype == w.dtype
        x = mmu.randn(2, 4)
        m.eval(), r.eval()
        np.testing.assert_array_equal(m(x).numpy(), r(x).numpy())
    # a nested Sequential and a TransformerBlock rebuild from their configs too
    s = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.GroupNorm(1, 2), nn.Flatten(), nn.Linear(2 * 16, 3))
    s.save_pretrained(tmp_path / "seq")
    s2 = nn.Sequential.from_pretrained(tmp_path / "seq")
    assert repr(s2) == repr(s)
    w = WithLayers(norm_layer=nn.RMSNorm, act=F.gelu)
    w.save_pretrained(tmp_path / "layers")
    w2 = WithLayers.from_pretrained(tmp_path / "layers")
    assert isinstance(w2.norm, nn.RMSNorm) and w2.act is F.gelu
    x = mmu.randn(2, 4)
    np.testing.assert_array_equal(w(x).numpy(), w2(x).numpy())
    b = nn.TransformerBlock(8, 2, qk_norm=True, mlp_ratio=2.0)
    b.save_pretrained(str(tmp_path / "blk"))
    b2 = nn.Module.from_pretrained(str(tmp_path / "blk"))
    x = mmu.randn(1, 3, 8)
    np.testing.assert_array_equal(b(x).numpy(), b2(x).numpy())


def test_pretrained_errors_leave_nothing_behind(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        WithArray(np.zeros(3, np.float32)).save_pretrained(tmp_path / "bad")
    assert not (tmp_path / "bad").exists() or os.listdir(tmp_path / "bad") == []
    m = Classifier(4, 3)
    m.save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match="not a subclass"):
        nn.Linear.from_pretrained(tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        nn.Module.from_pretrained(tmp_path / "missing")
    # a config whose shapes disagree with the weights: strict load fails, nothing returned
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    cfg["args"]["classes"] = 5
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(RuntimeError, match="size mismatch for head.weight"):
        nn.Module.from_pretrained(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        nn.Module.from_pretrained(tmp_path / "c")
    cfg["class"] = "no_such_module.Thing"
    (tmp_path / "d").mkdir()
    Classifier(4, 3).save_pretrained(tmp_path / "d")
    data = (tmp_path / "d" / "model.safetensors").read_bytes()
    (tmp_path / "d" / "model.safetensors").write_bytes(data[:-10])  # truncated
    with pytest.raises(mmu.io.CheckpointError):
        Classifier.from_pretrained(tmp_path / "d")
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="cannot find the class"):
        nn.Module.from_pretrained(tmp_path / "c")
    # a config naming an installed but not imported module must not import it (no code runs)
    cfg["class"] = "wave.Wave_read"
    (tmp_path / "c" / "config.json").write_text(json.dumps(cfg))
    sys.modules.pop("wave", None)
    with pytest.raises(ValueError, match="cannot find the class"):
        nn.Module.from_pretrained(tmp_path / "c")
    assert "wave" not in sys.modules
    assert sorted(os.listdir(tmp_path / "c")) == ["config.json", "model.safetensors"]  # no temp files left


def test_embedding_from_pretrained_tensor():
    w = mmu.randn(4, 3)
    e = nn.Embedding.from_pretrained(w)
    assert not e.weight.requires_grad
    np.testing.assert_array_equal(e(mmu.tensor(np.array([2]))).numpy()[0], w.numpy()[2])


def test_utils_vectors_and_clip():
    m = nn.Sequential(nn.Linear(3, 2), nn.LayerNorm(2))
    v = nn.utils.parameters_to_vector(m.parameters())
    assert v.shape == (m.num_parameters(),)
    nn.utils.vector_to_parameters(v * 2, m.parameters())
    np.testing.assert_array_equal(nn.utils.parameters_to_vector(m.parameters()).numpy(), 2 * v.numpy())
    with pytest.raises(ValueError):
        nn.utils.vector_to_parameters(v[:3], m.parameters())
    assert nn.utils.clip_grad_norm_ is mmu.optim.clip_grad_norm_
    m(mmu.randn(4, 3)).sum().backward()
    total = nn.utils.clip_grad_norm_(m.parameters(), 1e-3)
    grads = np.concatenate([p.grad.numpy().ravel() for p in m.parameters()])
    assert total.item() > 1e-3 and np.linalg.norm(grads) == pytest.approx(1e-3, rel=1e-3)


def test_ema_and_optimizer_groups_work_on_modules():
    mmu.manual_seed(0)
    m = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 1))
    decay = [p for n, p in m.named_parameters() if n.endswith("weight") and p.ndim == 2]
    no_decay = [p for n, p in m.named_parameters() if not (n.endswith("weight") and p.ndim == 2)]
    opt = mmu.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2)
    ema = mmu.optim.EMA(m, decay=0.9)
    before = m[0].weight.numpy().copy()
    for _ in range(3):
        loss = m(mmu.randn(8, 4)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update()
    assert not np.array_equal(before, m[0].weight.numpy())


def test_state_dict_through_mmu_save_load(tmp_path):
    mmu.manual_seed(5)
    m = Block()
    m.running.numpy()[...] = 3.0
    mmu.save({"model": m.state_dict(), "step": 7}, str(tmp_path / "ckpt.safetensors"))
    ck = mmu.load(str(tmp_path / "ckpt.safetensors"))
    r = Block()
    r.load_state_dict(ck["model"])
    assert ck["step"] == 7
    for (k, v), w in zip(m.state_dict().items(), r.state_dict().values()):
        np.testing.assert_array_equal(v.numpy(), w.numpy(), err_msg=k)

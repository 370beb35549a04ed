"""The C core itself: primitive cache, allocator, RSS over long loops, RNG,
threads, NumPy interop, the README snippet, the demo."""
import gc
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import mmu
import mmu.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_repeating_an_op_creates_no_primitive():
    x = mmu.randn(64, 48, requires_grad=True)
    w = mmu.randn(32, 48, requires_grad=True)

    def step():
        y = F.gelu(F.linear(x, w))
        loss = F.log_softmax(y, -1).mean() + mmu.exp(y).sum()
        loss.backward()
        x.grad = None
        w.grad = None

    step()  # creates every primitive these shapes need
    before = mmu.stats()["primitives_created"]
    assert before > 0
    for _ in range(5):
        step()
    assert mmu.stats()["primitives_created"] == before
    assert mmu.stats()["primitive_cache_hits"] > 0


def test_a_new_shape_creates_a_primitive():
    before = mmu.stats()["primitives_created"]
    mmu.tanh(mmu.randn(3, 1234567 % 1000 + 7))  # a oneDNN eltwise of a new size
    assert mmu.stats()["primitives_created"] == before + 1


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="the AddressSanitizer build (MMU_DEBUG=1) allocates exactly and caches nothing")
def test_allocator_returns_buffers_to_its_cache():
    gc.collect()
    base = mmu.stats()["bytes_in_use"]
    xs = [mmu.zeros(1000, 1000) for _ in range(4)]
    assert mmu.stats()["bytes_in_use"] >= base + 4 * 4_000_000
    del xs
    gc.collect()
    assert mmu.stats()["bytes_in_use"] == base
    assert mmu.stats()["bytes_cached"] >= 4_000_000
    # the next allocation of that size reuses a cached buffer instead of asking the OS
    cached = mmu.stats()["bytes_cached"]
    y = mmu.zeros(1000, 1000)
    assert mmu.stats()["bytes_cached"] < cached
    del y


def test_ten_thousand_training_steps_keep_rss_flat():
    rng = np.random.default_rng(0)
    x = mmu.tensor(rng.standard_normal((16, 32)).astype(np.float32))
    w = mmu.tensor(rng.standard_normal((24, 32)).astype(np.float32) * 0.1, requires_grad=True)
    b = mmu.tensor(np.zeros(24, np.float32), requires_grad=True)
    target = mmu.tensor(rng.integers(0, 24, 16))

    def step():
        h = F.gelu(F.linear(x, w, b))
        loss = F.cross_entropy(h, target) + (h ** 2).mean() * 0.01
        loss.backward()
        w.grad = None
        b.grad = None

    for _ in range(500):  # warm the allocator and the primitive cache
        step()
    gc.collect()
    rss0, in_use0 = _rss_bytes(), mmu.stats()["bytes_in_use"]
    for _ in range(10_000):
        step()
    gc.collect()
    grown = _rss_bytes() - rss0
    assert mmu.stats()["bytes_in_use"] == in_use0, "tensors leaked"
    assert grown < 4 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over 10,000 steps"


def test_no_grad_records_nothing_and_frees_intermediates():
    x = mmu.randn(256, 256, requires_grad=True)
    gc.collect()
    base = mmu.stats()["bytes_in_use"]
    with mmu.no_grad():
        y = mmu.exp(mmu.tanh(x) * 2.0).sum()
    assert not y.requires_grad and y.grad_fn is None
    # only the 0-d result is alive: the (256, 256) intermediates are gone
    assert mmu.stats()["bytes_in_use"] - base <= 64 * 4
    assert mmu.is_grad_enabled()

    @mmu.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad


def test_graph_is_freed_after_backward():
    x = mmu.randn(128, 128, requires_grad=True)
    gc.collect()
    base = mmu.stats()["bytes_in_use"]
    loss = (mmu.tanh(x) * mmu.sigmoid(x)).sum()
    assert mmu.stats()["bytes_in_use"] > base + 128 * 128 * 4  # saved activations
    loss.backward()
    del loss
    gc.collect()
    # what is left: x.grad
    assert mmu.stats()["bytes_in_use"] - base <= 128 * 128 * 4 + 256


def test_rng_is_seeded_and_independent_of_threads():
    n0 = mmu.get_num_threads()
    try:
        outs = []
        for threads in (1, 2):
            mmu.set_num_threads(threads)
            mmu.manual_seed(123)
            outs.append((mmu.randn(100_003).numpy().copy(), mmu.rand(70_001).numpy().copy()))
        assert np.array_equal(outs[0][0], outs[1][0])
        assert np.array_equal(outs[0][1], outs[1][1])
        a = outs[0][0]
        assert abs(a.mean()) < 0.02 and abs(a.std() - 1) < 0.02
        u = outs[0][1]
        assert u.min() >= 0.0 and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
        mmu.manual_seed(124)
        assert not np.array_equal(mmu.randn(100).numpy(), outs[0][0][:100])
    finally:
        mmu.set_num_threads(n0)


def test_results_are_bit_identical_run_to_run():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 513)).astype(np.float32)

    def run():
        x = mmu.tensor(a, requires_grad=True)
        y = (mmu.exp(x * 0.1).sum(0) * mmu.tanh(x).mean(1, keepdim=True).sum()).sum()
        y.backward()
        return y.item(), x.grad.numpy().copy()

    r1, r2 = run(), run()
    assert r1[0] == r2[0] and np.array_equal(r1[1], r2[1])


def test_set_num_threads():
    n0 = mmu.get_num_threads()
    mmu.set_num_threads(1)
    assert mmu.get_num_threads() == 1
    mmu.set_num_threads(n0)
    assert mmu.get_num_threads() == n0
    with pytest.raises(ValueError, match="set_num_threads"):
        mmu.set_num_threads(0)


def test_numpy_interop():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = mmu.tensor(a)
    a[0, 0] = 100  # mmu.tensor copies
    assert t.numpy()[0, 0] == 0
    v = t.numpy()
    v[1, 2] = -7  # numpy() is a view
    assert t.numpy()[1, 2] == -7 and np.asarray(t)[1, 2] == -7
    assert isinstance(a + t, mmu.Tensor) and isinstance(t + a, mmu.Tensor)
    np.testing.assert_array_equal((a * t).numpy(), a * t.numpy())
    assert mmu.tensor(np.ones(3, np.float64)).dtype == np.float32
    assert mmu.tensor(np.ones(3, np.int32)).dtype == np.int64
    assert mmu.tensor([True, False]).dtype == np.bool_
    # a view keeps the tensor's memory alive after the tensor is gone
    t2 = mmu.randn(50, 50)
    view = t2.numpy()
    expected = view.copy()
    del t2
    gc.collect()
    _ = [mmu.randn(50, 50) for _ in range(5)]  # would reuse the buffer if it had been freed
    np.testing.assert_array_equal(view, expected)


def test_repr_and_scalar_conversions():
    t = mmu.tensor([[1.5, 2.0]], requires_grad=True)
    assert repr(t).startswith("tensor([[1.5") and "requires_grad=True" in repr(t)
    assert "grad_fn" in repr(t * 2)
    assert "int64" in repr(mmu.arange(3))
    assert float(mmu.tensor(2.5)) == 2.5 and int(mmu.tensor(3)) == 3
    assert mmu.tensor(2.0).item() == 2.0


def _readme_python_block(index=0):
    text = open(os.path.join(ROOT, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "README has no python example"
    return blocks[index]


def test_readme_snippet_runs(capsys):
    exec(compile(_readme_python_block(), "README.md", "exec"), {})
    out = capsys.readouterr().out.split()
    assert float(out[0]) > 0 and out[1:] == ["(8,", "64)", "float32"]


def test_readme_models_snippet_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it saves a checkpoint folder
    exec(compile(_readme_python_block(1), "README.md", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("reconstruction MSE") and float(out[0].split()[-1]) < 0.05
    assert out[1] == "(2, 16, 64)"
    assert (tmp_path / "digits_ae" / "model.safetensors").exists()


def test_readme_losses_snippet_runs(capsys):
    exec(compile(_readme_python_block(3), "README.md", "exec"), {})
    words = capsys.readouterr().out.split()
    assert words[:2] == ["adaptive", "weight"] and 0.0 <= float(words[2]) <= 1e4
    assert words[6:8] == ["grad", "(16,"] and float(words[12]) > 0 and float(words[14]) > 0


def test_readme_tokenizers_snippet_runs(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # it saves my-tokenizer/
    prev = mmu.get_num_threads()
    mmu.set_num_threads(1)  # a tiny model: one thread is faster, and immune to a busy machine
    try:
        exec(compile(_readme_python_block(4), "README.md", "exec"), {})
    finally:
        mmu.set_num_threads(prev)
    out = capsys.readouterr().out
    assert out.startswith("(64, 4, 4) (64, 1, 16, 16) PSNR ")
    assert float(out.split()[8]) > 20.0 and float(out.split()[-1]) > 0.3
    assert (tmp_path / "my-tokenizer" / "config.json").exists()


def test_readme_quantizers_snippet_runs(capsys):
    exec(compile(_readme_python_block(2), "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["VectorQuantize", "ResidualVQ", "FSQ", "LFQ", "GumbelQuantize"]
    for line in lines:
        usage, perplexity = float(line.split("usage")[1].split()[0]), float(line.split()[-1])
        assert 0 < usage <= 1 and perplexity >= 1


def test_readme_language_model_snippet_runs(capsys, tmp_path, monkeypatch):
    pytest.importorskip("tokenizers")
    monkeypatch.chdir(tmp_path)  # it saves caption-gpt/
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text[text.index("## Language models and generation"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)  # the section's first python block
    prev = mmu.get_num_threads()
    mmu.set_num_threads(1)
    try:
        exec(compile(block, "README.md", "exec"), {})
    finally:
        mmu.set_num_threads(prev)
    first, second = capsys.readouterr().out.splitlines()
    words = first.split()
    assert words[0] == "loss" and float(words[3].rstrip(",")) < 0.5 * float(words[1])  # from the step-10 record
    assert int(words[4].split("/")[0]) >= 4  # most of the 8 samples are real captions (8/8 measured)
    assert second.startswith("['") and len(eval(second)) == 8
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(os.listdir(tmp_path / "caption-gpt"))


def test_demo_loss_falls():
    out = subprocess.run([sys.executable, "-m", "mmu", "demo", "--steps", "200"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    losses = [float(m) for m in re.findall(r"train loss ([0-9.]+)", out.stdout)]
    assert len(losses) >= 5
    assert losses[-1] < 0.6 * losses[0], out.stdout
    final = re.search(r"held-out ([0-9.]+) \(mean-image baseline ([0-9.]+)\)", out.stdout)
    assert float(final.group(1)) < float(final.group(2)), out.stdout


def test_ops_run_concurrently_from_python_threads():
    """The binding releases the GIL around C work: two Python threads running
    ops at once must each get exactly the single-threaded results."""
    import threading

    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((64, 96)).astype(np.float32) for _ in range(2)]
    w = rng.standard_normal((48, 96)).astype(np.float32)

    def work(a):
        x = mmu.tensor(a, requires_grad=True)
        loss = F.log_softmax(F.gelu(F.linear(x, w)), -1).mean()
        loss.backward()
        return loss.item(), x.grad.numpy().copy()

    expected = [work(a) for a in arrays]
    results = [[None] * 20 for _ in arrays]

    def run(k):
        for i in range(20):
            results[k][i] = work(arrays[k])

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        for loss, grad in results[k]:
            assert loss == expected[k][0]
            np.testing.assert_array_equal(grad, expected[k][1])


def test_pickle_and_deepcopy_round_trip():
    import copy
    import pickle

    t = mmu.tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    for u in (pickle.loads(pickle.dumps(t)), copy.deepcopy(t)):
        assert isinstance(u, mmu.Tensor) and u.requires_grad and u.dtype == np.float32
        np.testing.assert_array_equal(u.numpy(), t.numpy())
        assert u._data_ptr() != t._data_ptr()
    codes = pickle.loads(pickle.dumps(mmu.arange(5)))
    assert codes.dtype == np.int64 and codes.tolist() == [0, 1, 2, 3, 4]


def test_type_promotion_follows_torch():
    """bool < int64 < float32; a Python float promotes integer tensors; integer
    results stay int64 (NumPy does integer arithmetic, never differentiable)."""
    idx = mmu.arange(5)
    f = mmu.tensor([0.5, 1.5, 2.5, 3.5, 4.5])
    mask = idx > 2
    assert (idx + 1).dtype == np.int64 and (idx + 1).tolist() == [1, 2, 3, 4, 5]
    assert (idx * 2 - 1).tolist() == [-1, 1, 3, 5, 7]
    assert (idx + 0.5).dtype == np.float32 and (idx + 0.5).tolist() == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert (idx + f).dtype == np.float32 and (f * idx).tolist() == [0.0, 1.5, 5.0, 10.5, 18.0]
    assert (idx / 2).dtype == np.float32 and (idx / 2).tolist() == [0, 0.5, 1, 1.5, 2]
    assert (idx // 2).tolist() == [0, 0, 1, 1, 2] and (idx % 2).tolist() == [0, 1, 0, 1, 0]
    assert (-idx).tolist() == [0, -1, -2, -3, -4] and (idx ** 2).tolist() == [0, 1, 4, 9, 16]
    assert (2 ** idx).tolist() == [1, 2, 4, 8, 16]
    assert (idx == 2.0).tolist() == [False, False, True, False, False]
    assert (idx < f).tolist() == [True] * 5
    # counting correct predictions: bool sum -> int64
    correct = (idx == mmu.tensor([0, 1, 0, 3, 0])).sum()
    assert correct.dtype == np.int64 and correct.item() == 3
    assert mask.sum(0).item() == 2 and idx.amax().item() == 4
    assert (mask * 1.0).dtype == np.float32 and (mask * 1.0).tolist() == [0, 0, 0, 1, 1]
    c = mmu.cat([f, idx])
    assert c.dtype == np.float32 and c.shape == (10,)
    w = mmu.where(mask, idx, 0.5)
    assert w.dtype == np.float32 and w.tolist() == [0.5, 0.5, 0.5, 3, 4]
    with pytest.raises(TypeError, match="mean"):
        idx.mean()


def test_in_place_updates_under_no_grad_reach_every_reference():
    p = mmu.tensor([1.0, 2.0], requires_grad=True)
    params = [p]
    (p * p).sum().backward()
    with mmu.no_grad():
        for q in params:
            q -= 0.1 * q.grad  # the manual SGD idiom
    assert params[0] is p and np.allclose(p.numpy(), [0.8, 1.6])
    with mmu.no_grad():
        p.mul_(2).add_(1, alpha=0.5)
        assert np.allclose(p.numpy(), [2.1, 3.7])
        p[0] = 5.0
        p.zero_()
    assert p.tolist() == [0.0, 0.0] and p.is_leaf and p.requires_grad
    with pytest.raises(RuntimeError, match="in place"):
        p += 1  # a leaf that requires grad, while grad is recorded
    h = p * 2
    h2 = h
    h += 1  # a non-leaf in the graph: out of place, like torch's autograd would record it
    assert h.tolist() == [1.0, 1.0] and h2.tolist() == [0.0, 0.0]


def test_set_grad_enabled_as_decorator_and_context():
    @mmu.set_grad_enabled(False)
    def f(x):
        return x * 2

    assert mmu.is_grad_enabled()
    x = mmu.ones(2, requires_grad=True)
    assert not f(x).requires_grad and mmu.is_grad_enabled()
    with mmu.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert mmu.is_grad_enabled()


def test_advanced_indexing_in_tuples_matches_numpy():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((4, 5, 6)).astype(np.float32)
    rows, cols = np.array([0, 3, 3]), np.array([4, 0, 4])
    cases = [
        (rows, cols), (slice(None), cols), (1, cols), (Ellipsis, np.array([5, 0])),
        (slice(1, 3), cols, slice(None, None, 2)), (np.array([True, False, True, True]), 2),
        (np.array([[0], [3]]), np.array([1, 2])),
    ]
    for idx in cases:
        x = mmu.tensor(a, requires_grad=True)
        out = x[tuple(mmu.tensor(i) if isinstance(i, np.ndarray) else i for i in idx)]
        np.testing.assert_array_equal(out.numpy(), a[idx], err_msg=str(idx))
        g = rng.standard_normal(out.shape).astype(np.float32)
        out.backward(mmu.tensor(g))
        expected = np.zeros_like(a)
        np.add.at(expected, idx, g)  # repeated indices accumulate
        np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6, err_msg=str(idx))
    logits = mmu.tensor(a[0])
    picked = logits[mmu.arange(4), mmu.tensor([1, 0, 4, 2])]  # the logits[arange(N), y] idiom
    np.testing.assert_array_equal(picked.numpy(), a[0][np.arange(4), [1, 0, 4, 2]])
    with pytest.raises(IndexError, match="out of bounds"):
        logits[mmu.arange(4), mmu.tensor([0, 0, 0, 6])]


def test_special_values_propagate_like_torch():
    import mmu.functional as F
    x = mmu.tensor([np.nan, -1.0, 2.0], requires_grad=True)
    y = F.relu(x)
    y.sum().backward()
    assert np.isnan(y.numpy()[0]) and x.grad.tolist()[1:] == [0.0, 1.0] and x.grad.tolist()[0] == 1.0
    assert np.isnan(mmu.exp(x).numpy()[0])
    with pytest.raises(ValueError, match="set_num_threads"):
        mmu.set_num_threads(10**10)
    with pytest.raises(ValueError, match="t: expects"):
        mmu.ones(2, 3, 4).t()
    v = mmu.tensor(2.0, requires_grad=True)
    out = mmu.zeros(3).masked_fill(mmu.tensor([True, False, True]), v)
    out.sum().backward()
    assert out.tolist() == [2.0, 0.0, 2.0] and v.grad.item() == 2.0
    assert f"{mmu.tensor(3.14159):.2f}" == "3.14" and list(range(mmu.tensor(3))) == [0, 1, 2]


@pytest.mark.parametrize("name", ["max_dim", "min_dim", "max_all", "var", "var_dim", "std", "logsumexp",
                                  "norm2", "norm1", "split", "chunk", "tril", "triu"])
def test_composite_functions_match_torch(name):
    """Functions written in Python on top of the C ops: values and gradients vs torch."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    a = rng.standard_normal((4, 6)).astype(np.float32)
    a[1, 2] = a[1, 4]  # a tie: max(dim) sends the gradient to the first index only
    fns = {
        "max_dim": lambda m, x: m.max(x, 1)[0] * 1.0 + m.max(x, 0, keepdim=True).values.sum(),
        "min_dim": lambda m, x: m.min(x, -1).values,
        "max_all": lambda m, x: m.max(x),
        "var": lambda m, x: m.var(x),
        "var_dim": lambda m, x: m.var(x, 1, keepdim=True) + m.var(x, 0, correction=0).sum(),
        "std": lambda m, x: m.std(x, 0),
        "logsumexp": lambda m, x: m.logsumexp(x, 1),
        "norm2": lambda m, x: m.norm(x, dim=1),
        "norm1": lambda m, x: m.norm(x, p=1),
        "split": lambda m, x: m.cat([p * (i + 1) for i, p in enumerate(m.split(x, 4, 1))], 1),
        "chunk": lambda m, x: m.cat([p * (i + 1) for i, p in enumerate(m.chunk(x, 3, 0))], 0),
        "tril": lambda m, x: m.tril(x, -1),
        "triu": lambda m, x: m.triu(x, 2),
    }
    xm = mmu.tensor(a, requires_grad=True)
    xt = torch.tensor(a, requires_grad=True)
    ym, yt = fns[name](mmu, xm), fns[name](torch, xt)
    np.testing.assert_allclose(ym.numpy(), yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    g = rng.standard_normal(yt.shape).astype(np.float32)
    ym.backward(mmu.tensor(g))
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(xm.grad.numpy(), xt.grad.numpy(), rtol=1e-5, atol=1e-6)
    if name == "max_dim":
        idx = mmu.max(xm, 1).indices
        assert idx.dtype == np.int64 and idx.tolist() == torch.max(xt, 1).indices.tolist()


# issue 11: arange(dtype=bool) filled a 1-byte-per-element buffer with float32s (a segfault
# at 1 << 22, silent corruption of the neighbouring memory below); torch refuses a bool
# range. The private entry points sized buffers by an unchecked dtype code.
def test_arange_bool_is_refused_and_dtype_codes_are_checked():
    for call in (lambda: mmu.arange(0, 1 << 22, dtype=mmu.bool), lambda: mmu.arange(3, dtype=bool),
                 lambda: mmu._C.arange(0.0, 1 << 22, 1.0, 2)):
        with pytest.raises(TypeError, match="arange: dtype bool is not supported"):
            call()
    for code in (-7, -1, 3, 99, 2**31 - 1):
        with pytest.raises(TypeError, match=f"arange: unknown dtype code {code}"):
            mmu._C.arange(0.0, 1 << 22, 1.0, code)
        with pytest.raises(TypeError, match=f"full: unknown dtype code {code}"):
            mmu._C.full((1 << 20,), code, 1.0)
        with pytest.raises(TypeError, match=f"full: unknown dtype code {code}"):
            mmu._C.full((4,), code, 0.0)
        with pytest.raises(TypeError, match="unknown dtype code"):
            mmu._C.cast(mmu.ones(3), code)
        if code != -1:  # -1 means "infer" for tensor()
            with pytest.raises(TypeError, match=f"tensor: unknown dtype code {code}"):
                mmu._C.tensor([1, 2], code, False)
    with pytest.raises(ValueError, match="arange: start, end and step must be finite"):
        mmu._C.arange(0.0, float("nan"), 1.0, 0)
    # the valid codes still work, each writing its own element size
    assert mmu._C.arange(0.0, 5.0, 1.0, 1).numpy().tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(mmu.arange(0, 1, 0.25).numpy(), np.float32([0, 0.25, 0.5, 0.75]))
    np.testing.assert_array_equal(mmu._C.full((3,), 2, 5.0).numpy(), [True, True, True])
    np.testing.assert_array_equal(mmu.full((2,), 7).numpy(), np.int64([7, 7]))

"""FID (mmu.metrics.fid_score: fid / FID / frechet_distance) and the FID Inception (mmu.metrics.inception):
the Fréchet distance against its closed form and an eigendecomposition reference, pytorch-fid's eps
fallback and imaginary-component check; InceptionV3 (random weights) against a torch twin in
pytorch-fid's layout (benchmarks/torch_twins.py, skipped without torch) at 75 px and once at 299 px;
the streamed statistics against np.mean / np.cov; FID of a set with itself; the weight file round
trip and the errors."""
import os
import sys

import numpy as np
import pytest

import mmu
from mmu import metrics
from mmu.metrics import fid_score as fid_module
from mmu.metrics import inception as inc
from mmu.metrics.inception import InceptionV3, convert_torch_weights

try:
    from gradcheck import torch_or_skip
except ImportError:
    from tests.gradcheck import torch_or_skip


_MODELS = {}


@pytest.fixture(autouse=True)
def one_thread():
    # the Inception is ~95 small convs: on a shared machine one thread is the fast, steady choice
    prev = mmu.get_num_threads()
    mmu.set_num_threads(1)
    try:
        import torch
        tprev = torch.get_num_threads()
        torch.set_num_threads(1)
    except ImportError:
        torch = None
    yield
    mmu.set_num_threads(prev)
    if torch is not None:
        torch.set_num_threads(tprev)


def _model(resize_input=False):
    # building 21.8M random weights takes ~0.5 s: one model per setting for the whole file
    if resize_input not in _MODELS:
        _MODELS[resize_input] = InceptionV3(pretrained=False, seed=3, resize_input=resize_input)
    return _MODELS[resize_input]


def _twin(model):
    torch = torch_or_skip()
    bench = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    from torch_twins import TwinFIDInceptionV3
    twin = TwinFIDInceptionV3(resize_input=model.resize_input).load_mmu_state(model.state_dict())
    return torch, twin


def _spd(rng, d, scale=1.0):
    a = rng.standard_normal((d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


# ------------------------------------------------------------------- the Fréchet distance
def test_frechet_distance_closed_form_diagonal_and_commuting():
    rng = np.random.default_rng(0)
    d = 7
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    a, b = rng.uniform(0.1, 3.0, d), rng.uniform(0.1, 3.0, d)
    # diagonal covariances: d² = |mu1 - mu2|² + Σ (sqrt a_i - sqrt b_i)²
    want = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = metrics.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert isinstance(got, float)
    assert abs(got - want) < 1e-10 * max(1.0, want)
    # commuting covariances Q diag(a) Q^T, Q diag(b) Q^T: the same closed form
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    got = metrics.frechet_distance(mu1, q @ np.diag(a) @ q.T, mu2, q @ np.diag(b) @ q.T)
    assert abs(got - want) < 1e-9 * max(1.0, want)
    # identical Gaussians: 0; a shift of the mean only: |delta|²
    s = _spd(rng, d)
    assert abs(metrics.frechet_distance(mu1, s, mu1, s)) < 1e-9
    assert abs(metrics.frechet_distance(mu1, s, mu1 + 0.5, s) - 0.25 * d) < 1e-9


def test_frechet_distance_general_covariances_vs_eigh_reference():
    # Tr sqrtm(S1 S2) = Tr sqrtm(S1^1/2 S2 S1^1/2), the latter symmetric PSD: a reference by eigh
    rng = np.random.default_rng(1)
    for d in (1, 5, 32):
        mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
        s1, s2 = _spd(rng, d), _spd(rng, d, 2.0)
        w, v = np.linalg.eigh(s1)
        r1 = v @ np.diag(np.sqrt(w)) @ v.T
        tr = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)).sum()
        want = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr
        got = metrics.frechet_distance(mu1, s1, mu2, s2)
        assert abs(got - want) < 1e-9 * max(1.0, abs(want)), (d, got, want)
        # float32 inputs and mmu Tensors give the float64 computation on their values
        got32 = metrics.frechet_distance(mmu.tensor(mu1.astype(np.float32)), s1.astype(np.float32),
                                         mu2.astype(np.float32), s2.astype(np.float32))
        want32 = metrics.frechet_distance(*(np.float32(x).astype(np.float64) for x in (mu1, s1, mu2, s2)))
        assert abs(got32 - want32) < 1e-9 * max(1.0, abs(want32))
    # scalars are 1-d Gaussians (np.atleast_1d / atleast_2d, as pytorch-fid): (1-3)² + (1-2)² = 5
    assert abs(metrics.frechet_distance(1.0, 1.0, 3.0, 4.0) - 5.0) < 1e-12


def test_frechet_distance_eps_fallback_and_imaginary_check(monkeypatch):
    import scipy.linalg

    rng = np.random.default_rng(2)
    d = 4
    mu = rng.standard_normal(d)
    s1, s2 = _spd(rng, d), _spd(rng, d)
    real_sqrtm = scipy.linalg.sqrtm
    calls = []

    def nan_first(a, *args, **kwargs):
        calls.append(np.array(a))
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)
    monkeypatch.setattr(scipy.linalg, "sqrtm", nan_first)
    eps = 1e-3
    with pytest.warns(RuntimeWarning, match="adding 0.001 to diagonal"):
        got = metrics.frechet_distance(mu, s1, mu, s2, eps=eps)
    # the retry takes sqrtm((S1 + eps I)(S2 + eps I)), the traces stay those of S1 and S2
    off = np.eye(d) * eps
    assert np.allclose(calls[1], (s1 + off) @ (s2 + off), rtol=0, atol=1e-15)
    want = np.trace(s1) + np.trace(s2) - 2 * np.trace(real_sqrtm((s1 + off) @ (s2 + off))).real
    assert abs(got - want) < 1e-10
    monkeypatch.setattr(scipy.linalg, "sqrtm", real_sqrtm)
    # not positive semi-definite: sqrtm has an imaginary diagonal -> pytorch-fid's ValueError
    with pytest.raises(ValueError, match="Imaginary component"):
        metrics.frechet_distance(np.zeros(2), np.diag([1.0, 1.0]), np.zeros(2), np.diag([-1.0, 1.0]))


def test_frechet_distance_errors():
    mu, s = np.zeros(3), np.eye(3)
    with pytest.raises(ValueError, match="different lengths"):
        metrics.frechet_distance(mu, s, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma1"):
        metrics.frechet_distance(mu, np.eye(4), mu, s)
    with pytest.raises(ValueError, match="square"):
        metrics.frechet_distance(mu, np.ones((3, 2)), mu, s)
    with pytest.raises(ValueError, match="finite"):
        metrics.frechet_distance(mu, s * np.nan, mu, s)
    with pytest.raises(TypeError, match="mu1"):
        metrics.frechet_distance("abc", s, mu, s)
    with pytest.raises(ValueError, match="eps"):
        metrics.frechet_distance(mu, s, mu, s, eps=-1.0)


# ------------------------------------------------------------------- the network vs pytorch-fid's layout
def test_inception_layout_matches_pytorch_fid_keys():
    sd = _model().state_dict()
    # 94 BasicConv2d (conv without bias + BatchNorm2d with 4 tensors and the counter) = 564 entries;
    # the learned parameters are torchvision's Inception3 (27,161,264 in its weights' metadata) without
    # AuxLogits (3,326,696) and fc (2,049,000)
    assert len(sd) == 94 * 6
    n = sum(int(np.prod(v.shape)) for k, v in sd.items() if k.endswith(("conv.weight", "bn.weight", "bn.bias")))
    assert n == 27161264 - 3326696 - 2049000
    for k in ("Conv2d_1a_3x3.conv.weight", "Conv2d_4a_3x3.bn.running_var", "Mixed_5b.branch5x5_2.conv.weight",
              "Mixed_6a.branch3x3dbl_3.bn.bias", "Mixed_6e.branch7x7dbl_5.conv.weight",
              "Mixed_7a.branch7x7x3_4.conv.weight", "Mixed_7c.branch3x3dbl_3b.bn.running_mean"):
        assert k in sd, k
    assert tuple(sd["Mixed_6b.branch7x7_2.conv.weight"].shape) == (128, 128, 1, 7)
    assert tuple(sd["Mixed_7b.branch_pool.conv.weight"].shape) == (192, 1280, 1, 1)
    assert _model().Conv2d_1a_3x3.bn.eps == 0.001
    assert _model().Mixed_7b.pool == "avg" and _model().Mixed_7c.pool == "max"


def test_inception_features_match_torch_twin_75px():
    model = _model(resize_input=False)
    torch, twin = _twin(model)
    rng = np.random.default_rng(4)
    x = rng.random((2, 3, 75, 83), dtype=np.float32)
    with mmu.no_grad():
        got = model(x).numpy()
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()
    assert got.shape == (2, 2048) and want.shape == (2, 2048, 1, 1)
    want = want[:, :, 0, 0]
    assert np.abs(want).max() > 0.1      # the random weights keep a scale: the comparison is not of zeros
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())
    # the smaller blocks of pytorch-fid (dims 64, 192, 768), pooled over H, W as its get_activations
    with torch.no_grad():
        t = twin.Conv2d_2b_3x3(twin.Conv2d_2a_3x3(twin.Conv2d_1a_3x3(2 * torch.from_numpy(x) - 1)))
        b0 = torch.nn.functional.max_pool2d(t, 3, 2)
        b1 = torch.nn.functional.max_pool2d(twin.Conv2d_4a_3x3(twin.Conv2d_3b_1x1(b0)), 3, 2)
        b2 = b1
        for m in (twin.Mixed_5b, twin.Mixed_5c, twin.Mixed_5d, twin.Mixed_6a, twin.Mixed_6b, twin.Mixed_6c,
                  twin.Mixed_6d, twin.Mixed_6e):
            b2 = m(b2)
    for dims, ref in ((64, b0), (192, b1), (768, b2)):
        with mmu.no_grad():
            f = model.features(x, dims).numpy()
        r = ref.mean((2, 3)).numpy()
        np.testing.assert_allclose(f, r, rtol=1e-3, atol=1e-4 * np.abs(r).max(), err_msg=f"dims {dims}")


def test_inception_features_match_torch_twin_299px_resize():
    # the one full-size case: bilinear resize of a 40 x 56 image to 299 x 299, then the whole network
    model = _model(resize_input=True)
    torch, twin = _twin(model)
    x = np.random.default_rng(5).random((1, 3, 40, 56), dtype=np.float32)
    with mmu.no_grad():
        got = model(x).numpy()
    with torch.no_grad():
        want = twin(torch.from_numpy(x)).numpy()[:, :, 0, 0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


def test_inception_input_errors():
    model = _model()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(np.zeros((1, 1, 80, 80), np.float32))
    with pytest.raises(ValueError, match="at least 75"):
        model(np.zeros((1, 3, 74, 90), np.float32))
    with pytest.raises(ValueError, match="dims"):
        model.features(np.zeros((1, 3, 80, 80), np.float32), dims=100)
    with pytest.raises(TypeError, match="float32"):
        model(mmu.tensor(np.zeros((1, 3, 80, 80), np.int64)))
    model.train()
    assert not model.training and not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------- weights
def test_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert_torch_weights") as e:
        InceptionV3()
    assert "pt_inception-2015-12-05" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InceptionV3(weights=str(tmp_path / "nope.safetensors"))
    with pytest.raises(FileNotFoundError, match="convert_torch_weights"):
        metrics.fid(np.zeros((2, 3, 8, 8)), np.zeros((2, 3, 8, 8)))


@pytest.mark.parametrize("ext", [".safetensors", ".npz"])
def test_convert_torch_weights_round_trip(tmp_path, ext):
    model = _model()
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    # pytorch-fid's file: Inception3 keys with fc (1008 classes), no num_batches_tracked
    file_sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    file_sd["fc.weight"], file_sd["fc.bias"] = np.zeros((1008, 2048), np.float32), np.zeros(1008, np.float32)
    path = str(tmp_path / f"w{ext}")
    shapes = convert_torch_weights(file_sd, path)
    assert len(shapes) == 94 * 5 and "fc.weight" not in shapes
    loaded = InceptionV3(weights=path, resize_input=False)
    for k, v in loaded.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(v.numpy(), sd[k], err_msg=k)
    # pytorch-fid's InceptionV3 wrapper keys (blocks.B.I.*) map to the same file
    inv = {v: k for k, v in inc._WRAPPER_BLOCKS.items()}
    wrapped = {}
    for k, v in sd.items():
        head, rest = k.split(".", 1)
        b, i = inv[head]
        wrapped[f"blocks.{b}.{i}.{rest}"] = v
    path2 = str(tmp_path / f"w2{ext}")
    convert_torch_weights(wrapped, path2)
    loaded2 = InceptionV3(weights=path2)
    np.testing.assert_array_equal(loaded2.Mixed_7c.branch_pool.bn.running_var.numpy(),
                                  sd["Mixed_7c.branch_pool.bn.running_var"])


def test_convert_torch_weights_errors(tmp_path):
    sd = {k: v.numpy() for k, v in _model().state_dict().items()}
    out = str(tmp_path / "w.safetensors")
    short = dict(sd)
    del short["Mixed_6c.branch7x7_2.conv.weight"]
    with pytest.raises(ValueError, match="missing.*Mixed_6c.branch7x7_2.conv.weight"):
        convert_torch_weights(short, out)
    bad = dict(sd)
    bad["Conv2d_1a_3x3.conv.weight"] = np.zeros((32, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match="wrong shapes"):
        convert_torch_weights(bad, out)
    extra = dict(sd)
    extra["Mixed_5b.branch9x9.conv.weight"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="unexpected keys.*branch9x9"):
        convert_torch_weights(extra, out)
    with pytest.raises(TypeError, match="dict"):
        convert_torch_weights([1, 2], out)
    assert not os.path.exists(out)
    # a file of other weights is refused when loaded
    np.savez(str(tmp_path / "other.npz"), a=np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="not an FID Inception weight file"):
        InceptionV3(weights=str(tmp_path / "other.npz"))


# ------------------------------------------------------------------- FID: streaming statistics, self-distance
def test_fid_streamed_statistics_equal_numpy_cov():
    model = _model()
    rng = np.random.default_rng(6)
    x = rng.uniform(-1, 1, (7, 3, 75, 75)).astype(np.float32)
    f = metrics.FID(model=model, batch_size=3, dims=192)
    feats = f.features(x)
    f.update(x[:5], real=True)
    f.update(x[5:], real=True)
    mu, sigma = f.statistics(True)
    assert f.count(True) == 7 and mu.dtype == np.float64 and sigma.shape == (192, 192)
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)
    # the batch size does not change the features; [-1, 1] input is pytorch-fid's [0, 1] input
    f7 = metrics.FID(model=model, batch_size=7, dims=192)
    np.testing.assert_allclose(f7.features(x), feats, rtol=1e-6, atol=1e-7)
    with mmu.no_grad():
        direct = model.features(np.ascontiguousarray((x + 1) / 2), 192).numpy()
    np.testing.assert_allclose(feats, direct, rtol=1e-6, atol=1e-7)
    # grey images are repeated to RGB; values beyond [-1, 1] are clipped
    g = x[:2, :1]
    np.testing.assert_allclose(f.features(g), f.features(np.repeat(g, 3, 1)), rtol=0, atol=0)
    np.testing.assert_allclose(f.features(x[:2] * 3), f.features(np.clip(x[:2] * 3, -1, 1)), rtol=0, atol=0)
    # update_features = update
    f2 = metrics.FID(model=model, dims=192)
    f2.update_features(feats, real=True)
    np.testing.assert_allclose(f2.statistics(True)[1], sigma, rtol=1e-9, atol=1e-12)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_change():
    model = _model()
    rng = np.random.default_rng(7)
    # more images than features (dims 64): full-rank covariances, so 0 is a well-posed answer
    x = rng.uniform(-1, 1, (80, 3, 75, 75)).astype(np.float32)
    f = metrics.FID(model=model, batch_size=40, dims=64)
    f.update(x, real=True)
    f.update(x[::-1], real=False)        # the same set in another order
    assert abs(f.compute()) < 1e-6
    f.reset(real=False)
    f.update(np.clip(x * 0.5 + 0.3, -1, 1), real=False)
    assert f.compute() > 1e-3
    # fewer images than features: rank-deficient covariances, still ~0 for the same set (192-d: scipy's
    # sqrtm of a 2048 x 2048 product alone takes tens of seconds on a busy machine)
    y = x[:6]
    assert abs(metrics.fid(y, y.copy(), model=model, batch_size=6, dims=192)) < 1e-4


def test_fid_errors():
    model = _model()
    f = metrics.FID(model=model, dims=64)
    with pytest.raises(ValueError, match="real set has 0"):
        f.compute()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\) or \(N, 1, H, W\)"):
        f.update(np.zeros((2, 2, 80, 80), np.float32), real=True)
    with pytest.raises(ValueError, match="finite"):
        f.update(np.full((2, 3, 80, 80), np.nan, np.float32), real=True)
    with pytest.raises(TypeError, match="real must be"):
        f.update(np.zeros((2, 3, 80, 80), np.float32), real="yes")
    with pytest.raises(ValueError, match=r"features must be \(N, 64\)"):
        f.update_features(np.zeros((2, 3)), real=True)
    with pytest.raises(ValueError, match="batch_size"):
        metrics.FID(model=model, batch_size=0)
    with pytest.raises(ValueError, match="dims"):
        metrics.FID(model=model, dims=100)
    with pytest.raises(TypeError, match="InceptionV3"):
        metrics.FID(model=object())
    with pytest.raises(TypeError, match="not both"):
        metrics.FID(weights="w.safetensors", model=model)
    assert fid_module.FID is metrics.FID


# ------------------------------------------------------------------- mmu compare --fid-weights
def test_compare_rfid_column(tmp_path, monkeypatch):
    from mmu import compare as C
    from mmu import __main__ as cli

    path = str(tmp_path / "inception.safetensors")
    convert_torch_weights({k: v.numpy() for k, v in _model().state_dict().items()}, path)
    # keep the test cheap: the Inception at 75 px and 64-d features (the real run: 299 px, 2048-d, and a
    # 2048 x 2048 sqrtm per tokenizer); the plumbing under test is the same
    monkeypatch.setattr(inc, "_SIZE", 75)

    class SmallFID(metrics.FID):
        def __init__(self, *args, **kwargs):
            kwargs["dims"] = 64
            super().__init__(*args, **kwargs)
    monkeypatch.setattr(metrics, "FID", SmallFID)
    out = tmp_path / "report"
    rows = C.compare(["vqvae-fsq"], fast=True, out_dir=str(out), progress=False, fid_weights=path)
    assert "rFID" in (out / "report.md").read_text() and "rfid" in (out / "report.csv").read_text()
    # the column is the FID of the held-out reconstructions against the originals
    from mmu import data
    from mmu.tokenizers import Tokenizer
    test = np.ascontiguousarray(data.load_dataset("digits", 16, "test", seed=0).images[:C.FAST_EVAL_IMAGES],
                                np.float32)
    model = Tokenizer.from_pretrained(str(out / "models" / "vqvae-fsq"))
    recon = model.decode(model.encode(test))
    want = metrics.fid(test, recon, model=InceptionV3(weights=path), dims=64)
    assert abs(rows[0]["rfid"] - want) < 1e-6 * max(1.0, want)
    with pytest.raises(FileNotFoundError, match="fid_weights"):
        C.compare(["vqvae-fsq"], fast=True, out_dir=str(out), progress=False, fid_weights=str(tmp_path / "no"))
    assert cli.main(["compare", "--fid-weights", str(tmp_path / "no.safetensors")]) == 1

"""Issue 11, argument checks of the quantizers. Constructors given absurd integers raise a ValueError naming the class and the argument before
they allocate or loop (mmu._limits). On main LFQ(dim=2**40) evaluated 2**2**40, ResidualVQ(5, 2**62, 49)
looped over 2**62 levels, NLayerDiscriminator(n_layers=2**31-1) grew to 6 GB, FSQ([2**40]) was accepted
(and its (K,) usage histogram allocated at the first forward), VectorQuantize / GumbelQuantize asked the
allocator for terabytes (a MemoryError at best). Wrong argument types raise TypeError / ValueError naming the
function and the argument (rotate_to and codebook_stats raised AttributeError)."""
import numpy as np
import pytest

import mmu

from mmu._limits import MAX_CODES, MAX_ELEMENTS, MAX_WIDTH
from mmu.losses import NLayerDiscriminator
from mmu.quantizers import FSQ, LFQ, GumbelQuantize, ResidualVQ, VectorQuantize, codebook_stats
from mmu.quantizers.vq import rotate_to


@pytest.mark.parametrize("make,match", [
    (lambda: LFQ(dim=2 ** 40), "LFQ: dim must be <= 1048576"),
    (lambda: LFQ(dim=25), "LFQ: dim must be <= 24 without codebook_size"),
    (lambda: LFQ(dim=2 ** 40, codebook_size=16), "LFQ: dim must be <= 1048576"),
    (lambda: LFQ(dim=2 ** 20, codebook_size=2 ** 16, num_codebooks=32), r"LFQ: the projection \(512, 1048576\)"),
    (lambda: LFQ(codebook_size=2 ** 25), "LFQ: at most 24 bits"),
    (lambda: LFQ(codebook_size=16, num_codebooks=2 ** 40), "LFQ: bits \\* num_codebooks must be <= 1048576"),
    (lambda: ResidualVQ(5, 2 ** 62, 49), "ResidualVQ: num_quantizers must be <= 1024"),
    (lambda: ResidualVQ(5, 4, 2 ** 62), "ResidualVQ: codebook_size must be <= 16777216"),
    (lambda: ResidualVQ(512, 1000, 2 ** 16), r"ResidualVQ: 1000 codebooks of \(65536, 512\)"),
    (lambda: ResidualVQ(2 ** 15, 2, 8, codebook_dim=2 ** 14), r"ResidualVQ: the projection \(16384, 32768\)"),
    (lambda: FSQ([2 ** 40]), "FSQ: levels .* give more than 16777216 codes"),
    (lambda: FSQ([8] * 64), "FSQ: levels .* give more than 16777216 codes"),
    (lambda: FSQ([8, 5, 5, 5], dim=2 ** 40), "FSQ: dim must be <= 1048576"),
    (lambda: FSQ([8, 5], num_codebooks=2 ** 40), r"FSQ: len\(levels\) \* num_codebooks must be <= 1048576"),
    (lambda: FSQ([8, 5], dim=2 ** 20, num_codebooks=2 ** 9), r"FSQ: the projection \(1024, 1048576\)"),
    (lambda: VectorQuantize(2 ** 40, 8), "VectorQuantize: dim must be <= 1048576"),
    (lambda: VectorQuantize(8, 2 ** 62), "VectorQuantize: codebook_size must be <= 16777216"),
    (lambda: VectorQuantize(2 ** 14, 2 ** 15), r"VectorQuantize: the codebook \(1, 32768, 16384\)"),
    (lambda: VectorQuantize(2 ** 20, 8, codebook_dim=2 ** 9), r"VectorQuantize: the projection \(512, 1048576\)"),
    (lambda: VectorQuantize(8, 16, codebook_dim=2 ** 12, heads=2 ** 10), r"VectorQuantize: heads \* codebook_dim"),
    (lambda: VectorQuantize(8, 16, kmeans_init=True, kmeans_iters=2 ** 40), "VectorQuantize: kmeans_iters must be <= 10000"),
    (lambda: GumbelQuantize(8, 2 ** 30), "GumbelQuantize: codebook_size must be <= 16777216"),
    (lambda: GumbelQuantize(2 ** 40, 8), "GumbelQuantize: dim must be <= 1048576"),
    (lambda: GumbelQuantize(8, 16, embedding_dim=2 ** 40), "GumbelQuantize: embedding_dim must be <= 1048576"),
    (lambda: GumbelQuantize(2 ** 15, 2 ** 14), r"GumbelQuantize: proj \(16384, 32768, 1, 1\)"),
    (lambda: GumbelQuantize(8, 2 ** 14, embedding_dim=2 ** 15), r"GumbelQuantize: embed \(16384, 32768\)"),
    (lambda: NLayerDiscriminator(n_layers=2 ** 31 - 1), "NLayerDiscriminator: n_layers must be <= 16"),
    (lambda: NLayerDiscriminator(ndf=2 ** 40), "NLayerDiscriminator: ndf must be <= 1048576"),
    (lambda: NLayerDiscriminator(input_nc=2 ** 21), "NLayerDiscriminator: input_nc must be <= 1048576"),
    (lambda: NLayerDiscriminator(ndf=600, n_layers=4), r"NLayerDiscriminator: a conv weight \(4800, 4800, 4, 4\)"),
])
def test_absurd_sizes_raise_before_allocating(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sizes_at_the_limits_still_build():
    # the bounds themselves are allowed (only cheap ones are built here: nothing of MAX_ELEMENTS)
    assert MAX_CODES == 2 ** 24 and MAX_ELEMENTS == 2 ** 28 and MAX_WIDTH == 2 ** 20
    assert LFQ(dim=24).codebook_size == 2 ** 24
    assert FSQ([2 ** 12, 2 ** 12]).codebook_size == 2 ** 24
    assert VectorQuantize(1, 2 ** 10, kmeans_init=True, kmeans_iters=10_000).kmeans_iters == 10_000
    assert ResidualVQ(2, 1024, 2, shared_codebook=True).num_quantizers == 1024
    assert NLayerDiscriminator(ndf=1, n_layers=16).n_layers == 16


# ---------------------------------------------------------------- exception types
@pytest.mark.parametrize("src,tgt,exc,match", [
    (None, "ok", TypeError, "rotate_to: src must be a Tensor or a numeric array, got NoneType"),
    ("ok", None, TypeError, "rotate_to: tgt must be a Tensor or a numeric array, got NoneType"),
    ("abc", "ok", TypeError, "rotate_to: src must be a Tensor or a numeric array, got str"),
    (object(), "ok", TypeError, "rotate_to: src must hold numbers"),
    (1.5, 2.0, ValueError, r"rotate_to: src and tgt must have one shape \(..., d\), got \(\) and \(\)"),
    ("ok", np.ones((2, 4), np.float32), ValueError, r"rotate_to: .* got \(2, 3\) and \(2, 4\)"),
    (mmu.ones(2, 3, dtype=mmu.int64), "ok", TypeError, "rotate_to: src and tgt must be float32, got int64"),
])
def test_rotate_to_bad_arguments(src, tgt, exc, match):
    ok = mmu.randn(2, 3)
    with pytest.raises(exc, match=match):
        rotate_to(ok if isinstance(src, str) and src == "ok" else src, ok if isinstance(tgt, str) and tgt == "ok" else tgt)


def test_rotate_to_takes_arrays_and_lists_as_constants():
    r = np.random.default_rng(0)
    src, tgt = r.standard_normal((3, 4)).astype(np.float32), r.standard_normal((3, 4)).astype(np.float32)
    for a, b in ((src, tgt), (src.tolist(), tgt.tolist())):
        out = rotate_to(a, b)
        assert isinstance(out, mmu.Tensor) and out.shape == (3, 4)
        np.testing.assert_allclose(out.numpy(), tgt, rtol=1e-5, atol=1e-5)  # R u = q^: the value is tgt


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(indices=None), TypeError, "codebook_stats: indices must be an integer array or Tensor, got NoneType"),
    (dict(indices="0123"), TypeError, "codebook_stats: indices must be an integer array or Tensor, got str"),
    (dict(losses=[1.0]), TypeError, "codebook_stats: losses must be a dict"),
    (dict(dead_threshold="1"), ValueError, "codebook_stats: dead_threshold must be a finite number >= 0"),
    (dict(dead_threshold=float("nan")), ValueError, "codebook_stats: dead_threshold"),
    (dict(ema_counts=np.array(["a"] * 4)), TypeError, "codebook_stats: ema_counts must be numbers"),
])
def test_codebook_stats_bad_arguments(kwargs, exc, match):
    args = dict(indices=np.array([0, 1]), codebook_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        codebook_stats(**args)


def test_quantizer_methods_name_themselves_on_bad_arrays():
    vq, fsq, gq = VectorQuantize(4, 8), FSQ([4, 4]), GumbelQuantize(4, 8)
    with pytest.raises(TypeError, match="VectorQuantize: x must be a Tensor or a numeric array, got str"):
        vq("abc")
    with pytest.raises(TypeError, match="VectorQuantize: x must be float32, got int64"):
        vq(mmu.tensor(np.ones((1, 2, 4), np.int64)))
    for bad in (None, "abc", np.array([1.7])):  # a float index used to be truncated silently
        with pytest.raises(TypeError, match="VectorQuantize.get_codes_from_indices: indices"):
            vq.get_codes_from_indices(bad)
    with pytest.raises(TypeError, match="FSQ.codes_to_indices: codes must be numbers"):
        fsq.codes_to_indices("abc")
    with pytest.raises(ValueError, match=r"FSQ.bound: z must be \(..., 2\)"):
        fsq.bound(np.ones((2, 4), np.float32))
    with pytest.raises(TypeError, match="GumbelQuantize.get_codes_from_indices: indices must be int64, got float32"):
        gq.get_codes_from_indices([[1.0, 2.0]])
    # the natural inputs still work
    assert vq.eval()(np.zeros((1, 2, 4), np.float32))[0].shape == (1, 2, 4)
    assert vq.get_codes_from_indices(np.array([1, 2])).shape == (2, 4)
    assert fsq.codes_to_indices(np.zeros((3, 2))).numpy().tolist() == [10, 10, 10]


# ---------------------------------------------------------------- documented defaults (help(LFQ), ...)
def test_docstrings_state_the_tokenizer_defaults_that_differ():
    from mmu.tokenizers.base import make_quantizer
    lfq, tok = LFQ(dim=8), make_quantizer("lfq", 8, 256)
    assert (lfq.entropy_loss_weight, lfq.inv_temperature) == (0.1, 100.0)
    assert (tok.entropy_loss_weight, tok.inv_temperature, tok.commitment_loss_weight) == (1.0, 10.0, 0.25)
    doc = " ".join(LFQ.__doc__.split())
    assert "entropy_loss_weight 1.0, inv_temperature 10" in doc and "8 of the 256 codes" in doc
    vq, ema = VectorQuantize(8, 16), make_quantizer("ema_vq", 8, 16)
    assert (vq.decay, vq.kmeans_init, vq.threshold_ema_dead_code) == (0.8, False, 0.0)
    assert (ema.decay, ema.kmeans_init, ema.threshold_ema_dead_code, ema.commitment_weight) == (0.99, True, 1.0, 0.25)
    doc = " ".join(VectorQuantize.__doc__.split())
    assert "decay 0.99" in doc and "kmeans_init=True and threshold_ema_dead_code=1" in doc
    rvq = make_quantizer("rvq", 8, 16)
    assert rvq.num_quantizers == 4 and rvq.layers[0].decay == 0.99 and rvq.layers[0].kmeans_init
    assert "4 levels with decay 0.99" in " ".join(ResidualVQ.__doc__.split())

"""Issue 11: constructors given absurd integers raise a ValueError naming the class and the argument before
they allocate or loop (mmu._limits). On main LFQ(dim=2**40) evaluated 2**2**40, ResidualVQ(5, 2**62, 49)
looped over 2**62 levels, NLayerDiscriminator(n_layers=2**31-1) grew to 6 GB, FSQ([2**40]) was accepted
(and its (K,) usage histogram allocated at the first forward), VectorQuantize / GumbelQuantize asked the
allocator for terabytes (a MemoryError at best)."""
import pytest

from mmu._limits import MAX_CODES, MAX_ELEMENTS, MAX_WIDTH
from mmu.losses import NLayerDiscriminator
from mmu.quantizers import FSQ, LFQ, GumbelQuantize, ResidualVQ, VectorQuantize


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

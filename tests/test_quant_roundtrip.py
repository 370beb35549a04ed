"""Every quantizer: indices_to_codes(indices) gives back what forward returned as `quantized`
(eval mode, so nothing is sampled or updated), in the same layout, for token and image inputs."""
import numpy as np
import pytest

import mmu
from mmu import quantizers as Q


def _make(name):
    return {
        "vq": lambda: Q.VectorQuantize(8, 32),
        "vq_cosine_proj_heads": lambda: Q.VectorQuantize(8, 32, codebook_dim=4, heads=2, use_cosine_sim=True),
        "rvq": lambda: Q.ResidualVQ(8, num_quantizers=3, codebook_size=16),
        "fsq": lambda: Q.FSQ([8, 5, 5, 5], dim=8),
        "lfq": lambda: Q.LFQ(dim=8, codebook_size=2 ** 5),
        "gumbel": lambda: Q.GumbelQuantize(8, 32),
    }[name]()


@pytest.mark.parametrize("name", ["vq", "vq_cosine_proj_heads", "rvq", "fsq", "lfq", "gumbel"])
def test_indices_to_codes_round_trip(name):
    mmu.manual_seed(0)
    q = _make(name).eval()
    x = mmu.randn(2, 10, 8)
    with mmu.no_grad():
        quantized, indices, _ = q(x)
        back = q.indices_to_codes(indices)
    assert indices.dtype == mmu.int64
    assert tuple(back.shape) == tuple(quantized.shape)
    # the straight-through output x + (q - x) may differ from q by one rounding of x's size
    np.testing.assert_allclose(back.numpy(), quantized.numpy(), rtol=0, atol=1e-6)


def test_gumbel_image_indices_decode_channel_first():
    mmu.manual_seed(0)
    q = Q.GumbelQuantize(8, 32).eval()
    x = mmu.randn(2, 8, 3, 5)
    with mmu.no_grad():
        quantized, indices, _ = q(x)
        back = q.indices_to_codes(indices)
    assert tuple(indices.shape) == (2, 3, 5) and tuple(back.shape) == tuple(quantized.shape)
    np.testing.assert_allclose(back.numpy(), quantized.numpy(), rtol=0, atol=1e-6)

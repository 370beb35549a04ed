"""Show-o's MAGVIT-v2 tokenizer (mmu.models.magvit2), issue 13: a state dict in Show-o's published layout
(models/modeling_magvitv2.py) with random values in every parameter loads into mmu.models.magvit2.MAGVIT2
and gives the codes of a torch model of that layout (tests/showo_layouts.py, written from Show-o's source)
exactly, and its decoded images within 1e-5; the config is read off the shapes; the release's layout is
the config's default; malformed checkpoints are refused with their keys and shapes named."""
import numpy as np
import pytest

import mmu
import mmu.models
from mmu.models.magvit2 import (MAGVIT2, MAGVIT2Config, convert_magvit2_state_dict, load_magvit2,
                                magvit2_config_from_state_dict, magvit2_state_dict_shapes)

ATOL = 1e-5

# 2 levels of 32 and 64 channels, uneven residual-block counts, attention at 8 px (encoder level 1, decoder
# level 1) besides the mid blocks, 6 bits -> 64 codes, 16 px images -> 8 x 8 codes; GroupNorm(32) as Show-o
TINY = dict(in_channels=3, ch=32, encoder_ch_mult=[1, 2], encoder_num_res_blocks=[2, 1], decoder_ch_mult=[1, 2],
            decoder_num_res_blocks=[1, 3], attn_resolutions=[8], z_channels=6, resolution=16, norm_groups=32,
            codebook_size=64)


@pytest.fixture(scope="module")
def ref():
    """A torch MAGVITv2 of Show-o's layout at TINY, every parameter random (norms and biases included)."""
    torch = pytest.importorskip("torch")
    from tests.showo_layouts import MAGVITv2
    torch.manual_seed(0)
    m = MAGVITv2(TINY).eval()
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or ".norm" in name and "weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
    return m


def _sd(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _images(n=3, seed=1):
    return (np.random.default_rng(seed).random((n, 3, 16, 16), dtype=np.float32) * 2 - 1).astype(np.float32)


def test_registered_and_default_config_is_the_release():
    assert mmu.models.get("magvit2") is MAGVIT2
    c = MAGVIT2Config()
    assert (c.ch, c.z_channels, c.codebook_size, c.resolution) == (128, 13, 8192, 256)
    assert c.encoder_num_res_blocks == [4, 3, 4, 3, 4] and c.decoder_num_res_blocks == [4, 4, 3, 4, 3]
    assert c.encoder_ch_mult == [1, 2, 2, 4, 4] and c.decoder_ch_mult == [1, 1, 2, 2, 4]


def test_release_layout_shapes_match_showo(ref):
    """The full-size torch MAGVITv2 (on the meta device: shapes only) has exactly the keys and shapes
    magvit2_state_dict_shapes gives for the default config, and its shapes read back as that config."""
    import torch
    from tests.showo_layouts import MAGVITv2
    c = MAGVIT2Config().to_dict()
    with torch.device("meta"):
        big = MAGVITv2(c)
    got = {k: tuple(v.shape) for k, v in big.state_dict().items() if not k.startswith("quantize.")}
    assert got == magvit2_state_dict_shapes(MAGVIT2Config())
    n = sum(int(np.prod(s)) for s in got.values())
    assert 50e6 < n < 200e6                                      # the release is a ~10^8-parameter model
    fakes = {k: np.broadcast_to(np.float32(0), s) for k, s in got.items()}
    read = MAGVIT2Config.from_dict(magvit2_config_from_state_dict(fakes))
    # Show-o's attn_resolutions [5] is reached by no level of a 256 px model: the weights read as []
    assert read == MAGVIT2Config(attn_resolutions=[])
    assert magvit2_state_dict_shapes(read) == got


def test_mmu_state_dict_is_the_enumerated_layout():
    m = MAGVIT2(TINY)
    sd = m.state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == magvit2_state_dict_shapes(MAGVIT2Config(**TINY))


def test_codes_and_images_equal_showo(ref):
    import torch
    sd = _sd(ref)
    assert sorted(sd) == sorted(list(magvit2_state_dict_shapes(TINY)) + ["quantize.embedding", "quantize.power_vals"])
    cfg = magvit2_config_from_state_dict(sd, resolution=16)
    assert MAGVIT2Config.from_dict(cfg) == MAGVIT2Config(**TINY)
    model = load_magvit2(sd, resolution=16)
    x = _images()
    with torch.no_grad():
        z_ref = ref.latent(torch.from_numpy(x)).numpy()
        codes_ref = ref.get_code(torch.from_numpy(x)).numpy()
        img_ref = ref.decode_code(torch.from_numpy(codes_ref)).numpy()
    with mmu.no_grad():
        z = model._encode_latent(mmu.tensor(x)).numpy()
    np.testing.assert_allclose(z, z_ref, rtol=0, atol=ATOL)
    assert np.abs(z_ref).min() > 10 * np.abs(z - z_ref).max()   # no sign is decided by rounding
    codes = model.get_code(x)
    assert codes.dtype == np.int64 and codes.shape == (3, 64)
    np.testing.assert_array_equal(codes, codes_ref)
    assert len(np.unique(codes)) > 20           # the random model uses many of the 64 codes
    np.testing.assert_array_equal(model.encode(x), codes_ref.reshape(3, 8, 8))
    img = model.decode_code(codes_ref)
    assert img.shape == (3, 3, 16, 16)
    np.testing.assert_allclose(img, img_ref, rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.decode(codes_ref.reshape(3, 8, 8)), img_ref, rtol=0, atol=ATOL)
    # a non-square grid, as Show-o's decode_code(shape=(h, w)) (extrapolation)
    c2 = codes_ref.reshape(3, 8, 8)[:, :, :4].reshape(3, 32)
    with torch.no_grad():
        img2_ref = ref.decode_code(torch.from_numpy(c2), shape=(8, 4)).numpy()
    np.testing.assert_allclose(model.decode_code(c2, shape=(8, 4)), img2_ref, rtol=0, atol=ATOL)
    # the bits: code c decodes to the signs of its bits, most significant first (LFQ's own table)
    bits = model.quantize.indices_to_codes(np.arange(64).reshape(1, 1, 64)).numpy()[0, :, 0, :].T
    np.testing.assert_array_equal(bits, sd["quantize.embedding"])


def test_torch_tensors_and_bfloat16_load(ref):
    import torch
    sd = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in ref.state_dict().items()}
    out = convert_magvit2_state_dict(sd, TINY)
    assert all(v.dtype == np.float32 for v in out.values())
    np.testing.assert_array_equal(out["encoder.conv_in.weight"],
                                  ref.state_dict()["encoder.conv_in.weight"].to(torch.bfloat16).float().numpy())


def test_malformed_checkpoints_name_keys_and_shapes(ref):
    sd = _sd(ref)
    bad = dict(sd)
    del bad["decoder.up.1.block.2.conv2.bias"]
    bad["decoder.conv_out.weight"] = np.zeros((3, 32, 1, 1), np.float32)
    bad["encoder.extra.weight"] = np.zeros(2, np.float32)
    with pytest.raises(ValueError) as e:
        convert_magvit2_state_dict(bad, TINY)
    msg = str(e.value)
    assert "decoder.up.1.block.2.conv2.bias" in msg and "missing" in msg
    assert "decoder.conv_out.weight has shape (3, 32, 1, 1)" in msg and "(3, 32, 3, 3)" in msg
    assert "encoder.extra.weight" in msg and "unexpected" in msg
    # another bit order (least significant first) is refused: its codes would not be Show-o's
    lsb = dict(sd)
    idx = np.arange(64)[:, None] >> np.arange(6)
    lsb["quantize.embedding"] = ((idx & 1) * 2.0 - 1.0).astype(np.float32)
    with pytest.raises(ValueError, match=r"quantize.embedding row 1 .*most significant first"):
        convert_magvit2_state_dict(lsb, TINY)
    pv = dict(sd)
    pv["quantize.power_vals"] = np.array([1, 2, 4, 8, 16, 32])
    with pytest.raises(ValueError, match="quantize.power_vals"):
        convert_magvit2_state_dict(pv, TINY)
    with pytest.raises(ValueError, match="encoder.conv_in.weight"):
        magvit2_config_from_state_dict({"decoder.conv_out.weight": np.zeros((3, 4, 3, 3), np.float32)})
    with pytest.raises(TypeError, match="config must be"):
        convert_magvit2_state_dict(sd, "tiny")
    # a config that does not fit names the shapes
    with pytest.raises(ValueError, match=r"encoder.down.0.block.0.conv1.weight has shape \(32, 32, 3, 3\)"):
        convert_magvit2_state_dict(sd, dict(TINY, ch=16))


def test_config_validation_names_fields():
    with pytest.raises(ValueError, match="encoder_num_res_blocks"):
        MAGVIT2(dict(TINY, encoder_num_res_blocks=[2]))
    with pytest.raises(ValueError, match="codebook_size must be 2\\*\\*z_channels = 64"):
        MAGVIT2(dict(TINY, codebook_size=128))
    with pytest.raises(ValueError, match="quantizer must be 'lfq'"):
        MAGVIT2(dict(TINY, quantizer="vq"))
    with pytest.raises(ValueError, match="decoder_ch_mult"):
        MAGVIT2(dict(TINY, decoder_ch_mult=[1, 2, 2], decoder_num_res_blocks=[1, 1, 1]))
    with pytest.raises(ValueError, match="encoder level 1 has no ResnetBlock"):
        MAGVIT2(dict(TINY, encoder_num_res_blocks=[2, 0]))
    with pytest.raises(ValueError, match="quantizer_kwargs may not set 'dim'"):
        MAGVIT2(dict(TINY, quantizer_kwargs={"dim": 4}))
    m = MAGVIT2(TINY)
    with pytest.raises(ValueError, match="decode_code: 6 codes per image are not a square"):
        m.decode_code(np.zeros((1, 6), np.int64))
    with pytest.raises(ValueError, match=r"shape must be \(h, w\) with h \* w = 6"):
        m.decode_code(np.zeros((1, 6), np.int64), shape=(2, 2))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
        m.decode_code(np.full((1, 4), 64, np.int64))
    with pytest.raises(TypeError, match="load_magvit2"):
        MAGVIT2.from_taming_state_dict({})


def test_trains_and_round_trips_its_config(tmp_path):
    """MAGVIT2 trains through the Trainer protocol (VQGAN's loss with the LFQ) and save/from_pretrained
    keeps the per-level layout."""
    m = MAGVIT2(dict(TINY, ch=8, norm_groups=4))
    x = _images(2)
    opt = mmu.optim.Adam(m.generator_parameters(), lr=1e-3)
    losses = []
    for step in range(4):
        loss, logs = m.training_step(x, step)
        assert set(logs) >= {"rec", "quant", "entropy", "commitment"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    m.save_pretrained(str(tmp_path))
    back = MAGVIT2.from_pretrained(str(tmp_path))
    assert back.config == m.config
    np.testing.assert_array_equal(back.encode(x), m.encode(x))

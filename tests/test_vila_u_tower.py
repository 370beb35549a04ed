"""VILA-U's unified vision tower (mmu.models.vila_u): shapes and dtypes of encode / decode /
code_embeddings, the text encoder's pooling per layout against NumPy, the loss terms against NumPy,
the stages (text frozen in 'tower', each stage's loss falls), config and file round trips, bad input."""
import json
import math

import numpy as np
import pytest

import mmu
from mmu.models.vila_u import (TextEncoder, UnifiedVisionTower, UnifiedVisionTowerConfig, digit_prompts, tower_data,
                                tower_metrics, train_recipe, train_tower, zero_shot_accuracy)
from mmu.optim import AdamW

TINY = dict(image_size=16, patch_size=4, in_channels=1, dim=32, depth=2, num_heads=4, codebook_size=32, rvq_depth=3,
            decoder_ch=16, decoder_ch_mult=[1, 1, 2], decoder_z_channels=16, text_vocab_size=40, text_max_len=8,
            text_dim=32, text_depth=1, text_heads=4)


def _tower(**kw):
    mmu.manual_seed(0)
    return UnifiedVisionTower(**{**TINY, **kw})


def _batch(n=6, seed=0, vocab=40):
    rng = np.random.default_rng(seed)
    x = np.tanh(rng.normal(size=(n, 1, 16, 16))).astype(np.float32)
    ids = rng.integers(4, vocab, (n, 5))
    ids[0, 3:] = -1
    ids[1, 4:] = -1
    return {"images": x, "text_ids": ids}


# ----------------------------------------------------------------------------------------- NumPy references
def _ln(x, w, b, eps):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * w + b


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _quick_gelu(x):
    return x / (1 + np.exp(-1.702 * x))


def _text_reference(enc, ids):
    """A float64 NumPy forward of a TextEncoder from its state_dict: (features (B, L, dim), pooled (B, E))."""
    sd = {k: v.numpy().astype(np.float64) for k, v in enc.state_dict().items()}
    b, l = ids.shape
    d = enc.dim
    heads = enc.layers[0].attn.num_heads
    hd = d // heads
    eps = enc.final_norm.eps
    act = _gelu_tanh if enc.layout == "siglip" else _quick_gelu
    x = sd["token_embedding.weight"][ids] + sd["pos_embedding"][:, :l]
    for i in range(enc.depth):
        p = f"layers.{i}."
        h = _ln(x, sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps)
        qkv = h @ sd[p + "attn.qkv_proj.weight"].T + sd[p + "attn.qkv_proj.bias"]
        q, k, v = (qkv[..., j * d:(j + 1) * d].reshape(b, l, heads, hd).transpose(0, 2, 1, 3) for j in range(3))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        if enc.layout == "clip":
            s = s + np.triu(np.full((l, l), -np.inf), 1)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        a = (s @ v).transpose(0, 2, 1, 3).reshape(b, l, d)
        x = x + a @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = _ln(x, sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps)
        h = act(h @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + h @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    x = _ln(x, sd["final_norm.weight"], sd["final_norm.bias"], eps)
    if enc.layout == "siglip":
        pos = np.full(b, l - 1)
    elif enc.eot_token_id is None:
        pos = ids.argmax(-1)
    else:
        pos = (ids == enc.eot_token_id).argmax(-1)
    pooled = x[np.arange(b), pos] @ sd["head.weight"].T
    if "head.bias" in sd:
        pooled = pooled + sd["head.bias"]
    return x, pooled


# ----------------------------------------------------------------------------------------- codes
def test_encode_decode_code_embeddings_shapes_and_dtypes():
    t = _tower()
    x = _batch(4)["images"]
    t.training_step(_batch(4), 0)          # k-means init of the codebook on a batch
    codes = t.encode(x)
    assert codes.shape == (4, 4, 4, 3) and codes.dtype == np.int64
    assert t.latent_shape == (4, 4) and t.tokens_per_image == 16
    assert codes.min() >= 0 and codes.max() < 32
    img = t.decode(codes)
    assert img.shape == (4, 1, 16, 16) and img.dtype == np.float32 and np.isfinite(img).all()
    emb = t.code_embeddings(codes)
    assert isinstance(emb, mmu.Tensor) and emb.shape == (4, 4, 4, 3, 32) and emb.dtype == np.float32
    assert not emb.requires_grad
    # batch_size splits give the same codes and images
    assert np.array_equal(t.encode(x, batch_size=3), codes)
    np.testing.assert_allclose(t.decode(codes, batch_size=1), img, rtol=1e-5, atol=1e-5)
    # any leading shape, a Tensor or a list
    assert t.code_embeddings(mmu.tensor(codes[0, 0])).shape == (4, 3, 32)
    assert t.code_embeddings([[1, 2, 3]]).shape == (1, 3, 32)


def test_code_embeddings_sum_is_what_the_decoder_sees():
    t = _tower()
    b = _batch(4)
    t.training_step(b, 0)
    t.eval()
    x = mmu.tensor(b["images"])
    with mmu.no_grad():
        h = t._tokens_before_quant(x)
        z, codes, _ = t._quantize(h)
    codes = codes.numpy().reshape(4, 4, 4, 3)
    assert np.array_equal(codes, t.encode(b["images"]))
    emb = t.code_embeddings(codes).numpy()
    np.testing.assert_allclose(emb.sum(-2).reshape(4, 16, 32), z.numpy(), rtol=1e-5, atol=1e-5)
    # each depth's vector is the codebook row of its code (one shared codebook)
    book = t.quantizer.level(0).embed.numpy()[0]
    np.testing.assert_array_equal(emb, book[codes])
    # the residual loop: depth d's code is the nearest code to what depths < d left
    hn = h.numpy().reshape(-1, 32).astype(np.float64)
    res = hn.copy()
    flat = codes.reshape(-1, 3)
    for d in range(3):
        dist = (res ** 2).sum(1)[:, None] - 2 * res @ book.T + (book.astype(np.float64) ** 2).sum(1)[None]
        np.testing.assert_array_equal(dist.argmin(1), flat[:, d])
        res -= book[flat[:, d]]
    # decode(codes) equals the training path's decoder on z
    with mmu.no_grad():
        direct = t._decode_tokens(z).numpy()
    np.testing.assert_allclose(t.decode(codes), direct, rtol=1e-4, atol=1e-5)


def test_straight_through_gradient_reaches_the_encoder_once():
    # VILA-U's quants_trunc = x + (q - x).detach(): d z_q / d z is the identity (not D times it)
    t = _tower()
    t.training_step(_batch(4), 0)
    h = mmu.tensor(np.random.default_rng(1).normal(size=(2, 16, 32)).astype(np.float32), requires_grad=True)
    z, _, _ = t._quantize(h)
    g = np.random.default_rng(2).normal(size=(2, 16, 32)).astype(np.float32)
    (z * mmu.tensor(g)).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), g, rtol=1e-6, atol=1e-6)


def test_commitment_is_the_cumulative_rq_loss():
    t = _tower(commitment_weight=0.5)
    b = _batch(4)
    t.training_step(b, 0)
    t.eval()
    x = mmu.tensor(b["images"])
    with mmu.no_grad():
        h = t._tokens_before_quant(x).numpy().astype(np.float64)
    codes = t.encode(b["images"]).reshape(4, 16, 3)
    book = t.quantizer.level(0).embed.numpy()[0].astype(np.float64)
    want = 0.5 * np.mean([((h - book[codes[..., :d + 1]].sum(-2)) ** 2).mean() for d in range(3)])
    t.quantizer.train(True)
    for vq in t.quantizer.layers:
        vq.freeze_codebook = True        # the same codes as above: no EMA step in between
    _, _, commit = t.quantizer(mmu.tensor(h.astype(np.float32)))
    np.testing.assert_allclose(commit.item(), want, rtol=1e-4)


# ----------------------------------------------------------------------------------------- text encoder
@pytest.mark.parametrize("layout, eot", [("siglip", None), ("clip", None), ("clip", 2)])
def test_text_encoder_pooling_matches_numpy(layout, eot):
    mmu.manual_seed(3)
    enc = TextEncoder(30, 7, 16, 2, 2, hidden_dim=24, embed_dim=12, layout=layout, eot_token_id=eot)
    rng = np.random.default_rng(4)
    for p in enc.parameters():           # non-trivial weights everywhere (biases and norms too)
        p.numpy()[...] = rng.normal(0, 0.3, p.shape).astype(np.float32)
    ids = rng.integers(3, 30, (3, 6))
    ids[:, 4] = 2
    ids[1, 2] = 2                        # the first eot of row 1 is at 2
    ids[2, 5] = 29                       # row 2's highest id
    feats, pooled = enc(ids)
    want_f, want_p = _text_reference(enc, ids)
    assert feats.shape == (3, 6, 16) and pooled.shape == (3, 12)
    np.testing.assert_allclose(feats.numpy(), want_f, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(pooled.numpy(), want_p, rtol=1e-4, atol=1e-4)
    pos = enc.pooled_positions(ids)
    if layout == "siglip":
        assert pos.tolist() == [5, 5, 5]
    elif eot is None:
        assert pos.tolist() == ids.argmax(-1).tolist() and pos[2] == 5
    else:
        assert pos.tolist() == [4, 2, 4]
    # SigLIP: no mask, so a later token changes every position; CLIP: causal, earlier positions unchanged
    ids2 = ids.copy()
    ids2[:, 5] = 3 if layout == "clip" else 4
    f2 = enc(ids2)[0].numpy()
    same = np.allclose(f2[:, :5], feats.numpy()[:, :5], atol=1e-6)
    assert same == (layout == "clip")
    assert enc.head.bias is None if layout == "clip" else enc.head.bias is not None


def test_text_encoder_names_and_bad_input():
    enc = TextEncoder(20, 5, 8, 1, 2, layout="siglip")
    keys = set(enc.state_dict())
    for k in ("token_embedding.weight", "pos_embedding", "layers.0.norm1.weight", "layers.0.attn.qkv_proj.weight",
              "layers.0.attn.out_proj.bias", "layers.0.norm2.bias", "layers.0.mlp.fc1.weight", "layers.0.mlp.fc2.bias",
              "final_norm.weight", "head.weight", "head.bias"):
        assert k in keys, k
    with pytest.raises(ValueError, match="TextEncoder: ids must lie in"):
        enc(np.array([[1, 20]]))
    with pytest.raises(ValueError, match="max_len=5"):
        enc(np.ones((1, 6), np.int64))
    with pytest.raises(TypeError, match="TextEncoder: ids must be integers"):
        enc(np.ones((1, 3), np.float32))
    with pytest.raises(ValueError, match="layout must be one of"):
        TextEncoder(20, 5, 8, 1, 2, layout="bert")
    with pytest.raises(ValueError, match="eot_token_id"):
        TextEncoder(20, 5, 8, 1, 2, layout="siglip", eot_token_id=2)
    clip = TextEncoder(20, 5, 8, 1, 2, layout="clip", eot_token_id=2)
    with pytest.raises(ValueError, match="no end-of-text token"):
        clip(np.array([[4, 5, 6]]))


def test_text_input_pads_per_layout():
    t = _tower()
    ids = np.array([[5, 6, -1], [7, -1, -1]])
    a = t.text_input(ids)
    assert a.shape == (2, 8) and a.tolist()[1] == [7] + [0] * 7     # siglip: padded to text_max_len
    c = _tower(text_layout="clip", text_eot_id=2)
    assert c.text_input(ids).tolist() == [[5, 6], [7, 0]]           # clip: -1 -> pad, trailing pads cut


# ----------------------------------------------------------------------------------------- losses
def _log_sigmoid(x):
    return -np.logaddexp(0, -x)


@pytest.mark.parametrize("contrastive", ["sigmoid", "softmax"])
def test_loss_terms_match_numpy(contrastive):
    t = _tower(contrastive=contrastive, contra_weight=0.7, recon_weight=1.3, recon_loss="l2")
    b = _batch(5)
    t.training_step(b, 0)                 # codebook init
    for vq in t.quantizer.layers:
        vq.freeze_codebook = True
    t.set_stage("joint")
    loss, logs = t.training_step(b, 1)
    t.eval()
    with mmu.no_grad():
        img = t.image_embeddings(b["images"]).numpy().astype(np.float64)
        txt = t.text_embeddings(b["text_ids"]).numpy().astype(np.float64)
        recon = t.reconstruct(b["images"]).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, rtol=1e-5)
    scale = math.exp(t.logit_scale.item())
    logits = img @ txt.T * scale
    n = len(img)
    if contrastive == "sigmoid":
        logits = logits + t.logit_bias.item()
        labels = 2 * np.eye(n) - 1
        contra = -_log_sigmoid(labels * logits).sum() / n
    else:
        def ce(z):
            z = z - z.max(1, keepdims=True)
            return -(np.diag(z) - np.log(np.exp(z).sum(1))).mean()
        contra = (ce(logits) + ce(logits.T)) / 2
    rec = ((recon - b["images"]) ** 2).mean()
    np.testing.assert_allclose(logs["loss_contra"], contra, rtol=1e-4)
    np.testing.assert_allclose(logs["loss_recon"], rec, rtol=1e-4)
    want = 0.7 * contra + 1.3 * rec + logs["loss_commit"]
    np.testing.assert_allclose(loss.item(), want, rtol=1e-4)
    # the align stage: contrastive on the continuous features only
    t.train()
    loss_a, logs_a = t.training_step(b, 1, stage="align")
    t.eval()
    with mmu.no_grad():
        img_c = t.image_embeddings(b["images"], quantized=False).numpy().astype(np.float64)
        _, pooled = t.vision(mmu.tensor(b["images"]))           # the whole SigLIP tower, unquantized
    np.testing.assert_allclose(img_c, pooled.numpy() / np.linalg.norm(pooled.numpy(), axis=1, keepdims=True),
                               rtol=1e-4, atol=1e-6)
    assert set(logs_a) == {"loss_contra"}
    np.testing.assert_allclose(loss_a.item(), 0.7 * logs_a["loss_contra"], rtol=1e-6)


def test_lpips_and_gan_terms():
    t = _tower(lpips_weight=0.5, lpips_random=True, gan_weight=0.1, disc_layers=2, disc_ndf=8)
    b = _batch(2)
    loss, logs = t.training_step(b, 0)
    assert {"loss_lpips", "g_adv", "d_weight"} <= set(logs)
    loss.backward()
    assert t.decoder.conv_out.weight.grad is not None
    d, dlogs = t.discriminator_step(b, 0)
    assert d.requires_grad and dlogs["d_loss"] == pytest.approx(d.item())
    params = {id(p) for p in t.generator_parameters()}
    assert not params & {id(p) for p in t.discriminator.parameters()}
    assert _tower(gan_weight=0.1, disc_layers=2, disc_start=5).discriminator_step(b, 0) is None


# ----------------------------------------------------------------------------------------- stages
def test_text_encoder_gets_no_gradient_in_stage_tower():
    t = _tower()
    b = _batch(4)
    t.set_stage("tower")
    assert all(not p.requires_grad for p in t.text.parameters())
    assert {id(p) for p in t.generator_parameters()}.isdisjoint({id(p) for p in t.text.parameters()})
    before = {k: v.numpy().copy() for k, v in t.text.state_dict().items()}
    # an optimizer built over every parameter (as one made before set_stage would be)
    for p in t.text.parameters():
        p.requires_grad_(True)
    t.set_stage("tower")
    opt = AdamW([p for p in t.parameters()] , lr=1e-2)
    loss, _ = t.training_step(b, 0)
    loss.backward()
    assert all(p.grad is None for p in t.text.parameters())
    assert t.vision.encoder.patch_embed.weight.grad is not None
    assert t.logit_scale.grad is not None
    opt.step()
    for k, v in t.text.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k])
    # in 'joint' and 'align' the text encoder learns
    for stage in ("joint", "align"):
        t.set_stage(stage)
        t.zero_grad()
        loss, _ = t.training_step(b, 0)
        loss.backward()
        assert t.text.token_embedding.weight.grad is not None, stage


@pytest.mark.parametrize("stage", ["align", "tower", "joint"])
def test_each_stage_loss_goes_down(stage):
    from mmu.train import TrainConfig, Trainer
    t = _tower()
    t.set_stage(stage)
    data = _batch(8, seed=5)
    cfg = TrainConfig(steps=25, batch_size=8, lr=3e-3, betas=(0.9, 0.99), log_every=0, progress=False, seed=0)
    tr = Trainer(t, data, cfg)
    first = tr.train_step()["loss"]
    for _ in range(23):
        tr.train_step()
    last = tr.train_step()["loss"]
    assert last < 0.8 * first, (stage, first, last)


# ----------------------------------------------------------------------------------------- files and config
def test_config_round_trip_and_save_load(tmp_path):
    cfg = UnifiedVisionTowerConfig(**TINY, contrastive="softmax", text_layout="clip", text_eot_id=2, embed_dim=24)
    assert cfg.quantize_after == 1 and cfg.codebook_dim == 32
    d = json.loads(json.dumps(cfg.to_dict()))
    assert UnifiedVisionTowerConfig.from_dict(d) == cfg
    mmu.manual_seed(0)
    t = UnifiedVisionTower(cfg)
    assert t.image_proj is not None and t.logit_bias is None
    b = _batch(3)
    b["text_ids"] = np.array([[5, 6, 2, -1], [7, 2, -1, -1], [8, 9, 10, 2]])   # clip: each text ends with eot 2
    t.training_step(b, 0)
    t.save_pretrained(tmp_path / "tower")
    u = UnifiedVisionTower.from_pretrained(tmp_path / "tower")
    assert u.config == t.config
    assert np.array_equal(u.encode(b["images"]), t.encode(b["images"]))
    np.testing.assert_array_equal(u.decode(t.encode(b["images"])), t.decode(t.encode(b["images"])))
    assert mmu.models.get("vila_u_tower") is UnifiedVisionTower
    loaded = mmu.models.get("vila_u_tower").from_pretrained(tmp_path / "tower")
    np.testing.assert_array_equal(loaded.text_embeddings(b["text_ids"]).numpy(),
                                  t.text_embeddings(b["text_ids"]).numpy())


def test_decoder_latent_shape_resizes_the_grid_and_round_trips(tmp_path):
    # VILA-U's 384-px layout at 16 px: patches of 3 leave a 5 x 5 grid (the last pixel row / column unread),
    # resized bilinearly (align_corners False) to the 4 x 4 the 4x decoder needs
    mmu.manual_seed(0)
    t = _tower(patch_size=3, decoder_latent_shape=[4, 4])
    b = _batch(2)
    codes = t.encode(b["images"])
    assert codes.shape == (2, 5, 5, 3) and t.tokens_per_image == 25
    z = t.code_embeddings(codes).sum(-2).numpy()                        # (2, 5, 5, C)
    grid = mmu.functional.interpolate(mmu.tensor(np.ascontiguousarray(z.transpose(0, 3, 1, 2))), size=(4, 4),
                                      mode="bilinear", align_corners=False)
    with mmu.no_grad():
        want = t.decoder(t.post_quant_conv(grid)).numpy()
    np.testing.assert_allclose(t.decode(codes), want, rtol=0, atol=1e-6)
    loss, _ = t.training_step(b, 0, stage="tower")                     # the reconstruction loss through the resize
    loss.backward()
    assert np.abs(t.vision.encoder.patch_embed.weight.grad.numpy()).sum() > 0
    t.save_pretrained(tmp_path / "tower")
    u = UnifiedVisionTower.from_pretrained(tmp_path / "tower")
    assert u.config.decoder_latent_shape == [4, 4]
    np.testing.assert_array_equal(u.decode(codes), t.decode(codes))


def test_text_tokenizer_saved_beside_and_tokenize(tmp_path):
    from mmu.text import TextTokenizer
    tok = TextTokenizer.train_word_level(["a handwritten seven", "the digit 7", "a handwritten one"])
    t = _tower(text_vocab_size=16)
    t.text_tokenizer = tok
    seven = int(tok.encode("7")[0])
    ids = t.tokenize(["a handwritten seven", "7"])
    assert ids[0].tolist()[-1] == tok.eos_id and ids[1].tolist()[:2] == [seven, tok.eos_id]
    assert ids[1, 2:].tolist() == [-1] * (ids.shape[1] - 2)
    t.save_pretrained(tmp_path / "t")
    u = UnifiedVisionTower.from_pretrained(tmp_path / "t")
    assert u.text_tokenizer is not None and u.tokenize(["the digit 7"]).tolist() == t.tokenize(["the digit 7"]).tolist()
    c = _tower(text_vocab_size=16, text_layout="clip", text_eot_id=tok.eos_id)
    ids = c.tokenize(["7"], tok)
    assert ids.tolist() == [[tok.bos_id, seven, tok.eos_id]]
    with pytest.raises(ValueError, match="text_eot_id"):
        _tower(text_vocab_size=16, text_layout="clip").tokenize(["7"], tok)
    with pytest.raises(ValueError, match="exceeds config.text_vocab_size"):
        _tower(text_vocab_size=4).tokenize(["7"], tok)


def test_bad_input_raises_clear_errors():
    t = _tower()
    b = _batch(2)
    with pytest.raises(ValueError, match=r"UnifiedVisionTower.encode: images must be \(B, 1, 16, 16\)"):
        t.encode(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(ValueError, match="NaN or inf"):
        t.encode(np.full((1, 1, 16, 16), np.nan, np.float32))
    with pytest.raises(ValueError, match=r"decode: codes must be \(B, h=4, w=4, D=3\)"):
        t.decode(np.zeros((1, 4, 4, 2), np.int64))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, codebook_size=32\)"):
        t.decode(np.full((1, 4, 4, 3), 32))
    with pytest.raises(TypeError, match="code_embeddings: ids must be integers|code_embeddings: codes"):
        t.code_embeddings(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"code_embeddings: codes must be \(\.\.\., D=3\)"):
        t.code_embeddings(np.zeros((2, 4), np.int64))
    with pytest.raises(ValueError, match="stage must be one of"):
        t.set_stage("pretrain")
    with pytest.raises(ValueError, match="stage must be one of"):
        t.training_step(b, 0, stage="x")
    with pytest.raises(KeyError, match="'text_ids'"):
        t.training_step({"images": b["images"]}, 0)
    with pytest.raises(TypeError, match="batch must be a dict"):
        t.training_step(b["images"], 0)
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        t.training_step({"images": b["images"], "text_ids": b["text_ids"][:1]}, 0)
    with pytest.raises(ValueError, match="hold no token"):
        t.text_embeddings(np.array([[-1, -1]]))
    with pytest.raises(ValueError, match="exceeds text_max_len 8"):
        t.text_embeddings(np.ones((1, 9), np.int64))
    with pytest.raises(ValueError, match=r"text_ids must lie in \[0, text_vocab_size=40\)"):
        t.text_embeddings(np.array([[40]]))
    # contra_weight 0: the reconstruction stages need no text
    r = _tower(contra_weight=0.0)
    loss, logs = r.training_step({"images": b["images"]}, 0)
    assert "loss_contra" not in logs and np.isfinite(loss.item())
    with pytest.raises(ValueError, match="upsamples its 4 x 4 input .* = 2 to 8 x 8, not the image_size 16"):
        UnifiedVisionTowerConfig(**{**TINY, "decoder_ch_mult": [1, 2]})
    with pytest.raises(ValueError, match="upsamples its 3 x 3 input .* to 12 x 12, not the image_size 16"):
        UnifiedVisionTowerConfig(**{**TINY, "decoder_latent_shape": [3, 3]})
    with pytest.raises(ValueError, match="decoder_latent_shape must be None or a list of 2 ints"):
        UnifiedVisionTowerConfig(**{**TINY, "decoder_latent_shape": [4]})
    with pytest.raises(ValueError, match="smaller than one patch"):
        UnifiedVisionTowerConfig(**{**TINY, "image_size": 3, "decoder_ch_mult": [1]})
    with pytest.raises(ValueError, match="codebook_dim"):
        UnifiedVisionTowerConfig(**{**TINY, "codebook_dim": 16})
    with pytest.raises(ValueError, match="quantize_after"):
        UnifiedVisionTowerConfig(**{**TINY, "quantize_after": 3})
    with pytest.raises(ValueError, match="contrastive must be one of"):
        UnifiedVisionTowerConfig(**{**TINY, "contrastive": "hinge"})
    with pytest.raises(TypeError, match="unknown field"):
        UnifiedVisionTowerConfig.from_dict({"image_sise": 16})
    with pytest.raises(TypeError, match="UnifiedVisionTowerConfig: rvq_depth must be an int"):
        UnifiedVisionTowerConfig(**{**TINY, "rvq_depth": 2.5})
    with pytest.raises(ValueError, match="lpips_weights"):
        UnifiedVisionTowerConfig(**{**TINY, "lpips_weight": 1.0})
    with pytest.raises(TypeError, match="config or keyword fields"):
        UnifiedVisionTower(UnifiedVisionTowerConfig(**TINY), dim=8)
    with pytest.raises(TypeError, match="text_tokenizer must be"):
        t.text_tokenizer = "tok"


def test_public_callables_are_documented():
    import inspect
    import mmu.models.vila_u as pkg
    for name in pkg.__all__:
        obj = getattr(pkg, name)
        if not callable(obj):
            continue
        assert inspect.getdoc(obj), name
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (callable(member) or isinstance(member, property)):
                    continue
                assert inspect.getdoc(getattr(obj, attr)), f"{name}.{attr}"


# ----------------------------------------------------------------------------------------- recipe and metrics
def _word_tokenizer():
    from mmu.text import TextTokenizer
    return TextTokenizer.train_word_level(mmu.data.caption_corpus("digits"))


def test_tower_metrics_match_numpy():
    t = _tower()
    b = _batch(6)
    t.training_step(b, 0)
    m = tower_metrics(t, b["images"], batch_size=4)
    codes = t.encode(b["images"])
    recon = t.decode(codes).astype(np.float64)
    x = b["images"].astype(np.float64)
    mse = ((recon - x) ** 2).reshape(6, -1).mean(1)
    np.testing.assert_allclose(m["psnr"], np.mean(10 * np.log10(4.0 / mse)), rtol=1e-5)
    assert m["ssim"] == pytest.approx(mmu.metrics.ssim(recon.astype(np.float32), b["images"]), rel=1e-6)
    flat = codes.reshape(-1, 3)
    assert m["code_usage_per_depth"] == [np.unique(flat[:, d]).size / 32 for d in range(3)]
    assert m["code_usage"] == np.unique(flat).size / 32
    for d in range(3):
        p = np.bincount(flat[:, d], minlength=32) / len(flat)
        p = p[p > 0]
        assert m["perplexity_per_depth"][d] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_zero_shot_accuracy_matches_numpy_and_checks_input():
    tok = _word_tokenizer()
    t = _tower(text_vocab_size=tok.vocab_size)
    t.text_tokenizer = tok
    b = _batch(6)
    t.training_step({"images": b["images"], "text_ids": t.tokenize(["seven"] * 6)}, 0)
    prompts = digit_prompts()
    assert prompts[7] == "a handwritten seven" and len(prompts) == 10
    labels = np.array([0, 1, 2, 3, 4, 5])
    acc = zero_shot_accuracy(t, b["images"], labels, prompts, batch_size=4)
    t.eval()
    with mmu.no_grad():
        img = t.image_embeddings(b["images"]).numpy()
        txt = t.text_embeddings(t.tokenize(prompts)).numpy()
    pred = (img @ txt.T).argmax(1)
    assert acc == pytest.approx(float((pred == labels).mean()))
    # the labels of the predictions score 1; a prompt ensemble of one prompt each is the same
    assert zero_shot_accuracy(t, b["images"], pred, prompts) == 1.0
    assert zero_shot_accuracy(t, b["images"], pred, [[p] for p in prompts]) == 1.0
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        zero_shot_accuracy(t, b["images"], labels + 5, prompts)
    with pytest.raises(ValueError, match="labels must be ints of shape"):
        zero_shot_accuracy(t, b["images"], labels[:3], prompts)
    with pytest.raises(TypeError, match="class_texts"):
        zero_shot_accuracy(t, b["images"], labels, "a handwritten seven")
    with pytest.raises(ValueError, match=r"images must be \(N, 1, 16, 16\)"):
        zero_shot_accuracy(t, b["images"][:, :, :8], labels, prompts)
    with pytest.raises(TypeError, match="tower must be a UnifiedVisionTower"):
        tower_metrics(object(), b["images"])


def test_tower_data_and_train_recipe_on_digits():
    tok = _word_tokenizer()
    ds = mmu.data.captioned_digits(16, "test")
    t = _tower(text_vocab_size=tok.vocab_size, text_tokenizer=tok)
    data = tower_data(ds, t)
    assert data["images"].shape == (8 * len(ds), 1, 16, 16) and data["text_ids"].shape[0] == 8 * len(ds)
    np.testing.assert_array_equal(data["images"][8], ds.images[1])
    assert data["text_ids"][8 * 7].tolist()[:3] == t.tokenize([ds.all_captions(7)[0]])[0].tolist()[:3]
    one = tower_data(ds, t, all_captions=False)
    assert one["images"].shape[0] == len(ds)
    small = {k: v[:48] for k, v in data.items()}
    hist = train_recipe(t, small, "align_tower", 4, batch_size=16)
    assert set(hist) == {"align", "tower"} and t.stage == "tower" and not t.training
    assert all(not p.requires_grad for p in t.text.parameters())
    assert set(train_recipe(_tower(text_vocab_size=tok.vocab_size), small, "joint", 2, batch_size=16)) == {"joint"}
    with pytest.raises(ValueError, match="recipe must be one of"):
        train_recipe(t, small, "tower_first", 4)
    with pytest.raises(ValueError, match="align_steps"):
        train_recipe(t, small, "align_tower", 4, align_steps=4)
    with pytest.raises(ValueError, match="stage must be one of"):
        train_tower(t, small, "pretrain", 2)
    with pytest.raises(TypeError, match="captioned dataset"):
        tower_data(ds.images, t)

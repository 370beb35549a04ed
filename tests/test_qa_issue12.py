"""Regression tests from the issue-12 QA pass (ASan/UBSan suite + the scenario fuzz of
tests/test_api_fuzz.py over the transformer parts, KV cache, text tokenizer, captioned data,
model registry, config codec and converters). Each test reproduces a defect found then, or pins
down that a failing call leaves its object as it was (cache, tokenizer, model, optimizer)."""
import time

import numpy as np
import pytest

import mmu
import mmu.functional as F
import mmu.nn as nn
from mmu.models.llama import convert_llama_state_dict
from mmu.models.phi import convert_phi_state_dict, load_phi
from mmu.models.vit import convert_vit_state_dict

PHI = dict(model_type="phi", vocab_size=5, hidden_size=4, intermediate_size=6, num_hidden_layers=1,
           num_attention_heads=2)


# ------------------------------------------------------------------ cached attention arguments

def test_sdpa_query_offset_past_int64_means_every_key_visible():
    """query_offset >= 2**64 raised OverflowError from the C argument parser; 2**63 - 1 reached the
    C core, where qpos + i overflows int64 (undefined behaviour). An offset past every key makes
    every key visible to a causal query, exactly as query_offset = S does, values and gradients."""
    rng = np.random.default_rng(0)
    q = mmu.tensor(rng.standard_normal((1, 2, 3, 4)).astype(np.float32)).requires_grad_()
    k = mmu.tensor(rng.standard_normal((1, 2, 5, 4)).astype(np.float32))
    v = mmu.tensor(rng.standard_normal((1, 2, 5, 4)).astype(np.float32))
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, query_offset=5, kv_len=4)
    ref.sum().backward()
    g_ref = q.grad.numpy().copy()
    for off in (2 ** 63 - 1, 2 ** 64, 10 ** 30):
        q.grad = None
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, query_offset=off, kv_len=4)
        np.testing.assert_array_equal(out.numpy(), ref.numpy())
        out.sum().backward()
        np.testing.assert_array_equal(q.grad.numpy(), g_ref)


def test_sdpa_kv_len_past_int64_is_a_value_error():
    """kv_len = 2**64 raised OverflowError ("int too big to convert"), naming nothing."""
    q = k = v = mmu.zeros(1, 1, 2, 4)
    for kv_len in (2 ** 64, 2 ** 70):
        with pytest.raises(ValueError, match="scaled_dot_product_attention: kv_len"):
            F.scaled_dot_product_attention(q, k, v, kv_len=kv_len)


def test_factory_dim_past_int64_beside_a_zero_is_named():
    """mmu.ones(0, 2**70): the product of the sizes is 0, so the size check passed and the C core
    refused the dim as 'full: ...', not naming ones."""
    for fn, name in ((mmu.ones, "ones"), (mmu.zeros, "zeros"), (mmu.randn, "randn")):
        with pytest.raises(ValueError, match=f"^{name}: size .* is too large \\(dimension"):
            fn(0, 2 ** 70)


# ------------------------------------------------------------------ TransformerLM and its cache

def _lm(pos="rope"):
    mmu.manual_seed(0)
    return nn.TransformerLM(11, 8, 2, 2, num_kv_heads=1, pos=pos, max_seq_len=8, hidden_dim=12)


def _filled_cache(model, b, max_len, length):
    cache = model.new_cache(b, max_len)
    rng = np.random.default_rng(1)
    for buf in cache.keys + cache.values:
        buf.numpy()[...] = rng.standard_normal(buf.shape)
    cache.length = length
    return cache, [buf.numpy().copy() for buf in cache.keys + cache.values]


@pytest.mark.parametrize("logits_at", ["first", np.array([[0.5]], np.float32), np.array([[3]]), np.array([1]),
                                       4611686018427387904])
def test_lm_bad_logits_at_does_not_advance_the_cache(logits_at):
    """logits_at was checked after every layer had written into the cache and the cache had
    advanced: the call raised, yet cache.length had moved by L (the next decode step then read
    positions that the caller never kept)."""
    model = _lm()
    cache, before = _filled_cache(model, 1, 6, 2)
    with pytest.raises((ValueError, TypeError), match="TransformerLM: logits_at"), mmu.no_grad():
        model(mmu.tensor(np.array([[1, 2]])), cache=cache, logits_at=logits_at)
    assert cache.length == 2
    for buf, old in zip(cache.keys + cache.values, before):
        np.testing.assert_array_equal(buf.numpy()[:, :, :2], old[:, :, :2])
    with mmu.no_grad():  # the cache still works: the same call with a good logits_at advances it
        model(mmu.tensor(np.array([[1, 2]])), cache=cache, logits_at=np.array([[1]]))
    assert cache.length == 4


@pytest.mark.parametrize("bad", [dict(attention_mask=np.ones((1, 3), bool)),          # S_total is 4
                                 dict(attention_mask=np.ones((1, 4), np.int64)),
                                 dict(attn_mask=mmu.ones(1, 1, 2, 3)),
                                 dict(position_ids=np.array([[-1, 0]])),
                                 dict(input_ids=np.array([[1, 11]]))])                   # id out of range
def test_lm_bad_masks_or_ids_do_not_advance_the_cache(bad):
    """A bad attention_mask / attn_mask / position_ids / input id raises naming TransformerLM and
    leaves the cache's length and its filled positions as they were."""
    model = _lm()
    cache, before = _filled_cache(model, 1, 6, 2)
    kw = dict(input_ids=mmu.tensor(np.array([[1, 2]])))
    kw.update({k: mmu.tensor(v) if isinstance(v, np.ndarray) else v for k, v in bad.items()})
    with pytest.raises((ValueError, TypeError, IndexError), match="TransformerLM"), mmu.no_grad():
        model(cache=cache, **kw)
    assert cache.length == 2
    for buf, old in zip(cache.keys + cache.values, before):
        np.testing.assert_array_equal(buf.numpy()[:, :, :2], old[:, :, :2])


def test_kv_cache_update_that_fails_changes_nothing():
    """A failing update (v of the wrong shape after a good k, an overflowing chunk, a bad layer)
    leaves the length and every buffer, free positions included, as they were."""
    cache = nn.KVCache(2, 1, 2, 4, 3)
    cache.length = 2
    before = [b.numpy().copy() for b in cache.keys + cache.values]
    k = mmu.ones(1, 2, 1, 3)
    for args in ((0, k, mmu.ones(1, 2, 2, 3)), (0, mmu.ones(1, 2, 3, 3), mmu.ones(1, 2, 3, 3)), (2, k, k),
                 (0, k, mmu.ones(1, 2, 1, 3).long())):
        with pytest.raises((ValueError, TypeError, IndexError), match="KVCache"):
            cache.update(*args)
        assert cache.length == 2
        for buf, old in zip(cache.keys + cache.values, before):
            np.testing.assert_array_equal(buf.numpy(), old)
    with pytest.raises(ValueError, match="KVCache.advance"):
        cache.advance(3)
    with pytest.raises(ValueError, match="KVCache.crop"):
        cache.crop(3)
    assert cache.length == 2


# ------------------------------------------------------------------ text tokenizer

def _word_tok():
    return mmu.text.TextTokenizer.train_word_level(["a small red circle", "the digit seven"])


def test_add_special_tokens_error_adds_nothing():
    """A list with one new and one existing token: nothing is added (the check runs first)."""
    tok = _word_tok()
    vocab, size = tok.get_vocab(), tok.vocab_size
    old = tok.id_to_token(5)
    with pytest.raises(ValueError, match=f"add_special_tokens: '{old}' is already"):
        tok.add_special_tokens(["<new>", old])
    assert tok.get_vocab() == vocab and tok.vocab_size == size


def test_add_special_tokens_refuses_a_vocabulary_with_holes_before_adding():
    """A tokenizer.json whose ids have holes (ids 0, 1, 5): the tokenizers library put the new token
    at id 3 (its count of tokens), the check after adding raised RuntimeError, and the token stayed
    in the vocabulary at the wrong id."""
    tokenizers = pytest.importorskip("tokenizers")
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel({"a": 0, "<unk>": 1, "b": 5}, unk_token="<unk>"))
    tok = mmu.text.TextTokenizer(backend, unk_token="<unk>")
    with pytest.raises(ValueError, match="add_special_tokens: .*nothing was added"):
        tok.add_special_tokens(["<x>"])
    assert tok.token_to_id("<x>") is None and tok.vocab_size == 6


def test_text_arguments_that_are_arrays_are_named():
    """padding_side=np.zeros(0) raised NumPy's 'truth value of an empty array is ambiguous'; a
    ragged attention_mask raised NumPy's inhomogeneous-shape error; neither named the method."""
    tok = _word_tok()
    with pytest.raises(ValueError, match="TextTokenizer.encode_batch: padding_side"):
        tok.encode_batch(["a red circle"], padding_side=np.zeros(0))
    with pytest.raises(ValueError, match="TextTokenizer.encode_batch: padding"):
        tok.encode_batch(["a red circle"], padding=np.zeros((2, 3)))
    for n in (2 ** 40, 10 ** 30):  # padding to it allocated (B, n) ids: MemoryError / NumPy's own message
        with pytest.raises(ValueError, match="TextTokenizer.encode_batch: max_length"):
            tok.encode_batch(["a red circle"], padding="max_length", max_length=n)
    with pytest.raises(ValueError, match="TextTokenizer.decode_batch: 'attention_mask'"):
        tok.decode_batch(np.zeros((2, 2), np.int64), [[1, 2], [3]])


# ------------------------------------------------------------------ data, registry, config codec

@pytest.mark.parametrize("fn", [mmu.data.captioned_digits, mmu.data.captioned_shapes, mmu.data.digits])
def test_split_that_is_an_array_is_named(fn):
    """split=ndarray raised NumPy's 'truth value of an array ... is ambiguous'."""
    with pytest.raises(ValueError, match=f"{fn.__name__}: split"):
        fn(split=np.zeros((2, 3)))


def test_register_overwrite_must_be_a_bool():
    """overwrite=<a Tensor> raised 'Boolean value of a tensor ... is ambiguous', naming nothing;
    the registry is unchanged."""
    import mmu.models as models
    before = dict(models._REGISTRY)

    class M(nn.Module):
        pass
    with pytest.raises(TypeError, match="mmu.models.register: overwrite"):
        models.register("fuzz_model", M, overwrite=mmu.ones(2, 3))
    assert models._REGISTRY == before


@pytest.mark.parametrize("cfg, match", [
    ({"class": "abc", "fields": {}}, "mmu.from_config: cannot find the class 'abc'"),
    ({"class": "mmu.nn.mlp.MLP", "args": 0}, "mmu.from_config: a module config must be"),
    ({"class": "mmu.nn.layers.Linear", "args": {"in_features": 1.5, "out_features": 2}},
     "mmu.from_config: Linear: in_features must be an int"),
    ({"class": "mmu.nn.containers.Sequential", "args": {"*args": [{"a": 1}]}}, "mmu.from_config: .*Module"),
])
def test_from_config_errors_name_from_config(cfg, match):
    """mmu.from_config's errors said 'from_pretrained: ...' (the shared loader's name), or only the
    constructor's own words ('dict is not a Module subclass')."""
    with pytest.raises((ValueError, TypeError), match=match):
        mmu.from_config(cfg)


# ------------------------------------------------------------------ converters

def test_converter_config_with_a_huge_layer_count_fails_at_once():
    """num_hidden_layers = 10**5 (10**12 hung) with a one-layer checkpoint listed 16 missing keys per
    absent layer before raising; now the count is named and one absent layer is listed."""
    sd = {"model.layers.0.mlp.fc1.weight": np.zeros((6, 4), np.float32)}
    for fn, cfg in ((convert_phi_state_dict, PHI),
                    (convert_llama_state_dict, dict(model_type="llama", vocab_size=5, hidden_size=4,
                                                    intermediate_size=6, num_attention_heads=2)),
                    (convert_vit_state_dict, dict(model_type="siglip_vision_model", hidden_size=4,
                                                  intermediate_size=6, num_attention_heads=2, image_size=4,
                                                  patch_size=2))):
        for n in (10 ** 5, 10 ** 12):
            t0 = time.perf_counter()
            with pytest.raises(ValueError, match=f"{fn.__name__}: .*\n  the config has {n} layers but") as e:
                fn(sd, dict(cfg, num_hidden_layers=n))
            assert len(str(e.value)) < 20000 and time.perf_counter() - t0 < 5


@pytest.mark.parametrize("fn, cfg, match", [
    (convert_vit_state_dict, dict(model_type=[]), "vit_config_from_hf: model_type"),
    (convert_phi_state_dict, dict(PHI, hidden_act=["gelu"]), "phi_config_from_hf: hidden_act"),
    (convert_phi_state_dict, dict(PHI, resid_pdrop="abc"), "phi_config_from_hf: config\\['resid_pdrop'\\]"),
    (convert_llama_state_dict, dict(model_type="llama", attention_dropout=2.0),
     "llama_config_from_hf: config\\['attention_dropout'\\]"),
])
def test_converter_config_fields_of_the_wrong_type_are_named(fn, cfg, match):
    """An unhashable model_type / hidden_act raised Python's 'unhashable type: list'; a dropout that
    is not a number raised float()'s own message, or (2.0) built a model with dropout 2."""
    with pytest.raises(ValueError, match=match):
        fn({}, cfg)


def test_load_checks_the_checkpoint_before_building_the_model():
    """load_phi built the model (its buffers: here vocab 2**36 x 2**10 floats) before converting the
    checkpoint; a config that does not fit the file must fail on the file, allocating nothing."""
    with pytest.raises(ValueError, match="convert_phi_state_dict: the state dict does not fit"):
        load_phi({"model.embed_tokens.weight": np.zeros((5, 4), np.float32)},
                 dict(PHI, vocab_size=2 ** 36, hidden_size=2 ** 10))


# ------------------------------------------------------------------ Trainer

class _Step(nn.Module):
    def __init__(self):
        super().__init__()
        mmu.manual_seed(0)
        self.lin = nn.Linear(2, 1)
        self.bad = None

    def training_step(self, batch, step):
        loss = self.lin(mmu.tensor(batch.astype(np.float32))).pow(2).mean()
        if self.bad == "no_grad":
            return mmu.tensor(3.0), {}
        if self.bad == "tuple":
            return (loss,)
        if self.bad == "logs":
            return loss, {"term": "abc"}
        if self.bad == "shape":
            return loss * mmu.ones(2), {}
        return loss, {"term": 1.0}


@pytest.mark.parametrize("bad, match", [("no_grad", "Trainer: the loss of model.training_step does not require"),
                                        ("tuple", "Trainer: model.training_step"),
                                        ("logs", "Trainer: the logged term 'term'"),
                                        ("shape", "Trainer: the loss of model.training_step must be a scalar")])
def test_trainer_bad_training_step_leaves_model_and_optimizer(bad, match):
    """A training_step returning a bad value raises naming the Trainer (a loss without grad raised
    'backward: the tensor does not require grad'), and the weights, the optimizer's state and the
    step count are those before the call."""
    from mmu.train import TrainConfig, Trainer
    model = _Step()
    tr = Trainer(model, np.random.default_rng(0).standard_normal((8, 2)),
                 TrainConfig(steps=3, batch_size=2, lr=0.1, log_every=0))
    tr.train_step()
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    opt = repr(tr.optimizer.state_dict())
    model.bad = bad
    with pytest.raises((TypeError, RuntimeError), match=match):
        tr.train_step()
    assert tr.step == 1 and repr(tr.optimizer.state_dict()) == opt
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), weights[k])
    model.bad = None
    tr.train_step()  # and it trains on
    assert tr.step == 2

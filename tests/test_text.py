"""mmu.text.TextTokenizer: trained tokenizers (byte-level BPE, word-level) with special tokens at fixed
ids, tokenizer.json files built here in GPT-2's / Phi-1.5's style and in LLaMA's style (BPE with byte
fallback and an "<s>" template) checked against the tokenizers library itself, batches padded on either
side with their masks, added special tokens, save / load, and the errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mmu

tokenizers = pytest.importorskip("tokenizers")
from mmu.text import TextTokenizer  # noqa: E402

CORPUS = [
    "a small red circle at the top left",
    "a large blue square left of a green triangle",
    "what digit is this? seven",
    "the digit 7, a handwritten seven",
    "is this an odd number? yes",
    "a picture of the number three",
    "what colour is the circle? red",
] * 4
TEXTS = ["a small red circle", "what digit is this?", "", "a large blue square left of a green triangle",
         "héllo wörld, 🙂 naïve café", "  two  spaces\tand a tab\n"]


@pytest.fixture(scope="module")
def word():
    return TextTokenizer.train_word_level(CORPUS)


@pytest.fixture(scope="module")
def bpe():
    return TextTokenizer.train_bpe(CORPUS, 320)


def _gpt2_style(path):
    """A GPT-2 / CodeGen / Phi-1.5 style tokenizer.json: byte-level BPE without a prefix space,
    "<|endoftext|>" added as the last (special) token, a non-special added token of spaces (Phi adds
    runs of spaces), the ByteLevel post-processor."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok.add_tokens([AddedToken("    ", special=False, normalized=False)])
    tok.save(str(path))
    return Tokenizer.from_file(str(path))


def _llama_style(path):
    """A LLaMA(-2) style tokenizer.json: SentencePiece-like BPE ("▁" for spaces, prepended), byte fallback
    to "<0x00>".."<0xFF>" at ids 3..258, "<unk>"=0 / "<s>"=1 / "</s>"=2, a post-processor template
    "<s> $A", and the Replace / ByteFallback / Fuse / Strip decoder."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors, trainers

    def normalizer():
        return normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])

    base = Tokenizer(models.BPE())
    base.normalizer = normalizer()
    base.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=150, show_progress=False))
    learned = json.loads(base.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for t, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizer()
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    tok.save(str(path))
    return Tokenizer.from_file(str(path))


# ---------------------------------------------------------------------------------------------
# trained tokenizers


def test_trained_tokenizers_put_special_tokens_at_fixed_ids(word, bpe):
    for tok in (word, bpe):
        assert [tok.token_to_id(t) for t in ("<pad>", "<bos>", "<eos>", "<unk>")] == [0, 1, 2, 3]
        assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
        assert tok.special_tokens == {"pad": "<pad>", "bos": "<bos>", "eos": "<eos>", "unk": "<unk>"}
        assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    # extra special tokens follow the roles; a role set to None leaves no gap
    t = TextTokenizer.train_word_level(CORPUS, special_tokens=["<image>", "<mask>"], pad_token=None)
    assert [t.token_to_id(s) for s in ("<bos>", "<eos>", "<unk>", "<image>", "<mask>")] == [0, 1, 2, 3, 4]
    assert t.pad_id is None and t.token_to_id("<pad>") is None
    t = TextTokenizer.train_bpe(CORPUS, 300, special_tokens=["<image>"], bos_token="<s>", eos_token="</s>")
    assert [t.token_to_id(s) for s in ("<pad>", "<s>", "</s>", "<unk>", "<image>")] == [0, 1, 2, 3, 4]
    assert t.bos_token == "<s>" and t.eos_id == 2


def test_word_level_vocabulary_round_trip_and_unknown_words(word):
    # every word of the corpus, each punctuation mark on its own, lowercased
    ids = word.encode("What digit is THIS?")
    assert ids.dtype == np.int64 and ids.ndim == 1 and len(ids) == 5 and word.unk_id not in ids
    assert word.decode(ids) == "what digit is this?"
    for text in CORPUS:
        assert word.decode(word.encode(text)) == text
    # whitespace runs collapse; ends stripped
    assert word.decode(word.encode("  a   small\tred\ncircle ")) == "a small red circle"
    ids = word.encode("a purple zebra")
    assert list(ids == word.unk_id) == [False, True, True]
    # unk stands for text: decode keeps it; pad/bos/eos go unless asked for
    assert word.decode(ids).split() == ["a", "<unk>", "<unk>"]
    full = word.encode("a red circle", add_bos=True, add_eos=True)
    assert full[0] == 1 and full[-1] == 2 and np.array_equal(full[1:-1], word.encode("a red circle"))
    assert word.decode(full) == "a red circle"
    assert "<bos>" in word.decode(full, skip_special_tokens=False)
    # the vocabulary: 4 specials + the corpus's distinct words and marks
    words = {w for t in CORPUS for w in t.replace("?", " ?").replace(",", " ,").split()}
    assert word.vocab_size == len(word) == 4 + len(words)
    capped = TextTokenizer.train_word_level(CORPUS, vocab_size=10)
    assert capped.vocab_size == 10
    assert TextTokenizer.train_word_level(["A B", "a b"], lowercase=False).vocab_size == 4 + 4


def test_byte_level_bpe_round_trips_any_text(bpe):
    for text in TEXTS + CORPUS:
        ids = bpe.encode(text)
        assert ids.dtype == np.int64 and (ids >= 4).all()     # bytes and merges only: no unk ever
        assert bpe.decode(ids) == text
    assert bpe.vocab_size == 320
    # merges learned from the corpus make its words short
    assert len(bpe.encode("a small red circle")) < len("a small red circle") / 2


# ---------------------------------------------------------------------------------------------
# batches


def test_encode_batch_pads_right_and_left_with_masks(word, bpe):
    for tok in (word, bpe):
        rows = [tok.encode(t, add_bos=True, add_eos=True) for t in TEXTS]
        width = max(len(r) for r in rows)
        for side in ("right", "left"):
            ids, mask = tok.encode_batch(TEXTS, add_bos=True, add_eos=True, padding_side=side)
            assert ids.dtype == np.int64 and mask.dtype == bool and ids.shape == mask.shape == (len(TEXTS), width)
            for i, r in enumerate(rows):
                sl = slice(0, len(r)) if side == "right" else slice(width - len(r), width)
                assert np.array_equal(ids[i, sl], r) and mask[i, sl].all()
                assert mask[i].sum() == len(r) and (ids[i][~mask[i]] == tok.pad_id).all()
            if side == "left":
                assert mask[:, -1].all()        # generation appends after the last column
            assert tok.decode_batch(ids) == [tok.decode(r) for r in rows]
            assert tok.decode_batch(ids, attention_mask=mask, skip_special_tokens=False) == \
                [tok.decode(r, skip_special_tokens=False) for r in rows]
    ids, mask = word.encode_batch(["a red circle", "red"], padding="max_length", max_length=6, padding_side="left")
    assert ids.tolist() == [[0, 0, 0] + word.encode("a red circle").tolist(), [0] * 5 + word.encode("red").tolist()]
    assert mask.sum(1).tolist() == [3, 1]


def test_encode_batch_truncation_and_max_length(word):
    text = "a large blue square left of a green triangle"      # 9 words
    ids, mask = word.encode_batch([text, "red"], max_length=5, truncation=True, add_bos=True, add_eos=True)
    assert ids.shape == (2, 5)
    assert ids[0].tolist() == [1] + word.encode(text).tolist()[:3] + [2]   # bos, 3 words, eos
    assert mask.sum(1).tolist() == [5, 3]
    with pytest.raises(ValueError, match=r"texts\[0\] encodes to 9 ids, more than max_length 5"):
        word.encode_batch([text], max_length=5)
    with pytest.raises(ValueError, match="needs max_length"):
        word.encode_batch([text], padding="max_length")
    with pytest.raises(ValueError, match="needs max_length"):
        word.encode_batch([text], truncation=True)
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        word.encode_batch([text], max_length=1, add_bos=True, add_eos=True, truncation=True)


def test_batch_errors(word):
    with pytest.raises(ValueError, match="padding_side must be 'left' or 'right'"):
        word.encode_batch(["a"], padding_side="middle")
    with pytest.raises(ValueError, match="padding must be 'longest' or 'max_length'"):
        word.encode_batch(["a"], padding=True)
    with pytest.raises(TypeError, match=r"encode_batch: texts must be a list"):
        word.encode_batch("a red circle")
    with pytest.raises(TypeError, match=r"texts\[1\] must be a str"):
        word.encode_batch(["a", 3])
    with pytest.raises(ValueError, match="texts is empty"):
        word.encode_batch([])
    with pytest.raises(ValueError, match=r"decode_batch: attention_mask has shape \(2, 2\), ids \(2, 3\)"):
        word.decode_batch(np.zeros((2, 3), np.int64), attention_mask=np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="ids must be 2-D"):
        word.decode_batch([1, 2])
    t = TextTokenizer.train_word_level(CORPUS, pad_token=None)
    ids, mask = t.encode_batch(["a red", "a red"])           # no padding needed: fine
    assert mask.all()
    with pytest.raises(ValueError, match="needs padding but the tokenizer has no pad token"):
        t.encode_batch(["a red", "red"])
    t.pad_token = t.eos_token                                # Phi's usual choice
    ids, mask = t.encode_batch(["a red", "red"], padding_side="left")
    assert ids[1, 0] == t.eos_id and mask.tolist() == [[True, True], [False, True]]


# ---------------------------------------------------------------------------------------------
# special tokens


def test_add_special_tokens_appends_ids_after_the_vocabulary(bpe):
    tok = TextTokenizer.train_bpe(CORPUS, 320)
    n = tok.vocab_size
    new = ["<|soi|>", "<|eoi|>", "<|mmu|>"]
    assert tok.add_special_tokens(new) == [n, n + 1, n + 2]
    assert tok.vocab_size == len(tok) == n + 3 and [tok.id_to_token(n + i) for i in range(3)] == new
    # matched whole inside text, skipped by decode
    ids = tok.encode("<|soi|>a red circle<|eoi|>")
    assert ids[0] == n and ids[-1] == n + 1 and np.array_equal(ids[1:-1], tok.encode("a red circle"))
    assert tok.decode(ids) == "a red circle"
    assert tok.decode(ids, skip_special_tokens=False) == "<|soi|>a red circle<|eoi|>"
    assert set(tok.all_special_ids) == {0, 1, 2, 3, n, n + 1, n + 2}
    # refused whole: nothing changes
    for bad, msg in ((["<x>", "<pad>"], "'<pad>' is already in the vocabulary at id 0"),
                     (["<x>", "<x>"], "'<x>' is listed twice"), ([], "tokens is empty"), ([""], "is empty")):
        with pytest.raises(ValueError, match=msg):
            tok.add_special_tokens(bad)
        assert tok.vocab_size == n + 3 and tok.token_to_id("<x>") is None
    with pytest.raises(TypeError, match="tokens must be a list of str"):
        tok.add_special_tokens("<x>")
    # a role may name an added token
    tok.pad_token = "<|mmu|>"
    assert tok.pad_id == n + 2
    assert bpe.vocab_size == 320         # a separate tokenizer is untouched


def test_roles_must_name_tokens_of_the_vocabulary(word):
    t = TextTokenizer.train_word_level(CORPUS)
    with pytest.raises(ValueError, match=r"pad_token '<nope>' is not in the vocabulary"):
        t.pad_token = "<nope>"
    assert t.pad_token == "<pad>"
    with pytest.raises(TypeError, match="bos_token must be a str"):
        t.bos_token = 1
    t.eos_token = None
    assert t.eos_id is None
    with pytest.raises(ValueError, match="add_eos=True but the tokenizer has no eos token"):
        t.encode("a", add_eos=True)
    with pytest.raises(ValueError, match="TextTokenizer: unk_token '<u>' is not in the vocabulary"):
        TextTokenizer(word.backend, unk_token="<u>")
    with pytest.raises(TypeError, match="must be a tokenizers.Tokenizer"):
        TextTokenizer("tokenizer.json")


# ---------------------------------------------------------------------------------------------
# files


def test_gpt2_style_file_matches_the_library(tmp_path):
    lib = _gpt2_style(tmp_path / "tokenizer.json")
    tok = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    eot = lib.token_to_id("<|endoftext|>")
    assert eot == lib.get_vocab_size() - 2 and tok.vocab_size == lib.get_vocab_size()
    # Phi-1.5's roles: "<|endoftext|>" is bos and eos; no pad, no unk
    assert tok.special_tokens == {"pad": None, "bos": "<|endoftext|>", "eos": "<|endoftext|>", "unk": None}
    for text in TEXTS + ["code:    indented<|endoftext|>next"]:
        ids = tok.encode(text)
        assert ids.tolist() == lib.encode(text).ids
        assert tok.decode(ids) == lib.decode(ids.tolist(), skip_special_tokens=True)
        assert tok.decode(ids, skip_special_tokens=False) == lib.decode(ids.tolist(), skip_special_tokens=False)
    assert tok.decode(tok.encode(TEXTS[4])) == TEXTS[4]
    assert tok.encode("a", add_eos=True).tolist() == lib.encode("a").ids + [eot]
    with pytest.raises(ValueError, match="no pad token"):
        tok.encode_batch(["a", "a red"])
    tok.pad_token = tok.eos_token
    ids, mask = tok.encode_batch(["a", "a red"], padding_side="left")
    assert ids[0, 0] == eot and not mask[0, 0]
    # roles given explicitly win over the guesses
    t2 = TextTokenizer.from_file(tmp_path / "tokenizer.json", bos_token=None, pad_token="<|endoftext|>")
    assert t2.bos_id is None and t2.pad_id == eot and t2.eos_id == eot


def test_llama_style_file_with_byte_fallback_matches_the_library(tmp_path):
    lib = _llama_style(tmp_path / "tokenizer.json")
    tok = TextTokenizer.from_file(tmp_path / "tokenizer.json")
    assert tok.special_tokens == {"pad": None, "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
    assert (tok.bos_id, tok.eos_id, tok.unk_id) == (1, 2, 0)
    byte_ids = set(range(3, 259))
    for text in TEXTS[:2] + TEXTS[3:5] + CORPUS[:3]:
        ids = tok.encode(text, add_bos=True)
        # the library's encode runs the "<s> $A" template; mmu's adds bos only when asked
        assert ids.tolist() == lib.encode(text).ids
        assert tok.encode(text).tolist() == lib.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == lib.decode(ids.tolist(), skip_special_tokens=True) == text
    # characters outside the vocabulary fall back to their UTF-8 bytes, and come back whole
    ids = tok.encode("🙂")
    assert [tok.id_to_token(int(i)) for i in ids if i in byte_ids] == ["<0xF0>", "<0x9F>", "<0x99>", "<0x82>"]
    assert tok.decode(ids) == "🙂"


def test_save_and_from_pretrained_keep_ids_and_roles(tmp_path, bpe):
    tok = TextTokenizer.train_bpe(CORPUS, 300, special_tokens=["<image>"])
    tok.add_special_tokens(["<soi>", "<eoi>"])
    tok.eos_token = "<eoi>"
    tok.unk_token = None
    tok.save(tmp_path / "tok")
    assert sorted(os.listdir(tmp_path / "tok")) == ["mmu_text_tokenizer.json", "tokenizer.json"]
    back = TextTokenizer.from_pretrained(tmp_path / "tok")
    assert back.special_tokens == tok.special_tokens == {"pad": "<pad>", "bos": "<bos>", "eos": "<eoi>",
                                                         "unk": None}
    assert back.vocab_size == tok.vocab_size and back.get_vocab() == tok.get_vocab()
    for text in TEXTS + ["<soi><image><eoi>"]:
        assert np.array_equal(back.encode(text, add_bos=True, add_eos=True),
                              tok.encode(text, add_bos=True, add_eos=True))
    a, b = back.encode_batch(TEXTS, padding_side="left"), tok.encode_batch(TEXTS, padding_side="left")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # saving again over it works (atomic replace); a word-level tokenizer round-trips too
    word = TextTokenizer.train_word_level(CORPUS)
    word.save(tmp_path / "tok")
    back = TextTokenizer.from_pretrained(str(tmp_path / "tok"))
    assert back.decode(back.encode("what digit is this?")) == "what digit is this?"
    assert back.get_vocab() == word.get_vocab()


def test_from_pretrained_reads_a_hugging_face_directory(tmp_path):
    _gpt2_style(tmp_path / "tokenizer.json")
    (tmp_path / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": {"content": "<|endoftext|>", "lstrip": False}, "eos_token": "<|endoftext|>",
         "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    tok = TextTokenizer.from_pretrained(tmp_path)
    assert set(tok.special_tokens.values()) == {"<|endoftext|>"}


def test_file_errors_and_the_file_settings_mmu_overrides(tmp_path, word):
    with pytest.raises(FileNotFoundError, match="from_file: no tokenizer file"):
        TextTokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="from_file: .*bad.json.* is not a tokenizer.json"):
        TextTokenizer.from_file(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        TextTokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="holds no tokenizer.json"):
        TextTokenizer.from_pretrained(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="exists and is not a directory"):
        word.save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "x"
    word.save(tmp_path / "w")
    (tmp_path / "w" / "mmu_text_tokenizer.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="is not an mmu text tokenizer file"):
        TextTokenizer.from_pretrained(tmp_path / "w")
    # a file that pads and truncates by itself: mmu's batches ignore that
    lib = tokenizers.Tokenizer.from_str(word.backend.to_str())
    lib.enable_padding(pad_id=0, pad_token="<pad>", length=12)
    lib.enable_truncation(max_length=2)
    lib.save(str(tmp_path / "padded.json"))
    tok = TextTokenizer.from_file(tmp_path / "padded.json")
    ids, mask = tok.encode_batch(["a small red circle", "red"])
    assert ids.shape == (2, 4) and mask.sum() == 5


def test_argument_errors(word):
    for fn, args, exc, msg in [
        (TextTokenizer.train_bpe, ([], 300), ValueError, "train_bpe: corpus is empty"),
        (TextTokenizer.train_bpe, (["  ", ""], 300), ValueError, "corpus is empty"),
        (TextTokenizer.train_bpe, ("a red circle", 300), TypeError, "not a single str"),
        (TextTokenizer.train_bpe, (["a", 1], 300), TypeError, r"corpus\[1\] must be a str"),
        (TextTokenizer.train_bpe, (CORPUS, 200), ValueError, "vocab_size 200 is below the 4 special tokens"),
        (TextTokenizer.train_bpe, (CORPUS, 300.0), TypeError, "vocab_size must be an int"),
        (TextTokenizer.train_word_level, (5,), TypeError, "corpus must be an iterable of str"),
        (TextTokenizer.train_word_level, (CORPUS, 4), ValueError, "vocab_size must be >= 5"),
    ]:
        with pytest.raises(exc, match=msg):
            fn(*args)
    with pytest.raises(ValueError, match="needs an unk_token"):
        TextTokenizer.train_word_level(CORPUS, unk_token=None)
    with pytest.raises(ValueError, match="special token '<pad>' is listed twice"):
        TextTokenizer.train_word_level(CORPUS, special_tokens=["<pad>"])
    with pytest.raises(ValueError, match="bos_token '<pad>' is also the token of another role"):
        TextTokenizer.train_word_level(CORPUS, bos_token="<pad>")
    with pytest.raises(TypeError, match="encode: text must be a str"):
        word.encode(["a"])
    with pytest.raises(TypeError, match="add_bos must be a bool"):
        word.encode("a", add_bos="yes")
    with pytest.raises(ValueError, match=r"decode: id 9999 is outside the vocabulary \[0, "):
        word.decode([1, 9999])
    with pytest.raises(ValueError, match="decode: id -1 is outside"):
        word.decode(np.array([-1]))
    with pytest.raises(TypeError, match="decode: ids must hold ints"):
        word.decode([0.5])
    with pytest.raises(ValueError, match="decode: ids must be 1-D"):
        word.decode([[1, 2]])
    with pytest.raises(IndexError, match="id_to_token: id 9999 is not in the vocabulary"):
        word.id_to_token(9999)
    with pytest.raises(TypeError, match="token_to_id: token must be a str"):
        word.token_to_id(3)
    assert word.token_to_id("zebra") is None and word.decode([]) == ""


def test_decode_takes_mmu_tensors(word):
    ids = word.encode("a small red circle", add_bos=True)
    assert word.decode(mmu.tensor(ids)) == "a small red circle"
    batch, mask = word.encode_batch(["a red circle", "red"], padding_side="left")
    assert word.decode_batch(mmu.tensor(batch), attention_mask=mmu.tensor(mask)) == ["a red circle", "red"]


def test_import_mmu_does_not_import_tokenizers():
    code = "import sys, mmu, mmu.text; print('tokenizers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(mmu.__file__)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

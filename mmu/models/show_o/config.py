"""ShowOConfig: the fields of Show-o (mmu.models.show_o.ShowO), named as Show-o's configs name them
(configs/showo_*.yaml, model.showo: vocab_size, llm_vocab_size, codebook_size, num_vq_tokens,
num_new_special_tokens; training: t2i_coeff, lm_coeff, mmu_coeff, cond_dropout_prob,
min_masking_rate; dataset.preprocessing.max_seq_length -> max_text_len), JSON-serialisable so
save_pretrained writes them and mmu.get_config / mmu.from_config round-trip them, the image
tokenizer's config nested inside.

The unified vocabulary (Show-o's, configs/showo_demo.yaml with Phi-1.5: 50295 + 10 + 8192 + 1 = 58498):

    [0, llm_vocab_size)                       text ids (the text tokenizer's; [SOT] / [EOT] are two of
                                              them: Show-o uses Phi's bos / eos, both <|endoftext|> 50256)
    llm_vocab_size + k, k < 10                the new special tokens in Show-o's order (SPECIAL_TOKENS):
                                              [PAD], <|soi|>, <|eoi|>, <|sov|>, <|eov|>, <|t2i|>, <|mmu|>,
                                              <|t2v|>, <|v2v|>, <|lvg|>  (UniversalPrompting adds the pad
                                              token first, then the nine task/boundary tokens)
    llm_vocab_size + 10 + c, c < codebook_size  image code c (MAGVIT-v2's 8192 LFQ codes in Show-o)
    vocab_size - 1                            [MASK] (Showo.__init__: mask_token_id = vocab_size - 1)
"""
import math
from dataclasses import dataclass

from ..._args import is_int
from ...tokenizers.config import _Config

__all__ = ["ShowOConfig", "SPECIAL_TOKENS", "default_image_tokenizer"]

# Show-o's new tokens in id order (training/prompting_utils.py, UniversalPrompting.__init__:
# add_special_tokens({'pad_token': '[PAD]'}) then add_tokens(special_tokens))
SPECIAL_TOKENS = ("[PAD]", "<|soi|>", "<|eoi|>", "<|sov|>", "<|eov|>", "<|t2i|>", "<|mmu|>", "<|t2v|>", "<|v2v|>",
                  "<|lvg|>")


def default_image_tokenizer(codebook_size=256, in_channels=1, resolution=16, downsample=4):
    """The get_config form of the default image tokenizer: a VQ-VAE with an LFQ quantizer (MAGVIT-v2's
    quantizer kind) of codebook_size = 2^bits codes, embed_dim = bits, on in_channels x resolution^2
    images, (resolution / downsample)^2 tokens per image (16 for the 16-px captioned digits)."""
    bits = int(round(math.log2(codebook_size))) if is_int(codebook_size) and codebook_size > 1 else 0
    if not is_int(codebook_size) or codebook_size < 2 or 2 ** bits != codebook_size:
        raise ValueError(f"default_image_tokenizer: codebook_size must be a power of 2 >= 2 (LFQ), got {codebook_size!r}")
    fields_ = dict(in_channels=int(in_channels), hidden_channels=32, res_channels=16, num_res_blocks=1,
                   downsample=int(downsample), embed_dim=bits, codebook_size=int(codebook_size), quantizer="lfq",
                   quantizer_kwargs={}, resolution=int(resolution), beta=0.25)
    return {"class": "mmu.tokenizers.vqvae.VQVAE", "args": {"config": None, "**fields_": fields_}}


@dataclass
class ShowOConfig(_Config):
    """Hyperparameters of mmu.models.show_o.ShowO: a Phi-style transformer with QK LayerNorm over the
    unified vocabulary (module docstring), its prompt lengths, its training terms and its frozen image
    tokenizer.

    Vocabulary (Show-o's names): llm_vocab_size text ids, num_new_special_tokens (10, Show-o's) special
    ids, codebook_size image codes, one [MASK]; vocab_size must be their sum (None: computed).
    sot_token_id / eot_token_id: the text ids that open and close a text ([SOT] / [EOT]: the text
    tokenizer's bos / eos; Show-o: both Phi's <|endoftext|>, 50256). num_vq_tokens: image tokens per
    image (the image tokenizer's tokens_per_image; Show-o: 256 = 16 x 16).
    max_text_len: Show-o's dataset.preprocessing.max_seq_length: the [SOT] text [EOT] positions of a
    prompt (a T2I prompt is [PAD]... [T2I] + these, left padded to max_text_len + 1; an MMU text is
    right padded to max_text_len).
    Transformer (Phi-1.5's layout, as mmu.models.phi.phi_config_from_hf produces it with qk_layernorm):
    dim, num_layers, num_heads, hidden_dim (None: 4 dim), norm_eps, rotary_fraction (Phi's
    partial_rotary_factor 0.5), rope_base, max_seq_len (positions; None: the longest prompt), dropout,
    attn_dropout, init_std.
    Training (Show-o's training: section): t2i_coeff 1.0, lm_coeff 0.1, mmu_coeff 1.0 weigh the three
    losses; cond_dropout_prob 0.1: a T2I caption becomes the empty prompt; min_masking_rate 0.0: the
    floor of the cosine mask ratio.
    image_tokenizer: the tokenizer in mmu.get_config form ({"class", "args"}: any mmu tokenizer);
    None is default_image_tokenizer(codebook_size) (a VQ-VAE with LFQ on 16-px single-channel images).
    """

    llm_vocab_size: int = 64
    codebook_size: int = 256
    num_vq_tokens: int = 16
    num_new_special_tokens: int = 10
    vocab_size: "int | None" = None
    sot_token_id: int = 1
    eot_token_id: int = 2
    max_text_len: int = 16
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    hidden_dim: "int | None" = None
    norm_eps: float = 1e-5
    rotary_fraction: float = 0.5
    rope_base: float = 10000.0
    max_seq_len: "int | None" = None
    dropout: float = 0.0
    attn_dropout: float = 0.0
    init_std: float = 0.02
    t2i_coeff: float = 1.0
    lm_coeff: float = 0.1
    mmu_coeff: float = 1.0
    cond_dropout_prob: float = 0.1
    min_masking_rate: float = 0.0
    image_tokenizer: "dict | None" = None

    def __post_init__(self):
        super().__post_init__()  # tuples -> lists, so a config equals its JSON round trip
        self.validate()

    def validate(self):
        """Checks every field (TypeError / ValueError naming it and its value), fills vocab_size,
        max_seq_len and image_tokenizer when None. Returns self."""
        bad = self._field_error
        self._check_ints((("llm_vocab_size", 1), ("codebook_size", 2), ("num_vq_tokens", 1),
                         ("num_new_special_tokens", len(SPECIAL_TOKENS)), ("max_text_len", 2), ("dim", 1),
                         ("num_layers", 1), ("num_heads", 1)))
        total = self.llm_vocab_size + self.num_new_special_tokens + self.codebook_size + 1
        if self.vocab_size is None:
            self.vocab_size = total
        elif not is_int(self.vocab_size):
            bad("vocab_size", "None or an int", TypeError)
        elif self.vocab_size != total:
            raise ValueError(f"ShowOConfig: vocab_size {self.vocab_size} must be llm_vocab_size + "
                             f"num_new_special_tokens + codebook_size + 1 ([MASK]) = {self.llm_vocab_size} + "
                             f"{self.num_new_special_tokens} + {self.codebook_size} + 1 = {total}")
        for name in ("sot_token_id", "eot_token_id"):
            v = getattr(self, name)
            if not is_int(v):
                bad(name, f"an int in [0, llm_vocab_size={self.llm_vocab_size})", TypeError)
            if not 0 <= v < self.llm_vocab_size:
                bad(name, f"a text id in [0, llm_vocab_size={self.llm_vocab_size})")
        if self.hidden_dim is not None and (not is_int(self.hidden_dim) or self.hidden_dim < 1):
            bad("hidden_dim", "None or an int >= 1", TypeError if not is_int(self.hidden_dim) else ValueError)
        if self.dim % self.num_heads:
            raise ValueError(f"ShowOConfig: dim ({self.dim}) must be a multiple of num_heads ({self.num_heads})")
        longest = self.prompt_len("t2i")
        if self.max_seq_len is None:
            self.max_seq_len = longest
        elif not is_int(self.max_seq_len):
            bad("max_seq_len", "None or an int", TypeError)
        elif self.max_seq_len < longest:
            raise ValueError(f"ShowOConfig: max_seq_len {self.max_seq_len} is shorter than a T2I / MMU prompt "
                             f"({longest} = max_text_len + 1 + num_vq_tokens + 2)")
        self._check_reals((("norm_eps", 0.0, None, False), ("rotary_fraction", 0.0, 1.0, True),
                          ("rope_base", 1.0, None, False), ("dropout", 0.0, 1.0, True),
                          ("attn_dropout", 0.0, 1.0, True), ("init_std", 0.0, None, True),
                          ("t2i_coeff", 0.0, None, True), ("lm_coeff", 0.0, None, True),
                          ("mmu_coeff", 0.0, None, True), ("cond_dropout_prob", 0.0, 1.0, True),
                          ("min_masking_rate", 0.0, 1.0, True)))
        if self.dropout >= 1.0 or self.attn_dropout >= 1.0:
            raise ValueError(f"ShowOConfig: dropout and attn_dropout must be < 1, got {self.dropout}, "
                             f"{self.attn_dropout}")
        if self.image_tokenizer is None:
            self.image_tokenizer = default_image_tokenizer(self.codebook_size)
        elif not isinstance(self.image_tokenizer, dict) or "class" not in self.image_tokenizer or \
                "args" not in self.image_tokenizer:
            bad("image_tokenizer", "None or a tokenizer's mmu.get_config dict ({'class', 'args'})", TypeError)
        return self

    # ------------------------------------------------------------------ vocabulary
    @property
    def pad_token_id(self):
        """[PAD]: llm_vocab_size (the first new token)."""
        return self.llm_vocab_size + SPECIAL_TOKENS.index("[PAD]")

    def special_token_id(self, token):
        """The id of one of SPECIAL_TOKENS ('[PAD]', '<|soi|>', ...), or of '<|sot|>' / '<|eot|>' (text ids)."""
        if token == "<|sot|>":
            return self.sot_token_id
        if token == "<|eot|>":
            return self.eot_token_id
        if token not in SPECIAL_TOKENS:
            raise KeyError(f"ShowOConfig.special_token_id: {token!r} is not one of {SPECIAL_TOKENS + ('<|sot|>', '<|eot|>')}")
        return self.llm_vocab_size + SPECIAL_TOKENS.index(token)

    @property
    def image_token_offset(self):
        """The id of image code 0: llm_vocab_size + num_new_special_tokens (Show-o: len(text tokenizer))."""
        return self.llm_vocab_size + self.num_new_special_tokens

    @property
    def mask_token_id(self):
        """[MASK]: vocab_size - 1."""
        return self.vocab_size - 1

    def prompt_len(self, task):
        """The length of a 't2i' sequence (max_text_len + 1 + num_vq_tokens + 2) or an 'mmu' one
        (3 + num_vq_tokens + max_text_len): the same, as in Show-o."""
        if task not in ("t2i", "mmu"):
            raise ValueError(f"ShowOConfig.prompt_len: task must be 't2i' or 'mmu', got {task!r}")
        return self.max_text_len + 3 + self.num_vq_tokens

    # ------------------------------------------------------------------ transformer
    def lm_kwargs(self):
        """The keyword arguments of mmu.nn.TransformerLM: what mmu.models.phi.phi_config_from_hf gives
        for the PhiConfig with these sizes and qk_layernorm=True (parallel residual, LayerNorm, biases,
        tanh GELU, partial RoPE, QK LayerNorm per head, untied lm_head with a bias)."""
        from ..phi import phi_config_from_hf
        hf = {"model_type": "phi", "vocab_size": self.vocab_size, "hidden_size": self.dim,
              "intermediate_size": self.hidden_dim if self.hidden_dim is not None else 4 * self.dim,
              "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
              "hidden_act": "gelu_new", "max_position_embeddings": self.max_seq_len, "layer_norm_eps": self.norm_eps,
              "partial_rotary_factor": self.rotary_fraction, "rope_theta": self.rope_base, "qk_layernorm": True,
              "resid_pdrop": self.dropout, "attention_dropout": self.attn_dropout, "tie_word_embeddings": False}
        kw = phi_config_from_hf(hf)
        kw["init_std"] = self.init_std
        return kw


"""GPTConfig: the fields of a decoder-only language model (mmu.models.gpt.GPT), JSON-serialisable so
save_pretrained writes them into config.json, the Trainer's checkpoints record them and
mmu.get_config / mmu.from_config round-trip them."""
from dataclasses import dataclass

from ..._args import is_int
from ...tokenizers.config import _Config

__all__ = ["GPTConfig"]

_ACTIVATIONS = ("gelu", "gelu_tanh", "relu", "silu", "swiglu")


@dataclass
class GPTConfig(_Config):
    """Hyperparameters of mmu.models.gpt.GPT (a mmu.nn.TransformerLM underneath).

    vocab_size: token ids are in [0, vocab_size) (a text tokenizer's vocab_size).
    dim, num_layers, num_heads: width, depth and attention heads; num_kv_heads: grouped-query heads
        (None: num_heads; 1: multi-query); head_dim: None is dim / num_heads.
    mlp_ratio: the MLP's hidden width is int(mlp_ratio * dim); activation: 'gelu', 'gelu_tanh' (GPT-2's
        gelu_new), 'relu', 'silu' or 'swiglu' (LLaMA: a gated MLP).
    norm: 'layernorm' or 'rmsnorm' (eps norm_eps); residual: 'sequential' (GPT-2, LLaMA) or 'parallel'
        (GPT-J, Phi: one norm feeds attention and MLP side by side); bias: biases of every Linear and
        of the QKV projection; qk_norm: None, 'layernorm' or 'rmsnorm' over each head's queries/keys.
    pos: 'rope' (rotary positions on rotary_fraction of each head, base rope_base: 1.0 LLaMA, 0.5 Phi)
        or 'learned' (GPT-2: a table of max_seq_len positions); max_seq_len: the longest sequence
        (prompt + generated tokens) the model accepts.
    dropout: on the embeddings and the residual branches while training; attn_dropout: on the
        attention weights. tie_embeddings: the head reuses the token embedding (GPT-2); init_std: the
        N(0, init_std) of every weight at construction (GPT-2's 0.02).
    """

    vocab_size: int = 256
    dim: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: "int | None" = None
    head_dim: "int | None" = None
    mlp_ratio: float = 4.0
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    residual: str = "sequential"
    bias: bool = True
    qk_norm: "str | None" = None
    pos: str = "rope"
    rotary_fraction: float = 1.0
    rope_base: float = 10000.0
    max_seq_len: int = 256
    dropout: float = 0.0
    attn_dropout: float = 0.0
    tie_embeddings: bool = True
    init_std: float = 0.02

    def __post_init__(self):
        super().__post_init__()  # tuples -> lists, so a config equals its JSON round trip
        self.validate()

    def validate(self):
        """Checks every field; TypeError / ValueError naming the field and its value. Returns self."""
        bad = self._field_error
        self._check_ints((("vocab_size", 1), ("dim", 1), ("num_layers", 1), ("num_heads", 1), ("max_seq_len", 2)))
        for name in ("num_kv_heads", "head_dim"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 1):
                bad(name, "None or an int >= 1", TypeError if not is_int(v) else ValueError)
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"GPTConfig: num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.head_dim is None and self.dim % self.num_heads:
            raise ValueError(f"GPTConfig: dim ({self.dim}) must be a multiple of num_heads ({self.num_heads}) "
                             "unless head_dim is given")
        self._check_reals((("mlp_ratio", 0.0, None, False), ("norm_eps", 0.0, None, False),
                          ("rotary_fraction", 0.0, 1.0, True), ("rope_base", 1.0, None, False),
                          ("dropout", 0.0, 1.0, True), ("attn_dropout", 0.0, 1.0, True),
                          ("init_std", 0.0, None, True)))
        if self.dropout >= 1.0 or self.attn_dropout >= 1.0:
            raise ValueError(f"GPTConfig: dropout and attn_dropout must be < 1, got {self.dropout}, "
                             f"{self.attn_dropout}")
        for name, options in (("activation", _ACTIVATIONS), ("norm", ("layernorm", "rmsnorm")),
                              ("residual", ("sequential", "parallel")), ("pos", ("rope", "learned"))):
            if getattr(self, name) not in options:
                bad(name, "one of " + ", ".join(repr(o) for o in options))
        if self.qk_norm not in (None, "layernorm", "rmsnorm"):
            bad("qk_norm", "None, 'layernorm' or 'rmsnorm'")
        for name in ("bias", "tie_embeddings"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "a bool", TypeError)
        if int(self.mlp_ratio * self.dim) < 1:
            raise ValueError(f"GPTConfig: int(mlp_ratio * dim) = {int(self.mlp_ratio * self.dim)} gives an "
                             "empty MLP")
        return self

    @property
    def hidden_dim(self):
        """The MLP's hidden width, int(mlp_ratio * dim)."""
        return int(self.mlp_ratio * self.dim)


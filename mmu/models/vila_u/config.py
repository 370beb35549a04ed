"""VILAUConfig: the fields of VILA-U's autoregressive model (mmu.models.vila_u.VILAU), JSON-serialisable so
save_pretrained writes them and mmu.get_config / mmu.from_config round-trip them, the vision tower's config
nested inside as a dict (UnifiedVisionTowerConfig.to_dict()).

The vocabulary (mit-han-lab/vila-u: the LLM's tokenizer gets <im_start>, <im_end>, <vi_start>, <vi_end> as
its last four tokens, VILAULlamaModel.forward finds them as vocab_size - 4 .. vocab_size - 1):

    [0, llm_vocab_size)        text ids (the text tokenizer's; sot_token_id / eot_token_id open and close a text)
    llm_vocab_size + 0 .. 3    [SOI], [EOI], [SOV], [EOV]; vocab_size = llm_vocab_size + 4

No [PAD] id: padded positions are hidden by the attention mask and never scored (their input id is
eot_token_id). Image codes are NOT vocabulary ids: a visual position's input is mm_projector(sum_d e_d(code_d))
and its D codes come from the depth transformer (model.py).
"""
from dataclasses import dataclass

from ..._args import is_int
from ...tokenizers.config import _Config

__all__ = ["VILAUConfig", "VISUAL_TOKENS", "MM_PROJECTORS", "tower_geometry"]

# VILA-U's added tokens in id order (vila_u/constants.py names; vila_u_arch.initialize_vision_tokenizer adds them)
VISUAL_TOKENS = ("[SOI]", "[EOI]", "[SOV]", "[EOV]")
# VILA-U's multimodal_projector/base_projector.py types that mmu builds
MM_PROJECTORS = ("linear", "mlp2x_gelu")


@dataclass
class VILAUConfig(_Config):
    """Hyperparameters of mmu.models.vila_u.VILAU.

    Vocabulary: llm_vocab_size text ids then [SOI], [EOI], [SOV], [EOV] (module docstring); sot_token_id /
    eot_token_id: text ids that open and close a text (the text tokenizer's bos / eos).
    LLM (LLaMA-2's layout, VILA-U's language model: RMSNorm, SwiGLU, RoPE, no biases): dim, num_layers,
    num_heads, num_kv_heads (None: num_heads), hidden_dim (the SwiGLU width; None: 4 dim), norm_eps
    (LLaMA-2's rms_norm_eps 1e-5), rope_base, max_seq_len (the longest sequence forward accepts), init_std,
    tie_embeddings.
    mm_projector: VILA-U's mm_projector_type, 'linear' or 'mlp2x_gelu' (Linear, exact GELU, Linear): the
    codebook_dim -> dim map of a visual position's summed code embeddings.
    Depth transformer (VILA-U's RQTransformer): depth_dim (its embed_dim), depth_layers (head n_layer),
    depth_heads (n_head), depth_dropout (its AttentionBlockConfig.resid_pdrop, 0.1, on both residual branches).
    Training: cond_dropout_prob: the probability that a text -> image / video row's prompt is replaced by
    the empty prompt ([SOT] [EOT]), so that the model learns the unconditional rows of classifier-free guidance.
    Generation defaults (RQTransformer.generate): cfg_scale 3.0 (u + s (c - u)), top_k 900 (capped at the
    codebook size), top_p 0.96, temperature 1.0.
    tower: the vision tower's config as a dict of UnifiedVisionTowerConfig fields (None: the default
    UnifiedVisionTowerConfig(), a tiny tower of 16-px images); VILAU reads codebook_size, rvq_depth (D),
    codebook_dim (None: the tower's dim), image_size and patch_size from it, and builds the tower from it.
    """

    llm_vocab_size: int = 64
    sot_token_id: int = 1
    eot_token_id: int = 2
    dim: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: "int | None" = None
    hidden_dim: "int | None" = None
    norm_eps: float = 1e-5
    rope_base: float = 10000.0
    max_seq_len: int = 512
    init_std: float = 0.02
    tie_embeddings: bool = False
    mm_projector: str = "mlp2x_gelu"
    depth_dim: int = 128
    depth_layers: int = 2
    depth_heads: int = 4
    depth_dropout: float = 0.1
    cond_dropout_prob: float = 0.1
    cfg_scale: float = 3.0
    top_k: int = 900
    top_p: float = 0.96
    temperature: float = 1.0
    tower: "dict | None" = None

    def __post_init__(self):
        super().__post_init__()  # tuples -> lists, so a config equals its JSON round trip
        self.validate()

    def validate(self):
        """Checks every field (TypeError / ValueError naming it and its value). Returns self."""
        bad = self._field_error
        self._check_ints((("llm_vocab_size", 1), ("dim", 1), ("num_layers", 1), ("num_heads", 1),
                          ("max_seq_len", 2), ("depth_dim", 1), ("depth_layers", 1), ("depth_heads", 1),
                          ("top_k", 1)))
        for name in ("sot_token_id", "eot_token_id"):
            v = getattr(self, name)
            if not is_int(v):
                bad(name, f"an int in [0, llm_vocab_size={self.llm_vocab_size})", TypeError)
            if not 0 <= v < self.llm_vocab_size:
                bad(name, f"a text id in [0, llm_vocab_size={self.llm_vocab_size})")
        for name in ("num_kv_heads", "hidden_dim"):
            v = getattr(self, name)
            if v is not None and (not is_int(v) or v < 1):
                bad(name, "None or an int >= 1", TypeError if not is_int(v) else ValueError)
        if self.dim % self.num_heads:
            raise ValueError(f"VILAUConfig: dim ({self.dim}) must be a multiple of num_heads ({self.num_heads})")
        if self.num_kv_heads is not None and self.num_heads % self.num_kv_heads:
            raise ValueError(f"VILAUConfig: num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                             f"({self.num_kv_heads})")
        if self.depth_dim % self.depth_heads:
            raise ValueError(f"VILAUConfig: depth_dim ({self.depth_dim}) must be a multiple of depth_heads "
                             f"({self.depth_heads})")
        if not isinstance(self.tie_embeddings, bool):
            bad("tie_embeddings", "a bool", TypeError)
        if not isinstance(self.mm_projector, str) or self.mm_projector not in MM_PROJECTORS:
            bad("mm_projector", f"one of {MM_PROJECTORS}")
        self._check_reals((("norm_eps", 0.0, None, False), ("rope_base", 1.0, None, False),
                           ("init_std", 0.0, None, True), ("depth_dropout", 0.0, 1.0, True),
                           ("cond_dropout_prob", 0.0, 1.0, True), ("cfg_scale", 0.0, None, True),
                           ("top_p", 0.0, 1.0, False), ("temperature", 0.0, None, False)))
        if self.depth_dropout >= 1.0:
            bad("depth_dropout", "a number in [0, 1)")
        if self.tower is None:
            from .tower import UnifiedVisionTowerConfig
            self.tower = UnifiedVisionTowerConfig().to_dict()
        elif not isinstance(self.tower, dict):
            bad("tower", "None or a dict of the vision tower's config fields", TypeError)
        self.tower_geometry()  # names a missing or bad field now, not at the first forward
        return self

    # ------------------------------------------------------------------ vocabulary
    @property
    def vocab_size(self):
        """The LLM's vocabulary: llm_vocab_size text ids + [SOI], [EOI], [SOV], [EOV]."""
        return self.llm_vocab_size + len(VISUAL_TOKENS)

    def token_id(self, token):
        """The id of '[SOI]', '[EOI]', '[SOV]', '[EOV]' (llm_vocab_size + 0..3), '[SOT]' or '[EOT]' (text ids)."""
        if token == "[SOT]":
            return self.sot_token_id
        if token == "[EOT]":
            return self.eot_token_id
        if token not in VISUAL_TOKENS:
            raise KeyError(f"VILAUConfig.token_id: {token!r} is not one of {VISUAL_TOKENS + ('[SOT]', '[EOT]')}")
        return self.llm_vocab_size + VISUAL_TOKENS.index(token)

    @property
    def soi_token_id(self):
        """[SOI] = llm_vocab_size (VILA-U: vocab_size - 4)."""
        return self.token_id("[SOI]")

    @property
    def eoi_token_id(self):
        """[EOI] = llm_vocab_size + 1 (VILA-U: vocab_size - 3)."""
        return self.token_id("[EOI]")

    @property
    def sov_token_id(self):
        """[SOV] = llm_vocab_size + 2 (VILA-U: vocab_size - 2)."""
        return self.token_id("[SOV]")

    @property
    def eov_token_id(self):
        """[EOV] = llm_vocab_size + 3 (VILA-U: vocab_size - 1)."""
        return self.token_id("[EOV]")

    # ------------------------------------------------------------------ the tower's geometry
    def tower_geometry(self):
        """(codebook_size K, rvq_depth D, codebook_dim C, latent_shape (h, w)) of config.tower
        (tower_geometry)."""
        if self.tower is None:
            raise ValueError("VILAUConfig: tower is None; give the vision tower's config (a dict of its fields) "
                             "or pass the tower to VILAU")
        return tower_geometry(self.tower)

    @property
    def tokens_per_image(self):
        """h w: the visual positions of one image (VILA-U: 256 at 256 px, 729 at 384 px)."""
        h, w = self.tower_geometry()[3]
        return h * w

    # ------------------------------------------------------------------ modules
    def lm_kwargs(self):
        """The keyword arguments of mmu.nn.TransformerLM for the LLaMA-style LLM (what
        mmu.models.llama.llama_config_from_hf gives for a LLaMA config of these sizes)."""
        return dict(vocab_size=self.vocab_size, dim=self.dim, num_layers=self.num_layers, num_heads=self.num_heads,
                    num_kv_heads=self.num_kv_heads, hidden_dim=self.hidden_dim, activation="swiglu", bias=False,
                    norm="rmsnorm", norm_eps=self.norm_eps, residual="sequential", pos="rope", rotary_fraction=1.0,
                    rope_base=self.rope_base, max_seq_len=self.max_seq_len, tie_embeddings=self.tie_embeddings,
                    init_std=self.init_std)


def tower_geometry(t):
    """(codebook_size K, rvq_depth D, codebook_dim C, latent_shape (h, w)) read from a vision tower's config
    dict: codebook_size, rvq_depth, codebook_dim (None: dim), image_size and patch_size (ints or (h, w));
    the grid is floor(image_size / patch_size) each way, as the tower's stride-patch convolution gives."""
    if not isinstance(t, dict):
        raise TypeError(f"VILAUConfig: the tower config must be a dict of its fields, got {type(t).__name__}")

    def int_field(name, low=1):
        v = t.get(name)
        if not is_int(v) or v < low:
            raise ValueError(f"VILAUConfig: tower[{name!r}] must be an int >= {low}, got {v!r}")
        return int(v)

    def pair(name):
        v = t.get(name)
        v = [v, v] if is_int(v) else v
        if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(is_int(x) and x >= 1 for x in v):
            raise ValueError(f"VILAUConfig: tower[{name!r}] must be an int or an (h, w) pair of ints >= 1, "
                             f"got {t.get(name)!r}")
        return int(v[0]), int(v[1])

    k = int_field("codebook_size", 2)
    d = int_field("rvq_depth")
    c = int_field("codebook_dim") if t.get("codebook_dim") is not None else int_field("dim")
    (ih, iw), (ph, pw) = pair("image_size"), pair("patch_size")
    if ih < ph or iw < pw:
        raise ValueError(f"VILAUConfig: tower image_size {(ih, iw)} is smaller than one patch {(ph, pw)}")
    return k, d, c, (ih // ph, iw // pw)

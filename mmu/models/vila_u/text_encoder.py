"""TextEncoder: the text half of a SigLIP / CLIP two-tower model (Hugging Face's SiglipTextTransformer /
CLIPTextTransformer + their projection), the text tower of VILA-U's contrastive alignment.

layout="siglip" (SiglipTextModel): token + learned position embeddings, pre-norm layers WITHOUT a mask
(SigLIP's texts are padded to max_len and the pads take part), final LayerNorm, pooled = the LAST
position's output, `head` Linear(dim, embed_dim) with a bias.
layout="clip" (CLIPTextModel + CLIPModel.text_projection): the same with a causal mask, pooled = the
output at the end-of-text token (the highest id of the row, as Hugging Face CLIP does when the eos is
the largest id, or the first occurrence of eot_token_id when given), `head` without a bias.

Submodule names (what mmu.models.vila_u.convert maps the published keys onto): token_embedding,
pos_embedding (1, max_len, dim), layers.{i} (mmu.nn.TransformerLayer, mmu.nn.ViTEncoder's names:
norm1, attn.qkv_proj [q; k; v], attn.out_proj, norm2, mlp.fc1, mlp.fc2), final_norm, head.
"""
import numpy as np

from ...nn import Embedding, LayerNorm, Linear, Module, ModuleList, Parameter, TransformerLayer
from ...nn import init
from ...nn._layer_args import _int
from ...tensor import Tensor, tensor as _tensor
from ..._args import check_real

__all__ = ["TextEncoder", "TEXT_LAYOUTS"]

TEXT_LAYOUTS = ("siglip", "clip")
# the published activations: SigLIP's gelu_pytorch_tanh, OpenAI CLIP's quick_gelu
_DEFAULT_ACTIVATION = {"siglip": "gelu_tanh", "clip": "quick_gelu"}
# Hugging Face's layer_norm_eps defaults: SiglipTextConfig 1e-6, CLIPTextConfig 1e-5
_DEFAULT_EPS = {"siglip": 1e-6, "clip": 1e-5}


def _ids_array(ids, fn):
    """ids (B, L) of ints (NumPy array, list or int64 Tensor) -> int64 ndarray."""
    if isinstance(ids, Tensor):
        ids = ids.detach().numpy()
    try:
        a = np.asarray(ids)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{fn}: ids must be an integer array (B, L), got {type(ids).__name__} ({e})") from None
    if a.dtype.kind not in "iu":
        raise TypeError(f"{fn}: ids must be integers (B, L), got dtype {a.dtype}")
    return a.astype(np.int64, copy=False)


class TextEncoder(Module):
    """A SigLIP- or CLIP-layout text transformer (module docstring).

    vocab_size, max_len (positions), dim, depth (layers), num_heads, hidden_dim (MLP width; None: 4 dim),
    embed_dim (the head's output, the shared image-text width; None: dim), layout 'siglip' | 'clip',
    activation (None: 'gelu_tanh' for siglip, 'quick_gelu' for clip; any mmu.nn.MLP activation),
    norm_eps (None: 1e-6 siglip, 1e-5 clip), eot_token_id (clip only: pool at the first occurrence of
    this id; None: at the row's highest id).

    forward(ids (B, L) int64, 1 <= L <= max_len, every id in [0, vocab_size)) -> (features (B, L, dim)
    after the final norm, pooled (B, embed_dim) = head(pooled position)). Embeddings are not normalised
    here (the two-tower model L2-normalises them)."""

    def __init__(self, vocab_size, max_len, dim, depth, num_heads, hidden_dim=None, embed_dim=None, layout="siglip",
                 activation=None, norm_eps=None, eot_token_id=None):
        super().__init__()
        cls = "TextEncoder"
        if not isinstance(layout, str) or layout not in TEXT_LAYOUTS:
            raise ValueError(f"{cls}: layout must be one of {TEXT_LAYOUTS}, got {layout!r}")
        self.layout = layout
        self.vocab_size = _int(vocab_size, "vocab_size", cls, 1)
        self.max_len = _int(max_len, "max_len", cls, 1)
        self.dim = _int(dim, "dim", cls, 1)
        self.depth = _int(depth, "depth", cls, 1)
        num_heads = _int(num_heads, "num_heads", cls, 1)
        if self.dim % num_heads:
            raise ValueError(f"{cls}: dim ({self.dim}) must be a multiple of num_heads ({num_heads})")
        hidden_dim = 4 * self.dim if hidden_dim is None else _int(hidden_dim, "hidden_dim", cls, 1)
        self.embed_dim = self.dim if embed_dim is None else _int(embed_dim, "embed_dim", cls, 1)
        activation = _DEFAULT_ACTIVATION[layout] if activation is None else activation
        norm_eps = _DEFAULT_EPS[layout] if norm_eps is None else check_real(norm_eps, cls, "norm_eps")
        if not norm_eps > 0:
            raise ValueError(f"{cls}: norm_eps must be > 0, got {norm_eps}")
        if eot_token_id is not None:
            if layout != "clip":
                raise ValueError(f"{cls}: eot_token_id is the pooled position of layout='clip'; SigLIP pools the "
                                 "last position")
            eot_token_id = _int(eot_token_id, "eot_token_id", cls, 0)
            if eot_token_id >= self.vocab_size:
                raise ValueError(f"{cls}: eot_token_id {eot_token_id} is not an id of the vocabulary "
                                 f"(vocab_size {self.vocab_size})")
        self.eot_token_id = eot_token_id
        self.token_embedding = Embedding(self.vocab_size, self.dim)
        self.pos_embedding = Parameter(_tensor(np.zeros((1, self.max_len, self.dim), np.float32)))
        init.normal_(self.token_embedding.weight, 0.0, 0.02)
        init.normal_(self.pos_embedding, 0.0, 0.01)
        self.layers = ModuleList([TransformerLayer(self.dim, num_heads, hidden_dim=hidden_dim, activation=activation,
                                                   bias=True, norm="layernorm", norm_eps=norm_eps)
                                  for _ in range(self.depth)])
        self.final_norm = LayerNorm(self.dim, eps=norm_eps)
        self.head = Linear(self.dim, self.embed_dim, bias=layout == "siglip")

    def pooled_positions(self, ids):
        """The position each row is pooled at: L - 1 (siglip) or the end-of-text position (clip) -> (B,)
        int64. ids as forward takes them (checked)."""
        a = self._check_ids(ids, "TextEncoder.pooled_positions")
        return self._positions(a)

    def _positions(self, a):
        b, l = a.shape
        if self.layout == "siglip":
            return np.full(b, l - 1, np.int64)
        if self.eot_token_id is None:
            return a.argmax(-1).astype(np.int64)        # the first highest id (NumPy's and torch's argmax)
        hit = a == self.eot_token_id
        missing = np.flatnonzero(~hit.any(-1))
        if missing.size:
            raise ValueError(f"TextEncoder: rows {missing.tolist()} of ids {a.shape} hold no end-of-text token "
                             f"(eot_token_id {self.eot_token_id}); layout 'clip' pools there")
        return hit.argmax(-1).astype(np.int64)

    def _check_ids(self, ids, fn):
        a = _ids_array(ids, fn)
        if a.ndim != 2 or a.shape[0] == 0 or not 1 <= a.shape[1] <= self.max_len:
            raise ValueError(f"{fn}: ids must be (B, L) with B >= 1 and 1 <= L <= max_len={self.max_len}, "
                             f"got shape {a.shape}")
        if a.min() < 0 or a.max() >= self.vocab_size:
            raise ValueError(f"{fn}: ids must lie in [0, vocab_size={self.vocab_size}) (pad rows first), got values "
                             f"in [{a.min()}, {a.max()}]")
        return a

    def forward(self, ids):
        """ids (B, L) int64 -> (features (B, L, dim), pooled (B, embed_dim))."""
        a = self._check_ids(ids, "TextEncoder")
        b, l = a.shape
        pos = self._positions(a)
        x = self.token_embedding(_tensor(np.ascontiguousarray(a))) + self.pos_embedding[:, :l]
        causal = self.layout == "clip"
        for layer in self.layers:
            x = layer(x, is_causal=causal)
        x = self.final_norm(x)
        rows = _tensor(np.arange(b, dtype=np.int64) * l + pos)
        pooled = x.reshape(b * l, self.dim).index_select(0, rows)
        return x, self.head(pooled)

    def extra_repr(self):
        return (f"layout={self.layout!r}, vocab_size={self.vocab_size}, max_len={self.max_len}, dim={self.dim}, "
                f"embed_dim={self.embed_dim}")

"""TransformerBlock: the pre-norm encoder block of ViTs and GPT-style models."""
import numbers

from .. import functional as F
from .attention import MultiheadAttention
from ._layer_args import _int
from .layers import Dropout, Linear
from .norm import LayerNorm, RMSNorm
from .module import Module

__all__ = ["TransformerBlock"]

_ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class TransformerBlock(Module):
    """Pre-norm transformer block on batch-first (B, L, D) input:

        x = x + dropout1(self_attn(norm1(x)))
        x = x + dropout2(linear2(dropout(activation(linear1(norm2(x))))))

    Its submodules are named like torch.nn.TransformerEncoderLayer(d_model=dim,
    nhead=num_heads, dim_feedforward=int(mlp_ratio * dim), dropout, activation,
    batch_first=True, norm_first=True, bias=bias), so with qk_norm off the
    state_dict keys are the same and torch weights load directly.

    dropout applies to the two residual branches and the MLP hidden layer,
    attn_dropout to the attention weights (torch uses `dropout` for both).
    norm: 'layernorm' or 'rmsnorm'; qk_norm / rope: see MultiheadAttention.
    forward's attn_mask / key_padding_mask follow torch's convention
    (bool True = NOT allowed, or float additive)."""

    def __init__(self, dim, num_heads, mlp_ratio=4.0, dropout=0.0, attn_dropout=0.0, qk_norm=False,
                 activation="gelu", norm_eps=1e-5, bias=True, norm="layernorm", rope=False, rope_base=10000.0):
        super().__init__()
        self.dim = _int(dim, "dim", "TransformerBlock", 1)
        if not isinstance(mlp_ratio, numbers.Real) or mlp_ratio <= 0:
            raise ValueError(f"TransformerBlock: mlp_ratio must be a positive number, got {mlp_ratio!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"TransformerBlock: activation must be one of {sorted(_ACTIVATIONS)}, "
                             f"got {activation!r}")
        if norm not in ("layernorm", "rmsnorm"):
            raise ValueError(f"TransformerBlock: norm must be 'layernorm' or 'rmsnorm', got {norm!r}")
        hidden = int(mlp_ratio * dim)
        self.self_attn = MultiheadAttention(dim, num_heads, dropout=attn_dropout, bias=bias, batch_first=True,
                                            qk_norm=qk_norm, rope=rope, rope_base=rope_base)
        self.linear1 = Linear(dim, hidden, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(hidden, dim, bias=bias)
        if norm == "layernorm":
            self.norm1 = LayerNorm(dim, eps=norm_eps, bias=bias)
            self.norm2 = LayerNorm(dim, eps=norm_eps, bias=bias)
        else:
            self.norm1 = RMSNorm(dim, eps=norm_eps)
            self.norm2 = RMSNorm(dim, eps=norm_eps)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation_name = activation
        self._act = _ACTIVATIONS[activation]

    def forward(self, x, attn_mask=None, is_causal=False, key_padding_mask=None, rope=None):
        h = self.norm1(x)
        h = self.self_attn(h, h, h, key_padding_mask=key_padding_mask, need_weights=False, attn_mask=attn_mask,
                           is_causal=is_causal, rope=rope)[0]
        x = x + self.dropout1(h)
        h = self.linear2(self.dropout(self._act(self.linear1(self.norm2(x)))))
        return x + self.dropout2(h)

    def extra_repr(self):
        return f"activation={self.activation_name!r}"

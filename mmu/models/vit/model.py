"""VisionTower: a SigLIP or CLIP vision tower (Hugging Face's SiglipVisionModel / CLIPVisionModel) built
from mmu.nn.ViTEncoder, with SigLIP's attention-pooling head or CLIP's class-token pooling."""
import numpy as np

from ...nn import LayerNorm, Linear, MLP, Module, MultiheadAttention, Parameter, ViTEncoder
from ...nn import init
from ...tensor import _as_tensor, tensor as _tensor

__all__ = ["VisionTower", "AttentionPoolingHead"]

_LAYOUTS = ("siglip", "clip")
_POOLING = ("attention", "cls", None)


class AttentionPoolingHead(Module):
    """SigLIP's pooling head (transformers' SiglipMultiheadAttentionPoolingHead): one learned probe
    (1, 1, dim) attends over the tokens (attention: torch-named MultiheadAttention with a fused
    in_proj), then h + mlp(layernorm(h)). (B, N, dim) -> (B, dim)."""

    def __init__(self, dim, num_heads, hidden_dim, activation="gelu_tanh", norm_eps=1e-6):
        super().__init__()
        self.probe = Parameter(_tensor(np.zeros((1, 1, dim), np.float32)))
        init.normal_(self.probe, 0.0, 0.02)
        self.attention = MultiheadAttention(dim, num_heads, batch_first=True)
        self.layernorm = LayerNorm(dim, eps=norm_eps)
        self.mlp = MLP(dim, hidden_dim, activation=activation)

    def forward(self, x):
        """x (B, N, dim) -> (B, dim)."""
        x = _as_tensor(x, "AttentionPoolingHead", "x")
        d = self.probe.shape[2]
        if x.ndim != 3 or x.shape[2] != d:
            raise ValueError(f"AttentionPoolingHead: x must be (B, N, dim={d}), got {x.shape}")
        b = x.shape[0]
        probe = self.probe.expand(b, 1, d)
        h = self.attention(probe, x, x, need_weights=False)[0]   # (B, 1, dim)
        h = h + self.mlp(self.layernorm(h))
        return h.reshape(b, d)


class VisionTower(Module):
    """A published ViT vision tower. forward(images (B, C, H, W)) -> (features, pooled):

    layout='siglip' (SiglipVisionModel): patches + learned positions, pre-norm layers, the final
    LayerNorm on every token (final_norm): features = transformers' last_hidden_state (B, N, dim);
    pooling='attention': pooled = head(features) (its pooler_output), else None.
    layout='clip' (CLIPVisionModel): a class token first (encoder.extra_tokens), learned positions,
    pre_layrnorm (encoder.pre_norm), pre-norm layers: features = last_hidden_state (B, 1 + N, dim),
    without a final norm; pooling='cls': pooled = post_norm(features[:, 0]) (pooler_output).

    With depth below the checkpoint's layer count (a tower cut after layer k, as VILA-U reads
    SigLIP's second-to-last layer), build with final_norm=False, pooling=None: features are then
    transformers' hidden_states[k] (the output of layer k, before any final norm).
    projection_dim (CLIP's image projection: open_clip's visual.proj, transformers' visual_projection):
    pooled = proj(post_norm(features[:, 0])) (B, projection_dim) through a Linear without bias; needs
    pooling='cls'. None: no projection.
    The other arguments go to mmu.nn.ViTEncoder (norm_eps: every LayerNorm's eps).
    """

    def __init__(self, layout, image_size, patch_size, in_channels=3, dim=768, depth=12, num_heads=12,
                 hidden_dim=3072, activation="gelu_tanh", norm_eps=1e-6, final_norm=True, pooling=None,
                 projection_dim=None):
        super().__init__()
        if layout not in _LAYOUTS:
            raise ValueError(f"VisionTower: layout must be one of {_LAYOUTS}, got {layout!r}")
        if pooling not in _POOLING:
            raise ValueError(f"VisionTower: pooling must be one of {_POOLING}, got {pooling!r}")
        if pooling == "attention" and not (layout == "siglip" and final_norm):
            raise ValueError("VisionTower: pooling='attention' is SigLIP's head, on the final-normed tokens "
                             "(layout='siglip', final_norm=True)")
        if pooling == "cls" and layout != "clip":
            raise ValueError("VisionTower: pooling='cls' reads CLIP's class token (layout='clip')")
        if projection_dim is not None and (isinstance(projection_dim, bool) or not isinstance(projection_dim, int)
                                           or projection_dim < 1 or pooling != "cls"):
            raise ValueError(f"VisionTower: projection_dim must be None or an int >= 1 with pooling='cls' (CLIP's "
                             f"image projection of the class token), got {projection_dim!r} with pooling={pooling!r}")
        self.layout, self.pooling = layout, pooling
        clip = layout == "clip"
        self.encoder = ViTEncoder(image_size, patch_size, in_channels=in_channels, dim=dim, depth=depth,
                                  num_heads=num_heads, hidden_dim=hidden_dim, activation=activation, bias=True,
                                  norm="layernorm", norm_eps=norm_eps, pos="learned",
                                  num_extra_tokens=1 if clip else 0, final_norm=bool(final_norm), pre_norm=clip)
        self.head = AttentionPoolingHead(dim, num_heads, hidden_dim, activation, norm_eps) \
            if pooling == "attention" else None
        self.post_norm = LayerNorm(dim, eps=norm_eps) if pooling == "cls" else None
        self.proj = Linear(dim, projection_dim, bias=False) if projection_dim is not None else None

    def forward(self, images):
        """images (B, C, H, W) -> (features (B, T, dim), pooled (B, dim or projection_dim) or None)."""
        x = self.encoder(images)
        if self.head is not None:
            return x, self.head(x)
        if self.post_norm is not None:
            pooled = self.post_norm(x[:, 0])
            return x, pooled if self.proj is None else self.proj(pooled)
        return x, None

    def extra_repr(self):
        return f"layout={self.layout!r}, pooling={self.pooling!r}"

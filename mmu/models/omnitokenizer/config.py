"""OmniTokenizerConfig: the fields of OmniTokenizer's transformer tokenizer (FoundationVision/OmniTokenizer,
OmniTokenizer/omnitokenizer.py: VQGAN with OmniTokenizer_Encoder / OmniTokenizer_Decoder, modules/attention.py,
modules/codebook.py; defaults from scripts/recons/train.sh)."""
from dataclasses import dataclass

from ...tokenizers.config import _Config

__all__ = ["OmniTokenizerConfig"]

_BLOCKS = "tw"
_SPATIAL_POS = ("rel", "rope")
_PEG_LAYOUTS = ("published", "per_location")


@dataclass
class OmniTokenizerConfig(_Config):
    """OmniTokenizer as the published code builds it with patch_embed 'linear' (the training scripts'),
    at the sizes of scripts/recons/train.sh unless noted.

    Patching: the first frame alone into (resolution / patch_size)^2 patches, the other frames as
    (temporal_patch_size x patch_size x patch_size) tubes, each LayerNorm -> Linear -> LayerNorm; a clip
    of T = 1 + k * temporal_patch_size frames gives t = 1 + k latent frames (an image is a one-frame clip).
    Encoder: a spatial transformer per frame whose blocks follow `enc_block` ('t': PEG + full attention +
    GEGLU feed-forward; 'w': Swin-style non-overlapping window attention of window_size x window_size
    with a relative position bias table + feed-forward), then a temporal transformer per spatial location
    (temporal_depth 't' blocks, causal attention when causal_in_temporal_transformer). Decoder: the
    mirror, temporal then spatial (`dec_block`), then Linear to pixels (first frame / tubes).
    The script's blocks: enc_block "ttww" (full, full, window, window), dec_block "tttt".

    Quantizer (modules/codebook.py Codebook, the default non-external codebook): Linear dim ->
    codebook_dim (pre_vq_conv), l2-normalised when l2_code, nearest code by Euclidean distance to the
    (not normalised) EMA codebook, EMA decay 0.99, Laplace eps 1e-7, commitment 0.25 * mse (the
    Codebook's own constant: the script's --commitment_weight only reaches the external codebook),
    codes initialised from the first training batch; dead codes (EMA count < restart_thres) restarted
    from the batch unless no_random_restart (the script passes --no_random_restart).

    spatial_pos: "rel" (the code's default; with torch >= 2.1 the code takes the SDPA path, where the
    continuous position bias it computes is not added: the full-attention blocks then see positions only
    through the PEG) or "rope" (2-D rotary on the spatial full attention, the script's stage 2).
    temporal_peg_layout: "published" reshapes the temporal transformer's (b h w, t, d) tokens to
    (b, t, h, w, d) before its PEG as the code does (the PEG then mixes tokens of other locations and
    frames, so codes of a frame can depend on later frames); "per_location" gives the PEG the true
    (b, t, h, w) layout, which makes the encoder causal in time (not the published behaviour).

    Loss (VQGAN.forward, optimizer_idx 0, without the GAN terms): l1_weight * L1 (the script's recon
    type, l1_weight 4.0) + perceptual_weight * LPIPS on one random frame per clip (all frames with
    apply_allframes; the script uses 4.0: needs lpips_weights, or lpips_random for a random LPIPS) +
    the commitment loss."""
    in_channels: int = 3
    resolution: int = 256
    num_frames: int = 17
    patch_size: int = 8
    temporal_patch_size: int = 4
    dim: int = 512
    dim_head: int = 64
    heads: int = 8
    ff_mult: float = 4.0
    enc_block: str = "ttww"
    dec_block: str = "tttt"
    temporal_depth: int = 4
    window_size: int = 8
    spatial_pos: str = "rel"
    causal_in_temporal_transformer: bool = True
    causal_in_peg: bool = True
    temporal_peg_layout: str = "published"
    codebook_size: int = 8192
    codebook_dim: int = 8
    l2_code: bool = True
    decay: float = 0.99
    eps: float = 1e-7
    commitment_weight: float = 0.25
    no_random_restart: bool = True
    restart_thres: float = 1.0
    l1_weight: float = 4.0
    perceptual_weight: float = 0.0
    apply_allframes: bool = False
    lpips_weights: str = None
    lpips_random: bool = False
    quantizer: str = "ema_vq"

    def validate(self):
        """Checks every field (TypeError / ValueError naming the field and the value)."""
        self._check_ints([("in_channels", 1), ("resolution", 1), ("num_frames", 1), ("patch_size", 1),
                          ("temporal_patch_size", 1), ("dim", 1), ("dim_head", 1), ("heads", 1),
                          ("temporal_depth", 0), ("window_size", 1), ("codebook_size", 1), ("codebook_dim", 1)])
        self._check_reals([("ff_mult", 0.0, None, False), ("decay", 0.0, 1.0, True), ("eps", 0.0, None, False),
                           ("commitment_weight", 0.0, None, True), ("restart_thres", 0.0, None, True),
                           ("l1_weight", 0.0, None, True), ("perceptual_weight", 0.0, None, True)])
        for name in ("causal_in_temporal_transformer", "causal_in_peg", "l2_code", "no_random_restart",
                     "apply_allframes", "lpips_random"):
            if not isinstance(getattr(self, name), bool):
                self._field_error(name, "a bool", TypeError)
        for name in ("enc_block", "dec_block"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v or set(v) - set(_BLOCKS):
                self._field_error(name, "a non-empty string of 't' (full attention) and 'w' (window attention)")
        if self.spatial_pos not in _SPATIAL_POS:
            self._field_error("spatial_pos", f"one of {list(_SPATIAL_POS)}")
        if self.temporal_peg_layout not in _PEG_LAYOUTS:
            self._field_error("temporal_peg_layout", f"one of {list(_PEG_LAYOUTS)}")
        if self.quantizer != "ema_vq":
            self._field_error("quantizer", "'ema_vq' (OmniTokenizer's EMA codebook)")
        if self.resolution % self.patch_size:
            self._field_error("resolution", f"a multiple of patch_size {self.patch_size}")
        grid = self.resolution // self.patch_size
        if "w" in self.enc_block + self.dec_block and grid % self.window_size:
            self._field_error("window_size", f"a divisor of the patch grid {grid} (resolution / patch_size)")
        if (self.num_frames - 1) % self.temporal_patch_size:
            self._field_error("num_frames", f"1 + a multiple of temporal_patch_size {self.temporal_patch_size}")
        if self.spatial_pos == "rope" and self.dim_head % 4:
            self._field_error("dim_head", "a multiple of 4 with spatial_pos 'rope' (2-D rotary pairs)")
        if self.perceptual_weight > 0 and self.lpips_weights is None and not self.lpips_random:
            self._field_error("perceptual_weight", "0 without lpips_weights (or lpips_random=True)")
        if self.lpips_weights is not None and not isinstance(self.lpips_weights, str):
            self._field_error("lpips_weights", "a path (str) or None", TypeError)
        return self

    @property
    def ff_inner_dim(self):
        """The GEGLU feed-forward's hidden width: int(ff_mult * 2/3 * dim), as attention.FeedForward."""
        return int(self.ff_mult * (2 / 3) * self.dim)

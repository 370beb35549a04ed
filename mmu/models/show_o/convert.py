"""Show-o's published checkpoint layout -> mmu.models.show_o.ShowO's state_dict.

ShowO's keys (what a converter writes): "lm.*" are mmu.nn.TransformerLM's (the table in
mmu.models.phi.convert: Show-o's "showo.model.*" / "showo.lm_head.*" are Phi's keys under the prefix
"showo.", with q_layernorm / k_layernorm per head -> lm.layers.i.attn.q_norm / k_norm), and
"image_tokenizer.*" are the image tokenizer's own state_dict keys (saved with the model).
"""
__all__ = []

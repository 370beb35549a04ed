"""Llama: mmu.nn.TransformerLM under the name the registry and saved configs use (mmu.models.get("llama")).

The architecture is TransformerLM's own (LlamaForCausalLM's arithmetic is reproduced by the arguments
llama_config_from_hf gives); this class adds the constructor from a Hugging Face config.json."""
from ...nn import TransformerLM
from .config import llama_config_from_hf

__all__ = ["Llama"]


class Llama(TransformerLM):
    """TransformerLM built as LlamaForCausalLM: `Llama.from_hf_config(config_json)` for a fresh model,
    `load_llama(state_dict, config_json)` (mmu.models.llama) for a published checkpoint."""

    @classmethod
    def from_hf_config(cls, config):
        """A LlamaForCausalLM config.json (dict or path) -> a Llama with fresh weights."""
        return cls(**llama_config_from_hf(config))

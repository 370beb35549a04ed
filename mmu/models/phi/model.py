"""Phi: mmu.nn.TransformerLM under the name the registry and saved configs use (mmu.models.get("phi")).

The architecture is TransformerLM's own (PhiForCausalLM's arithmetic is reproduced by the arguments
phi_config_from_hf gives); this class adds the constructor from a Hugging Face config.json."""
from ...nn import TransformerLM
from .config import phi_config_from_hf

__all__ = ["Phi"]


class Phi(TransformerLM):
    """TransformerLM built as PhiForCausalLM: `Phi.from_hf_config(config_json)` for a fresh model,
    `load_phi(state_dict, config_json)` (mmu.models.phi) for a published checkpoint."""

    @classmethod
    def from_hf_config(cls, config):
        """A PhiForCausalLM config.json (dict or path) -> a Phi with fresh weights."""
        return cls(**phi_config_from_hf(config))

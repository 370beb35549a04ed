"""Phi (Phi-1.5, the language model Show-o is built on) in Hugging Face's published layout ->
mmu.nn.TransformerLM: phi_config_from_hf (config.json -> constructor arguments),
convert_phi_state_dict (published keys -> mmu keys) and load_phi (both -> the model)."""
from .config import phi_config_from_hf
from .convert import convert_phi_state_dict, load_phi
from .model import Phi

from .. import register as _register

_register("phi", Phi)

__all__ = ["Phi", "phi_config_from_hf", "convert_phi_state_dict", "load_phi"]

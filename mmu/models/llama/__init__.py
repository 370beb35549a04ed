"""LLaMA (VILA-U's language model) in Hugging Face's published layout -> mmu.nn.TransformerLM:
llama_config_from_hf (config.json -> constructor arguments), convert_llama_state_dict (published
keys -> mmu keys) and load_llama (both -> the model)."""
from .config import llama_config_from_hf
from .convert import convert_llama_state_dict, load_llama
from .model import Llama

from .. import register as _register

_register("llama", Llama)

__all__ = ["Llama", "llama_config_from_hf", "convert_llama_state_dict", "load_llama"]

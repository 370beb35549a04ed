"""mmu.tokenizers: trainable image tokenizers (VQ-VAE, dVAE, VQGAN) with encode/decode and a loss breakdown."""
from . import base, blocks, config, convert, dvae, vqgan, vqvae  # noqa: F401
from .base import Tokenizer, TokenizerOutput, fsq_levels_for, make_quantizer
from .config import DVAEConfig, VQGANConfig, VQVAEConfig
from .vqvae import VQVAE
from .dvae import DVAE
from .vqgan import VQGAN
from .convert import TamingConversion, convert_taming_state_dict

__all__ = ["Tokenizer", "TokenizerOutput", "make_quantizer", "fsq_levels_for", "VQVAEConfig", "DVAEConfig",
           "VQGANConfig", "VQVAE", "DVAE", "VQGAN", "convert_taming_state_dict", "TamingConversion"]

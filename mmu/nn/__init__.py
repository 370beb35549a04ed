"""mmu.nn: modules and layers with PyTorch's names, arguments, parameter names
and default initialisations (Module, Parameter, Linear, Conv2d, LayerNorm,
MultiheadAttention, ...), so a torch model reads the same in mmu and its
state_dict loads into the mmu twin."""
from . import functional, init, utils  # noqa: F401
from .attention import Attention, MultiheadAttention, RotaryEmbedding  # noqa: F401
from .containers import ModuleDict, ModuleList, Sequential  # noqa: F401
from .activation import GELU, LeakyReLU, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh  # noqa: F401
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d  # noqa: F401
from .layers import (  # noqa: F401
    Dropout, Embedding, Flatten, Identity, Linear, PixelShuffle, PixelUnshuffle, Unflatten, Upsample,
)
from .module import Module  # noqa: F401
from .norm import ActNorm, BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, RMSNorm  # noqa: F401
from .parameter import Parameter  # noqa: F401
from .pooling import AvgPool2d, MaxPool2d  # noqa: F401
from .kv_cache import KVCache  # noqa: F401
from .mlp import MLP  # noqa: F401
from .transformer import TransformerBlock, TransformerLayer, TransformerLM, ViTEncoder  # noqa: F401

__all__ = ["Module", "Parameter", "Sequential", "ModuleList", "ModuleDict", "Identity", "Linear", "Conv1d",
           "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "LayerNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d", "ActNorm",
           "RMSNorm", "Embedding", "Dropout", "ReLU", "GELU", "SiLU", "Sigmoid", "Tanh", "Softplus", "LeakyReLU", "Softmax",
           "Flatten", "Unflatten", "Upsample", "AvgPool2d", "MaxPool2d", "PixelShuffle", "PixelUnshuffle", "MultiheadAttention", "RotaryEmbedding", "TransformerBlock",
           "Attention", "MLP", "TransformerLayer", "TransformerLM", "ViTEncoder", "KVCache",
           "functional", "init", "utils"]

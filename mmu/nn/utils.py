"""mmu.nn.utils: clip_grad_norm_ (mmu.optim's), parameters_to_vector / vector_to_parameters."""
import numpy as np

from ..optim import clip_grad_norm_  # noqa: F401  (the same function: torch.nn.utils.clip_grad_norm_)
from ..tensor import tensor as _tensor

__all__ = ["clip_grad_norm_", "parameters_to_vector", "vector_to_parameters"]


def parameters_to_vector(parameters):
    """The parameters flattened and concatenated into one new 1-D tensor (a copy, no graph)."""
    return _tensor(np.concatenate([p.detach().numpy().reshape(-1) for p in parameters]))


def vector_to_parameters(vec, parameters):
    """Copies consecutive slices of the 1-D vec into the parameters (in place)."""
    v = vec.detach().numpy() if hasattr(vec, "detach") else np.asarray(vec)
    i = 0
    for p in parameters:
        n = p.numel()
        if i + n > v.size:
            raise ValueError(f"vector_to_parameters: vec has {v.size} elements, fewer than the parameters need")
        p.numpy()[...] = v[i:i + n].reshape(p.shape)
        p._bump_version()
        i += n
    if i != v.size:
        raise ValueError(f"vector_to_parameters: vec has {v.size} elements, the parameters {i}")

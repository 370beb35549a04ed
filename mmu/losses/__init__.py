"""mmu.losses: the training losses of tokenizers and unified models (reconstruction, adversarial,
contrastive, token objectives), fused C kernels where they are hot."""
from . import adversarial, contrastive, reconstruction, token
from .adversarial import *  # noqa: F401,F403
from .contrastive import *  # noqa: F401,F403
from .discriminator import NLayerDiscriminator, weights_init  # noqa: F401
from .reconstruction import *  # noqa: F401,F403
from .token import *  # noqa: F401,F403

__all__ = reconstruction.__all__ + adversarial.__all__ + contrastive.__all__ + token.__all__
from .lpips import LPIPS  # noqa: E402,F401  (issue 5: LPIPS; mmu.losses.lpips holds convert_torch_weights)
__all__ += ["LPIPS"]

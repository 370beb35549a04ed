"""mmu.losses: the training losses of tokenizers and unified models — reconstruction, perceptual
(LPIPS), adversarial (PatchGAN discriminator, hinge/vanilla, adaptive weight, LeCam, R1),
contrastive (CLIP, SigLIP) and token objectives — fused C kernels where they are hot."""
from . import adversarial, contrastive, discriminator, lpips, reconstruction, token
from .adversarial import *  # noqa: F401,F403
from .contrastive import *  # noqa: F401,F403
from .discriminator import NLayerDiscriminator, weights_init  # noqa: F401
from .lpips import LPIPS, frozen_lpips  # noqa: F401  (mmu.losses.lpips also holds convert_torch_weights)
from .reconstruction import *  # noqa: F401,F403
from .token import *  # noqa: F401,F403

__all__ = (reconstruction.__all__ + adversarial.__all__ + contrastive.__all__ + token.__all__
           + ["NLayerDiscriminator", "weights_init", "LPIPS", "frozen_lpips"])

"""mmu.nn.functional is mmu.functional (torch.nn.functional's names)."""
from ..functional import *  # noqa: F401,F403
from ..functional import __all__  # noqa: F401

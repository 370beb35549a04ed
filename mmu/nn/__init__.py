"""mmu.nn: modules and layers with PyTorch names (Module, Parameter, Linear, Conv2d, ...)."""

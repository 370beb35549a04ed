"""mmu.functional: batchnorm ops (issue 5)."""

__all__ = []

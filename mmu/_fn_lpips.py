"""mmu.functional: lpips ops (issue 5)."""

__all__ = []

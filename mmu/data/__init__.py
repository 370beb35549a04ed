"""mmu.data: built-in image datasets (scikit-learn digits, natural-image crops), an image-folder loader and a seeded DataLoader."""

__all__ = []

"""mmu.data: built-in image datasets (scikit-learn digits, natural-image crops), an image-folder loader and a seeded DataLoader.

Images are float32 NCHW in [-1, 1]. scikit-learn, scikit-image and Pillow are imported lazily
(inside the builders), so `import mmu` stays fast.

    ds = mmu.data.natural_crops(32, "train")          # (4096, 3, 32, 32)
    loader = mmu.data.DataLoader(ds, 32, hflip=True)
    for x in loader: ...                              # one epoch of (32, 3, 32, 32) float32
"""
from .datasets import NATURAL_TEST_SOURCES, NATURAL_TRAIN_SOURCES, ImageDataset, digits, natural_crops
from .folder import IMAGE_EXTENSIONS, ImageFolder, load_dataset
from .loader import DataLoader
from ._resize import resize

__all__ = ["ImageDataset", "digits", "natural_crops", "ImageFolder", "load_dataset", "DataLoader",
           "resize", "NATURAL_TRAIN_SOURCES", "NATURAL_TEST_SOURCES", "IMAGE_EXTENSIONS"]

"""mmu.data: built-in image datasets (scikit-learn digits, natural-image crops, captioned digits and
compositional shapes scenes with question/answer pairs), captioned clips of moving digits (moving_digits),
image folders streamed from disk (one discovery rule, train / held-out splits that never overlap) and a seeded DataLoader.

Images are float32 NCHW in [-1, 1]. scikit-learn, scikit-image and Pillow are imported lazily
(inside the builders), so `import mmu` stays fast.

    ds = mmu.data.natural_crops(32, "train")          # (4096, 3, 32, 32)
    loader = mmu.data.DataLoader(ds, 32, hflip=True)
    for x in loader: ...                              # one epoch of (32, 3, 32, 32) float32
"""
from .datasets import NATURAL_TEST_SOURCES, NATURAL_TRAIN_SOURCES, ImageDataset, digits, natural_crops
from .captioned import CaptionedImages, caption_corpus, caption_sets, captioned_digits, captioned_shapes, judge_shapes
from .moving import MovingDigits, moving_digits, moving_digits_corpus
from .folder import (IMAGE_EXTENSIONS, FolderSplit, ImageFolder, check_images, folder_split, iter_image_batches,
                     list_images, load_dataset, load_splits)
from .loader import DataLoader
from ._resize import resize

__all__ = ["ImageDataset", "digits", "natural_crops", "CaptionedImages", "captioned_digits", "captioned_shapes",
           "caption_corpus", "caption_sets", "judge_shapes", "MovingDigits", "moving_digits",
           "moving_digits_corpus", "ImageFolder", "load_dataset", "load_splits",
           "folder_split", "FolderSplit", "list_images", "check_images", "iter_image_batches", "DataLoader",
           "resize", "NATURAL_TRAIN_SOURCES", "NATURAL_TEST_SOURCES", "IMAGE_EXTENSIONS"]

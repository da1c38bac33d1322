"""Decoding and resizing photos: the one path shared by training, evaluation and prediction."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps

ImageSource = str | Path | BinaryIO | Image.Image


def open_rgb(source: ImageSource, size: int | None = None) -> Image.Image:
    """Open a photo as upright RGB. With `size`, JPEG draft mode decodes large photos at a
    reduced scale first, so a 12-megapixel upload costs a fraction of a full decode."""
    image = source if isinstance(source, Image.Image) else Image.open(source)
    if size is not None and image.format == "JPEG":
        image.draft("RGB", (size, size))
    image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def to_array(source: ImageSource, size: int) -> np.ndarray:
    """A (size, size, 3) float32 array of RGB pixels in 0..255, the input every model takes.

    The whole photo is squashed to a square (no crop), as the training photos were stored.
    """
    image = open_rgb(source, size)
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image, dtype=np.float32)


def to_batch(sources, size: int) -> np.ndarray:
    return np.stack([to_array(source, size) for source in sources]) if sources else np.zeros((0, size, size, 3), np.float32)

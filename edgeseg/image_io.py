"""Image files in and label maps out (Pillow, imported lazily: ``pip install 'edgeseg[image]'``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pillow():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading and writing image files needs Pillow: pip install 'edgeseg[image]'") from None
    return Image


def read_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB H×W×3 (palette, grayscale and alpha images are converted)."""
    image_module = _pillow()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    with image_module.open(path) as image:
        return np.asarray(image.convert("RGB"))


def palette(num_colors: int = 256) -> np.ndarray:
    """A fixed, well-spread colour per class index (the PASCAL VOC bit-interleaving scheme)."""
    colors = np.zeros((num_colors, 3), dtype=np.uint8)
    for index in range(num_colors):
        value, r, g, b = index, 0, 0, 0
        for bit in range(8):
            r |= ((value >> 0) & 1) << (7 - bit)
            g |= ((value >> 1) & 1) << (7 - bit)
            b |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        colors[index] = (r, g, b)
    return colors


def write_label_png(path: str | Path, labels: np.ndarray, *, colorize: bool = False) -> None:
    """Save a label map: class indices as an 8- or 16-bit grayscale PNG, or a palette PNG with ``colorize``."""
    image_module = _pillow()
    if labels.ndim != 2:
        raise ValueError(f"labels must be H×W, got shape {labels.shape}")
    if colorize:
        if labels.max(initial=0) > 255:
            raise ValueError("--color supports at most 256 classes; write indices instead")
        image = image_module.fromarray(labels.astype(np.uint8), mode="P")
        image.putpalette(palette().ravel().tolist())
    elif labels.max(initial=0) <= 255:
        image = image_module.fromarray(labels.astype(np.uint8), mode="L")
    else:
        image = image_module.fromarray(labels.astype(np.uint16), mode="I;16")
    image.save(Path(path), format="PNG")

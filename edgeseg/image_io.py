"""Image files in and label maps out (Pillow, imported lazily: ``pip install 'edgeseg[image]'``)."""

from __future__ import annotations

import os
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgeseg.imaging import ImageError, ImageFileError, as_rgb_uint8

# Files larger than this many pixels are refused from their header, before any pixel is decoded
# (a 20 KB PNG can claim 12000×12000 pixels: 430 MB as RGB, several GB through the pipeline).
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
MAX_PIXELS_ENV = "EDGESEG_MAX_IMAGE_PIXELS"

# The raster formats read_image opens (JPEG includes MPO); others (EPS and PDF run external programs, ...) are refused.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM", "TGA")

# What Pillow's decoders raise on malformed files, besides OSError (truncated, unidentified).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, KeyError, TypeError)


def _pillow() -> ModuleType:
    """Pillow's ``PIL.Image`` module, or an ImportError that says how to install it."""
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("reading and writing image files needs Pillow: pip install 'edgeseg[image]'") from None
    return Image


def max_image_pixels() -> int:
    """The pixel limit of :func:`read_image`: ``$EDGESEG_MAX_IMAGE_PIXELS`` when set, else the default."""
    text = os.environ.get(MAX_PIXELS_ENV)
    if text is None:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        return _check_limit(int(text))
    except ValueError:
        raise ValueError(f"{MAX_PIXELS_ENV}={text!r} is not a positive whole number of pixels") from None


def _check_limit(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    return max_pixels


@contextmanager
def _open(path: Path, max_pixels: int | None) -> Iterator[Any]:
    """The image at ``path`` opened (header only) and checked against the pixel limit."""
    image_module = _pillow()
    limit = max_image_pixels() if max_pixels is None else _check_limit(max_pixels)
    if not path.exists():
        raise FileNotFoundError(f"image {path} does not exist")
    if not path.is_file():
        raise ImageFileError(path, "is not a file; pass an image file")
    if path.stat().st_size == 0:
        raise ImageFileError(path, "is empty (0 bytes); pass an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            image = image_module.open(path, formats=IMAGE_FORMATS)
    except image_module.DecompressionBombError as error:
        raise ImageFileError(
            path,
            f"is too large ({error}); edgeseg reads at most {limit:,} pixels ({MAX_PIXELS_ENV} or max_pixels= "
            "raise that; beyond Pillow's limit raise PIL.Image.MAX_IMAGE_PIXELS too)",
        ) from None
    except _DECODE_ERRORS as error:
        raise ImageFileError(
            path, f"is not a readable {', '.join(IMAGE_FORMATS)} image ({type(error).__name__}: {error})"
        ) from None
    with image:
        width, height = image.size
        if width * height > limit:
            raise ImageFileError(
                path,
                f"is {height}x{width} (HxW) = {width * height:,} pixels, over the limit of {limit:,}; to read larger "
                f"images set {MAX_PIXELS_ENV} or pass max_pixels=",
            )
        yield image


def _frame_count(image: Any, path: Path) -> int:
    """Frames of an animation or multi-page file; an MPO (a camera's JPEG with previews) is its primary picture."""
    if image.format == "MPO":
        return 1
    try:
        return int(getattr(image, "n_frames", 1))
    except _DECODE_ERRORS as error:
        raise ImageFileError(path, f"its frames cannot be counted ({type(error).__name__}: {error})") from None


def _decode(image: Any, path: Path, frame: int | None = None) -> np.ndarray:
    """The current frame of an opened image as uint8 RGB H×W×3, errors naming the file (and the frame)."""
    where = path if frame is None else f"{path} frame {frame}"
    image_module = _pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", image_module.DecompressionBombWarning)
            image.load()
            return as_rgb_uint8(image)
    except ImageError as error:
        raise ImageFileError(where, str(error)) from None
    except (image_module.DecompressionBombError, *_DECODE_ERRORS) as error:
        raise ImageFileError(
            where, f"the {image.format} data is corrupt or truncated ({type(error).__name__}: {error})"
        ) from None


def read_image(path: str | Path, *, max_pixels: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB H×W×3, upright by its EXIF orientation.

    Palette, grayscale, CMYK and alpha images are converted to RGB; 16-bit images are scaled to 8 bits
    (``round(v / 257)``; Pillow keeps the high byte of 16-bit RGB PNGs); float images must hold values
    0..1 (scaled by 255) and are refused otherwise. Files of more than ``max_pixels`` pixels (default
    :func:`max_image_pixels`) are refused from their header. Animations and multi-page files are refused:
    read them with :func:`read_frames`. Every problem with the file raises :class:`ImageFileError` naming
    it (:class:`FileNotFoundError` when it does not exist).
    """
    path = Path(path)
    with _open(path, max_pixels) as image:
        frames = _frame_count(image, path)
        if frames > 1:
            raise ImageFileError(
                path,
                f"has {frames} frames (a {image.format} animation or multi-page file) and read_image reads one "
                "picture; use edgeseg.image_io.read_frames for all of them (e.g. with Segmenter.stream), or save "
                "the frame you want as its own file",
            )
        return _decode(image, path)


def read_frames(path: str | Path, *, max_pixels: int | None = None) -> Iterator[np.ndarray]:
    """Every frame of an animation or multi-page file (one frame for a still image), lazily, as in :func:`read_image`.

    ``max_pixels`` applies to one frame; a bad frame raises :class:`ImageFileError` naming it.
    """
    path = Path(path)
    with _open(path, max_pixels) as image:
        for index in range(_frame_count(image, path)):
            try:
                image.seek(index)
            except _DECODE_ERRORS as error:
                raise ImageFileError(
                    f"{path} frame {index}", f"cannot be read ({type(error).__name__}: {error})"
                ) from None
            yield _decode(image, path, index)


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


# Label-map image formats by file suffix: Pillow's format name, and whether it holds class indices exactly (as one
# grey channel); the others are for --color masks only.
LABEL_IMAGE_FORMATS = {
    ".png": ("PNG", True),
    ".bmp": ("BMP", True),
    ".tif": ("TIFF", True),
    ".tiff": ("TIFF", True),
    ".webp": ("WEBP", False),  # written lossless, but as RGB
    ".jpg": ("JPEG", False),
    ".jpeg": ("JPEG", False),
}


def write_label_png(
    path: str | Path,
    labels: np.ndarray,
    *,
    colorize: bool = False,
    colors: np.ndarray | None = None,
    image_format: str = "PNG",
) -> None:
    """Save a label map: class indices as an 8- or 16-bit grayscale PNG, or a palette PNG with ``colorize``.

    ``colors`` (256×3 uint8) is the palette; default :func:`palette`. ``image_format`` is a value of
    :data:`LABEL_IMAGE_FORMATS` (PNG unless the caller checked the suffix); colours are written as RGB where the
    format has no palette (JPEG, WEBP).
    """
    image_module = _pillow()
    if labels.ndim != 2:
        raise ValueError(f"labels must be H×W, got shape {labels.shape}")
    if colorize:
        if labels.max(initial=0) > 255:
            raise ValueError("--color supports at most 256 classes; write indices instead")
        image = image_module.fromarray(labels.astype(np.uint8), mode="P")
        image.putpalette((palette() if colors is None else np.asarray(colors, dtype=np.uint8)).ravel().tolist())
    elif labels.max(initial=0) <= 255:
        image = image_module.fromarray(labels.astype(np.uint8), mode="L")
    else:
        if image_format != "PNG":
            raise ValueError(f"{labels.max()} classes need 16-bit indices, which only PNG holds; write a .png")
        image = image_module.fromarray(labels.astype(np.uint16), mode="I;16")
    if image_format in ("JPEG", "WEBP") and image.mode == "P":
        image = image.convert("RGB")
    options = {"lossless": True} if image_format == "WEBP" else {"quality": 95} if image_format == "JPEG" else {}
    image.save(Path(path), format=image_format, **options)

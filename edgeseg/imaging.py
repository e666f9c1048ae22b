"""Image handling for inference: input checks, bilinear resizing, normalisation, label maps (numpy; OpenCV optional).

PIL images are accepted too (Pillow is imported only to turn an EXIF-rotated one upright).

Resizing follows ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False)``:
half-pixel centres, source coordinates clamped at 0, neighbour indices clamped at the last pixel. It is
computed one axis at a time with index gathers, so its cost is linear in the number of output pixels.
Where OpenCV is installed (the ``video`` extra) and its float32 ``INTER_LINEAR`` resize gives bit-identical
results for a pair of sizes, uint8 images are resized by it instead (5-10x faster): the pair is probed once, on
a random uint8 image of the full size, and the numpy rule runs wherever OpenCV's result differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, lru_cache
from itertools import pairwise
from typing import Any

import numpy as np

# Approximate bytes of float32 working memory per chunk of labels_from_logits when chunk_rows is not given.
LABEL_CHUNK_BYTES = 32 << 20


class ImageError(ValueError):
    """An image passed to the runtime is not something it can segment; the message says how to fix it."""


class ImageFileError(ImageError):
    """An image file cannot be segmented (corrupt, truncated, too large, animated, ...); ``path`` names it."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path


class FrameError(ImageError):
    """A frame given to ``Segmenter.stream`` is not a usable image; ``index`` is its 0-based position."""

    def __init__(self, index: int, problem: ImageError) -> None:
        super().__init__(f"frame {index}: {problem}")
        self.index = index


_HOW = "pass an H×W×3 uint8 RGB array (values 0..255)"

# PIL modes read as 16-bit gray levels 0..65535 ("I" is 32-bit, as Pillow opens some 16-bit files).
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_EXIF_ORIENTATION = 0x0112


def _is_pil(image: Any) -> bool:
    return isinstance(getattr(image, "mode", None), str) and callable(getattr(image, "convert", None))


def _upright(image: Any) -> Any:
    """``image`` turned as its EXIF orientation tag says (a camera's rotated JPEG), else unchanged."""
    orientation = image.getexif().get(_EXIF_ORIENTATION) if callable(getattr(image, "getexif", None)) else None
    if orientation in (None, 1):
        return image
    from PIL import ImageOps

    return ImageOps.exif_transpose(image)


def _scale_16bit(gray: np.ndarray, mode: str) -> np.ndarray:
    """16-bit gray levels 0..65535 → uint8 0..255 by ``round(v / 257)`` (65535 → 255, exact at both ends)."""
    low, high = int(gray.min(initial=0)), int(gray.max(initial=0))
    if low < 0 or high > 65535:
        raise ImageError(
            f"got a 32-bit integer ('{mode}') image with values {low}..{high}; edgeseg reads integer images as "
            "16-bit gray levels 0..65535: convert it to 8-bit RGB first"
        )
    return ((gray.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _scale_unit_float(gray: np.ndarray) -> np.ndarray:
    """Float gray levels 0..1 → uint8 0..255 by ``round(v * 255)``; other ranges are refused (ambiguous)."""
    if not np.isfinite(gray).all():
        raise ImageError("got a floating-point ('F') image containing NaN or inf; convert it to 8-bit RGB first")
    low, high = float(gray.min(initial=0.0)), float(gray.max(initial=0.0))
    if low < 0.0 or high > 1.0:
        raise ImageError(
            f"got a floating-point ('F') image with values {low:g}..{high:g}; edgeseg reads float images as "
            "gray levels 0..1: rescale it to 0..1 or convert it to 8-bit RGB first"
        )
    return np.rint(gray.astype(np.float64) * 255.0).astype(np.uint8)


def _from_pil(image: Any) -> Any:
    """A PIL image of any mode as a uint8 array (RGB, or H×W gray); other objects pass through.

    The image is first turned upright by its EXIF orientation. 16-bit modes ('I;16*', and 'I' with values
    0..65535) are scaled to 0..255 by ``round(v / 257)``; float ('F') images must hold values 0..1 and are
    scaled by 255 (other ranges raise :class:`ImageError`); every other mode is ``.convert("RGB")``-ed
    (palette, CMYK, ...; alpha is dropped). Pillow's decoding errors become :class:`ImageError`.
    """
    if not _is_pil(image):
        return image
    try:
        image = _upright(image)
        if image.mode in _SIXTEEN_BIT_MODES:
            return _scale_16bit(np.asarray(image), image.mode)
        if image.mode == "F":
            return _scale_unit_float(np.asarray(image))
        return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except ImageError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError, TypeError) as error:
        raise ImageError(f"could not decode the {image.mode} PIL image ({type(error).__name__}: {error})") from None


def _dtype_error(arr: np.ndarray) -> ImageError:
    """Explain why ``arr``'s dtype is refused and how to convert it."""
    kind = arr.dtype.kind
    if kind == "b":
        return ImageError(f"got a boolean array (a mask?), not an image; {_HOW}")
    if kind == "f":
        finite = bool(np.isfinite(arr).all())
        problem = "" if finite else " containing NaN or inf"
        hint = ""
        if finite and arr.size and float(arr.min()) >= 0.0 and float(arr.max()) <= 1.0:
            hint = ", e.g. (image * 255).round().clip(0, 255).astype(np.uint8) for values in 0..1"
        return ImageError(f"got a {arr.dtype} image{problem}; convert it to uint8 RGB 0..255{hint}")
    if kind in "iu":
        return ImageError(
            f"got a {arr.dtype} image; convert it to uint8 RGB 0..255 "
            "(scale 16-bit images down, e.g. (image >> 8).astype(np.uint8))"
        )
    return ImageError(f"got an array of dtype {arr.dtype}, not an image; {_HOW}")


def as_rgb_uint8(image: Any) -> np.ndarray:
    """Check an input image and return it as a C-contiguous H×W×3 uint8 RGB array.

    Accepts an H×W×3 uint8 array (returned without copying when already contiguous). Converts an H×W or
    H×W×1 grayscale array (replicated to 3 channels), an H×W×4 RGBA array (alpha dropped) and a PIL image
    (upright by its EXIF orientation; 16-bit and float modes scaled, see :func:`_from_pil`). Arrays of other
    dtypes are refused, not guessed. Anything else raises :class:`ImageError` saying what to do.
    """
    if isinstance(image, (str, bytes, bytearray)) or hasattr(image, "__fspath__"):
        raise ImageError(
            f"got {type(image).__name__} {image!r:.80}, not pixels; load the file first, "
            "e.g. np.asarray(PIL.Image.open(path).convert('RGB'))"
        )
    pixels = _from_pil(image)
    try:
        arr = np.asarray(pixels)
    except (TypeError, ValueError) as exc:
        raise ImageError(f"could not read a {type(image).__name__} as an array ({exc}); {_HOW}") from None
    if arr.dtype.kind not in "biuf":
        raise ImageError(f"got {type(image).__name__} (array dtype {arr.dtype}), not an image; {_HOW}")
    if arr.ndim not in (2, 3):
        raise ImageError(f"got an array of shape {arr.shape} ({arr.ndim} dimensions); {_HOW}")
    if 0 in arr.shape:
        raise ImageError(f"got an empty image of shape {arr.shape}; every side must be at least 1 pixel")
    if arr.ndim == 3 and arr.shape[2] not in (1, 3, 4):
        hint = ""
        if arr.shape[0] in (1, 3, 4):
            hint = "; it looks channels-first (C×H×W): use image.transpose(1, 2, 0)"
        raise ImageError(
            f"got {arr.shape[2]} channels (shape {arr.shape}); expected H×W×3 RGB, "
            f"H×W×4 RGBA or H×W / H×W×1 grayscale{hint}"
        )
    if arr.dtype != np.uint8:
        raise _dtype_error(arr)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def _axis_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Neighbour indices ``i0, i1`` and float32 weights ``w0, w1`` for resizing one axis (half-pixel)."""
    src = (np.arange(out_size, dtype=np.float64) + 0.5) * (in_size / out_size) - 0.5
    np.maximum(src, 0.0, out=src)
    i0 = np.minimum(src.astype(np.intp), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0).astype(np.float32)
    return i0, i1, np.float32(1.0) - w1, w1


def _blend(a: np.ndarray, axis: int, i0: np.ndarray, i1: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """``a[i0] * w0 + a[i1] * w1`` along ``axis`` (float32 result)."""
    shape = [1] * a.ndim
    shape[axis] = -1
    out = np.take(a, i0, axis=axis) * w0.reshape(shape)
    out += np.take(a, i1, axis=axis) * w1.reshape(shape)
    return out


def _resize_axis(a: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """Bilinearly resize ``a`` along one axis; a no-op when the size already matches."""
    if a.shape[axis] == out_size:
        return a
    return _blend(a, axis, *_axis_weights(a.shape[axis], out_size))


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    """Validate an (height, width) pair of positive ints."""
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"size must be positive, got {(h, w)}")
    return h, w


def parse_size(text: str) -> tuple[int, int]:
    """``'512x512'`` or ``'352x480'`` (height × width) → (H, W)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size {text!r} is not HEIGHTxWIDTH, e.g. 512x512")
    h, w = (int(p) for p in parts)
    if h <= 0 or w <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return h, w


def _numpy_resize(src: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The resize rule in numpy, one axis at a time; float32 result (a new array)."""
    out = _resize_axis(_resize_axis(src, 1, size[1]), 0, size[0])
    return out.astype(np.float32, copy=out is src)


@cache
def _opencv() -> Any:
    """The cv2 module, or None where OpenCV is not installed."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def _opencv_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """OpenCV's float32 bilinear resize of an H×W×C image (half-pixel centres, like the rule)."""
    cv2 = _opencv()
    src = np.ascontiguousarray(image, dtype=np.float32)
    out = cv2.resize(src, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(size[0], size[1], src.shape[2])


@lru_cache(maxsize=64)
def _opencv_is_exact(shape: tuple[int, int, int], size: tuple[int, int]) -> bool:
    """Whether OpenCV resizes uint8 images of ``shape`` to ``size`` bit-identically to the numpy rule.

    Probed on random uint8 values at the full shape (a coordinate or weight that differs, or arithmetic in another
    order, shows in some of its pixels). On float values OpenCV's arithmetic does differ in the last bit, so
    float images always take the numpy rule; so do more than 4 channels and sides from 2**15.
    """
    if _opencv() is None or shape[2] > 4 or max(*shape[:2], *size) >= 1 << 15:
        return False
    probe = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    try:
        fast = _opencv_resize(probe, size)
    except _opencv().error:
        return False
    return bool(np.array_equal(fast, _numpy_resize(probe, size)))


def resize_bilinear(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize an H×W×C array (uint8 or float) to ``size`` = (h, w); returns float32 h×w×C.

    Matches ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)`` on the NCHW tensor.
    A uint8 image is resized by OpenCV where it is installed and gives the numpy rule's result for these sizes.
    """
    h, w = _check_size(size)
    if image.ndim != 3 or 0 in image.shape:
        raise ValueError(f"expected a non-empty H×W×C array, got shape {image.shape}")
    if image.dtype == np.uint8 and _opencv_is_exact(image.shape, (h, w)):
        return _opencv_resize(image, (h, w))
    src = image if image.dtype == np.uint8 else image.astype(np.float32, copy=False)
    return _numpy_resize(src, (h, w))


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(image - mean) / std`` of an H×W×3 image, as a contiguous 1×3×H×W float32 tensor.

    Computed one channel at a time into the output (float32, the same operations as the broadcast formula).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 image, got shape {image.shape}")
    m = np.asarray(mean, dtype=np.float32).reshape(3)
    s = np.asarray(std, dtype=np.float32).reshape(3)
    if not np.all(s != 0):
        raise ValueError(f"std must be non-zero, got {list(std)}")
    out = np.empty((1, 3, *image.shape[:2]), dtype=np.float32)
    for c in range(3):
        np.subtract(image[:, :, c], m[c], out=out[0, c], dtype=np.float32)
        np.divide(out[0, c], s[c], out=out[0, c])
    return out


def _label_dtype(num_classes: int) -> type[np.integer]:
    """Smallest unsigned dtype holding ``num_classes`` labels (int32 beyond uint16)."""
    if num_classes <= 256:
        return np.uint8
    if num_classes <= 65536:
        return np.uint16
    return np.int32


# A candidate class is kept unless its largest corner value is below the best smallest one by more than this many
# float32 ulps of the cell's largest magnitude: the blends round, so a bound must leave room for their error.
PRUNE_ULPS = 16


@dataclass(frozen=True)
class _Cells:
    """The output pixels grouped by the 2×2 source pixels they blend: cell (a, b) covers the output rows whose
    upper source row is ``a`` and the columns whose left source column is ``b`` (bilinear, half-pixel)."""

    rows: np.ndarray  # per source row a: its output rows start at rows[a] ...
    row_counts: np.ndarray  # ... and there are row_counts[a] of them
    cols: np.ndarray
    col_counts: np.ndarray
    wy: tuple[np.ndarray, np.ndarray]  # per output row: weights of its upper and lower source rows
    wx: tuple[np.ndarray, np.ndarray]  # per output column: weights of its left and right source columns

    @classmethod
    def of(cls, source: tuple[int, int], size: tuple[int, int]) -> _Cells:
        (h, w), (height, width) = source, size
        y0, _, wy0, wy1 = _axis_weights(h, height)
        x0, _, wx0, wx1 = _axis_weights(w, width)
        row_counts, col_counts = np.bincount(y0, minlength=h), np.bincount(x0, minlength=w)
        rows = np.concatenate([[0], np.cumsum(row_counts)[:-1]])
        cols = np.concatenate([[0], np.cumsum(col_counts)[:-1]])
        return cls(rows, row_counts, cols, col_counts, (wy0, wy1), (wx0, wx1))


def _blend_cells(logits: np.ndarray, cells: _Cells, ca: np.ndarray, cb: np.ndarray, labels: np.ndarray) -> None:
    """Argmax of the upsampled logits in the cells ``(ca, cb)``, over the classes that can win there.

    A blend is a convex combination of the 4 corners, so class k's value in a cell lies between its smallest and
    largest corner value; a class whose largest corner is below another class's smallest corner never wins there.
    The kept classes, in class order (ties go to the lowest), are blended exactly as a full upsampling would
    (width first, then height, float32), in chunks of bounded memory.
    """
    num_classes, h, w = logits.shape
    step = max(1, LABEL_CHUNK_BYTES // (num_classes * 4 * 12))  # the corners, their bounds and the masks
    for start in range(0, ca.size, step):
        a, b = ca[start : start + step], cb[start : start + step]
        a1, b1 = np.minimum(a + 1, h - 1), np.minimum(b + 1, w - 1)
        corners = np.stack([logits[:, a, b], logits[:, a, b1], logits[:, a1, b], logits[:, a1, b1]])  # 4×C×m
        low, high = corners.min(axis=0), corners.max(axis=0)
        slack = PRUNE_ULPS * np.finfo(np.float32).eps * np.abs(corners).max(axis=(0, 1))
        candidate = high >= low.max(axis=0) - slack  # C×m
        counts = candidate.sum(axis=0)
        k = 1
        while k < 2 * num_classes:  # cells grouped by their number of candidates (up to k)
            group = np.nonzero((counts <= k) & (counts > k // 2))[0]
            k_group = min(k, num_classes)
            per_cell = k_group * int(cells.row_counts.max()) * int(cells.col_counts.max()) * 4 * 3
            for first in range(0, group.size, max(1, LABEL_CHUNK_BYTES // per_cell)):
                chosen = group[first : first + max(1, LABEL_CHUNK_BYTES // per_cell)]
                classes = np.argsort(~candidate[:, chosen], axis=0, kind="stable")[:k_group]  # candidates first
                q = np.take_along_axis(corners[:, :, chosen], classes[None], axis=1)  # 4×k×m, in class order
                _blend_block(q, classes, cells, a[chosen], b[chosen], labels)
            k *= 2


def _first_max(values: np.ndarray) -> np.ndarray:
    """``values.argmax(axis=1)`` (the first of equal maxima) for the few candidates of a cell, as a chain of
    comparisons: numpy's argmax over a middle axis is several times slower."""
    best, index = values[:, 0], np.zeros(values.shape[:1] + values.shape[2:], dtype=np.intp)
    for k in range(1, values.shape[1]):
        larger = values[:, k] > best
        best = np.where(larger, values[:, k], best)
        index[larger] = k
    return index


def _blend_block(
    q: np.ndarray, classes: np.ndarray, cells: _Cells, a: np.ndarray, b: np.ndarray, labels: np.ndarray
) -> None:
    """Write the argmax of the cells (a, b) into ``labels``: ``q`` (4×k×m) holds their corners' values of the
    classes ``classes`` (k×m). Cells of the same height and width (2 of each at most) are blended together,
    as exact rectangles: no padding to mask out, and a plain block assignment."""
    heights, widths = cells.row_counts[a], cells.col_counts[b]
    for height, width in np.unique(np.stack([heights, widths], axis=1), axis=0):
        chosen = np.nonzero((heights == height) & (widths == width))[0]
        rows = cells.rows[a[chosen]][:, None] + np.arange(height)  # m×height
        cols = cells.cols[b[chosen]][:, None] + np.arange(width)  # m×width
        wx0, wx1 = cells.wx[0][cols][:, None, :], cells.wx[1][cols][:, None, :]  # m×1×width
        corners = q[:, :, chosen]
        upper = corners[0].T[:, :, None] * wx0
        upper += corners[1].T[:, :, None] * wx1
        lower = corners[2].T[:, :, None] * wx0
        lower += corners[3].T[:, :, None] * wx1  # m×k×width
        blended = upper[:, :, None, :] * cells.wy[0][rows][:, None, :, None]
        blended += lower[:, :, None, :] * cells.wy[1][rows][:, None, :, None]  # m×k×height×width
        winners = classes[:, chosen].T[np.arange(chosen.size)[:, None, None], _first_max(blended)]
        labels[rows[:, :, None], cols[:, None, :]] = winners


# Below this many output pixels in boundary cells a label map is blended in the calling thread alone.
PARALLEL_MIN_PIXELS = 1 << 15


@cache
def _label_pool(workers: int) -> ThreadPoolExecutor:
    """The threads that blend boundary cells for ``labels_from_logits(..., workers=workers)``."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgeseg-labels")


def labels_from_logits(logits: np.ndarray, size: Sequence[int], workers: int = 1) -> np.ndarray:
    """Label map of ``size`` = (H, W) from C×h×w logits: bilinear upsampling then argmax over classes.

    The same result as upsampling the whole C×H×W tensor (``align_corners=False``) and taking the argmax,
    in bounded memory and mostly without upsampling: a pixel's logits are a bilinear blend of the 4
    source pixels around it, and the difference of two classes' blends is bilinear, so it is smallest at
    one of those corners. Where one class wins at all 4 corners it wins at every pixel between them; only
    pixels whose corners disagree (near class boundaries) are blended. Ties go to the lowest class.
    dtype uint8 for C ≤ 256, uint16 for C ≤ 65536, else int32. ``workers`` threads share the boundary cells
    (their pixels are disjoint; numpy releases the GIL): for one frame on an idle CPU, not while a model runs.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if logits.ndim != 3 or 0 in logits.shape:
        raise ValueError(f"expected non-empty C×h×w logits, got shape {logits.shape}")
    height, width = _check_size(size)
    num_classes, h, w = logits.shape
    dtype = _label_dtype(num_classes)
    coarse = logits.argmax(axis=0)
    if (height, width) == (h, w):
        return coarse.astype(dtype)
    cells = _Cells.of((h, w), (height, width))
    below, right = np.minimum(np.arange(h) + 1, h - 1), np.minimum(np.arange(w) + 1, w - 1)
    mixed = (coarse != coarse[below]) | (coarse != coarse[:, right]) | (coarse != coarse[below][:, right])
    mixed &= (cells.row_counts > 0)[:, None] & (cells.col_counts > 0)[None, :]  # cells that hold output pixels
    labels = np.repeat(np.repeat(coarse.astype(dtype), cells.row_counts, axis=0), cells.col_counts, axis=1)
    ca, cb = np.nonzero(mixed)
    source = logits.astype(np.float32, copy=False)
    if workers == 1 or ca.size * int(cells.row_counts.max()) * int(cells.col_counts.max()) < PARALLEL_MIN_PIXELS:
        if ca.size:
            _blend_cells(source, cells, ca, cb, labels)
        return labels
    bounds = [ca.size * i // workers for i in range(workers + 1)]
    pool = _label_pool(workers)
    parts = [pool.submit(_blend_cells, source, cells, ca[i:j], cb[i:j], labels) for i, j in pairwise(bounds)]
    for part in parts:
        part.result()
    return labels

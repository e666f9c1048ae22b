"""A procedural segmentation set: textured shapes of five classes over textured backgrounds (numpy + Pillow).

Every object class has its own shape family and its own texture family at its own frequency, so a class
can be told locally, from a patch of texture, as well as from its outline. Variation: 4-8 objects per
image drawn in turn (later ones occlude earlier ones; rings show what lies under their hole), size,
aspect, rotation (of the shape and its texture), hue jitter around the class hue, texture period jitter,
four background textures (class ``background``), and lighting: a brightness gradient, contrast and noise.

Image ``i`` of a set is rendered from ``numpy.random.default_rng((seed, i))`` alone, so a set is fully
determined by its seed and any image can be rendered without the others.
"""

from __future__ import annotations

import colorsys
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.data.dataset import (
    FORMAT,
    IMAGE_DIR,
    INDEX_FILE,
    LABEL_DIR,
    VERSION,
    SegmentationSet,
    open_dataset,
)
from edgeseg.files import FolderKind, output_path, staged_folder
from edgeseg.image_io import _pillow, palette
from edgeseg.imaging import resize_bilinear

DATASET_FOLDER = FolderKind("edgeseg dataset", INDEX_FILE, FORMAT)
GENERATOR = "edgeseg-synthetic"
GENERATOR_VERSION = 1
IGNORE_INDEX = 255
MIN_SIZE = 32
PNG_COMPRESS_LEVEL = 1  # zlib level: fast to write, still deterministic


@dataclass(frozen=True)
class ObjectClass:
    """One object class: its shape family, texture family, texture period (pixels) and hue (0..1)."""

    name: str
    shape: str
    texture: str
    period: float
    hue: float


OBJECT_CLASSES = (
    ObjectClass("disc", "ellipse", "stripes", 7.0, 0.00),
    ObjectClass("box", "rectangle", "checker", 16.0, 0.20),
    ObjectClass("triangle", "triangle", "dots", 9.0, 0.40),
    ObjectClass("star", "star", "speckle", 3.0, 0.60),
    ObjectClass("ring", "ring", "waves", 12.0, 0.80),
)
CLASSES = ("background", *(c.name for c in OBJECT_CLASSES))
BACKGROUNDS = ("clouds", "gradient", "plaid", "marble")

OBJECTS_PER_IMAGE = (4, 8)  # inclusive range
RADIUS_FRACTION = (0.06, 0.2)  # of the image's shorter side
HUE_JITTER = 0.12  # ± around the class hue; class hues are 0.2 apart, so neighbours overlap in colour
PERIOD_JITTER = (0.85, 1.2)


# ---- shapes: local coordinates in radius units (p along the shape's axis, q across) → inside mask ----


def _ellipse(p: np.ndarray, q: np.ndarray, aspect: float) -> np.ndarray:
    return (p / aspect) ** 2 + (q * aspect) ** 2 <= 1.0


def _rectangle(p: np.ndarray, q: np.ndarray, aspect: float) -> np.ndarray:
    return (np.abs(p) <= 0.85 * aspect) & (np.abs(q) <= 0.85 / aspect)


def _triangle(p: np.ndarray, q: np.ndarray, aspect: float) -> np.ndarray:
    """Isosceles triangle inscribed in the unit circle, stretched along p by ``aspect``."""
    p = p / aspect
    inside = q >= -0.5
    for angle in (np.pi / 6, 5 * np.pi / 6):  # outward normals of the two slanted edges
        inside &= p * np.cos(angle) + q * np.sin(angle) <= 0.5
    return inside


def _star(p: np.ndarray, q: np.ndarray, aspect: float) -> np.ndarray:
    """Five-pointed star: the radius swings between 0.45 and 1 with the polar angle."""
    radius = np.hypot(p / aspect, q)
    phase = np.abs(((np.arctan2(q, p) * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at the points, 0 between
    return radius <= 0.45 + 0.55 * phase**2


def _ring(p: np.ndarray, q: np.ndarray, aspect: float) -> np.ndarray:
    radius = np.hypot(p / aspect, q * aspect)
    return (radius <= 1.0) & (radius >= 0.55)


SHAPES: dict[str, Callable[[np.ndarray, np.ndarray, float], np.ndarray]] = {
    "ellipse": _ellipse,
    "rectangle": _rectangle,
    "triangle": _triangle,
    "star": _star,
    "ring": _ring,
}


# ---- textures: local pixel coordinates (u, v), period → mix weight 0..1 between two colours ----


def _square(phase: np.ndarray) -> np.ndarray:
    """A square wave of period 1 with soft (about anti-aliased) edges, values 0..1."""
    return np.clip(0.5 + 2.0 * np.sin(2 * np.pi * phase), 0.0, 1.0)


def _stripes(u: np.ndarray, v: np.ndarray, period: float, key: int) -> np.ndarray:
    return _square(u / period)


def _checker(u: np.ndarray, v: np.ndarray, period: float, key: int) -> np.ndarray:
    return np.clip(0.5 + 3.0 * np.sin(np.pi * u / period) * np.sin(np.pi * v / period), 0.0, 1.0)


def _dots(u: np.ndarray, v: np.ndarray, period: float, key: int) -> np.ndarray:
    du, dv = u / period, v / period
    distance = np.hypot(du - np.round(du), dv - np.round(dv)) * period
    return np.clip(0.3 * period - distance + 0.5, 0.0, 1.0)


def _speckle(u: np.ndarray, v: np.ndarray, period: float, key: int) -> np.ndarray:
    """Random cells of side ``period``: an integer hash of the cell, so exact on every machine."""
    i = np.floor(u / period).astype(np.int64)
    j = np.floor(v / period).astype(np.int64)
    hashed = (i * 73856093) ^ (j * 19349663) ^ (key * 83492791)
    hashed = (hashed ^ (hashed >> 13)) * 1274126177
    return ((hashed >> 16) & 255).astype(np.float32) / 255.0


def _waves(u: np.ndarray, v: np.ndarray, period: float, key: int) -> np.ndarray:
    return _square(u / period + 0.3 * np.sin(2 * np.pi * v / (2.5 * period)))


TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray, float, int], np.ndarray]] = {
    "stripes": _stripes,
    "checker": _checker,
    "dots": _dots,
    "speckle": _speckle,
    "waves": _waves,
}


# ---- colours ----


def _rgb(hue: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(hue % 1.0, saturation, value), dtype=np.float32) * 255.0


def _object_colours(hue: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A light and a dark colour around the class hue (hue jittered per object)."""
    hue += rng.uniform(-HUE_JITTER, HUE_JITTER)
    light = _rgb(hue, rng.uniform(0.45, 0.95), rng.uniform(0.6, 1.0))
    dark = _rgb(hue + rng.uniform(-0.03, 0.03), rng.uniform(0.3, 0.9), rng.uniform(0.15, 0.45))
    return light, dark


def _background_colours(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two colours of any hue, mostly unsaturated, of moderate contrast."""
    hue = rng.uniform(0, 1)
    first = _rgb(hue, rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.9))
    second = _rgb(hue + rng.uniform(-0.15, 0.15), rng.uniform(0.05, 0.5), rng.uniform(0.35, 0.9))
    return first, second


# ---- rendering ----


def _grid(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column pixel coordinates (H×1 and 1×W float32)."""
    h, w = size
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


def _smooth_noise(size: tuple[int, int], cells: int, rng: np.random.Generator) -> np.ndarray:
    """H×W float32 value noise in 0..1: a ``cells``-wide random grid, bilinearly upsampled."""
    h, w = size
    grid = rng.random((max(2, cells * h // max(h, w)), max(2, cells * w // max(h, w)), 1), dtype=np.float32)
    return resize_bilinear(grid, size)[:, :, 0]


def _background_weight(kind: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The mix weight (H×W float32, 0..1) of one background texture."""
    ys, xs = _grid(size)
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    along, across = cos * xs + sin * ys, cos * ys - sin * xs
    side = max(size)
    if kind == "clouds":
        return _smooth_noise(size, int(rng.integers(3, 9)), rng)
    if kind == "gradient":
        return (along - along.min()) / np.float32(max(float(along.max() - along.min()), 1.0))
    if kind == "plaid":
        p1, p2 = (np.float32(2 * np.pi / (rng.uniform(0.08, 0.2) * side)) for _ in range(2))
        return np.float32(0.5) + np.float32(0.25) * (np.sin(along * p1) + np.sin(across * p2))
    frequency = np.float32(1 / (rng.uniform(0.1, 0.25) * side))  # marble: wavy bands bent by smooth noise
    noise = _smooth_noise(size, int(rng.integers(3, 7)), rng)
    return np.float32(0.5) + np.float32(0.5) * np.sin(np.float32(2 * np.pi) * (along * frequency + 1.5 * noise))


def _background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A 3×H×W float32 (channels first: whole rows per numpy loop) background of a random texture and colours."""
    kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    weight = _background_weight(kind, size, rng)
    first, second = _background_colours(rng)
    return np.stack([a + weight * (b - a) for a, b in zip(first, second)])


def _draw_object(image: np.ndarray, labels: np.ndarray, class_index: int, rng: np.random.Generator) -> None:
    """Paint one object of class ``class_index`` (1-based) over ``image`` (3×H×W) and ``labels``, in place."""
    spec = OBJECT_CLASSES[class_index - 1]
    h, w = labels.shape
    radius = max(4.0, rng.uniform(*RADIUS_FRACTION) * min(h, w))
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    angle, aspect = rng.uniform(0, 2 * np.pi), rng.uniform(0.75, 1.35)
    period = spec.period * rng.uniform(*PERIOD_JITTER)
    light, dark = _object_colours(spec.hue, rng)
    key = int(rng.integers(1 << 20))
    reach = radius * 1.4
    y0, y1 = int(max(0, cy - reach)), int(min(h, cy + reach + 1))
    x0, x1 = int(max(0, cx - reach)), int(min(w, cx + reach + 1))
    if y0 >= y1 or x0 >= x1:
        return
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u, v = cos * xs + sin * ys, cos * ys - sin * xs
    mask = SHAPES[spec.shape](u / np.float32(radius), v / np.float32(radius), aspect)
    weight = TEXTURES[spec.texture](u, v, period, key)[mask]
    image[:, y0:y1, x0:x1][:, mask] = dark[:, None] + weight * (light - dark)[:, None]
    labels[y0:y1, x0:x1][mask] = class_index


def _object_classes(rng: np.random.Generator) -> np.ndarray:
    """The classes of one image's objects, in drawing order: every class once, then random ones."""
    count = int(rng.integers(OBJECTS_PER_IMAGE[0], OBJECTS_PER_IMAGE[1] + 1))
    classes = rng.permutation(len(OBJECT_CLASSES)) + 1
    extra = rng.integers(1, len(OBJECT_CLASSES) + 1, size=max(0, count - len(classes)))
    return rng.permutation(np.concatenate([classes, extra])[:count])


def _light(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness gradient, contrast about mid-grey and luminance noise on a 3×H×W image; returns H×W×3 uint8."""
    h, w = image.shape[1:]
    ys, xs = _grid((h, w))
    level, slope_x, slope_y = rng.uniform(0.75, 1.15), rng.uniform(-0.35, 0.35), rng.uniform(-0.35, 0.35)
    contrast, sigma = rng.uniform(0.7, 1.15), rng.uniform(1.0, 6.0)
    gain = (level + slope_x * (xs / w - 0.5) + slope_y * (ys / h - 0.5)) * contrast
    offset = rng.standard_normal((h, w), dtype=np.float32) * np.float32(sigma)
    offset += np.float32(128 * (1 - contrast) + 0.5)  # +0.5: round when truncating to uint8
    image *= gain
    image += offset
    return np.ascontiguousarray(np.clip(image, 0, 255, out=image).astype(np.uint8).transpose(1, 2, 0))


def render(seed: int, index: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the set of ``seed``: (H×W×3 uint8 RGB, H×W uint8 class indices)."""
    rng = np.random.default_rng((seed, index))
    image = _background(size, rng)
    labels = np.zeros(size, dtype=np.uint8)
    for class_index in _object_classes(rng):
        _draw_object(image, labels, int(class_index), rng)
    return _light(image, rng), labels


def _check_request(count: int, size: tuple[int, int], seed: int, val_fraction: float) -> None:
    """Raise a ValueError that says how to fix an invalid request."""
    if count < 2:
        raise ValueError(f"count must be at least 2 (one train and one val image), got {count}")
    if min(size) < MIN_SIZE:
        raise ValueError(f"size {size[0]}x{size[1]} is too small; both sides must be at least {MIN_SIZE} pixels")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def split_stems(stems: list[str], val_fraction: float) -> dict[str, list[str]]:
    """The last ``round(len · val_fraction)`` stems (at least 1, at most all but 1) are val, the rest train.

    Images are independent draws, so the last ones are as random a sample as any.
    """
    n_val = min(len(stems) - 1, max(1, round(len(stems) * val_fraction)))
    return {"train": stems[:-n_val], "val": stems[-n_val:]}


def _write_pair(folder: Path, stem: str, image: np.ndarray, labels: np.ndarray) -> None:
    """Save ``images/<stem>.png`` (RGB) and ``labels/<stem>.png`` (L)."""
    pil = _pillow()
    pil.fromarray(image, mode="RGB").save(folder / IMAGE_DIR / f"{stem}.png", compress_level=PNG_COMPRESS_LEVEL)
    pil.fromarray(labels, mode="L").save(folder / LABEL_DIR / f"{stem}.png", compress_level=PNG_COMPRESS_LEVEL)


def _index(count: int, size: tuple[int, int], seed: int, val_fraction: float, splits: dict, pixels: np.ndarray) -> dict:
    """The ``dataset.json`` content of a synthetic set (``pixels``: pixel count of each class over all images)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "classes": list(CLASSES),
        "palette": palette(len(CLASSES)).tolist(),
        "ignore_index": IGNORE_INDEX,
        "splits": splits,
        "generator": {
            "name": GENERATOR,
            "version": GENERATOR_VERSION,
            "seed": seed,
            "count": count,
            "size": list(size),
            "val_fraction": val_fraction,
            "objects": {c.name: {"shape": c.shape, "texture": c.texture, "period": c.period} for c in OBJECT_CLASSES},
            "backgrounds": list(BACKGROUNDS),
            "pixel_fractions": {c: round(float(n / pixels.sum()), 4) for c, n in zip(CLASSES, pixels)},
        },
    }


def generate_synthetic(
    out: Path,
    count: int,
    size: tuple[int, int],
    seed: int = 0,
    val_fraction: float = 0.2,
    force: bool = False,
) -> SegmentationSet:
    """Write a synthetic segmentation set of ``count`` images of ``size`` = (H, W) to ``out``; returns it opened.

    The folder is written in a hidden sibling and swapped into place when complete (see ``edgeseg.files``);
    ``force`` replaces an existing edgeseg dataset, never another folder.
    """
    size = (int(size[0]), int(size[1]))
    _check_request(count, size, seed, val_fraction)
    with staged_folder(Path(out), DATASET_FOLDER, force) as stage:
        staging = stage.folder
        (staging / IMAGE_DIR).mkdir()
        (staging / LABEL_DIR).mkdir()
        width = max(5, len(str(count - 1)))
        stems = [f"{index:0{width}d}" for index in range(count)]
        pixels = np.zeros(len(CLASSES), dtype=np.int64)
        for index, stem in enumerate(stems):
            image, labels = render(seed, index, size)
            _write_pair(staging, stem, image, labels)
            pixels += np.bincount(labels.ravel(), minlength=len(CLASSES))
        index_data = _index(count, size, seed, val_fraction, split_stems(stems, val_fraction), pixels)
        (staging / INDEX_FILE).write_text(json.dumps(index_data, indent=1) + "\n")
    return open_dataset(output_path(Path(out)))

"""Real images for calibration and the parity ladder, prepared by the bundle's own pre-processing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.image_io import read_image

Preprocess = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ImageSet:
    """Model inputs made from images, with each image's size and (where known) its label map."""

    inputs: list[np.ndarray]
    image_sizes: list[tuple[int, int]]
    labels: list[np.ndarray | None]
    description: str

    @property
    def labelled(self) -> bool:
        return bool(self.labels) and all(label is not None for label in self.labels)


def image_files(source: Path, split: str) -> list[Path]:
    """Images of a segmentation set's ``split``, or of a plain folder of images."""
    from edgeseg.data import DatasetError, list_images, open_dataset

    try:
        dataset = open_dataset(source)
    except DatasetError:
        files = list_images(source)
    else:
        files = [sample.image for sample in dataset.samples(split)]
    if not files:
        raise FileNotFoundError(f"no images in {source}; pass a folder of .png/.jpg images or a segmentation set")
    return files


def calibration_set(source: Path, preprocess: Preprocess, count: int, name: str | None = None) -> ImageSet:
    """Up to ``count`` images of ``source`` (a set's train split, or an image folder), evenly spread.

    ``name`` describes the source in reports (default: its path).
    """
    files = image_files(source, "train")
    chosen = [files[i] for i in np.linspace(0, len(files) - 1, min(count, len(files))).round().astype(int)]
    rgbs = [read_image(f) for f in chosen]
    return ImageSet(
        [preprocess(rgb) for rgb in rgbs],
        [rgb.shape[:2] for rgb in rgbs],
        [None] * len(rgbs),
        f"{len(chosen)} images of {name or source}",
    )


def parity_set(source: Path, preprocess: Preprocess, count: int, num_classes: int, name: str | None = None) -> ImageSet:
    """Up to ``count`` held-out images (a set's val split, with labels when its classes match the model's)."""
    name = name or str(source)
    from edgeseg.data import DatasetError, open_dataset, read_sample

    labels: list[np.ndarray | None]
    try:
        dataset = open_dataset(source)
    except DatasetError:
        files = image_files(source, "val")[:count]
        rgbs, labels = [read_image(f) for f in files], [None] * len(files)
        what = f"{len(files)} unlabelled images of {name}"
    else:
        samples = dataset.samples("val")[:count]
        pairs = [read_sample(s) for s in samples]
        rgbs = [rgb for rgb, _ in pairs]
        use_labels = len(dataset.classes) == num_classes
        labels = [label if use_labels else None for _, label in pairs]
        what = f"{len(samples)} val images of {name}" + (
            ", labelled" if use_labels else f" (its {len(dataset.classes)} classes are not the model's {num_classes})"
        )
    return ImageSet([preprocess(rgb) for rgb in rgbs], [rgb.shape[:2] for rgb in rgbs], labels, what)


def synthetic_source(folder: Path, size: tuple[int, int], count: int, seed: int) -> Path:
    """Generate a synthetic segmentation set of ``count`` images into ``folder`` (for models without data)."""
    from edgeseg.data import generate_synthetic

    generate_synthetic(folder, count=count, size=size, seed=seed, val_fraction=0.5)
    return folder

"""Segmentation sets on disk: ``dataset.json`` plus ``images/<stem>.png`` and ``labels/<stem>.png`` (numpy + Pillow).

Layout of a set folder::

    dataset.json        {"format": "edgeseg-segmentation-set", "version": 1, "classes": [...], "palette": [...],
                         "ignore_index": 255, "splits": {"train": [stems], "val": [stems]}, "generator": {...}}
    images/<stem>.png   RGB uint8
    labels/<stem>.png   mode "L": the class index of every pixel (``ignore_index`` where unlabelled)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.image_io import _pillow, read_image

FORMAT = "edgeseg-segmentation-set"
VERSION = 1
INDEX_FILE = "dataset.json"
IMAGE_DIR = "images"
LABEL_DIR = "labels"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
ALL_SPLITS = "all"


class DatasetError(ValueError):
    """A dataset folder or sample cannot be used; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Sample:
    """One image file and its label file (``None`` when the sample is unlabelled)."""

    image: Path
    label: Path | None


@dataclass(frozen=True)
class SegmentationSet:
    """An opened dataset folder: class names, the label value to ignore and the stems of each split."""

    root: Path
    classes: tuple[str, ...]
    ignore_index: int
    splits: dict[str, tuple[str, ...]]

    def samples(self, split: str = "val") -> list[Sample]:
        """The samples of ``split`` (a split name or ``"all"``); a missing label file gives ``label=None``."""
        if split == ALL_SPLITS:
            stems = [stem for names in self.splits.values() for stem in names]
        elif split in self.splits:
            stems = list(self.splits[split])
        else:
            choices = ", ".join(repr(name) for name in (*self.splits, ALL_SPLITS))
            raise DatasetError(f"{self.root} has no split {split!r}; choose one of {choices}")
        return [self._sample(stem) for stem in stems]

    def _sample(self, stem: str) -> Sample:
        label = self.root / LABEL_DIR / f"{stem}.png"
        return Sample(self.root / IMAGE_DIR / f"{stem}.png", label if label.is_file() else None)


def _invalid(index: Path, problem: str) -> DatasetError:
    """The :class:`DatasetError` to raise when ``index`` has ``problem``."""
    return DatasetError(f"{index}: {problem}; write it with `edgeseg data synthetic` or fix the file")


def _read_index(root: Path) -> dict[str, Any]:
    """The parsed ``dataset.json`` of ``root``, with its format and version checked."""
    if not root.is_dir():
        raise DatasetError(
            f"dataset folder {root} does not exist; create one with `edgeseg data synthetic --out {root}`"
        )
    index = root / INDEX_FILE
    if not index.is_file():
        raise DatasetError(
            f"{root} has no {INDEX_FILE}, so it is not an edgeseg dataset; create one with "
            "`edgeseg data synthetic`, or pass a plain folder of images where any folder is accepted"
        )
    try:
        meta = json.loads(index.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetError(f"{index} is not valid JSON ({error}); regenerate the dataset") from None
    if not (isinstance(meta, dict) and meta.get("format") == FORMAT):
        raise _invalid(index, f"format is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise _invalid(index, f"version {meta.get('version')!r} is not {VERSION}")
    return meta


def open_dataset(root: str | Path) -> SegmentationSet:
    """Open a dataset folder written in the edgeseg segmentation-set format."""
    root = Path(root)
    meta = _read_index(root)
    index = root / INDEX_FILE
    classes, splits, ignore = meta.get("classes"), meta.get("splits"), meta.get("ignore_index", 255)
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise _invalid(index, "'classes' must be a non-empty list of names")
    if not (isinstance(splits, dict) and all(isinstance(s, list) for s in splits.values())):
        raise _invalid(index, "'splits' must map split names to lists of file stems")
    if not (isinstance(ignore, int) and 0 <= ignore <= 255):
        raise _invalid(index, "'ignore_index' must be an integer 0..255")
    return SegmentationSet(
        root=root,
        classes=tuple(classes),
        ignore_index=ignore,
        splits={name: tuple(str(stem) for stem in stems) for name, stems in splits.items()},
    )


def read_label(path: str | Path) -> np.ndarray:
    """A label PNG (mode "L") as an H×W uint8 array of class indices."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"label file {path} does not exist; regenerate the dataset or remove its stem")
    with _pillow().open(path) as image:
        if image.mode != "L":
            raise DatasetError(f"label {path} has mode {image.mode!r}; labels must be 8-bit grayscale ('L') PNGs")
        return np.asarray(image)


def read_sample(sample: Sample) -> tuple[np.ndarray, np.ndarray | None]:
    """``(H×W×3 uint8 RGB image, H×W uint8 labels or None)``; image and labels must have the same size."""
    if not sample.image.is_file():
        raise DatasetError(f"image file {sample.image} does not exist; regenerate the dataset or remove its stem")
    image = read_image(sample.image)
    if sample.label is None:
        return image, None
    labels = read_label(sample.label)
    if labels.shape != image.shape[:2]:
        raise DatasetError(
            f"label {sample.label} is {labels.shape[0]}x{labels.shape[1]} (HxW) but its image is "
            f"{image.shape[0]}x{image.shape[1]}; labels must have their image's size"
        )
    return image, labels


def list_images(folder: str | Path) -> list[Path]:
    """The images of a plain folder (png/jpg/jpeg/bmp, sorted by name), or a dataset folder's train split."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"image folder {folder} does not exist; pass a folder of images or a dataset folder")
    if (folder / INDEX_FILE).is_file():
        return [sample.image for sample in open_dataset(folder).samples("train")]
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise DatasetError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)}); pass a folder with images in it")
    return images

"""Dataset presets: class names and the colours their official tools draw them in (torch-free).

The tables live in ``class_presets.json`` beside this module, each with the source it was transcribed from.
``--classes PRESET`` (and ``--weights``, through the checkpoint's dataset) puts a preset's names and palette into
a bundle's manifest; ``predict --color`` then draws labels in those colours.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np

PRESETS_FILE = "class_presets.json"


@dataclass(frozen=True)
class ClassPreset:
    """The classes of one dataset: ``classes[i]`` is class index ``i``, drawn in ``palette[i]`` (RGB)."""

    name: str
    title: str
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _preset(name: str, data: dict[str, Any]) -> ClassPreset:
    classes = tuple(data["classes"])
    palette = tuple((int(r), int(g), int(b)) for r, g, b in data["palette"])
    if len(palette) != len(classes) or not all(0 <= v <= 255 for rgb in palette for v in rgb):
        raise ValueError(f"{PRESETS_FILE}: preset {name!r} needs one 0..255 RGB colour per class")
    return ClassPreset(name, data["title"], classes, palette, data["source"])


@functools.cache
def presets() -> dict[str, ClassPreset]:
    """Every preset by name (``ade20k``, ``cityscapes``, ``voc``, ``coco-stuff``)."""
    text = resources.files("edgeseg").joinpath(PRESETS_FILE).read_text(encoding="utf-8")
    return {name: _preset(name, data) for name, data in json.loads(text)["presets"].items()}


def get_preset(name: str) -> ClassPreset:
    """The preset called ``name``; an unknown name raises with the known ones."""
    try:
        return presets()[name]
    except KeyError:
        raise ValueError(f"unknown class preset {name!r}; choose one of {', '.join(presets())}") from None


def label_palette(colors: list[tuple[int, int, int]] | tuple[tuple[int, int, int], ...] | None) -> np.ndarray:
    """A 256×3 uint8 colour table: ``colors`` for the first classes, edgeseg's default palette for the rest."""
    from edgeseg.image_io import palette

    table = palette()
    if colors:
        table[: min(len(colors), 256)] = np.asarray(colors[:256], dtype=np.uint8)
    return table

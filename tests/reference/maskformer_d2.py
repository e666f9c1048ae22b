"""Reference data of the official MaskFormer for the variants the golden data lacks, and the recipe both sides build
its random weights with.

``../shared/golden/maskformer_r50`` covers R50 only. ``make_maskformer_d2.py`` (run in a separate environment with
facebookresearch/MaskFormer and detectron2 v0.6 from source) built the official model of each other ADE20K config,
loaded weights from :func:`random_weights`, and stored its key names and shapes and a seeded sample of its outputs in
``maskformer_<variant>.json``. The test rebuilds the same weights from the stored names and shapes, so the files stay
small (no tensors).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = Path(__file__).resolve().parent
# edgeseg variant -> the official config (MaskFormer/configs/ade20k-150/...) it is built from.
CONFIGS = {
    "r101": "maskformer_R101_bs16_160k.yaml",
    "r101c": "maskformer_R101c_bs16_160k.yaml",
    "swin-t": "swin/maskformer_swin_tiny_bs16_160k.yaml",
    "swin-s": "swin/maskformer_swin_small_bs16_160k.yaml",
    "swin-b": "swin/maskformer_swin_base_IN21k_384_bs16_160k_res640.yaml",
    "swin-l": "swin/maskformer_swin_large_IN21k_384_bs16_160k_res640.yaml",
}
SIZE = (256, 320)  # (height, width) of the input: multiples of 32, not of Swin's window (padding is exercised)
# Buffers the official model computes itself: not drawn, not stored (edgeseg rebuilds them too).
COMPUTED = (".relative_position_index",)


def random_weights(keys: list[tuple[str, list[int]]], seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights for the named shapes, in that order, scaled as a trained network's are: weights
    normal / √fan-in, biases and running means small, norm scales and running variances near 1."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in keys:
        if name.endswith("num_batches_tracked"):
            weights[name] = np.zeros(shape, np.int64)
            continue
        if name.endswith("running_var"):
            values = rng.random(shape) * 1.5 + 0.5
        elif name.endswith("relative_position_bias_table"):
            values = rng.standard_normal(shape) * 0.5
        elif len(shape) >= 2:  # conv, linear, embedding and attention projection weights
            values = rng.standard_normal(shape) / math.sqrt(math.prod(shape[1:]))
        elif name.endswith(".weight"):  # norm scales
            values = rng.random(shape) + 0.5
        else:  # biases and running means
            values = rng.standard_normal(shape) * 0.1
        weights[name] = values.astype(np.float32)
    return weights


def input_image(seed: int = 1) -> np.ndarray:
    """The normalised 1×3×H×W input (fed to the backbone, as the golden data's is)."""
    return np.random.default_rng(seed).standard_normal((1, 3, *SIZE)).astype(np.float32)


def reference(variant: str) -> dict[str, Any]:
    """The stored reference of one variant: ``keys``, ``config``, ``params`` and its sampled ``outputs``."""
    return json.loads((FOLDER / f"maskformer_{variant}.json").read_text())

"""Reference data of mmsegmentation's SETR, and the recipe both sides build its random weights with.

The official SETR code's golden data lives in ``../shared/golden``; mmsegmentation's port of SETR differs from it
(see :mod:`edgeseg.models.setr`) and has none, so ``make_mmseg_setr.py`` (run in a separate environment with
mmsegmentation 1.2.2, mmengine 0.10.7 and mmcv-lite 2.1.0) ran mmseg's own modules on weights from
:func:`random_weights` and stored their key names and shapes and a seeded sample of their outputs in
``mmseg_setr_<head>_tiny.json``. The test rebuilds the same weights from the stored names and shapes, so the
files stay small (no tensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

FOLDER = Path(__file__).resolve().parent
HEADS = ("naive", "pup", "mla")
# (height, width) of the inputs: the configured square size, and a non-square one (position embedding resized).
SIZES = ((256, 256), (192, 320))


def random_weights(keys: list[tuple[str, list[int]]], seed: int = 0) -> dict[str, np.ndarray]:
    """float32 weights for the named shapes, in that order: BatchNorm statistics and norms' scales near their
    usual values (running_var positive), everything else small normal values."""
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in keys:
        values = rng.standard_normal(shape)
        if name.endswith("num_batches_tracked"):
            weights[name] = np.zeros(shape, np.int64)
            continue
        if name.endswith("running_var"):
            values = 0.5 + 0.5 * np.abs(values)
        elif name.endswith(".weight") and len(shape) == 1:  # LayerNorm and BatchNorm scales
            values = 1.0 + 0.1 * values
        else:
            values = 0.05 * values
        weights[name] = values.astype(np.float32)
    return weights


def input_image(size: tuple[int, int], seed: int = 1) -> np.ndarray:
    """The normalised 1×3×H×W input."""
    return np.random.default_rng(seed).standard_normal((1, 3, *size)).astype(np.float32)


def reference(head: str) -> dict[str, Any]:
    """The stored reference of one head: ``keys``, ``config`` and per input size its sampled outputs."""
    return json.loads((FOLDER / f"mmseg_setr_{head}_tiny.json").read_text())

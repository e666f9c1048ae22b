"""Parity of exported artifacts against the PyTorch reference (logits at the model's native stride)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


class ParityError(RuntimeError):
    """An artifact's outputs differ from the reference by more than the tolerance."""


@dataclass(frozen=True)
class ParityInputs:
    """Deterministic test inputs: standard-normal tensors and normalised random uint8 images."""

    arrays: list[np.ndarray]
    description: str


def make_inputs(
    input_size: tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...], count: int = 3, seed: int = 0
) -> ParityInputs:
    """``count`` inputs: the first is a normalised random image, the rest N(0, 1)."""
    rng = np.random.default_rng(seed)
    h, w = input_size
    arrays = []
    for i in range(count):
        if i == 0:
            image = rng.integers(0, 256, size=(h, w, 3)).astype(np.float32)
            x = ((image - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)).transpose(2, 0, 1)[None]
        else:
            x = rng.standard_normal((1, 3, h, w), dtype=np.float32)
        arrays.append(np.ascontiguousarray(x, dtype=np.float32))
    description = f"{count} inputs (seed {seed}): 1 normalised uniform-random uint8 image, {count - 1} N(0,1)"
    return ParityInputs(arrays, description)


def compare(reference: list[np.ndarray], candidate: list[np.ndarray]) -> dict[str, float]:
    """Max / mean absolute difference and argmax agreement over all inputs."""
    diffs = [np.abs(r.astype(np.float64) - c.astype(np.float64)) for r, c in zip(reference, candidate)]
    agree = [np.mean(r.argmax(axis=1) == c.argmax(axis=1)) for r, c in zip(reference, candidate)]
    return {
        "max_abs": float(max(d.max() for d in diffs)),
        "mean_abs": float(np.mean([d.mean() for d in diffs])),
        "argmax_agreement": float(np.mean(agree)),
    }


def measure(
    reference: list[np.ndarray], infer: Callable[[np.ndarray], np.ndarray], inputs: ParityInputs
) -> dict[str, float]:
    """Run ``infer`` on every input and compare with the reference outputs."""
    outputs = [infer(x) for x in inputs.arrays]
    for ref, out in zip(reference, outputs):
        if ref.shape != out.shape:
            raise ParityError(f"output shape {out.shape} differs from the reference {ref.shape}")
    return compare(reference, outputs)

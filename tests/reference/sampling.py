"""The seeded sample of an output that reference files keep instead of the whole tensor."""

from __future__ import annotations

import numpy as np

SAMPLES = 1024  # output values kept per output


def sample_positions(shape: tuple[int, ...], seed: int = 2) -> tuple[np.ndarray, ...]:
    """Seeded indices into a batch-1 output of any rank: the values the reference keeps."""
    rng = np.random.default_rng(seed)
    return (np.zeros(SAMPLES, np.int64), *(rng.integers(0, side, SAMPLES) for side in shape[1:]))


def sampled(values: np.ndarray) -> dict[str, object]:
    """An output as a reference file stores it: its shape and its sampled values (9 significant digits)."""
    return {
        "shape": list(values.shape),
        "values": [float(f"{v:.9g}") for v in values[sample_positions(values.shape)]],
    }

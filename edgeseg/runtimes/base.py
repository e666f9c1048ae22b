"""The interface every inference backend implements, so that backends are interchangeable."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np


class BackendUnavailableError(ImportError):
    """The Python package a backend needs is not installed."""


@runtime_checkable
class Runner(Protocol):
    """One loaded model on one backend: a single float32 input, a single float32 output."""

    name: str
    threads: int | None
    input_shape: tuple[int | None, ...]  # None for a dynamic dimension
    output_shape: tuple[int | None, ...]

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the model on ``x`` and return its output as a float32 array the caller owns."""
        ...


def check_threads(threads: int | None) -> int | None:
    """Validate a thread count: None (backend default) or a positive int."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int or None (backend default), got {threads!r}")
    return threads


def model_shape(dims: Iterable[object]) -> tuple[int | None, ...]:
    """A backend's view of a shape as ints, with None for every symbolic (dynamic) dimension."""
    return tuple(d if isinstance(d, int) and not isinstance(d, bool) and d >= 0 else None for d in dims)

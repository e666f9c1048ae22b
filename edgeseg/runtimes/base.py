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

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Static shape of the model input."""
        ...

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Static shape of the model output."""
        ...

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


def static_shape(dims: Iterable[object], what: str) -> tuple[int, ...]:
    """A shape of ints, or a ValueError naming ``what`` if any dimension is dynamic (not an int)."""
    shape = tuple(dims)
    if not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ValueError(f"{what} has a dynamic shape {shape}; edgeseg bundles have static shapes")
    return shape

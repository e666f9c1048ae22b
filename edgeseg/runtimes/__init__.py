"""Interchangeable inference backends; each lives in its own module and imports its package lazily.

To add a backend, write ``edgeseg/runtimes/<name>.py`` with a subclass of :class:`~edgeseg.runtimes.base.Runner`
(constructor ``(path, threads=None, config=None)``) and register it in ``_RUNNERS``. Every runner is safe to share
between threads and is closed with ``close()`` or a ``with`` block.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edgeseg.runtimes.base import BackendUnavailableError, Runner, RunnerClosedError

__all__ = [
    "BACKENDS",
    "BackendUnavailableError",
    "Runner",
    "RunnerClosedError",
    "available_backends",
    "create_runner",
]

# backend name -> (module defining its runner, runner class, Python package it needs)
_RUNNERS: dict[str, tuple[str, str, str]] = {
    "onnxruntime": ("edgeseg.runtimes.onnxruntime", "OnnxRuntimeRunner", "onnxruntime"),
    "openvino": ("edgeseg.runtimes.openvino", "OpenVINORunner", "openvino"),
    "tensorrt": ("edgeseg.runtimes.tensorrt", "TensorRTRunner", "tensorrt"),
}
BACKENDS: tuple[str, ...] = tuple(_RUNNERS)


def available_backends() -> list[str]:
    """Backends whose Python package is installed (checked without importing it)."""
    return [name for name, (*_, package) in _RUNNERS.items() if importlib.util.find_spec(package) is not None]


def create_runner(
    backend: str,
    path: str | Path,
    *,
    threads: int | None = None,
    config: Mapping[str, Any] | None = None,
) -> Runner:
    """Load the model at ``path`` on ``backend`` with ``threads`` and backend-specific ``config``."""
    if backend not in _RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    module_name, class_name, _ = _RUNNERS[backend]
    runner_class: Callable[..., Runner] = getattr(importlib.import_module(module_name), class_name)
    return runner_class(path, threads=threads, config=config)

"""OpenVINO backend (CPU plugin), reading OpenVINO IR or ONNX."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.runtimes.base import BackendUnavailableError, check_threads, model_shape


def _import_openvino() -> Any:
    """Import openvino, or explain how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError("the openvino backend needs OpenVINO: pip install 'edgeseg[openvino]'") from exc
    return openvino


def _shape(port: Any) -> tuple[int | None, ...]:
    """Shape of an OpenVINO model port; None for a dynamic dimension."""
    return model_shape(d.get_length() if d.is_static else None for d in port.get_partial_shape())


class OpenVINORunner:
    """A model compiled for OpenVINO's CPU plugin with a latency hint and a single infer request.

    ``threads`` sets ``INFERENCE_NUM_THREADS``; ``config`` adds compile properties. Pass
    ``{"INFERENCE_PRECISION_HINT": "f32"}`` for fp32 results: on CPUs with bf16/AMX support OpenVINO
    otherwise runs in bf16.
    """

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, config: Mapping[str, Any] | None = None) -> None:
        ov = _import_openvino()
        self.path = Path(path)
        self.threads = check_threads(threads)
        core = ov.Core()
        model = core.read_model(str(self.path))
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ValueError(
                f"{self.path}: expected one input and one output, got {len(model.inputs)} and {len(model.outputs)}"
            )
        properties: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads is not None:
            properties["INFERENCE_NUM_THREADS"] = self.threads
        properties.update(config or {})
        self._compiled = core.compile_model(model, "CPU", properties)
        self.input_shape = _shape(self._compiled.input(0))
        self.output_shape = _shape(self._compiled.output(0))
        self._request = self._compiled.create_infer_request()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Run the infer request on ``x`` (made contiguous float32) and return a copy of the output."""
        self._request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
        return np.array(self._request.get_output_tensor(0).data, dtype=np.float32, copy=True)

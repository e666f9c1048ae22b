"""OpenVINO backend (CPU plugin), reading OpenVINO IR or ONNX."""

from __future__ import annotations

import queue
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from edgeseg.runtimes.base import BackendUnavailableError, Runner

Result = TypeVar("Result")


def _import_openvino() -> Any:
    """Import openvino, or explain how to install it."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError("the openvino backend needs OpenVINO: pip install 'edgeseg[openvino]'") from exc
    return openvino


def _dims(port: Any) -> list[int | None]:
    """Dimensions of an OpenVINO model port; None for a dynamic one."""
    return [d.get_length() if d.is_static else None for d in port.get_partial_shape()]


class OpenVINORunner(Runner):
    """A model compiled for OpenVINO's CPU plugin with a latency hint, and a pool of infer requests.

    ``threads`` sets ``INFERENCE_NUM_THREADS``; ``config`` adds compile properties. Pass
    ``{"INFERENCE_PRECISION_HINT": "f32"}`` for fp32 results: on CPUs with bf16/AMX support OpenVINO
    otherwise runs in bf16.

    Thread-safe: a compiled model may be used from several threads, but an infer request runs one inference
    at a time and holds its input and output tensors (OpenVINO raises "Infer Request is busy", or a caller
    reads another caller's output). So each call takes an idle request from a pool, or creates one when every
    request is in use, and returns a copy of its own output; the pool grows to the number of concurrent
    callers. The same requests can serve a pipelined (``start_async``) mode later.
    """

    name = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, threads, config)
        ov = _import_openvino()
        core = ov.Core()
        model = core.read_model(str(self.path))
        self._record_io(  # before compiling
            [_dims(p) for p in model.inputs],
            [_dims(p) for p in model.outputs],
            [p.get_any_name() if p.get_names() else f"output{i}" for i, p in enumerate(model.outputs)],
            model.inputs[0].get_element_type().to_dtype().name if len(model.inputs) == 1 else "float32",
        )
        properties: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if self.threads is not None:
            properties["INFERENCE_NUM_THREADS"] = self.threads
        properties.update(config or {})
        self._compiled = core.compile_model(model, "CPU", properties)
        self._idle_requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(int(self._compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))):
            self._idle_requests.put(self._compiled.create_infer_request())

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Run ``x`` (made contiguous float32) on an infer request of its own and return a copy of the output."""
        return self._on_request(x, lambda request: np.array(request.get_output_tensor(0).data, np.float32, copy=True))

    def _infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run ``x`` (contiguous, of the input's dtype) and return a copy of every output by name."""

        def outputs(request: Any) -> dict[str, np.ndarray]:
            return {
                name: np.array(request.get_output_tensor(i).data, copy=True) for i, name in enumerate(self.output_names)
            }

        return self._on_request(np.ascontiguousarray(x, dtype=self.input_dtype), outputs)

    def _on_request(self, x: np.ndarray, read: Callable[[Any], Result]) -> Result:
        """Infer ``x`` on an idle request (a new one when all are busy) and ``read`` its outputs before returning it."""
        try:
            request = self._idle_requests.get_nowait()
        except queue.Empty:
            request = self._compiled.create_infer_request()
        try:
            request.infer({0: np.ascontiguousarray(x, dtype=x.dtype if x.dtype == np.uint8 else np.float32)})
            return read(request)
        finally:
            self._idle_requests.put(request)

    def lanes(self, count: int) -> list[Runner]:
        """One model compiled with ``NUM_STREAMS`` = ``count`` (OpenVINO's throughput mode: the threads split
        among the streams, one inference per stream at once), shared by the ``count`` lanes."""
        if isinstance(count, bool) or not isinstance(count, int) or count < 2:  # one lane, or the base's error
            return super().lanes(count)
        config = self.config | {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": count}
        return [OpenVINORunner(self.path, threads=self.threads, config=config)] * count

    def _release(self) -> None:
        """Drop the infer requests and the compiled model (OpenVINO frees them with their last reference)."""
        del self._idle_requests, self._compiled

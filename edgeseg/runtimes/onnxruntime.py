"""ONNX Runtime backend (CPUExecutionProvider)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.runtimes.base import BackendUnavailableError, Runner


def _import_onnxruntime() -> Any:
    """Import onnxruntime, or explain how to install it."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            "the onnxruntime backend needs ONNX Runtime: pip install 'edgeseg[onnxruntime]'"
        ) from exc
    return onnxruntime


class OnnxRuntimeRunner(Runner):
    """An ONNX graph in an ONNX Runtime InferenceSession on the CPU.

    ``threads`` sets the intra-op thread pool (ORT's default: one per physical core); inter-op parallelism is
    off (sequential execution). ``config`` entries are passed as session config entries, e.g.
    ``{"session.intra_op.allow_spinning": "0"}``.

    Thread-safe without a lock: ONNX Runtime documents that multiple threads may call ``Run`` on the same
    InferenceSession concurrently (https://onnxruntime.ai/docs/get-started/with-c.html, "Features": "Multiple
    threads can invoke the Run() method on the same inference session object"); every call gets its own output.
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, threads, config)
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
        for key, value in (config or {}).items():
            options.add_session_config_entry(str(key), str(value))
        self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        input_dtype = {"tensor(float)": "float32", "tensor(uint8)": "uint8"}.get(inputs[0].type, inputs[0].type)
        self._record_io([i.shape for i in inputs], [o.shape for o in outputs], [o.name for o in outputs], input_dtype)
        self._input_name, self._output_name = inputs[0].name, outputs[0].name

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Run the session on ``x`` (made contiguous float32) and return the float32 output."""
        feed = {self._input_name: np.ascontiguousarray(x, dtype=np.float32)}
        (out,) = self._session.run([self._output_name], feed)
        return np.asarray(out, dtype=np.float32)

    def _infer_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run the session on ``x`` (made contiguous, of the input's dtype) and return every output by name."""
        feed = {self._input_name: np.ascontiguousarray(x, dtype=self.input_dtype)}
        return dict(zip(self.output_names, self._session.run(list(self.output_names), feed)))

    def _release(self) -> None:
        """Drop the session (ONNX Runtime frees it with its last reference)."""
        del self._session

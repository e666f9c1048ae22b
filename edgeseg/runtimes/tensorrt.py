"""TensorRT backend (NVIDIA GPUs): run a serialized engine, or the cached engine of an ONNX graph.

The build and the engine cache are in :mod:`edgeseg.runtimes.tensorrt_engine`. Unverified on this project's
machines (no NVIDIA GPU, no TensorRT): written against the TensorRT 10.x/11.x tensor-address API
(``set_tensor_address``, ``execute_async_v3``) and cuda-python's runtime bindings.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.runtimes.base import Runner
from edgeseg.runtimes.tensorrt_engine import EngineOptions, cached_engine, cuda_call, import_cudart, import_tensorrt

ENGINE_SUFFIXES = (".engine", ".plan")


def _free_device_memory(cudart: Any, buffers: dict[str, tuple[int, int]], stream: Any) -> None:
    """Free the device buffers and destroy the stream (a finalizer: it must not reference the runner)."""
    for pointer, _ in buffers.values():
        cudart.cudaFree(pointer)
    buffers.clear()
    cudart.cudaStreamDestroy(stream)


class TensorRTRunner(Runner):
    """A TensorRT engine on the current GPU, one execution context and one CUDA stream.

    ``path`` is a ``.engine``/``.plan`` file, or an ``.onnx`` graph whose engine is built once (strongly typed:
    the precision is the graph's) and cached (see :mod:`edgeseg.runtimes.tensorrt_engine`). ``config`` holds
    :class:`~edgeseg.runtimes.tensorrt_engine.EngineOptions` keys: ``cache_dir``, ``workspace_mb``, ``tf32`` and,
    for graphs with dynamic height/width, ``dynamic_range`` = [[min_h, min_w], [opt_h, opt_w], [max_h, max_w]].
    ``threads`` is validated and recorded but has no effect: inference runs on the GPU.

    Thread-safe by serialising: the execution context, its stream and device buffers serve one call at a time.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, threads: int | None = None, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(path, threads, config)
        options = EngineOptions.from_config(config)
        if self.path.suffix not in (*ENGINE_SUFFIXES, ".onnx"):
            raise ValueError(f"{self.path}: the tensorrt backend loads .engine/.plan files or .onnx graphs")
        trt = import_tensorrt()
        self._cudart = import_cudart()
        engine_file = self.path if self.path.suffix in ENGINE_SUFFIXES else cached_engine(self.path, options)
        self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_file.read_bytes())
        if self._engine is None:
            raise RuntimeError(
                f"{engine_file} could not be loaded: engines only run on the TensorRT version and GPU that built "
                "them; delete it (an .onnx path rebuilds it) or rebuild it on this machine"
            )
        self._input, self._output = self._io_names(trt)
        self._record_io([self._engine.get_tensor_shape(self._input)], [self._engine.get_tensor_shape(self._output)])
        self._input_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        self._output_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._output)))
        self._context = self._engine.create_execution_context()
        self._lock = threading.Lock()
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        self._stream = cuda_call(self._cudart, self._cudart.cudaStreamCreate())
        self._free = weakref.finalize(self, _free_device_memory, self._cudart, self._buffers, self._stream)

    def _io_names(self, trt: Any) -> tuple[str, str]:
        """The engine's input and output tensor names; it must have one of each."""
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"{self.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        return inputs[0], outputs[0]

    def _device_buffer(self, name: str, nbytes: int) -> int:
        """A device allocation of at least ``nbytes`` for tensor ``name``, grown when a larger input needs it."""
        pointer, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if pointer:
                cuda_call(self._cudart, self._cudart.cudaFree(pointer))
            pointer = int(cuda_call(self._cudart, self._cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (pointer, nbytes)
        self._context.set_tensor_address(name, pointer)
        return pointer

    def _infer(self, x: np.ndarray) -> np.ndarray:
        """Copy ``x`` to the GPU, run the engine on the stream, copy the output back as float32 (one call at a time)."""
        with self._lock:
            return self._run(x)

    def _run(self, x: np.ndarray) -> np.ndarray:
        """One inference on the context and stream; the caller holds the lock."""
        cudart, stream = self._cudart, self._stream
        host_in = np.ascontiguousarray(x, dtype=self._input_dtype)
        if not self._context.set_input_shape(self._input, host_in.shape):
            raise ValueError(f"input shape {host_in.shape} is outside the engine's profile for {self.input_shape}")
        host_out = np.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=self._output_dtype)
        device_in = self._device_buffer(self._input, host_in.nbytes)
        device_out = self._device_buffer(self._output, host_out.nbytes)
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        cuda_call(cudart, cudart.cudaMemcpyAsync(device_in, host_in.ctypes.data, host_in.nbytes, to_device, stream))
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError(f"TensorRT failed to run {self.path}; see the TensorRT log above")
        cuda_call(cudart, cudart.cudaMemcpyAsync(host_out.ctypes.data, device_out, host_out.nbytes, to_host, stream))
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream))
        return host_out.astype(np.float32, copy=False)

    def _release(self) -> None:
        """Free the device buffers and the stream, then the execution context and the engine."""
        self._free()
        del self._context, self._engine

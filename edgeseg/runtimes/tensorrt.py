"""TensorRT backend (NVIDIA GPUs): build a strongly typed engine from an ONNX graph, cache it, run it.

Torch-free, like every runtime module; :mod:`edgeseg.export.tensorrt` re-exports the build for the exporter.

Unverified on this project's machines: they have no NVIDIA GPU and TensorRT cannot be installed there, so this
module is written against the TensorRT 10.x/11.x Python API (tensor-address API: ``set_tensor_address`` and
``execute_async_v3``) and cuda-python's runtime bindings, but has only been run up to its import checks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgeseg.runtimes.base import BackendUnavailableError, check_threads, model_shape

HW = tuple[int, int]
ENGINE_SUFFIXES = (".engine", ".plan")
CONFIG_KEYS = ("cache_dir", "workspace_mb", "dynamic_range", "tf32")
INSTALL_HINT = (
    "install it on a machine with an NVIDIA GPU and driver: pip install tensorrt cuda-python (the tensorrt wheels "
    "download their libraries from NVIDIA's index, pypi.nvidia.com, at install time); or build the engine with "
    "the trtexec command recorded in the bundle's manifest"
)


def import_tensorrt() -> Any:
    """Import tensorrt, or explain how to get it."""
    try:
        import tensorrt
    except ImportError as exc:  # also raised when the wheel is there but libnvinfer/libnvonnxparser are not
        raise BackendUnavailableError(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from exc
    return tensorrt


def import_cudart() -> Any:
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise BackendUnavailableError(
                "the tensorrt backend needs cuda-python for device buffers: pip install cuda-python"
            ) from exc
    return runtime


def _cuda(cudart: Any, result: tuple[Any, ...]) -> Any:
    """The value of a cuda-python call ``(error, value...)``; raise on an error code."""
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed with {error!r}; check the GPU driver and that a GPU is visible")
    return values[0] if len(values) == 1 else tuple(values)


def gpu_name(cudart: Any) -> str:
    """The current GPU's name, made safe for a file name."""
    device = _cuda(cudart, cudart.cudaGetDevice())
    name = _cuda(cudart, cudart.cudaGetDeviceProperties(device)).name
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return re.sub(r"[^A-Za-z0-9.]+", "-", text.split("\0")[0]).strip("-")


def cached_engine_path(onnx_path: Path, trt_version: str, gpu: str, cache_dir: Path | None = None) -> Path:
    """``<stem>.<trt version>.<gpu name>.engine`` beside the ONNX file, or in ``cache_dir``."""
    return (cache_dir or onnx_path.parent) / f"{onnx_path.stem}.{trt_version}.{gpu}.engine"


def _check_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    options = dict(config or {})
    unknown = sorted(set(options) - set(CONFIG_KEYS))
    if unknown:
        raise ValueError(f"unknown tensorrt config key(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    return options


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build an engine from it."""


def profile_shapes(
    shape: tuple[int | None, ...], dynamic_range: tuple[HW, HW, HW] | None
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """Min/opt/max input shapes for a graph with dynamic (None) dimensions; None for a fully static graph.

    A dynamic batch is profiled at 1; dynamic height/width need ``dynamic_range`` =
    ((min_h, min_w), (opt_h, opt_w), (max_h, max_w)).
    """
    if len(shape) != 4:
        raise ValueError(f"expected an N×C×H×W input shape, got {shape}")
    batch, channels, height, width = shape
    dynamic_hw = height is None or width is None
    if not dynamic_hw and dynamic_range is not None:
        raise ValueError(f"the graph's input {shape} has a static size; drop dynamic_range (it is for dynamic graphs)")
    if None not in shape:
        return None
    if channels is None:
        raise ValueError(f"the graph's input {shape} has a dynamic channel count; export with 3 channels")
    if dynamic_hw and dynamic_range is None:
        raise ValueError(
            f"the graph's input {shape} has a dynamic height/width; pass dynamic_range=((min_h, min_w), "
            "(opt_h, opt_w), (max_h, max_w)) for the engine's optimisation profile"
        )
    low, opt, high = dynamic_range or ((height, width),) * 3
    if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
        raise ValueError(f"dynamic_range {dynamic_range} must satisfy min <= opt <= max for height and width")
    return tuple((batch or 1, channels, *_fixed(hw, height, width)) for hw in (low, opt, high))


def _fixed(hw: HW, height: int | None, width: int | None) -> HW:
    """``hw`` where the graph's side is dynamic, the graph's size where it is static."""
    return (hw[0] if height is None else height, hw[1] if width is None else width)


def _strongly_typed_flags(trt: Any) -> int:
    """``create_network`` flags for a strongly typed network (10.x: opt-in flag; 11.x: always, flag ignored)."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def _parser_errors(parser: Any) -> list[str]:
    """Each ONNX parser error with the node it concerns."""
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = f"node {error.node_name()!r} ({error.node_operator()})" if error.node_name() else "graph"
        errors.append(f"{where}: {error.desc()}")
    return errors


def _add_profile(trt_builder: Any, config: Any, network: Any, dynamic_range: tuple[HW, HW, HW] | None) -> None:
    """An optimisation profile over ``dynamic_range`` when the network's input has dynamic sides."""
    tensor = network.get_input(0)
    shape = tuple(d if d >= 0 else None for d in tensor.shape)
    profile = profile_shapes(shape, dynamic_range)
    if profile is None:
        return
    optimisation_profile = trt_builder.create_optimization_profile()
    optimisation_profile.set_shape(tensor.name, *profile)
    config.add_optimization_profile(optimisation_profile)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    workspace_mb: int | None = None,
    dynamic_range: tuple[HW, HW, HW] | None = None,
    tf32: bool = False,
) -> Path:
    """Build a serialized, strongly typed TensorRT engine from an ONNX graph and write it to ``engine_path``.

    ``workspace_mb`` caps the builder's scratch memory (None: TensorRT's default, the GPU's memory);
    ``dynamic_range`` is required for graphs with dynamic height/width; ``tf32`` lets fp32 layers use TF32.
    Raises BackendUnavailableError without TensorRT, EngineBuildError when parsing or building fails.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_strongly_typed_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise EngineBuildError(
            f"TensorRT {trt.__version__} could not parse {onnx_path}: {'; '.join(_parser_errors(parser))}. "
            "Run `edgeseg lint --target tensorrt` on it for the rules TensorRT's ONNX parser enforces"
        )
    config = builder.create_builder_config()
    if workspace_mb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    if not tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    _add_profile(builder, config, network, dynamic_range)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} could not build an engine from {onnx_path}; see its log")
    path = Path(engine_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.write(plan)
    return path


class TensorRTRunner:
    """A TensorRT engine on the current GPU, one execution context and one CUDA stream.

    ``path`` is a ``.engine``/``.plan`` file, or an ``.onnx`` graph that is built once (strongly typed: the
    precision is the graph's) and cached as ``<stem>.<trt version>.<gpu>.engine`` beside it or in
    ``config["cache_dir"]``. Other ``config`` keys for that build: ``workspace_mb``, ``tf32`` and, for graphs
    with dynamic height/width, ``dynamic_range`` = [[min_h, min_w], [opt_h, opt_w], [max_h, max_w]].
    ``threads`` is validated and recorded but has no effect: inference runs on the GPU.
    """

    name = "tensorrt"

    def __init__(self, path: str | Path, threads: int | None = None, config: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.threads = check_threads(threads)
        options = _check_config(config)
        if self.path.suffix not in (*ENGINE_SUFFIXES, ".onnx"):
            raise ValueError(f"{self.path}: the tensorrt backend loads .engine/.plan files or .onnx graphs")
        trt = import_tensorrt()
        self._cudart = import_cudart()
        engine_file = self._engine_file(trt, options)
        self._engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(engine_file.read_bytes())
        if self._engine is None:
            raise RuntimeError(
                f"{engine_file} could not be loaded: engines only run on the TensorRT version and GPU that built "
                "them; delete it (an .onnx path rebuilds it) or rebuild it on this machine"
            )
        self._input, self._output = self._io_names(trt)
        self.input_shape = model_shape(self._engine.get_tensor_shape(self._input))
        self.output_shape = model_shape(self._engine.get_tensor_shape(self._output))
        self._input_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        self._output_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._output)))
        self._context = self._engine.create_execution_context()
        self._stream = _cuda(self._cudart, self._cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)

    def _engine_file(self, trt: Any, options: dict[str, Any]) -> Path:
        """The engine to load: ``path`` itself, or the cached build of the ONNX graph at ``path``."""
        if self.path.suffix in ENGINE_SUFFIXES:
            return self.path
        cache_dir = Path(options["cache_dir"]) if "cache_dir" in options else None
        engine = cached_engine_path(self.path, trt.__version__, gpu_name(self._cudart), cache_dir)
        if not engine.is_file():
            dynamic_range = options.get("dynamic_range")
            build_engine(
                self.path,
                engine,
                workspace_mb=options.get("workspace_mb"),
                dynamic_range=tuple(tuple(hw) for hw in dynamic_range) if dynamic_range else None,
                tf32=bool(options.get("tf32", False)),
            )
        return engine

    def _io_names(self, trt: Any) -> tuple[str, str]:
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
                _cuda(self._cudart, self._cudart.cudaFree(pointer))
            pointer = int(_cuda(self._cudart, self._cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (pointer, nbytes)
        self._context.set_tensor_address(name, pointer)
        return pointer

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Copy ``x`` to the GPU, run the engine on the stream, copy the output back as float32."""
        cudart = self._cudart
        host_in = np.ascontiguousarray(x, dtype=self._input_dtype)
        if not self._context.set_input_shape(self._input, host_in.shape):
            raise ValueError(f"input shape {host_in.shape} is outside the engine's profile for {self.input_shape}")
        host_out = np.empty(tuple(self._context.get_tensor_shape(self._output)), dtype=self._output_dtype)
        device_in = self._device_buffer(self._input, host_in.nbytes)
        device_out = self._device_buffer(self._output, host_out.nbytes)
        to_device, to_host = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _cuda(cudart, cudart.cudaMemcpyAsync(device_in, host_in.ctypes.data, host_in.nbytes, to_device, self._stream))
        if not self._context.execute_async_v3(int(self._stream)):
            raise RuntimeError(f"TensorRT failed to run {self.path}; see the TensorRT log above")
        _cuda(cudart, cudart.cudaMemcpyAsync(host_out.ctypes.data, device_out, host_out.nbytes, to_host, self._stream))
        _cuda(cudart, cudart.cudaStreamSynchronize(self._stream))
        return host_out.astype(np.float32, copy=False)

    def __del__(self) -> None:
        """Free the device buffers and the stream."""
        for pointer, _ in getattr(self, "_buffers", {}).values():
            self._cudart.cudaFree(pointer)
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)

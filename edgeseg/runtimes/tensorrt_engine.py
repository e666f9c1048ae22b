"""TensorRT engines from ONNX graphs: a strongly typed build, its optimisation profile, and the engine cache.

Torch-free: the runtime builds an engine from a bundle's ONNX graph on first load, and
:mod:`edgeseg.export.tensorrt` re-exports :func:`build_engine` for the exporter. The runner is in
:mod:`edgeseg.runtimes.tensorrt`.

Engines are cached in ``$EDGESEG_HOME/engines`` (``EDGESEG_HOME`` defaults to ``~/.cache/edgeseg``), never in the
bundle folder, under a name made of the ONNX file's sha256, the build options, the TensorRT version and the GPU:
an engine runs only on the TensorRT version and GPU model that built it.

Unverified on this project's machines: they have no NVIDIA GPU and TensorRT cannot be installed there, so this
module is written against the TensorRT 10.x/11.x Python API and cuda-python's runtime bindings, but has only been
run up to its import checks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeseg.bundle import sha256_of
from edgeseg.runtimes.base import BackendUnavailableError

HW = tuple[int, int]
DynamicRange = tuple[HW, HW, HW]
Shape4 = tuple[int, int, int, int]
INSTALL_HINT = (
    "install it on a machine with an NVIDIA GPU and driver: pip install tensorrt cuda-python (the tensorrt wheels "
    "download their libraries from NVIDIA's index, pypi.nvidia.com, at install time); or build the engine with "
    "the trtexec command recorded in the bundle's manifest"
)
HOME_VARIABLE = "EDGESEG_HOME"


class EngineBuildError(RuntimeError):
    """TensorRT could not parse the graph or build an engine from it."""


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


def cuda_call(cudart: Any, result: tuple[Any, ...]) -> Any:
    """The value of a cuda-python call ``(error, value...)``; raise on an error code."""
    error, *values = result
    if error != cudart.cudaError_t.cudaSuccess:
        raise RuntimeError(f"CUDA call failed with {error!r}; check the GPU driver and that a GPU is visible")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _file_name_part(text: str) -> str:
    """``text`` with every run of characters other than letters, digits and dots made one ``-``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-") or "unknown"


def gpu_name(cudart: Any) -> str:
    """The current GPU's name, made safe for a file name."""
    device = cuda_call(cudart, cudart.cudaGetDevice())
    name = cuda_call(cudart, cudart.cudaGetDeviceProperties(device)).name
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return _file_name_part(text.split("\0")[0])


# ---- build options -----------------------------------------------------------------------------------


def _size_pair(value: object) -> HW:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ValueError(f"each size of dynamic_range must be [height, width] with positive ints, got {value!r}")
    return (value[0], value[1])


def _dynamic_range(value: object) -> DynamicRange | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise ValueError(f"dynamic_range must be [[min_h, min_w], [opt_h, opt_w], [max_h, max_w]], got {value!r}")
    low, opt, high = (_size_pair(v) for v in value)
    return (low, opt, high)


@dataclass(frozen=True)
class EngineOptions:
    """How to build (and where to cache) an engine: the tensorrt backend's ``config``.

    ``workspace_mb`` caps the builder's scratch memory (None: TensorRT's default, the GPU's memory);
    ``dynamic_range`` = ((min_h, min_w), (opt_h, opt_w), (max_h, max_w)) is required for graphs with dynamic
    height/width; ``tf32`` lets fp32 layers use TF32; ``cache_dir`` replaces the default engine cache folder.
    """

    workspace_mb: int | None = None
    dynamic_range: DynamicRange | None = None
    tf32: bool = False
    cache_dir: Path | None = None

    KEYS = ("cache_dir", "workspace_mb", "dynamic_range", "tf32")

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> EngineOptions:
        """Validated options from a runtime config (e.g. a manifest's JSON: lists for the sizes)."""
        options = dict(config or {})
        unknown = sorted(set(options) - set(cls.KEYS))
        if unknown:
            raise ValueError(f"unknown tensorrt config key(s) {', '.join(unknown)}; known: {', '.join(cls.KEYS)}")
        workspace_mb = options.get("workspace_mb")
        if workspace_mb is not None and (
            isinstance(workspace_mb, bool) or not isinstance(workspace_mb, int) or workspace_mb < 1
        ):
            raise ValueError(f"workspace_mb must be a positive int (MiB), got {workspace_mb!r}")
        tf32 = options.get("tf32", False)
        if not isinstance(tf32, bool):
            raise ValueError(f"tf32 must be true or false, got {tf32!r}")
        cache_dir = options.get("cache_dir")
        if cache_dir is not None and not isinstance(cache_dir, (str, Path)):
            raise ValueError(f"cache_dir must be a folder path, got {cache_dir!r}")
        return cls(
            workspace_mb=workspace_mb,
            dynamic_range=_dynamic_range(options.get("dynamic_range")),
            tf32=tf32,
            cache_dir=None if cache_dir is None else Path(cache_dir).expanduser(),
        )

    def build_digest(self) -> str:
        """12 hex digits that change with every option that changes the engine (not ``cache_dir``)."""
        build = {"workspace_mb": self.workspace_mb, "dynamic_range": self.dynamic_range, "tf32": self.tf32}
        return hashlib.sha256(json.dumps(build, sort_keys=True).encode()).hexdigest()[:12]


# ---- engine cache ------------------------------------------------------------------------------------


def engine_cache_dir() -> Path:
    """``$EDGESEG_HOME/engines``; ``EDGESEG_HOME`` defaults to ``~/.cache/edgeseg``."""
    home = os.environ.get(HOME_VARIABLE)
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "edgeseg") / "engines"


def cached_engine_path(onnx_sha256: str, trt_version: str, gpu: str, options: EngineOptions) -> Path:
    """``<onnx sha256>.<build digest>.trt-<version>.<gpu>.engine`` in ``options.cache_dir`` or the default cache."""
    if not re.fullmatch(r"[0-9a-f]{64}", onnx_sha256):
        raise ValueError(f"onnx_sha256 must be 64 lowercase hex digits, got {onnx_sha256!r}")
    name = f"{onnx_sha256}.{options.build_digest()}.trt-{_file_name_part(trt_version)}.{_file_name_part(gpu)}.engine"
    return (options.cache_dir or engine_cache_dir()) / name


def cached_engine(onnx_path: Path, options: EngineOptions) -> Path:
    """The cached engine of ``onnx_path`` for this TensorRT version and GPU, built first when missing."""
    trt = import_tensorrt()
    gpu = gpu_name(import_cudart())
    engine = cached_engine_path(sha256_of(onnx_path), trt.__version__, gpu, options)
    if not engine.is_file():
        build_engine(
            onnx_path, engine, workspace_mb=options.workspace_mb, dynamic_range=options.dynamic_range, tf32=options.tf32
        )
    return engine


# ---- build -------------------------------------------------------------------------------------------


def profile_shapes(
    shape: tuple[int | None, ...], dynamic_range: DynamicRange | None
) -> tuple[Shape4, Shape4, Shape4] | None:
    """Min/opt/max input shapes for a graph with dynamic (None) dimensions; None for a fully static graph.

    A dynamic batch is profiled at 1; dynamic height/width need ``dynamic_range`` =
    ((min_h, min_w), (opt_h, opt_w), (max_h, max_w)).
    """
    if len(shape) != 4:
        raise ValueError(f"expected an N×C×H×W input shape, got {shape}")
    batch, channels, height, width = shape
    static_hw = height is not None and width is not None
    if static_hw and dynamic_range is not None:
        raise ValueError(f"the graph's input {shape} has a static size; drop dynamic_range (it is for dynamic graphs)")
    if None not in shape:
        return None
    if channels is None:
        raise ValueError(f"the graph's input {shape} has a dynamic channel count; export with 3 channels")
    if dynamic_range is None:
        if height is None or width is None:
            raise ValueError(
                f"the graph's input {shape} has a dynamic height/width; pass dynamic_range=((min_h, min_w), "
                "(opt_h, opt_w), (max_h, max_w)) for the engine's optimisation profile"
            )
        low = opt = high = (height, width)
    else:
        low, opt, high = (_fixed(hw, height, width) for hw in dynamic_range)
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            raise ValueError(f"dynamic_range {dynamic_range} must satisfy min <= opt <= max for height and width")
    first, second, third = ((batch or 1, channels, h, w) for h, w in (low, opt, high))
    return first, second, third


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


def _add_profile(trt_builder: Any, config: Any, network: Any, dynamic_range: DynamicRange | None) -> None:
    """An optimisation profile over ``dynamic_range`` when the network's input has dynamic sides."""
    tensor = network.get_input(0)
    shape = tuple(d if d >= 0 else None for d in tensor.shape)
    profile = profile_shapes(shape, dynamic_range)
    if profile is None:
        return
    optimisation_profile = trt_builder.create_optimization_profile()
    optimisation_profile.set_shape(tensor.name, *profile)
    config.add_optimization_profile(optimisation_profile)


def _write_atomically(path: Path, data: memoryview) -> None:
    """Write ``data`` to ``path`` through a temporary file, so no reader ever sees a partial engine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    workspace_mb: int | None = None,
    dynamic_range: DynamicRange | None = None,
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
    _write_atomically(path, memoryview(plan))
    return path

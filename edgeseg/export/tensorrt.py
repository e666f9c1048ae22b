"""TensorRT engines from edgeseg's ONNX graphs: trtexec command lines and a Python build, both strongly typed.

The precision lives in the graph (fp32, fp16 with casts, or symmetric int8 Q/DQ), so the engine is built
strongly typed: TensorRT 11 only builds strongly typed networks (its trtexec has no --fp16/--int8), and
TensorRT 10's trtexec has ``--stronglyTyped`` (added in 9.1, present in every 10.x, a no-op on 11.x). The
weakly typed TensorRT 10 line (builder precision flags) is the fallback for TensorRT before 9.1 (JetPack 5 ships
8.5), which lacks ``--stronglyTyped``; there TensorRT may pick other precisions than the graph's.

Needs no GPU to write commands; :func:`build_engine` (defined torch-free in :mod:`edgeseg.runtimes.tensorrt_engine`,
which builds and caches engines for ONNX bundles too) needs the tensorrt package and an NVIDIA GPU.
"""

from __future__ import annotations

import shlex

from edgeseg.manifest import PRECISIONS
from edgeseg.runtimes.tensorrt_engine import HW, EngineBuildError, build_engine, profile_shapes

__all__ = ["EngineBuildError", "build_engine", "profile_shapes", "trtexec_commands"]

# TensorRT 8.x-10.x builder flags that let a weakly typed build use the graph's reduced precision.
WEAK_FLAGS = {"fp32": (), "fp16": ("--fp16",), "bf16": ("--bf16",), "int8": ("--int8",)}


def _shape_spec(input_name: str, dims: tuple[int, ...]) -> str:
    return f"{input_name}:{'x'.join(str(d) for d in dims)}"


def trtexec_commands(
    onnx_file: str,
    engine_file: str,
    precision: str,
    input_name: str,
    shape: tuple[int | None, ...],
    example_hw: HW,
    dynamic_range: tuple[HW, HW, HW] | None = None,
    *,
    tf32: bool = False,
) -> dict[str, str]:
    """trtexec command lines that build ``engine_file`` from ``onnx_file``, and one that benchmarks it.

    Keys: ``tensorrt-11`` (strongly typed, always), ``tensorrt-10`` (``--stronglyTyped``, 10.0+),
    ``tensorrt-10-weakly-typed`` (builder precision flags, also for TensorRT < 9.1) and ``benchmark`` (loads the engine;
    dynamic graphs run at ``example_hw``). ``shape`` is the graph's input shape with None for dynamic sides.
    Without ``tf32``, fp32 layers stay fp32 (``--noTF32``), as the graph says.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    build = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}", "--skipInference"]
    profile = profile_shapes(shape, dynamic_range)
    if profile is not None:
        build += [
            f"--{kind}Shapes={_shape_spec(input_name, dims)}" for kind, dims in zip(("min", "opt", "max"), profile)
        ]
    if not tf32:
        build.append("--noTF32")
    benchmark = ["trtexec", f"--loadEngine={engine_file}"]
    if profile is not None:
        batch, channels = profile[1][:2]
        example = (batch, channels, shape[2] or example_hw[0], shape[3] or example_hw[1])
        benchmark.append(f"--shapes={_shape_spec(input_name, example)}")
    return {
        "tensorrt-11": shlex.join(build),
        "tensorrt-10": shlex.join([*build, "--stronglyTyped"]),
        "tensorrt-10-weakly-typed": shlex.join([*build, *WEAK_FLAGS[precision]]),
        "benchmark": shlex.join(benchmark),
    }

"""Target artifacts built from the portable ``model.onnx``, at each precision a target supports."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeseg.manifest import OPENVINO_HINTS

ONNX_FILE = "model.onnx"
ORT_FILE = "model.ort.onnx"
FP16_FILE = "model.fp16.onnx"
INT8_FILE = "model.int8.onnx"
OPENVINO_FILE = "model.xml"
OPENVINO_WEIGHTS = "model.bin"
# Models with equivalent encoder formulations (AFFormer) export the one measured fastest on each build.
# AFFormer-tiny, 512², ms at 1 / 2 threads:
# - ONNX Runtime: "channels" (B×C×H×W, LayerNormalization between transposes). tokens → channels:
#   fp32 55 → 43 / 24, int8 36 → 31 / 19. Its LayerNorm from channel means ("channels-reduce") is slower
#   in fp32 (50 / 26-30) and fails the int8 gate.
# - OpenVINO f32 kernels (fp32, fp16): "tokens". Their reorders out of the channels-last layout are slow:
#   channels 75 / –, channels-reduce 55 / 30, tokens 52 / 28.
# - OpenVINO bf16 and int8: "channels-reduce". OpenVINO runs the Transpose in front of each LayerNorm in
#   a generic kernel, 0.25 ms each at 64×64 (int8: 1.5 ms of 16.5). channels → channels-reduce:
#   bf16 29 → 24 / 16.4 → 13.7, int8 28 → 25 / 16.5 → 15.
# - TensorRT: "channels" (LayerNormalization is a native layer there; unmeasured, no GPU here).
BUILD_ENCODER_LAYOUTS = {
    ("openvino", "fp32"): "tokens",
    ("openvino", "fp16"): "tokens",
    ("openvino", "bf16"): "channels-reduce",
    ("openvino", "int8"): "channels-reduce",
}


def encoder_layout(target: str, precision: str) -> str:
    """The encoder formulation (see ``BUILD_ENCODER_LAYOUTS``) a target runs fastest at ``precision``."""
    return BUILD_ENCODER_LAYOUTS.get((target, precision), "channels")


@dataclass(frozen=True)
class BuildOptions:
    """How to build a target: the precision, calibration inputs for int8, nodes to keep in float."""

    precision: str = "fp32"
    calibration: tuple[np.ndarray, ...] = ()
    keep_float: tuple[str, ...] = ()


@dataclass
class TargetArtifacts:
    """What a target adds to a bundle: files, the backend → file map and validated runtime settings."""

    files: list[str]
    artifacts: dict[str, str]
    runtime_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def _ort_optimized(source: Path, destination: Path) -> None:
    """ONNX Runtime's optimised graph, saved at the extended level (portable across CPUs, no NCHWc)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(destination)
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def _fp16_graph(folder: Path) -> dict[str, Any]:
    from edgeseg.export.fp16 import FP32_OPS, float16_nodes, to_fp16

    converted = to_fp16(onnx.load(str(folder / ONNX_FILE)))
    onnx.save(converted, str(folder / FP16_FILE))
    half, total = float16_nodes(converted)
    return {"fp16_nodes": half, "compute_nodes": total, "kept_fp32_ops": list(FP32_OPS), "io": "float32"}


def _int8_graph(folder: Path, options: BuildOptions, scheme: str) -> dict[str, Any]:
    from edgeseg.export.quantize import quantize_onnx

    float_nodes = quantize_onnx(folder / ONNX_FILE, folder / INT8_FILE, options.calibration, scheme, options.keep_float)
    ops = [n.op_type for n in onnx.load(str(folder / INT8_FILE)).graph.node]
    return {
        "scheme": scheme,
        "calibration_images": len(options.calibration),
        "quantize_nodes": ops.count("QuantizeLinear"),
        "dequantize_nodes": ops.count("DequantizeLinear"),
        "kept_float": list(options.keep_float),
        "recipe_float": [n for n in float_nodes if n not in options.keep_float],
    }


def _lower_precision_graph(folder: Path, options: BuildOptions, scheme: str) -> tuple[dict[str, Any], str] | None:
    """(details, file) of the fp16 or int8 (``scheme``) ONNX graph; None for fp32."""
    if options.precision == "fp16":
        return _fp16_graph(folder), FP16_FILE
    if options.precision == "int8":
        return _int8_graph(folder, options, scheme), INT8_FILE
    return None


def build_onnxruntime(folder: Path, options: BuildOptions) -> TargetArtifacts:
    """fp32: ORT's optimised graph; fp16: a float16 graph; int8: u8s8 Q/DQ, per-channel weights."""
    lower = _lower_precision_graph(folder, options, "onnxruntime")
    if lower is None:
        _ort_optimized(folder / ONNX_FILE, folder / ORT_FILE)
        lower = {}, ORT_FILE
    details, artifact = lower
    return TargetArtifacts([ONNX_FILE, artifact], {"onnx": ONNX_FILE, "onnxruntime": artifact}, details=details)


def build_openvino(folder: Path, options: BuildOptions) -> TargetArtifacts:
    """OpenVINO IR: fp32 weights (fp16 for ``fp16``), NNCF int8 for ``int8``; the precision hint it ran with."""
    import openvino as ov

    details: dict[str, Any] = {}
    if options.precision == "int8":
        from edgeseg.export.quantize import quantize_openvino

        model = quantize_openvino(folder / ONNX_FILE, options.calibration, options.keep_float)
        details = {
            "quantizer": "nncf.quantize (post-training, default preset)",
            "calibration_images": len(options.calibration),
            "fake_quantize_nodes": sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()),
            "kept_float": list(options.keep_float),
        }
    else:
        # read_model, not convert_model: the latter parses its argument like a command line and splits on commas.
        model = ov.Core().read_model(str(folder / ONNX_FILE))
    ov.save_model(model, str(folder / OPENVINO_FILE), compress_to_fp16=options.precision == "fp16")
    details["weights"] = "float16" if options.precision == "fp16" else "float32"
    return TargetArtifacts(
        [ONNX_FILE, OPENVINO_FILE, OPENVINO_WEIGHTS],
        {"onnx": ONNX_FILE, "openvino": OPENVINO_FILE},
        {"openvino": {"INFERENCE_PRECISION_HINT": OPENVINO_HINTS[options.precision]}},
        details,
    )


def build_tensorrt(folder: Path, options: BuildOptions) -> TargetArtifacts:
    """The graph TensorRT builds its engine from, with the precision inside it (TensorRT 11 is strongly typed)."""
    details, artifact = _lower_precision_graph(folder, options, "tensorrt") or ({}, ONNX_FILE)
    return TargetArtifacts(sorted({ONNX_FILE, artifact}), {"onnx": ONNX_FILE, "tensorrt": artifact}, details=details)


def build_onnx(folder: Path, options: BuildOptions) -> TargetArtifacts:
    """The portable graph alone."""
    del folder, options
    return TargetArtifacts([ONNX_FILE], {"onnx": ONNX_FILE})


BUILDERS: dict[str, Callable[[Path, BuildOptions], TargetArtifacts]] = {
    "onnx": build_onnx,
    "onnxruntime": build_onnxruntime,
    "openvino": build_openvino,
    "tensorrt": build_tensorrt,
}
